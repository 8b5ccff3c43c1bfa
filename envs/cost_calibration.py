"""Fit the slippage model of ``envs.costs`` to the fills the live loop logged (``raytrade calibrate-costs``).

Data (``serve.live`` writes both rows into the store's ``experience`` table):

* a fill row, ``decision_id`` ``<decision>:fill``, holds ``slippage_bps``: the fill's average price
  against the decision-time mid, signed so that a cost is positive (a buy above the mid, a sell
  below), and ``filled_qty`` x ``fill_price``, the filled notional;
* its decision row, ``decision_id`` ``<decision>``, holds the decision time (``ts``) and, in
  ``state.snapshot.spread_bps``, the full quoted spread at the decision.

The features table supplies, as of the decision time (latest row with ``ts <=`` it), the bar dollar
volume ``dollar_volume_20`` (participation = filled notional / it, clipped at
``max_participation``, as the simulator clips it; its tier as ``envs.costs.liquidity_tier``), the
per-bar volatility ``vol_20`` and, when the snapshot has no quote, ``spread_bps``.

Fit. Ordinary least squares without intercept, per fill ``i`` (bps):

    slippage_i = f * spread_i + sum_k b_k * [tier_i == k] + c * sqrt(participation_i) + e_i

with ``spread_i`` capped at ``max_spread_bps`` like the simulator; ``f`` is ``spread_fraction``, ``b_k``
the tier bases (only tiers that have fills), ``c`` ``impact_coef_bps``. Standard errors are HC1
(White's heteroskedasticity-robust estimator scaled by ``n / (n - p)``): slippage noise grows with
size and spread, so the classical errors would be too small. The volatility diagnostic refits with
``+ v * vol_bps_i`` added and reports ``v`` alone. Fewer usable fills than ``min_fills``, or fills
that cannot separate the parameters (a rank-deficient design), are refused with an ``InputError``.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import pandas as pd

from raytrade.envs.cost_profile import CostProfile, FittedParameter
from raytrade.envs.costs import CostConfig, liquidity_tier
from raytrade.replay.errors import InputError
from raytrade.replay.reader import read_frame

__all__ = ["FILL_SUFFIX", "FillSample", "fit_cost_profile", "logged_fills"]

FILL_SUFFIX = ":fill"
"""Suffix ``serve.live`` appends to a decision id to name that decision's fill row."""


class FillSample(NamedTuple):
    """Usable fills, one entry each; ``dropped`` counts the logged fills left out, by reason."""

    decided_at: np.ndarray  # datetime64[us] decision times (UTC)
    slippage_bps: np.ndarray  # realised cost vs the decision-time mid, bps (cost > 0)
    spread_bps: np.ndarray  # full spread at the decision, bps (uncapped)
    participation: np.ndarray  # filled notional / bar dollar volume (unclipped)
    dollar_volume: np.ndarray  # bar dollar volume (tier)
    vol_bps: np.ndarray  # per-bar return volatility, bps
    dropped: dict[str, int]


def _snapshot_spread(state: object) -> float:
    if not isinstance(state, str):
        return float("nan")
    try:
        snapshot = json.loads(state).get("snapshot") or {}
        value = snapshot.get("spread_bps")
    except (ValueError, AttributeError):
        return float("nan")
    return float(value) if isinstance(value, int | float) else float("nan")


def logged_fills(root: str | os.PathLike[str]) -> FillSample:
    """The usable fills of the store at ``root`` (module docstring: which rows, which inputs)."""
    exp = read_frame(
        root,
        "experience",
        columns=["symbol", "ts", "decision_id", "state", "fill_price", "filled_qty", "slippage_bps"],
    )
    is_fill = exp["decision_id"].str.endswith(FILL_SUFFIX)
    fills = exp[is_fill & (exp["filled_qty"] > 0) & exp["fill_price"].notna() & exp["slippage_bps"].notna()]
    decisions = exp[~is_fill].drop_duplicates("decision_id").set_index("decision_id")
    fills = fills.assign(decision=fills["decision_id"].str.removesuffix(FILL_SUFFIX))
    dropped: dict[str, int] = {}

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal fills
        if mask.any():
            dropped[reason] = int(mask.sum())
        fills = fills[~mask]

    drop(~fills["decision"].isin(decisions.index), "no decision row")
    drop(
        fills["decision_id"].duplicated(keep="first"), "logged twice"
    )  # appended twice (before the writer refused it): counted once
    if fills.empty:  # nothing to join (an empty selection would also lose the ts dtype)
        return _empty_sample(dropped)
    fills = fills.assign(
        decided_at=decisions.loc[fills["decision"], "ts"].to_numpy(),
        snapshot_spread=[_snapshot_spread(s) for s in decisions.loc[fills["decision"], "state"]],
        notional=fills["filled_qty"] * fills["fill_price"],
    )
    feats = read_frame(
        root,
        "features",
        symbols=sorted(fills["symbol"].unique()) or None,
        columns=["symbol", "ts", "dollar_volume_20", "vol_20", "spread_bps"],
    )
    fills = pd.merge_asof(
        fills.sort_values("decided_at"),
        feats.rename(columns={"ts": "feature_ts"}).sort_values("feature_ts"),
        left_on="decided_at",
        right_on="feature_ts",
        by="symbol",
        direction="backward",
    )
    spread = fills["snapshot_spread"].where(fills["snapshot_spread"] > 0, fills["spread_bps"])
    fills = fills.assign(spread=spread)
    drop(~(fills["dollar_volume_20"] > 0), "no dollar volume")
    drop(~(fills["spread"] >= 0), "no spread")
    drop(~(fills["vol_20"] >= 0), "no volatility")
    return FillSample(
        decided_at=pd.DatetimeIndex(fills["decided_at"]).tz_convert(None).to_numpy().astype("datetime64[us]"),
        slippage_bps=fills["slippage_bps"].to_numpy(np.float64),
        spread_bps=fills["spread"].to_numpy(np.float64),
        participation=(fills["notional"] / fills["dollar_volume_20"]).to_numpy(np.float64),
        dollar_volume=fills["dollar_volume_20"].to_numpy(np.float64),
        vol_bps=fills["vol_20"].to_numpy(np.float64) * 1e4,
        dropped=dropped,
    )


