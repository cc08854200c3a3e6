"""Run directories: one process at a time writes one, and starting a run there is all or
nothing: if starting fails (W&B cannot start, the checkpoint does not fit, the disk is full), the
run directory is left as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from metarl.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows: no directory locks
    fcntl = None  # type: ignore[assignment]

WANDB_DIR = "wandb"  # where W&B writes, inside the run directory


@contextlib.contextmanager
def directory_lock(folder: Path, wait: bool) -> Iterator[None]:
    """The system's exclusive lock on the directory ``folder`` itself (``flock``) for the block:
    it writes no file and ends with the process, even a killed one.  A lock held by another
    process (without ``wait``), or a folder another process removed or replaced before this
    one got the lock, raises :class:`BlockingIOError`.  Where the system or the file system
    has no such lock (Windows, NFS), nothing is held, with a warning."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise
        except OSError as error:
            warnings.warn(
                f"{folder}: not locked, this file system has no directory locks ({error}); "
                "make sure no other process writes it",
                RuntimeWarning,
                stacklevel=3,
            )
        if not _same_file(descriptor, folder):
            raise BlockingIOError(f"{folder}: removed or replaced by another process")
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def claimed(run_dir: Path, flag: str) -> Iterator[None]:
    """Hold ``run_dir`` for the block (:func:`directory_lock`), made if missing, and removed
    again at its end, still held, with the parents it made if still empty: another process that
    claims it meanwhile, to train, resume or replace that run, gets a :class:`UsageError`
    naming ``flag``."""
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(directory_lock(run_dir, wait=False))
        except BlockingIOError:
            raise UsageError(
                f"{flag} {run_dir}: another process is writing this run (training or resuming "
                "it); wait for it to end"
            ) from None
        held.callback(_remove_empty, created)  # first, before the lock is released
        yield


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a path that is not a directory, a non-empty one unless ``overwrite``, and the
    current directory or one holding it (never replaced)."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise UsageError(f"--run-dir {run_dir}: is a link to nothing")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: exists and is not a directory")
    if _is_non_empty(run_dir) and not overwrite:
        raise UsageError(
            f"--run-dir {run_dir}: already exists and is not empty "
            "(pass --overwrite to replace it, or --resume to continue it)"
        )
    here = Path.cwd()
    if _is_non_empty(run_dir) and run_dir.resolve() in (here, *here.parents):
        raise UsageError(f"--run-dir {run_dir}: --overwrite cannot replace the current directory")


@contextlib.contextmanager
def new_run_dir(run_dir: Path, overwrite: bool) -> Iterator[None]:
    """An empty ``run_dir``, created if need be, for the block that starts a new run (see
    :func:`check_new_run_dir`).  A replaced run's files are moved aside meanwhile, into a hidden
    folder inside it (the folder stays, and whatever holds it, :func:`claimed`): deleted once the
    block succeeds, put back if it raises or if they cannot all be moved."""
    check_new_run_dir(run_dir, overwrite)
    replaced = None
    if _is_non_empty(run_dir):
        replaced = Path(tempfile.mkdtemp(prefix=".replaced-", dir=run_dir))
        try:
            _move_entries(run_dir, replaced, keep=replaced.name)
        except OSError as error:
            _put_back(replaced, run_dir)
            raise UsageError(f"--run-dir {run_dir}: cannot replace its files ({error})") from None
    try:
        with restored_on_error(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            yield
    except BaseException:
        if replaced is not None:
            _put_back(replaced, run_dir)
        raise
    if replaced is not None:
        shutil.rmtree(replaced)


@contextlib.contextmanager
def restored_on_error(run_dir: Path) -> Iterator[None]:
    """If the block raises, what it added to ``run_dir`` and to ``run_dir/wandb`` is removed and
    the links W&B moved there (``latest-run``, ``debug.log``) point back, so that the folder is as
    it was; files the block rewrote are not restored (it must only write once nothing can fail
    before W&B starts)."""
    folders = (run_dir / WANDB_DIR, run_dir)
    before = {folder: _entries(folder) for folder in folders}
    try:
        yield
    except BaseException:
        for folder in folders:
            _restore(folder, before[folder])
        raise


def _move_entries(source: Path, target: Path, keep: str | None = None) -> None:
    for entry in list(source.iterdir()):
        if entry.name != keep:
            entry.rename(target / entry.name)


def _put_back(replaced: Path, run_dir: Path) -> None:
    """The entries moved aside into ``replaced`` moved back into ``run_dir``, then it removed."""
    _move_entries(replaced, run_dir)
    replaced.rmdir()


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


def _is_non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _entries(folder: Path) -> dict[str, str | None] | None:
    """The entries of ``folder`` with a link's target (None for other entries); None if there is
    no such folder."""
    if not folder.is_dir():
        return None
    return {p.name: os.readlink(p) if p.is_symlink() else None for p in folder.iterdir()}


def _restore(folder: Path, before: dict[str, str | None] | None) -> None:
    if not folder.is_dir():
        return
    if before is None:
        shutil.rmtree(folder)
        return
    for path in folder.iterdir():
        if path.name not in before:
            _remove(path)
            continue
        target = before[path.name]
        if target is not None and path.is_symlink() and os.readlink(path) != target:
            path.unlink()
            path.symlink_to(target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
