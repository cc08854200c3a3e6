"""Atomic checkpoints holding the whole training state, and their validation on load."""

from __future__ import annotations

import inspect
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from metarl.agents.common.numerics import all_finite
from metarl.config import Config, config_differences
from metarl.envs import changed_since, env_id, family_class
from metarl.errors import CheckpointError, first_line

FORMAT = "metarl-checkpoint-v1"
REQUIRED_KEYS = ("format", "iteration", "config", "policy")
TEMP_SUFFIX = ".tmp"  # in-progress writes: ``.{name}.XXXX.tmp``, never a checkpoint


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename:
    a crash at any point leaves either the old file or the new one, never a partial file.
    The file is readable as the umask allows (as ``open`` would make it), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files of writes interrupted by a crash; returns what was removed."""
    stale = sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a training state atomically (see :func:`atomic_write_bytes`); a state whose policy
    holds a NaN or an Inf is refused with :class:`CheckpointError`."""
    non_finite = [name for name, value in state["policy"].items() if not all_finite([value])]
    if non_finite:
        raise CheckpointError(
            f"checkpoint {path}: refusing to save non-finite parameters {', '.join(non_finite)}"
        )
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check a checkpoint; any problem raises :class:`CheckpointError`.  Only tensors
    and plain data are unpickled (``weights_only``): a foreign file cannot run code."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path}: unreadable (not a torch file of tensors and plain data)"
        ) from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as error:
        reason = first_line(error)
        raise CheckpointError(f"checkpoint {path}: unreadable or truncated ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a metarl checkpoint (expected {FORMAT})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing {', '.join(missing)}")
    return state


def find_checkpoint(path: Path, name: str = "last.pt") -> Path:
    """``path`` itself if it is a file, else ``path/checkpoints/name``."""
    if path.is_file():
        return path
    candidate = path / "checkpoints" / name
    if not candidate.is_file():
        raise CheckpointError(f"{path}: no checkpoint found (expected {candidate})")
    return candidate


def trained_env_id(state: dict[str, Any]) -> str:
    """The gymnasium id of the family's version a training state was last trained on; states
    written before ids were recorded are of version 0."""
    return str(state.get("env_id", f"metarl/{state['config']['env']['family']}-v0"))


def environment_change(state: dict[str, Any]) -> str | None:
    """How the version of the family a training state was last trained on differs from this
    metarl's (``"metarl/AntDir-v0, now metarl/AntDir-v1"``), where the versions between changed
    the dynamics or rewards of the state's physics preset; None otherwise."""
    trained = trained_env_id(state)
    if not _changed_since(state["config"]["env"], trained):
        return None
    return f"{trained}, now {env_id(state['config']['env']['family'])}"


def training_environment_change(state: dict[str, Any]) -> str | None:
    """:func:`environment_change` over the whole run: with the earlier versions a resumed run
    was trained on (``env_before``: the last iteration on each, and its id) where they changed
    since, each with its iterations (``"metarl/AntDir-v0 (iterations 1-200), now
    metarl/AntDir-v1"``)."""
    env = state["config"]["env"]
    spans = [*state.get("env_before", []), (state["iteration"], trained_env_id(state))]
    changed, first = [], 1
    for last, trained in spans:
        if _changed_since(env, trained):
            span = f"iteration {last}" if int(last) == first else f"iterations {first}-{last}"
            changed.append(f"{trained} ({span})")
        first = int(last) + 1
    if not changed:
        return None
    if len(spans) == 1:  # the whole run on one version
        return environment_change(state)
    return f"{', '.join(changed)}, now {env_id(env['family'])}"


def _changed_since(env: dict[str, Any], trained: str) -> bool:
    """Whether the family of a config's ``env`` section changed its preset's dynamics or
    rewards since the version ``trained`` (its gymnasium id); a later version counts as
    changed."""
    if trained == env_id(env["family"]):
        return False
    version = int(trained.rsplit("-v", 1)[1])
    return changed_since(env["family"], version, _physics(env))


def resume_differences(saved: Config, config: Config, state: dict[str, Any]) -> list[str]:
    """What continuing the run of ``state`` (its validated config ``saved``) with ``config``
    would change: the differing config keys, then the environment where its version changed
    since the run began."""
    differing = config_differences(saved, config)
    change = environment_change(state)
    if change is not None:
        differing.append(f"the environment ({change})")
    return differing


def _physics(env: dict[str, Any]) -> str | None:
    """The physics preset of a config's ``env`` section: its ``physics`` argument, else the
    family's default (None for a family without presets)."""
    if "physics" in env.get("kwargs", {}):
        return str(env["kwargs"]["physics"])
    default = inspect.signature(family_class(env["family"])).parameters.get("physics")
    return None if default is None else str(default.default)
