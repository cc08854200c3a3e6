"""The run configuration: one typed schema (pydantic) for YAML files, ``--set`` overrides and
validation.  Every problem is reported as one line naming the key and what was expected."""

from __future__ import annotations

import copy
import difflib
import inspect
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from metarl import envs
from metarl.agents.common.sampling import SamplerConfig
from metarl.agents.maml_trpo import MAMLTRPOConfig
from metarl.agents.reptile import ReptileConfig
from metarl.configs import DEFAULT_CONFIG, bundled_config_path, bundled_configs
from metarl.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Section):
    """Which task family to meta-train on, and its keyword arguments."""

    family: str = "Navigation2D"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @pydantic.field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        envs.family_class(value)
        return value

    @pydantic.model_validator(mode="after")
    def _known_kwargs(self) -> EnvConfig:
        signature = inspect.signature(envs.family_class(self.family).__init__)
        accepted = [name for name in signature.parameters if name not in ("self", "seed")]
        for key in self.kwargs:
            if key not in accepted:
                raise ValueError(
                    f"env.kwargs.{key}: unknown argument of {self.family}{_suggest(key, accepted)}"
                    f"; expected one of {accepted}"
                )
        try:
            envs.family_class(self.family)(**self.kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"env.kwargs.{error}") from None
        return self


class PolicyConfig(_Section):
    """Gaussian MLP policy."""

    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [100, 100], min_length=1)
    nonlinearity: Literal["relu", "tanh"] = "relu"
    init_std: PositiveFloat = 1.0


class AlgorithmConfig(MAMLTRPOConfig, ReptileConfig):
    """The meta-learning algorithm and its hyperparameters (each reads its own and the inner
    loop's: Reptile has no trust region, MAML-TRPO no outer step size)."""

    name: Literal["maml_trpo", "reptile"] = "maml_trpo"  # the agent: agents/{name}.py

    @pydantic.model_validator(mode="after")
    def _reptile_adapts(self) -> AlgorithmConfig:
        if self.name == "reptile" and self.num_inner_steps == 0:
            raise ValueError(
                "algorithm.num_inner_steps: Reptile needs at least one inner step (it moves θ "
                "towards the adapted parameters), got 0"
            )
        return self


class TrainConfig(_Section):
    """Run length, seeding, device and checkpointing."""

    num_iterations: PositiveInt = 500
    # below 2**32: NumPy would split a larger seed into the words of a held-out stream's
    seed: int = Field(1, ge=0, lt=2**32)
    device: Literal["cpu", "cuda"] = "cpu"
    checkpoint_every: PositiveInt = 1
    # stop the run after this many meta-steps in a row rejected for a NaN or an Inf
    max_consecutive_rejections: PositiveInt = 5


class BaselineConfig(_Section):
    """A non-meta baseline of ``metarl baseline`` (stable-baselines3), absent for MAML runs."""

    method: Literal["pretrained", "oracle", "random"]
    algorithm: Literal["trpo", "ppo"] = "trpo"
    # environment steps in all; None: the paper's budget for the family (navigation 100,
    # HalfCheetah 1000, Ant 2000 updates)
    total_steps: PositiveInt | None = None
    steps_per_update: PositiveInt = 20_000  # the paper's batch, about 20,000 steps


class Config(_Section):
    """A whole run."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    baseline: BaselineConfig | None = None

    @pydantic.model_validator(mode="after")
    def _oracle_sees_the_task(self) -> Config:
        if self.baseline is not None:
            told = bool(self.env.kwargs.get("oracle", False))
            if told != (self.baseline.method == "oracle"):
                raise ValueError(
                    "env.kwargs.oracle: must be true for the oracle baseline and only for it, "
                    f"got {told} with baseline.method={self.baseline.method}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def run_method(config: Config) -> str:
    """What a run is: ``maml``, ``reptile``, or a baseline (its ``baseline`` section's method;
    without one, ``oracle`` when told the task and ``pretrained`` with no inner step, as metarl's
    own loop trains the navigation baselines)."""
    if config.baseline is not None:
        return config.baseline.method
    if config.env.kwargs.get("oracle"):
        return "oracle"
    if config.algorithm.name == "reptile":
        return "reptile"
    return "pretrained" if config.algorithm.num_inner_steps == 0 else "maml"


def run_name(config: Config, preset: str) -> str:
    """``{family}__{preset}__{seed}__{YYYYmmdd-HHMMSS}``: default run folders and W&B runs."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.env.family}__{preset}__{config.train.seed}__{stamp}"


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides
    (dotted keys, YAML values: ``algorithm.inner_lr=0.5``).  Raises :class:`ConfigError`."""
    data = _read_yaml(Path(path)) if path is not None else {}
    return apply_overrides(data, overrides or [])


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> Config:
    """Validate the config mapping ``data`` after applying ``key=value`` overrides to a copy."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--set {override!r}: expected KEY=VALUE, e.g. algorithm.inner_lr=0.5"
            )
        _set_dotted(data, key.strip(), _parse_value(raw))
    return validate_config(data)


def validate_config(data: Any) -> Config:
    """Validate a config mapping, turning the first error into a one-line :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(_describe(error.errors()[0])) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: invalid YAML{where}") from None
    if data is None:
        sections = ", ".join(Config.model_fields)
        raise ConfigError(f"config file {path}: empty; expected a mapping of sections ({sections})")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section = _section_model(error["loc"][:-1])
        known = list(section.model_fields) if section is not None else []
        name = str(error["loc"][-1])
        return f"{location}: unknown key{_suggest(name, known)}; expected one of {known}"
    message = error["msg"]
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        if message.startswith(("env.kwargs.", "algorithm.")):
            return message
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{location}: {message}{shown}" if location else f"config: {message}"


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        if not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_config_path(value: str | None) -> Path:
    """A path to a YAML file, or the name of a bundled config (``navigation``; a folder of that
    name, such as a runs folder, does not hide it)."""
    name = value or DEFAULT_CONFIG
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in name:
        return path
    if name in bundled_configs():
        return bundled_config_path(name)
    raise ConfigError(
        f"--config {name}: no such file or bundled config; bundled: {bundled_configs()}"
    )


def config_differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ (``train.num_iterations`` may change freely)."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    keys = sorted(set(flat_a) | set(flat_b))
    return [k for k in keys if flat_a.get(k) != flat_b.get(k) and k != "train.num_iterations"]


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out
