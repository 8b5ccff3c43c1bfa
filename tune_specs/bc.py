"""``bc``: behaviour cloning of the logged experience with ``ppo``'s module (``models`` family
``ppo_mlp``), so a later PPO fine-tune can start from its weights.

The Gaussian over the per-asset scores is fitted to the logged actions by maximum likelihood
(RLlib's BC: MARWIL with ``beta = 0``). Search: learning rate.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.offline import OFFLINE_BUDGET, OFFLINE_FEATURES, OFFLINE_SMOKE, make_offline
from raytrade.tune_specs.spec import Budget, TuneSpec

SPACE: dict[str, Any] = {"lr": tune.loguniform(3e-4, 3e-3)}


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """BC on the store's experience with ``ppo``'s RLModule spec (same class, same projection)."""
    from ray.rllib.algorithms.bc import BCConfig

    from raytrade.models.catalog import ppo_config

    module = ppo_config("ppo_mlp", env_config).rl_module_spec
    config = BCConfig().rl_module(rl_module_spec=module)
    return make_offline(config, env_config, budget).training(**SPACE)


SPEC = TuneSpec(
    name="bc",
    family="ppo_mlp",
    description="behaviour cloning of the experience table, ppo's shared per-asset MLP",
    build=build,
    required_features=OFFLINE_FEATURES,
    budget=OFFLINE_BUDGET,
    smoke=OFFLINE_SMOKE,
)
