"""The baseline allocations as pure functions of the data up to bar ``t``: what the evaluation
baselines trade and what a tilt policy (``envs.actions``) starts from.

One rule per baseline, used by the evaluation harness (``envs.evaluation.policies``), the env's tilt
action mode (``envs.gym_envs``), validation scoring and serving (``serve.decide``), so "a zero tilt is
the baseline" holds by construction and is tested end to end:

* ``equal_weight``: ``1/n`` of equity in each listed asset, traded on the first bar of each calendar
  month of the data and on an episode's first bar; every other bar the baseline sends no order
  (``hold``): its book drifts with prices.
* ``inverse_vol``: weights proportional to ``1 / vol_20`` over listed assets with a volatility
  estimate, summing to 1 (cash when none has one), on the same schedule.
* ``kelly_lite``: the live loop's gates and sizing (``envs.evaluation.kelly_lite``), re-decided on
  every bar; a symbol the loop would mark trade blocked (no quote, the spread gate, consensus) is
  held where it is (``locked``: no order, whatever a tilt around it says), its sigma reading the
  closes before the window where the data carries them (``MarketData.close_before``); with
  ``consensus_gate="adaptive"`` it also reads ``fc_min_move_adaptive``, a missing value (the
  loader's 0) read as unknown (the gate stays shut).

A decision is ``allocation`` (the weights the baseline would trade to at ``t``) plus ``hold`` (it sends
no order at ``t``). ``allocation`` is defined on hold bars too (the schedule's target, not the drifted
book), so a tilt around it stays bounded on every bar; a ``locked`` symbol's is its drifted weight,
and no tilt trades it.

An asset held but not listed at ``t`` (a halt, a data hole) cannot trade: ``allocation`` keeps its
current weight there and its exposure comes out of the baseline's budget (``envs.budget``, one rule for
every baseline): ``equal_weight`` and ``inverse_vol`` share ``1 - sum |kept|`` among the listed assets
in their usual proportions, so both stay long-only with gross <= 1 and never borrow; ``kelly_lite``
counts it against each of its caps. The decision therefore reads the current weights ``w_now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, get_args

import numpy as np

from raytrade.envs.budget import kept_weights, within_budget
from raytrade.envs.evaluation.kelly_lite import (
    KELLY_FEATURES,
    AssetFlags,
    KellyInputs,
    KellyLiteConfig,
    asset_flags,
    kelly_lite_decision,
    trailing_sigma,
)
from raytrade.envs.market_data import MarketData

BaselineName = Literal["equal_weight", "inverse_vol", "kelly_lite"]
BASELINE_NAMES: Final[tuple[str, ...]] = get_args(BaselineName)
BASELINE_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "equal_weight": (),
    "inverse_vol": ("vol_20",),
    "kelly_lite": KELLY_FEATURES,
}
"""Store feature columns each baseline reads (the data must carry them, observed or not)."""


class BaselineDecision(NamedTuple):
    """A baseline at bar ``t``: ``allocation [B, N]`` (weights it trades to), ``hold [B, N]`` (no
    order at ``t``: the position is kept exactly) and ``locked [B, N]`` (held because the symbol cannot
    be traded at all: ``kelly_lite``'s trade-blocked symbols; a tilt around the baseline holds them
    too, or a tilt could walk a blocked position away from its drifted weight bar after bar)."""

    allocation: np.ndarray
    hold: np.ndarray
    locked: np.ndarray | None = None

    def weights(self, w_now: np.ndarray) -> np.ndarray:
        """The weights the baseline holds after ``t``'s decision: ``w_now`` where it holds."""
        return np.where(self.hold, w_now, self.allocation)


def month_starts(ts: np.ndarray) -> np.ndarray:
    """``[T]`` bool: the first bar of the window and the first bar of each calendar month."""
    months = ts.astype("datetime64[M]")
    out = np.ones(ts.shape, dtype=bool)
    out[1:] = months[1:] != months[:-1]
    return out


def equal_weights(mask: np.ndarray) -> np.ndarray:
    """``1/n`` over the listed assets of ``mask [..., N]`` (zeros when none is listed)."""
    m = mask.astype(np.float64)
    return m / np.maximum(m.sum(-1, keepdims=True), 1.0)


VOL_FLOOR: Final = 1e-8
"""A per-bar volatility (``vol_20``) at or under this is rounding, no estimate: the returns of a price
that never moved, or of a deterministic path (a stress scenario's shocked constant), have a standard
deviation of 1e-17 or so, whose inverse would put the whole book in that asset. A real quiet asset
(a stablecoin, a money-market fund) moves 1e-5 to 1e-3 a bar."""


