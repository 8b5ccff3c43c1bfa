"""Orders from a policy answer: pure planning, no broker.

* A symbol trades ``(target - current) * equity`` of notional at the mid. Trades under
  ``min_trade_notional`` are skipped (dust), and no single order may exceed ``max_trade_fraction`` of
  equity (a wrong answer cannot move the whole account at once; the rest follows on later cycles). A
  target of 0 closes the broker's exact quantity (no residue).
* A reduction (an order that only moves a position toward 0, never through it) whose order caps
  allow less than one step (a share; a whole share for a cover that must leave a whole-share short)
  sends one step, or the whole position when smaller: it cannot add exposure, and rounded down to 0
  it would hold the position for ever, kill-switch unwinds included (:func:`_most_reduced`). A
  target on the other side of 0 reduces the same way first (the flip closes first). A buy,
  or a sale that adds to a short, never exceeds a cap. A known dollar volume of 0 is no market: it
  reduces nothing either.
* Whenever an order cap keeps a symbol from its target this cycle (or a reduction goes above it), the
  note names the symbol, the cap and the amounts; :func:`plan_cycle` returns the notes of symbols
  that send no order with the orders (the live loop logs them and writes them on their decision
  rows; :func:`plan_orders` returns the orders alone).
* Participation: where the symbol's latest bar dollar volume is known (``dollar_volume``: the
  store's ``dollar_volume_20``, what the simulator caps its fills with), an order's notional is also
  capped at ``max_participation`` (the simulator's ``CostConfig.max_participation``, 10 %) of it;
  the rest of the move is dropped and the next cycle re-plans from the actual holdings, as in the
  simulator. A known dollar volume of 0 (nothing traded over the window) is no capacity: the symbol
  is held, neither bought nor sold, as the simulator fills nothing there. Where it is unknown (no
  store, a symbol without features yet) only the equity-fraction cap applies: the planner does not
  invent a volume.
* ``aggressive``, ``probe`` and ``flat`` are market orders; ``passive`` is a limit order resting at
  the near touch (buy at the bid, sell at the ask); ``hold`` and a fallback answer send nothing.
* Alpaca will not flip a position through zero in one order, nor sell shares an open order already
  holds, so a flip only closes this cycle (with a note) and the new side opens on the next one; crypto
  cannot be shorted, so a negative crypto target closes to 0 (with a note).
  Equities trade whole shares unless ``fractional`` (a sale that opens or adds to a short is whole
  shares even then: Alpaca refuses fractional short sales); crypto to ``crypto_qty_step`` units.
  With ``fractional``, a buy that covers part of a short (the position stays short) leaves a
  whole-share short: it buys up to the whole share at or below ``held + delta``, i.e.
  ``floor(held + delta) - held`` (a short of 25 asked to cover 17.5 buys 17 and stays short 8), so it
  never buys more than planned; a fractional short would be refused by Alpaca on the next sale that
  adds to it. A buy that would cross from short to long is a flip: it covers to flat (the exact
  short, whole shares when the short is) and the long opens next cycle from a flat position.
  Equity orders are ``day``, crypto ``gtc``.
* The broker's asset flags (``assets``: :class:`AssetFlags` per symbol, Alpaca's ``GET
  /v2/assets``) hold what Alpaca would refuse every cycle: a symbol that is not ``tradable`` sends no
  order (held, noted); an equity that is not ``fractionable`` trades whole shares even with
  ``fractional``; an equity Alpaca will not sell short (not ``shortable``, or not
  ``easy_to_borrow``: Alpaca opens shorts only in easy-to-borrow assets) has its target held at
  ``max(target, min(current, 0))`` (noted): no short opens and none grows, a long closes to 0 and a
  short held may still be covered; a crypto order is in multiples of the pair's
  ``min_trade_increment`` (the smallest such multiple at or above ``crypto_qty_step``) and one below
  its ``min_order_size`` is not sent (noted), unless it closes the whole position. Fail closed: a
  symbol whose flags are missing from ``assets`` (the broker could not read them) adds no risk this
  cycle (noted): only an order that reduces its position toward 0 without crossing it goes out, in
  whole shares, so no fractional or short flag is guessed (a crypto pair: only an order closing the
  whole position, its quantity increment being unknown: a part was refused off it); a kill-switch
  unwind larger than one order's cap still comes down by that cap each cycle (only a whole exit went
  out before: a 400-share unwind capped at 250 sent nothing while the flags could not be read).
  ``assets`` None (a caller without a broker) applies none of this: the steps of ``LiveConfig`` alone.
* Hard caps, again: the targets are held to ``LiveConfig.caps`` by ``serve.caps.cap_targets`` (the
  service's own implementation) against the account's actual holdings at the mid, so repeated cycles
  cannot walk past the per-symbol, gross, leverage or crypto caps, nor add more gross per cycle than
  the basket throttle, whatever the answers say. The crypto cap counts every crypto position
  (``replay.loop_rules.is_crypto_symbol``), those outside the answer included, and the worst case of
  resting crypto orders. A reduction its order cap cuts short (a quarter of equity
  per order, or the participation share of a thin bar) frees only the gross it really frees: that
  symbol is fixed at the weight one order reaches and the others are capped again against it
  (``_within_reach``), and a reduction is rounded up to the next share, never down (above its cap by
  under one step where the cap allows less than one, see above). An answer with a
  non-finite target or current weight sends nothing, like a fallback (``serve.client`` already holds
  on one). Symbols that do not trade this cycle (held, no quote) keep their holdings, which count
  against the gross budget, as do held positions outside the answer (at the mid where quoted, else at
  the broker's market value).
* Resting orders (``RestingOrder``: an earlier order that may still fill, e.g. its cancel failed or
  is pending) hold their symbol (no new order on top of one), and the worst case of their unfilled
  remainder counts against the gross budget before anything is sized: per symbol, with ``c`` its
  current signed value and ``R_buy`` / ``R_sell`` the signed notional of its resting buys / sells,
  ``max(0, |c + R_buy| - |c|, |c + R_sell| - |c|)`` of equity (partial fills keep the position
  between ``c + R_sell`` and ``c + R_buy``, and ``|x|`` is largest at an end; for one order this is
  ``max(0, |c + r| - |c|)``). The remainder is priced at the highest price known for it (its limit
  price, its reference price, the symbol's mid, the position's price). Fail closed: a resting order
  whose size, side, symbol or price is unknown holds new risk for the cycle (no order adds gross;
  reductions still go out), with a note on each plan. The per-symbol cap needs no remainder: a
  symbol with a resting order is held, so no new order sizes against it.
* A symbol the answer keeps (target weight = current weight, :func:`moves`) is held at the loop's
  own weight, which only a binding cap moves (toward 0): the service weighs holdings at the broker's
  market value, the loop at the mid, and the gap is no trade. A target of 0 closes what is held.
  While the answer's kill switch is on, an order that would add to a position or open one is
  dropped with a note: the unwind only reduces, whatever the prices say.
* The loop's own spread gate, again: a symbol whose quote is wider than the loop's cap
  (``LoopRules.spread_cap_for``: 8 bps mega caps by ``dollar_volume``, 25 bps other stocks, 35 bps
  crypto, the strictest stock cap where the volume is unknown; the service's gate, ``serve.caps``,
  which sees the same dollar volumes) is held this cycle whatever the answer says (a service of
  another version, a misconfigured one), as the service holds it: no order, and its position is
  valued at the broker's market value, not at the mid of a quote that wide (a pre-open 95 / 905 would
  mark a $100 short at $500). The note names the spread and the cap. A market order there would pay
  the half spread at once; the next cycle with a tradeable quote trades it.
* Sizing equity (:func:`sizing_equity`): the live loop sizes with the smaller of the broker's equity
  and the account marked at this cycle's prices (cash plus each position at its mid where the quote
  is tradeable and within the loop's cap, else at its market value), so a stale equity (the broker's
  marks at yesterday's close while the quotes show a gap) does not size orders, or measure caps,
  against money the account no longer has.
* ``client_order_id`` is derived from the decision, so a resubmission of the same decision is a
  duplicate the broker refuses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.costs import CostConfig
from raytrade.envs.gate_modes import LIMIT_GATE_MODES
from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.replay.loop_rules import LoopRules, coin_quote, over_cap
from raytrade.replay.sources.alpaca import TopOfBook, is_crypto_symbol
from raytrade.serve.caps import ExposureCaps, cap_targets
from raytrade.serve.schemas import ActResponse, SymbolDecision

OrderSide = Literal["buy", "sell"]

CLIENT_ORDER_PREFIX = "rt-"
"""Every ``client_order_id`` this project sends starts with it: the live loop adopts the broker's open
orders with it that its state does not know (and leaves the account's other orders alone)."""


class LiveConfig(BaseModel):
    """How answers become orders."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_trade_notional: float = Field(25.0, ge=0, description="skip trades below this notional")
    max_trade_fraction: float = Field(
        0.25, gt=0, le=2, description="cap on one order's notional, fraction of equity"
    )
    max_participation: float = Field(
        CostConfig().max_participation,
        gt=0,
        le=1,
        description="cap on one order's notional, fraction of the symbol's latest bar dollar volume "
        "(the simulator's fill cap; applied where that volume is known)",
    )
    fractional: bool = Field(False, description="trade fractional equity shares (else whole shares)")
    crypto_qty_step: float = Field(1e-6, gt=0, description="crypto quantity increment")
    fractional_qty_step: float = Field(1e-4, gt=0, description="equity increment when fractional")
    caps: ExposureCaps = Field(ExposureCaps(), description="hard exposure caps on the planned holdings")
    peak_lookback_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="a new state file's peak equity is the broker's highest daily equity over this window",
    )
    max_quote_age_hours: float = Field(
        96.0,
        gt=0,
        allow_inf_nan=False,
        description="a quote older than this, by its own timestamp, is no quote: the symbol is held this "
        "cycle (96 h spans a long weekend of a closed market; a halted or delisted symbol's last quote "
        "is older); crypto has its own limit",
    )
    max_open_quote_age_minutes: float = Field(
        30.0,
        gt=0,
        allow_inf_nan=False,
        description="while the equity market is open (the broker's clock), an equity quote older than "
        "this is no quote: the symbol is held this cycle (a stock halted for news keeps its last quote "
        "from before the halt, hours old; an order sized on it rests until the halt lifts and fills at "
        "the reopen's price). A clock that cannot be read counts as open",
    )
    max_crypto_quote_age_hours: float = Field(
        2.0,
        gt=0,
        allow_inf_nan=False,
        description="the same for a crypto symbol: crypto quotes around the clock, so its quote is "
        "seconds to minutes old; one hours old means the feed or the pair is broken (2 h leaves room "
        "for a quiet pair)",
    )
    account_lock_dir: Path | None = Field(
        None,
        description="folder of the per-account locks (one live loop per account, whatever its state "
        "file); None: ~/.raytrade/live/locks",
    )
    max_unreadable_order_cycles: int = Field(
        5,
        ge=1,
        description="a pending order the broker cannot read on this many consecutive cycles (for a "
        "reason other than a 404) stops the loop: it holds its symbol, and a person must look",
    )
    kill_switch: KillSwitchConfig | None = Field(
        None,
        description="the loop's own kill-switch rule; None: the served policy's (GET /v1/model: "
        "kill_switch), which the loop advances its switch with once per cycle. A rule set here must be "
        "at least as strict as the served one on every parameter, release_after_bars equal, or the loop "
        "refuses to start (serve.kill_switch_rule); it is also the rule kept on when the served one is "
        "disabled",
    )


class AssetFlags(NamedTuple):
    """What the broker allows on one asset (Alpaca's ``GET /v2/assets/{symbol}``; the live loop's
    ``Broker.assets``): any order at all (``tradable``), an equity in fractions of a share
    (``fractionable``), a short sale (``shortable``, and ``easy_to_borrow``: Alpaca opens shorts only
    in easy-to-borrow assets); for a crypto pair, the fewest units one order may have
    (``min_order_size``) and its quantity step (``min_trade_increment``), None where the broker states
    none. The defaults allow everything (a test double's broker)."""

    tradable: bool = True
    fractionable: bool = True
    shortable: bool = True
    easy_to_borrow: bool = True
    min_order_size: float | None = None
    min_trade_increment: float | None = None

    def why_no_short(self) -> str | None:
        """Why the broker will not open or add to a short of this asset, or None when it will."""
        if not self.shortable:
            return "not shortable at the broker"
        if not self.easy_to_borrow:
            return "hard to borrow at the broker (Alpaca shorts only easy-to-borrow assets)"
        return None


class RestingOrder(BaseModel):
    """An earlier order that may still fill (its cancel failed, is pending, or its outcome is not
    known yet): ``remaining_qty`` unfilled units on ``side`` of ``symbol``, each None when unknown;
    ``limit_price`` its limit, ``reference_price`` the highest other price the caller knows for it
    (the mid it was planned at, the symbol's mid, its position's price), each None when there is none.
    Its size is unknown (:meth:`why_unknown`) unless all of these are known and it has a price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str | None
    side: OrderSide | None
    remaining_qty: float | None = Field(description="unfilled units; None: unknown")
    limit_price: float | None = Field(None, description="its limit price, per unit")
    reference_price: float | None = Field(None, description="another price known for it, per unit")
    label: str = Field("", description="how logs and notes name the order (its client id)")

    def why_unknown(self) -> str | None:
        """Why the notional this order can still add cannot be known, or None when it can."""
        if self.symbol is None:
            return "no symbol"
        if self.side is None:
            return "no side"
        if not _non_negative(self.remaining_qty):
            return f"no unfilled quantity (remaining_qty={self.remaining_qty!r})"
        if not (_positive(self.limit_price) or _positive(self.reference_price)):
            return "no price"
        if (coin := coin_quote(self.symbol)) is not None:
            return f"priced in {coin}, not in dollars"
        return None


class RestingExposure(NamedTuple):
    """:func:`resting_exposure`'s result: the worst-case gross (fraction of equity) the resting orders
    can still add, and the labels of those whose size cannot be known (they hold new risk)."""

    added_gross: float
    unknown: tuple[str, ...]


class OrderPlan(BaseModel):
    """One order to send (``qty`` > 0 units; ``limit_price`` only for limit orders)."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    side: OrderSide
    qty: float = Field(gt=0)
    order_type: Literal["market", "limit"]
    limit_price: float | None = None
    time_in_force: Literal["day", "gtc"]
    client_order_id: str
    decision_id: str
    gate_mode: str
    target_weight: float
    mid: float
    note: str | None = None


# ------------------------------------------------------------------------------------ planning


QUOTE_CLOCK_SKEW_HOURS = 5.0 / 60.0
"""How far after the loop's clock a quote may be stamped and still count (5 minutes: two clocks that
disagree a little); one stamped later comes from a feed whose clock is wrong, and its prices too may
be anything: it is held like a stale quote."""


def stale_quotes(
    quotes: Mapping[str, TopOfBook],
    now: datetime,
    max_age_hours: float,
    max_crypto_age_hours: float,
    max_open_age_hours: float | None = None,
) -> dict[str, float]:
    """The symbols whose quote is older than their limit at ``now``, with their age in hours: a crypto
    symbol's limit is ``max_crypto_age_hours`` (it quotes around the clock, so an old quote is a broken
    feed), any other's ``max_age_hours`` (an equity's last quote is days old over a long weekend), or
    ``max_open_age_hours`` where that is given and smaller (the equity market is open: a quote hours
    old is a halted stock's). A quote stamped more than :data:`QUOTE_CLOCK_SKEW_HOURS` after ``now`` is
    in the result too, with its (negative) age: a feed that far ahead has a broken clock."""
    equity_limit = max_age_hours if max_open_age_hours is None else min(max_age_hours, max_open_age_hours)
    ages = {s: (now - q.ts).total_seconds() / 3600.0 for s, q in quotes.items()}
    return {
        s: age
        for s, age in ages.items()
        if age > (max_crypto_age_hours if is_crypto_symbol(s) else equity_limit)
        or age < -QUOTE_CLOCK_SKEW_HOURS
    }


def _round_down(qty: float, step: float) -> float:
    """``qty`` floored to a multiple of ``step`` (printed cleanly: 0.0666, not 0.06659999999999999)."""
    return round(math.floor(qty / step + 1e-9) * step, 9)


def _round_up(qty: float, step: float) -> float:
    """``qty`` raised to a multiple of ``step``."""
    return round(math.ceil(qty / step - 1e-9) * step, 9)


class _TradeCap(NamedTuple):
    """The largest notional one order for a symbol may have, and how notes name it."""

    notional: float
    text: str


def _trade_cap(
    symbol: str, equity: float, cfg: LiveConfig, dollar_volume: Mapping[str, float] | None
) -> _TradeCap:
    """``max_trade_fraction`` of equity, or ``max_participation`` of the symbol's bar dollar volume
    when that is known and smaller."""
    cap = cfg.max_trade_fraction * equity
    text = f"order cap ({cfg.max_trade_fraction:.0%} of equity {equity:,.0f}: ${cap:,.2f})"
    volume = float((dollar_volume or {}).get(symbol, math.nan))
    if math.isfinite(volume) and volume >= 0 and cfg.max_participation * volume < cap:
        cap = cfg.max_participation * volume
        text = (
            f"participation cap ({cfg.max_participation:.0%} of the bar's dollar volume {volume:,.0f}: "
            f"${cap:,.2f})"
        )
    return _TradeCap(cap, text)


def _most_reduced(held: float, cap_qty: float, step: float, whole_short: bool) -> float:
    """The most units one order may take off the position ``held`` toward 0 (never through it) under
    an order cap of ``cap_qty`` units: the whole position when it fits under the cap, else the cap in
    whole ``step``s (for a short that must stay whole shares, ``whole_short``: the cover that lands on
    a whole share). Where that is nothing but the cap is not 0, the least order there is: one step
    (the cover to the next whole share), or the whole position when smaller. An order that only
    reduces cannot add exposure, so it may exceed its cap by less than one step rather than never go
    out: a position one share of which is worth more than the cap would otherwise be held forever
    (even by the kill switch's unwind). A cap of 0 (a known dollar volume of 0: no market) reduces
    nothing."""
    size = abs(held)
    if size <= cap_qty:
        return size
    if cap_qty <= 0:
        return 0.0
    if whole_short:
        return _whole_share_cover(held, cap_qty) or _whole_share_cover(held, min(1.0, size))
    return _round_down(cap_qty, step) or min(step, size)


class _OrderLimits(NamedTuple):
    """One symbol's order limits this cycle, at its ``mid``: its order cap, that cap in units, its
    order step, the most one order may take off its position (:func:`_most_reduced`), and its lot
    (:func:`_lot`)."""

    cap: _TradeCap
    cap_qty: float
    step: float
    most: float
    mid: float
    lot: _Lot


def _order_limits(
    symbol: str,
    mid: float,
    held: float,
    equity: float,
    cfg: LiveConfig,
    dollar_volume: Mapping[str, float] | None,
    lot: _Lot,
) -> _OrderLimits:
    cap = _trade_cap(symbol, equity, cfg, dollar_volume)
    cap_qty, step = cap.notional / mid, lot.step
    whole_short = _whole_short(symbol, held, lot.fractional)
    return _OrderLimits(cap, cap_qty, step, _most_reduced(held, cap_qty, step, whole_short), mid, lot)


def _whole_share_cover(held: float, delta: float) -> float:
    """The buy, at most ``delta`` (> 0) units, that covers part of the short ``held`` (< 0) and leaves a
    whole-share short: the position after it is ``held + delta`` floored to a whole share (0 when no
    whole share fits: nothing to send)."""
    return max(round(_round_down(held + delta, 1.0) - held, 9), 0.0)


class _Lot(NamedTuple):
    """How one symbol's orders are sized: its quantity ``step``, whether an equity trades in fractions
    of a share (``fractional``), and the fewest units one order may have (``min_qty``; 0: no least)."""

    step: float
    fractional: bool
    min_qty: float


def _lot(symbol: str, cfg: LiveConfig, flags: AssetFlags | None, unread: bool = False) -> _Lot:
    """``symbol``'s lot under ``cfg`` and the broker's ``flags`` (None: none known, ``cfg`` alone): an
    equity in ``fractional_qty_step`` when ``cfg.fractional`` and the asset is fractionable (not when
    its flags could not be read, ``unread``), else in whole shares; crypto in ``crypto_qty_step``
    raised to a multiple of the pair's ``min_trade_increment``, no order under its ``min_order_size``."""
    if is_crypto_symbol(symbol):
        step = cfg.crypto_qty_step
        increment = None if flags is None else flags.min_trade_increment
        if increment is not None:
            step = _round_up(step, increment)
        least = None if flags is None else flags.min_order_size
        return _Lot(step, True, least or 0.0)
    fractional = cfg.fractional and not unread and (flags is None or flags.fractionable)
    return _Lot(cfg.fractional_qty_step if fractional else 1.0, fractional, 0.0)


class CyclePlan(NamedTuple):
    """:func:`plan_cycle`'s result: the orders to send, and for each symbol of the answer that sends
    no order this cycle although a rule stopped it short of its target (an order cap, an exposure cap,
    the crypto long-only rule, a resting order of unknown size), why: ``notes`` maps it to the note
    its order would have carried. The live loop logs these and writes them on the decision rows."""

    orders: list[OrderPlan]
    notes: dict[str, str]


def plan_orders(
    answer: ActResponse,
    equity: float,
    quotes: Mapping[str, TopOfBook],
    held_qty: Mapping[str, float],
    cycle_id: str,
    cfg: LiveConfig | None = None,
    dollar_volume: Mapping[str, float] | None = None,
    held_value: Mapping[str, float] | None = None,
    resting: Sequence[RestingOrder] = (),
    assets: Mapping[str, AssetFlags] | None = None,
) -> list[OrderPlan]:
    """The orders of :func:`plan_cycle` (the same arguments), without the notes of the symbols that
    send none."""
    return plan_cycle(
        answer, equity, quotes, held_qty, cycle_id, cfg, dollar_volume, held_value, resting, None, assets
    ).orders


def plan_cycle(
    answer: ActResponse,
    equity: float,
    quotes: Mapping[str, TopOfBook],
    held_qty: Mapping[str, float],
    cycle_id: str,
    cfg: LiveConfig | None = None,
    dollar_volume: Mapping[str, float] | None = None,
    held_value: Mapping[str, float] | None = None,
    resting: Sequence[RestingOrder] = (),
    reduce_only: str | None = None,
    assets: Mapping[str, AssetFlags] | None = None,
) -> CyclePlan:
    """The orders that move the account from its positions (``held_qty``, signed units) towards
    ``answer``'s target weights (pure; see the module doc for the rules), with the notes of the
    symbols that send none. ``dollar_volume`` maps a symbol to its latest bar dollar volume; a
    missing, non-finite or negative one is unknown. ``held_value`` maps a held symbol to the broker's
    (signed) market value of it: a position outside the answer that has no quote here counts against
    the gross budget at that value. ``resting``: the earlier orders that may still fill; their symbols
    are held and the worst case of their unfilled remainders comes out of the gross budget first (one
    of unknown size holds all new risk). A pair quoted in a coin (``ETHBTC``) is held as one without a
    quote: its quotes are in the coin, and the sizing here is in dollars (``live.loop_universe``
    refuses to trade one; this holds one that reaches the planner anyway). ``reduce_only``: why no
    order may add to a position this cycle (as under the kill switch), None when orders may.
    ``assets``: the broker's flags per symbol (module doc: a symbol missing from it is held but for a
    reduction); None: none known, the steps of ``cfg`` alone."""
    cfg = cfg or LiveConfig()
    quotes = {s: q for s, q in quotes.items() if coin_quote(s) is None}
    # a quote wider than the loop's cap neither trades nor marks: held, valued at its market value
    gated = loop_spread_gates(quotes, list(dict.fromkeys([*answer.decisions, *held_qty])), dollar_volume)
    quotes = {s: q for s, q in quotes.items() if s not in gated}
    weights = [w for d in answer.decisions.values() for w in (d.target_weight, d.current_weight)]
    if answer.fallback or not all(math.isfinite(w) for w in weights):
        return CyclePlan([], {})  # a NaN would pass every cap (NaN > cap is False) and size a full order
    flags = {s: None if assets is None else assets.get(s) for s in answer.decisions}
    asset_holds = _asset_holds(answer, held_qty, assets)
    unread = {s for s, f in flags.items() if assets is not None and f is None}  # only a reduction goes
    no_short = {
        s: why
        for s, f in flags.items()
        if f is not None and not is_crypto_symbol(s) and (why := f.why_no_short())
    }
    limits = {
        symbol: _order_limits(
            symbol,
            mid,
            float(held_qty.get(symbol, 0.0)),
            equity,
            cfg,
            dollar_volume,
            _lot(symbol, cfg, flags[symbol], symbol in unread),
        )
        for symbol in answer.decisions
        if (mid := tradeable_mid(quotes.get(symbol))) is not None
    }
    # the most each symbol's weight can move this cycle, away from 0 and toward it (a reduction may
    # exceed its cap by under one step)
    grow = {s: _round_down(lim.cap_qty, lim.step) * lim.mid / equity for s, lim in limits.items()}
    shrink = {s: lim.most * lim.mid / equity for s, lim in limits.items()}
    targets = _capped_targets(
        answer,
        equity,
        quotes,
        held_qty,
        cfg.caps,
        held_value or {},
        resting,
        (grow, shrink),
        _AssetRules(frozenset(asset_holds), no_short),
    )
    plans: list[OrderPlan] = []
    notes: dict[str, str] = {}
    for symbol, d in answer.decisions.items():
        if symbol not in targets:
            why_held = gated.get(symbol) or asset_holds.get(symbol)
            held_note = _loop_hold_note(symbol, d, held_qty, quotes, resting, why_held)
            # the risk the gate (or the asset's flags) keeps on the book is said, every cycle it stays
            until = (
                "a quote within the cap"
                if symbol in gated
                else "its flags can be read"
                if symbol in unread
                else "the broker trades it"
            )
            stuck = (
                _gated_risk_note(symbol, why_held, held_value or {}, equity, cfg, answer, until)
                if why_held is not None
                else None
            )
            if said := "; ".join(n for n in (held_note, stuck) if n is not None):
                notes[symbol] = said
            continue
        book = quotes[symbol]
        cap, cap_qty, step, most, mid, lot = limits[symbol]
        crypto = is_crypto_symbol(symbol)
        target, aim, note = targets[symbol]
        held = float(held_qty.get(symbol, 0.0))
        side, qty, closing, flip = _sized(
            held, target * equity / mid, mid, cap_qty, most, step, crypto, cfg, lot.fractional
        )
        if flip is not None:
            note = f"{note}; {flip}" if note else flip
        if qty > 0 and qty * mid < cfg.min_trade_notional and not closing:
            qty = 0.0  # dust
        if 0 < qty < lot.min_qty and not closing:
            least = (
                f"{symbol}: a {side} of {qty:g} units is below the broker's minimum order size "
                f"({lot.min_qty:g}): not sent"
            )
            note, qty = (f"{note}; {least}" if note else least), 0.0
        reduces = (side == "sell" and 0 < qty <= held) or (side == "buy" and 0 < qty <= -held)
        if crypto and symbol in unread:  # a pair's increment unknown: only the whole position is sure
            reduces = closing and qty == abs(held)
        if symbol in unread and qty > 0 and not reduces:
            unknown = (
                f"{symbol}: its asset flags could not be read from the broker: only a reduction goes out, "
                f"not a {side} of {qty:g} from {held:+g}"
            )
            note, qty = (f"{note}; {unknown}" if note else unknown), 0.0
        capped = _cap_note(symbol, held, aim * equity / mid, qty, cap_qty, cap.text, mid, step)
        if capped is not None:
            note = f"{note}; {capped}" if note else capped
        if qty <= 0:
            move = aim * equity / mid - held  # what the exposure caps allow, before the order caps
            if note is None and abs(move) * mid >= cfg.min_trade_notional:  # not dust, yet nothing
                note = _rounded_away_note(symbol, move, mid, step, short=held + move < 0 and not crypto)
            if note is not None:
                notes[symbol] = note
            continue
        why_reduce = "kill switch on" if answer.kill_switch_active else reduce_only
        if why_reduce is not None and _grows(side, held):  # unwind only, whatever the prices say
            kill = f"{symbol}: {why_reduce}: unwind only, a {side} of {qty:g} from {held:+g} would add to it"
            notes[symbol] = f"{kill}; {note}" if note else kill
            continue
        passive = d.gate_mode in LIMIT_GATE_MODES  # a limit at the near touch (envs.gate_modes)
        decision_id = f"{cycle_id}:{symbol}"
        plans.append(
            OrderPlan(
                symbol=symbol,
                side=side,
                qty=qty,
                order_type="limit" if passive else "market",
                limit_price=(book.bid if side == "buy" else book.ask) if passive else None,
                time_in_force="gtc" if crypto else "day",
                client_order_id=_client_order_id(decision_id),
                decision_id=decision_id,
                gate_mode=d.gate_mode,
                target_weight=target,
                mid=mid,
                note=note,
            )
        )
    return CyclePlan(plans, notes)


def moves(d: SymbolDecision, held: float) -> bool:
    """Whether the answer moves the symbol (``held``: the loop's signed units of it): its target weight
    is not its current weight, or it is 0 while the loop holds some (a close, whatever the service
    saw). One the answer keeps is held where the loop has it: the service weighs positions at the
    broker's market value and the loop at the quote's mid, and trading the difference (the units held
    times the gap between the two prices) would defeat the no-trade band, and under the kill switch
    could add to a position (the answer's ``target_qty`` for a kept symbol is the units held). The
    loop's own caps still apply to it (:func:`_capped_targets`: its target is its current weight, so
    only a binding cap moves it, toward 0)."""
    return abs(d.target_weight - d.current_weight) > 1e-12 or (d.target_weight == 0 and held != 0)


def _loop_hold_note(
    symbol: str,
    d: SymbolDecision,
    held_qty: Mapping[str, float],
    quotes: Mapping[str, TopOfBook],
    resting: Sequence[RestingOrder],
    gate: str | None = None,
) -> str | None:
    """Why the loop holds a symbol the answer would move (the service's own holds carry its
    ``reason``): an earlier order of it may still fill, its quote is wider than the loop's cap
    (``gate``, :func:`loop_spread_gates`) or its asset flags hold it (``gate`` too,
    :func:`_asset_holds`), or it has no tradeable quote. None when the answer does not move it (its
    target is its current weight, or the service holds it)."""
    if d.gate_mode == "hold" or not d.tradeable:
        return None
    labels = [o.label or "an order" for o in resting if o.symbol == symbol]
    if labels:  # its position may still change: said even when the answer would not move it
        why = f"an earlier order ({', '.join(labels)}) may still fill"
    elif not moves(d, held := float(held_qty.get(symbol, 0.0))) or (held == 0 and d.target_weight == 0):
        return None  # the answer does not move it
    elif (coin := coin_quote(symbol)) is not None:
        why = f"a pair quoted in {coin}: its quotes are in {coin}, the orders are sized in dollars"
    elif gate is not None:
        why = gate
    elif tradeable_mid(quotes.get(symbol)) is None:
        why = "no tradeable quote (missing, stale, crossed or one-sided)"
    else:
        return None
    return f"{symbol}: held this cycle, target {d.target_weight:+.4f} not pursued: {why}"


def _gated_risk_note(
    symbol: str,
    gate: str,
    held_value: Mapping[str, float],
    equity: float,
    cfg: LiveConfig,
    answer: ActResponse,
    until: str = "a quote within the cap",
) -> str | None:
    """What a symbol held by the loop's spread gate (or by its asset flags: ``gate`` says why, ``until``
    what it waits for) keeps on the book that the caps or the kill switch would otherwise take off
    (None: nothing): a position over the per-symbol cap, or any position while the kill switch
    unwinds. Both wait for a quote within the cap, as the service's gate waits."""
    value = float(held_value.get(symbol, 0.0))
    weight = value / equity if math.isfinite(value) and equity > 0 else 0.0
    parts = []
    if abs(weight) > cfg.caps.per_symbol_cap + 1e-12:
        cap = cfg.caps.per_symbol_cap
        parts.append(f"over the per-symbol cap ({weight:+.4f} of equity at its market value > {cap:g})")
    if answer.kill_switch_active and weight != 0:
        parts.append("not unwound by the kill switch")
    if not parts:
        return None
    return f"{symbol}: {' and '.join(parts)} while {gate}: held until {until}"


def _asset_holds(
    answer: ActResponse, held_qty: Mapping[str, float], assets: Mapping[str, AssetFlags] | None
) -> dict[str, str]:
    """Per symbol of the answer that its asset flags hold this cycle, why: the broker does not trade it,
    or its flags are missing from ``assets`` and the answer does not reduce the position toward 0 (a
    reduction is planned, and sent only as one: whole shares, never past 0). None of them when
    ``assets`` is None."""
    if assets is None:
        return {}
    out = {}
    for symbol, d in answer.decisions.items():
        flags = assets.get(symbol)
        held = float(held_qty.get(symbol, 0.0))
        # to 0 or past it (the order goes to 0 at most), or nearer it on the same side
        reduces = held != 0 and (d.target_weight * held <= 0 or abs(d.target_weight) < abs(d.current_weight))
        if flags is None and not reduces:
            out[symbol] = "its asset flags could not be read from the broker (only a reduction goes out)"
        elif flags is not None and not flags.tradable:
            out[symbol] = "the broker does not trade the asset (tradable=false)"
    return out


def _rounded_away_note(symbol: str, move: float, mid: float, step: float, short: bool) -> str:
    """The note of a move above ``min_trade_notional`` that rounds to no order: less than one order
    step (a whole share for a short, which Alpaca takes in whole shares only)."""
    unit = "1 share (a short is whole shares)" if short else f"one step ({step:g} units)"
    value = f"${abs(move) * mid:,.2f}"
    return f"{symbol}: the {move:+g} units ({value}) to its target are less than {unit}: no order"


def _whole_short(symbol: str, held: float, fractional: bool) -> bool:
    """A short of an equity traded in fractions: a buy that covers part of it must leave a whole-share
    short."""
    return held < 0 and fractional and not is_crypto_symbol(symbol)


def _grows(side: OrderSide, held: float) -> bool:
    """Whether an order of ``side`` adds to the position ``held`` (opens one from flat included)."""
    return held >= 0 if side == "buy" else held <= 0


def _sized(
    held: float,
    target_qty: float,
    mid: float,
    cap_qty: float,
    most: float,
    step: float,
    crypto: bool,
    cfg: LiveConfig,
    fractional: bool,
) -> tuple[OrderSide, float, bool, str | None]:
    """One symbol's order toward ``target_qty`` from ``held`` (units): its side, its quantity (0: none;
    the caller drops dust that does not close), whether it closes the position, and the note of a
    flip. ``cap_qty``: one order's cap in units; ``most``: the most a reduction may take off
    (:func:`_most_reduced`); ``fractional``: the equity trades in fractions of a share."""
    want = target_qty - held
    side: OrderSide = "buy" if want > 0 else "sell"
    if want == 0 or (abs(want) * mid < cfg.min_trade_notional and not (target_qty == 0 and held != 0)):
        return side, 0.0, False, None  # nothing to do, or dust
    delta = max(-cap_qty, min(cap_qty, want))
    new_qty = held + delta
    closing = (target_qty == 0 and most >= abs(held)) or (held != 0 and new_qty == 0)
    flip = None
    if held != 0 and not closing and (held > 0) != (new_qty > 0):  # through zero: close first
        new_side = "long" if new_qty > 0 else "short"
        closing, flip = True, f"flip: closing {held:+g} first; the {new_side} side opens next cycle"
    # Alpaca sells short whole shares only: a sale that opens or adds to a short is not fractional.
    if side == "sell" and new_qty < 0 and not crypto:
        step = 1.0
    if closing:
        qty = abs(held)
    elif side == "buy" and held < 0 and fractional and not crypto:  # a partial cover
        qty = min(_whole_share_cover(held, want), most)
    elif abs(new_qty) < abs(held) and (held > 0) == (new_qty > 0):  # a reduction: never less of it
        qty = min(_round_up(abs(want), step), most)
    else:
        qty = _round_down(abs(delta), step)
    return side, qty, closing, flip


def _cap_note(
    symbol: str, held: float, aim_qty: float, sent: float, cap_qty: float, cap: str, mid: float, step: float
) -> str | None:
    """The note of an order cap that binds: the move from ``held`` to ``aim_qty`` (the target the
    exposure caps allow) is larger than one order may be, so the ``sent`` units (0: none) leave part
    of it for later cycles; or ``sent`` is above the cap (a reduction of one step, see
    :func:`_most_reduced`). None when no order cap binds."""
    move = abs(aim_qty - held)
    tol = 1e-9 * max(cap_qty, 1.0)
    if move <= cap_qty + tol and sent <= cap_qty + tol:
        return None
    side = "buy" if aim_qty > held else "sell"
    left = max(move - sent, 0.0)
    rest = (
        f"{left:g} of the {move:g} units (${move * mid:,.2f}) to its target are re-planned next cycle"
        if left > 1e-9 * max(move, 1.0)
        else ""
    )
    if sent > cap_qty + tol:
        over = (
            f"{symbol}: one step ({step:g} units, ${step * mid:,.2f}) is more than the {cap}; this "
            f"reduction {side}s {sent:g} anyway, as it cannot add exposure"
        )
        return f"{over}; {rest}" if rest else over
    return f"{symbol}: the {cap} holds this cycle's {side} to {sent:g} units; {rest}"


class MarkedBook(NamedTuple):
    """The account marked at a cycle's quotes (:func:`marked_book`)."""

    equity: float  # cash plus every value below; NaN where a value is unknown
    values: dict[str, float]  # per held symbol, its signed value at the mid, else the broker's


def marked_book(
    cash: float,
    held_qty: Mapping[str, float],
    held_value: Mapping[str, float],
    quotes: Mapping[str, TopOfBook],
    dollar_volume: Mapping[str, float] | None = None,
) -> MarkedBook:
    """``cash`` plus each position's signed units at its quote's mid where the quote is tradeable and
    within the loop's spread cap (:func:`loop_spread_gates`), else at its broker market value
    (``held_value``; missing: NaN)."""
    gated = loop_spread_gates(quotes, list(held_qty), dollar_volume)
    values = {}
    for symbol, qty in held_qty.items():
        mid = None if symbol in gated else tradeable_mid(quotes.get(symbol))
        values[symbol] = qty * mid if mid is not None else float(held_value.get(symbol, math.nan))
    return MarkedBook(cash + sum(values.values()), values)


def sizing_equity(
    equity: float,
    cash: float,
    held_qty: Mapping[str, float],
    held_value: Mapping[str, float],
    quotes: Mapping[str, TopOfBook],
    dollar_volume: Mapping[str, float] | None = None,
) -> float:
    """The equity orders are sized with: the smaller of the broker's ``equity`` and the account marked
    at this cycle's prices (:func:`marked_book`). A broker that still marks a position at yesterday's
    close after a gap reports money the account no longer has; sized on it, the caps (fractions of
    equity) would let orders add risk past them. A mark that is not finite (a position of unknown
    value) is no evidence: the broker's equity stands. The result may be <= 0 (the account worth
    nothing at the quotes): the caller decides what to do with no equity to size with."""
    return equity_to_size(equity, marked_book(cash, held_qty, held_value, quotes, dollar_volume))


def equity_to_size(equity: float, marked: MarkedBook) -> float:
    """:func:`sizing_equity` of a book already marked: the smaller of ``equity`` and ``marked``'s, the
    broker's where the mark is unknown (NaN)."""
    return min(equity, marked.equity) if math.isfinite(marked.equity) else equity


def loop_spread_gates(
    quotes: Mapping[str, TopOfBook], symbols: Sequence[str], dollar_volume: Mapping[str, float] | None
) -> dict[str, str]:
    """The loop's own spread gate (module doc): per symbol of ``symbols`` whose tradeable quote is
    wider than its cap (``LoopRules.spread_cap_for``; a missing, non-finite or negative dollar
    volume is unknown: the strictest stock cap), why the loop holds it this cycle."""
    books = {s: b for s in symbols if (b := quotes.get(s)) is not None and _tradeable_book(b)}
    if not books:
        return {}
    names = list(books)
    volume = [_known_volume((dollar_volume or {}).get(s)) for s in names]
    caps = LoopRules().spread_cap_for([is_crypto_symbol(s) for s in names], volume).tolist()
    out = {}
    for symbol, cap in zip(names, caps, strict=True):
        book = books[symbol]
        spread = (book.ask - book.bid) / (0.5 * (book.ask + book.bid)) * 1e4
        if over_cap(spread, cap):
            out[symbol] = f"spread {spread:.1f} bps > the loop's cap {cap:g} bps"
    return out


def _known_volume(value: float | None) -> float:
    return value if _non_negative(value) and value is not None else math.nan


def _tradeable_book(book: TopOfBook | None) -> bool:
    return book is not None and 0 < book.bid <= book.ask


def tradeable_mid(book: TopOfBook | None) -> float | None:
    """The mid of a two-sided, uncrossed book (``0 < bid <= ask``), else None."""
    return 0.5 * (book.bid + book.ask) if book is not None and _tradeable_book(book) else None


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _non_negative(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def resting_exposure(
    resting: Sequence[RestingOrder],
    equity: float,
    current: Mapping[str, float],
    prices: Mapping[str, float],
) -> RestingExposure:
    """The gross (fraction of ``equity``) the ``resting`` orders can still add if they fill, at worst
    (the module doc's ``max(0, |c + R_buy| - |c|, |c + R_sell| - |c|)`` summed over symbols), and the
    orders whose size cannot be known (:meth:`RestingOrder.why_unknown`). ``current`` maps a symbol
    to its signed weight (one missing from it is taken at the bound ``|c + r| - |c| <= |r|``);
    ``prices`` maps a symbol to a price known for it (mid, position price). Each remainder is priced
    at the highest of its limit price, its reference price and that price."""
    buys: dict[str, float] = {}
    sells: dict[str, float] = {}
    unknown: list[str] = []
    for o in resting:
        if o.symbol is None or o.side is None or o.remaining_qty is None or o.why_unknown():
            unknown.append(o.label or o.symbol or "an order of unknown symbol")
            continue
        candidates = (o.limit_price, o.reference_price, prices.get(o.symbol))
        price = max(p for p in candidates if p is not None and _positive(p))
        side = buys if o.side == "buy" else sells
        side[o.symbol] = side.get(o.symbol, 0.0) + o.remaining_qty * price / equity
    added = 0.0
    for symbol in sorted(buys.keys() | sells.keys()):
        up, down = buys.get(symbol, 0.0), -sells.get(symbol, 0.0)
        c = current.get(symbol)
        if c is None or not math.isfinite(c):
            added += max(up, -down)
        else:
            added += max(0.0, abs(c + up) - abs(c), abs(c + down) - abs(c))
    return RestingExposure(added, tuple(unknown))


class _AssetRules(NamedTuple):
    """What the asset flags change in :func:`_capped_targets`: the symbols they hold (not moved), and
    per equity the broker will not sell short, why."""

    held: frozenset[str] = frozenset()
    no_short: Mapping[str, str] = {}


def _capped_targets(
    answer: ActResponse,
    equity: float,
    quotes: Mapping[str, TopOfBook],
    held_qty: Mapping[str, float],
    caps: ExposureCaps,
    held_value: Mapping[str, float],
    resting: Sequence[RestingOrder] = (),
    reach: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
    rules: _AssetRules | None = None,
) -> dict[str, tuple[float, float, str | None]]:
    """Per symbol that trades this cycle: its weight for this cycle, its target after the crypto
    long-only rule, the short rule of its asset flags (``rules``: no short opens or grows) and the
    caps (``serve.caps.cap_targets`` over the whole account, with the resting orders' worst case out
    of the gross budget: see the module doc), and a note. ``reach``: per symbol, the most its weight
    can move this cycle away from 0 and toward it (one order's cap; a reduction may exceed it by under
    one step, :func:`_most_reduced`); this cycle's weights are held within it, and a reduction it cuts
    short frees only the gross it really frees."""
    rules = rules or _AssetRules()
    busy = {o.symbol for o in resting if o.symbol is not None} | rules.held
    symbols = list(answer.decisions)
    target, current = np.zeros(len(symbols)), np.zeros(len(symbols))
    movable = np.zeros(len(symbols), dtype=bool)
    notes: list[str | None] = [None] * len(symbols)
    prices = {s: mid for s, b in quotes.items() if (mid := tradeable_mid(b)) is not None}
    for i, symbol in enumerate(symbols):
        d, mid = answer.decisions[symbol], prices.get(symbol)
        held = float(held_qty.get(symbol, 0.0))
        value = float(held_value.get(symbol, math.nan))
        if mid is not None:
            current[i] = held * mid / equity
        elif held != 0 and math.isfinite(value):  # the broker's value, over the equity sized with
            current[i] = value / equity
        else:
            current[i] = d.current_weight if held != 0 else 0.0
        movable[i] = d.gate_mode != "hold" and d.tradeable and mid is not None and symbol not in busy
        target[i] = d.target_weight if moves(d, held) else current[i]  # kept: only the caps move it
        if is_crypto_symbol(symbol) and d.target_weight < 0:
            target[i], notes[i] = 0.0, f"crypto cannot be shorted: target {d.target_weight:+.4f} -> 0"
        elif (why := rules.no_short.get(symbol)) is not None and target[i] < min(current[i], 0.0):
            was, target[i] = target[i], min(current[i], 0.0)  # no short opens, none grows
            notes[i] = f"{symbol} {why}: no short opens or grows: target {was:+.4f} -> {target[i]:+.4f}"
    weight = dict(zip(symbols, current.tolist(), strict=True))  # signed, for the resting orders
    external = external_crypto = 0.0  # positions outside the answer: at the mid where quoted, else at
    for symbol, qty in held_qty.items():  # the broker's value; crypto ones also in external_crypto
        if symbol in answer.decisions or qty == 0:
            continue
        outside = 0.0
        if (mid := prices.get(symbol)) is not None:
            weight[symbol] = qty * mid / equity
            outside = abs(weight[symbol])
        elif math.isfinite(value := float(held_value.get(symbol, 0.0))):
            outside = abs(value) / equity
            if symbol in held_value:
                weight[symbol] = value / equity
        external += outside
        external_crypto += outside if is_crypto_symbol(symbol) else 0.0
    for symbol, qty in held_qty.items():
        value = float(held_value.get(symbol, math.nan))
        if symbol not in prices and qty != 0 and _positive(abs(value / qty)):
            prices[symbol] = abs(value / qty)
    worst = resting_exposure(resting, equity, weight, prices)
    crypto_resting = [o for o in resting if o.symbol is not None and is_crypto_symbol(o.symbol)]
    worst_crypto = resting_exposure(crypto_resting, equity, weight, prices).added_gross
    hold_note = None
    if worst.unknown:  # fail closed: an order that may fill by an unknown amount holds all new risk
        caps = caps.model_copy(update={"max_gross_add": 0.0})
        hold_note = f"open order of unknown size may still fill ({', '.join(worst.unknown)}): no new gross"
    grow, shrink = ({}, {}) if reach is None else reach
    capped = _within_reach(
        target,
        current,
        movable,
        caps,
        _External(
            float(external + worst.added_gross),
            float(external_crypto + worst_crypto),
            np.array([is_crypto_symbol(s) for s in symbols], dtype=bool),
        ),
        _reach_of(symbols, grow),
        _reach_of(symbols, shrink),
    )
    out: dict[str, tuple[float, float, str | None]] = {}
    for i, symbol in enumerate(symbols):
        if not movable[i]:
            continue
        w, aim, note = float(capped.weights[i]), float(capped.aim[i]), notes[i]
        if hold_note is not None:
            note = f"{note}; {hold_note}" if note else hold_note
        if abs(aim - target[i]) > 1e-12:  # the order caps (reach) are noted by plan_cycle
            which = ", ".join(capped.binding) or "the order caps of this cycle"  # reach alone moved it
            limited = f"caps ({which}): target {target[i]:+.4f} -> {aim:+.4f}"
            note = f"{note}; {limited}" if note else limited
        out[symbol] = (w, aim, note)
    return out


def _reach_of(symbols: Sequence[str], reach: Mapping[str, float]) -> np.ndarray:
    """Per symbol, the most its weight can move this cycle (inf: unbounded)."""
    return np.array([reach.get(s, math.inf) for s in symbols])


class _External(NamedTuple):
    """What :func:`_within_reach` caps against besides the answer's symbols: the gross held outside
    them (positions, resting orders' worst case), its crypto part, and which symbols are crypto."""

    gross: float
    crypto: float
    is_crypto: np.ndarray


class _Reached(NamedTuple):
    """:func:`_within_reach`'s result: this cycle's weights, the targets the caps allow (``aim``: where
    the weights head, beyond this cycle's reach) and the caps that bound."""

    weights: np.ndarray
    aim: np.ndarray
    binding: tuple[str, ...]


def _within_reach(
    target: np.ndarray,
    current: np.ndarray,
    movable: np.ndarray,
    caps: ExposureCaps,
    external: _External,
    grow: np.ndarray,
    shrink: np.ndarray,
) -> _Reached:
    """``cap_targets``, with each symbol's move held to its reach this cycle: ``shrink`` toward 0 (a
    reduction, never through 0: ``shrink <= |current|``), ``grow`` otherwise. A reduction the reach
    cuts short (one order cannot bring ``|weight|`` down to its target's) frees less gross than the
    caps counted on: that symbol is fixed at the weight it can reach and the others are capped again
    against it, until no reduction is cut short; a growth cut short only adds less."""
    fixed = np.zeros(len(target), dtype=bool)
    base = current.copy()
    aim = current.copy()
    while True:
        capped = cap_targets(
            target, base, movable & ~fixed, caps, external.gross, external.is_crypto, external.crypto
        )
        w = capped.weights
        # cut short: the least |weight| one order reaches (on the held side) is above the target's
        short = movable & ~fixed & (np.abs(current) - shrink > np.abs(w) + 1e-12)
        if not short.any():
            break
        fixed |= short
        aim = np.where(short, w, aim)
        base = np.where(
            short, current + np.sign(w - current) * np.where(short, shrink, 0.0), base
        )  # 0 x inf: none
    # a move through 0 first reduces (the flip closes first, or reduces by its reach toward 0, the
    # one-step rule included: with grow alone a position one step big under a cap below one step
    # would never reverse), so it may move by the larger of the two reaches
    reducing = (np.abs(w) < np.abs(current)) & (w * current >= 0)
    through = w * current < 0
    reach = np.where(reducing, shrink, np.where(through, np.maximum(grow, shrink), grow))
    weights = np.where(fixed, base, np.clip(w, current - reach, current + reach))
    return _Reached(weights, np.where(fixed, aim, w), capped.binding)


def _client_order_id(decision_id: str) -> str:
    """A broker-safe id derived from the decision (stable across retries of the same decision, so a
    resubmission is a duplicate the broker refuses, and a lost answer can be looked up by it)."""
    return CLIENT_ORDER_PREFIX + "".join(c if c.isalnum() or c in "-_" else "-" for c in decision_id)[:100]
