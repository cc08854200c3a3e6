"""A copy of metarl's sources: what a build or an install of the package starts from."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "metarl", "envs", "agents", "configs")


def copy_sources(target: Path) -> Path:
    """The package's sources copied into the folder ``target`` (created), without caches."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, target / name)
    return target
