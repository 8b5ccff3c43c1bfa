"""Fit the slippage model of ``envs.costs`` to the fills the live loop logged (``raytrade calibrate-costs``).

Data (``serve.live`` writes both rows into the store's ``experience`` table):

* a fill row, ``decision_id`` ``<decision>:fill``, holds ``slippage_bps``: the fill's average price
  against the decision-time mid, signed so that a cost is positive (a buy above the mid, a sell
  below), ``filled_qty`` x ``fill_price``, the filled notional, its ``side`` and
  ``latency_order_to_fill_ms``: the fill came that long after the decision (the loop stamps the
  order's submission with the decision's time);
* its decision row, ``decision_id`` ``<decision>``, holds the decision time (``ts``), the
  ``gate_mode`` that placed the order and, in ``state.snapshot.spread_bps``, the full quoted spread
  at the decision.

Cost is measured from the arrival price, the first price there was after the order went out, as the
simulator measures it (it decides at close ``t`` and charges its costs on a fill at ``open[t + 1]``:
the move from the close to that open is the book's return, not a cost). For an order decided in the
session the arrival price is the decision-time mid, the logged ``slippage_bps``. A market order
decided while the market was closed (after the close, over a weekend) waits for the next open, and
its logged ``slippage_bps`` holds the overnight gap too (tens to hundreds of bps of noise on daily
data, against a spread and impact of a few): such a fill is **re-referenced** to the open of the bar
of the ``bars`` table it filled in (the last bar stamped at or before the fill, which has not closed
by then: ``replay.timeutil.bar_closed_at``), its cost ``+-(fill_price / open - 1)`` in bps (+ for a
buy), and counted (``FillSample.n_rereferenced``). A fill is taken to have waited when it came more
than ``MAX_IMMEDIATE_FILL_MS`` (five minutes) after its decision and the decision was not taken in the
session the fill came in (the fill on a later New York date, or the decision before 09:30 New York that
day: ``SESSION_TZ``, ``SESSION_OPEN``): a market order in the session fills within seconds, and the
broker queues one placed outside the session for the next open; an order decided in the session and
filled later that day (a slow cycle, a halt) keeps the decision-time mid, its bar's open having come
before the decision. Crypto trades
around the clock, with no session to wait for: its fills keep the decision mid whatever their
latency. A re-referenced fill's spread is its closed bar's ``spread_bps`` (the estimate the simulator
charges a fill at the next open with), not the quote in its decision's snapshot, which was taken while
the market was closed (an after-hours quote, often many times the session's); the snapshot's is kept
only when the bar has no estimate (none, or 0: a flat bar, which the simulator costs at a past
median). A fill whose arrival price is unknown is left out and counted
(``FillSample.dropped``), never fitted against the mid: an equity fill without a latency, or with a
latency of 0 (its fill time unknown, so whether it waited cannot be told; builds before the null was
logged wrote 0 for a fill the broker gave no time for), a waited one with no ``bars`` row of the bar it
filled in, and a waited
one whose ``side`` is neither buy nor sell. So is every other fill row that cannot be fitted, each
under its reason: no ``filled_qty`` > 0, no ``fill_price`` > 0 (the store refuses one at or below 0
since 2026-12-05; an older row could crash the fit), an infinite ``slippage_bps``, a missing one
(the loop logs none when the decision had no mid) on a fill that is not re-referenced to the open,
and a fill whose ``symbol`` is not its decision row's.

Only market orders are fitted: the profile's parameters are applied to the simulator's market orders
(``envs.cost_profile``), and a passive order is a limit at the near touch (``envs.gate_modes``, the
one statement of which mode places which order), filled about half a spread *better* than the mid;
fitted with the market orders it would pull the spread fraction, the tier bases and the impact down
(in a simulation with 30 % of the fills passive, to about 36 %, 85 % and 40 % of their true
values). Fills of ``LIMIT_GATE_MODES`` are left out of the fit and reported apart
(``FillSample.n_passive``, ``passive_mean_slippage_bps``). A fill whose decision row has no
``gate_mode``, or one that places no known order, cannot be told apart: it is left out and counted
(``FillSample.dropped``), never fitted, so the fit holds known market orders only, and too few of
them are refused like any too few fills.

The features table supplies, from the latest bar of the symbol that had closed by the decision time
(stamped ``ts`` with ``closed_at <= decided_at``; ``closed_at`` is ``replay.timeutil.bar_closed_at``
with ``replay.timeutil.bar_length`` of the symbol's feature stamps: a daily row stamped 00:00 UTC is
built from that day's whole bar, so a decision at 13:00 UTC that day sees the day before, as the
simulator charges a fill at ``open[t+1]`` with bar ``t``'s volume; a daily row stamped at a local
midnight, 23 to 25 h long across daylight-saving changes, counts as closed 25 h after its stamp),
the bar dollar volume ``dollar_volume_20`` (participation = filled notional / it, clipped at
``max_participation``, as the simulator clips it; its tier as ``envs.costs.liquidity_tier``), the
per-bar volatility ``vol_20`` and, when the snapshot has no quote, ``spread_bps``. A decision before
its symbol's first closed bar is left out and counted (``FillSample.dropped``), as is one whose
latest closed bar closed more than ``replay.timeutil.MAX_FEATURE_AGE_HOURS`` (96 h) before it (the
store not refreshed, or the symbol no longer trading: a year-old dollar volume, tier and volatility
would be fitted as this fill's), and a fill row
logged twice under one ``decision_id`` (the experience table's unique key,
``replay.schema.UNIQUE_KEYS``; the first logged is kept).

Model, per fill ``i`` (bps):

    slippage_i = f * spread_i + sum_k b_k * [tier_i == k] + c * sqrt(participation_i) + e_i

with ``spread_i`` capped at ``max_spread_bps`` like the simulator; ``f`` is ``spread_fraction``, ``b_k``
the tier bases (only tiers that have fills), ``c`` ``impact_coef_bps``.

Fit, in three steps, so a few mis-logged fills (a price in cents, a stale decision mid) cannot move
the estimates and are named:

1. Screen. Huber's M-estimate of the model (``HUBER_C`` = 1.345, the IRLS scale 1.4826 x the median
   absolute residual, at least ``MIN_SCALE_BPS``, re-estimated each step) bounds any one fill's pull.
   The screen's scale ``s`` is 1.4826 x the median absolute residual of the fills *off* the robust
   fit (residual above ``MIN_SCALE_BPS``, a hundredth of a basis point), at least ``MIN_SCALE_BPS``:
   fills the fit passes through (many fills at exactly the modelled cost, one fill logged over and
   over) say nothing about how far the others scatter, and counted in, once they are more than half
   they put the median at 0, so that every other fill would be capped and the fills refused. When
   no more than 2 x ``MAX_OUTLIER_SHARE`` of the fills are off the fit, the outliers the screen
   allows could be half of those and set the scale, so ``s`` stays at ``MIN_SCALE_BPS``: every fill
   off the fit is capped (and more than 5 % of them refused). A fill whose residual from the robust
   fit exceeds ``SCREEN_SIGMAS`` (6) x ``s`` is **capped**:
   its cost is set to the robust fit's plus (or minus) that threshold, and it is reported by decision
   id, worst first (``CostProfile.outliers``). Capped, not dropped: real slippage has heavy tails, and
   leaving its costliest fills out would understate costs (on lognormal noise a 6-scale screen flags
   about 1 % of genuine fills); capped, each still pulls the estimates up, by at most the threshold.
   Normal noise passes the screen (6 sigmas: two in a billion), so clean fills are fitted exactly as
   without it. More than ``MAX_OUTLIER_SHARE`` (5 %) beyond it is refused: the fills do not follow
   the model.
2. Ordinary least squares without intercept on every fill, the capped ones at their caps. Standard
   errors are HC1 (White's heteroskedasticity-robust estimator scaled by ``n / (n - p)``): slippage
   noise grows with size and spread, so the classical errors would be too small. The volatility
   diagnostic refits with ``+ v * vol_bps_i`` added and reports ``v`` alone.
3. Plausibility. An estimate or standard error that is not finite, or whose term alone would move one
   fill's cost by more than ``IMPLAUSIBLE_COST_BPS`` (10,000 bps, the whole notional) at the model's
   caps, is refused naming the parameter, the value and the largest logged costs among the fills
   used. A fill that alone determines a parameter (the only fill of its tier) has no residual to
   screen it by: only this check stops it, and only when its value is implausible.

Fewer usable market-order fills than ``min_fills`` (before or after the screen), or fills that
cannot separate the parameters (a rank-deficient design), are refused with an ``InputError``.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import pandas as pd

from raytrade.envs.cost_profile import CostProfile, FittedParameter, OutlierFill
from raytrade.envs.costs import CostConfig, liquidity_tier
from raytrade.envs.gate_modes import LIMIT_GATE_MODES, MARKET_GATE_MODES
from raytrade.replay.errors import InputError
from raytrade.replay.reader import read_frame
from raytrade.replay.schema import UNIQUE_KEYS
from raytrade.replay.timeutil import MAX_FEATURE_AGE_HOURS, bar_closed_at, bar_length

__all__ = [
    "FILL_SUFFIX",
    "HUBER_C",
    "IMPLAUSIBLE_COST_BPS",
    "MAX_IMMEDIATE_FILL_MS",
    "MAX_OUTLIER_SHARE",
    "MIN_SCALE_BPS",
    "SCREEN_SIGMAS",
    "FillSample",
    "fit_cost_profile",
    "logged_fills",
]

FILL_SUFFIX = ":fill"
"""Suffix ``serve.live`` appends to a decision id to name that decision's fill row."""

