"""``gnn``: PPO with graph attention over an in-module asset similarity graph (family ``gnn``).

Search: learning rate, entropy bonus and discount; the graph's neighbour count is searched inside the
module's ``model_config``.
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


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """PPO + GNN allocator on ``PortfolioEnv``."""
    from raytrade.models.catalog import ppo_config

    config = ppo_config("gnn", env_config, num_envs_per_env_runner=budget.num_envs)
    return add_training(config, budget, SPACE)


SPEC = TuneSpec(
    name="gnn",
    family="gnn",
    description="PPO, graph attention over an asset similarity graph",
    build=build,
    required_features=FEATURES,
    budget=ON_POLICY_BUDGET.model_copy(update={"num_samples": 12}),
    smoke=ON_POLICY_SMOKE.model_copy(update={"iterations": 3}),
)
