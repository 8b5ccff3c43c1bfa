"""What the offline specs (``bc``, ``marwil``, ``cql``, ``iql``) share: the experience reader RLlib
samples from, the env spaces, budgets, and the one function that turns an algorithm config offline.

Design decisions
----------------
* RLlib's offline API (``AlgorithmConfig.offline_data``) reads through an ``OfflineData`` object;
  :class:`ExperienceData` is RLlib's own class with its dataset replaced by the store's transition
  reader (``replay.experience.read_transitions``: a lazy ``ray.data.Dataset``, one read task per
  group of committed files, nothing read into the driver). Where RLlib's ``OfflinePreLearner``
  (per row: an episode, then the learner connector) would only copy the transitions' columns
  (``bc``, ``cql``, ``iql``: :func:`copies_columns`), :class:`ExperienceData` maps them with
  :func:`learner_columns` instead: same batches, no actor, no per-row Python. ``input_``
  is the experience store's root: the training replay store itself unless ``raytrade tune
  --experience ROOT`` names another one.
* An offline algorithm has no env runners, so the env's spaces are given explicitly (built once
  from the training env config); they, the env's universe (its symbols, in order) and its
  observation encoding (``envs.experience.observation_spec``: observed columns, normaliser) are
  what every transition is checked against (a mismatch is an error naming the column and the
  episode): experience logged on other assets, or with other features or another normaliser, is
  refused even when its sizes match.
* The learner reads only the transitions of its training window (:func:`experience_window`: the
  env config's train split, with the fractions and embargo every spec's training env uses), decided
  on its bars but the last, so that a transition's next observation is inside it too. The experience
  table may span every date (a live loop logs into the store it trades, so its transitions fall in
  the latest window, the test split): read whole, the validation and test scores would be measured
  on data the policy trained on, and a walk-forward fold would learn from later folds. A window
  holding no transition is refused (:func:`counted_window`), by ``raytrade tune`` before Ray starts
  and by the trial itself; so is one whose transitions were logged on another universe or encoding
  (:func:`check_experience_layout`, reading the checked columns only).
* **The learner reads the rewards in units of their spread** (``replay.experience.scale_rewards``,
  in the read tasks, for every offline spec): each logged reward is divided by the standard deviation of the
  rewards of the transitions it reads (its training window's, ``WindowCount.reward_std``), computed
  by ``raytrade tune`` before Ray starts, carried in the config (:func:`with_reward_scale`) and
  recorded in the run file and the manifest (``data.experience.window.reward_scale``); a config
  without one (a test, a benchmark) computes the same number in the trial. The logged reward is a
  daily log growth, of the order of 1e-3: in those units the Q values of ``cql`` and ``iql`` are
  ~1e-2, CQL's actor follows its entropy term and its critic its conservative penalty (weighted
  O(1) whatever the reward's unit), and IQL's weights ``exp(beta * (Q - V))`` are 1 (behaviour
  cloning). Dividing every reward of an MDP by one positive constant divides every value and
  Q function by it and changes no policy's ranking, so the optimal policy is unchanged; only the
  losses' balance moves. The reward is not centred (a shift would change what terminating early is
  worth). A window whose rewards do not vary (fewer than two transitions, or one reward throughout)
  keeps scale 1: there is no spread to measure. Scores are unaffected: the validation objective is
  computed by the simulator from the policy's actions.
* The env stays configured: the validation scoring hook (``tune_specs.objective``) replays the
  learned module in the simulator on the validation split, exactly as for the online specs.
* Budget mapping: ``minibatch`` is the learner batch (``train_batch_size_per_learner``);
  ``train_batch // minibatch`` updates make one iteration (``dataset_num_iters_per_learner``, one
  training step per iteration: no minimum time or trained steps per iteration).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.connectors.common import (
    AddObservationsFromEpisodesToBatch,
    AddStatesFromEpisodesToBatch,
    AddTimeDimToBatchAndZeroPad,
    BatchIndividualItems,
    NumpyToTensor,
)
from ray.rllib.connectors.connector_pipeline_v2 import ConnectorPipelineV2
from ray.rllib.connectors.learner import (
    AddColumnsFromEpisodesToTrainBatch,
    AddNextObservationsFromEpisodesToTrainBatch,
)
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.offline.offline_prelearner import OfflinePreLearner

from raytrade.envs.gym_envs import PROGRESS_SLOT
from raytrade.envs.replay_loader import FEATURE_GROUPS
from raytrade.replay.experience import READ_CPUS, WindowCount, check_reward_scale
from raytrade.replay.splits import TimeWindow
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
)
OFFLINE_SMOKE: Final = Budget(
    iterations=2,
    grace_period=1,
    num_samples=1,
    train_batch=512,
    minibatch=128,
    num_epochs=1,
    episode_len=64,
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
        self.seed = 0 if config.seed is None else int(config.seed)
        """Draws the order the transitions are read in (``replay.experience.read_transitions``) and the
        minibatches from the read-ahead buffer: one order per seed."""
        self.materialize_data = config.materialize_data
        self.materialize_mapped_data = config.materialize_mapped_data
        self.data_is_mapped = False
        obs_space, act_space = config.observation_space, config.action_space
        assert obs_space is not None and act_space is not None  # make_offline sets both
        train, decisions, count = counted_window(root, config.env_config)  # none inside: refused
        log.info(
            "offline experience %s: %d transitions decided %s .. %s read (training window %s .. %s), "
            "%d outside it left out",
            root,
            count.inside,
            decisions.start,
            decisions.end,
            train.start,
            train.end,
            count.left_out,
        )
        layout = env_layout(config.env_config)
        scale = configured_reward_scale(config) or reward_scale(count.reward_std)
        log.info("offline experience %s: rewards divided by %.6g (their std in the window)", root, scale)
        self.reward_scale = scale
        self.data = read_transitions(
            root,
            start=decisions.start,
            end=decisions.end,
            n_assets=int(act_space.shape[0]),
            obs_dim=int(obs_space.shape[0]),
            symbols=layout.symbols,
            observation_spec=layout.observation_spec,
            reward_scale=scale,
            zeroed_state=(PROGRESS_SLOT,),  # the env encodes 0 there; rows recorded before did not
            shuffle_seed=self.seed,  # minibatches of transitions from anywhere in the window
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

    @property
    def default_iter_batches_kwargs(self) -> dict[str, Any]:
        """RLlib's, and each minibatch drawn from :data:`SHUFFLE_BUFFER_ROWS` rows read ahead (mixing the
        read tasks' blocks, each shuffled within)."""
        shuffle = {"local_shuffle_buffer_size": SHUFFLE_BUFFER_ROWS, "local_shuffle_seed": self.seed}
        return dict(super().default_iter_batches_kwargs) | shuffle

    def sample(
        self,
        num_samples: int,
        return_iterator: bool = False,
        num_shards: int = 1,
        module_state: dict[str, Any] | None = None,
    ) -> Any:
        """``OfflineData.sample``; on its first call the transitions are mapped by
        :func:`learner_columns` (a stateless function that Ray Data runs in the read tasks) instead
        of RLlib's ``OfflinePreLearner`` (an actor that builds the module and turns every row into an
        episode) wherever that gives the same batches (:func:`copies_columns`) and no
        ``prelearner_class`` is configured."""
        if not self.data_is_mapped and self.config.prelearner_class is None and self._copies_columns():
            self.data = self.data.map_batches(  # the read tasks' resources: Ray Data fuses the two
                learner_columns,
                batch_size=None,
                batch_format="numpy",
                zero_copy_batch=True,
                num_cpus=READ_CPUS,
            )
            self.data_is_mapped = True
            if self.materialize_mapped_data:
                self.data = self.data.materialize()
        return super().sample(  # RLlib annotates module_state without None, its default
            num_samples,
            return_iterator,
            num_shards,
            module_state,  # type: ignore[arg-type]
        )

    def _copies_columns(self) -> bool:
        obs_space, act_space = self.config.observation_space, self.config.action_space
        assert obs_space is not None and act_space is not None  # make_offline sets both
        module = (
            self.module_spec
            or self.config.get_multi_rl_module_spec(spaces={DEFAULT_MODULE_ID: (obs_space, act_space)})
        ).build()
        connector = self.config.build_learner_connector(
            input_observation_space=obs_space, input_action_space=act_space
        )
        return copies_columns(self.config, module, connector)


