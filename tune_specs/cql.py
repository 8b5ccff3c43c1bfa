"""``cql``: conservative Q-learning from the logged experience (RLlib's CQL algorithm and loss: SAC's
actor and twin Q, plus the conservative penalty on actions the data does not show), on the lean
module and learner of :mod:`models.cql_lean` / :mod:`models.cql_learner` (same loss, less work
per update: one Q MLP per twin over ``[obs, action]``, every sampled action in one pass, one
backward pass; ``python -m benchmarks.offline`` measures it against d3rlpy).

The actor is trained by behaviour cloning for the first ``bc_iters`` updates (one iteration's
worth), then by the Q heads. Search: actor and critic learning rates, the conservative weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.tune_specs.offline import OFFLINE_BUDGET, OFFLINE_FEATURES, OFFLINE_SMOKE, make_offline
from raytrade.tune_specs.spec import Budget, TuneSpec

if TYPE_CHECKING:
    from ray.rllib.algorithms.cql import CQLConfig

SPACE: dict[str, Any] = {
    "actor_lr": tune.loguniform(1e-4, 1e-3),
    "critic_lr": tune.loguniform(1e-4, 1e-3),
    "min_q_weight": tune.choice([1.0, 5.0]),
}
HIDDEN: list[int] = [64, 64]
"""Hidden layers of the actor and Q networks (the width of ``ppo_mlp``'s encoder)."""


def lean_cql(config: CQLConfig, hidden: Sequence[int]) -> CQLConfig:
    """``config`` on :class:`LeanCQLModule` (ReLU ``hidden`` layers, policy and each Q) and
    :class:`LeanCQLLearner`: the spec's and the benchmark's one way to get our CQL."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from raytrade.models.cql_lean import LeanCQLModule
    from raytrade.models.cql_learner import LeanCQLLearner

    spec = RLModuleSpec(module_class=LeanCQLModule, model_config={"hidden": list(hidden)})
    return config.rl_module(rl_module_spec=spec).training(learner_class=LeanCQLLearner)


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """CQL on the store's experience; ``bc_iters`` is one iteration's updates."""
    from ray.rllib.algorithms.cql import CQLConfig

    updates = max(1, budget.train_batch // budget.minibatch)
    # SAC-style: actor_lr and critic_lr, no shared lr
    config = lean_cql(CQLConfig().training(lr=None, bc_iters=updates), HIDDEN)
    return make_offline(config, env_config, budget).training(**SPACE)


SPEC = TuneSpec(
    name="cql",
    family="cql",
    description="CQL (conservative Q-learning) from the experience table, lean twin-Q module",
    build=build,
    required_features=OFFLINE_FEATURES,
    budget=OFFLINE_BUDGET,
    smoke=OFFLINE_SMOKE,
)
