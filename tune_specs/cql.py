"""``cql``: conservative Q-learning from the logged experience (RLlib's CQL algorithm and loss: SAC's
actor and twin Q, plus the conservative penalty on actions the data does not show), on the lean
module and learner of :mod:`models.cql_lean` / :mod:`models.cql_learner` (same loss, less work
per update: one Q MLP per twin over ``[obs, action]``, every sampled action in one pass, one
backward pass; ``python -m benchmarks.offline`` measures it against d3rlpy).

The actor is trained by behaviour cloning for the first ``bc_iters`` updates (one iteration's
worth), then by the Q heads. Search: actor and critic learning rates, the conservative weight, and
SAC's initial entropy temperature ``initial_alpha``.

The rewards arrive divided by their spread (``tune_specs.offline``: unit standard deviation), and the
entropy temperature is set for that unit. The automatic tuning (``target_entropy = "auto"``: minus
the number of assets, RLlib's; ``alpha_lr`` 1e-3) moves ``log alpha`` by about 1e-3 per update, ~0.5
over a full budget, so the initial value is what the actor sees. With RLlib's ``initial_alpha = 1``
the actor's loss ``alpha * logp - Q`` was 99.7 % entropy at the logged daily log growth (5 symbols
of ``kelly_lite`` experience, smoke budget, 15 iterations); with 0.1 and unit rewards the entropy
term is 0.31 against the Q term's 0.15 after 60 updates, the critic still growing toward the
rewards' scale. Searched: ``{0.01, 0.1}``.
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
    "initial_alpha": tune.choice([0.01, 0.1]),
}
TARGET_ENTROPY = "auto"
"""SAC's entropy target for the alpha loss: RLlib's ``"auto"``, minus the action's dimension (one per
asset)."""
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
    config = lean_cql(CQLConfig().training(lr=None, bc_iters=updates, target_entropy=TARGET_ENTROPY), HIDDEN)
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
