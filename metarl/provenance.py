"""Where a result comes from: the commit of the code that made it, and the machine."""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import platform
import re
import subprocess
from importlib.metadata import Distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

PACKAGE = Path(__file__).resolve().parent  # the installed (or checked-out) ``metarl`` package


def commit() -> str:
    """The short hash of the commit of the package's code as it is now, ``-dirty`` appended
    when its files differ from it; "unknown" where that cannot be told.  A process records it
    at its start, before its checkout can move on.

    From a checkout (run in place or installed editable): its ``HEAD``.  From an installed copy:
    the commit pip recorded for an install from git (PEP 610), or, for an install from a local
    checkout, that checkout's ``HEAD`` while its files are still the installed ones.
    """
    if _git(PACKAGE, "ls-files", "--error-unmatch", "__init__.py") is not None:
        return _head(PACKAGE.parent)
    distribution = _distribution()
    origin = _install_origin(distribution)
    if "vcs_info" in origin:
        return str(origin["vcs_info"]["commit_id"])[:7]
    url = urlparse(str(origin.get("url", "")))
    if "dir_info" in origin and url.scheme == "file":
        source = Path(unquote(url.path))
        if _git(source, "rev-parse", "HEAD") is not None and _installed_from(distribution, source):
            return _head(source)
    return "unknown"


def machine() -> str:
    """Number of cores and CPU model of this machine."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        model = found.group(1).strip() if found else model
    return f"{os.cpu_count()} cores, {model}"


def _git(folder: Path, *args: str) -> str | None:
    """``git args`` run in ``folder``: its output, or None where git fails."""
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=folder, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def _head(checkout: Path) -> str:
    """``HEAD`` of the project folder ``checkout`` (holding ``setup.cfg``), ``-dirty`` when its
    package sources hold uncommitted changes."""
    short = _git(checkout, "rev-parse", "--short=7", "HEAD") or "unknown"
    folders = sorted(set(_package_dirs(checkout).values()))
    changed = _git(checkout, "status", "--porcelain", "--", *folders)
    return f"{short}-dirty" if changed else short


def _package_dirs(checkout: Path) -> dict[str, str]:
    """The checkout's ``package_dir`` of ``setup.cfg``: package name -> folder."""
    parser = configparser.ConfigParser()
    parser.read(checkout / "setup.cfg")
    lines = parser.get("options", "package_dir", fallback="").strip().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line)
    return {package.strip(): folder.strip() for package, folder in pairs}


def _distribution() -> Distribution | None:
    """The installed distribution this package belongs to (beside it in site-packages)."""
    return next(iter(Distribution.discover(name="metarl", path=[str(PACKAGE.parent)])), None)


def _install_origin(distribution: Distribution | None) -> dict:
    """The PEP 610 record of where pip installed ``distribution`` from ({} when there is none)."""
    text = distribution.read_text("direct_url.json") if distribution else None
    return json.loads(text) if text else {}


def _installed_from(distribution: Distribution | None, checkout: Path) -> bool:
    """Whether every installed source file of ``distribution`` equals its file in ``checkout``."""
    if distribution is None or not distribution.files:
        return False
    folders = _package_dirs(checkout)
    for file in distribution.files:
        if file.hash is None or file.parts[0] != "metarl" or file.suffix == ".pyc":
            continue
        packages = (".".join(file.parts[:depth]) for depth in range(len(file.parts) - 1, 0, -1))
        package = next((package for package in packages if package in folders), None)
        if package is None:
            return False
        source = checkout / folders[package] / Path(*file.parts[package.count(".") + 1 :])
        if not source.is_file():
            return False
        digest = hashlib.new(file.hash.mode, source.read_bytes()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != file.hash.value:
            return False
    return True
