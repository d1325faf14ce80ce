"""What `pip install resofleet` puts on a machine: one top-level name, and it imports from
anywhere.

Built the way a user builds it (`pip wheel .`, with build isolation), installed into an
empty target directory, imported from a directory that is not the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Seconds for pip to build the wheel (it may first fetch setuptools into its isolated
#: build environment) and to install it.
PIP_TIMEOUT = 300


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the source: a build leaves build/ and *.egg-info/ in the tree it builds
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "results",
    ))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True, timeout=PIP_TIMEOUT, cwd=out,
    )
    [built] = out.glob("resofleet-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    """Only `resofleet` (and its metadata) reaches site-packages: no `contracts`, `bus`,
    `agent`, `gateway`, `emulator` or `bench` beside it, and no tests."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"resofleet"}
    parts = {name.split("/")[1] for name in names if name.startswith("resofleet/") and name.count("/") > 1}
    assert {"contracts", "bus", "agent", "gateway", "notifier", "emulator", "commands"} <= parts
    assert not any("/tests/" in n or n.startswith(("bench/", "tests/")) for n in names)
    # the emulator's built-in scenarios ship with it
    assert {"default.toml", "demo.toml", "busy.toml"} <= {
        Path(n).name for n in names if n.startswith("resofleet/emulator/scenarios/")
    }
    # the dashboard ships with the gateway: its page, its modules, the vendored code and
    # each vendored library's licence, exactly the files of the source tree
    static = REPO / "gateway" / "static"
    shipped = {n.removeprefix("resofleet/gateway/static/") for n in names if n.startswith("resofleet/gateway/static/")}
    assert shipped == {p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()}
    assert {"index.html", "app/main.js"} <= shipped
    assert any(n.startswith("vendor/") and n.endswith("/LICENSE") for n in shipped)


def test_the_installed_package_imports_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    """Installed into an empty directory, `resofleet.gateway` (and every part) imports from
    a directory that is not the repository, and the bare folder names do not exist."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True, timeout=PIP_TIMEOUT,
    )
    assert {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")} <= {"resofleet", "bin"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import importlib, importlib.util, resofleet.gateway, resofleet.agent, resofleet.bus, "
        "resofleet.contracts, resofleet.emulator, resofleet.cli\n"
        "print(resofleet.gateway.__file__)\n"
        "print([n for n in ('contracts', 'bus', 'agent', 'gateway', 'emulator', 'bench') "
        "if importlib.util.find_spec(n) is not None])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )
    where, bare = done.stdout.splitlines()
    assert Path(where).is_relative_to(target)
    assert bare == "[]"
