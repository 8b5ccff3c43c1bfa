"""``marwil``: advantage-weighted behaviour cloning of the logged experience (RLlib's MARWIL) with
``ppo``'s module (``models`` family ``ppo_mlp``, whose value head gives the advantages).

Search: learning rate and ``beta`` (the advantage temperature; 0 is plain BC).

RLlib's MARWIL weights each logged action by ``exp(beta * A / c)`` with ``c^2`` a moving average of
the squared advantages (``MARWILTorchLearner.compute_loss_for_module``), but RLlib's defaults start
``c^2`` at 100 and move it by 1e-8 per update: ``c`` stays 10, whatever the advantages' size. At the
logged daily log growth (std ~1e-3) that left weights within 1e-3 of 1 (behaviour cloning). The
rewards now arrive divided by their spread (``tune_specs.offline``: unit standard deviation), ``c^2``
starts at 1 (that unit) and follows the advantages' mean square at 1 % per update
(:data:`ADVANTAGE_NORM_START`, :data:`ADVANTAGE_NORM_RATE`), so ``A / c`` is of the order of one.
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
ADVANTAGE_NORM_START = 1.0
"""MARWIL's advantage normaliser ``c^2`` at the start: the unit of the scaled rewards' squared
advantages (RLlib's: 100)."""
ADVANTAGE_NORM_RATE = 0.01
"""The share of the gap to a batch's mean squared advantage ``c^2`` moves by per update (RLlib's:
1e-8)."""


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """MARWIL on the store's experience with ``ppo``'s RLModule spec."""
    from ray.rllib.algorithms.marwil import MARWILConfig

    from raytrade.models.catalog import ppo_config

    module = ppo_config("ppo_mlp", env_config).rl_module_spec
    config = MARWILConfig().rl_module(rl_module_spec=module)
    config = config.training(
        moving_average_sqd_adv_norm_start=ADVANTAGE_NORM_START,
        moving_average_sqd_adv_norm_update_rate=ADVANTAGE_NORM_RATE,
    )
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
