"""``tqc``: RLlib's TQC (off-policy, truncated quantile critics), the distributional baseline.

Budget mapping (:func:`build`): ``minibatch`` is the replayed batch of one update and the rollout
fragment, ``train_batch`` (a multiple of ``minibatch``) the env steps of one iteration. A training
step samples one fragment and makes :data:`REPLAY_RATIO` x one update: ``train_batch // minibatch``
updates per iteration, whatever the machine's speed (no minimum time per iteration). Learning starts
once ``train_batch`` steps are stored, so the first iteration updates once, at its last step. Search:
actor and critic learning rates, discount.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.envs.replay_loader import FEATURE_GROUPS
from raytrade.tune_specs.spec import Budget, TuneSpec

SPACE: dict[str, Any] = {
    "actor_lr": tune.loguniform(1e-4, 1e-3),
    "critic_lr": tune.loguniform(1e-4, 1e-3),
    "gamma": tune.choice([0.9, 0.99]),
}
REPLAY_RATIO: float = 1.0
"""Replayed env steps per sampled env step (RLlib's ``training_intensity``): one update of
``minibatch`` replayed steps per ``minibatch`` steps sampled, so each transition is replayed about once.
RLlib's default (``training_intensity`` None, the "auto" fragment of ``n_step`` = 1 step) would make
one update per sampled step instead: ``minibatch`` times this, and ``train_batch`` updates an
iteration. Exact with the default local env runner; with ``k`` remote ones (``--env-runners``) a
training step samples ``k`` fragments and RLlib's round-robin weights make ``k + 1`` updates
(``ray.rllib.algorithms.dqn.calculate_rr_weights`` counts the local runner, which then does not
sample): a ratio of ``(k + 1) / k``."""


def updates_per_iteration(budget: Budget) -> int:
    """Updates of a TQC iteration after the first (which makes one) under ``budget``; refuses a
    ``train_batch`` that is not a multiple of ``minibatch`` (the iteration would sample whole fragments
    past it, and update more than its budget says)."""
    if budget.train_batch % budget.minibatch:
        raise ValueError(
            f"tqc budget: train_batch={budget.train_batch} must be a multiple of "
            f"minibatch={budget.minibatch} (one rollout fragment per update)"
        )
    return int(budget.train_batch // budget.minibatch * REPLAY_RATIO)


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """TQC on ``PortfolioEnv`` with the budget mapping of the module docstring."""
    from raytrade.models.distributional import tqc_config

    updates_per_iteration(budget)  # refuses a train_batch that is not whole fragments
    config = tqc_config(
        env_config,
        train_batch_size_per_learner=budget.minibatch,
        num_steps_sampled_before_learning_starts=budget.train_batch,
        training_intensity=REPLAY_RATIO,
        **SPACE,
    )
    return config.env_runners(rollout_fragment_length=budget.minibatch).reporting(
        min_sample_timesteps_per_iteration=budget.train_batch
    )


SPEC = TuneSpec(
    name="tqc",
    family="tqc",
    description="TQC (off-policy quantile critics), distributional baseline",
    build=build,
    required_features=FEATURE_GROUPS["base"],  # the off-policy baseline keeps the base observation
    # 1024 env steps and 4 updates of 256 an iteration (the first: 1): 201 updates in 50 iterations
    budget=Budget(
        iterations=50,
        grace_period=10,
        num_samples=8,
        train_batch=1024,
        minibatch=256,
        num_epochs=1,
        episode_len=252,
    ),
    # The smallest batch the budget allows, one fragment an iteration: 32 env steps and one update of
    # 32 replayed steps per iteration (learning starts at the first iteration's last step), and an
    # episode lasts one iteration's steps.
    smoke=Budget(
        iterations=3,
        grace_period=2,
        num_samples=1,
        train_batch=32,
        minibatch=32,
        num_epochs=1,
        episode_len=32,
    ),
)
