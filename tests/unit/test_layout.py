"""The shape of the installed package: one namespace, layers that import downwards only.

Every top-level folder of the repository installs as a subpackage of ``resofleet``
(pyproject's ``package-dir``), so nothing may import the folders by their bare names, and
each layer may import only the layers below it::

    contracts  <  bus  <  agent, gateway, notifier  <  resofleet (cli, commands, config, audit)

The emulator stands apart: standard library only, relative imports inside, so it also runs
as ``python3 -m emulator`` from a bare copy of its folder (its Docker image).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The folders that install as ``resofleet.<name>``.
SUBPACKAGES = ("contracts", "bus", "agent", "gateway", "notifier", "emulator")
#: What each installed layer may import of the project (besides itself).
ALLOWED = {
    "contracts": set(),
    "bus": {"contracts"},
    "agent": {"contracts", "bus"},
    "gateway": {"contracts", "bus"},
    "notifier": {"contracts", "bus"},
    "emulator": set(),
}
#: The app layer, which only the command line and its helpers may import.
APP_MODULES = ("resofleet.cli", "resofleet.commands", "resofleet.config", "resofleet.audit")
#: Longest shipped module, in lines: one concept per module.
MAX_MODULE_LINES = 600


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def imported_modules(path: Path, *, relative: bool = True) -> list[tuple[int, str]]:
    """Module names ``path`` imports: relative ones resolved within its folder (for example
    ``gateway.errors``), or left out with ``relative=False``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(REPO).parent.parts)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not relative:
                    continue
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
                found.append((node.lineno, name))
            elif node.module is not None:
                found.append((node.lineno, node.module))
    return found


def layer_of(module: str) -> str | None:
    """The project layer a module name belongs to, or None for a third-party module."""
    parts = module.split(".")
    if parts[0] != "resofleet":
        return None
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "resofleet"


@pytest.mark.parametrize("folder", [*SUBPACKAGES, "resofleet", "bench", "tests"])
def test_no_module_imports_a_folder_by_its_bare_name(folder: str) -> None:
    """`import contracts` and the like would pick up whatever else is installed under that
    name; the project's own code always says `resofleet.contracts`."""
    bad = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in python_files(folder)
        for line, name in imported_modules(path, relative=False)
        if name.split(".")[0] in SUBPACKAGES
    ]
    assert not bad, "imports of a bare folder name:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", SUBPACKAGES)
def test_layers_import_downwards_only(layer: str) -> None:
    """contracts < bus < agent, gateway; none of them imports the command line or config."""
    bad = []
    for path in python_files(layer):
        for line, name in imported_modules(path):
            if layer == "emulator":
                # relative imports resolve to `emulator.*` here: stdlib and itself only
                top = name.split(".")[0]
                if top != "emulator" and top not in sys.stdlib_module_names and top != "__future__":
                    bad.append(f"{path.relative_to(REPO)}:{line}: {name} (not the standard library)")
                continue
            if name.startswith(APP_MODULES):
                bad.append(f"{path.relative_to(REPO)}:{line}: {name} (the app layer)")
                continue
            target = layer_of(name)
            if name.split(".")[0] == layer:
                continue  # a relative import inside the layer
            if target is not None and target != layer and target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {name} ({target} is not below {layer})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_shipped_module_is_over_the_size_limit() -> None:
    """Modules hold one concept each; a module past the limit is two."""
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for path in python_files(*SUBPACKAGES, "resofleet")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "modules over the limit:\n" + "\n".join(long)


def test_no_machine_path_in_shipped_code() -> None:
    """Nothing shipped names a directory of the machine it was written on."""
    markers = ("/work/", "/home/", "/root/", "/tmp/pytest")
    found = [
        f"{path.relative_to(REPO)}:{i}"
        for path in python_files(*SUBPACKAGES, "resofleet")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(m in line for m in markers)
    ]
    assert not found, "machine paths:\n" + "\n".join(found)
