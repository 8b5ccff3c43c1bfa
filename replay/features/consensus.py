"""Adaptive consensus gate: a minimum forecast move derived from spread costs, hit rate and skew.

The contract's consensus rule counts a forecast as a move only when ``|fc_mean| >= min_move``, a
static 0.1 %. This module derives the threshold per (symbol, bar) instead, from data with
timestamps ``<= t`` only (feature column ``fc_min_move_adaptive``, a fraction like ``min_move``):

1. ``c_t`` = mean full spread over the last ``window`` bars (``spread_bps`` / 1e4, bars with a
   spread): a trade pays half the spread in and half out, so ``c_t`` is the round trip's cost;
2. ``h_t`` = hit rate of the last ``window`` resolved forecasts: the forecast made at bar ``s`` is
   resolved at ``s + 1 <= t`` and hits when ``sign(fc_mean_s) == sign(return_{s+1})`` (pairs with a
   zero forecast or a zero return are left out); unknown (NaN) with fewer than ``min_resolved``;
3. ``a_t = max(0, -sign(fc_mean_t) * fc_skew_t)``: forecast skew against the forecast's direction
   (a long with a fat left tail, a short with a fat right tail);
4. ``min_move_t = clip(c_t / max(2 h_t - 1, edge_floor) * (1 + skew_weight * a_t), floor, cap)``.

Why: trading the sign of a forecast of size ``m`` with hit rate ``h`` earns about ``(2h - 1) m`` per
round trip before costs (a hit earns ``m``, a miss loses it), so the move is worth its spread only
when ``m >= c / (2h - 1)``; skew against the direction fattens the losing side, so the bar rises with
it. ``edge_floor`` bounds the ratio where the hit rate is at or below a coin flip (the threshold
then reaches ``cap``, which no ordinary forecast meets), and ``floor`` (default the contract's
static ``min_move``) keeps the adaptive gate never looser than the static rule. An unknown input
(no spread yet, too few resolved forecasts, no skew) leaves the threshold NaN: the gate is closed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from raytrade.replay.loop_rules import LoopRules

_LOOP = LoopRules()


class ConsensusGateConfig(BaseModel):
    """Parameters of the adaptive minimum move (module docstring: the formula)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(60, ge=2, description="bars of spreads and resolved forecasts averaged")
    min_resolved: int = Field(20, ge=1, description="resolved forecasts needed before a hit rate counts")
    edge_floor: float = Field(0.05, gt=0, le=1, description="smallest 2h - 1 the spread cost is divided by")
    skew_weight: float = Field(0.5, ge=0, description="threshold growth per unit of adverse forecast skew")
    floor: float = Field(_LOOP.min_move, ge=0, description="lowest threshold (the static min_move)")
    cap: float = Field(0.05, gt=0, description="highest threshold (fraction)")


def hit_rate(fc_mean: pd.DataFrame, realised: pd.DataFrame, cfg: ConsensusGateConfig) -> pd.DataFrame:
    """Per (t, symbol): share of the last ``window`` forecasts resolved by ``t`` whose sign matched
    the next bar's return (``realised`` at ``s + 1`` resolves the forecast of ``s``)."""
    forecast_sign = np.sign(fc_mean.shift(1))
    outcome_sign = np.sign(realised)
    counted = (forecast_sign != 0) & (outcome_sign != 0) & forecast_sign.notna() & outcome_sign.notna()
    hits = (forecast_sign == outcome_sign) & counted
    n = counted.astype("float64").rolling(cfg.window, min_periods=1).sum()
    h = hits.astype("float64").rolling(cfg.window, min_periods=1).sum()
    return (h / n).where(n >= cfg.min_resolved)


def adaptive_min_move(
    fc_mean: pd.DataFrame,
    fc_skew: pd.DataFrame,
    realised: pd.DataFrame,
    spread_bps: pd.DataFrame,
    cfg: ConsensusGateConfig,
) -> pd.DataFrame:
    """``min_move_t`` per (t, symbol) (module docstring, steps 1-4); NaN where an input is unknown."""
    cost = (spread_bps / 1e4).rolling(cfg.window, min_periods=1).mean()
    edge = np.maximum(2.0 * hit_rate(fc_mean, realised, cfg) - 1.0, cfg.edge_floor)
    adverse = np.maximum(-np.sign(fc_mean) * fc_skew, 0.0)
    raw = cost / edge * (1.0 + cfg.skew_weight * adverse)
    known = cost.notna() & edge.notna() & adverse.notna()
    return raw.clip(lower=cfg.floor, upper=cfg.cap).where(known)
