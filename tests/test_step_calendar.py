"""Crypto next to equities: the volatility a policy observes and the baselines size by is the volatility
of the moves one simulator step carries (``envs.step_features``), not of crypto's own 1-day moves.

The mixed store (``synthetic_store``: 12 equities on business days, 2 crypto pairs on 7-day weeks) is
stepped on the equity calendar, so a crypto step from Friday to Monday holds three days of moves. The
expected values below are computed independently of the loader: from the store's bars alone, with
pandas, at the equity calendar's labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.evaluation.kelly_lite import KellyLiteConfig, kelly_fraction, trailing_sigma
from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import load_market_data
from raytrade.envs.step_features import step_forecasts, step_kelly
from raytrade.replay import read_frame
from raytrade.replay.features.config import FeatureConfig


def _step_closes(store: Path) -> pd.DataFrame:
    """Every asset's closes at the equity calendar's labels (NaN: no bar there), naive UTC index."""
    bars = read_frame(store, "bars", columns=["symbol", "ts", "close", "asset_class"])
    labels = pd.DatetimeIndex(np.unique(bars.loc[bars["asset_class"] == "equity", "ts"]))
    close = bars.pivot(index="ts", columns="symbol", values="close").reindex(index=labels)
    close.index = close.index.tz_convert(None)
    return close


def _step_vol_20(store: Path, data: MarketData) -> np.ndarray:
    """``[T, N]``: std of the last 20 one-step log returns (ingest's window: at least 10) of each
    asset's closes at the equity calendar's labels, from the store's first equity label on."""
    bars = read_frame(store, "bars", columns=["symbol", "ts", "close", "asset_class"])
    labels = pd.DatetimeIndex(np.unique(bars.loc[bars["asset_class"] == "equity", "ts"]))
    close = bars.pivot(index="ts", columns="symbol", values="close").reindex(index=labels)
    vol = np.log(close).diff().rolling(20, min_periods=10).std()
    vol.index = vol.index.tz_convert(None)
    return vol.reindex(index=pd.DatetimeIndex(data.ts), columns=list(data.symbols)).to_numpy()


def test_crypto_vol_20_is_the_volatility_of_one_simulator_step(synthetic_store: Path) -> None:
    data = load_market_data(synthetic_store, "validation")  # rolling windows reach back before it
    crypto = np.array([c == "crypto" for c in data.asset_class])
    assert crypto.any() and (~crypto).any()
    vol_20 = data.features[:, :, data.feature_names.index("vol_20")].astype(np.float64)
    expected = _step_vol_20(synthetic_store, data)
    np.testing.assert_allclose(vol_20, expected, rtol=1e-5)
    # the simulator's own per-step moves: a Friday -> Monday crypto step is a 3-day move
    step = np.log(data.close[1:] / data.close[:-1])
    gap = np.diff(data.ts).astype("timedelta64[D]").astype(int)
    weekend = step[gap == 3][:, crypto].std(axis=0)
    weekday = step[gap == 1][:, crypto].std(axis=0)
    assert (weekend > 1.3 * weekday).all()  # the mismatch is real: sqrt(3) in expectation


def test_stored_crypto_vol_20_measures_one_day_moves_so_the_loader_must_restep(synthetic_store: Path) -> None:
    """What the test above guards against: the features table keeps crypto on its own 7-day calendar,
    whose volatility is smaller than the per-step one by about sqrt(7/5)."""
    data = load_market_data(synthetic_store, "validation")
    stored = read_frame(synthetic_store, "features", columns=["symbol", "ts", "vol_20", "asset_class"])
    stored = stored[stored["asset_class"] == "crypto"].assign(ts=lambda f: f["ts"].dt.tz_convert(None))
    wide = stored.pivot(index="ts", columns="symbol", values="vol_20")
    crypto = [j for j, c in enumerate(data.asset_class) if c == "crypto"]
    daily = wide.reindex(index=pd.DatetimeIndex(data.ts), columns=[data.symbols[j] for j in crypto])
    per_step = _step_vol_20(synthetic_store, data)[:, crypto]
    ratio = np.nanmedian(per_step / daily.to_numpy())
    assert 1.1 < ratio < 1.3  # ~sqrt(7/5) = 1.18


def test_inverse_vol_sizes_crypto_by_its_per_step_volatility(synthetic_store: Path) -> None:
    data = load_market_data(synthetic_store, "validation")
    ctx = baseline_context("inverse_vol", data)
    t = np.arange(data.n_steps)
    weights = baseline_decision(
        ctx, t, np.ones(data.n_steps, dtype=bool), data.listed, np.zeros(data.listed.shape)
    ).allocation
    vol = _step_vol_20(synthetic_store, data)
    ok = data.listed & np.isfinite(vol) & (vol > 0)
    inverse = np.where(ok, 1.0 / np.where(ok, vol, 1.0), 0.0)
    expected = inverse / inverse.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-9)


