"""``gating``: per-symbol gate modes (flat / probe / passive / aggressive) and side on
``GatedSymbolEnv`` (family ``gating``); sizes come from the env's kelly rule on ``fc_mean`` / ``vol_20``.

Search: learning rate, entropy bonus (exploration over modes matters here) and discount.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.ppo import FEATURES
from raytrade.tune_specs.spec import ON_POLICY_BUDGET, ON_POLICY_SMOKE, Budget, TuneSpec, add_training

SPACE: dict[str, Any] = {
    "lr": tune.loguniform(1e-4, 1e-3),
    "entropy_coeff": tune.choice([0.001, 0.01, 0.03]),
    "gamma": tune.choice([0.9, 0.99]),
}


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """PPO + gating module on ``GatedSymbolEnv``."""
    from raytrade.models.catalog import ppo_config

    config = ppo_config("gating", env_config, num_envs_per_env_runner=budget.num_envs)
    return add_training(config, budget, SPACE)


SPEC = TuneSpec(
    name="gating",
    family="gating",
    description="PPO, hierarchical gate: mode head and per-mode sizing",
    build=build,
    required_features=FEATURES,
    budget=ON_POLICY_BUDGET,
    smoke=ON_POLICY_SMOKE,
)
