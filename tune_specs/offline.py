"""What the offline specs (``bc``, ``marwil``, ``cql``, ``iql``) share: the experience reader RLlib
samples from, the env spaces, budgets, and the one function that turns an algorithm config offline.

Design decisions
----------------
* RLlib's offline API (``AlgorithmConfig.offline_data``) reads through an ``OfflineData`` object;
  :class:`ExperienceData` is RLlib's own class with its dataset replaced by the store's transition
  reader (``replay.experience.read_transitions``: a lazy ``ray.data.Dataset``, one read task per
  committed file, nothing read into the driver). ``input_`` is the experience store's root: the
  training replay store itself unless ``raytrade tune --experience ROOT`` names another one.
* An offline algorithm has no env runners, so the env's spaces are given explicitly (built once
  from the training env config); they are also what every transition is checked against (a
  mismatch is an error naming the column and the episode).
* The env stays configured: the validation scoring hook (``tune_specs.objective``) replays the
  learned module in the simulator on the validation split, exactly as for the online specs.
* Budget mapping: ``minibatch`` is the learner batch (``train_batch_size_per_learner``);
  ``train_batch // minibatch`` updates make one iteration (``dataset_num_iters_per_learner``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.offline.offline_prelearner import OfflinePreLearner

from raytrade.envs.replay_loader import FEATURE_GROUPS
from raytrade.tune_specs.spec import Budget

if TYPE_CHECKING:
    from gymnasium import spaces

log = logging.getLogger(__name__)

OFFLINE_FEATURES: Final[tuple[str, ...]] = FEATURE_GROUPS["base"]
"""The observation of the offline specs (and the default of ``raytrade simulate-experience``)."""

OFFLINE_BUDGET: Final = Budget(
    iterations=30,
    grace_period=5,
    num_samples=4,
    train_batch=4096,
    minibatch=256,
    num_epochs=1,
    episode_len=252,
    checkpoint_every=5,
)
OFFLINE_SMOKE: Final = Budget(
    iterations=2,
    grace_period=1,
    num_samples=1,
    train_batch=512,
    minibatch=128,
    num_epochs=1,
    episode_len=64,
    checkpoint_every=1,
)


PRELEARNER_CPUS: Final = 0.5
"""CPUs reserved by the Ray Data actor that turns transitions into learner batches."""


class ExperienceData(OfflineData):
    """RLlib's ``OfflineData`` reading the replay store's experience (``config.input_[0]``)."""

    def __init__(self, config: AlgorithmConfig):
        from raytrade.replay.experience import read_transitions

        # OfflineData.__init__ minus its ``ray.data.read_*`` call and cloud filesystems.
        self.config = config
        self.is_multi_agent = config.is_multi_agent
        root = experience_root(config.input_)
        self.path = Path(root)
        self.data_read_batch_size = config.input_read_batch_size
        self.materialize_data = config.materialize_data
        self.materialize_mapped_data = config.materialize_mapped_data
        self.data_is_mapped = False
        obs_space, act_space = config.observation_space, config.action_space
        assert obs_space is not None and act_space is not None  # make_offline sets both
        self.data = read_transitions(
            root,
            n_assets=int(act_space.shape[0]),
            obs_dim=int(obs_space.shape[0]),
        )
        if self.materialize_data:
            self.data = self.data.materialize()
        self.batch_iterators = None
        self.map_batches_kwargs = self.default_map_batches_kwargs | config.map_batches_kwargs
        self.iter_batches_kwargs = self.default_iter_batches_kwargs | config.iter_batches_kwargs
        self.returned_streaming_split = False
        self.prelearner_class = config.prelearner_class or OfflinePreLearner
        self.locality_hints = None
        self.learner_handles = None
        self.module_spec = None


def experience_root(input_: Any) -> str:
    """The experience store root of an offline config's ``input_`` (a path or a one-path list)."""
    if isinstance(input_, list | tuple):
        if len(input_) != 1:
            raise ValueError(f"offline input must name one experience store, got {list(input_)}")
        return str(input_[0])
    return str(input_)


@functools.lru_cache(maxsize=4)
def _spaces(env_config_json: str) -> tuple[spaces.Space[Any], spaces.Space[Any]]:
    from raytrade.envs.gym_envs import PortfolioEnv

    env = PortfolioEnv(json.loads(env_config_json))
    return env.observation_space, env.action_space


def env_spaces(env_config: Mapping[str, Any]) -> tuple[spaces.Space[Any], spaces.Space[Any]]:
    """(observation, action) spaces of the flat ``PortfolioEnv`` of ``env_config`` (built once)."""
    return _spaces(json.dumps(dict(env_config), sort_keys=True, default=str))


def offline_env_config(env_config: Mapping[str, Any]) -> dict[str, Any]:
    """The env config of an offline spec: the training one with the flat observation (what the
    logged transitions hold and what the ``ppo_mlp`` module reads)."""
    return {**dict(env_config), "flat_obs": True}


def make_offline(config: AlgorithmConfig, env_config: Mapping[str, Any], budget: Budget) -> AlgorithmConfig:
    """``config`` (a BC/MARWIL/CQL/IQL config) reading the experience of the training store, with the
    env's spaces, the env kept for validation scoring, and the budget's batch sizes."""
    from ray.tune.registry import register_env

    from raytrade.envs.gym_envs import PORTFOLIO_ENV_ID, make_portfolio_env

    cfg = offline_env_config(env_config)
    obs_space, act_space = env_spaces(cfg)
    register_env(PORTFOLIO_ENV_ID, make_portfolio_env)
    return (
        config.environment(
            env=PORTFOLIO_ENV_ID, env_config=cfg, observation_space=obs_space, action_space=act_space
        )
        .offline_data(
            input_=str(cfg["data"]["root"]),
            offline_data_class=ExperienceData,
            dataset_num_iters_per_learner=max(1, budget.train_batch // budget.minibatch),
            # one pre-learner actor per learner: each builds the module (seconds to start), and a
            # trial on a small node must not wait for CPUs that its own actors hold
            map_batches_kwargs={"concurrency": 1, "num_cpus": PRELEARNER_CPUS},
        )
        .training(train_batch_size_per_learner=budget.minibatch)
    )


def with_experience(config: AlgorithmConfig, root: str) -> AlgorithmConfig:
    """An offline ``config`` reading the experience store at ``root`` instead (``--experience``)."""
    if not config.is_offline:
        raise ValueError("--experience applies to the offline specs only")
    return config.offline_data(input_=root)
