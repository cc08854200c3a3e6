"""The commit recorded with a result: that of the code that ran, however metarl was installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from metarl import provenance
from metarl.provenance import PACKAGE, commit
from tests.sources import ROOT, copy_sources

PRINT_COMMIT = "import metarl.provenance as p; print(p.PACKAGE, p.commit())"


def git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=metarl", "-c", "user.email=metarl@example.org", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True).stdout


def head(folder: Path) -> str:
    return git(folder, "rev-parse", "--short=7", "HEAD").strip()


def install(source: str, target: Path) -> Path:
    """``source`` installed by pip into the folder ``target``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
        + ["--target", str(target), source],
        check=True,
        capture_output=True,
    )
    return target


def commit_of(site: Path) -> str:
    """``commit()`` in a fresh interpreter importing metarl from the folder ``site``."""
    result = subprocess.run(
        [sys.executable, "-c", PRINT_COMMIT],
        cwd=site.parent,  # not a checkout: the installed copy must be the one imported
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    package, found = result.stdout.split()
    assert Path(package) == site / "metarl"
    return found


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git repository holding a copy of metarl's sources, committed."""
    repo = copy_sources(tmp_path / "repo")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sources")
    return repo


def test_running_from_a_checkout_gives_its_head() -> None:
    if subprocess.run(["git", "-C", str(PACKAGE), "rev-parse"], capture_output=True).returncode:
        pytest.skip("metarl does not run from a git checkout here")
    folders = ["metarl", "envs", "agents", "configs"]
    changed = git(ROOT, "status", "--porcelain", "--", *folders)
    assert commit() == head(ROOT) + ("-dirty" if changed else "")


def test_a_project_in_a_subfolder_of_its_repository_is_dirty_only_by_its_own_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    copy_sources(repo / "project")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sources")
    (repo / "notes.txt").write_text("another project's change")
    monkeypatch.setattr(provenance, "PACKAGE", repo / "project" / "metarl")
    assert commit() == head(repo)
    paper = repo / "project" / "metarl" / "paper.py"
    paper.write_text(paper.read_text() + "# an uncommitted change\n")
    assert commit() == f"{head(repo)}-dirty"


@pytest.mark.slow
def test_an_install_from_a_checkout_gives_its_head_while_it_holds_the_installed_code(
    checkout: Path, tmp_path: Path
) -> None:
    first = head(checkout)
    clean = install(str(checkout), tmp_path / "clean")
    assert commit_of(clean) == first
    paper = checkout / "metarl" / "paper.py"
    paper.write_text(paper.read_text() + "# an uncommitted change\n")
    assert commit_of(install(str(checkout), tmp_path / "changed")) == f"{first}-dirty"
    git(checkout, "commit", "-qam", "a change")
    # the checkout has moved on: it no longer tells which commit the first install came from
    assert commit_of(clean) == "unknown"


@pytest.mark.slow
def test_an_install_from_git_gives_the_commit_pip_recorded(checkout: Path, tmp_path: Path) -> None:
    site = install(f"git+file://{checkout}", tmp_path / "site")
    git(checkout, "commit", "-q", "--allow-empty", "-m", "later")  # the source moves on
    assert commit_of(site) == git(checkout, "rev-parse", "--short=7", "HEAD~1").strip()
