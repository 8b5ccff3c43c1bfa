"""``distrl``: PPO with a quantile critic and a CVaR-mixed value (``models`` family ``distributional``).

Search: learning rate, entropy bonus and discount as for ``ppo``, plus the critic's CVaR level and the
weight of the CVaR value in the advantage baseline (``model_config``).
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.ppo import FEATURES
from raytrade.tune_specs.spec import ON_POLICY_BUDGET, ON_POLICY_SMOKE, Budget, TuneSpec, add_training

SPACE: dict[str, Any] = {
    "lr": tune.loguniform(1e-4, 1e-3),
    "entropy_coeff": tune.choice([0.0, 0.001, 0.01]),
    "gamma": tune.choice([0.9, 0.99]),
}
MODEL_SPACE: dict[str, Any] = {
    "cvar_alpha": tune.choice([0.05, 0.1, 0.25]),
    "cvar_weight": tune.uniform(0.0, 1.0),
}


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """PPO + quantile critic on ``PortfolioEnv``; the model space is searched inside ``model_config``."""
    from raytrade.models.catalog import ppo_config

    config = ppo_config("distributional", env_config, num_envs_per_env_runner=budget.num_envs)
    # Tune resolves domains in the config's ``model_config`` dict (not inside the RLModuleSpec);
    # RLlib merges it under the spec's own model_config.
    config = config.rl_module(model_config=dict(MODEL_SPACE))
    return add_training(config, budget, SPACE)


SPEC = TuneSpec(
    name="distrl",
    family="distributional",
    description="PPO, quantile critic with a CVaR value",
    build=build,
    required_features=FEATURES,
    budget=ON_POLICY_BUDGET,
    smoke=ON_POLICY_SMOKE,
)