SHUFFLE_BUFFER_ROWS: Final = 4_096
"""Transitions a learner reads ahead and draws each minibatch from at random (Ray Data's local
shuffle buffer): 16 default minibatches, about 20 MB at 32 symbols."""

COLUMN_CONNECTORS: Final = frozenset(
    {
        AddObservationsFromEpisodesToBatch,
        AddNextObservationsFromEpisodesToTrainBatch,
        AddColumnsFromEpisodesToTrainBatch,
        AddTimeDimToBatchAndZeroPad,
        AddStatesFromEpisodesToBatch,
        BatchIndividualItems,
        NumpyToTensor,
    }
)
"""RLlib's default learner connectors: on one-step episodes of a stateless single-agent module they
copy each transition's columns into the batch, in row order, as tensors, and do nothing else."""

LEARNER_COLUMNS: Final = (
    Columns.OBS,
    Columns.NEXT_OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.TERMINATEDS,
    Columns.TRUNCATEDS,
)
"""What those connectors put in the learner batch of each transition."""


def copies_columns(config: AlgorithmConfig, module: Any, connector: Any) -> bool:
    """Whether RLlib's ``OfflinePreLearner`` would only copy each transition's
    :data:`LEARNER_COLUMNS` into the learner batch, in row order: the learner ``connector`` is made
    of :data:`COLUMN_CONNECTORS` only (``bc``, ``cql``, ``iql``; not ``marwil``, whose connector adds
    advantages), the (multi-)``module`` is stateless and single-agent, and the rows are read as they
    are (no episodes, sample batches, schema remapping or zeroed final observations)."""
    return (
        not config.is_multi_agent
        and not module.is_stateful()
        and not (config.input_read_episodes or config.input_read_sample_batches)
        and not config.input_read_schema
        and not config.ignore_final_observation
        and isinstance(connector, ConnectorPipelineV2)
        and all(type(c) in COLUMN_CONNECTORS for c in connector.connectors)
    )


