"""The offline benchmark's dataset: the flattening both libraries read, and the logged arrays (no Ray).

A full ``--quick`` run is not a test here: it needs its own Ray (the PreLearner's Ray Data
pipeline) and takes 40-60 s on this machine, over the 30 s a benchmark smoke test may take.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.offline import (
    OfflineBudget,
    d3rlpy_arrays,
    env_config,
    flatten_observation,
    log_episodes,
    market_windows,
)
from raytrade.envs.gym_envs import PortfolioEnv

BUDGET = OfflineBudget(
    n_assets=3, train_bars=40, episode_len=5, episodes=4, batch=8, updates_per_round=1, rounds=2, seeds=(0,)
)
FEATURES = 8  # SYNTHETIC_FEATURES
WIDTH = 3 * FEATURES + 2 * 3 + 5  # features, weights, mask, portfolio state


def test_flatten_observation_is_the_envs_own_flat_encoding() -> None:
    train, _ = market_windows(BUDGET)
    as_dict = PortfolioEnv(env_config(BUDGET), data=train)
    flat = PortfolioEnv(env_config(BUDGET, flat=True), data=train)
    obs_d, _ = as_dict.reset(seed=3)
    obs_f, _ = flat.reset(seed=3)
    action = np.array([0.5, -0.2, 0.1], dtype=np.float32)
    next_d, *_ = as_dict.step(action)
    next_f, *_ = flat.step(action)
    np.testing.assert_array_equal(flatten_observation(obs_d), obs_f)
    np.testing.assert_array_equal(flatten_observation(next_d), next_f)
    assert flatten_observation(obs_d).shape == (WIDTH,) and flatten_observation(obs_d).dtype == np.float32


def test_validation_window_is_held_out_and_one_episode_long() -> None:
    train, validation = market_windows(BUDGET)
    assert train.n_steps == BUDGET.train_bars
    assert validation.n_steps == BUDGET.episode_len + 1
    gap = (validation.ts[0] - train.ts[-1]) / np.timedelta64(1, "D")
    assert gap == 6  # EMBARGO_BARS = 5 bars left out between the windows (daily bars)


def test_logged_episodes_have_the_expected_shapes_and_boundaries() -> None:
    train, _ = market_windows(BUDGET)
    logged = log_episodes(train, BUDGET)
    rows = BUDGET.episodes * BUDGET.episode_len  # no ruin at these weights
    assert logged.obs.shape == logged.next_obs.shape == (rows, WIDTH)
    assert logged.actions.shape == (rows, 3) and logged.actions.dtype == np.float32
    assert logged.rewards.shape == logged.terminateds.shape == logged.truncateds.shape == (rows,)
    assert np.abs(logged.actions).max() <= 1.0
    np.testing.assert_array_equal(logged.episode_ids, np.repeat(np.arange(4), 5))
    np.testing.assert_array_equal(np.flatnonzero(logged.truncateds), [4, 9, 14, 19])
    assert not logged.terminateds.any()
    inside = logged.episode_ids[1:] == logged.episode_ids[:-1]  # next_obs is the following row's obs
    np.testing.assert_array_equal(logged.next_obs[:-1][inside], logged.obs[1:][inside])


def test_logged_episodes_are_reproducible_and_noise_moves_the_actions() -> None:
    train, _ = market_windows(BUDGET)
    first, again = log_episodes(train, BUDGET), log_episodes(train, BUDGET)
    np.testing.assert_array_equal(first.actions, again.actions)
    quiet = log_episodes(train, BUDGET.model_copy(update={"behaviour_noise": 0.0}))
    mask = quiet.obs[:, -(3 + 5) : -5]  # equal_weight without noise: 1 / listed on every listed asset
    np.testing.assert_allclose(quiet.actions, mask / mask.sum(1, keepdims=True), rtol=1e-6)
    assert not np.allclose(first.actions, quiet.actions)


def test_d3rlpy_arrays_append_the_final_observation_of_truncated_episodes() -> None:
    train, _ = market_windows(BUDGET)
    logged = log_episodes(train, BUDGET)
    arrays = d3rlpy_arrays(logged)
    assert arrays["observations"].shape == (4 * 6, WIDTH)  # 5 transitions + the final observation
    np.testing.assert_array_equal(np.flatnonzero(arrays["timeouts"]), [5, 11, 17, 23])
    assert not arrays["terminals"].any()
    np.testing.assert_array_equal(arrays["observations"][5], logged.next_obs[4])
    np.testing.assert_array_equal(arrays["rewards"][6:11], logged.rewards[5:10])


def test_d3rlpy_sees_exactly_the_logged_transitions() -> None:
    d3rlpy = pytest.importorskip("d3rlpy", reason="d3rlpy is in the optional bench extra")
    train, _ = market_windows(BUDGET)
    logged = log_episodes(train, BUDGET)
    dataset = d3rlpy.dataset.MDPDataset(**d3rlpy_arrays(logged))
    picker = d3rlpy.dataset.BasicTransitionPicker()
    got = [picker(ep, i) for ep in dataset.episodes for i in range(ep.transition_count)]
    assert len(got) == len(logged.rewards)
    np.testing.assert_array_equal(np.stack([t.observation for t in got]), logged.obs)
    np.testing.assert_array_equal(np.stack([t.next_observation for t in got]), logged.next_obs)
    np.testing.assert_array_equal(np.stack([t.action for t in got]), logged.actions)
    np.testing.assert_array_equal(np.concatenate([t.reward for t in got]), logged.rewards)
