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
* ``kelly_lite``: ``min(cap, max(0, scale x |fc_mean| / sigma^2))`` with ``sigma`` the std of the
  last ``kelly_sigma_closes`` step closes' simple returns (the sigma ``envs.gate`` and the
  ``kelly_lite`` baseline already use), the stored ``fc_mean`` and ``fc_gate_open`` (0 where shut).

Kept as stored: forecasts (``fc_*``: another model's output, or the baseline forecaster's 1-day
forecast on the asset's own calendar), ``atr_pct_14`` (a bar range, needs highs and lows),
``spread_bps``, ``dollar_volume_20`` (one bar's traded notional: what a fill at one bar can take),
cross-asset and macro columns. Nothing is stored: the features table keeps each class on its own
calendar (right for a crypto-only universe, which steps on it), and the loader recomputes on every
load, so a store built before this rule needs no rebuild and is never read half one way.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.regime import regime_group
from raytrade.replay.features.returns import returns_group
from raytrade.replay.features.risk import risk_group
from raytrade.replay.features.wide import PRICE_COLUMNS, Panel

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
STEP_FEATURES: Final[tuple[str, ...]] = (*PRICE_FEATURES, "kelly_lite")
"""Feature columns an asset observed off its own calendar gets recomputed on the stepping one."""


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


def step_features(
    close: np.ndarray,
    listed: np.ndarray,
    ts: np.ndarray,
    symbols: tuple[str, ...],
    fc_mean: np.ndarray,
    gate_open: np.ndarray,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """``STEP_FEATURES`` ``[T, N]`` (store units) of closes on the stepping calendar ``ts`` (module
    docstring), NaN where not ``listed`` (ingest writes no row there). ``fc_mean`` (NaN: unknown) and
    ``gate_open`` (bool) are the stored forecast and gate at those bars; ``kelly_lite`` is 0 where the
    gate is shut, as ingest writes it."""
    prices = price_features(close, listed, ts, symbols, config)
    panel = panel_of(close, listed, ts, symbols, "crypto")
    drawdown = frame_of(prices["drawdown"], ts, symbols)
    risk = risk_group(
        panel, config, frame_of(fc_mean, ts, symbols), frame_of(gate_open, ts, symbols), drawdown
    )
    out = {**prices, "kelly_lite": risk["kelly_lite"].to_numpy(dtype=np.float64)}
    return {name: np.where(listed, values, np.nan) for name, values in out.items()}