HUBER_C = 1.345
"""Huber's tuning constant, in scale units: 95 % of least squares' efficiency on normal noise."""
SCREEN_SIGMAS = 6.0
"""A fill whose residual from the robust fit exceeds this many robust scales is capped there."""
MIN_SCALE_BPS = 0.01
"""Floor of the robust scale, bps (a hundredth of a basis point: below any price tick); a residual no
larger is a fill the robust fit passes through, left out of the screen's scale."""
MAX_OUTLIER_SHARE = 0.05
"""Most of the usable fills the screen may cap; more is refused."""
IMPLAUSIBLE_COST_BPS = 10_000.0
"""A parameter whose term alone moves one fill's cost by more than this (the whole notional) is refused."""
MAX_IMMEDIATE_FILL_MS = 300_000.0
"""An equity fill logged more than this after its decision (``latency_order_to_fill_ms``) waited for the
market to open and is measured from that open (module docstring). The latency runs from the cycle's
start, not the submit: a market order in the session fills within seconds of its submission, but the
cycle before it (reconciling orders, cancels, broker reads that a rate limit can slow to many seconds
each, the policy service's answer) can take a minute. Five minutes leave room for a slow cycle, which
measured from its session's open would be off by the day's move so far; the price of the margin is
the gap over a shorter wait (an order placed in the last five minutes before the open), a
pre-market quote's distance from the open, which is small."""
SESSION_TZ = "America/New_York"
"""The equity session's clock (the live loop trades US equities through Alpaca)."""
SESSION_OPEN = pd.Timedelta(hours=9, minutes=30)
"""The regular session's open, local time in ``SESSION_TZ``."""
_REPORTED = 5  # fills named in a profile or a message
_LONGEST_WAIT_MS = 3650 * 86_400e3  # a fill time further out has no bar (and would overflow the time type)
_HUBER_STEPS = 200

