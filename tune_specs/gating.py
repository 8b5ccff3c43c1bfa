"""``gating``: the two-stage gate on ``GatedSymbolEnv`` (family ``gating``): stage 1 a mode (flat /
probe / passive / aggressive) and side per symbol, stage 2 a sizing head per mode whose level sizes
the chosen mode as a fraction of its cap (probe: ``probe_weight``; passive and aggressive: the
contract's kelly_lite on ``fc_mean`` with sigma from the last 7 closes). Where the contract's gate
(spread cap, edge threshold, consensus) is closed, passive and aggressive are masked out of the
policy (``models.gating``, ``envs.gate``).

Search: learning rate, entropy bonus (exploration over modes and sizes matters here) and discount.
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
    description="PPO, hierarchical gate: mode head, a sizing head per mode, contract gates as a mask",
    build=build,
    required_features=FEATURES,
    budget=ON_POLICY_BUDGET,
    smoke=ON_POLICY_SMOKE,
)
