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
from raytrade.envs.metrics import sortino_ratio, total_return
from raytrade.envs.rollout import Rollout, replay_policy
from raytrade.envs.simulator import Observation
from raytrade.tune_specs.objective import (
    UNDEFINED_SCORE,
    ObjectiveConfig,
    held_out_data,
    objective_paths,
    score_excess,
    score_module,
    score_module_on,
    score_of,
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
    rollout = replay_policy(data, full, SIM, close_at_end=True)  # the costs include the exit
    assert scores["gross_exposure"] == pytest.approx(1.0, rel=1e-9)
    assert scores["turnover"] > 0.0
    assert scores["costs"] == pytest.approx(rollout.costs[0].sum() / SIM.initial_equity, rel=1e-12)


# ------------------------------------------------------------------------------ the book closed at the end


def _levered(obs: Observation) -> np.ndarray:
    """1.8x equity spread over the listed assets, held to the window's last bar."""
    return 1.8 * obs.mask / obs.mask.sum(-1, keepdims=True)


def _excess_score(policy: Rollout, bench: Rollout) -> float:
    return score_of(policy.returns[0] - bench.returns[0], 252, 1.0)


def test_a_levered_book_at_the_window_end_scores_lower_by_exactly_the_exit_evaluation_charges() -> None:
    data = _rising_market()
    bench = equal_weight_policy(data, seed=0)
    closed, marked = (replay_policy(data, _levered, SIM, close_at_end=c) for c in (True, False))
    bench_closed, bench_marked = (replay_policy(data, bench, SIM, close_at_end=c) for c in (True, False))
    assert closed.exit_bps[0] > 10.0  # a levered book is costly to get out of
    np.testing.assert_array_equal(closed.returns[0, :-1], marked.returns[0, :-1])  # only the exit differs
    scores = score_policy(_levered, data, SIM, ObjectiveConfig())
    assert scores["objective"] == _excess_score(closed, bench_closed)
    assert scores["objective"] < _excess_score(marked, bench_marked)  # what the search ranked it by
    assert scores["total_return"] == total_return(closed.returns[0])
    assert scores["total_return"] < total_return(marked.returns[0])


def test_a_book_flat_at_the_window_end_pays_no_exit_and_is_measured_against_the_closed_benchmark() -> None:
    data = _rising_market()
    decisions = iter(range(data.n_steps - 1))

    def flat_at_the_end(obs: Observation) -> np.ndarray:
        last = next(decisions) == data.n_steps - 2  # the last decision sells at the last bar's open
        return 0.0 * obs.mask if last else _levered(obs)

    scores = score_policy(flat_at_the_end, data, SIM, ObjectiveConfig())
    decisions = iter(range(data.n_steps - 1))
    own = replay_policy(data, flat_at_the_end, SIM, close_at_end=True)
    assert own.exit_costs is not None and own.exit_costs.sum() == 0.0
    assert scores["total_return"] == total_return(own.returns[0])  # its own figures: as marked
    bench = equal_weight_policy(data, seed=0)
    bench_closed, bench_marked = (replay_policy(data, bench, SIM, close_at_end=c) for c in (True, False))
    assert scores["objective"] == _excess_score(own, bench_closed)
    assert scores["objective"] > _excess_score(own, bench_marked)  # the benchmark pays its exit


def test_a_gated_module_is_scored_with_its_book_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    import raytrade.models.inference as inference
    from raytrade.envs.config import env_config_from_dict
    from raytrade.tune_specs.objective import module_rollout

    # the module's greedy action: aggressive (3), long (0), full size (3) on every asset
    monkeypatch.setattr(inference, "gate_actions", lambda module, obs: np.tile([3, 0, 3], 4)[None])
    env_config: dict[str, Any] = {"data": {"kind": "synthetic", "n_assets": 4, "n_steps": 60, "seed": 0}}
    data = held_out_data(env_config)
    cfg = env_config_from_dict(env_config, gated=True)
    rollout, _ = module_rollout(None, env_config, data, gated=True)
    closed = inference.replay_gated(None, data, cfg, close_at_end=True)
    marked = inference.replay_gated(None, data, cfg)
    assert closed.exit_bps[0] > 0.0
    np.testing.assert_array_equal(rollout.returns, closed.returns)
    assert rollout.returns[0, -1] < marked.returns[0, -1]


# ------------------------------------------------------------------------------ undefined and tail cases


def _replayed(returns: np.ndarray) -> Rollout:
    """A one-episode rollout earning ``returns`` (no costs, no trades)."""
    t = returns.size
    r = returns[None, :]
    ts = (np.datetime64("2021-01-05") + np.arange(t)).astype("datetime64[us]")
    zeros = np.zeros((1, t))
    costs, weights = np.zeros((1, t, 4)), np.zeros((1, t, 2))
    return Rollout(ts, r, np.cumprod(1 + r, axis=1), costs, zeros, weights, np.array([-1]))


def _search_and_select(policy: np.ndarray, bench: np.ndarray) -> tuple[dict[str, float], float]:
    """(what a Tune trial reports, what ``raytrade select`` scores) for the same returns."""
    data = _rising_market(t=policy.size + 1, n=2)
    scores = score_excess(_replayed(policy), _replayed(bench), data, SIM, 1.0)
    return scores, score_of(policy - bench, data.periods_per_year, 1.0)


BENCH = np.random.default_rng(0).normal(0.001, 0.01, 60)


@pytest.mark.parametrize(
    ("policy", "bench"),
    [(np.full(60, 5e-4), np.zeros(60)), (BENCH + 5e-4, BENCH)],
    ids=["exactly-constant", "bench-plus-5bps"],
)
def test_a_constant_excess_scores_undefined_in_the_search_and_in_select(
    policy: np.ndarray, bench: np.ndarray
) -> None:
    scores, selected = _search_and_select(policy, bench)
    assert scores["objective"] == UNDEFINED_SCORE  # was nan (exact), ~2.5e16 (float-constant)
    assert selected == UNDEFINED_SCORE  # was -10 (exact), ~2.5e16 (float-constant)
    assert math.isnan(scores["information_ratio"])  # undefined, not 0 and not 1e16


def test_a_slightly_noisy_excess_scores_finitely_and_by_the_formula() -> None:
    noise = np.random.default_rng(1).normal(0.0, 1e-4, BENCH.size)
    policy = BENCH + 5e-4 + noise
    scores, selected = _search_and_select(policy, BENCH)
    excess = policy - BENCH
    tail = np.sort(excess)[: int((excess.size - 1) * 0.05) + 1].mean()
    expected = excess.mean() / excess.std(ddof=1) * np.sqrt(252) - max(0.0, -tail)
    assert 10.0 < expected < 200.0  # an ordinary, large, finite score
    assert scores["objective"] == pytest.approx(expected, rel=1e-9)
    assert selected == scores["objective"]


def _tail_penalty(excess: np.ndarray) -> float:
    """What the tail term subtracts from the objective of ``excess`` (penalty weight 1)."""
    paths = objective_paths(excess[None, :], 252, 0.0) - objective_paths(excess[None, :], 252, 1.0)
    return float(paths[0])


def test_a_tail_of_gains_costs_no_penalty() -> None:
    excess = np.random.default_rng(1).normal(0.01, 0.002, 100)
    assert excess.min() > 0.0  # even the worst bars beat the benchmark
    assert _tail_penalty(excess) == 0.0  # was |CVaR 5 %| ~ 0.006
    assert score_of(excess, 252, 1.0) == score_of(excess, 252, 0.0)


@pytest.mark.parametrize("mean", [0.01, 0.002, 0.0, -0.005])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_worse_tail_never_lowers_the_penalty(mean: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(mean, 0.003, 100)
    worst = np.argsort(base)
    for bars in (worst[:1], worst[:5], worst[:10], rng.choice(100, 20, replace=False)):
        for by in (1e-4, 1e-3, 5e-3, 0.02):
            worse = base.copy()
            worse[bars] -= by  # these bars lag the benchmark by more
            assert _tail_penalty(worse) >= _tail_penalty(base) - 1e-12, (mean, by, bars)


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
