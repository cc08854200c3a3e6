"""Config validation: every problem is one line naming the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarl.config import (
    Config,
    ConfigError,
    bundled_config_path,
    bundled_configs,
    load_config,
    resolve_config_path,
)

BAD_OVERRIDES = {
    "unknown-key": (
        ["algorithm.inner_rl=0.1"],
        r"algorithm.inner_rl: unknown key \(did you mean 'inner_lr'\?\)",
    ),
    "unknown-section": (["trainer.seed=1"], r"trainer: unknown key"),
    "wrong-type": (["algorithm.num_tasks=many"], r"algorithm.num_tasks: .*valid integer"),
    "zero-tasks": (["algorithm.num_tasks=0"], r"algorithm.num_tasks: .*greater than 0"),
    "zero-lr": (["algorithm.inner_lr=0"], r"algorithm.inner_lr: .*non-zero number"),
    "gamma-above-one": (["algorithm.gamma=1.5"], r"algorithm.gamma: .*less than or equal to 1"),
    "bad-nonlinearity": (
        ["policy.nonlinearity=sigmoid"],
        r"policy.nonlinearity: .*'relu' or 'tanh'",
    ),
    "empty-hidden": (["policy.hidden_sizes=[]"], r"policy.hidden_sizes: .*at least 1"),
    "unknown-family": (
        ["env.family=Navigation3D"],
        r"env.family: unknown task family 'Navigation3D' \(did you mean 'Navigation2D'\?\)",
    ),
    "unknown-env-kwarg": (
        ["env.kwargs={goal_rang: 1}"],
        r"env.kwargs.goal_rang: unknown argument of Navigation2D \(did you mean 'goal_range'\?\)",
    ),
    "zero-horizon": (["env.kwargs={horizon: 0}"], r"env.kwargs.horizon must be > 0"),
    "bad-device": (["train.device=tpu"], r"train.device: .*'cpu' or 'cuda'"),
    "not-key-value": (["algorithm.inner_lr"], r"expected KEY=VALUE"),
    "negative-seed": (["train.seed=-1"], r"train.seed: .*greater than or equal to 0"),
    # 2**32 + s would seed a training run with the held-out stream of seed s (two NumPy words)
    "seed-of-33-bits": (["train.seed=4294967296"], r"train.seed: .*less than 4294967296"),
    "zero-subsample": (["algorithm.cg_subsample=0"], r"algorithm.cg_subsample: .*greater than 0"),
    "subsample-by-double-backprop": (
        ["algorithm.cg_subsample=0.5", "algorithm.hessian_method=double_backprop"],
        r"algorithm: .*cg_subsample below 1 needs hessian_method 'jacobian'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OVERRIDES))
def test_bad_values_fail_with_one_line_naming_the_key(case: str) -> None:
    overrides, pattern = BAD_OVERRIDES[case]
    with pytest.raises(ConfigError, match=pattern) as error:
        load_config(None, overrides)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("algorithm: [1, 2\n", "invalid YAML at line"),
        ("- just\n- a list\n", "mapping"),
        ("algorithm: 3\n", "algorithm: .*valid dictionary"),
    ],
    ids=["invalid-yaml", "top-level-list", "section-not-mapping"],
)
def test_bad_files_fail_with_one_line(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_are_typed_and_applied() -> None:
    config = load_config(
        None,
        ["algorithm.inner_lr=0.5", "policy.hidden_sizes=[64, 64]", "algorithm.first_order=true"],
    )
    assert config.algorithm.inner_lr == 0.5 and config.algorithm.first_order is True
    assert config.policy.hidden_sizes == [64, 64]


def test_defaults_are_the_reference_hyperparameters() -> None:
    algorithm = Config().algorithm
    assert (algorithm.num_tasks, algorithm.num_trajectories, algorithm.inner_lr) == (40, 20, 0.1)
    assert (algorithm.gamma, algorithm.gae_lambda, algorithm.max_kl) == (0.99, 1.0, 0.01)
    assert (algorithm.cg_iterations, algorithm.cg_damping) == (10, 1e-5)
    assert (algorithm.line_search_max_steps, algorithm.line_search_backtrack_ratio) == (15, 0.8)
    assert Config().policy.hidden_sizes == [100, 100] and Config().policy.init_std == 1.0


@pytest.mark.parametrize("name", bundled_configs())
def test_bundled_configs_are_valid_and_commented(name: str) -> None:
    path = resolve_config_path(name)
    load_config(path)
    for line in path.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{name}.yaml: key without a comment: {line!r}"


def test_navigation_config_is_the_reference() -> None:
    config = load_config(resolve_config_path("navigation"))
    assert config.env.family == "Navigation2D"
    assert (config.algorithm.num_tasks, config.algorithm.num_trajectories) == (20, 20)
    assert config.algorithm.inner_lr == 0.5 and config.train.num_iterations == 100


@pytest.mark.parametrize(
    "name, trajectories",
    [
        ("halfcheetah_vel", 20),
        ("halfcheetah_dir", 20),
        ("ant_vel", 20),
        ("ant_dir", 40),
        ("ant_goal", 20),
    ],
)
def test_locomotion_configs_are_the_original_hyperparameters(name: str, trajectories: int) -> None:
    config = load_config(resolve_config_path(name))
    algorithm = config.algorithm
    assert (algorithm.num_tasks, algorithm.num_trajectories) == (40, trajectories)
    assert (algorithm.inner_lr, algorithm.max_kl, config.train.num_iterations) == (0.1, 0.01, 500)
    assert config.policy.hidden_sizes == [100, 100] and config.policy.nonlinearity == "relu"
    assert config.env.kwargs["physics"] == "original" and not algorithm.first_order
    assert config.sampler.fill_steps == name.startswith("ant_")  # the authors' step budget


def test_a_folder_named_like_a_bundled_config_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ant_vel").mkdir()  # e.g. the runs of `metarl reproduce ant_vel`
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("ant_vel") == bundled_config_path("ant_vel")
    (tmp_path / "mine").write_text("train: {seed: 3}\n")
    assert resolve_config_path("mine") == Path("mine")  # a file of that name is the config
