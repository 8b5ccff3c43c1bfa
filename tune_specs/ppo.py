"""``ppo``: PPO with the permutation-equivariant per-asset MLP (``models`` family ``ppo_mlp``).

Search: learning rate, entropy bonus, clip range, discount. ASHA stops the bottom half of trials at
each rung of ``validation/objective`` (information ratio over ``equal_weight``, net of costs, minus
the CVaR term; ``tune_specs.objective``).
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.envs.replay_loader import DEFAULT_FEATURES
from raytrade.tune_specs.spec import ON_POLICY_BUDGET, ON_POLICY_SMOKE, Budget, TuneSpec, add_training

FEATURES: tuple[str, ...] = DEFAULT_FEATURES
"""The enriched observation (every group of ``envs.replay_loader.FEATURE_GROUPS``); the on-policy
specs share it, ``raytrade tune --features`` narrows it."""

SPACE: dict[str, Any] = {
    "lr": tune.loguniform(1e-4, 1e-3),
    "entropy_coeff": tune.choice([0.0, 0.001, 0.01]),
    "clip_param": tune.choice([0.1, 0.2, 0.3]),
    "gamma": tune.choice([0.9, 0.99]),
}


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """PPO on ``PortfolioEnv`` with the ``ppo_mlp`` module; the budget sets the batch sizes."""
    from raytrade.models.catalog import ppo_config

    config = ppo_config("ppo_mlp", env_config, num_envs_per_env_runner=budget.num_envs)
    return add_training(config, budget, SPACE)


SPEC = TuneSpec(
    name="ppo",
    family="ppo_mlp",
    description="PPO, shared per-asset MLP",
    build=build,
    required_features=FEATURES,
    budget=ON_POLICY_BUDGET,
    smoke=ON_POLICY_SMOKE,
)
