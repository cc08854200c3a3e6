"""Atomic checkpoints holding the whole training state, and their validation on load."""

from __future__ import annotations

import inspect
import io
import math
import os
import pickle
import re
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
ENV_ID = re.compile(r"metarl/(\w+)-v(\d+)")  # a family's gymnasium id
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
    problem = _environments_problem(state)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    return state


def _environments_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a state's ``env_id`` and ``env_before``, if anything."""
    if "env_id" in state and not _is_env_id(state["env_id"]):
        return f"env_id: expected an id metarl/<Family>-v<N>, got {state['env_id']!r}"
    last, spans = 0, state.get("env_before", [])
    for span in spans if isinstance(spans, list) else [spans]:
        well_formed = isinstance(span, list) and len(span) == 3
        if not (
            well_formed
            and type(span[0]) is int
            and last < span[0] <= state["iteration"]
            and _is_env_id(span[1])
            and (span[2] is None or isinstance(span[2], str))
        ):
            return (
                "env_before: expected [last iteration, env id, physics preset] in increasing "
                f"order of iterations, got {span!r}"
            )
        last = span[0]
    return None


def _is_env_id(value: object) -> bool:
    return isinstance(value, str) and ENV_ID.fullmatch(value) is not None


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
    if not _changed_since(trained, _physics(state["config"]["env"])):
        return None
    return f"{trained}, now {env_id(state['config']['env']['family'])}"


def training_environment_change(state: dict[str, Any]) -> str | None:
    """:func:`environment_change` over the whole run: also the earlier versions a resumed run
    was trained on (``env_before``), each judged with the physics preset it ran, and named with
    its iterations where there are several (``"metarl/AntDir-v0 (iterations 1-200), now
    metarl/AntDir-v1"``)."""
    if not state.get("env_before"):
        return environment_change(state)
    env = state["config"]["env"]
    latest = [state["iteration"], trained_env_id(state), _physics(env)]
    changed, first = [], 1
    for last, trained, physics in [*state["env_before"], latest]:
        if first <= last and _changed_since(trained, physics):
            span = f"iteration {last}" if last == first else f"iterations {first}-{last}"
            changed.append(f"{trained} ({span})")
        first = last + 1
    return f"{', '.join(changed)}, now {env_id(env['family'])}" if changed else None


def comparable_best_return(state: dict[str, Any]) -> float:
    """The ``best_return`` a run continuing ``state`` on this metarl compares with: the state's,
    or -inf where the environment's dynamics changed since (returns on other dynamics do not
    compare; ``best.pt`` goes to the first iteration on these)."""
    return -math.inf if environment_change(state) is not None else state["best_return"]


def environments_before(state: dict[str, Any]) -> list[list[Any]]:
    """The ``env_before`` of a run continuing ``state`` on this metarl: the state's own, and
    the version it was last trained on where that is not this one's (``[last iteration, env
    id, physics preset]``)."""
    before = [list(span) for span in state.get("env_before", [])]
    env, trained = state["config"]["env"], trained_env_id(state)
    if trained != env_id(env["family"]) and state["iteration"] > 0:
        before.append([state["iteration"], trained, _physics(env)])
    return before


def resume_differences(
    saved: Config, config: Config, state: dict[str, Any], whole_run: bool = False
) -> list[str]:
    """What continuing the run of ``state`` (its validated config ``saved``) with ``config``
    would change: the differing config keys, then the environment where its version changed
    since the state was last trained (``whole_run``: since any earlier part of the run)."""
    differing = config_differences(saved, config)
    change = training_environment_change(state) if whole_run else environment_change(state)
    if change is not None:
        differing.append(f"the environment ({change})")
    return differing


def _changed_since(trained: str, physics: str | None) -> bool:
    """Whether the family of the gymnasium id ``trained`` changed the dynamics or rewards of
    the preset ``physics`` since that version; a later version than this metarl's counts as
    changed."""
    match = ENV_ID.fullmatch(trained)
    if match is None:
        raise CheckpointError(f"env id {trained!r}: expected metarl/<Family>-v<N>")
    family, version = match.group(1), int(match.group(2))
    return trained != env_id(family) and changed_since(family, version, physics)


def _physics(env: dict[str, Any]) -> str | None:
    """The physics preset of a config's ``env`` section: its ``physics`` argument, else the
    family's default (None for a family without presets)."""
    if "physics" in env.get("kwargs", {}):
        return str(env["kwargs"]["physics"])
    default = inspect.signature(family_class(env["family"])).parameters.get("physics")
    return None if default is None else str(default.default)
