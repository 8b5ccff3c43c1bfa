"""Features recomputed from stressed prices, with the ingest feature functions.

A stress scenario changes prices; a policy (and the ``kelly_lite`` baseline it is compared with) must
see the stressed market it is scored on, so every feature column that ingest derives from closes
alone is rebuilt from the new closes. The values come from the very functions ingest runs
(``replay.features.returns.returns_group``, ``replay.features.regime.regime_group``,
``replay.features.risk.risk_group``, ``replay.features.build.forecast_features``), fed a panel of the
warm-up history followed by the stressed rows, so rolling windows and EWMAs (60-bar volatility, the
252-bar regime median, the running drawdown peak, the forecaster's EWMA drift and scale, its
120-bar residual quantiles, the 60-forecast calibration window) see the bars before the window
exactly as ingest did.

Design decisions
----------------
* Recomputed (``PRICE_FEATURES``): ``ret_1``, ``ret_5``, ``ret_20``, ``vol_20``, ``vol_60``,
  ``skew_60``, ``drawdown``, ``drawdown_velocity``, ``var_95_60``, ``vol_regime_code`` and
  ``dd_trigger_state`` (a function of the drawdown).
* Recomputed where the baseline forecaster made the stored forecast (``FORECAST_FEATURES``, on the
  cells where ``MarketData.forecast_fallback`` is True, i.e. the store's ``fc_fallback``): the
  baseline's distribution (``fc_mean``, ``fc_std``, ``fc_skew``, ``fc_q05 .. fc_q95``), its
  calibration (``fc_calib_resid``), edge, consensus and gate (``fc_edge_bps``, ``fc_consensus_ok``,
  ``fc_gate_open``: history, the scenario's spread against its cap, consensus, edge),
  ``fc_min_move_adaptive`` and the store's sizing ``kelly_lite`` (``|fc_mean|`` over the stressed
  closes' sigma, 0 where the gate is shut), from ``forecast_features`` with no imported source. The
  spread the gate and the adaptive threshold read is the observed ``spread_bps`` column (the store's
  value, NaN where it had none, widened by the scenario) where the data carries it, else the spread
  the simulator charges. ``fc_edge_threshold_bps``, ``fc_n_sources`` and ``fc_fallback`` come out as
  stored (constant for the baseline).
* Kept where the forecast was imported (``forecast_fallback`` False, a ``forecasts`` table source):
  every ``FORECAST_FEATURES`` column, ``kelly_lite`` included, is the stored value (for a bootstrap,
  the drawn row's). An imported forecast is another model's output and cannot be recomputed from
  prices: in a crash such a row still shows the calm forecast (and gate, sized with the calm sigma).
  A bootstrap row carries its drawn row's imported forecast, a forecast of that historical bar's next
  return, which the path follows inside a block but not across a block boundary. Data with no
  ``forecast_fallback`` (None: hand-built) keeps every forecast. A baseline row within
  ``calibration_window`` (or the adaptive gate's 60-bar hit-rate window) after imported rows of the
  same symbol scores the baseline's own past forecasts there, where ingest scored the imported ones.
* Rescaled: ``atr_pct_14`` needs highs and lows, which ``MarketData`` does not carry; on every
  rebuilt row it is multiplied by ``vol_20' / vol_20`` (rebuilt over stored 20-bar volatility, where
  both are finite and the stored one is > 0), so a bar range widens with the volatility around it and
  relaxes as the 20-bar window leaves the shock. Kept when ``vol_20`` is not observed.
  ``spread_bps`` is the scenario's (``envs.scenarios``: a crisis window multiplies it by
  ``spread_mult``; a bootstrap row carries its drawn row's).
* Moved with the market: the volatility index, which ingest takes from a series ``MarketData`` does
  not carry or from every equity of the store, so it cannot be rebuilt here: on each rebuilt row,
  ``vix_level`` is multiplied by the median rebuilt ``vol_20`` over the median stored one, and
  ``vix_term`` by the ratio of the median ``vol_20`` to the median ``vol_60``, rebuilt over stored
  (medians over the listed equities; a crypto-only universe's coins), so a crash shows a volatility
  index that rose with it. Where the store's ``vix`` is ingest's proxy (the median annualised
  ``vol_20`` of the equities, no ``vix`` series) and the data holds every equity of the store, that is
  the proxy ingest computes from the stressed closes; a real ``vix`` series is moved as much as the
  stocks' volatility moved (a model: implied volatility following realised). Each needs the stored
  ``vol_20`` observed (and ``vol_60`` for the term ratio), else it keeps its stored value; a missing
  cell stays missing. ``sector_momentum`` (the mean ``ret_20`` of a correlation cluster) is rebuilt
  from the stressed closes (:func:`envs.step_features.sector_momentum`: clusters and returns), over
  the data's assets: what ingest computes where the data holds every asset of the store's class.
  Before 2026-12-05 these kept their calm values through a crash.
* Kept as they are (the row's stored value; for a bootstrap, the drawn row's): everything else.
  ``fc_recal_q*`` (walk-forward MLP fits on the stored quantiles, seconds per build, not redone per
  draw: they stay the recalibration of the unshocked forecast), ``concentration`` (a share of the
  whole store's asset class, which the data may hold only part of) and ``curve_slope`` (a rates
  series the scenario does not model).
* Values go through the loader's own post-processing: its scale per column and NaN -> 0 (flagged in
  ``feature_missing``); a recomputed feature of a cell with no bar (``listed`` False: before the
  listing, after the delisting, a halt) is NaN, as ingest writes no row there, so a stressed halt
  stays a cell with no values.
* The panel steps on the ``MarketData`` calendar. For equities that is ingest's calendar; a crypto
  asset in a mixed universe is observed on equity days, and the loader already computes its price
  features, its baseline forecasts and ``kelly_lite`` on them (``envs.step_features``, whose
  ``baseline_forecast_features`` this module runs), so a rebuild matches the loaded values; its
  imported forecasts are kept as loaded (restated for the step's length). Forecasts are computed per
  asset class (edge threshold and spread cap differ).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import _SCALED as LOADER_SCALE
from raytrade.envs.step_features import (
    FORECAST_FEATURES,
    PRICE_FEATURES,
    baseline_forecast_features,
    price_features,
    sector_momentum,
)
from raytrade.replay.features.config import FeatureConfig


def _store_spread(data: MarketData) -> np.ndarray:
    """The store's spread in bps ``[T, N]`` (NaN: no quote) where ``data`` observes ``spread_bps``,
    else the spread the simulator charges."""
    if "spread_bps" not in data.feature_names:
        return np.asarray(data.spread_bps, dtype=np.float64)
    k = data.feature_names.index("spread_bps")
    values = data.features[:, :, k].astype(np.float64) / LOADER_SCALE["spread_bps"]
    return values if data.feature_missing is None else np.where(data.feature_missing[:, :, k], np.nan, values)


def with_stressed_features(
    data: MarketData,
    from_row: int,
    warmup: MarketData | None = None,
    config: FeatureConfig | None = None,
) -> MarketData:
    """``data`` with its features on rows ``>= from_row`` rebuilt from its prices: the
    ``PRICE_FEATURES`` columns on every cell, the ``FORECAST_FEATURES`` columns on the cells whose
    stored forecast is the baseline forecaster's (``data.forecast_fallback``), ``atr_pct_14`` rescaled.

    ``warmup`` (same assets, e.g. the store's history up to the window) supplies the bars strictly
    before ``data.ts[0]`` that rolling windows and EWMAs need; without it they start at ``data``'s
    first row. Rows before ``from_row``, imported forecasts and other columns are returned unchanged.
    """
    if not 0 <= from_row <= data.n_steps:
        raise ValueError(f"from_row={from_row!r} must be in [0, {data.n_steps}]")
    names = data.feature_names
    price_cols = [(k, name) for k, name in enumerate(names) if name in PRICE_FEATURES]
    baseline = None if data.forecast_fallback is None else np.asarray(data.forecast_fallback[from_row:], bool)
    forecast_cols = [(k, name) for k, name in enumerate(names) if name in FORECAST_FEATURES]
    if baseline is None or not baseline.any():
        forecast_cols = []
    momentum_col = [(names.index(name), name) for name in ("sector_momentum",) if name in names]
    if not (price_cols or forecast_cols or momentum_col) or from_row == data.n_steps:
        return data
    if warmup is not None and warmup.symbols != data.symbols:
        raise ValueError("warmup must hold the same assets, in the same order, as data")
    before = np.zeros(0, dtype=bool) if warmup is None else warmup.ts < data.ts[0]

    def joined(of_warmup: np.ndarray | None, of_data: np.ndarray) -> np.ndarray:
        return of_data if of_warmup is None else np.concatenate([of_warmup[before], of_data])

    close = joined(None if warmup is None else warmup.close, data.close)
    listed = joined(None if warmup is None else warmup.listed, data.listed)
    ts = joined(None if warmup is None else warmup.ts, data.ts)
    cfg = config or FeatureConfig()
    skip = close.shape[0] - data.n_steps + from_row
    features = data.features.copy()
    missing = None if data.feature_missing is None else data.feature_missing.copy()
    if price_cols or momentum_col:
        values = price_features(close, listed, ts, data.symbols, cfg)
        if "atr_pct_14" in names and "vol_20" in names:
            stored = data.features[from_row:, :, names.index("vol_20")] / LOADER_SCALE.get("vol_20", 1.0)
            rebuilt = values["vol_20"][skip:]
            usable = np.isfinite(rebuilt) & np.isfinite(stored) & (stored > 0)
            ratio = np.where(usable, rebuilt / np.where(usable, stored, 1.0), 1.0)
            features[from_row:, :, names.index("atr_pct_14")] *= ratio
        rows = {k: np.where(listed, v, np.nan)[skip:] for k, v in values.items()}  # no bar: no value
        _write(features, missing, from_row, price_cols, rows, None)
        _move_vix(data, features, from_row, rows)
        if momentum_col:
            ret_20 = np.where(listed, values["ret_20"], np.nan)
            momentum = sector_momentum(close, listed, ts, data.symbols, data.asset_class, ret_20, cfg)
            _write(features, missing, from_row, momentum_col, {"sector_momentum": momentum[skip:]}, None)
    if forecast_cols:
        spread = joined(None if warmup is None else _store_spread(warmup), _store_spread(data))
        volume = joined(None if warmup is None else warmup.dollar_volume, data.dollar_volume)
        args = (close, listed, ts, data.symbols, data.asset_class, spread, volume, cfg)
        values = baseline_forecast_features(*args)
        _write(features, missing, from_row, forecast_cols, {k: v[skip:] for k, v in values.items()}, baseline)
    return replace(data, features=features, feature_missing=missing)


def _write(
    features: np.ndarray,
    missing: np.ndarray | None,
    from_row: int,
    columns: list[tuple[int, str]],
    values: dict[str, np.ndarray],
    cells: np.ndarray | None,
) -> None:
    """Write ``values`` (store units, rows ``>= from_row``) into ``columns`` of ``features`` on
    ``cells`` (None: all) as the loader would: its scale, NaN -> 0 flagged in ``missing``."""
    for k, name in columns:
        scaled = values[name] * LOADER_SCALE.get(name, 1.0)
        keep = np.zeros(scaled.shape, dtype=bool) if cells is None else ~cells
        filled = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
        features[from_row:, :, k] = np.where(keep, features[from_row:, :, k], filled)
        if missing is not None:  # the rebuilt values' own gaps, as the loader flags them
            missing[from_row:, :, k] = np.where(keep, missing[from_row:, :, k], ~np.isfinite(scaled))


def _stored(data: MarketData, name: str, from_row: int) -> np.ndarray | None:
    """Column ``name`` of ``data`` on rows ``>= from_row`` in store units, NaN where missing; None
    where ``data`` does not observe it."""
    if name not in data.feature_names:
        return None
    k = data.feature_names.index(name)
    values = data.features[from_row:, :, k].astype(np.float64) / LOADER_SCALE.get(name, 1.0)
    if data.feature_missing is None:
        return values
    return np.where(data.feature_missing[from_row:, :, k], np.nan, values)


def _row_median(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Per row, the median of ``values`` over ``cells`` where finite; NaN for a row with none."""
    usable = cells & np.isfinite(values)
    out = np.full(values.shape[0], np.nan)
    for t in np.flatnonzero(usable.any(axis=1)):
        out[t] = np.median(values[t, usable[t]])
    return out


def _ratio(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``new / old`` per row where both are finite and positive; a row without them (a weekend of a
    mixed calendar, where no equity trades) carries the last row's ratio forward, as ingest carries
    the index forward to crypto's rows; 1 before any (no evidence: keep the stored value)."""
    usable = np.isfinite(new) & np.isfinite(old) & (new > 0) & (old > 0)
    last = np.maximum.accumulate(np.where(usable, np.arange(len(usable)), -1))
    ratio = np.where(usable, new / np.where(usable, old, 1.0), 1.0)
    return np.where(last >= 0, ratio[np.maximum(last, 0)], 1.0)


def _move_vix(data: MarketData, features: np.ndarray, from_row: int, rebuilt: dict[str, np.ndarray]) -> None:
    """Move the observed ``vix_level`` and ``vix_term`` on rows ``>= from_row`` of ``features`` with
    the rebuilt price features (store units, ``[rows, N]``), as the module's docstring states."""
    names = data.feature_names
    listed = np.asarray(data.listed[from_row:], dtype=bool)
    equity = np.array([c == "equity" for c in data.asset_class])
    reference = listed & (equity if equity.any() else np.ones_like(equity))[None, :]
    vol_20 = _stored(data, "vol_20", from_row)
    if vol_20 is not None:
        new_short = _row_median(rebuilt["vol_20"], reference)
        old_short = _row_median(vol_20, reference)
        if "vix_level" in names:
            features[from_row:, :, names.index("vix_level")] *= _ratio(new_short, old_short)[:, None]
        vol_60 = _stored(data, "vol_60", from_row)
        if "vix_term" in names and vol_60 is not None:
            new_term = new_short / _row_median(rebuilt["vol_60"], reference)
            old_term = old_short / _row_median(vol_60, reference)
            features[from_row:, :, names.index("vix_term")] *= _ratio(new_term, old_term)[:, None]
