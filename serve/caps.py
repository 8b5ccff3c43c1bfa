"""The trading loop's gates and hard exposure caps, applied after the model: one implementation, used
by the service (``serve.decide``) and by the order planner (``serve.orders``). Pure functions.

Gates (:func:`gate_reason`; :func:`gate_reasons` for a request's rows at once): a symbol is *held*
(no new risk: its target may only move toward zero from the current weight; the service keeps it
where it is) when the loop marks it ``trade_blocked``, when it has no quote (bid or ask missing or
non-positive, or crossed), or when its quoted spread ``(ask - bid) / mid`` exceeds the loop's cap
(``LoopRules.spread_cap_for``: 8 bps mega caps, 25 bps other stocks, 35 bps crypto; a stock whose row
has no ``avg_dollar_vol`` gets the strictest equity cap, 8 bps, since it may be a mega cap). A row
that carries its own ``spread_cap_bps`` (the contract's loop sends one) is held to the stricter of it
and the service's cap.

Caps (:func:`cap_targets`), weights as signed fractions of equity, in this order:

1. held symbols keep their current weight; their gross and ``external_gross`` (positions outside
   the universe) come out of the gross budget;
2. per-symbol cap: every movable ``|w| <= per_symbol_cap`` (0.15, the loop's kelly cap);
3. gross cap: the movable weights are scaled down proportionally so that
   ``sum |w| + external_gross <= min(gross_cap, leverage_cap)`` (1.2: the loop's own sizing, and
   2.0: leverage at the close); when held and external gross alone reach it, every movable weight
   goes to 0;
4. crypto cap ("crypto unlevered", ``shared/contracts/README.md``): the same rule over crypto alone,
   the movable crypto weights scaled down so that ``sum_crypto |w| + external_crypto <=
   crypto_gross_cap`` (1.0), whatever the model was trained with; held crypto and ``external_crypto``
   (crypto positions outside the universe, part of ``external_gross``) come out of its budget, and
   when they alone reach it every movable crypto weight goes to 0: an account already over the cap
   gets no answer that adds crypto; and no crypto target opens or grows a short (a model trained
   with ``crypto_long_only`` off is still held long-only), binding as ``crypto_gross_cap``;
5. basket throttle: the gross one answer *adds*, ``sum_i added_i`` with ``added_i = max(0, |w_i| -
   |c_i|)`` and, for a flip through zero, ``added_i = |w_i|`` (the whole new side is new risk), is at
   most ``max_gross_add`` (0.25): each symbol's added part is scaled by the same factor.

Steps 3 to 5 only shrink ``|w|`` with the sign kept, so each step keeps the bounds of the steps
before it; reductions of risk are never throttled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.replay.loop_rules import LoopRules, over_cap
from raytrade.serve.schemas import AppliedCaps, CapName, SymbolSnapshot

_RULES = LoopRules()
_TOL = 1e-12  # the per-symbol cap "binds" when it moves a weight by more than this


MAX_GROSS: Final = 4.0
"""Ceiling of ``gross_cap``, ``leverage_cap`` and ``max_gross_add``: 4x equity, the intraday leverage
a margin account is allowed (DESIGN §4: 2x at the close, 4x intraday); the loop's own caps are 1.2 and
2.0. A larger cap is no cap at all."""
MAX_CRYPTO_GROSS: Final = 1.0
"""Ceiling of ``crypto_gross_cap``: crypto is unlevered (``shared/contracts/README.md``; Alpaca
lends no margin on crypto), so crypto gross is at most the equity."""
MAX_PER_SYMBOL: Final = 1.0
"""Ceiling of ``per_symbol_cap``: one symbol at most the whole equity (``LoopRules.kelly_cap``'s own
bound; the loop's cap is 0.15)."""


class ExposureCaps(BaseModel):
    """Hard caps after the model, fractions of equity; defaults are the loop's (``LoopRules``).

    Every cap is a finite number up to its ceiling (:data:`MAX_PER_SYMBOL`, :data:`MAX_GROSS`): an
    infinite or NaN cap would switch the cap off, so it is refused rather than obeyed."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    per_symbol_cap: float = Field(
        _RULES.kelly_cap, gt=0, le=MAX_PER_SYMBOL, description="cap of one symbol's |target weight|"
    )
    gross_cap: float = Field(
        _RULES.gross_cap, gt=0, le=MAX_GROSS, description="gross exposure cap of the loop's own sizing"
    )
    leverage_cap: float = Field(
        _RULES.leverage_cap_equity, gt=0, le=MAX_GROSS, description="gross leverage cap at the close"
    )
    max_gross_add: float = Field(
        0.25, ge=0, le=MAX_GROSS, description="basket throttle: most gross exposure one answer may add"
    )
    crypto_gross_cap: float = Field(
        _RULES.leverage_cap_crypto,
        gt=0,
        le=MAX_CRYPTO_GROSS,
        description="gross exposure cap of crypto, held outside the universe included (unlevered)",
    )

    @property
    def gross_limit(self) -> float:
        """The binding gross bound: ``min(gross_cap, leverage_cap)``."""
        return min(self.gross_cap, self.leverage_cap)

    def applied(self, binding: tuple[CapName, ...] = ()) -> AppliedCaps:
        """These caps as the response records them, with the ones that bound."""
        return AppliedCaps(**self.model_dump(), binding=list(binding))


class CappedTargets(NamedTuple):
    """:func:`cap_targets`' result: the weights ``[N]`` and the caps that changed them."""

    weights: np.ndarray
    binding: tuple[CapName, ...]


def widest(a: ExposureCaps, b: ExposureCaps) -> ExposureCaps:
    """Each cap the larger of ``a``'s and ``b``'s: what an answer is checked against by a caller
    that holds its account to ``a`` while the service it asks applies ``b``."""
    return ExposureCaps.model_validate(
        {name: max(getattr(a, name), getattr(b, name)) for name in ExposureCaps.model_fields}
    )


def gate_reason(row: SymbolSnapshot, is_crypto: bool, rules: LoopRules = _RULES) -> str | None:
    """Why the loop's gates hold the symbol of ``row`` (no new risk), or None when it may trade."""
    return gate_reasons([row], np.array([is_crypto]), rules)[0]


MAX_QUOTE_MOVE: Final = 3.0
"""The quote band's default (``serve.decide.ServeConfig.max_quote_move``): a mid within a third and
three times the last close (-67 % .. +200 %) is believed; real -40 % and +20 % days are well inside
it, a quote off by a decimal place (1.00 for a $100 stock) is not. Stricter than ingest's bad-print
factor (``replay.bad_prints.BAD_PRINT_FACTOR``, 5): a band holds a symbol for a cycle, a bad print
refuses a whole ingest."""


def gate_reasons(
    rows: Sequence[SymbolSnapshot], is_crypto: np.ndarray, rules: LoopRules = _RULES
) -> list[str | None]:
    """:func:`gate_reason` of each of ``rows`` (``is_crypto [len(rows)]``), the spread caps looked up
    in one vectorised ``LoopRules.spread_cap_for`` call (a request's rows are gated together: the
    per-row call was most of a request's check); a row's own ``spread_cap_bps`` lowers its cap, never
    raises it."""
    volume = [np.nan if row.avg_dollar_vol is None else row.avg_dollar_vol for row in rows]
    caps = rules.spread_cap_for(is_crypto, volume).tolist()
    return [
        _gate_reason(row, cap if row.spread_cap_bps is None else min(cap, row.spread_cap_bps))
        for row, cap in zip(rows, caps, strict=True)
    ]


def _gate_reason(row: SymbolSnapshot, cap: float) -> str | None:
    if row.blocked():
        return f"blocked by the trading loop: {row.blocked_reason()}"
    spread = row.quoted_spread_bps()
    if spread is None:
        return "no two-sided quote"
    if over_cap(spread, cap):  # exceeds it: a quote at the cap computes a hair above it
        return f"spread {spread:.1f} bps > cap {cap:g} bps"
    return None


def added_gross(weights: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per symbol, the exposure moving from ``current`` to ``weights`` adds (see the module doc)."""
    flip = weights * current < 0
    return np.where(flip, np.abs(weights), np.maximum(0.0, np.abs(weights) - np.abs(current)))


def cap_targets(
    target: np.ndarray,
    current: np.ndarray,
    movable: np.ndarray,
    caps: ExposureCaps,
    external_gross: float = 0.0,
    is_crypto: np.ndarray | None = None,
    external_crypto: float = 0.0,
) -> CappedTargets:
    """``target [N]`` held to ``caps`` given the ``current [N]`` weights; symbols not ``movable``
    keep their current weight (steps in the module doc). ``is_crypto [N]`` marks the crypto symbols
    (None: none); ``external_crypto`` is the crypto part of ``external_gross``."""
    target = np.asarray(target, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    movable = np.asarray(movable, dtype=bool)
    binding: list[CapName] = []
    w = np.where(movable, target, current)

    capped = np.where(movable, np.clip(w, -caps.per_symbol_cap, caps.per_symbol_cap), w)
    if np.any(np.abs(capped - w) > _TOL):
        binding.append("per_symbol_cap")
    w = capped

    size = np.abs(w)
    budget = max(0.0, caps.gross_limit - float(size[~movable].sum()) - external_gross)
    moving = float(size[movable].sum())
    if moving > budget:
        w = np.where(movable, w * (budget / moving), w)
        binding.append("gross_cap" if caps.gross_cap <= caps.leverage_cap else "leverage_cap")

    crypto = None if is_crypto is None else np.asarray(is_crypto, dtype=bool)
    if crypto is not None and crypto.shape != w.shape:
        raise ValueError(f"is_crypto has shape {crypto.shape}; the targets have {w.shape}")
    if crypto is not None and crypto.any():  # without crypto symbols step 4 changes nothing
        w = _crypto_capped(w, current, movable, crypto, caps.crypto_gross_cap, external_crypto, binding)

    added = added_gross(w, current)
    total = float(added.sum())
    if total > caps.max_gross_add:
        f = caps.max_gross_add / total
        flip = w * current < 0
        grows = ~flip & (np.abs(w) > np.abs(current))
        w = np.where(flip, w * f, np.where(grows, current + f * (w - current), w))
        binding.append("max_gross_add")
    return CappedTargets(w, tuple(binding))


def _crypto_capped(
    w: np.ndarray,
    current: np.ndarray,
    movable: np.ndarray,
    crypto: np.ndarray,
    cap: float,
    external_crypto: float,
    binding: list[CapName],
) -> np.ndarray:
    """:func:`cap_targets`' step 4 (module doc) on ``w``, appending ``crypto_gross_cap`` to ``binding``
    when it bound."""
    # crypto cannot be shorted (Alpaca; the contract's "crypto unlevered"), whatever the model's
    # training config allowed: a target may reduce a short it finds, never open or grow one
    floor = np.minimum(current, 0.0)
    shorted = movable & crypto & (w < floor - _TOL)
    if np.any(shorted):
        w = np.where(shorted, floor, w)
        binding.append("crypto_gross_cap")
    held_crypto = float(np.abs(w[~movable & crypto]).sum())
    budget = max(0.0, cap - held_crypto - external_crypto)
    moving = float(np.abs(w[movable & crypto]).sum())
    if moving > budget:
        w = np.where(movable & crypto, w * (budget / moving), w)
        binding.append("crypto_gross_cap")
    return w
