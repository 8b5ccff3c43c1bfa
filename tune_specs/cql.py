"""``cql``: conservative Q-learning from the logged experience (RLlib's CQL: SAC's actor and twin Q
heads, RLlib's default module, plus the conservative penalty on actions the data does not show).

The actor is trained by behaviour cloning for the first ``bc_iters`` updates (one iteration's
worth), then by the Q heads. Search: actor and critic learning rates, the conservative weight.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.offline import OFFLINE_BUDGET, OFFLINE_FEATURES, OFFLINE_SMOKE, make_offline
from raytrade.tune_specs.spec import Budget, TuneSpec

SPACE: dict[str, Any] = {
    "actor_lr": tune.loguniform(1e-4, 1e-3),
    "critic_lr": tune.loguniform(1e-4, 1e-3),
    "min_q_weight": tune.choice([1.0, 5.0]),
}
HIDDEN: list[int] = [64, 64]
"""Hidden layers of the actor and Q networks (the width of ``ppo_mlp``'s encoder)."""


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """CQL on the store's experience; ``bc_iters`` is one iteration's updates."""
    from ray.rllib.algorithms.cql import CQLConfig

    updates = max(1, budget.train_batch // budget.minibatch)
    config = (
        CQLConfig()
        .training(lr=None, bc_iters=updates)  # SAC-style: actor_lr and critic_lr, no shared lr
        .rl_module(model_config={"fcnet_hiddens": HIDDEN, "head_fcnet_hiddens": []})
    )
    return make_offline(config, env_config, budget).training(**SPACE)


SPEC = TuneSpec(
    name="cql",
    family="cql",
    description="CQL (conservative Q-learning) from the experience table, twin Q heads",
    build=build,
    required_features=OFFLINE_FEATURES,
    budget=OFFLINE_BUDGET,
    smoke=OFFLINE_SMOKE,
)