_DUPLICATE = "logged twice under one decision_id (the first kept)"
_NO_CLOSED_BAR = "no features bar closed before the decision"
_STALE_BAR = (
    f"features stale: the latest bar closed more than {MAX_FEATURE_AGE_HOURS:g} h before the decision "
    "(the store not refreshed, or the symbol no longer trading)"
)
_UNKNOWN_MODE = "gate_mode of the decision missing or unknown (market or limit order cannot be told)"
_NO_FILL_TIME = (
    "fill time unknown (no latency_order_to_fill_ms, or 0: what builds before the null was logged wrote "
    "for a fill without a broker time): whether it waited for the market to open cannot be told"
)
_NO_FILL_BAR = "waited for the market to open, and no bars row of the bar it filled in (no arrival price)"
_NO_SIDE = "waited for the market to open, and its side is neither buy nor sell"
_NO_SLIPPAGE = (
    "slippage_bps missing (no mid when decided) and no open to measure the fill from (it did not wait "
    "for the open, or it is a limit order)"
)


class FillSample(NamedTuple):
    """Usable fills, one entry each; ``dropped`` counts the logged fills left out, by reason."""

    decided_at: np.ndarray  # datetime64[us] decision times (UTC)
    slippage_bps: np.ndarray  # realised cost vs the arrival price, bps (cost > 0; module docstring)
    spread_bps: np.ndarray  # full spread at the decision, bps (uncapped)
    participation: np.ndarray  # filled notional / bar dollar volume (unclipped)
    dollar_volume: np.ndarray  # bar dollar volume (tier)
    vol_bps: np.ndarray  # per-bar return volatility, bps
    dropped: dict[str, int]
    decision_id: np.ndarray | None = None  # fill rows' decision ids, for reports (None: by position)
    n_passive: int = 0  # passive (limit) fills left out of the fit (module docstring)
    passive_mean_slippage_bps: float | None = None  # their mean cost vs the mid, bps (None: none)
    n_rereferenced: int = 0  # fills measured from the open they waited for, not the mid (module docstring)


