"""``metarl list``: the task families with their physics presets and arguments (``env.kwargs``),
and the bundled configs, read from the code and the config files themselves."""

from __future__ import annotations

import inspect

import yaml

from metarl.configs import DEFAULT_CONFIG, bundled_config_path, bundled_configs
from metarl.envs import FAMILY_MODULES, TaskFamily, family_class
from metarl.envs.mujoco_core import PRESETS


def family_arguments(family: type[TaskFamily]) -> list[inspect.Parameter]:
    """The family's constructor arguments that a config sets (``env.kwargs``): all but ``seed``."""
    parameters = inspect.signature(family.__init__).parameters.values()
    return [p for p in parameters if p.name not in ("self", "seed")]


def presets(family: type[TaskFamily]) -> list[str]:
    """The physics presets of a family, its default first."""
    physics = inspect.signature(family.__init__).parameters.get("physics")
    if physics is None:
        return ["original"]
    return [physics.default, *sorted(set(PRESETS) - {physics.default})]


def describe_families() -> str:
    """Families with the same presets and arguments (HalfCheetahVel and HalfCheetahDir, ...)
    share one entry; one argument per line."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in FAMILY_MODULES:
        try:
            family = family_class(name)
        except ValueError as error:  # an optional dependency is missing: its install hint
            groups.setdefault((str(error.__cause__ or error),), []).append(name)
            continue
        arguments = [f"{p.name}: {p.annotation} = {p.default!r}" for p in family_arguments(family)]
        key = (f"presets {', '.join(presets(family))}", *arguments)
        groups.setdefault(key, []).append(name)
    lines = ["Task families (env.family), presets (env.kwargs.physics; default first), arguments:"]
    for (preset_line, *arguments), names in groups.items():
        lines.append(f"  {', '.join(names)}: {preset_line}")
        lines += [f"    {argument}" for argument in arguments]
    return "\n".join(lines)


def describe_configs() -> str:
    lines = ["Bundled configs (--config NAME):"]
    names = bundled_configs()
    width = max(map(len, names))
    for name in names:
        env = yaml.safe_load(bundled_config_path(name).read_text())["env"]
        physics = (env.get("kwargs") or {}).get("physics")
        what = env["family"] + (f", {physics} physics" if physics else "")
        default = " (the default)" if name == DEFAULT_CONFIG else ""
        lines.append(f"  {name:{width}}  {what}{default}")
    return "\n".join(lines)


def listing() -> str:
    """What ``metarl list`` prints."""
    return f"{describe_families()}\n\n{describe_configs()}"
