"""What a caller holds an answer of ``POST /v1/act`` to before it acts on it: the service's own rules,
checked from the request alone, so that a wrong or hostile service (a bug, a tampered registry, a
proxy in between) cannot hand the trading loop more risk than the service itself would.

:func:`answer_breach` returns the first rule an answer breaks, or None; it runs after the client's
own consistency check (``serve.client``: the symbols asked about, ``as_of``, finite numbers). The
rules, per decision of a symbol the request names (weights as signed fractions of the request's
equity; ``c`` the current weight from the request's positions, ``w`` the target):

* ``current_weight`` is the request's (``position value / equity``): an answer computed for
  another book is not an answer to this one;
* a symbol the loop's gates hold (``serve.caps.gate_reasons`` on the request's row: blocked, no
  quote, spread over its cap) or that the answer marks not ``tradeable`` keeps ``w = c``;
* ``|w| <= per_symbol_cap``, unless the symbol is kept where it is (``w = c``);
* ``sum |w| + e <= max(gross_limit, sum |c| + e)``, ``e`` the gross of the positions outside the
  decisions (the service takes it out of the budget), the same over crypto alone against
  ``crypto_gross_cap`` (``e`` the crypto held outside), and the gross the answer adds
  (``serve.caps.added_gross``) at most ``max_gross_add``;
* crypto opens or grows no short (``w >= min(c, 0)``);
* with the kill switch on (the answer's or the request's), no symbol grows or flips (``|w| <= |c|``,
  the sign kept);
* ``side`` is the sign of ``w`` (``flat`` below :data:`FLAT`) where ``w`` moves;
* ``target_qty``, where given, is the units held for a symbol the answer holds (not ``tradeable``)
  or whose ``w`` is exactly ``c``, else ``w x equity / price`` at the request's price
  (``ActRequest.reference_prices``): the service's own rule.

Each comparison allows :data:`TOLERANCE` of equity (or of the units) for float rounding. The caps are
the caller's (``ExposureCaps``, the service's defaults by default): a service deployed with looser
caps needs the same caps here, or every answer that uses them is refused; a caller whose own caps are
tighter than the service's trims the answer itself (``raytrade live``'s order planner) and checks it
against the looser of the two (:func:`serve.caps.widest`). Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from raytrade.replay.loop_rules import LoopRules, is_crypto_symbol
from raytrade.serve.caps import ExposureCaps, added_gross, gate_reasons
from raytrade.serve.schemas import ActRequest, ActResponse, target_quantity

TOLERANCE: Final = 1e-9
"""Rounding allowed in each comparison, as a fraction of equity (weights) or of the units."""
FLAT: Final = 1e-9
"""A ``|target_weight|`` below this is flat (``serve.decide``'s rule)."""


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def _gross_breach(
    target: np.ndarray, current: np.ndarray, outside: float, cap: float, what: str, cap_name: str
) -> str | None:
    """The service's gross rule (``serve.caps.cap_targets``, steps 3 and 4) over a set of decisions:
    with the positions ``outside`` them (held outside the decisions, their gross as a fraction of
    equity) the targets' gross is at most ``cap``, or at most what it is now where the book is already
    over it; None when it holds."""
    gross, before = float(np.abs(target).sum()), float(np.abs(current).sum())
    if gross + outside <= max(cap, before + outside) + TOLERANCE:
        return None
    held = f" and {outside:.6g} held outside them" if outside > 0 else ""
    return f"{what} {gross:.6g} of the decisions{held} is over the {cap_name} {cap:g} (now {before:.6g})"


def answer_breach(
    request: ActRequest, answer: ActResponse, caps: ExposureCaps, rules: LoopRules | None = None
) -> str | None:
    """The first rule of the module doc that ``answer`` breaks for ``request``, naming the decision
    and the values, or None. Only the decisions of symbols the request names are checked (the
    others are the service's idle holds, which the client drops)."""
    symbols = [s for s in answer.decisions if s in request.analysis]
    if not symbols:
        return None
    request = request.respelled(answer.decisions)  # as the service reads it (ActRequest.respelled)
    equity = request.account.equity
    held_value: dict[str, float] = {}
    for position in request.positions:
        held_value[position.symbol] = held_value.get(position.symbol, 0.0) + position.signed_value()
    crypto = np.array([is_crypto_symbol(s) for s in symbols])
    gated = gate_reasons([request.analysis[s] for s in symbols], crypto, rules or LoopRules())
    units = request.held_quantities()
    prices = request.reference_prices(symbols)
    kill = answer.kill_switch_active or (request.kill_switch is not None and request.kill_switch.active)
    current = np.array([held_value.get(s, 0.0) / equity for s in symbols])
    target = np.array([answer.decisions[s].target_weight for s in symbols])
    for i, symbol in enumerate(symbols):
        d, c, w = answer.decisions[symbol], float(current[i]), float(target[i])
        where = f"decisions.{symbol}"
        if not _close(d.current_weight, c):
            return (
                f"{where}.current_weight is {d.current_weight:.6g}; the request's positions make it {c:.6g}"
            )
        kept = _close(w, c)
        if (gated[i] is not None or not d.tradeable) and not kept:
            why = gated[i] or "not tradeable"
            return f"{where}.target_weight moves {c:.6g} -> {w:.6g} while the symbol is held ({why})"
        if abs(w) > caps.per_symbol_cap + TOLERANCE and not kept:
            return f"{where}.target_weight {w:.6g} is over the per-symbol cap {caps.per_symbol_cap:g}"
        if crypto[i] and w < min(c, 0.0) - TOLERANCE:
            return f"{where}.target_weight {w:.6g} opens or grows a crypto short (current {c:.6g})"
        if kill and (abs(w) > abs(c) + TOLERANCE or w * c < 0):
            return f"{where}.target_weight {w:.6g} grows or flips {c:.6g} under the kill switch"
        side = "flat" if abs(w) < FLAT else ("long" if w > 0 else "short")
        if d.side != side and not kept:  # a hold keeps the position's side, whatever its value
            return f"{where}.side is {d.side!r} for a target weight of {w:.6g}"
        if d.target_qty is not None:  # the service's own rule: the units held where it holds the
            # symbol or its target is exactly the current weight (a gross cap's rescale moves a weight
            # left in place by an ulp, and the service then quotes the weight at the mid)
            held_here = not d.tradeable or w == d.current_weight  # its echo, checked close to c above
            qty = units.get(symbol, 0.0) if held_here else target_quantity(w, equity, prices[i])
            if qty is None or not _close(d.target_qty, qty):
                shown = "no quantity (no price)" if qty is None else f"{qty:.6g}"
                return (
                    f"{where}.target_qty is {d.target_qty:.6g}; the request's book and prices make it {shown}"
                )
    named = set(symbols)
    outside = [abs(p.signed_value()) / equity for p in request.positions if p.symbol not in named]
    outside_crypto = [
        abs(p.signed_value()) / equity
        for p in request.positions
        if p.symbol not in named and is_crypto_symbol(p.symbol)
    ]
    breach = _gross_breach(target, current, sum(outside), caps.gross_limit, "gross", "gross cap")
    crypto_book = (target[crypto], current[crypto], sum(outside_crypto), caps.crypto_gross_cap)
    breach = breach or _gross_breach(*crypto_book, "crypto gross", "crypto gross cap")
    if breach is not None:
        return breach
    gross = float(np.abs(target).sum())
    added = float(added_gross(target, current).sum())
    if added > caps.max_gross_add + TOLERANCE * max(1.0, gross):
        return f"the decisions add {added:.6g} of gross, over the basket throttle {caps.max_gross_add:g}"
    return None
