"""kelly_lite's sigma at a window's first bars reads the closes just before the window (no restart,
no look-ahead): a slice, a store split and the longer data they were cut from agree bar for bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.evaluation.harness import slice_window
from raytrade.envs.evaluation.kelly_lite import KellyLiteConfig, trailing_sigma
from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import load_market_data
from raytrade.replay.splits import TimeWindow

N_CLOSES = KellyLiteConfig().kelly_sigma_closes


def _data(t: int = 40, n: int = 2, seed: int = 0) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.02, (t, n)), axis=0)
    listed = np.ones((t, n), dtype=bool)
    listed[17, 1] = False  # a hole (a zero-volume bar) just before the slice below
    fc = np.tile(np.array([0.004, -0.003]), (t, 1))
    features = np.stack([fc, np.ones((t, n)), np.full((t, n), 5e-4)], axis=-1).astype(np.float32)
    return MarketData(
        ts=np.datetime64("2024-01-01", "us") + np.arange(t) * np.timedelta64(1, "D"),
        symbols=("A", "B"),
        asset_class=("equity",) * n,
        open=close.copy(),
        close=close,
        listed=listed,
        spread_bps=np.full((t, n), 5.0),
        dollar_volume=np.full((t, n), 1e8),
        features=features,
        feature_names=("fc_mean", "fc_consensus_ok", "spread_bps"),
        regime_code=np.zeros((t, n), dtype=np.int8),
    )


def _slice(data: MarketData, lo: int, hi: int) -> MarketData:
    start, end = (pd.Timestamp(data.ts[i]).tz_localize("UTC") for i in (lo, hi - 1))
    return slice_window(data, TimeWindow("w", start, end, hi - lo))


def test_a_slice_sizes_its_first_bars_as_the_parent_does() -> None:
    parent = _data()
    lo = 20
    part = _slice(parent, lo, parent.n_steps)
    whole, cut = baseline_context("kelly_lite", parent), baseline_context("kelly_lite", part)
    assert whole.sigma is not None and cut.sigma is not None
    np.testing.assert_array_equal(cut.sigma, whole.sigma[lo:])
    assert np.isfinite(cut.sigma[: N_CLOSES - 1, 0]).all()  # no warm-up inside the slice
    assert np.isnan(cut.sigma[: 18 + N_CLOSES - 1 - lo, 1]).all()  # the hole at bar 17 still counts
    for t in range(N_CLOSES):
        flat = np.zeros((1, part.n_assets))
        mine = baseline_decision(cut, np.array([t]), np.array([t == 0]), part.listed[t][None], flat)
        theirs = baseline_decision(
            whole, np.array([lo + t]), np.array([t == 0]), parent.listed[lo + t][None], flat
        )
        np.testing.assert_array_equal(mine.allocation, theirs.allocation)
    assert np.abs(cut.sigma[0, 0]) > 0
    # a slice of a slice keeps the history too
    inner = _slice(part, 3, part.n_steps)
    again = baseline_context("kelly_lite", inner)
    assert again.sigma is not None
    np.testing.assert_array_equal(again.sigma, whole.sigma[lo + 3 :])


def test_sigma_at_t_reads_no_close_after_t() -> None:
    parent = _data(seed=1)
    lo, t = 20, 2
    base = baseline_context("kelly_lite", _slice(parent, lo, parent.n_steps)).sigma
    close = parent.close.copy()
    close[lo + t + 1 :] *= 1.5
    close[lo + t + 2 :: 2] *= 0.7
    moved = baseline_context("kelly_lite", _slice(_replaced_close(parent, close), lo, parent.n_steps)).sigma
    assert base is not None and moved is not None
    np.testing.assert_array_equal(moved[: t + 1], base[: t + 1])
    assert not np.allclose(moved[t + 1 :], base[t + 1 :])  # the change is seen from t + 1 on
    # the same through trailing_sigma's own history arguments
    before = close[lo - 10 : lo]
    listed = np.ones_like(close[lo:], dtype=bool)
    one = trailing_sigma(close[lo:], listed, N_CLOSES, before, np.ones_like(before, dtype=bool))
    later = close[lo:].copy()
    later[t + 1 :] *= 3.0
    two = trailing_sigma(later, listed, N_CLOSES, before, np.ones_like(before, dtype=bool))
    np.testing.assert_array_equal(one[: t + 1], two[: t + 1])
    assert np.isfinite(one[0]).all()


def _replaced_close(data: MarketData, close: np.ndarray) -> MarketData:
    from dataclasses import replace

    return replace(data, close=close, open=close.copy())


def test_a_store_split_sizes_its_first_bars_as_the_whole_history_does(synthetic_store: Path) -> None:
    whole = load_market_data(synthetic_store, "all", feature_columns=("ret_1",))
    test = load_market_data(synthetic_store, "test", feature_columns=("ret_1",))
    assert whole.close_before is not None and whole.close_before.shape[0] == 0  # nothing before "all"
    lo = int(np.searchsorted(whole.ts, test.ts[0]))
    full = trailing_sigma(whole.close, whole.listed, N_CLOSES)
    mine = trailing_sigma(test.close, test.listed, N_CLOSES, test.close_before, test.listed_before)
    np.testing.assert_allclose(mine, full[lo : lo + test.n_steps], rtol=1e-12, equal_nan=True)
    assert np.isfinite(mine[: N_CLOSES - 1]).any()  # the split's first bars have a sigma