def inverse_vol_weights(vol: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``1 / vol`` over listed assets with ``vol > VOL_FLOOR``, normalised to sum 1 (zeros when none)."""
    ok = mask & np.isfinite(vol) & (vol > VOL_FLOOR)
    inv = np.where(ok, 1.0 / np.where(ok, vol, 1.0), 0.0)
    total = inv.sum(-1, keepdims=True)
    return np.where(total > 0, inv / np.where(total > 0, total, 1.0), 0.0)


@dataclass(frozen=True)
class BaselineContext:
    """What a baseline computes once per ``MarketData``: its rebalance schedule, the indices of the
    feature columns it reads, and (``kelly_lite``) the trailing sigma and the asset flags."""

    name: BaselineName
    data: MarketData
    rebalance: np.ndarray  # [T] bool: scheduled rebalance bars (every bar for kelly_lite)
    columns: tuple[int, ...]  # indices into data.feature_names, in BASELINE_FEATURES[name] order
    kelly: KellyLiteConfig
    sigma: np.ndarray | None = None  # [T, N] kelly_lite's trailing sigma
    flags: AssetFlags | None = None


def baseline_context(name: str, data: MarketData, kelly: KellyLiteConfig | None = None) -> BaselineContext:
    """The context of baseline ``name`` over ``data``; an unknown name or a feature column the data
    lacks raises ``ValueError`` naming it."""
    if name not in BASELINE_NAMES:
        raise ValueError(f"baseline {name!r} is not one of {', '.join(BASELINE_NAMES)}")
    cfg = kelly or KellyLiteConfig()
    wanted = cfg.feature_columns() if name == "kelly_lite" else BASELINE_FEATURES[name]
    missing = [c for c in wanted if c not in data.feature_names]
    if missing:
        raise ValueError(
            f"baseline {name!r} reads feature column(s) {missing}, which the data lacks (replay data: "
            f"add them to data.extra_features); available: {list(data.feature_names)}"
        )
    columns = tuple(data.feature_names.index(c) for c in wanted)
    if name == "kelly_lite":
        return BaselineContext(
            "kelly_lite",
            data,
            np.ones(data.n_steps, dtype=bool),
            columns,
            cfg,
            sigma=trailing_sigma(
                data.close, data.listed, cfg.kelly_sigma_closes, data.close_before, data.listed_before
            ),
            flags=asset_flags(data.symbols, data.asset_class, cfg),
        )
    return BaselineContext(name, data, month_starts(data.ts), columns, cfg)  # type: ignore[arg-type]


def _known(data: MarketData, features: np.ndarray, t: np.ndarray, col: int) -> np.ndarray:
    """Feature ``col`` at bars ``t`` with the store's missing values back as NaN (the loader stores
    them as 0; without its missing mask a value <= 0 counts as missing)."""
    values = features[..., col].astype(np.float64)
    missing = data.feature_missing[t, :, col] if data.feature_missing is not None else ~(values > 0)
    return np.where(missing, np.nan, values)


def baseline_decision(
    ctx: BaselineContext, t: np.ndarray, first: np.ndarray, mask: np.ndarray, w_now: np.ndarray
) -> BaselineDecision:
    """The baseline's decision at bars ``t [B]`` (``first [B]``: an episode's first bar, which always
    trades) for listed assets ``mask [B, N]`` and current weights ``w_now [B, N]`` (an unlisted
    asset's is kept, inside the budget: module docstring), from ``ctx.data`` at bars ``<= t`` only."""
    t = np.asarray(t, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    w_now = np.broadcast_to(np.asarray(w_now, dtype=np.float64), mask.shape)
    kept = kept_weights(w_now, mask)
    features = ctx.data.features[t]  # [B, N, F], the same float32 values the observation holds
    if ctx.name == "kelly_lite":
        assert ctx.sigma is not None and ctx.flags is not None
        fc_col, ok_col, spread_col = ctx.columns[:3]
        # "no quote" is the store's null spread (the loop's None); an estimate of 0 from a flat bar is a
        # spread, gated and costed at the loader's filled value like the other policies are charged
        quoted = np.isfinite(_known(ctx.data, features, t, spread_col))
        inputs = KellyInputs(
            fc_mean=features[..., fc_col].astype(np.float64),
            consensus_ok=features[..., ok_col] > 0.5,
            spread_bps=np.where(quoted, ctx.data.spread_bps[t], np.nan),
            dollar_volume=ctx.data.dollar_volume[t],
            sigma=ctx.sigma[t],
            listed=mask,
            min_move=_known(ctx.data, features, t, ctx.columns[3]) if len(ctx.columns) > 3 else None,
            w_now=w_now,
        )
        decided = kelly_lite_decision(inputs, ctx.flags, ctx.kelly)
        allocation = decided.weights + kept + np.where(decided.held, w_now, 0.0)
        blocked = decided.held  # trade blocked: held as it is, no order (kelly_lite rule 8)
    else:
        if ctx.name == "inverse_vol":
            tradeable = inverse_vol_weights(features[..., ctx.columns[0]].astype(np.float64), mask)
        else:
            tradeable = equal_weights(mask)
        allocation = within_budget(tradeable, np.ones(mask.shape[-1], dtype=bool), 1.0, kept) + kept
        blocked = np.zeros(allocation.shape, dtype=bool)
    trade = ctx.rebalance[t] | np.asarray(first, dtype=bool)
    hold = np.broadcast_to(~trade[:, None], allocation.shape) | blocked
    return BaselineDecision(allocation, hold, blocked)
