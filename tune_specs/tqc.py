"""``tqc``: RLlib's TQC (off-policy, truncated quantile critics), the distributional baseline.

An iteration samples ``budget.train_batch`` env steps; learning starts after the first iteration's
steps. Search: actor and critic learning rates, discount.
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


def build(env_config: dict[str, Any], budget: Budget) -> AlgorithmConfig:
    """TQC on ``PortfolioEnv``; ``budget.minibatch`` is the replay batch per update."""
    from raytrade.models.distributional import tqc_config

    config = tqc_config(
        env_config,
        train_batch_size_per_learner=budget.minibatch,
        num_steps_sampled_before_learning_starts=budget.train_batch,
        **SPACE,
    )
    return config.reporting(min_sample_timesteps_per_iteration=budget.train_batch)


SPEC = TuneSpec(
    name="tqc",
    family="tqc",
    description="TQC (off-policy quantile critics), distributional baseline",
    build=build,
    required_features=FEATURE_GROUPS["base"],  # the off-policy baseline keeps the base observation
    budget=Budget(
        iterations=50,
        grace_period=10,
        num_samples=8,
        train_batch=1000,
        minibatch=256,
        num_epochs=1,
        episode_len=252,
        checkpoint_every=10,
    ),
    # A TQC training step samples ``minibatch`` env steps (RLlib's "auto" rollout fragment) and, once
    # learning has started, makes one update on a replayed batch of that size; an iteration runs
    # train_batch / minibatch steps. The smoke budget runs one step of the smallest batch the budget
    # allows: learning starts at the end of the first iteration, every iteration updates once, and
    # an episode lasts one iteration's steps.
    smoke=Budget(
        iterations=3,
        grace_period=2,
        num_samples=1,
        train_batch=32,
        minibatch=32,
        num_epochs=1,
        episode_len=32,
        checkpoint_every=2,
    ),
)
