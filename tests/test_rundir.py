"""Run directories: the lock on a folder, and replacing a run (``--overwrite``) all or nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from metarl.errors import UsageError
from metarl.rundir import claimed, directory_lock, new_run_dir


def files(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


OLD_RUN = {
    "checkpoints/last.pt": "old checkpoint",
    "config.yaml": "old config",
    "metrics.jsonl": "old metrics",
}


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for name, content in OLD_RUN.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(content)
    return run


def assert_as_it_was(run: Path) -> None:
    """The old run in its folder, and nothing else (no hidden folder of moved files)."""
    assert files(run) == OLD_RUN
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
    ]


def test_a_lock_got_on_a_folder_since_replaced_is_refused(tmp_path: Path) -> None:
    """A process waiting for a run's lock while its holder removes the folder and makes a new
    one at the path must not go on holding the removed one, unlocked at the path."""
    run = tmp_path / "run"
    run.mkdir()
    outcome: list[BaseException | None] = []

    def wait_for_the_lock() -> None:
        try:
            with directory_lock(run, wait=True):
                outcome.append(None)
        except BlockingIOError as error:
            outcome.append(error)

    with directory_lock(run, wait=False):
        waiter = threading.Thread(target=wait_for_the_lock)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # waiting: the folder is held
        run.rename(tmp_path / "removed")
        run.mkdir()
    waiter.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], BlockingIOError)
    with directory_lock(run, wait=False):  # the folder now at the path is free
        pass


def test_a_claimed_folder_it_made_is_removed_when_empty_and_kept_otherwise(
    tmp_path: Path,
) -> None:
    made = tmp_path / "new" / "run"
    with claimed(made, "--run-dir"):
        assert made.is_dir()
    assert not (tmp_path / "new").exists()
    with claimed(made, "--run-dir"):
        (made / "metrics.jsonl").write_text("")
    assert (made / "metrics.jsonl").is_file()


def test_replacing_a_run_moves_its_files_aside_then_deletes_them(old_run: Path) -> None:
    with new_run_dir(old_run, overwrite=True):
        assert [path.name[:10] for path in old_run.iterdir()] == [".replaced-"]  # hidden, inside
        (old_run / "config.yaml").write_text("new config")
    assert [path.name for path in old_run.iterdir()] == ["config.yaml"]
    assert files(old_run) == {"config.yaml": "new config"}


def test_a_run_replaced_through_a_link_stays_behind_the_link(old_run: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(old_run)
    with new_run_dir(link, overwrite=True):
        (link / "config.yaml").write_text("new config")
    assert link.is_symlink() and files(old_run) == {"config.yaml": "new config"}


def test_a_failed_start_puts_the_replaced_run_back(old_run: Path) -> None:
    with pytest.raises(RuntimeError), new_run_dir(old_run, overwrite=True):
        (old_run / "config.yaml").write_text("new config")
        raise RuntimeError("W&B did not start")
    assert_as_it_was(old_run)


def test_a_run_whose_files_cannot_all_be_moved_aside_is_left_as_it_was(
    old_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move that fails partway (a busy mount point, a read-only subfolder) puts back what
    was moved: no file of the old run is left in a hidden folder."""
    rename = Path.rename

    def rename_but_metrics(self: Path, target: Path) -> Path:
        if self.name == "metrics.jsonl" and ".replaced-" in str(target):
            raise OSError(16, "Device or resource busy")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_but_metrics)
    with pytest.raises(UsageError, match="--run-dir .*: cannot replace its files"):
        with new_run_dir(old_run, overwrite=True):
            pytest.fail("the block must not run")
    assert_as_it_was(old_run)


def test_a_file_system_without_directory_locks_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS turns ``flock`` into a lock that a directory cannot take: the run goes on, unlocked,
    and says so."""
    import fcntl

    def no_lock(descriptor: int, operation: int) -> None:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", no_lock)
    with pytest.warns(RuntimeWarning, match="not locked, this file system has no directory locks"):
        with claimed(tmp_path / "run", "--run-dir"):
            pass
