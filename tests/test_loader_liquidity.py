"""Liquidity the simulator may not invent: a zero dollar volume fills nothing, a tiny one at most its
participation cap, and a zero estimated spread is costed like a missing one (past-only median)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import CostConfig, cost_rates, costs_at_rates, slippage_bps
from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import load_market_data
from raytrade.envs.simulator import MarketSimulator
from raytrade.envs.synthetic_market import synthetic_market_data
from raytrade.replay import read_frame

ILLIQUID = "SYN001"
DEAD_BARS = 30  # SYN001 trades no shares on its first 30 bars
FLAT = slice(60, 100)  # then sits unquoted at one price (high == low): Corwin-Schultz estimates 0


@pytest.fixture(scope="module")
def illiquid_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=2, years=1.0, seed=11).bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    rows = np.flatnonzero(bars["symbol"] == ILLIQUID)
    bars.loc[rows[:DEAD_BARS], "volume"] = 0.0
    bars.loc[rows, ["bid", "ask", "bid_size", "ask_size"]] = np.nan  # never quoted: spreads are estimates
    flat = rows[FLAT]
    price = float(bars.loc[flat[0], "close"])
    bars.loc[flat, ["open", "high", "low", "close", "vwap"]] = price
    root = tmp_path_factory.mktemp("illiquid") / "store"
    ingest_frames(root, bars, None, show_progress=False)
    return root


def _one_step(data: MarketData, t: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(traded notional [N], costs [4]) of one step from cash at bar ``t`` to ``weights``."""
    sim = MarketSimulator(data, SimulatorConfig(episode_len=1), n_envs=1, seed=0)
    sim.reset(starts=np.array([t]))
    result = sim.step(weights[None, :])
    return result.traded_notional[0], result.costs[0]


def test_zero_dollar_volume_is_loaded_as_zero_not_a_floor(illiquid_store: Path) -> None:
    data = load_market_data(illiquid_store, "all")
    j = data.symbols.index(ILLIQUID)
    assert not data.listed[:DEAD_BARS, j].any()  # bars that traded nothing are no bars (not listed yet)
    assert data.listed[DEAD_BARS:, j].all()
    assert (data.dollar_volume[:DEAD_BARS, j] == 0).all()  # was floored to 1e6 (cap $100k a bar)
    assert (data.dollar_volume[DEAD_BARS:, j] > 0).all()
    assert np.isfinite(data.dollar_volume).all() and np.isfinite(data.spread_bps).all()


def test_an_order_on_a_zero_volume_bar_does_not_fill(illiquid_store: Path) -> None:
    data = load_market_data(illiquid_store, "all")
    j = data.symbols.index(ILLIQUID)
    target = np.zeros(data.n_assets)
    target[j] = 1.0
    traded, costs = _one_step(data, 5, target)
    assert traded[j] == 0.0
    assert (costs == 0).all()


def test_a_tiny_volume_bar_fills_at_most_its_participation_cap() -> None:
    data = synthetic_market_data(n_assets=2, n_steps=40, seed=1)
    volume = data.dollar_volume.copy()
    volume[:, 0] = 5_000.0  # $5k a bar: the cap is $500
    volume[:, 1] = 0.0
    data = replace(data, dollar_volume=volume)
    traded, costs = _one_step(data, 10, np.array([0.5, 0.5]))
    cap = CostConfig().max_participation * 5_000.0
    assert traded[0] == pytest.approx(cap, rel=1e-9)
    assert traded[1] == 0.0
    assert np.isfinite(costs).all() and (costs >= 0).all()


def test_zero_volume_rates_are_finite_and_charge_nothing_unfilled() -> None:
    cfg = CostConfig()
    rates = cost_rates(np.array([10.0]), np.array([0.0]), np.array([5.0]), cfg)
    assert rates.fill_cap[0] == 0.0
    assert all(np.isfinite(r).all() for r in rates)
    zero = costs_at_rates(np.array([0.0]), rates)
    assert [float(c[0]) for c in zero] == [0.0, 0.0, 0.0]
    bps = slippage_bps(np.array([0.0, 1e3]), np.array([0.0, 0.0]), cfg)
    assert np.isfinite(bps).all()


def test_a_zero_estimated_spread_is_costed_at_the_past_median(illiquid_store: Path) -> None:
    data = load_market_data(illiquid_store, "all")
    j = data.symbols.index(ILLIQUID)
    feats = read_frame(illiquid_store, "features", symbols=[ILLIQUID], columns=["ts", "spread_bps"])
    stored = feats.set_index("ts")["spread_bps"].to_numpy(np.float64)
    zero = np.flatnonzero(stored == 0)
    assert zero.size >= 10  # the flat run estimates a spread of exactly 0
    positive = pd.Series(np.where(stored > 0, stored, np.nan))
    past_median = positive.expanding(min_periods=1).median().to_numpy()  # bars <= t only
    np.testing.assert_allclose(data.spread_bps[zero, j], past_median[zero], rtol=1e-12)
    assert (data.spread_bps[zero, j] > 0).all()
    never = ~np.isfinite(stored) & ~np.isfinite(past_median)
    assert (data.spread_bps[never, j] == 25.0).all()  # nothing known yet: the 25 bps default


def test_trading_on_a_zero_spread_bar_pays_a_spread(illiquid_store: Path) -> None:
    data = load_market_data(illiquid_store, "all")
    j = data.symbols.index(ILLIQUID)
    feats = read_frame(illiquid_store, "features", symbols=[ILLIQUID], columns=["ts", "spread_bps"])
    t = int(np.flatnonzero(feats["spread_bps"].to_numpy() == 0)[0])
    target = np.zeros(data.n_assets)
    target[j] = 0.05
    traded, costs = _one_step(data, t, target)
    assert traded[j] > 0
    expected = abs(traded[j]) * CostConfig().spread_fraction * data.spread_bps[t, j] * 1e-4
    assert costs[1] == pytest.approx(expected, rel=1e-9)
    assert costs[1] > 0


def test_kelly_lite_treats_a_present_zero_spread_as_a_quote() -> None:
    t, n = 12, 2
    rng = np.random.default_rng(0)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.02, (t, n)), axis=0)
    fc = np.full((t, n), 0.004)
    spread = np.zeros((t, n))  # both columns 0 in the observation ...
    missing = np.zeros((t, n, 3), dtype=bool)
    missing[:, 1, 2] = True  # ... but only B's is the store's null: no quote
    data = MarketData(
        ts=np.datetime64("2024-01-01", "us") + np.arange(t) * np.timedelta64(1, "D"),
        symbols=("A", "B"),
        asset_class=("equity",) * 2,
        open=close.copy(),
        close=close,
        listed=np.ones((t, n), dtype=bool),
        spread_bps=np.full((t, n), 5.0),  # the loader's costed (filled) spread
        dollar_volume=np.full((t, n), 1e8),
        features=np.stack([fc, np.ones((t, n)), spread], axis=-1).astype(np.float32),
        feature_names=("fc_mean", "fc_consensus_ok", "spread_bps"),
        regime_code=np.zeros((t, n), dtype=np.int8),
        feature_missing=missing,
    )
    ctx = baseline_context("kelly_lite", data)
    weights = baseline_decision(
        ctx, np.array([10]), np.array([True]), data.listed[[10]], np.zeros((1, data.n_assets))
    ).allocation[0]
    assert weights[0] > 0  # an estimate of 0 is a spread, gated at the costed 5 bps
    assert weights[1] == 0.0  # a null spread is no quote
