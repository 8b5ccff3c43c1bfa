"""``marwil``: advantage-weighted behaviour cloning of the logged experience (RLlib's MARWIL) with
``ppo``'s module (``models`` family ``ppo_mlp``, whose value head gives the advantages).

Search: learning rate and ``beta`` (the advantage temperature; 0 is plain BC).
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.offline import OFFLINE_BUDGET, OFFLINE_FEATURES, OFFLINE_SMOKE, make_offline
from raytrade.tune_specs.spec import Budget, TuneSpec

SPACE: dict[str, Any] = {
    "lr": tune.loguniform(3e-4, 3e-3),
    "beta": tune.choice([0.25, 0.5, 1.0]),
}


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """MARWIL on the store's experience with ``ppo``'s RLModule spec."""
    from ray.rllib.algorithms.marwil import MARWILConfig

    from raytrade.models.catalog import ppo_config

    module = ppo_config("ppo_mlp", env_config).rl_module_spec
    config = MARWILConfig().rl_module(rl_module_spec=module)
    return make_offline(config, env_config, budget).training(**SPACE)


SPEC = TuneSpec(
    name="marwil",
    family="ppo_mlp",
    description="MARWIL (advantage-weighted BC) of the experience table, ppo's shared per-asset MLP",
    build=build,
    required_features=OFFLINE_FEATURES,
    budget=OFFLINE_BUDGET,
    smoke=OFFLINE_SMOKE,
)
