"""Stress scenarios recompute the baseline forecaster's columns from the stressed closes
(``envs.stress_features``): a crash reaches the forecasts, the gate and kelly_lite; imported forecasts
are kept; nothing looks ahead."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import _SCALED as LOADER_SCALE
from raytrade.envs.scenarios import apply_scenario
from raytrade.envs.stress_features import (
    FORECAST_FEATURES,
    baseline_forecast_features,
    with_stressed_features,
)
from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.features.forecast import baseline_forecast
from raytrade.replay.schema import FORECAST_QUANTILE_COLUMNS

T, N, CRASH, WINDOW = 300, 4, 200, 150
SHOCKED = [0, 1]  # the symbols that lose 40 % on bar CRASH
COLUMNS = ("ret_1", "vol_20", "spread_bps", *FORECAST_FEATURES)
SYMBOLS = tuple(f"S{i}" for i in range(N))


def _rally(seed: int = 0) -> np.ndarray:
    """+0.5 %/bar trends with noise: the baseline forecaster expects a rise, kelly_lite goes long."""
    rng = np.random.default_rng(seed)
    log_r = 0.005 + 0.003 * rng.normal(size=(T, 1)) + 0.003 * rng.normal(size=(T, N))
    return 100.0 * np.exp(np.cumsum(log_r, axis=0))


def _crashed(close: np.ndarray) -> np.ndarray:
    out = close.copy()
    out[CRASH:, SHOCKED] *= 0.6  # -40 % on one bar, the level shift persists
    return out


def _bars(close: np.ndarray) -> pd.DataFrame:
    """Long equity bars with a 5 bps two-sided quote, as ingest reads them."""
    prev = np.vstack([close[:1], close[:-1]])
    ts = pd.date_range("2020-01-01", periods=T, freq="D", tz="UTC")
    frames = []
    for j, symbol in enumerate(SYMBOLS):
        c, o = close[:, j], prev[:, j]
        quote = {"bid": c * (1 - 2.5e-4), "ask": c * (1 + 2.5e-4), "bid_size": 100.0, "ask_size": 100.0}
        prices = {"open": o, "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c, "volume": 1e6}
        frames.append(pd.DataFrame({"symbol": symbol, "ts": ts, **prices, **quote, "asset_class": "equity"}))
    return pd.concat(frames, ignore_index=True)


def _wide(features: pd.DataFrame, name: str) -> np.ndarray:
    return (
        features.pivot(index="ts", columns="symbol", values=name)
        .reindex(columns=list(SYMBOLS))
        .to_numpy(dtype=np.float64, na_value=np.nan)
    )


def _loaded(
    close: np.ndarray, forecasts: pd.DataFrame | None = None, columns: tuple[str, ...] = COLUMNS
) -> MarketData:
    """The store ingest builds from ``close`` (and imported ``forecasts``), as the loader reads it."""
    feats = build_features(_bars(close), forecasts=forecasts)
    values = np.stack([_wide(feats, c) * LOADER_SCALE.get(c, 1.0) for c in columns], axis=2)
    prev = np.vstack([close[:1], close[:-1]])
    return MarketData(
        ts=pd.date_range("2020-01-01", periods=T, freq="D").to_numpy().astype("datetime64[us]"),
        symbols=SYMBOLS,
        asset_class=("equity",) * N,
        open=prev,
        close=close,
        listed=np.ones((T, N), dtype=bool),
        spread_bps=_wide(feats, "spread_bps"),
        dollar_volume=np.nan_to_num(_wide(feats, "dollar_volume_20")),
        features=np.nan_to_num(values).astype(np.float32),
        feature_names=columns,
        regime_code=np.zeros((T, N), dtype=np.int8),
        feature_missing=~np.isfinite(values),
        forecast_fallback=_wide(feats, "fc_fallback") == 1.0,
    )


def _rows(md: MarketData, lo: int, hi: int) -> MarketData:
    sl = slice(lo, hi)
    arrays = ("ts", "open", "close", "listed", "spread_bps", "dollar_volume", "features", "regime_code",
              "feature_missing", "forecast_fallback")  # fmt: skip
    return replace(md, **{name: getattr(md, name)[sl] for name in arrays})


def _crash_window(forecasts: pd.DataFrame | None = None) -> tuple[MarketData, MarketData, MarketData]:
    """(stored history, the test window with the crash applied to its prices only, the crash re-ingested)."""
    history = _loaded(_rally(), forecasts)
    window = _rows(history, WINDOW, T)
    shocked = _crashed(history.close)
    prices = {"close": shocked[WINDOW:], "open": np.vstack([shocked[:1], shocked[:-1]])[WINDOW:]}
    return history, replace(window, **prices), _loaded(shocked, forecasts)


def _col(md: MarketData, name: str) -> np.ndarray:
    return md.features[:, :, md.feature_names.index(name)]


def test_the_forecast_columns_are_every_numeric_column_ingest_writes() -> None:
    close = _rally()[:60]
    values = baseline_forecast_features(
        close, np.ones(close.shape, bool), np.arange(60).astype("datetime64[D]"), SYMBOLS,
        ("equity",) * N, np.full(close.shape, 5.0), np.full(close.shape, 1e8), FeatureConfig(),
    )  # fmt: skip
    assert set(values) == set(FORECAST_FEATURES)
    core = {"fc_mean", "fc_std", "fc_q05", "fc_q95", "fc_gate_open", "fc_min_move_adaptive", "kelly_lite"}
    assert core <= set(FORECAST_FEATURES)
    assert "fc_gate_reason" not in FORECAST_FEATURES and "fc_recal_q05" not in FORECAST_FEATURES


def test_a_crash_reaches_the_baseline_forecast_exactly_as_ingest_would_compute_it() -> None:
    history, window, reingested = _crash_window()
    out = with_stressed_features(window, CRASH - WINDOW, warmup=history)
    k = CRASH - WINDOW
    # wider: the crash bar enters the forecaster's EWMA scale
    stored_std, new_std = _col(window, "fc_std")[k:, SHOCKED], _col(out, "fc_std")[k:, SHOCKED]
    assert (new_std[:30] > 2.0 * stored_std[:30]).all()
    spread = _col(out, "fc_q95")[k:, SHOCKED] - _col(out, "fc_q05")[k:, SHOCKED]
    stored_spread = _col(window, "fc_q95")[k:, SHOCKED] - _col(window, "fc_q05")[k:, SHOCKED]
    assert (spread[:30] > 2.0 * stored_spread[:30]).all()
    # exactly the baseline forecaster on the crashed closes (warm-up included)
    r1 = np.log(pd.DataFrame(_crashed(history.close))).diff()
    expected = baseline_forecast(r1, FeatureConfig())
    np.testing.assert_array_equal(
        _col(out, "fc_std")[k:], expected["std"].to_numpy()[CRASH:].astype(np.float32)
    )
    np.testing.assert_array_equal(
        _col(out, "fc_mean")[k:], expected["mean"].to_numpy()[CRASH:].astype(np.float32)
    )
    # and every forecast column (gate, calibration, adaptive threshold, kelly_lite) as ingest of the crash
    for name in FORECAST_FEATURES:
        np.testing.assert_allclose(
            _col(out, name), _col(reingested, name)[WINDOW:], rtol=1e-5, atol=1e-9, err_msg=name
        )
    np.testing.assert_array_equal(out.feature_missing, reingested.feature_missing[WINDOW:])
    np.testing.assert_array_equal(out.features[:k], window.features[:k])  # before the shock: as stored


def _imported(symbol: str, lo: int) -> pd.DataFrame:
    """A calm external forecast (+0.3 %, 1 % wide) for ``symbol`` on bars ``lo..T-1``."""
    ts = pd.date_range("2020-01-01", periods=T, freq="D", tz="UTC")[lo:]
    quantiles = dict(zip(FORECAST_QUANTILE_COLUMNS, (-0.013, -0.004, 0.003, 0.01, 0.019), strict=True))
    return pd.DataFrame(
        {"symbol": symbol, "ts": ts, "source": "ext", "horizon": 1, "mean": 0.003, "std": 0.01, "skew": 0.0,
         **quantiles}
    )  # fmt: skip


def test_imported_forecasts_are_kept_as_stored() -> None:
    history, window, reingested = _crash_window(_imported("S0", WINDOW))
    k = CRASH - WINDOW
    assert not window.forecast_fallback[:, 0].any() and window.forecast_fallback[:, 1:].all()
    out = with_stressed_features(window, k, warmup=history)
    columns = [window.feature_names.index(name) for name in FORECAST_FEATURES]
    np.testing.assert_array_equal(out.features[:, 0, columns], window.features[:, 0, columns])
    np.testing.assert_allclose(  # S1, crashed too, is the baseline's: recomputed
        out.features[:, 1, columns], reingested.features[WINDOW:, 1, columns], rtol=1e-5, atol=1e-9
    )
    assert not np.allclose(out.features[k:, 1, columns], window.features[k:, 1, columns])


def test_data_without_forecast_provenance_keeps_every_forecast() -> None:
    history, window, _ = _crash_window()
    unknown = replace(window, forecast_fallback=None)
    out = with_stressed_features(unknown, CRASH - WINDOW, warmup=replace(history, forecast_fallback=None))
    columns = [window.feature_names.index(name) for name in FORECAST_FEATURES]
    np.testing.assert_array_equal(out.features[:, :, columns], window.features[:, :, columns])


def test_a_forecast_at_t_reads_no_close_after_t() -> None:
    close = _crashed(_rally())
    ts = pd.date_range("2020-01-01", periods=T, freq="D").to_numpy()
    args = (SYMBOLS, ("equity",) * N, np.full(close.shape, 5.0), np.full(close.shape, 1e8), FeatureConfig())
    listed = np.ones(close.shape, dtype=bool)
    full = baseline_forecast_features(close, listed, ts, *args)
    t = CRASH - 1
    changed = close.copy()
    changed[t + 1 :] *= np.exp(np.random.default_rng(1).normal(0.0, 0.2, size=changed[t + 1 :].shape))
    later = baseline_forecast_features(changed, listed, ts, *args)
    for name in FORECAST_FEATURES:
        np.testing.assert_array_equal(later[name][: t + 1], full[name][: t + 1], err_msg=name)
        assert name in ("fc_edge_threshold_bps", "fc_n_sources", "fc_fallback") or not np.array_equal(
            later[name][t + 1 :], full[name][t + 1 :], equal_nan=True
        ), name


def test_kelly_lite_stops_buying_the_crash_once_its_forecasts_see_it() -> None:
    # calm stored forecasts: kelly_lite stays long the crashed names on the crash bar; recomputed, the
    # baseline forecaster turns bearish and kelly_lite goes short them (equity shorting allowed)
    history, window, _ = _crash_window()
    k = CRASH - WINDOW
    calm = with_stressed_features(replace(window, forecast_fallback=None), k, warmup=history)
    stressed = with_stressed_features(window, k, warmup=history)

    def weights(md: MarketData) -> np.ndarray:
        ctx = baseline_context("kelly_lite", md)
        bars = np.arange(k, k + 5)
        return baseline_decision(
            ctx, bars, bars == k, md.listed[bars], np.zeros((5, md.n_assets))
        ).allocation[:, SHOCKED]

    assert (weights(calm) > 0).all()
    assert (weights(stressed) < 0).all()
    assert (_col(stressed, "fc_mean")[k : k + 5, SHOCKED] < 0).all()
    assert (_col(calm, "fc_mean")[k : k + 5, SHOCKED] > 0).all()


def test_a_bootstrap_path_recomputes_the_baseline_and_carries_the_drawn_imported_rows() -> None:
    history = _loaded(_rally(), _imported("S0", 0))  # S0 imported on every bar, S1..S3 the baseline's
    codes = np.zeros_like(history.regime_code)
    codes[100:150] = 2
    history = replace(history, regime_code=codes)
    window = _rows(history, WINDOW, T)
    out = apply_scenario("bootstrap_crisis", window, np.random.default_rng(0), history=history)
    assert out.forecast_fallback is not None
    np.testing.assert_array_equal(out.forecast_fallback, window.forecast_fallback)  # the drawn rows'
    columns = [out.feature_names.index(name) for name in FORECAST_FEATURES]
    drawn = history.features[100:150, 0][:, columns]  # S0: every path row is one crisis row's forecast
    assert all((drawn == row).all(axis=1).any() for row in out.features[:, 0, columns])
    close = np.vstack([history.close[:WINDOW], out.close])
    listed = np.vstack([history.listed[:WINDOW], out.listed])
    ts = np.concatenate([history.ts[:WINDOW], out.ts])
    spread = np.vstack([_col(history, "spread_bps")[:WINDOW], _col(out, "spread_bps")]) / 1e-4
    volume = np.vstack([history.dollar_volume[:WINDOW], out.dollar_volume])
    args = (SYMBOLS, ("equity",) * N, spread, volume, FeatureConfig())
    expected = baseline_forecast_features(close, listed, ts, *args)
    for k, name in zip(columns, FORECAST_FEATURES, strict=True):
        want = np.nan_to_num(expected[name][WINDOW:, 1:] * LOADER_SCALE.get(name, 1.0))
        np.testing.assert_allclose(out.features[:, 1:, k], want, rtol=1e-6, atol=1e-9, err_msg=name)
