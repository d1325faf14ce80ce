#!/usr/bin/env python3
"""Refresh the dashboard's third-party browser code from the npm registry.

The dashboard (``gateway/static/``) has no build step: the browser loads ES modules as
files. Third-party code is vendored at the pinned versions below into
``gateway/static/vendor/<name>@<version>/``, each with its licence, and committed. This
script is how those files are made and refreshed::

    python3 deploy/dev/vendor-browser.py          # fetch with `npm pack`, copy, rewrite imports
    python3 deploy/dev/vendor-browser.py --check  # exit 1 when the committed files differ

It runs ``npm pack <name>@<version>`` (the registry's own tarball, checked by npm against
the registry's integrity hash) in a temporary directory, copies the ES-module build and
the ``LICENSE`` file, and rewrites bare import specifiers (``from "preact"``) into
relative paths (and drops the comment naming a source map, which is not copied), since a browser without an import map (an inline script a strict
Content-Security-Policy refuses) cannot resolve them. Nothing else is changed.

To move to a new version: change :data:`PACKAGES`, run the script, update the paths in
``gateway/static/index.html`` and ``gateway/static/app/lib.js``, and run the dashboard's
browser tests (``tests/e2e/test_dashboard*.py``).

Not vendored, on purpose: xterm.js 6.0 injects ``<style>`` elements at run time (its DOM
renderer's theme and dimensions), which a strict ``style-src 'self'`` refuses (xterm.js
issue 4445); the console is a small DOM renderer of its own (``app/console.js``).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
VENDOR: Final = REPO / "gateway" / "static" / "vendor"
#: Seconds `npm pack` may take for one package (a registry round trip and a small tarball).
NPM_TIMEOUT: Final = 120


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    #: Files to copy: path in the tarball's ``package/`` -> file name in the vendor folder.
    files: dict[str, str]
    #: Bare specifiers to rewrite: specifier -> path relative to this package's folder.
    imports: dict[str, str]

    @property
    def folder(self) -> str:
        return f"{self.name.rpartition('/')[2]}@{self.version}"


PACKAGES: Final = (
    Package("preact", "10.29.8", {
        "dist/preact.module.js": "preact.module.js",
        "hooks/dist/hooks.module.js": "hooks.module.js",
        "LICENSE": "LICENSE",
    }, {"preact": "./preact.module.js"}),
    Package("htm", "3.1.1", {"dist/htm.module.js": "htm.module.js", "LICENSE": "LICENSE"}, {}),
)

_SOURCE_MAP: Final = re.compile(r"\n?//# sourceMappingURL=\S*\s*$")
_IMPORT: Final = re.compile(r"""(\bfrom\s*|\bimport\s*)(["'])([^"'./][^"']*)\2""")


def rewrite(text: str, imports: dict[str, str]) -> str:
    """``text`` with each bare import specifier in ``imports`` replaced; an unknown bare
    specifier is an error (the browser could not load it)."""

    def one(match: re.Match[str]) -> str:
        specifier = match.group(3)
        if specifier not in imports:
            raise SystemExit(f"vendor-browser: unknown bare import {specifier!r}")
        return f"{match.group(1)}{match.group(2)}{imports[specifier]}{match.group(2)}"

    return _IMPORT.sub(one, text)


def fetch(package: Package, into: Path) -> Path:
    """Unpack ``npm pack name@version`` under ``into``; the ``package/`` folder."""
    done = subprocess.run(
        ["npm", "pack", "--silent", f"{package.name}@{package.version}"],
        cwd=into, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"vendor-browser: npm pack {package.name}@{package.version} failed:\n{done.stderr}")
    [tarball] = done.stdout.split()[-1:]
    with tarfile.open(into / tarball) as archive:
        archive.extractall(into / package.folder, filter="data")
    return into / package.folder / "package"


def build(package: Package, source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for inner, name in package.files.items():
        data = (source / inner).read_text(encoding="utf-8")
        if name.endswith(".js"):  # the source maps are not vendored: drop their comment
            data = _SOURCE_MAP.sub("", rewrite(data, package.imports))
        (target / name).write_text(data, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, change nothing")
    args = parser.parse_args(argv)
    if shutil.which("npm") is None:
        print("vendor-browser: needs npm (apt-get install npm)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temp:
        staged = Path(temp) / "vendor"
        for package in PACKAGES:
            build(package, fetch(package, Path(temp)), staged / package.folder)
        if args.check:
            diff = filecmp.dircmp(staged, VENDOR)
            if diff.left_only or diff.right_only or any(
                d.diff_files or d.left_only or d.right_only for d in diff.subdirs.values()
            ):
                print("vendor-browser: gateway/static/vendor differs from the pinned packages")
                return 1
            print("vendor-browser: up to date")
            return 0
        if VENDOR.exists():
            shutil.rmtree(VENDOR)
        shutil.copytree(staged, VENDOR)
    for package in PACKAGES:
        print(f"vendored {package.name}@{package.version} -> {VENDOR.relative_to(REPO)}/{package.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