class _Passive(NamedTuple):
    n: int
    mean_slippage_bps: float | None


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
    """The usable market-order fills of the store at ``root``, the passive ones counted apart
    (module docstring: which rows, which inputs)."""
    exp = read_frame(
        root,
        "experience",
        columns=[
            "symbol",
            "ts",
            "decision_id",
            "state",
            "gate_mode",
            "side",
            "fill_price",
            "filled_qty",
            "slippage_bps",
            "latency_order_to_fill_ms",
        ],
    ).sort_values("ts", kind="stable")
    is_fill = exp["decision_id"].str.endswith(FILL_SUFFIX)
    fills = exp[is_fill]
    decisions = exp[~is_fill].drop_duplicates("decision_id").set_index("decision_id")
    fills = fills.assign(decision=fills["decision_id"].str.removesuffix(FILL_SUFFIX))
    dropped: dict[str, int] = {}

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal fills
        if mask.any():
            dropped[reason] = int(mask.sum()) + dropped.get(reason, 0)
        fills = fills[~mask]

    # every fill row is used or counted under a reason (a fill left out without a word biased the fit)
    drop(~(fills["filled_qty"] > 0), "filled_qty missing or not > 0")
    drop(~(fills["fill_price"] > 0), "fill_price missing or not > 0")
    drop(fills.duplicated(list(UNIQUE_KEYS["experience"]), keep="first"), _DUPLICATE)
    slippage = fills["slippage_bps"].to_numpy(np.float64)
    drop(np.isinf(slippage), "slippage_bps not finite")  # missing: re-measured below where it can be
    drop(~fills["decision"].isin(decisions.index), "no decision row")
    decided_symbol = decisions["symbol"].reindex(fills["decision"]).to_numpy(object)
    drop(fills["symbol"].to_numpy(object) != decided_symbol, "symbol differs from its decision's")
    mode = pd.Series(decisions["gate_mode"].reindex(fills["decision"]).to_numpy(object), index=fills.index)
    limit = mode.isin(LIMIT_GATE_MODES)
    drop(limit & fills["slippage_bps"].isna(), _NO_SLIPPAGE)
    mode, limit = mode.reindex(fills.index), limit.reindex(fills.index)
    passive = fills.loc[limit, "slippage_bps"].to_numpy(np.float64)
    apart = _Passive(len(passive), float(passive.mean()) if len(passive) else None)
    fills, mode = fills[~limit], mode[~limit]
    drop(~mode.isin(MARKET_GATE_MODES), _UNKNOWN_MODE)
    if fills.empty:  # nothing to join (an empty selection would also lose the ts dtype)
        return _empty_sample(dropped, apart)
    fills = fills.assign(
        decided_at=pd.DatetimeIndex(decisions.loc[fills["decision"], "ts"]).as_unit("us"),
        snapshot_spread=[_snapshot_spread(s) for s in decisions.loc[fills["decision"], "state"]],
        notional=fills["filled_qty"] * fills["fill_price"],
    )
    feats = _closed_bars(
        read_frame(
            root,
            "features",
            symbols=sorted(fills["symbol"].unique()) or None,
            columns=["symbol", "ts", "asset_class", "dollar_volume_20", "vol_20", "spread_bps"],
        )
    )
    drop(~fills["symbol"].isin(feats["symbol"]), "bar length unknown (fewer than 2 features rows)")
    if fills.empty:
        return _empty_sample(dropped, apart)
    fills = pd.merge_asof(
        fills.sort_values("decided_at"),
        feats.sort_values("closed_at"),
        left_on="decided_at",
        right_on="closed_at",
        by="symbol",
        direction="backward",
    )
    drop(fills["closed_at"].isna(), _NO_CLOSED_BAR)
    drop(fills["decided_at"] - fills["closed_at"] > pd.Timedelta(hours=MAX_FEATURE_AGE_HOURS), _STALE_BAR)
    spread = fills["snapshot_spread"].where(fills["snapshot_spread"] > 0, fills["spread_bps"])
    fills = fills.assign(spread=spread)
    drop(~(fills["dollar_volume_20"] > 0), "no dollar volume")
    drop(~(fills["spread"] >= 0), "no spread")
    drop(~(fills["vol_20"] >= 0), "no volatility")
    # the arrival price (module docstring): crypto trades around the clock, an equity fill may have
    # waited for the open
    latency = fills["latency_order_to_fill_ms"]
    drop((fills["asset_class"] != "crypto") & ~(np.isfinite(latency) & (latency > 0)), _NO_FILL_TIME)
    waited = (fills["asset_class"] != "crypto") & _waited_for_open(fills)
    opens = _arrival_open(root, fills[waited])
    drop(waited & ~fills.index.isin(opens.index), _NO_FILL_BAR)
    sign = fills["side"].map({"buy": 1.0, "sell": -1.0})
    drop(pd.Series(fills.index.isin(opens.index), index=fills.index) & sign.isna(), _NO_SIDE)
    opens = opens.reindex(fills.index)
    drop(opens.isna() & fills["slippage_bps"].isna(), _NO_SLIPPAGE)  # no mid, and no open to measure from
    opens = opens.reindex(fills.index)
    sign = sign.reindex(fills.index)
    rereferenced = opens.notna()
    arrival_cost = sign.reindex(fills.index) * (fills["fill_price"] / opens - 1.0) * 1e4
    # a fill that waited for the open crossed the opening spread, not the quote seen while the market
    # was closed (an after-hours quote, often many times wider): its spread is the closed bar's
    # estimate, the one the simulator charges a fill at the next open with
    bar_spread = rereferenced & (fills["spread_bps"] > 0)  # 0: a flat bar, no estimate (the simulator's)
    fills = fills.assign(spread=fills["spread_bps"].where(bar_spread, fills["spread"]))
    return FillSample(
        decided_at=pd.DatetimeIndex(fills["decided_at"]).tz_convert(None).to_numpy().astype("datetime64[us]"),
        slippage_bps=arrival_cost.where(rereferenced, fills["slippage_bps"]).to_numpy(np.float64),
        spread_bps=fills["spread"].to_numpy(np.float64),
        participation=(fills["notional"] / fills["dollar_volume_20"]).to_numpy(np.float64),
        dollar_volume=fills["dollar_volume_20"].to_numpy(np.float64),
        vol_bps=fills["vol_20"].to_numpy(np.float64) * 1e4,
        dropped=dropped,
        decision_id=fills["decision_id"].to_numpy(str),
        n_passive=apart.n,
        passive_mean_slippage_bps=apart.mean_slippage_bps,
        n_rereferenced=int(rereferenced.sum()),
    )