def _empty_sample(dropped: dict[str, int]) -> FillSample:
    none = np.empty(0, dtype=np.float64)
    return FillSample(np.empty(0, dtype="datetime64[us]"), none, none, none, none, none, dropped)


def _ols_hc1(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(coefficients, HC1 standard errors, residuals); None when the design is rank-deficient."""
    n, p = design.shape
    if n <= p or np.linalg.matrix_rank(design) < p:
        return None
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    bread = np.linalg.inv(design.T @ design)
    meat = (design * resid[:, None] ** 2).T @ design
    cov = bread @ meat @ bread * n / (n - p)
    return beta, np.sqrt(np.maximum(np.diag(cov), 0.0)), resid


def fit_cost_profile(fills: FillSample, cfg: CostConfig, min_fills: int = 30) -> CostProfile:
    """The profile of ``fills`` (module docstring: the model and the errors), tiers and the
    participation cap from ``cfg``. Raises ``InputError`` with too few fills (naming the minimum) or
    fills that cannot separate the parameters."""
    n = len(fills.slippage_bps)
    if n < min_fills:
        dropped = sum(fills.dropped.values())
        extra = f" ({dropped} more logged fills lacked inputs)" if dropped else ""
        raise InputError(f"{n} usable fills{extra}; calibrate-costs needs at least {min_fills} (--min-fills)")
    tiers = liquidity_tier(fills.dollar_volume, cfg)
    present = [k for k in range(3) if (tiers == k).any()]
    sqrt_part = np.sqrt(np.minimum(fills.participation, cfg.max_participation))
    spread = np.minimum(fills.spread_bps, cfg.max_spread_bps)
    columns = [spread, *[(tiers == k).astype(np.float64) for k in present], sqrt_part]
    fit = _ols_hc1(np.column_stack(columns), fills.slippage_bps)
    if fit is None:
        raise InputError(
            f"the {n} fills cannot separate spread_fraction, the tier bases of tiers {present} and "
            "impact_coef_bps (spread and participation must vary within each tier)"
        )
    beta, se, resid = fit
    params = [FittedParameter(value=float(b), std_error=float(s)) for b, s in zip(beta, se, strict=True)]
    bases: list[FittedParameter | None] = [None, None, None]
    for k, param in zip(present, params[1:-1], strict=True):
        bases[k] = param
    with_vol = _ols_hc1(np.column_stack([*columns, fills.vol_bps]), fills.slippage_bps)
    vol = (
        None
        if with_vol is None
        else FittedParameter(value=float(with_vol[0][-1]), std_error=float(with_vol[1][-1]))
    )
    return CostProfile(
        n_fills=n,
        n_dropped=sum(fills.dropped.values()),
        fills_from=pd.Timestamp(fills.decided_at.min(), tz="UTC").to_pydatetime(),
        fills_to=pd.Timestamp(fills.decided_at.max(), tz="UTC").to_pydatetime(),
        spread_fraction=params[0],
        tier_base_bps=(bases[0], bases[1], bases[2]),
        tier_fills=(int((tiers == 0).sum()), int((tiers == 1).sum()), int((tiers == 2).sum())),
        impact_coef_bps=params[-1],
        volatility_coef=vol,
        residual_std_bps=float(np.std(resid, ddof=len(beta))),
        tier_thresholds_usd=cfg.tier_thresholds_usd,
        max_participation=cfg.max_participation,
    )