def test_observed_kelly_lite_is_the_gate_sizing_on_the_stepping_calendar(synthetic_store: Path) -> None:
    """The observed ``kelly_lite`` equals the replica's sizing (``trailing_sigma`` over the closes the
    simulator steps, the closes before the split included) wherever the store's gate is open."""
    data = load_market_data(synthetic_store, "validation")
    names = data.feature_names
    rules = KellyLiteConfig()
    sigma = trailing_sigma(
        data.close, data.listed, rules.kelly_sigma_closes, data.close_before, data.listed_before
    )
    fc_mean = data.features[:, :, names.index("fc_mean")].astype(np.float64)
    gate_open = data.features[:, :, names.index("fc_gate_open")] > 0.5
    expected = kelly_fraction(np.abs(fc_mean), sigma, rules)
    observed = data.features[:, :, names.index("kelly_lite")].astype(np.float64)
    crypto = np.array([c == "crypto" for c in data.asset_class])[None, :]
    sized = gate_open & np.isfinite(sigma) & crypto
    assert sized.sum() > 20
    np.testing.assert_allclose(observed[sized], expected[sized], rtol=1e-5)
    assert (observed[~gate_open & data.listed] == 0).all()


def test_step_kelly_uses_the_sigma_of_step_returns() -> None:
    """Uncapped sizing (a small edge): ``step_kelly`` on crypto closes taken at
    business-day labels equals the replica's ``kelly_fraction`` with ``trailing_sigma`` of those
    closes, and differs from the sizing by 1-day moves."""
    rng = np.random.default_rng(7)
    days = pd.date_range("2024-01-01", periods=120, freq="D")
    daily = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (len(days), 2)), axis=0))
    labels = days.dayofweek < 5
    close, ts = daily[labels], days[labels].to_numpy()
    listed = np.ones(close.shape, dtype=bool)
    fc_mean = np.full(close.shape, 1e-4)  # 0.2 * 1e-4 / sigma^2: mostly under the 0.15 cap
    rules = FeatureConfig()
    kelly = step_kelly(close, listed, ts, ("AUSD", "BUSD"), fc_mean, listed, rules)
    sigma = trailing_sigma(close, listed, rules.kelly_sigma_closes)
    expected = kelly_fraction(np.abs(fc_mean), sigma, KellyLiteConfig())
    known = np.isfinite(sigma)
    assert (expected[known] < rules.kelly_cap).sum() > 100  # mostly uncapped: sigma decides
    np.testing.assert_allclose(kelly[known], expected[known], rtol=1e-9)
    one_day = step_kelly(
        daily,
        np.ones(daily.shape, bool),
        days.to_numpy(),
        ("AUSD", "BUSD"),
        np.full(daily.shape, 1e-4),
        np.ones(daily.shape, bool),
        rules,
    )
    assert np.nanmedian(one_day[labels] / kelly) > 1.1


