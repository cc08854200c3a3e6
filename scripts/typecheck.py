"""Type-check metarl as it is installed: one ``metarl`` package whose subpackages are the
repository's top-level folders (``setup.cfg``'s ``package_dir``).

mypy cannot follow the import hook of an editable install, so this lays the installed tree out
under ``build/typecheck`` as links to the repository's files and runs mypy on it (messages name
the linked paths: ``build/typecheck/metarl/envs/base.py`` is ``envs/base.py``).

    python scripts/typecheck.py
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """Installed package name -> its folder in the repository, as ``setup.cfg`` maps them."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    mapping = {}
    for line in config["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        mapping[name] = ROOT / folder
    return mapping


def lay_out_tree() -> None:
    shutil.rmtree(TREE, ignore_errors=True)
    for package, folder in package_dirs().items():
        target = TREE.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            os.symlink(source, target / source.name)


def main() -> int:
    lay_out_tree()
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    return subprocess.call([*command, "-p", "metarl"], cwd=TREE)


if __name__ == "__main__":
    sys.exit(main())
