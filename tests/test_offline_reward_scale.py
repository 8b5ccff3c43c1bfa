"""Offline learners read the rewards in units of their spread (``tune_specs.offline``): the divisor
is the training window's reward standard deviation, recorded and applied in the read, and with it
CQL and IQL learn from the reward rather than from their entropy term or the behaviour alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raytrade.replay.experience import window_count

N_ASSETS = 3
REWARD = 1e-3
"""The two streams' rewards (+ for the rewarded one, - for the other): a daily log growth's size."""
TILT = 0.5
"""The rewarded stream logs +TILT on every asset, the other -TILT: behaviour cloning's answer is 0."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 equities, 1.5 years daily."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("offscale") / "store"
    market = generate(n_symbols=N_ASSETS, years=1.5, seed=2)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


def env_config(store: Path, name: str = "cql") -> dict[str, Any]:
    from raytrade.tune_specs import get_spec

    spec = get_spec(name)
    return spec.env_config(str(store), spec.smoke)


def one_episode(store: Path) -> pd.DataFrame:
    """One ``equal_weight`` episode over the train split, as ``raytrade simulate-experience`` logs it."""
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.policies import resolve_policies
    from raytrade.envs.experience import simulate_episodes
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.tune_specs.offline import OFFLINE_FEATURES, offline_env_config

    env_cfg = PortfolioEnvConfig.model_validate(offline_env_config(env_config(store)))
    (policy,) = resolve_policies(["equal_weight"], None)
    data = load_market_data(store, "train", feature_columns=(*OFFLINE_FEATURES, *policy.feature_columns))
    (frame,) = simulate_episodes(data, policy.make, env_cfg, episodes=1, policy_version="ew", run_id="x")
    return frame


def stream(frame: pd.DataFrame, name: str, action: float, reward: float) -> pd.DataFrame:
    """``frame``'s observations with every action ``action`` and every reward ``reward``."""
    return frame.assign(
        episode_id=name,
        decision_id=name + ":" + frame["step"].astype(str) + ":" + frame["symbol"],
        action=action,
        target_weight=action,
        reward=reward,
    )


