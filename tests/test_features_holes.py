"""A hole in one symbol's bars (others trading meanwhile) must not reach its spread estimate or ATR.

On the class calendar the hole's rows are carried forward; the range estimators read real bars only:
the symbol's features equal what its own bars give with the hole's dates removed from the calendar,
the pair across the hole (last bar before it, first bar after it) excluded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.features.microstructure import corwin_schultz_bps

N_BARS, HOLE_START, HOLE_LEN = 60, 30, 12  # the hole: rows 30..41 of the calendar


def _bars(symbol: str, asset_class: str, seed: int, hole: bool) -> pd.DataFrame:
    """Daily bars with varied ranges; with ``hole`` the 12 bars from row 30 are missing and the price
    reopens 20% higher (a move during the hole that a carried bar would read as one bar's range)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N_BARS)))
    if hole:
        close[HOLE_START:] *= 1.2
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts": pd.date_range("2024-01-01", periods=N_BARS, freq="D", tz="UTC"),
            "open": close,
            "high": close * (1.0 + rng.uniform(0.002, 0.02, N_BARS)),
            "low": close * (1.0 - rng.uniform(0.002, 0.02, N_BARS)),
            "close": close,
            "volume": 1e6,
            "asset_class": asset_class,
            "source": "test",
        }
    )
    if hole:
        frame = frame.drop(index=range(HOLE_START, HOLE_START + HOLE_LEN)).reset_index(drop=True)
    return frame


def _holed_pair(asset_class: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bars of both symbols, the holed symbol's own bars); the other symbol trades through the hole."""
    suffix = "USD" if asset_class == "crypto" else ""
    holed = _bars("HOL" + suffix, asset_class, seed=1, hole=True)
    full = _bars("FUL" + suffix, asset_class, seed=2, hole=False)
    return pd.concat([full, holed], ignore_index=True), holed


@pytest.mark.parametrize("asset_class", ["equity", "crypto"])
def test_spread_estimate_after_a_hole_reads_only_real_pairs(asset_class: str) -> None:
    bars, own = _holed_pair(asset_class)
    f = build_features(bars)
    got = f.loc[f["symbol"] == own["symbol"].iloc[0], "spread_bps"].to_numpy()
    pairs = corwin_schultz_bps(own[["high"]].set_axis(["x"], axis=1), own[["low"]].set_axis(["x"], axis=1))
    pairs.iloc[HOLE_START] = np.nan  # own row 30 = the reopen: its pair spans the hole
    expected = pairs["x"].rolling(FeatureConfig().spread_estimator_window, min_periods=1).mean()
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-12)
    assert got[HOLE_START] == pytest.approx(pairs["x"].iloc[HOLE_START - 19 : HOLE_START].mean())


@pytest.mark.parametrize("asset_class", ["equity", "crypto"])
def test_atr_after_a_hole_reads_only_real_bars(asset_class: str) -> None:
    bars, own = _holed_pair(asset_class)
    f = build_features(bars)
    got = f.loc[f["symbol"] == own["symbol"].iloc[0], "atr_pct_14"].to_numpy()
    high, low, close = (own[c].to_numpy() for c in ("high", "low", "close"))
    prev = np.concatenate([[np.nan], close[:-1]])
    prev[HOLE_START] = np.nan  # the reopen's true range is its own high - low, as on a first bar
    gap = np.fmax(np.abs(high - prev), np.abs(low - prev))
    true_range = np.where(np.isnan(prev), high - low, np.maximum(high - low, gap))
    expected = 100.0 * pd.Series(true_range).rolling(14, min_periods=1).mean().to_numpy() / close
    np.testing.assert_allclose(got, expected, rtol=1e-12)