def _waited_for_open(fills: pd.DataFrame) -> pd.Series:
    """Whether each equity fill of ``fills`` (``decided_at``, a positive ``latency_order_to_fill_ms``)
    waited for the session to open: it came more than ``MAX_IMMEDIATE_FILL_MS`` after its decision, and
    the decision was not taken in the session the fill came in (the fill on another ``SESSION_TZ`` date,
    or the decision before ``SESSION_OPEN`` that day). A slow fill of an order decided in the session
    (a slow cycle, a halt) keeps the decision-time mid: its bar's open came before the decision."""
    decided = pd.DatetimeIndex(fills["decided_at"]).tz_convert(SESSION_TZ)
    latency = fills["latency_order_to_fill_ms"].to_numpy(np.float64)
    filled = decided + pd.to_timedelta(np.minimum(latency, _LONGEST_WAIT_MS), unit="ms")
    day = decided.normalize()
    outside = (filled.normalize() != day) | (decided < day + SESSION_OPEN)
    slow = latency > MAX_IMMEDIATE_FILL_MS
    return pd.Series(slow & np.asarray(outside), index=fills.index)


def _arrival_open(root: str | os.PathLike[str], waited: pd.DataFrame) -> pd.Series:
    """The arrival price of each fill of ``waited`` (equity fills that waited for the market to open:
    ``decided_at``, ``latency_order_to_fill_ms``): the ``open`` of the symbol's ``bars`` row it filled
    in, the last stamped at or before the fill that has not closed by then
    (``replay.timeutil.bar_closed_at`` with the symbol's ``bar_length``), indexed like ``waited``; a
    fill without such a row (no bars of the symbol, fewer than two, or none that holds the fill) is
    left out."""
    waited = waited[waited["latency_order_to_fill_ms"] <= _LONGEST_WAIT_MS]
    if waited.empty:
        return pd.Series(dtype=np.float64)
    bars = read_frame(
        root, "bars", symbols=sorted(waited["symbol"].unique()), columns=["symbol", "ts", "open"]
    )
    ends: list[pd.Series] = []
    for _, stamps in bars.groupby("symbol")["ts"]:
        if (length := bar_length(stamps)) is not None:
            ends.append(pd.Series(bar_closed_at(stamps, length).as_unit("us"), index=stamps.index))
    if not ends:
        return pd.Series(dtype=np.float64)
    end = pd.concat(ends)
    bars = bars.loc[end.index].assign(bar_end=end, bar_ts=lambda f: f["ts"].dt.as_unit("us"))
    filled_at = waited["decided_at"] + pd.to_timedelta(waited["latency_order_to_fill_ms"], unit="ms")
    found = pd.merge_asof(
        pd.DataFrame(
            {"symbol": waited["symbol"], "filled_at": filled_at.dt.as_unit("us"), "row": waited.index}
        ).sort_values("filled_at"),
        bars[["symbol", "bar_ts", "bar_end", "open"]].sort_values("bar_ts"),
        left_on="filled_at",
        right_on="bar_ts",
        by="symbol",
        direction="backward",
    )
    found = found[found["filled_at"] < found["bar_end"]]  # NaT compares False: no bar at or before it
    return pd.Series(found["open"].to_numpy(np.float64), index=found["row"].to_numpy())