@pytest.fixture(scope="module")
def two_streams(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two behaviour streams on the same observations: one logs +TILT on every asset and earns
    +REWARD each step, the other logs -TILT and earns -REWARD."""
    from raytrade.replay.writer import ReplayWriter

    out = tmp_path_factory.mktemp("offscale") / "two-streams"
    frame = one_episode(store)
    with ReplayWriter(out) as writer:
        writer.append_experience(stream(frame, "good", TILT, REWARD))
        writer.append_experience(stream(frame, "bad", -TILT, -REWARD))
    return out


def offline_config(store: Path, experience: Path, name: str, **fixed: Any) -> Any:
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import with_experience

    spec = get_spec(name)
    config = spec.algo_config(env_config(store, name), spec.smoke).training(**fixed)
    return with_experience(config, str(experience))


# ------------------------------------------------------------------------------ the divisor


def test_the_window_count_gives_the_spread_of_the_rewards_the_learner_reads(two_streams: Path) -> None:
    """One reward per step (its asset 0 row's): half the steps +REWARD, half -REWARD, std REWARD."""
    count = window_count(two_streams, None, None)
    assert count.inside % 2 == 0 and count.inside > 100
    assert count.reward_std == pytest.approx(REWARD, rel=1e-12)


def test_rewards_that_do_not_vary_keep_scale_one() -> None:
    from raytrade.tune_specs.offline import reward_scale

    assert (reward_scale(0.0), reward_scale(float("nan")), reward_scale(2e-3)) == (1.0, 1.0, 2e-3)


@pytest.mark.parametrize("scale", [0.0, -1e-3, float("nan"), float("inf")])
def test_a_reward_scale_that_is_not_a_positive_number_is_refused_naming_it(
    store: Path, two_streams: Path, scale: float
) -> None:
    from raytrade.tune_specs.offline import with_reward_scale

    config = offline_config(store, two_streams, "cql")
    with pytest.raises(ValueError, match=f"reward_scale {scale!r}: the rewards' divisor must be"):
        with_reward_scale(config, scale)


@pytest.mark.parametrize("configured", [None, 0.5])
def test_the_learner_reads_the_rewards_divided_by_the_configured_scale_else_the_windows_spread(
    store: Path, two_streams: Path, monkeypatch: pytest.MonkeyPatch, configured: float | None
) -> None:
    """What ``raytrade tune`` recorded and put in the config is what the read divides by; a config
    without one (a test, a benchmark) divides by the same spread the driver would record."""
    import raytrade.replay.experience as experience
    from raytrade.tune_specs.offline import ExperienceData, with_reward_scale

    config = offline_config(store, two_streams, "cql")
    config = config if configured is None else with_reward_scale(config, configured)
    asked: dict[str, Any] = {}
    monkeypatch.setattr(experience, "read_transitions", lambda root, **kw: asked.update(kw) or None)
    data = ExperienceData(config)
    expected = REWARD if configured is None else configured
    assert (
        asked["reward_scale"] == pytest.approx(expected, rel=1e-12)
        and data.reward_scale == asked["reward_scale"]
    )


def test_the_run_file_records_the_reward_scale_and_the_search_config_carries_it(
    store: Path, two_streams: Path
) -> None:
    from raytrade.cluster.tune import TuneOptions, run_record, search_algo_config
    from raytrade.tune_specs import get_spec
    from raytrade.tune_specs.offline import configured_reward_scale

    opts = TuneOptions(spec="cql", replay=store, experience=two_streams, smoke=True, wandb="disabled")
    seen = run_record(opts, get_spec("cql")).provenance.experience
    assert seen is not None and seen.window is not None
    assert seen.window.reward_scale == pytest.approx(REWARD, rel=1e-12)
    assert configured_reward_scale(search_algo_config(opts, get_spec("cql"), seen.window)) == (
        seen.window.reward_scale
    )


@pytest.mark.parametrize(("in_cash", "at_rest"), [(0.0, 0.0), (0.49, 0.0), (0.8, 0.0), (0.6, 0.04 / 252)])
def test_a_reward_far_from_the_others_is_named_in_the_run_file(
    store: Path, tmp_path: Path, in_cash: float, at_rest: float
) -> None:
    """A reviewer's experience held one +15 % reward from an unadjusted split among rewards of std
    0.4 %: it set the divisor of every reward and nothing said so. Now the run file (and the line
    ``raytrade tune`` prints) names its episode, step and date; ordinary rewards name nothing, with
    the book in cash (reward exactly 0) on none, just under half or most of the steps (a scale
    measured over every reward was 0, or a sliver, there), or with cash earning 4 % a year (the same
    small reward every step in cash)."""
    from raytrade.cluster.tune import TuneOptions, run_record
    from raytrade.replay.writer import ReplayWriter
    from raytrade.tune_specs import get_spec

    frame = one_episode(store)
    steps = frame["step"].to_numpy()
    rng = np.random.default_rng(0)
    per_step = rng.normal(0.0, 0.004, size=int(steps.max()) + 1)
    per_step[rng.random(per_step.size) < in_cash] = at_rest
    ordinary = frame.assign(reward=per_step[steps])
    windows = {}
    for name, bad_step in (("clean", None), ("split", 40)):
        rewards = per_step.copy()
        if bad_step is not None:
            rewards[bad_step] = 0.155
        out = tmp_path / name
        with ReplayWriter(out) as writer:
            writer.append_experience(ordinary.assign(reward=rewards[steps]))
        opts = TuneOptions(spec="cql", replay=store, experience=out, smoke=True, wandb="disabled")
        seen = run_record(opts, get_spec("cql")).provenance.experience
        assert seen is not None and seen.window is not None
        windows[name] = seen.window
    assert windows["clean"].reward_outlier is None
    named = windows["split"].reward_outlier
    day = frame.loc[frame["step"] == 40, "ts"].iloc[0]
    assert named is not None and named.startswith(
        f"the reward of episode 'x:0' step 40 ({day.date()}), +0.155"
    )


# ------------------------------------------------------------------------------ what is learnt

UPDATES = 300
"""Learner updates of 128 transitions in the learning test (about 5 passes over the two streams)."""


def learnt_mean_action(config: Any, rows: dict[str, np.ndarray]) -> float:
    """The mean over assets and observations of the deterministic action of ``config``'s learner
    after :data:`UPDATES` updates on minibatches of ``rows`` (the learner columns)."""
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: more threads only contend on the shared cores
    try:
        return _learn(config, rows)
    finally:
        torch.set_num_threads(threads)


def _learn(config: Any, rows: dict[str, np.ndarray]) -> float:
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    spaces = {"default_policy": (config.observation_space, config.action_space)}
    learner = config.build_learner(spaces=spaces)
    columns = {k.split("/", 1)[1]: v for k, v in rows.items()}
    n = len(columns[Columns.OBS])
    rng = np.random.default_rng(0)
    for _ in range(UPDATES):
        take = rng.choice(n, 128, replace=False)
        batch = SampleBatch({k: v[take] for k, v in columns.items()})
        learner.update(batch=MultiAgentBatch({"default_policy": batch}, 128))
    module = learner.module["default_policy"].unwrapped()
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.as_tensor(columns[Columns.OBS])})
        dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        actions = dist.to_deterministic().sample()
    return float(actions.mean())


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "fixed"),
    [
        # the less favourable of the searched values: the larger entropy weight, the smaller beta
        ("cql", {"actor_lr": 1e-3, "critic_lr": 1e-3, "min_q_weight": 5.0, "initial_alpha": 0.1}),
        ("iql", {"actor_lr": 1e-3, "critic_lr": 1e-3, "expectile": 0.8, "beta": 1.0}),
    ],
)
def test_q_learners_move_toward_the_rewarded_behaviour(
    ray_session: None, store: Path, two_streams: Path, name: str, fixed: dict[str, Any]
) -> None:
    """Both streams act on the same observations: behaviour cloning's mean action is 0 (the mean of
    +TILT and -TILT). CQL and IQL, reading the rewards through the offline read (divided by their
    spread), must act more than halfway toward the rewarded stream's +TILT."""
    from tests.test_offline import sampled_rows

    config = offline_config(store, two_streams, name, **fixed)
    rows = sampled_rows(config)  # what the learner iterates: the read, the scale, learner_columns
    assert np.unique(np.abs(rows["default_policy/rewards"])).tolist() == [1.0]
    assert learnt_mean_action(config, rows) > TILT / 2
