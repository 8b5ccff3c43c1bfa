"""Stress scenarios move the macro columns with the stressed market (``envs.stress_features``): the
volatility index rises with the rebuilt volatility, sector momentum is rebuilt from the stressed
closes; before, a crash kept a calm ``vix_level`` and the momentum of the rally before it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import _SCALED as LOADER_SCALE
from raytrade.envs.step_features import sector_momentum
from raytrade.envs.stress_features import _move_vix, with_stressed_features
from raytrade.replay.features import FeatureConfig
from tests.test_stress_forecasts import CRASH, SHOCKED, WINDOW, T, _crashed, _loaded, _rally, _rows

COLUMNS = ("ret_1", "ret_20", "vol_20", "vol_60", "spread_bps", "vix_level", "vix_term", "sector_momentum")
MACRO = ("vix_level", "vix_term", "sector_momentum")
K = CRASH - WINDOW


def _col(md: MarketData, name: str) -> np.ndarray:
    return md.features[:, :, md.feature_names.index(name)].astype(np.float64)


def _stressed(columns: tuple[str, ...] = COLUMNS) -> tuple[MarketData, MarketData, MarketData]:
    """(the calm window as stored, its crash rebuilt, the crash re-ingested) for ``columns``."""
    history = _loaded(_rally(), None, columns)
    shocked = _crashed(history.close)
    prices = {"close": shocked[WINDOW:], "open": np.vstack([shocked[:1], shocked[:-1]])[WINDOW:]}
    window = replace(_rows(history, WINDOW, T), **prices)
    out = with_stressed_features(window, K, warmup=history)
    return window, out, _loaded(shocked, None, columns)


def test_a_crash_moves_the_macro_columns_as_ingest_of_the_crashed_closes_would() -> None:
    window, out, reingested = _stressed()
    for name in MACRO:
        np.testing.assert_allclose(_col(out, name), _col(reingested, name)[WINDOW:], rtol=1e-5, atol=1e-7)
        assert np.abs(_col(window, name)[K:] - _col(reingested, name)[WINDOW + K :]).max() > 0.1, name
    np.testing.assert_array_equal(out.feature_missing, reingested.feature_missing[WINDOW:])
    np.testing.assert_array_equal(out.features[:K], window.features[:K])  # before the shock: as stored
    # the proxy index rose with the crash (-40 % on half the names), and the crashed names' momentum
    # turned (the crash splits them from the others' cluster)
    assert (_col(out, "vix_level")[K : K + 20] > 5.0 * _col(window, "vix_level")[K : K + 20]).all()
    assert (_col(out, "sector_momentum")[K + 1 : K + 20, SHOCKED] < 0.0).all()
    assert (_col(window, "sector_momentum")[K + 1 : K + 20] > 0.0).all()


def test_a_real_vix_series_moves_as_much_as_the_median_volatility() -> None:
    history = _loaded(_rally(), None, COLUMNS)
    k = COLUMNS.index("vix_level")
    features = history.features.copy()
    features[:, :, k] = np.float32(18.0 * LOADER_SCALE["vix_level"])  # a calm index, not the proxy
    history = replace(history, features=features)
    shocked = _crashed(history.close)
    prices = {"close": shocked[WINDOW:], "open": np.vstack([shocked[:1], shocked[:-1]])[WINDOW:]}
    window = replace(_rows(history, WINDOW, T), **prices)
    out = with_stressed_features(window, K, warmup=history)
    rebuilt_vol = np.median(_col(_loaded(shocked, None, COLUMNS), "vol_20")[WINDOW:], axis=1)
    stored_vol = np.median(_col(window, "vol_20"), axis=1)
    expected = 0.18 * rebuilt_vol / stored_vol
    expected_cells = np.repeat(expected[K:, None], 4, axis=1)
    np.testing.assert_allclose(_col(out, "vix_level")[K:], expected_cells, rtol=1e-5)
    np.testing.assert_allclose(_col(out, "vix_level")[:K], 0.18, rtol=1e-6)


def test_without_the_stored_volatility_the_index_keeps_its_stored_value() -> None:
    columns = ("ret_1", "ret_20", "vix_level", "vix_term")
    window, out, _ = _stressed(columns)
    np.testing.assert_array_equal(_col(out, "vix_level"), _col(window, "vix_level"))
    np.testing.assert_array_equal(_col(out, "vix_term"), _col(window, "vix_term"))
    assert not np.array_equal(_col(out, "ret_20"), _col(window, "ret_20"))


def test_missing_index_cells_stay_missing() -> None:
    history = _loaded(_rally(), None, COLUMNS)
    k = COLUMNS.index("vix_level")
    features, missing = history.features.copy(), history.feature_missing.copy()
    features[CRASH : CRASH + 5, :, k], missing[CRASH : CRASH + 5, :, k] = 0.0, True
    history = replace(history, features=features, feature_missing=missing)
    shocked = _crashed(history.close)
    prices = {"close": shocked[WINDOW:], "open": np.vstack([shocked[:1], shocked[:-1]])[WINDOW:]}
    out = with_stressed_features(replace(_rows(history, WINDOW, T), **prices), K, warmup=history)
    assert (_col(out, "vix_level")[K : K + 5] == 0.0).all()
    assert out.feature_missing[K : K + 5, :, k].all() and not out.feature_missing[K + 5 :, :, k].any()


def test_sector_momentum_never_mixes_asset_classes() -> None:
    """Two equities and two coins moving as one: each class is its own cluster, as ingest clusters
    class by class, so a coin's momentum is the coins' mean ``ret_20`` only."""
    rng = np.random.default_rng(3)
    common = np.cumsum(0.01 * rng.normal(size=(120, 1)), axis=0)
    close = 100.0 * np.exp(common + np.array([0.0, 0.0, 0.5, 0.6]) * np.arange(120)[:, None] / 100.0)
    listed = np.ones(close.shape, dtype=bool)
    ts = np.arange(120).astype("datetime64[D]")
    ret_20 = np.full(close.shape, np.nan)
    ret_20[20:] = np.log(close[20:] / close[:-20])
    classes = ("equity", "equity", "crypto", "crypto")
    out = sector_momentum(close, listed, ts, ("A", "B", "X/USD", "Y/USD"), classes, ret_20, FeatureConfig())
    clustered = np.isfinite(out[:, 0])
    assert clustered[-30:].all()
    np.testing.assert_allclose(out[clustered, 0], ret_20[clustered, :2].mean(axis=1))
    np.testing.assert_allclose(out[clustered, 2], ret_20[clustered, 2:].mean(axis=1))


def test_a_weekend_without_equities_carries_the_stressed_index_forward() -> None:
    """A mixed universe's weekend rows have no listed equity to measure the volatility on: the
    index carries Friday's move (ingest as-of joins the equities' index to crypto's rows); before,
    it snapped back to its calm stored value there, a sawtooth through a crash."""
    names = ("vol_20", "vol_60", "vix_level")
    t, n = 8, 3
    listed = np.ones((t, n), dtype=bool)
    listed[5:7, :2] = False  # Saturday, Sunday: the coin trades, the equities do not
    features = np.zeros((t, n, 3), dtype=np.float32)
    missing = np.zeros((t, n, 3), dtype=bool)
    features[:, :, :2], features[:, :, 2] = 0.01, np.float32(16.0 * LOADER_SCALE["vix_level"])
    missing[5:7, :2, :2] = True
    close = np.full((t, n), 100.0)
    ts = np.arange(t).astype("datetime64[D]").astype("datetime64[us]")
    data = MarketData(
        ts=ts, symbols=("A", "B", "X/USD"), asset_class=("equity", "equity", "crypto"), open=close,
        close=close, listed=listed, spread_bps=np.full((t, n), 5.0), dollar_volume=np.full((t, n), 1e8),
        features=features, feature_names=names, regime_code=np.zeros((t, n), dtype=np.int8),
        feature_missing=missing,
    )  # fmt: skip
    rebuilt = {"vol_20": np.where(listed, 0.02, np.nan), "vol_60": np.where(listed, 0.01, np.nan)}
    out = features.copy()
    _move_vix(data, out, 0, rebuilt)  # every equity's 20-bar volatility doubled
    np.testing.assert_allclose(out[:, :, 2] / LOADER_SCALE["vix_level"], 32.0, rtol=1e-6)
