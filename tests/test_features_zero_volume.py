"""A bar that traded nothing (volume 0) must not reach its symbol's spread estimate or ATR, fill a
passive order (``fill_prob``) or count as history toward the gate.

Vendors print a halted or dead day as a flat bar (open = high = low = close, the previous close) with
volume 0: a range of 0 that is no market's. To the range estimators such a bar is a hole (neither in
nor ageing the window, the pair across it excluded), and its own row carries the estimate of the last
bar that traded. A source without any volume keeps every bar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raytrade.replay.features import FeatureConfig, build_features
from tests.test_features_holes import N_BARS as HOLES_N_BARS
from tests.test_features_holes import _bars as varied_bars

N_BARS, STRETCH_START, STRETCH_LEN = HOLES_N_BARS, 30, 12  # the untraded stretch: rows 30..41
STRETCH = slice(STRETCH_START, STRETCH_START + STRETCH_LEN)
FEATURES = ("spread_bps", "atr_pct_14")


def _bars(symbol: str, seed: int) -> pd.DataFrame:
    """Daily equity bars with varied ranges, traded every day (the hole tests' bars, without a hole)."""
    return varied_bars(symbol, "equity", seed, hole=False)


def _stretched(volume: float) -> pd.DataFrame:
    """THN's rows 30..41 are flat bars at row 29's close that traded ``volume`` (0, or unknown)."""
    thin = _bars("THN", seed=1)
    stale = float(thin.loc[STRETCH_START - 1, "close"])
    rows = list(range(STRETCH.start, STRETCH.stop))
    thin.loc[rows, ["open", "high", "low", "close"]] = stale
    thin.loc[rows, "volume"] = volume
    return thin


def _features(thin: pd.DataFrame) -> pd.DataFrame:
    """THN's features (indexed by ts) in a store where FUL trades every day (the calendar keeps THN's
    dates whether it has bars on them or not)."""
    f = build_features(pd.concat([_bars("FUL", seed=2), thin], ignore_index=True))
    return f[f["symbol"] == "THN"].set_index("ts")[list(FEATURES)]


@pytest.mark.parametrize("volume", [0.0, np.nan], ids=["zero", "unknown"])
@pytest.mark.parametrize("feature", FEATURES)
def test_after_an_untraded_stretch_the_estimate_is_that_without_it(feature: str, volume: float) -> None:
    got = _features(_stretched(volume))
    thin = _bars("THN", seed=1)
    removed = _features(thin.drop(index=range(STRETCH.start, STRETCH.stop)).reset_index(drop=True))
    after = removed.index[removed.index > got.index[STRETCH.stop - 1]]
    assert len(after) == N_BARS - STRETCH.stop
    np.testing.assert_allclose(got.loc[after, feature], removed.loc[after, feature], rtol=1e-12, atol=0)


DISPERSION = ("vol_20", "vol_60", "skew_60")


@pytest.mark.parametrize("feature", DISPERSION)
def test_the_dispersion_of_returns_reads_traded_bars_only(feature: str) -> None:
    """A halt printed at the last close stood in the return windows as bars of zero return: 35 such
    bars made a real stock's vol_20 13.6x too small, and inverse_vol put 76 % of its book in it. Now
    the estimate after the stretch is that without it (the return across the halt taken at the first
    traded bar), and the untraded rows carry the last traded bar's estimate."""
    f = build_features(pd.concat([_bars("FUL", seed=2), _stretched(0.0)], ignore_index=True))
    got = f[f["symbol"] == "THN"].set_index("ts")[feature]
    thin = _bars("THN", seed=1).drop(index=range(STRETCH.start, STRETCH.stop)).reset_index(drop=True)
    g = build_features(pd.concat([_bars("FUL", seed=2), thin], ignore_index=True))
    removed = g[g["symbol"] == "THN"].set_index("ts")[feature]
    after = removed.index[removed.index > got.index[STRETCH.stop - 1]]
    assert len(after) == N_BARS - STRETCH.stop and np.isfinite(got.loc[after]).all()
    np.testing.assert_allclose(got.loc[after], removed.loc[after], rtol=1e-12, atol=0)
    values = got.to_numpy()  # vol_60 and skew_60 have no estimate yet at row 29 (NaN, carried as NaN)
    np.testing.assert_array_equal(values[STRETCH], np.full(STRETCH_LEN, values[STRETCH_START - 1]))


@pytest.mark.parametrize("feature", FEATURES)
def test_an_untraded_bar_carries_the_last_traded_bars_estimate(feature: str) -> None:
    got = _features(_stretched(0.0))[feature].to_numpy()
    last_traded = got[STRETCH_START - 1]
    assert np.isfinite(last_traded) and last_traded > 0
    assert (got[STRETCH] == last_traded).all()


@pytest.mark.parametrize("feature", FEATURES)
def test_bars_before_the_first_trade_have_no_estimate_not_zero(feature: str) -> None:
    thin = _bars("THN", seed=1)
    first = float(thin.loc[0, "close"])
    thin.loc[0:4, ["open", "high", "low", "close"]] = first  # listed flat, nothing traded for 5 bars
    thin.loc[0:4, "volume"] = 0.0  # rows 0..4 (label slice, inclusive)
    got = _features(thin)[feature].to_numpy()
    assert np.isnan(got[:5]).all()
    assert np.isfinite(got[6:]).all()


@pytest.mark.parametrize("volume_column", [False, True], ids=["absent", "all-null"])
def test_a_source_without_volume_keeps_every_bar(volume_column: bool) -> None:
    """No volume at all: the flat bars (rows 2, 3) still count, values as before this change (the ATR
    by hand: row 0 its range 2 / 100; row 1 (2 + 103.02 - 99.485) / 2 / 101 ...)."""
    close = np.array([100.0, 101.0, 101.0, 101.0, 99.0, 100.0])
    bars = pd.DataFrame(
        {
            "symbol": "NOV",
            "ts": pd.date_range("2024-01-01", periods=len(close), freq="D", tz="UTC"),
            "open": close,
            "high": close * np.array([1.01, 1.02, 1.0, 1.0, 1.015, 1.01]),
            "low": close * np.array([0.99, 0.985, 1.0, 1.0, 0.98, 0.995]),
            "close": close,
            "asset_class": "equity",
            "source": "test",
        }
    )
    if volume_column:
        bars["volume"] = np.nan
    f = build_features(bars)
    spread = [
        np.nan,
        10.517407385310998,
        5.258703692655499,
        3.5058024617703327,
        2.6293518463277494,
        2.1034814770621995,
    ]
    atr = [
        2.0,
        2.7400990099009883,
        1.8267326732673257,
        1.3700495049504942,
        1.9222222222222223,
        1.9191666666666665,
    ]
    np.testing.assert_allclose(f["spread_bps"].to_numpy(), spread, rtol=1e-12, atol=0)
    np.testing.assert_allclose(f["atr_pct_14"].to_numpy(), atr, rtol=1e-12, atol=0)


def _quoted_alternating(n: int) -> pd.DataFrame:
    """ALT: quoted bars (bid 99.9, ask 100.1) whose low (99.8) is under the previous bid on every bar;
    even rows trade, odd rows trade nothing (volume 0)."""
    return pd.DataFrame(
        {
            "symbol": "ALT",
            "ts": pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
            "open": 100.0,
            "high": 100.2,
            "low": 99.8,
            "close": 100.0,
            "volume": np.where(np.arange(n) % 2 == 0, 1e6, 0.0),
            "bid": 99.9,
            "ask": 100.1,
            "bid_size": 100.0,
            "ask_size": 100.0,
            "asset_class": "equity",
            "source": "test",
        }
    )


def test_a_bar_that_traded_nothing_is_a_passive_non_fill() -> None:
    """Row 0 has no previous bid (no order rested: not counted); from row 1 each traded (even) row is a
    fill (low 99.8 <= previous bid 99.9), each untraded (odd) row a non-fill whatever its low. Share
    over rows 1..t (window 20 not yet full; at least 2 counted): 1 / 2, 1 / 3, 2 / 4, 2 / 5, ...
    (every bar was a fill before: 1.0)."""
    n = 8
    got = build_features(_quoted_alternating(n), config=FeatureConfig(fill_prob_window=20))["fill_prob"]
    counted = np.arange(n)  # rows 1..t: t of them
    fills = counted // 2  # even rows 2, 4, ... up to t
    expected = np.where(counted >= 2, fills / np.maximum(counted, 1), np.nan)
    np.testing.assert_allclose(got.to_numpy(dtype=np.float64), expected, rtol=1e-12, atol=0)


def test_a_bar_that_traded_nothing_counts_no_history_toward_the_gate() -> None:
    """THN lists flat for 5 bars with volume 0 (rows 0..4), then trades: its gate says ``history`` until
    its 20th traded bar (row 24), not its 20th bar (row 19)."""
    thin = _bars("THN", seed=1)
    thin.loc[0:4, ["open", "high", "low", "close"]] = float(thin.loc[0, "close"])
    thin.loc[0:4, "volume"] = 0.0  # rows 0..4 (label slice, inclusive)
    f = build_features(pd.concat([_bars("FUL", seed=2), thin], ignore_index=True))
    reason = f.loc[f["symbol"] == "THN", "fc_gate_reason"].to_numpy()
    short = np.array(["history" in r for r in reason])
    assert FeatureConfig().min_history == 20
    np.testing.assert_array_equal(np.flatnonzero(short), np.arange(5 + 20 - 1))