def _closed_bars(feats: pd.DataFrame) -> pd.DataFrame:
    """``feats`` with ``closed_at``, when the bar has surely closed (``replay.timeutil.bar_closed_at``
    with the symbol's ``bar_length``: a daily bar stamped at a local midnight counts as closed 25 h
    later), and ``feature_ts`` = ``ts``; symbols with fewer than two rows (no bar length) left out."""
    closed: list[pd.Series] = []
    for _, stamps in feats.groupby("symbol")["ts"]:
        if (length := bar_length(stamps)) is not None:
            closed.append(pd.Series(bar_closed_at(stamps, length).as_unit("us"), index=stamps.index))
    if not closed:
        return feats.iloc[:0].rename(columns={"ts": "feature_ts"}).assign(closed_at=feats["ts"].iloc[:0])
    closed_at = pd.concat(closed)
    feats = feats.loc[closed_at.index]
    return feats.rename(columns={"ts": "feature_ts"}).assign(closed_at=closed_at)


def _empty_sample(dropped: dict[str, int], apart: _Passive) -> FillSample:
    none = np.empty(0, dtype=np.float64)
    return FillSample(
        np.empty(0, dtype="datetime64[us]"),
        none,
        none,
        none,
        none,
        none,
        dropped,
        np.empty(0, dtype=str),
        apart.n,
        apart.mean_slippage_bps,
    )