def learner_columns(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The learner batch RLlib's ``OfflinePreLearner`` makes of transitions when
    :func:`copies_columns` holds (flattened ``module_id/column`` keys, as it returns them)."""
    return {f"{DEFAULT_MODULE_ID}/{c}": batch[c] for c in LEARNER_COLUMNS}


REWARD_SCALE_KEY: Final = "reward_scale"
"""Key of ``config.input_read_method_kwargs`` (the kwargs of the experience read, which
:class:`ExperienceData` does itself) holding the divisor of the rewards the learner reads."""


def reward_scale(reward_std: float) -> float:
    """The divisor of the logged rewards an offline learner reads: ``reward_std``, the standard
    deviation of the rewards of the transitions it reads (``WindowCount.reward_std``), or 1.0 when
    that is 0 or not finite (rewards that do not vary have no spread to measure them by)."""
    return float(reward_std) if math.isfinite(reward_std) and reward_std > 0 else 1.0


def with_reward_scale(config: AlgorithmConfig, scale: float) -> AlgorithmConfig:
    """An offline ``config`` whose learner reads every reward divided by ``scale`` (finite, > 0;
    otherwise a ``ValueError`` naming the value): ``raytrade tune`` sets the one it records."""
    kwargs = {**(config.input_read_method_kwargs or {}), REWARD_SCALE_KEY: float(check_reward_scale(scale))}
    return config.offline_data(input_read_method_kwargs=kwargs)


def configured_reward_scale(config: AlgorithmConfig) -> float | None:
    """The reward divisor :func:`with_reward_scale` set on ``config`` (None: not set)."""
    scale = (config.input_read_method_kwargs or {}).get(REWARD_SCALE_KEY)
    return None if scale is None else float(scale)


def experience_window(env_config: Mapping[str, Any]) -> tuple[TimeWindow, TimeWindow]:
    """(training window, decisions read) of an offline spec whose env config is ``env_config``.

    The training window is the train split of ``env_config["data"]`` (its store, symbols, fractions
    and embargo: ``envs.replay_loader.split_calendar``, the bars a training env steps on, so the
    embargo before validation holds as for the online specs). The decisions read are its bars but the
    last: a transition decided on bar t observes bar t + 1 next, which must be a training bar too
    (``[start, end]`` inclusive, on the experience's ``ts``). A ``ValueError`` names a data config
    without a calendar (not a replay store) or a training window too short to hold a transition."""
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.envs.replay_loader import split_calendar

    data = dict(env_config.get("data") or {})
    if data.get("kind") != "replay":
        raise ValueError(
            f"offline specs learn from a replay store's experience; env_config data kind "
            f"{data.get('kind')!r} has no calendar to date it by"
        )
    calendar = split_calendar(ReplayDataConfig.model_validate({**data, "split": "train"}))
    if len(calendar) < 2:
        raise ValueError(f"the training window holds {len(calendar)} bar(s): no transition fits in it")
    train = TimeWindow("train", calendar[0], calendar[-1], len(calendar))
    return train, TimeWindow("decisions", calendar[0], calendar[-2], len(calendar) - 1)


def counted_window(
    root: str | Path, env_config: Mapping[str, Any]
) -> tuple[TimeWindow, TimeWindow, WindowCount]:
    """:func:`experience_window` and the transitions of the experience store at ``root`` inside it
    and outside; refused (``ExperienceError``, naming the window and the experience's dates) when
    none lies inside."""
    from raytrade.replay.experience import check_window

    train, decisions = experience_window(env_config)
    within = f"the training window {train.start.date()} .. {train.end.date()} less its last bar"
    return train, decisions, check_window(root, decisions.start, decisions.end, within)


def check_experience_layout(root: str | Path, env_config: Mapping[str, Any]) -> None:
    """Refuse (``ExperienceError``, naming the column, the episode and both values) experience at
    ``root`` whose transitions in the training window (:func:`experience_window`) were logged on
    another universe or with another observation encoding than the learner of ``env_config``
    (:func:`env_layout` of :func:`offline_env_config`, what :class:`ExperienceData` checks every row
    against): ``raytrade tune``'s check before Ray starts, reading those columns only
    (``replay.experience.check_layout``), so that a mismatch is not found by a trial seconds later
    and reported as Ray Data's retry hint."""
    from raytrade.replay.experience import check_layout

    _, decisions = experience_window(env_config)
    layout = env_layout(offline_env_config(env_config))
    check_layout(root, decisions.start, decisions.end, layout.symbols, layout.observation_spec)


def experience_root(input_: Any) -> str:
    """The experience store root of an offline config's ``input_`` (a path or a one-path list)."""
    if isinstance(input_, list | tuple):
        if len(input_) != 1:
            raise ValueError(f"offline input must name one experience store, got {list(input_)}")
        return str(input_[0])
    return str(input_)


class EnvLayout(NamedTuple):
    """What logged transitions must match to feed a learner of an env config."""

    observation_space: spaces.Space[Any]
    action_space: spaces.Space[Any]
    symbols: tuple[str, ...]  # the universe, in the env's asset order
    observation_spec: str  # envs.experience.observation_spec of the env config


@functools.lru_cache(maxsize=4)
def _layout(env_config_json: str) -> EnvLayout:
    from raytrade.envs.experience import observation_spec
    from raytrade.envs.gym_envs import PortfolioEnv

    env = PortfolioEnv(json.loads(env_config_json))
    spec = observation_spec(env.cfg, env.data.feature_names)
    return EnvLayout(env.observation_space, env.action_space, tuple(env.data.symbols), spec)


def env_layout(env_config: Mapping[str, Any]) -> EnvLayout:
    """The :class:`EnvLayout` of the flat ``PortfolioEnv`` of ``env_config`` (built once)."""
    return _layout(json.dumps(dict(env_config), sort_keys=True, default=str))


def env_spaces(env_config: Mapping[str, Any]) -> tuple[spaces.Space[Any], spaces.Space[Any]]:
    """(observation, action) spaces of the flat ``PortfolioEnv`` of ``env_config`` (built once)."""
    layout = env_layout(env_config)
    return layout.observation_space, layout.action_space


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
        # one training step per iteration: SAC's (CQL's, IQL's) one-second minimum per iteration
        # (and CQL's 100 trained steps) would repeat it, a number of updates set by the machine's speed
        .reporting(min_time_s_per_iteration=0, min_train_timesteps_per_iteration=0)
    )


def with_experience(config: AlgorithmConfig, root: str) -> AlgorithmConfig:
    """An offline ``config`` reading the experience store at ``root`` instead (``--experience``)."""
    if not config.is_offline:
        raise ValueError("--experience applies to the offline specs only")
    return config.offline_data(input_=root)
