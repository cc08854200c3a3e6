"""The paper's non-meta baselines, trained with stable-baselines3 on a whole task family.

"Pretrained" is one policy trained by TRPO (sb3-contrib; PPO as an option) on every task of the
family, a new task each episode (:class:`TaskVecEnv`); "oracle" is the same on the family with
``oracle=True``, whose observation holds the task.  The actor has the MAML policy's architecture
(hidden sizes, nonlinearity, state-independent log-std, initial std), so that
:func:`copy_actor` turns it into a :class:`GaussianMLPPolicy` that metarl adapts and evaluates like
a MAML policy.  The critic is SB3's value network, with SB3's GAE λ of 0.95 (the original used
a linear baseline, with λ = 1 as MAML's ``gae_lambda``).
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

import torch
from sb3_contrib import TRPO
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from metarl.agents.common.policies import GaussianMLPPolicy

Algorithm = Literal["trpo", "ppo"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_model(
    algorithm: Algorithm,
    env: VecEnv,
    hidden_sizes: list[int],
    nonlinearity: str,
    init_std: float,
    gamma: float,
    max_kl: float,
    seed: int,
    steps_per_slot: int,
) -> OnPolicyAlgorithm:
    """An SB3 learner whose every update uses ``env.num_envs × steps_per_slot`` steps.

    TRPO keeps the paper's trust region ``max_kl`` (its ``target_kl``) and 10 conjugate-gradient
    iterations; PPO uses SB3's defaults but for the batch."""
    policy_kwargs = {
        "net_arch": {"pi": list(hidden_sizes), "vf": list(hidden_sizes)},
        "activation_fn": ACTIVATIONS[nonlinearity],
        "log_std_init": math.log(init_std),
    }
    common: dict[str, Any] = {
        "policy": "MlpPolicy",
        "env": env,
        "n_steps": steps_per_slot,
        "gamma": gamma,
        "policy_kwargs": policy_kwargs,
        "seed": seed,
        "device": "cpu",
        "verbose": 0,
    }
    batch = env.num_envs * steps_per_slot
    minibatch = next(size for size in range(min(batch, 2048), 0, -1) if batch % size == 0)
    if algorithm == "trpo":
        return TRPO(**common, target_kl=max_kl, cg_max_steps=10, batch_size=minibatch)
    return PPO(**common, batch_size=minibatch)


def copy_actor(actor: ActorCriticPolicy, policy: GaussianMLPPolicy) -> GaussianMLPPolicy:
    """Copy SB3's Gaussian actor (its policy network, action head and log-std) into ``policy``,
    a metarl policy of the same architecture; returns ``policy``."""
    modules = [*actor.mlp_extractor.policy_net, actor.action_net]
    linear = [module for module in modules if isinstance(module, nn.Linear)]
    if len(linear) != len(policy.layers):
        raise ValueError(f"SB3 actor has {len(linear)} layers, the policy {len(policy.layers)}")
    with torch.no_grad():
        for source, target in zip(linear, policy.layers, strict=True):
            assert isinstance(target, nn.Linear)
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
        policy.log_std.copy_(actor.log_std)
    return policy


def load_model(algorithm: Algorithm, saved: io.BufferedIOBase, env: VecEnv) -> OnPolicyAlgorithm:
    """A learner saved by ``model.save``, continuing on ``env``."""
    return (TRPO if algorithm == "trpo" else PPO).load(saved, env=env, device="cpu")