def _ols_hc1(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(coefficients, HC1 standard errors, residuals); None when the design is rank-deficient. An
    absurd cost may overflow into non-finite errors: ``_check_plausible`` refuses them."""
    n, p = design.shape
    if n <= p or np.linalg.matrix_rank(design) < p:
        return None
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    bread = np.linalg.inv(design.T @ design)
    with np.errstate(over="ignore", invalid="ignore"):
        meat = (design * resid[:, None] ** 2).T @ design
        cov = bread @ meat @ bread * n / (n - p)
    return beta, np.sqrt(np.maximum(np.diag(cov), 0.0)), resid


def _robust_scale(resid: np.ndarray) -> float:
    return max(1.4826 * float(np.median(np.abs(resid))), MIN_SCALE_BPS)


def _screen_scale(resid: np.ndarray) -> float:
    """The screen's scale (module docstring, step 1): the robust scale of the residuals off the fit
    (``|r| > MIN_SCALE_BPS``; a NaN, an overflow, counts as off), ``MIN_SCALE_BPS`` when they are no
    more than ``2 * MAX_OUTLIER_SHARE`` of the fills."""
    size = np.abs(resid)
    off = size[~(size <= MIN_SCALE_BPS)]
    if len(off) <= 2 * MAX_OUTLIER_SHARE * len(resid):
        return MIN_SCALE_BPS
    return _robust_scale(off)


def _huber_fit(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Fitted values, residuals and screen scale (:func:`_screen_scale`) of Huber's M-estimate of
    ``y ~ design`` (module docstring, step 1),
    by iteratively reweighted least squares from zero. A fill's weight is ``min(1, c s / |r|)``, so its
    weighted cost ``w y`` stays near ``c s`` however absurd ``y`` is; each step solves the weighted normal
    equations scaled to a unit diagonal, so a heavily down-weighted fill that alone determines a parameter
    (the only fill of its tier) stays fitted, not lost to the solver's cutoff, and is left to the
    plausibility check."""
    beta = np.zeros(design.shape[1])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(_HUBER_STEPS):
            resid = y - design @ beta
            u = np.abs(resid) / _robust_scale(resid)
            w = np.where(u > HUBER_C, HUBER_C / u, 1.0)
            gram = design.T @ (design * w[:, None])
            diag = np.diag(gram)
            d = np.where(diag > 0, 1.0 / np.sqrt(diag), 0.0)
            z, *_ = np.linalg.lstsq(gram * np.outer(d, d), d * (design.T @ (w * y)), rcond=None)
            step = d * z
            done = np.allclose(step, beta, rtol=1e-10, atol=1e-10)
            beta = step
            if done:
                break
        fitted = design @ beta
        resid = y - fitted
    return fitted, resid, _screen_scale(resid)


def _names(fills: FillSample) -> np.ndarray:
    if fills.decision_id is not None and len(fills.decision_id) == len(fills.slippage_bps):
        return np.asarray(fills.decision_id, dtype=str)
    return np.array([f"fill #{i}" for i in range(len(fills.slippage_bps))])


def _listed(names: np.ndarray, slippage: np.ndarray, order: np.ndarray) -> str:
    shown = [f"{names[i]} ({slippage[i]:.4g} bps)" for i in order[:_REPORTED]]
    more = f" and {len(order) - _REPORTED} more" if len(order) > _REPORTED else ""
    return ", ".join(shown) + more


def _cost_columns(fills: FillSample, cfg: CostConfig) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """Design columns (spread, tier dummies of the tiers present, sqrt participation), the tiers
    present and each fill's tier."""
    tiers = liquidity_tier(fills.dollar_volume, cfg)
    present = [k for k in range(3) if (tiers == k).any()]
    sqrt_part = np.sqrt(np.minimum(fills.participation, cfg.max_participation))
    spread = np.minimum(fills.spread_bps, cfg.max_spread_bps)
    return [spread, *[(tiers == k).astype(np.float64) for k in present], sqrt_part], present, tiers


def _rank_error(n: int, present: list[int]) -> InputError:
    return InputError(
        f"the {n} fills cannot separate spread_fraction, the tier bases of tiers {present} and "
        "impact_coef_bps (spread and participation must vary within each tier)"
    )


def _check_plausible(
    estimates: dict[str, tuple[float, float, float]], names: np.ndarray, slippage: np.ndarray
) -> None:
    """Refuse (``InputError``) an estimate or standard error that is not finite, or a term that at its
    regressor's largest value moves a fill's cost by more than ``IMPLAUSIBLE_COST_BPS``; ``estimates``
    maps a parameter to (value, standard error, largest regressor value)."""
    bad = [
        f"{name}={value:.4g} (std err {se:.3g})"
        for name, (value, se, reach) in estimates.items()
        if not (np.isfinite(value) and np.isfinite(se) and abs(value) * reach <= IMPLAUSIBLE_COST_BPS)
    ]
    if bad:
        worst = np.argsort(-np.abs(slippage), kind="stable")
        raise InputError(
            f"implausible estimate {'; '.join(bad)}: not finite, or its term alone moves a fill's cost by "
            f"more than {IMPLAUSIBLE_COST_BPS:.0f} bps; the largest logged costs among the fills used: "
            f"{_listed(names, slippage, worst)}; fix or delete those fill rows; nothing written"
        )


def fit_cost_profile(fills: FillSample, cfg: CostConfig, min_fills: int = 30) -> CostProfile:
    """The profile of ``fills`` (module docstring: the screen, the model, the errors, the checks),
    tiers and the participation cap from ``cfg``; its passive fills, never fitted, are reported.
    Raises ``InputError`` with too few market-order fills (naming the minimum and the passive fills),
    fills that cannot separate the parameters, too many fills off the model, or an implausible
    estimate (naming the parameter, its value and the largest logged costs)."""
    n = len(fills.slippage_bps)
    if n < min_fills:
        dropped = sum(fills.dropped.values())
        others = [f"{fills.n_passive} passive (limit) fills left out of the fit"] if fills.n_passive else []
        others += [f"{dropped} more logged fills lacked inputs"] if dropped else []
        extra = f" ({'; '.join(others)})" if others else ""
        raise InputError(
            f"{n} usable market-order fills{extra}; calibrate-costs needs at least {min_fills} (--min-fills)"
        )
    y, names = fills.slippage_bps, _names(fills)
    if not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y))
        raise InputError(f"slippage_bps is not finite for fills {_listed(names, y, bad)}")
    columns, present, tiers = _cost_columns(fills, cfg)
    design = np.column_stack(columns)
    if n <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        raise _rank_error(n, present)
    fitted, resid, scale = _huber_fit(design, y)
    threshold = SCREEN_SIGMAS * scale
    keep = np.abs(resid) <= threshold  # a NaN residual (an overflow) is capped too
    left_out = np.flatnonzero(~keep)
    left_out = left_out[np.argsort(-np.nan_to_num(np.abs(resid[left_out]), nan=np.inf), kind="stable")]
    # capped, not dropped: a genuinely costly fill still raises the estimates, by at most the threshold
    side = np.nan_to_num(np.sign(resid), nan=1.0)
    y_used = np.where(keep, y, fitted + side * threshold)
    if len(left_out) > MAX_OUTLIER_SHARE * n:
        raise InputError(
            f"{len(left_out)} of {n} fills lie more than {SCREEN_SIGMAS:g} robust scales "
            f"({threshold:.3g} bps) from the robust fit, more than {MAX_OUTLIER_SHARE:.0%}: the fills do not "
            f"follow the cost model or many are mis-logged; worst: {_listed(names, y, left_out)}"
        )
    fit = _ols_hc1(design, y_used)
    if fit is None:
        raise _rank_error(n, present)
    beta, se, resid_kept = fit
    reach = [cfg.max_spread_bps, *[1.0] * len(present), float(np.sqrt(cfg.max_participation))]
    labels = ["spread_fraction", *[f"tier_base_bps[{k}]" for k in present], "impact_coef_bps"]
    _check_plausible(
        {name: (float(b), float(s), r) for name, b, s, r in zip(labels, beta, se, reach, strict=True)},
        names,
        y,
    )
    params = [FittedParameter(value=float(b), std_error=float(s)) for b, s in zip(beta, se, strict=True)]
    bases: list[FittedParameter | None] = [None, None, None]
    for k, param in zip(present, params[1:-1], strict=True):
        bases[k] = param
    with_vol = _ols_hc1(np.column_stack([*columns, fills.vol_bps]), y_used)
    vol = (
        None
        if with_vol is None or not np.isfinite([with_vol[0][-1], with_vol[1][-1]]).all()
        else FittedParameter(value=float(with_vol[0][-1]), std_error=float(with_vol[1][-1]))
    )
    decided_at = fills.decided_at
    return CostProfile(
        n_fills=n,
        n_dropped=sum(fills.dropped.values()),
        n_passive=fills.n_passive,
        passive_mean_slippage_bps=fills.passive_mean_slippage_bps,
        n_rereferenced=fills.n_rereferenced,
        fills_from=pd.Timestamp(decided_at.min(), tz="UTC").to_pydatetime(),
        fills_to=pd.Timestamp(decided_at.max(), tz="UTC").to_pydatetime(),
        spread_fraction=params[0],
        tier_base_bps=(bases[0], bases[1], bases[2]),
        tier_fills=(int((tiers == 0).sum()), int((tiers == 1).sum()), int((tiers == 2).sum())),
        impact_coef_bps=params[-1],
        volatility_coef=vol,
        residual_std_bps=float(np.std(resid_kept, ddof=len(beta))),
        tier_thresholds_usd=cfg.tier_thresholds_usd,
        max_participation=cfg.max_participation,
        n_outliers=len(left_out),
        outliers=tuple(
            OutlierFill(
                decision_id=str(names[i]),
                slippage_bps=float(y[i]),
                residual_bps=float(np.nan_to_num(resid[i], nan=y[i])),  # finite: the profile is JSON
            )
            for i in left_out[:_REPORTED]
        ),
        outlier_threshold_bps=threshold,
    )
