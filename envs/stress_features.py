"""Price-derived features recomputed from stressed prices, with the ingest feature functions.

A stress scenario changes prices; a policy must see the stressed market it is scored on, so every
feature column that ingest derives from closes alone is rebuilt from the new closes. The values come
from the very functions ingest runs (``replay.features.returns.returns_group``,
``replay.features.regime.regime_group``, ``replay.features.risk.risk_group``), fed a panel of the
warm-up history followed by the stressed rows, so rolling windows (60-bar volatility, the 252-bar
regime median, the running drawdown peak) see the bars before the window exactly as ingest did.

Design decisions
----------------
* Recomputed (``PRICE_FEATURES``): ``ret_1``, ``ret_5``, ``ret_20``, ``vol_20``, ``vol_60``,
  ``skew_60``, ``drawdown``, ``drawdown_velocity``, ``var_95_60``, ``vol_regime_code`` and
  ``dd_trigger_state`` (a function of the drawdown).
* Rescaled: ``atr_pct_14`` needs highs and lows, which ``MarketData`` does not carry; on every
  rebuilt row it is multiplied by ``vol_20' / vol_20`` (rebuilt over stored 20-bar volatility, where
  both are finite and the stored one is > 0), so a bar range widens with the volatility around it and
  relaxes as the 20-bar window leaves the shock. Kept when ``vol_20`` is not observed.
  ``spread_bps`` is the scenario's (``envs.scenarios``: a crisis window multiplies it by
  ``spread_mult``; a bootstrap row carries its drawn row's).
* Kept as they are (the row's stored value; for a bootstrap, the drawn row's): everything else.
  Forecasts (``fc_*``) and ``kelly_lite`` (sized from the forecasts) are a forecaster's output, not a
  price transform; macro (``vix_*``) and ``sector_momentum`` (a cross-asset cluster average) are
  market-wide series the scenario does not model.
* Values go through the loader's own post-processing: its scale per column and NaN -> 0.
* The panel steps on the ``MarketData`` calendar. For equities that is ingest's calendar; a crypto
  asset in a mixed universe is observed on equity days here but on its own 7-day calendar at ingest.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from raytrade.envs.market_data import MarketData
from raytrade.envs.replay_loader import _SCALED as LOADER_SCALE
from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.regime import regime_group
from raytrade.replay.features.returns import returns_group
from raytrade.replay.features.risk import risk_group
from raytrade.replay.features.wide import PRICE_COLUMNS, Panel

PRICE_FEATURES: tuple[str, ...] = (
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
"""Feature columns rebuilt from stressed closes (see the module docstring for those kept)."""


def price_features(
    close: np.ndarray, listed: np.ndarray, ts: np.ndarray, symbols: tuple[str, ...], config: FeatureConfig
) -> dict[str, np.ndarray]:
    """``PRICE_FEATURES`` ``[T, N]`` (store units, NaN where unknown) of closes where ``listed``.

    ``close`` may hold filler prices where ``listed`` is False; they are dropped, as ingest never sees
    a bar there.
    """
    frame = lambda values: pd.DataFrame(values, index=pd.DatetimeIndex(ts), columns=list(symbols))  # noqa: E731
    raw = {name: frame(np.full(close.shape, np.nan)) for name in PRICE_COLUMNS}
    raw["close"] = frame(np.where(listed, close, np.nan))
    panel = Panel("equity", raw, frame(listed.astype(bool)))
    ret = returns_group(panel, config)
    regime = regime_group(panel, config, ret["vol_20"])
    no_forecast = frame(np.zeros(close.shape))
    risk = risk_group(panel, config, no_forecast, no_forecast.astype(bool), regime["drawdown"])
    groups = {**ret, **regime, "dd_trigger_state": risk["dd_trigger_state"]}
    return {name: groups[name].to_numpy(dtype=np.float64) for name in PRICE_FEATURES}


def with_price_features(
    data: MarketData,
    from_row: int,
    warmup: MarketData | None = None,
    config: FeatureConfig | None = None,
) -> MarketData:
    """``data`` with its ``PRICE_FEATURES`` columns on rows ``>= from_row`` rebuilt from its prices.

    ``warmup`` (same assets, e.g. the store's history up to the window) supplies the bars strictly
    before ``data.ts[0]`` that rolling windows need; without it they start at ``data``'s first row.
    Rows before ``from_row`` and columns not in ``PRICE_FEATURES`` are returned unchanged.
    """
    if not 0 <= from_row <= data.n_steps:
        raise ValueError(f"from_row={from_row!r} must be in [0, {data.n_steps}]")
    columns = [(k, name) for k, name in enumerate(data.feature_names) if name in PRICE_FEATURES]
    if not columns or from_row == data.n_steps:
        return data
    close, listed, ts = data.close, data.listed, data.ts
    if warmup is not None:
        if warmup.symbols != data.symbols:
            raise ValueError("warmup must hold the same assets, in the same order, as data")
        before = warmup.ts < data.ts[0]
        close = np.vstack([warmup.close[before], close])
        listed = np.vstack([warmup.listed[before], listed])
        ts = np.concatenate([warmup.ts[before], ts])
    values = price_features(close, listed, ts, data.symbols, config or FeatureConfig())
    skip = close.shape[0] - data.n_steps + from_row
    features = data.features.copy()
    missing = None if data.feature_missing is None else data.feature_missing.copy()
    names = data.feature_names
    if "atr_pct_14" in names and "vol_20" in names:
        stored = data.features[from_row:, :, names.index("vol_20")] / LOADER_SCALE.get("vol_20", 1.0)
        rebuilt = values["vol_20"][skip:]
        usable = np.isfinite(rebuilt) & np.isfinite(stored) & (stored > 0)
        ratio = np.where(usable, rebuilt / np.where(usable, stored, 1.0), 1.0)
        features[from_row:, :, names.index("atr_pct_14")] *= ratio
    for k, name in columns:
        scaled = values[name][skip:] * LOADER_SCALE.get(name, 1.0)
        features[from_row:, :, k] = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
        if missing is not None:  # the rebuilt values' own gaps, as the loader flags them
            missing[from_row:, :, k] = ~np.isfinite(scaled)
    return replace(data, features=features, feature_missing=missing)
