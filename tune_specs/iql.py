"""``iql``: implicit Q-learning from the logged experience (RLlib's IQL: expectile value head, twin
Q heads, advantage-weighted actor; RLlib's default module).

Search: actor and critic learning rates, the expectile, the advantage temperature ``beta``.

RLlib's IQL weights each logged action by ``min(exp(beta * (Q - V)), 100)``
(``IQLTorchLearner.compute_loss_for_module``). The rewards arrive divided by their spread
(``tune_specs.offline``: unit standard deviation), so ``Q - V`` is of the order of one for an action
clearly better or worse than the policy's average (more over a long discounted horizon); ``beta`` in
``{0.3, 0.6, 1.0}`` then gives such an action weights from e^0.3 to e^1. RLlib's IQL keeps MARWIL's
check that ``beta`` is at most 1 (``MARWILConfig.validate``), so the paper's 3 and 10 are refused:
a search that drew one ended with a ValueError. (At the logged daily log growth, std ~1e-3, before
the rewards were scaled, ``{0.1, 0.5}`` gave weights within 0.2 % of 1: behaviour cloning.)
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.cql import HIDDEN
from raytrade.tune_specs.offline import OFFLINE_BUDGET, OFFLINE_FEATURES, OFFLINE_SMOKE, make_offline
from raytrade.tune_specs.spec import Budget, TuneSpec

SPACE: dict[str, Any] = {
    "actor_lr": tune.loguniform(1e-4, 1e-3),
    "critic_lr": tune.loguniform(1e-4, 1e-3),
    "expectile": tune.choice([0.7, 0.8, 0.9]),
    "beta": tune.choice([0.3, 0.6, 1.0]),
}


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """IQL on the store's experience."""
    from ray.rllib.algorithms.iql import IQLConfig

    config = IQLConfig().rl_module(model_config={"fcnet_hiddens": HIDDEN, "head_fcnet_hiddens": []})
    return make_offline(config, env_config, budget).training(**SPACE)


SPEC = TuneSpec(
    name="iql",
    family="iql",
    description="IQL (implicit Q-learning) from the experience table, twin Q heads and a value head",
    build=build,
    required_features=OFFLINE_FEATURES,
    budget=OFFLINE_BUDGET,
    smoke=OFFLINE_SMOKE,
)