def test_crypto_baseline_forecast_is_of_one_simulator_step(synthetic_store: Path) -> None:
    """The baseline forecaster's mean and scale of crypto observed next to equities are those of its
    per-step returns (EWMAs of the log returns between the equity labels, written out here with
    pandas), not of its 1-day returns: ``kelly_lite = |fc_mean| / sigma_step^2`` and the edge gate
    compare one step's move with one step's variance and cost."""
    data = load_market_data(synthetic_store, "validation")
    names, cfg = data.feature_names, FeatureConfig()
    crypto = [j for j, c in enumerate(data.asset_class) if c == "crypto"]
    r1 = np.log(_step_closes(synthetic_store)).diff()
    drift = cfg.forecast_drift_shrink * r1.ewm(halflife=cfg.forecast_halflife, min_periods=5).mean()
    scale = np.sqrt(r1.ewm(halflife=cfg.forecast_vol_halflife, min_periods=5).var())
    at = {"index": pd.DatetimeIndex(data.ts), "columns": [data.symbols[j] for j in crypto]}
    expected_mean = np.expm1(drift).reindex(**at).to_numpy()
    expected_std = scale.reindex(**at).to_numpy()
    fc_mean = data.features[:, crypto, names.index("fc_mean")].astype(np.float64)
    fc_std = data.features[:, crypto, names.index("fc_std")].astype(np.float64)
    np.testing.assert_allclose(fc_mean, expected_mean, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(fc_std, expected_std, rtol=1e-4)
    # the edge gate compares that per-step edge: an open gate has a per-step edge over the threshold
    gate = data.features[:, crypto, names.index("fc_gate_open")] > 0.5
    threshold = max(cfg.expected_cost_bps_crypto + cfg.edge_cost_margin_bps, cfg.edge_floor_bps_crypto)
    assert gate.sum() > 20
    assert (np.abs(expected_mean[gate]) * 1e4 >= threshold * (1 - 1e-6)).all()


def test_imported_crypto_forecast_is_restated_for_the_step_length() -> None:
    """An imported 1-day forecast of crypto stepped on business days is restated as a sum of ``d``
    daily returns, ``d`` the mean length in days of the last ``kelly_sigma_closes - 1`` steps (the
    steps the sizing sigma spans): mean x d, std x sqrt(d), quantiles about the mean x sqrt(d); a gate
    shut by the edge alone reopens where d x edge reaches the threshold, kelly_lite is sized from it."""
    rng = np.random.default_rng(11)
    days = pd.date_range("2024-01-01", periods=90, freq="D")
    labels = days[days.dayofweek < 5]
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (len(labels), 2)), axis=0))
    listed = np.ones(close.shape, dtype=bool)
    shape, mean, std = close.shape, 0.0035, 0.02  # 35 bps: under crypto's 40 bps edge threshold
    stored = {
        "fc_mean": np.full(shape, mean),
        "fc_std": np.full(shape, std),
        "fc_skew": np.full(shape, 0.3),
        **{f"fc_{q}": np.full(shape, mean + z * std) for q, z in (("q05", -1.6), ("q25", -0.7),
           ("q50", 0.0), ("q75", 0.7), ("q95", 1.6))},
        "fc_calib_resid": np.full(shape, -0.02),
        "fc_edge_bps": np.full(shape, mean * 1e4),
        "fc_edge_threshold_bps": np.full(shape, 40.0),
        "fc_n_sources": np.ones(shape),
        "fc_consensus_ok": np.ones(shape),
        "fc_gate_open": np.zeros(shape),
        "fc_min_move_adaptive": np.full(shape, 0.001),
        "kelly_lite": np.zeros(shape),
        "fc_fallback": np.zeros(shape),  # imported everywhere
        "fc_gate_reason": np.array([["edge", "consensus"]] * shape[0], dtype=object),
        "spread_bps": np.full(shape, 5.0),
        "dollar_volume_20": np.full(shape, 1e9),
    }  # fmt: skip
    cfg = FeatureConfig()
    own_bar = np.array([np.timedelta64(1, "D")] * 2)
    out = step_forecasts(close, listed, labels.to_numpy(), ("AUSD", "BUSD"), stored, own_bar, cfg)
    k = cfg.kelly_sigma_closes - 1
    t = np.arange(len(labels))
    spanned = (labels[t] - labels[np.maximum(t - k, 0)]).days.to_numpy()
    d = (spanned / np.minimum(np.maximum(t, 1), k))[:, None] * np.ones((1, 2))
    d[0] = np.nan  # no step before the first label
    assert np.nanmin(d[k:]) == pytest.approx(8 / 6) and np.nanmax(d) == pytest.approx(10 / 6)  # 1-2 weekends
    np.testing.assert_allclose(out["fc_mean"], mean * d, rtol=1e-12)
    np.testing.assert_allclose(out["fc_std"], std * np.sqrt(d), rtol=1e-12)
    np.testing.assert_allclose(out["fc_q05"], mean * d - 1.6 * std * np.sqrt(d), rtol=1e-12)
    np.testing.assert_allclose(out["fc_skew"], 0.3 / np.sqrt(d), rtol=1e-12)
    np.testing.assert_allclose(out["fc_edge_bps"], mean * d * 1e4, rtol=1e-12)
    assert (out["fc_calib_resid"] == -0.02).all() and (out["fc_fallback"] == 0).all()
    expected_gate = (mean * d * 1e4 >= 40.0) & np.array([[True, False]])  # consensus stays shut
    assert expected_gate[:, 0].sum() > 40
    np.testing.assert_array_equal(out["fc_gate_open"] > 0.5, expected_gate)
    sigma = trailing_sigma(close, listed, cfg.kelly_sigma_closes)
    sized = expected_gate & np.isfinite(sigma)
    kelly = kelly_fraction(mean * d, sigma, KellyLiteConfig())
    np.testing.assert_allclose(out["kelly_lite"][sized], kelly[sized], rtol=1e-9)
    assert (out["kelly_lite"][~expected_gate] == 0).all()
