"""The Tune objective: excess over the equal_weight benchmark, risk-adjusted, net of costs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raytrade.cluster.run_file import LeaderboardRow
from raytrade.cluster.tune import format_leaderboard
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.policies import equal_weight_policy
from raytrade.envs.market_data import MarketData
from raytrade.envs.metrics import sortino_ratio
from raytrade.envs.rollout import replay_policy
from raytrade.envs.simulator import Observation
from raytrade.tune_specs.objective import (
    ObjectiveConfig,
    held_out_data,
    score_module,
    score_module_on,
    score_policy,
    score_windows,
    train_window,
)


def _rising_market(t: int = 300, n: int = 4, drift: float = 0.002, seed: int = 0) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(drift + 0.01 * rng.standard_normal((t, n)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    return MarketData(
        ts=(np.datetime64("2021-01-04") + np.arange(t)).astype("datetime64[us]"),
        symbols=tuple(f"S{i}" for i in range(n)),
        asset_class=("equity",) * n,
        open=open_,
        close=close,
        listed=np.ones((t, n), bool),
        spread_bps=np.full((t, n), 5.0),
        dollar_volume=np.full((t, n), 1e9),
        features=np.zeros((t, n, 1), np.float32),
        feature_names=("ret_1",),
        regime_code=np.ones((t, n), np.int8),
    )


SIM = SimulatorConfig(kill_switch={"enabled": False})


def test_a_policy_identical_to_the_benchmark_scores_zero() -> None:
    data = _rising_market()
    scores = score_policy(equal_weight_policy(data, seed=0), data, SIM, ObjectiveConfig())
    assert scores["objective"] == 0.0
    assert scores["information_ratio"] == 0.0
    assert scores["excess_return"] == 0.0


def test_a_nearly_flat_book_in_a_rising_market_scores_negative() -> None:
    data = _rising_market()

    def one_percent(obs: Observation) -> np.ndarray:
        return 0.01 * obs.mask / obs.mask.sum(-1, keepdims=True)

    scores = score_policy(one_percent, data, SIM, ObjectiveConfig())
    own = replay_policy(data, one_percent, SIM).returns[0]
    assert sortino_ratio(own, 252) > 2.0  # what the old objective rewarded: a ratio of tiny numbers
    assert scores["objective"] < -1.0
    assert scores["excess_return"] < 0.0
    assert scores["gross_exposure"] == pytest.approx(0.01, rel=1e-6)


def test_scores_carry_gross_exposure_turnover_and_costs_of_the_policy() -> None:
    data = _rising_market()

    def full(obs: Observation) -> np.ndarray:
        return obs.mask / obs.mask.sum(-1, keepdims=True)  # rebalanced every bar

    scores = score_policy(full, data, SIM, ObjectiveConfig())
    rollout = replay_policy(data, full, SIM)
    assert scores["gross_exposure"] == pytest.approx(1.0, rel=1e-9)
    assert scores["turnover"] > 0.0
    assert scores["costs"] == pytest.approx(rollout.costs[0].sum() / SIM.initial_equity, rel=1e-12)


def _row(**scores: float) -> LeaderboardRow:
    base = dict.fromkeys(("sharpe", "sortino", "cvar_5", "total_return", "max_drawdown"), 0.0)
    return LeaderboardRow(
        trial="t1",
        trial_dir="t1",
        params={"lr": 0.0005},
        iteration=3,
        checkpoint=None,
        node_id=None,
        error=None,
        **{**base, **scores},
    )


def test_leaderboard_shows_exposure_turnover_and_costs_beside_the_score() -> None:
    row = _row(objective=-0.5, excess_return=-0.02, gross_exposure=0.25, turnover=0.031, costs=0.0012)
    header, line = format_leaderboard([row]).splitlines()
    assert header.split() == [
        "trial", "iter", "objective", "excess", "sharpe", "cvar_5", "gross", "turnover", "costs", "params"
    ]  # fmt: skip
    assert line.split() == [
        "t1", "3", "-0.500", "-0.0200", "0.000", "0.0000", "0.250", "0.0310", "0.00120", "lr=0.0005"
    ]  # fmt: skip


def test_an_older_leaderboard_row_reads_with_unknown_exposure() -> None:
    row = _row(objective=1.0, turnover=0.1)
    assert math.isnan(row.gross_exposure) and math.isnan(row.costs)


# ------------------------------------------------------------------------------ the train-side score


def test_the_train_score_window_is_the_train_split_tail_as_long_as_validation(synthetic_store: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    env_config = {"data": {"kind": "replay", "root": str(synthetic_store), "split": "train"}}
    validation = held_out_data(env_config)
    train = load_market_data(synthetic_store, "train")
    window = train_window(env_config, validation.n_steps)
    assert validation.n_steps < train.n_steps
    np.testing.assert_array_equal(window.ts, train.ts[-validation.n_steps :])
    np.testing.assert_array_equal(window.close, train.close[-validation.n_steps :])
    assert window.ts[-1] < validation.ts[0]  # the train bars that border the validation window


def test_a_train_window_shorter_than_asked_is_scored_whole() -> None:
    env_config = {"data": {"kind": "synthetic", "n_assets": 3, "n_steps": 40, "seed": 5}}
    assert train_window(env_config, 60).n_steps == 40


def test_a_module_is_scored_on_validation_and_on_the_train_tail_alike() -> None:
    import torch

    from raytrade.envs.gym_envs import PortfolioEnv
    from raytrade.models.catalog import rl_module_spec

    env_config: dict[str, Any] = {
        "data": {"kind": "synthetic", "n_assets": 4, "n_steps": 40, "seed": 0},
        "sim": {"episode_len": 16},
    }
    torch.manual_seed(0)
    env = PortfolioEnv(env_config)
    spec = rl_module_spec("ppo_mlp")
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    objective = ObjectiveConfig()
    scores = score_windows(module, env_config, objective)
    train = train_window(env_config, held_out_data(env_config).n_steps)
    assert scores["validation"] == score_module(module, env_config, objective)
    assert scores["train"] == score_module_on(module, train, env_config, objective)
    assert scores["train"]["objective"] != scores["validation"]["objective"]
