"""Close-derived features on the calendar the simulator steps on: one statement, for the loader,
serving and stress scenarios alike.

Why
---
Ingest computes every asset class on its own calendar (``replay.features.wide``): crypto's
``vol_20`` is the volatility of 1-day moves over 7-day weeks. In a universe with equities the
simulator steps on the equity calendar (``envs.replay_loader``), so one crypto step from Friday to
Monday carries three days of moves and a step carries 7/5 of a day on average. Sizing crypto by its
stored 1-day volatility then reads a volatility about ``sqrt(7/5)`` (``sqrt(3)`` on Mondays) smaller
than the moves a decision actually holds: ``inverse_vol`` overweights crypto, and the observed risk
(``vol_20``, ``var_95_60``, ``kelly_lite``, the regime) understates it.

The rule
--------
An asset observed on a calendar other than its own (crypto in a universe with equities) gets its
:data:`STEP_FEATURES` recomputed from its closes at the stepping calendar's labels, with the very
functions ingest runs (``replay.features.returns.returns_group``, ``regime.regime_group``,
``risk.risk_group``), so every one-bar return inside them is a return the simulator (and the live
loop, which serves through the same loader) experiences per decision step:

* :data:`PRICE_FEATURES`: returns, volatility, skew, drawdown, VaR, volatility regime, drawdown
  trigger, from closes alone;
* forecasts (:data:`FORECAST_FEATURES`): the baseline forecaster's (``fc_fallback``) is recomputed
  from the step closes (:func:`baseline_forecast_features`, the function ``envs.stress_features``
  runs on stressed closes): its drift, scale, quantiles, calibration, edge, consensus and gate are
  those of one step's return, as the sizing's sigma is. An imported forecast (another model's, of one
  bar of the asset's own calendar) cannot be recomputed: it is restated for the step's length
  (:func:`imported_step_forecast`): a sum of ``d`` independent one-bar returns, mean x d, std x
  sqrt(d), quantiles about the mean x sqrt(d), skew / sqrt(d), its edge-only gate re-decided. ``d``
  is the mean length, in own bars, of the last ``kelly_sigma_closes - 1`` steps (7/5 days on average
  for daily crypto on business days, 8/6 to 10/6 in a window): the steps the sigma it is divided by
  spans, so ``|fc_mean| / sigma^2`` keeps its one-bar value and a Friday is not sized at three days
  of edge over an average step's variance; past labels only, so the live bar needs no future one;
* ``kelly_lite``: ``min(cap, max(0, scale x |fc_mean| / sigma^2))`` with ``sigma`` the std of the
  last ``kelly_sigma_closes`` step closes' simple returns (the sigma ``envs.gate`` and the
  ``kelly_lite`` baseline already use), the per-step ``fc_mean`` and ``fc_gate_open`` (0 where shut).

Measured on ``synthetic_store``'s mixed universe (2 crypto pairs, 2 years): the stored 1-day
baseline forecast opens crypto's gate on 7 % / 20 % of bars (mean ``kelly_lite`` 0.011 / 0.030); the
per-step one on 10 % / 26 % (0.015 / 0.039), its ``|fc_mean|`` about 1.15x larger.

Kept as stored: ``fc_recal_q*`` (walk-forward fits on the stored 1-day quantiles), an imported
forecast's ``fc_calib_resid`` (its coverage of 1-bar outcomes), ``fc_min_move_adaptive``,
``fc_n_sources`` and ``fc_consensus_ok`` (a consensus shut by a source's small move stays shut: the
sources' own means are not stored), ``atr_pct_14`` (a bar range, needs highs and lows),
``spread_bps``, ``dollar_volume_20`` (one bar's traded notional: what a fill at one bar can take),
cross-asset and macro columns. Nothing is stored: the features table keeps each class on its own
calendar (right for a crypto-only universe, which steps on it), and the loader recomputes on every
load, so a store built before this rule needs no rebuild and is never read half one way.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.features.build import forecast_features
from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.recalibration import RECAL_COLUMNS
from raytrade.replay.features.regime import cluster_frame, regime_group
from raytrade.replay.features.returns import log_returns, returns_group
from raytrade.replay.features.risk import risk_group
from raytrade.replay.features.wide import PRICE_COLUMNS, Panel
from raytrade.replay.schema import FEATURES_SCHEMA, FORECAST_QUANTILE_COLUMNS

PRICE_FEATURES: Final[tuple[str, ...]] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_20",
    "vol_60",
    "skew_60",
    "drawdown",
    "drawdown_velocity",
    "var_95_60",
    "vol_regime_code",
    "dd_trigger_state",
)
"""Feature columns that are functions of closes alone (rebuilt on the stepping calendar, and from
stressed closes by ``envs.stress_features``)."""
FORECAST_FEATURES: Final[tuple[str, ...]] = (
    *(
        field.name
        for field in FEATURES_SCHEMA
        if field.name.startswith("fc_") and field.name not in RECAL_COLUMNS and str(field.type) != "string"
    ),
    "kelly_lite",
)
"""Numeric forecast columns ``replay.features.build.forecast_features`` writes, and the store's
``kelly_lite`` sized from them: what the baseline forecaster's cells get recomputed (on the stepping
calendar here, from stressed closes in ``envs.stress_features``)."""
STEP_FEATURES: Final[tuple[str, ...]] = (*PRICE_FEATURES, *FORECAST_FEATURES)
"""Feature columns an asset observed off its own calendar gets restated on the stepping one."""
STEP_FORECAST_INPUTS: Final[tuple[str, ...]] = (
    *FORECAST_FEATURES,
    "fc_gate_reason",
    "spread_bps",
    "dollar_volume_20",
)
"""Stored columns :func:`step_forecasts` reads."""


def frame_of(values: np.ndarray, ts: np.ndarray, symbols: tuple[str, ...]) -> pd.DataFrame:
    """``values [T, N]`` as a wide frame (index ``ts``, columns ``symbols``)."""
    return pd.DataFrame(values, index=pd.DatetimeIndex(ts), columns=list(symbols))


def panel_of(
    close: np.ndarray, listed: np.ndarray, ts: np.ndarray, symbols: tuple[str, ...], asset_class: str
) -> Panel:
    """A ``Panel`` of closes where ``listed`` (no other bar column), as ``to_panel`` builds one."""
    raw = {name: frame_of(np.full(close.shape, np.nan), ts, symbols) for name in PRICE_COLUMNS}
    raw["close"] = frame_of(np.where(listed, close, np.nan), ts, symbols)
    return Panel(asset_class, raw, frame_of(listed.astype(bool), ts, symbols))


def price_features(
    close: np.ndarray, listed: np.ndarray, ts: np.ndarray, symbols: tuple[str, ...], config: FeatureConfig
) -> dict[str, np.ndarray]:
    """``PRICE_FEATURES`` ``[T, N]`` (store units, NaN where unknown) of closes where ``listed``, one
    bar per row of ``ts``.

    ``close`` may hold filler prices where ``listed`` is False; they are dropped, as ingest never sees
    a bar there.
    """
    panel = panel_of(close, listed, ts, symbols, "equity")  # no price feature reads the class
    ret = returns_group(panel, config)
    regime = regime_group(panel, config, ret["vol_20"])
    no_forecast = frame_of(np.zeros(close.shape), ts, symbols)
    risk = risk_group(panel, config, no_forecast, no_forecast.astype(bool), regime["drawdown"])
    groups = {**ret, **regime, "dd_trigger_state": risk["dd_trigger_state"]}
    return {name: groups[name].to_numpy(dtype=np.float64) for name in PRICE_FEATURES}


def sector_momentum(
    close: np.ndarray,
    listed: np.ndarray,
    ts: np.ndarray,
    symbols: tuple[str, ...],
    asset_class: tuple[str, ...],
    ret_20: np.ndarray,
    config: FeatureConfig,
) -> np.ndarray:
    """``sector_momentum`` ``[T, N]`` as ingest computes it (``replay.features.build``): the mean
    ``ret_20`` of the assets of one class in the same ``corr_cluster``, the clusters recomputed from
    ``close`` where ``listed``, class by class, over these assets only; NaN where not clustered."""
    out = np.full(close.shape, np.nan)
    classes = np.asarray(asset_class)
    for name in np.unique(classes):
        cols = np.flatnonzero(classes == name)
        panel = panel_of(close[:, cols], listed[:, cols], ts, tuple(symbols[j] for j in cols), str(name))
        clusters = cluster_frame(log_returns(panel.filled("close")), panel.present, config).to_numpy()
        returns = ret_20[:, cols]
        known = np.isfinite(returns)
        block = np.full(clusters.shape, np.nan)
        for cluster in np.unique(clusters[np.isfinite(clusters)]):
            members = clusters == cluster
            counted = members & known
            count = counted.sum(axis=1)
            total = np.where(counted, returns, 0.0).sum(axis=1)
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            block = np.where(members, mean[:, None], block)
        out[:, cols] = block
    return out


def step_kelly(
    close: np.ndarray,
    listed: np.ndarray,
    ts: np.ndarray,
    symbols: tuple[str, ...],
    fc_mean: np.ndarray,
    gate_open: np.ndarray,
    config: FeatureConfig,
) -> np.ndarray:
    """``kelly_lite`` ``[T, N]`` as ingest sizes it (``replay.features.risk``), from ``fc_mean`` and
    ``gate_open`` (bool) and the sigma of the closes at ``ts``; NaN where not ``listed``."""
    panel = panel_of(close, listed, ts, symbols, "crypto")
    no_drawdown = frame_of(np.zeros(close.shape), ts, symbols)  # kelly_lite does not read it
    risk = risk_group(
        panel, config, frame_of(fc_mean, ts, symbols), frame_of(gate_open, ts, symbols), no_drawdown
    )
    return np.where(listed, risk["kelly_lite"].to_numpy(dtype=np.float64), np.nan)


def baseline_forecast_features(
    close: np.ndarray,
    listed: np.ndarray,
    ts: np.ndarray,
    symbols: tuple[str, ...],
    asset_class: tuple[str, ...],
    spread_bps: np.ndarray,
    dollar_volume: np.ndarray,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """``FORECAST_FEATURES`` ``[T, N]`` (store units; NaN where not ``listed``) of the baseline
    forecaster alone (no imported source) on closes where ``listed``, one bar per row of ``ts``, per
    asset class as ingest computes them. ``spread_bps``: the store's spreads (NaN: no quote);
    ``dollar_volume``: the 20-bar average traded notional."""
    out = {name: np.full(close.shape, np.nan) for name in FORECAST_FEATURES}
    for cls in sorted(set(asset_class)):
        cols = [j for j, c in enumerate(asset_class) if c == cls]
        names = tuple(symbols[j] for j in cols)
        panel = panel_of(close[:, cols], listed[:, cols], ts, names, cls)
        r1 = returns_group(panel, config)["ret_1"]
        spread, volume = (frame_of(a[:, cols], ts, names) for a in (spread_bps, dollar_volume))
        fc = forecast_features(panel, config, r1, spread, volume, None)
        no_drawdown = frame_of(np.zeros((close.shape[0], len(cols))), ts, names)
        risk = risk_group(panel, config, fc["fc_mean"], fc["fc_gate_open"], no_drawdown)
        fc["kelly_lite"] = risk["kelly_lite"]
        for name in FORECAST_FEATURES:
            out[name][:, cols] = fc[name].to_numpy(dtype=np.float64)
    return {name: np.where(listed, values, np.nan) for name, values in out.items()}


def own_bars_per_step(ts: np.ndarray, own_bar: np.ndarray, window: int) -> np.ndarray:
    """``[T, N]``: the mean length of the last ``window`` steps of the calendar ``ts`` (fewer at its
    start; NaN on its first row), in bars of each asset's own calendar (``own_bar [N]``, a
    ``timedelta64``: one day for daily crypto). Past labels only: the sigma ``kelly_lite`` divides by
    spans the same ``window`` steps (``kelly_sigma_closes - 1``)."""
    stamps = np.asarray(ts, dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    gaps = pd.Series(np.diff(stamps)).rolling(window, min_periods=1).mean().to_numpy()
    mean_gap = np.concatenate([[np.nan], gaps])
    bar = np.asarray(own_bar, dtype="timedelta64[ns]").astype(np.int64).astype(np.float64)
    return mean_gap[:, None] / bar[None, :]


def imported_step_forecast(
    stored: dict[str, np.ndarray], reason: np.ndarray, days: np.ndarray
) -> dict[str, np.ndarray]:
    """An imported forecast of one own-calendar bar restated for a step of ``days`` such bars
    ``[T, N]`` (:func:`own_bars_per_step`), as the sum of ``days`` independent one-bar returns with
    its distribution: ``fc_mean x d``, ``fc_std x sqrt(d)``, ``fc_skew / sqrt(d)``, each quantile
    ``d x mean + sqrt(d) x (q - mean)`` (location and scale; the shape is kept, the tails are not
    re-derived), ``fc_edge_bps = |fc_mean|`` in bps. The gate (``fc_gate_open``, 0/1, NaN: no row) is
    re-decided only where ``reason`` (the stored ``fc_gate_reason``) is ``edge`` alone: open when the
    restated edge reaches the stored ``fc_edge_threshold_bps``; a gate shut for any other reason stays
    shut (consensus included: the sources' own means are not in the features table). The other
    columns of ``stored`` (store units ``[T, N]``) are returned as stored."""
    d = np.asarray(days, dtype=np.float64)
    root = np.sqrt(d)
    mean = stored["fc_mean"]
    out = dict(stored)
    out["fc_mean"] = mean * d
    out["fc_std"] = stored["fc_std"] * root
    out["fc_skew"] = stored["fc_skew"] / root
    for q in FORECAST_QUANTILE_COLUMNS:
        out[f"fc_{q}"] = mean * d + (stored[f"fc_{q}"] - mean) * root
    out["fc_edge_bps"] = np.abs(out["fc_mean"]) * 1e4
    with np.errstate(invalid="ignore"):
        reopened = (np.asarray(reason, dtype=object) == "edge") & (
            out["fc_edge_bps"] >= stored["fc_edge_threshold_bps"]
        )
    gate = stored["fc_gate_open"]
    out["fc_gate_open"] = np.where(np.isfinite(gate), np.where(reopened, 1.0, gate), np.nan)
    return out


def step_forecasts(
    close: np.ndarray,
    listed: np.ndarray,
    ts: np.ndarray,
    symbols: tuple[str, ...],
    stored: dict[str, np.ndarray],
    own_bar: np.ndarray,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """``FORECAST_FEATURES`` ``[T, N]`` (store units) of assets observed off their own calendar, on
    the stepping calendar ``ts`` (module docstring), NaN where not ``listed``. ``stored`` holds the
    store's :data:`STEP_FORECAST_INPUTS` at those bars (``fc_fallback`` 0/1/NaN, ``fc_gate_reason``
    text): where ``fc_fallback`` is 1 the baseline forecaster is recomputed from the step closes
    (:func:`baseline_forecast_features`); elsewhere the imported forecast is restated for the step's
    length (:func:`imported_step_forecast`). ``kelly_lite`` is then sized from the result's
    ``fc_mean`` and gate (:func:`step_kelly`)."""
    crypto = tuple("crypto" for _ in symbols)  # off-calendar assets: crypto (its threshold and cap)
    spread, volume = stored["spread_bps"], np.nan_to_num(stored["dollar_volume_20"], nan=0.0)
    baseline = baseline_forecast_features(close, listed, ts, symbols, crypto, spread, volume, config)
    days = own_bars_per_step(ts, own_bar, config.kelly_sigma_closes - 1)
    numeric = {name: stored[name] for name in FORECAST_FEATURES}
    imported = imported_step_forecast(numeric, stored["fc_gate_reason"], days)
    is_baseline = np.nan_to_num(np.asarray(stored["fc_fallback"], dtype=np.float64), nan=0.0) > 0.5
    out = {name: np.where(is_baseline, baseline[name], imported[name]) for name in FORECAST_FEATURES}
    gate = np.nan_to_num(out["fc_gate_open"], nan=0.0) > 0.5
    out["kelly_lite"] = step_kelly(close, listed, ts, symbols, out["fc_mean"], gate, config)
    return {name: np.where(listed, values, np.nan) for name, values in out.items()}
