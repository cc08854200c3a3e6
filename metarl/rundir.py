"""Starting a run in its directory, all or nothing: if starting fails (W&B cannot start, the
checkpoint does not fit, the disk is full), the run directory is left as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from metarl.errors import UsageError

WANDB_DIR = "wandb"  # where W&B writes, inside the run directory


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a path that is not a directory, a non-empty one unless ``overwrite``, and the
    current directory or one holding it (they cannot be moved aside)."""
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
    :func:`check_new_run_dir`).  A replaced run's files are moved aside meanwhile: deleted once
    the block succeeds, put back if it raises."""
    check_new_run_dir(run_dir, overwrite)
    replaced = None
    if _is_non_empty(run_dir):
        replaced = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.replaced-", dir=run_dir.parent))
        run_dir.rename(replaced / run_dir.name)
    try:
        with restored_on_error(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
            yield
    except BaseException:
        if replaced is not None:
            (replaced / run_dir.name).rename(run_dir)
            replaced.rmdir()
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
