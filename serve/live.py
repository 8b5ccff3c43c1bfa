"""``raytrade live --paper``: the trading loop itself, on an Alpaca paper account.

One cycle: read the account, positions and top of book from the broker; ask the policy service
(:mod:`serve.client`, with its no-new-risk fallback); turn the answer into orders
(:func:`plan_orders`); submit them; log every decision (and, next cycle, every fill) into the replay
store's ``experience`` table, which offline RL and cost calibration read.

Design decisions
----------------
* **Orders from weights:** :mod:`serve.orders` (caps, dust, execution mode, broker rules).
* **Drawdown.** The account's running peak equity is kept in a small state file (atomic, fsynced
  writes), so ``drawdown_pct`` survives restarts; the service's kill switch reads it. A missing state
  file is refused unless the caller asks for a new one (``reset``): silently starting over would
  reset the peak and disarm the kill switch. A new one starts from the broker's own high-water mark
  (the highest daily equity of its portfolio history, ``LiveConfig.peak_lookback_days``), so a loop
  restarted on an account already in drawdown still sees that drawdown. A file with a non-finite
  number or a peak that is not positive is unreadable, refused like malformed JSON (``reset`` or not).
* **Kill switch.** The loop carries the drawdown kill switch the service applies (replicas keep no
  state): each cycle whose answer observes a new bar (``features_as_of``) advances it, by
  ``serve.client.KillSwitchTracker``, with the rule the served policy was trained with, and the request
  carries it. A cycle whose answer observes the bar the switch was last advanced at (a weekend's or a
  holiday's cycle, or a loop cycling more often than the policy's bars) asks again with the switch as it
  was (``KillSwitchTracker.settle``): counted by cycles, a loop cycling daily released the 20-bar switch
  after 13 sessions. :meth:`LiveLoop.start` reads that rule
  from ``GET /v1/model`` (``serve.client.served_kill_switch``) before anything is ordered and
  ``serve.kill_switch_rule.loop_rule`` settles it against ``LiveConfig.kill_switch`` (unset: the served
  rule; a configured rule looser on any parameter is refused, naming both
  (``serve.kill_switch_rule.KillSwitchRuleError``); a stricter one is kept, logged; a served rule that
  is disabled keeps the loop's own switch on, logged). Every cycle reads the rule again before it
  advances the switch (one ``GET /v1/model``), so a hot swap between cycles is advanced with the new
  rule. The cycle's decision is one deadline (``PolicyAsker.deadline``: the client's
  ``total_deadline_s``, taken after the broker's reads): the rule read, the act, and a re-read and a
  redo after a swap (below) each get what is left of it, so a cycle waits for the service no longer than
  that, and never acts on a rule read longer ago. One it cuts ends as the client ends it: on the act, an
  outage hold (its advance kept until an answer has said a bar, then undone: ``KillSwitchTracker.settle``);
  on a rule read, a hold for want
  of the rule (below). A rule that cannot be read (the service down, an answer without a complete, valid
  one, a read the deadline cut) holds the cycle, as an outage does, with the reason (which of the two)
  logged and on the decision rows, which report the saved switch, not advanced. A swap between the read
  and the act shows as an answer from another model version, or as the service refusing the switch's
  count (HTTP 422 on ``kill_switch.bars_active``: the new policy releases sooner); either makes the loop
  read the rule once more: another rule redoes the bar's advance with it and asks again; the same rule
  keeps an answer of its model; one that cannot be read, an answer from yet another version, or a count
  refused again (or under the same rule) holds the cycle; a refused rule stops the loop before it orders
  anything. A held cycle saves no switch, so the next cycle advances the saved one with the rule it
  reads: a loop is never stuck on a refused count. The state file keeps the switch (``kill_switch``:
  active, bars since it tripped, the cycle's time, the rule it was advanced with, the bar it observed
  then), so a restart does not
  disarm a tripped switch. One advanced under another rule (or recorded without one, by an earlier
  version) loads and is advanced with the current rule from its state: a count past the current
  ``release_after_bars`` releases at the next cycle, as the current rule would have. Its peak is the
  file's ``peak_equity`` (one peak), except after a timed release restarted the switch's peak below the
  account's: then ``kill_switch.peak_equity`` holds it, until the account's peak is the switch's again.
  A file without one (an earlier version's, or a new one) starts it off from the file's peak and
  advances it: a drawdown at the trigger turns it on at once. An answer with the service's switch on
  while the loop's is off (the service's trigger stricter than the rule the cycle read: its
  ``kill_drawdown`` lowered between the read and the act, the version unchanged) trips the loop's at
  that bar, 0 bars, as ``PolicyClient`` does: saved so, it holds under the rule's release instead of
  re-risking as soon as the service's own trigger lets go.
* **Universe.** The loop trades ``symbols`` in the broker's spelling (:func:`loop_universe`: ``BTC/USD``
  is ``BTCUSD``; one named twice is refused, and so is a pair quoted in a coin, ``ETH/BTC``: its
  quotes are in BTC and the loop sizes in dollars), matched once against the served universe (``GET
  /v1/model``'s ``symbols``, at start or at the first cycle that can read it; a pair in either
  spelling): a symbol the model does not decide is named in a warning and held (the service refuses a
  request naming one); none decided refuses to start (:class:`UniverseError`). A pair the universe
  spells otherwise than the broker (``BTC/USD``, a store ingested from CSV) is asked about, its
  position sent, in the universe's spelling, and the answer read back in the broker's
  (:func:`_respelled`), so its quotes, positions and orders stay the broker's. After a hot
  swap to a model that no longer decides some of them, a cycle asks only about those it decides and
  holds the others, logged (their positions still sent, counted against the caps); with none left it
  holds everything, saying so, its kill switch still advanced with the rule it read.
* **One loop, one account.** The state file is locked (``fcntl.flock`` on ``<state>.lock``) for the
  loop's life, so a second loop on it refuses to start; it records the broker's account id, and a
  state file of another account is refused. The account itself is locked too, once the broker has
  named it (:meth:`LiveLoop.start`): ``<LiveConfig.account_lock_dir>/<account id>.lock`` (default
  ``~/.raytrade/live/locks``), held for the loop's life, so a second loop on the same account with
  another state file refuses to start as well, naming the account and the holder's pid and state
  file (two loops would cancel each other's orders and trade one account twice).
* **An order is never sent twice.** Each planned order's ``client_order_id`` is derived from its
  decision id and written to the state file (status ``planned``) *before* it is submitted, and
  marked ``submitted`` after. On start and every cycle, a ``planned`` order is looked up at the
  broker by client id (adopted if it exists, dropped if the broker never saw it), and the broker's
  open orders with the project's client-id prefix that the state does not know are adopted (tracked,
  so their fills are logged, and cancelled by the next decision like any resting order). A submit
  that errors is looked up by client id before it is called rejected (a timeout or a 5xx says
  nothing of whether the order was placed; the broker sends it once, never retried: see
  ``serve.alpaca_broker.AlpacaBroker.submit``); when even the look-up fails, or it misses an order
  the broker did not refuse (only an answered 4xx other than 408 and 429 is a refusal:
  ``replay.sources.alpaca.SourceError.refused``), it stays ``planned`` and the next cycle resolves it.
* **The order record comes first.** The state file is saved before the experience rows are logged,
  and the rows are logged in quarantine mode (``ReplayWriter(on_error="quarantine")``): a row that
  cannot be written is kept aside under ``_quarantine/`` and never costs an order record. A done
  order stays in the state file until its fill row is logged, so a crash or a failed log between the
  save and the log does not forget the fill (the next cycle logs it; the store's de-duplication
  keeps it from counting twice). The cycle's decision rows are saved in the state file too
  (``unlogged_rows``, with the submitted orders) and cleared once logged, so a crash between the
  save and the log does not lose them either: the next cycle (a restarted loop's first) logs them
  with its own, skipping any the store already holds (a crash after the write, before the clear).
  A run without a store keeps them for a run with one; a store whose writes keep failing cannot grow
  them past ``serve.decision_rows.MAX_UNLOGGED_ROWS`` (the oldest are dropped, with an error). The
  rows reach the state file before the submits too, provisional (their orders' outcome unknown), so
  a crash during the submits loses none: the next cycle settles each from the broker's answer to
  its order's client id (submitted with the broker's order id, or never received) and logs it; a
  row whose order's submit and look-up both failed waits, provisional, until the look-up succeeds
  (:mod:`serve.decision_rows`).
* **A fill is logged once.** The loop de-duplicates by decision id: rows whose ``decision_id`` is
  already in the store's ``experience`` table (or twice in one batch) are not appended again (the
  store is the one place that says what was logged). The writer refuses such a row as well (it
  checks ids against the table under its lock), so one that gets past the loop is quarantined. Both
  read the stored ids through one ``replay.stored_keys.KeyCache`` the loop keeps for its life, so a
  cycle reads only the experience files committed since the last cycle, not the whole table.
* **Only a final state is done** (:func:`order_is_open`): an order whose status is not one of Alpaca's
  final states (filled, canceled, expired, rejected, replaced) is open, ``pending_review`` and any
  status the loop does not know included.
* **A new decision supersedes resting orders.** Orders of earlier cycles that are still open are
  cancelled before the new ones go out; what they filled is logged once the broker reports them done
  (an order being cancelled or replaced can still fill, so it stays tracked). A symbol with an order
  that may still fill and cannot be cancelled (the cancel failed, or a ``planned`` order is not
  resolved yet) is held for the cycle: a new order on top of it could double the position. The
  worst case its unfilled remainder can add (``qty - filled_qty``, recorded with the intent before
  the submit, or read from the broker for an adopted order) counts against the gross budget
  (:class:`serve.orders.RestingOrder`); one whose size is unknown (a record of an earlier version
  without ``qty``, until the broker reports it) holds every order that adds gross, with a warning.
* **An order the broker cannot read stops the loop.** A pending order whose look-up fails (for a
  reason other than a 404, which drops it; for a ``planned`` order, its look-up by client id) holds
  its symbol on that cycle, and the failures are counted per order in the state file (reset by a
  successful read). After
  ``LiveConfig.max_unreadable_order_cycles`` of them in a row the loop stops with
  :class:`UnreadableOrderError`, naming the order's client id, symbol and last error, before it
  cancels or submits anything that cycle: it would otherwise hold the symbol silently for ever. It
  never resubmits the order or drops it on a guess (the earlier cycles send it the ordinary
  supersede cancel, which may fail too); the state file keeps it for the restart.
* **Stale quotes are no quotes.** A quote older than ``LiveConfig.max_quote_age_hours`` (96 h: an
  equity's last quote over a long weekend) or, for crypto, ``max_crypto_quote_age_hours`` (2 h: crypto
  quotes around the clock, so an old one is a broken feed) is dropped for the cycle, with a warning;
  so is one stamped more than five minutes after the loop's clock (``orders.QUOTE_CLOCK_SKEW_HOURS``:
  a feed whose clock is wrong). While the equity market is open (:meth:`Broker.market_open`, read each
  cycle; a clock that cannot be read counts as open), an equity quote older than
  ``max_open_quote_age_minutes`` (30) is stale too: a stock halted for news keeps its pre-halt quote,
  and an order sized on it rests until the reopen and fills at whatever price that brings.
* **Sized on what the account is worth now.** Orders are sized, and the loop's caps measured, with
  the smaller of the broker's equity and the account marked at this cycle's quotes
  (``orders.sizing_equity``): a broker equity still at yesterday's marks after a gap is not spent.
  Where the marked account is worth over ``MARK_GAP_WARNING`` less, the request (equity, positions,
  drawdown), the kill switch and the peak take it too (``_marked_account``).
  An account worth nothing at the quotes sends only orders that reduce a position (sized on the
  broker's figure), with an error line.
* **One bad order is one bad order.** A rejected order is logged with the broker's message and the
  cycle goes on.
* **Only orders the broker takes.** Each cycle reads the broker's flags of its symbols
  (:meth:`Broker.assets`: Alpaca's assets, cached by ``serve.alpaca_broker.AlpacaBroker``), and the
  planner keeps to them (``serve.orders``): no order on an asset the broker does not trade, whole
  shares of one it does not trade in fractions, no short opened or grown where it will not lend the
  shares, crypto in its pair's increment and not under its minimum order. Alpaca refuses such an
  order, every cycle: a position over its cap was never cut. A symbol whose flags cannot be read adds
  no risk that cycle, logged and noted: only a reduction toward 0 goes out, in whole shares (a crypto
  pair: its whole position).
* **Decisions become transitions one cycle later.** When the service returns the observation it
  acted on (``ActResponse.observation``: the flat env observation), the decision is kept in memory
  and, on the next cycle, logged as one transition row per symbol of the policy's universe
  (``replay.experience``'s columns: episode, step, asset index, the asset's slice of the observation
  and the portfolio state, its action, the reward, the next observation, terminal, truncated, and
  the service's ``observation_spec`` of the observation: an offline learner refuses transitions
  encoded otherwise than its env, or without one),
  with the next cycle's observation as ``next_observation`` and ``log(equity_next / equity)`` as the
  reward (the env's default reward, net log growth). The next observation is filled on the next
  cycle, not at read time, so each step's rows are written in one batch as the transition reader needs. One
  loop object's chain of transitions is one episode (``live:<first cycle id>``), its cycles the
  steps; a decision that is no transition ends it, and the next transition starts one of its own
  (``live:<cycle id>``, step 0), so an episode's steps are consecutive; ``terminal`` and
  ``truncated`` are false (an account does not end). A decision with no next observation (the
  session's last, one followed by a fallback answer, a change of the policy's universe or a
  non-positive equity) is not a transition; its decision row is logged as always. Nor is one whose
  next answer comes from another model version or encoding (``observation_spec``: a hot swap, a
  nightly retrain): its next observation would be in the other policy's numbers, so the swap ends
  the episode and the new version's decisions start one of their own (``live:<cycle id>``, step 0).
  Transitions are written after the cycle's fills and decisions, in their own batch, and an error
  there is logged, never raised: it cannot cost an order record or a fill row.
* **Real money is off.** Only a paper account is supported; the CLI refuses to run without
  ``--paper``, and :mod:`serve.alpaca_broker` refuses any trading URL but Alpaca's paper host or
  loopback, and any account that is not a paper account.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.replay.errors import InputError, first_problem
from raytrade.replay.exchange_calendar import daily_bars_between, trading_days_between
from raytrade.replay.loop_rules import coin_quote, is_crypto_symbol
from raytrade.replay.sources.alpaca import SourceError, TopOfBook, parse_symbol
from raytrade.replay.stored_keys import KeyCache
from raytrade.replay.timeutil import LONGEST_INTRADAY_BAR
from raytrade.serve.decision_rows import (
    PROVISIONAL,
    bounded_rows,
    decision_rows,
    experience_frame,
    is_provisional,
    new_decisions,
    row_for_state,
    row_from_state,
    settle_rows,
)
from raytrade.serve.fallback import hold_everything
from raytrade.serve.kill_switch_rule import (
    REFUSED_COUNT,
    RULE_UNKNOWN_MODEL,
    Held,
    LoopRule,
    Refused,
    RuleUnknown,
    ask_under_served_rule,
    log_rule_change,
    shown_rule,
)
from raytrade.serve.orders import (
    CLIENT_ORDER_PREFIX,
    AssetFlags,
    CyclePlan,
    LiveConfig,
    MarkedBook,
    OrderPlan,
    RestingOrder,
    equity_to_size,
    marked_book,
    plan_cycle,
    stale_quotes,
    tradeable_mid,
)
from raytrade.serve.schemas import ActRequest, ActResponse, CallerKillSwitch

if TYPE_CHECKING:
    from raytrade.serve.client import Deadline, KillSwitchTracker

log = logging.getLogger("raytrade.live")

CANCEL_CONFIRM_S = 2.0
"""How long a cycle waits, polling, to see the cancels it sent done before it plans (``LiveLoop._cancel``)."""
CANCEL_POLL_S = 0.2

FINAL_ORDER_STATES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
"""The Alpaca order states (alpaca-py's ``OrderStatus``) after which an order can no longer fill:
filled in full, cancelled, expired, refused, or replaced by another order. Every other status can
still fill (Alpaca's ``new``, ``partially_filled``, ``pending_review``, ``done_for_day``, ``held``,
``pending_cancel``, ...) and so can any status this list does not know (one Alpaca adds later): see
:func:`order_is_open`."""


def order_is_open(status: str) -> bool:
    """Whether an order in ``status`` may still fill, so the loop keeps it (tracked, cancelled before
    its symbol is re-planned, its fills logged once it is done). Fail closed: only a known final state
    (:data:`FINAL_ORDER_STATES`) is done; an unknown status counts as open, since an order wrongly
    taken for done is never cancelled, gets a second order on top, and its fill is never logged."""
    return status.strip().lower() not in FINAL_ORDER_STATES


# ------------------------------------------------------------------------------------ broker

MARK_GAP_WARNING: Final = 0.005
"""The account marked at the quotes this far (a fraction) under the broker's equity is logged: a
smaller gap is the half spread of the positions (mids against last trades)."""


class BrokerAccount(NamedTuple):
    equity: float
    cash: float
    buying_power: float
    last_equity: float | None
    account_id: str = ""
    blocked: str | None = None  # why the broker takes no order on the account now (None: it does)


class BrokerPosition(NamedTuple):
    """A position in the store's symbol spelling (``BTCUSD``), ``qty`` signed (short < 0)."""

    symbol: str
    qty: float
    market_value: float
    current_price: float | None


class OrderNotFound(LookupError):
    """The broker has no order of this id (``Broker.order``): it cannot fill. Were it open after all,
    the next cycle's sync would adopt it from the broker's listing of open orders."""


class OrderState(NamedTuple):
    """An order as the broker reports it (``symbol`` in the store's spelling; the fields after
    ``filled_at`` are filled where the broker says them, e.g. in :meth:`Broker.open_orders`; ``qty``
    is the ordered quantity, None when unknown, e.g. an order for a notional; ``limit_price`` None for
    a market order). The loop sizes a resting order's unfilled remainder from them."""

    order_id: str
    status: str
    filled_qty: float
    filled_avg_price: float | None
    filled_at: datetime | None
    client_order_id: str | None = None
    symbol: str | None = None
    side: str | None = None
    qty: float | None = None
    limit_price: float | None = None


class Broker(Protocol):
    """What the loop needs from a broker (``AlpacaBroker``, or a test double)."""

    def account(self) -> BrokerAccount: ...
    def positions(self) -> list[BrokerPosition]: ...
    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]: ...
    def submit(self, plan: OrderPlan) -> str: ...
    def order(self, order_id: str) -> OrderState:
        """The order's state; :class:`OrderNotFound` when the broker has none of this id."""
        ...

    def order_by_client_id(self, client_order_id: str) -> OrderState | None:
        """The order with this client id, or None when the broker has none (other failures raise)."""
        ...

    def open_orders(self) -> list[OrderState]:
        """Every open order of the account (with ``client_order_id``, ``symbol``, ``side``, ``qty``
        and ``limit_price``)."""
        ...

    def cancel(self, order_id: str) -> None: ...

    def peak_equity(self, days: int) -> float | None:
        """The highest end-of-day equity the broker reports over the last ``days`` days, or None when
        it reports no history (a new account)."""
        ...

    def market_open(self) -> bool:
        """Whether the equity market is open now (the broker's clock)."""
        ...

    def assets(self, symbols: Sequence[str]) -> dict[str, AssetFlags]:
        """The broker's flags of each of ``symbols`` (the store's spelling) it could read; one missing
        from the answer is unknown, and the loop holds it for the cycle but for a reduction. A
        :class:`replay.sources.alpaca.SourceError` makes every symbol unknown."""
        ...


def loop_universe(symbols: Sequence[str]) -> list[str]:
    """The loop's symbols in the broker's spelling, the one Alpaca's positions and quotes come in: a
    crypto pair given as Alpaca spells its orders (``BTC/USD``) becomes ``BTCUSD``
    (``replay.sources.alpaca.parse_symbol``; an ``InputError`` for a malformed pair); a served
    universe that spells it otherwise is asked in its own spelling (:meth:`LiveLoop._servable`). A
    symbol given twice, in either spelling, is an ``InputError`` naming both: two entries would plan
    two orders. So is a pair quoted in a coin (``ETH/BTC``, ``replay.loop_rules.coin_quote``): the
    loop sizes orders in the account's dollars from a pair's quotes, which for it are in the coin;
    and a symbol not in capitals (``suiusd``), which no Alpaca symbol is."""
    seen: dict[str, str] = {}
    for given in symbols:
        if given != given.upper():  # a lower-case pair passed here and failed in the first cycle
            raise InputError(
                f"symbols: {given!r} is not in capitals, as Alpaca spells every symbol ({given.upper()})"
            )
        name = parse_symbol(given).name if "/" in given else given
        if (coin := coin_quote(given)) is not None:
            raise InputError(
                f"symbols: {given!r} is a pair quoted in {coin}: the loop sizes its orders in dollars "
                f"from the pair's quotes, which are in {coin}; leave it out (--symbols) or trade the "
                "pair against USD"
            )
        if name in seen:
            raise InputError(
                f"symbols: {seen[name]!r} and {given!r} are the same symbol ({name}): name it once"
            )
        seen[name] = given
    return list(seen)


class ServedUniverse(NamedTuple):
    """The symbols ``GET /v1/model`` says the served ``model`` decides."""

    model: str
    symbols: list[str]

    def spelling(self, symbol: str) -> str | None:
        """``symbol`` as this universe spells it: itself, or for a crypto pair its other spelling
        (``BTCUSD`` / ``BTC/USD``: a store ingested from CSV may keep the slash); None when the
        universe holds neither."""
        if symbol in self.symbols:
            return symbol
        if not is_crypto_symbol(symbol):
            return None
        try:
            pair = parse_symbol(symbol)
        except InputError:
            return None
        return next((s for s in (pair.name, pair.alpaca) if s in self.symbols), None)

    def shown(self) -> str:
        """The model and its universe, for a message (eight symbols named, the rest counted)."""
        more = f", ... ({len(self.symbols)} in all)" if len(self.symbols) > 8 else ""
        return f"{self.model}'s universe: {', '.join(self.symbols[:8])}{more}"

    @staticmethod
    def of(info: Mapping[str, Any]) -> ServedUniverse | None:
        """From a ``GET /v1/model`` answer; None when it names no list of symbols."""
        symbols = info.get("symbols") if isinstance(info, Mapping) else None
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            return None
        return ServedUniverse(str(info.get("model", "the served model")), symbols)


def _respelled(answer: ActResponse, back: Mapping[str, str]) -> ActResponse:
    """``answer`` with its symbols in the loop's spelling (``back``: the served spelling's map to it,
    from :meth:`LiveLoop._servable`), so the orders, the rows and the episode read the broker's names."""
    if not back:
        return answer
    decisions = {back.get(s, s): d for s, d in answer.decisions.items()}
    return answer.model_copy(
        update={"decisions": decisions, "unmanaged": [back.get(s, s) for s in answer.unmanaged]}
    )


class LiveStateError(InputError):
    """The loop refuses to start on this state file (missing, locked, another account's)."""


class UniverseError(LiveStateError):
    """The served model decides none of the loop's symbols: nothing could ever be traded."""


class FailedCyclesError(LiveStateError):
    """The runner stops (``raytrade live``): ``--max-failed-cycles`` cycles in a row failed (a broker
    that keeps failing, a position that cannot be valued) or held without a decision of the policy
    service (:attr:`CycleReport.held_without_service`). The state file keeps whatever orders were
    sent: a person must look, and a restart picks the orders up."""


class UnreadableOrderError(LiveStateError):
    """The loop stops: a pending order could not be read for ``LiveConfig.max_unreadable_order_cycles``
    consecutive cycles. Its symbol was held on each of them (the order may still fill), so the loop
    had silently stopped trading it; the stopping cycle cancels and submits nothing. The state file
    keeps the order (and its count), so a restart still tracks it; a person must look."""


# ------------------------------------------------------------------------------------ state


class SavedKillSwitch(BaseModel):
    """The loop's kill switch in the state file: ``serve.schemas.CallerKillSwitch`` at the cycle
    ``as_of``, its peak None while it is the file's ``peak_equity`` (one place for one peak)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    active: StrictBool = Field(description="unwind-only is on")
    bars_active: StrictInt = Field(ge=0, description="bars (cycles) since it tripped; 0 while off")
    peak_equity: float | None = Field(
        None, gt=0, description="the switch's peak when a timed release restarted it below the file's"
    )
    as_of: AwareDatetime = Field(description="the cycle it was last advanced at")
    rule: KillSwitchConfig | None = Field(
        None, description="the rule it was advanced with; None in a file of an earlier version"
    )
    bar: AwareDatetime | None = Field(
        None,
        description="the bar the service observed when it was last advanced (features_as_of): a cycle "
        "whose answer observes it again does not advance it; None in a file of an earlier version",
    )

    def caller_state(self, account_peak: float) -> CallerKillSwitch:
        """The switch as the request carries it, ``account_peak`` being the file's peak."""
        peak = account_peak if self.peak_equity is None else self.peak_equity
        return CallerKillSwitch(active=self.active, bars_active=self.bars_active, peak_equity=peak)

    @classmethod
    def of(cls, tracker: KillSwitchTracker, account_peak: float) -> SavedKillSwitch:
        """What to save of ``tracker`` (advanced at least once) beside the file's peak ``account_peak``."""
        state, bar = tracker.state, tracker.bar
        if state is None or bar is None:
            raise ValueError("the kill switch was not advanced: nothing to save")
        peak = None if state.peak_equity == account_peak else state.peak_equity
        return cls(
            active=state.active,
            bars_active=state.bars_active,
            peak_equity=peak,
            as_of=bar,
            rule=tracker.rule,
            bar=tracker.served_bar,
        )


def _saved_count(raw: dict[str, Any], key: str) -> int:
    """The count a state file holds under ``key`` (0 when a file of an earlier version has none)."""
    count = raw.get(key, 0)
    if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
        raise ValueError(f"{key}={count!r} is not a count")
    return count


STATE_KEYS: Final = ("account_id", "peak_equity", "pending")
"""Keys every state file the loop writes holds (each may be null or empty): a file without one is
not the loop's (an edited ``{}`` would forget the peak and disarm a tripped kill switch), so it is
refused. ``account_id`` is there since 2026-12-02: a file of an older loop needs ``"account_id":
null`` added (the start then records the broker's). The keys added later (``unlogged_rows``,
``kill_switch``, ``unlisted_cycles``, ``failed_cycles``) may be absent."""


@dataclass
class LiveState:
    """What the loop remembers between cycles (JSON file, written atomically).

    ``pending`` holds the orders not yet reconciled: each has ``decision_id``, ``client_order_id``,
    ``status`` (``planned``: written before the submit, outcome unknown; ``submitted``: the broker
    has it under ``order_id``), ``symbol``, ``side``, ``qty`` (units ordered), ``limit_price`` (None
    for a market order), ``filled_qty`` (as the broker last reported it), ``mid``,
    ``target_weight``, ``policy_version`` and ``submitted_at``; a submitted order the broker could
    not read on the last cycles also has ``unreadable_cycles`` (how many in a row) and
    ``last_read_error``, both dropped once a read succeeds. A file of an earlier version has no
    ``qty``, ``limit_price`` nor ``filled_qty``: it loads, and such an order's size is unknown until
    the broker reports it (an order of unknown size that may still fill holds all new risk).

    ``unlogged_rows`` holds the experience decision rows saved before they are logged (``ts`` as
    ISO text, a non-finite number as null, ``provisional`` while its order's outcome is unknown;
    ``serve.decision_rows.row_for_state``); the next cycle settles and logs any left by
    a crash. A file of an earlier version has none: it loads with an empty list.

    ``kill_switch`` is the drawdown kill switch as of the last cycle (:class:`SavedKillSwitch`); a
    file of an earlier version has none: it loads with None (see the module doc).

    ``unlisted_cycles`` counts the cycles in a row whose listing of the broker's open orders failed
    (each sent nothing); ``failed_cycles`` the cycles in a row that failed or held without a decision
    of the policy service (:meth:`LiveLoop.record_cycle`, the runner's ``--max-failed-cycles``); a file
    of an earlier version has neither: 0."""

    peak_equity: float | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    account_id: str | None = None
    unlogged_rows: list[dict[str, Any]] = field(default_factory=list)
    kill_switch: SavedKillSwitch | None = None
    unlisted_cycles: int = 0
    failed_cycles: int = 0

    @classmethod
    def load(cls, path: Path) -> LiveState:
        """The saved state; a missing or unreadable file is an error that names it (starting over
        would forget the peak and the open orders). A non-finite number anywhere in the file (``NaN``,
        ``Infinity``, ``1e999``) and a peak that is not a positive number make it unreadable: a NaN
        peak would give a drawdown of 0 on every cycle and be saved back, disarming the kill switch
        for good."""
        if not path.is_file():
            raise LiveStateError(f"live state file {str(path)!r} is missing; it holds the peak equity")
        try:
            raw = json.loads(
                path.read_text(),
                parse_constant=_NonFinite,
                parse_float=_finite_float,
                parse_int=_float_sized_int,
            )
            _refuse_non_finite(raw)
            missing = [key for key in STATE_KEYS if key not in raw]
            if missing:
                older = (
                    '; a file of a loop older than 2026-12-02 needs "account_id": null added'
                    if missing == ["account_id"]
                    else ""
                )
                raise ValueError(
                    f"no {', '.join(missing)}: the loop writes {', '.join(STATE_KEYS)} in every state "
                    f"file{older}"
                )
            peak = raw.get("peak_equity")
            account = raw.get("account_id")
            switch = raw.get("kill_switch")
            if peak is not None:
                peak = float(peak) if not isinstance(peak, bool) else math.nan
                if not (math.isfinite(peak) and peak > 0):
                    raise ValueError(
                        f"peak_equity={raw.get('peak_equity')!r} is not a finite positive number"
                    )
            if peak is None and switch is not None:
                raise ValueError(
                    "peak_equity=None beside a saved kill switch: the cycle that saved the switch saved "
                    "the peak"
                )
            return cls(
                peak_equity=peak,
                pending=list(raw.get("pending", [])),
                account_id=None if account is None else str(account),
                unlogged_rows=_unlogged_rows(raw.get("unlogged_rows", [])),
                kill_switch=None if switch is None else SavedKillSwitch.model_validate(switch),
                unlisted_cycles=_saved_count(raw, "unlisted_cycles"),
                failed_cycles=_saved_count(raw, "failed_cycles"),
            )
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            # an input error (one line, exit status 2): the file is the user's to fix, not a bug
            raise LiveStateError(
                f"live state file {str(path)!r} is unreadable ({_reason(exc)}); fix or move it"
            ) from None

    def save(self, path: Path) -> None:
        """Write to a temporary file, fsync it, then rename over ``path`` (never half a file). A
        non-finite number is refused (``ValueError``) before anything is written: :meth:`load` would
        refuse the file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {
                "account_id": self.account_id,
                "peak_equity": self.peak_equity,
                "pending": self.pending,
                "unlogged_rows": self.unlogged_rows,
                "kill_switch": None if self.kill_switch is None else self.kill_switch.model_dump(mode="json"),
                "unlisted_cycles": self.unlisted_cycles,
                "failed_cycles": self.failed_cycles,
            },
            indent=1,
            allow_nan=False,
        )
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)


def _unlogged_rows(value: Any) -> list[dict[str, Any]]:
    """The state file's ``unlogged_rows``: a list of rows, each with a text ``decision_id`` and an
    ISO ``ts``; anything else makes the file unreadable (``ValueError`` naming the field)."""
    if not isinstance(value, list):
        raise ValueError(f"unlogged_rows is a {type(value).__name__}, not a list")
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise ValueError(f"unlogged_rows[{i}] is a {type(row).__name__}, not a row")
        if not isinstance(row.get("decision_id"), str):
            shown = "missing" if "decision_id" not in row else f"a {type(row['decision_id']).__name__}"
            raise ValueError(f"unlogged_rows[{i}].decision_id is {shown}, not text")
        if not isinstance(row.get(PROVISIONAL, False), bool):
            raise ValueError(
                f"unlogged_rows row {row['decision_id']!r} has "
                f"{PROVISIONAL}={row[PROVISIONAL]!r}, not true or false"
            )
        try:
            datetime.fromisoformat(row.get("ts"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"unlogged_rows row {row['decision_id']!r} has ts={row.get('ts')!r}, not an ISO time"
            ) from None
    return list(value)


class _NonFinite:
    """``json.loads``' stand-in for ``NaN``, ``Infinity``, ``-Infinity`` and a float beyond range
    (``1e999``): the state file has none, and :func:`_refuse_non_finite` names the field holding one
    (not a number nor a string, so none can pass for a value)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __str__(self) -> str:
        return self.token


def _refuse_non_finite(value: Any, where: str = "") -> None:
    """``ValueError`` naming the first field of ``value`` (parsed JSON) that holds a :class:`_NonFinite`."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        field_name = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        if isinstance(item, _NonFinite):
            raise ValueError(f"{field_name}={item} is not a finite number")
        _refuse_non_finite(item, field_name)
    if isinstance(value, _NonFinite) and not where:
        raise ValueError(f"the file holds only {value}, not a state")


def _reason(exc: BaseException) -> str:
    """Why the state file is unreadable, in one line: a pydantic error (the file's one model is its
    ``kill_switch``) as ``kill_switch.<field>: <problem>``, the first of them without its input and
    a count of the rest; anything else as its message's first line."""
    if isinstance(exc, ValidationError):
        return first_problem(exc, "kill_switch")
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _finite_float(text: str) -> float | _NonFinite:
    """``json.loads``' hook for a number with a fraction or exponent: finite, or a :class:`_NonFinite`
    (``1e999``)."""
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _float_sized_int(text: str) -> int:
    """``json.loads``' hook for an integer: one a float can hold, or an error (a 400-digit ``qty``
    would overflow every float computation on it)."""
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError(f"integer of {len(text)} digits is beyond a float")
    return value


def live_home() -> Path:
    """The per-user folder of the live loop's files: ``~/.raytrade/live`` (absolute)."""
    return (Path.home() / ".raytrade" / "live").absolute()


def _account_file_name(account_id: str, what: str) -> str:
    """``account_id`` as a file name; an id that cannot name a file (empty, a path) is refused."""
    if not account_id or any(c in account_id for c in "/\\\0") or account_id in (".", ".."):
        raise LiveStateError(f"account_id={account_id!r} cannot name {what}")
    return account_id


def default_state_file(account_id: str) -> Path:
    """The per-account state file: ``~/.raytrade/live/<account id>.json`` (absolute)."""
    return live_home() / f"{_account_file_name(account_id, 'a state file')}.json"


def default_account_lock_dir() -> Path:
    """Where the per-account locks live unless ``LiveConfig.account_lock_dir`` says otherwise:
    ``~/.raytrade/live/locks`` (beside the default state files)."""
    return live_home() / "locks"


# ------------------------------------------------------------------------------------ the loop


class PolicyAsker(Protocol):
    """What the loop needs from the policy service (``serve.client.PolicyClient``, or a test double).

    One cycle's decision (the rule read, the act, a re-read and a redo) is one :meth:`deadline`, given
    to each request of it; what runs out of it is answered as the client answers it: an act cut is an
    outage hold (``fallback``), a rule read cut a ``serve.client.ServiceError``."""

    def deadline(self) -> Deadline:
        """A deadline starting now (``serve.client.PolicyClient.deadline``: ``total_deadline_s``)."""
        ...

    def act(self, request: Any, *, deadline: Deadline | None = None) -> ActResponse:
        """``POST /v1/act`` before ``deadline`` (retried, held when it runs out);
        ``serve.client.ServiceRequestError`` on a 422 (its ``fields`` named)."""
        ...

    def model(self, deadline: Deadline | None = None) -> dict[str, Any]:
        """``GET /v1/model`` (its ``model`` and ``kill_switch`` rule) before ``deadline`` (retried);
        ``serve.client.ServiceError`` when it cannot be read."""
        ...


class PendingStep(NamedTuple):
    """A decision waiting for the next cycle's observation to become a transition."""

    cycle_id: str
    step: int
    policy_version: str
    symbols: list[str]  # the answer's decisions: the policy's asset order
    observation: list[float]  # the flat env observation the policy acted on
    # the weight the book was sent to (_sent_weights), clipped to the action box [-1, 1]; the
    # symbol's current weight where no order went out (held, refused, under a step)
    actions: list[float]
    equity: float  # the account marked at the cycle's quotes
    observation_spec: str | None = None  # how the service encoded it (ActResponse.observation_spec)
    bar: datetime | None = None  # the bar it observed (ActResponse.features_as_of)


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did (``uncertain``: orders whose submit failed without a refusal from the broker
    and whose look-up failed or did not find them; they stay ``planned`` in the state and the next
    cycle resolves them; ``rejected``: orders the broker refused)."""

    cycle_id: str
    answer: ActResponse
    plans: list[OrderPlan]
    submitted: dict[str, str]  # decision_id -> order id
    rejected: dict[str, str]  # decision_id -> broker message
    fills_logged: int
    uncertain: dict[str, str] = field(default_factory=dict)  # decision_id -> submit error
    notes: dict[str, str] = field(default_factory=dict)  # symbol -> why it sent no order (a cap, ...)
    # why the loop held this cycle without a decision of the service (None: the service decided, its
    # own holds included): the service down or erring, its rule unreadable, none of the symbols served
    held_without_service: str | None = None


class LiveLoop:
    """Broker + policy service + (optional) replay store: one :meth:`cycle` per decision time.

    The constructor locks ``state_file`` (a second loop on it raises :class:`LiveStateError`);
    :meth:`close` (or the ``with`` block) releases it. :meth:`start` (run by the first cycle when not
    called) checks the state file and adopts what the broker has that the state does not know.
    ``reset`` allows a missing state file to be started anew (peak = the broker's highest daily
    equity over ``config.peak_lookback_days``, or the current equity when it has no history); an
    existing one is never overwritten by it."""

    def __init__(
        self,
        broker: Broker,
        policy: PolicyAsker,
        symbols: Sequence[str],
        state_file: Path,
        store: Path | None = None,
        config: LiveConfig | None = None,
        reset: bool = False,
    ):
        if not symbols:
            raise ValueError("symbols must name at least one symbol to trade")
        self.broker, self.policy, self.symbols = broker, policy, loop_universe(symbols)
        # where the file lives: a path through a symbolic link is read, saved and locked at its target
        # (a save renames over the path it is given: it replaced the link itself with a plain file)
        self.state_file, self.store, self.config = Path(state_file).resolve(), store, config or LiveConfig()
        self.reset, self._started = reset, False
        self._lock: IO[str] | None = _lock_state_file(self.state_file)
        self._account_lock: IO[str] | None = None  # taken by start(), once the broker names the account
        self._episode_id: str | None = None  # this loop's episode, named by its first cycle
        self._episode_policy: tuple[str, str | None] | None = None  # (model, observation_spec) of it
        self._step = 0
        self._pending_step: PendingStep | None = None
        self._served_spelling: dict[str, str] = {}  # the loop's spelling -> the service's (BTCUSD -> BTC/USD)
        self._previous_bar: datetime | None = None  # the bar the previous cycle's answer observed
        self.cancel_confirm_s = CANCEL_CONFIRM_S  # how long a cycle waits to see its cancels done
        self.monotonic: Callable[[], float] = time.monotonic  # the cycle's clock after its start (tests)
        self._stored_ids = KeyCache()  # the experience table's decision ids, read once per file
        self._rule: LoopRule | None = None  # the last kill-switch rule read, and the model it was read for
        self._served: ServedUniverse | None = None  # the universe of the last GET /v1/model read
        self._universe_settled = False  # the symbols matched once against a served universe

    def close(self) -> None:
        """Release the account's lock and the state file's."""
        if self._account_lock is not None:
            fcntl.flock(self._account_lock, fcntl.LOCK_UN)
            self._account_lock.close()
            self._account_lock = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> LiveLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Refuse a missing state file (unless ``reset``), or another account's; then resolve the
        ``planned`` orders and adopt the broker's unknown open orders of this project."""
        if self._lock is None:
            raise LiveStateError(f"live loop on {str(self.state_file)!r} is closed")
        self._read_rule("at start")  # a looser configured rule refuses before anything
        self._settle_universe()
        account_id = self.broker.account().account_id
        if self._account_lock is None:
            lock_dir = self.config.account_lock_dir or default_account_lock_dir()
            self._account_lock = _lock_account(Path(lock_dir).absolute(), account_id, self.state_file)
        if not self.state_file.exists():
            if not self.reset:
                raise LiveStateError(
                    f"live state file {str(self.state_file)!r} is missing: it holds the peak equity the "
                    "kill switch reads; pass --reset (reset=True) to start a new one"
                )
            # A new state file starts from the account's own high-water mark, not today's equity: a
            # loop restarted mid-drawdown keeps its kill switch armed.
            peak = self.broker.peak_equity(self.config.peak_lookback_days)
            if peak is not None and not (math.isfinite(peak) and peak > 0):
                raise LiveStateError(
                    f"the broker's peak equity over {self.config.peak_lookback_days} days is {peak!r}, "
                    f"not a positive number: no state file started at {str(self.state_file)!r}"
                )
            LiveState(account_id=account_id or None, peak_equity=peak).save(self.state_file)
        state = LiveState.load(self.state_file)
        if state.account_id and account_id and state.account_id != account_id:
            raise LiveStateError(
                f"live state file {str(self.state_file)!r} belongs to account {state.account_id!r}, "
                f"not {account_id!r}"
            )
        state.account_id = state.account_id or account_id or None
        self._sync_with_broker(state, counting=False)
        state.save(self.state_file)
        self._started = True

    def record_cycle(self, failed: bool) -> int:
        """Count the last cycle in the state file: one more in a row when it ``failed`` (raised, or held
        without a decision of the policy service), 0 when the service decided it. Returns the count.
        It lives in the file, not the process: a loop restarted by a supervisor (or run ``--once`` by
        a timer) after failed cycles goes on counting, so ``--max-failed-cycles`` still stops it,
        where a count in memory started from 0 on every restart and the loop held for ever, kill-switch
        unwinds included. An unreadable state file raises (:class:`LiveStateError`)."""
        if self._lock is None:
            raise LiveStateError(f"live loop on {str(self.state_file)!r} is closed")
        state = LiveState.load(self.state_file)
        count = state.failed_cycles + 1 if failed else 0
        if count != state.failed_cycles:
            state.failed_cycles = count
            state.save(self.state_file)
        return count

    def cycle(self, now: datetime | None = None) -> CycleReport:
        """Reconcile the previous cycles' orders with the broker, decide, submit, save, log. A cycle
        that raises ends the episode of transitions: the decision waiting for its next observation
        would otherwise be completed by a later cycle's, its reward spanning the bars in between (an
        account unreadable for five days logged one step of six days)."""
        try:
            return self._cycle(now)
        except BaseException:
            self._pending_step = None
            self._end_episode()
            raise

    def _cycle(self, now: datetime | None) -> CycleReport:
        from raytrade.serve.client import request_from_loop

        if not self._started:
            self.start()
        now = (now or datetime.now(UTC)).astimezone(UTC)
        started = self.monotonic()

        def clock() -> datetime:  # the cycle's time now, in whole seconds: its paced requests take minutes
            return now + timedelta(seconds=math.floor(self.monotonic() - started))

        cycle_id = now.strftime("%Y%m%dT%H%M%S%fZ")
        state = LiveState.load(self.state_file)
        open_orders = self._sync_with_broker(state)
        listed = None if open_orders is None else {o.order_id for o in open_orders}
        # rows whose orders' outcome a crash (or a failed submit look-up) hid, now the broker has said
        state.unlogged_rows = settle_rows(state.unlogged_rows, state.pending)
        fill_rows, still_open = self._reconcile(state, now, listed)
        # A done order stays in the state until its fill row is logged (a crash or a failed log in
        # between must not forget the fill; the store's de-duplication keeps it from counting twice).
        fill_ids = {r["decision_id"] for r in fill_rows}
        unlogged = [p for p in state.pending if f"{p['decision_id']}:fill" in fill_ids]
        # What the broker said is saved before anything else can fail: a cycle that stops below (the
        # broker's account unreadable, the service refusing the request) keeps its adoptions and its
        # unreadable counts, so --max-unreadable-order-cycles still stops a loop that fails every cycle.
        state.pending = still_open + unlogged
        state.unlisted_cycles = 0 if listed is not None else state.unlisted_cycles + 1
        state.save(self.state_file)
        self._stop_on_unreadable(state)
        may_fill = self._cancel(still_open)

        account = self.broker.account()
        positions = self.broker.positions()
        quotes = self.broker.quotes(self.symbols)
        # Quotes are aged, and the policy asked, as of when they were read: the sync and the cancels
        # before them (three paced requests a resting order) can take minutes. Aged at the cycle's
        # start, a 33-minute-old quote read four minutes in passed the 30-minute limit, and fresh ones
        # read six minutes in were "stamped ahead of this machine's clock" and held, every other cycle.
        read_at = clock()
        assets = self._asset_flags()
        cfg = self.config
        open_limit = self._open_quote_age_hours()
        limits = (cfg.max_quote_age_hours, cfg.max_crypto_quote_age_hours, open_limit)
        stale = stale_quotes(quotes, read_at, *limits)
        if stale:  # an old quote would size an order or set a limit price: held as if unquoted
            shown = ", ".join(
                f"{s} ({_age_text(age)} old)" if age > 0 else f"{s} (stamped {-age * 60:.0f} min ahead of us)"
                for s, age in sorted(stale.items())
            )
            log.warning(
                "quotes older than %s (crypto: %g h) or stamped in the future, held this cycle: %s",
                f"{cfg.max_quote_age_hours:g} h"
                if open_limit is None
                else f"{open_limit * 60:g} min (market open)",
                cfg.max_crypto_quote_age_hours,
                shown,
            )
            ahead = [age for age in stale.values() if age < 0]
            if quotes and len(ahead) == len(quotes):  # every feed ahead: the clock behind is ours
                log.error(
                    "every quote is stamped %.0f-%.0f min ahead of this machine's clock: its clock is "
                    "probably behind (check its time sync); nothing trades until they agree",
                    -max(ahead) * 60,
                    -min(ahead) * 60,
                )
            quotes = {s: q for s, q in quotes.items() if s not in stale}
        stored = _latest_dollar_volume(self.store, self.symbols, read_at) if self.store is not None else None
        volumes = stored.volumes if stored is not None else {}
        if stored is not None and (lag := store_lag(stored.last_closed, self.symbols, read_at)) is not None:
            log.warning("%s: the store was not refreshed (its dollar volumes cap the orders)", lag)
        # The drawdown, the kill switch and the policy see the account as it is worth now: after a gap
        # the broker may still mark yesterday's close (a -40 % open left the switch off and let the
        # cycle buy; it tripped a cycle later, once the broker re-marked).
        held = {p.symbol: p.qty for p in positions}
        values = {p.symbol: p.market_value for p in positions}
        marked = marked_book(account.cash, held, values, quotes, volumes)  # once a cycle: sizing reads it too
        seen, seen_positions = _marked_account(account, positions, marked)
        if seen is not account:
            log.warning(
                "cycle %s: the account marked at this cycle's quotes is worth %.2f, the broker says %.2f: "
                "the drawdown, the kill switch and the orders take %.2f",
                cycle_id,
                seen.equity,
                account.equity,
                seen.equity,
            )
        peak_before = state.peak_equity or seen.equity
        peak = max(peak_before, seen.equity)
        saved_switch = state.kill_switch
        if state.peak_equity is not None and peak > state.peak_equity:
            # A new high reaches the disk now, not only with the intents: a cycle that fails below
            # must not forget it (the drawdown the policy and the kill switch see is measured from
            # it). The switch's own peak, where a timed release left one, is that high too: its
            # advance takes max(peak, equity) (envs.kill_switch), which the next cycle then redoes.
            state.peak_equity = peak
            if saved_switch is not None and saved_switch.peak_equity is not None:
                state.kill_switch = saved_switch.model_copy(update={"peak_equity": None})
            state.save(self.state_file)
        loop_state = _loop_state(seen, seen_positions, quotes, self.symbols, peak, volumes)
        request = request_from_loop(loop_state, as_of=read_at)
        if self.store is not None:  # transitions are logged only where experience is
            request = request.model_copy(update={"observation": True})
        # may raise: the state was saved above
        answer, switch, held_here = self._ask(request, saved_switch, peak_before)
        asked = time.perf_counter()
        # A symbol whose earlier order may still fill is held (a second order could double it), and
        # that order's unfilled remainder counts against the gross budget at its worst case.
        resting = _resting_orders(may_fill + _foreign_orders(open_orders or []), quotes, positions)
        for order in resting:
            if (why := order.why_unknown()) is not None:
                log.warning(
                    "order %s (%s) may still fill and its size is unknown (%s): no order adds gross "
                    "exposure this cycle",
                    order.label,
                    order.symbol,
                    why,
                )
        busy = {o.symbol for o in resting if o.symbol is not None}
        tradeable_quotes = {s: q for s, q in quotes.items() if s not in busy}
        equity = equity_to_size(account.equity, marked)  # the book marked above, once a cycle
        reduce_only = None
        if equity <= 0 < account.equity:  # no new risk: reductions only, sized on the broker's figure
            reduce_only = f"the account is worth {equity:.2f} at this cycle's quotes"
            log.error(
                "cycle %s: %s (the broker says %.2f): only orders that reduce a position go out",
                cycle_id,
                reduce_only,
                account.equity,
            )
            equity = account.equity
        elif equity <= 0:  # the broker says so too (its client refuses such an account before here)
            raise RuntimeError(f"the account has no usable equity ({account.equity!r}): no order this cycle")
        planned = plan_cycle(
            answer,
            equity,
            tradeable_quotes,
            held,
            cycle_id,
            self.config,
            volumes,
            values,
            resting,
            reduce_only,
            assets,
        )
        # An order of ours the state does not know may rest (the listing failed): nothing goes on top
        # of it. An account the broker blocks would refuse every order, every cycle: none is sent.
        unsent = (
            "not sent: the broker's open orders could not be listed"
            if listed is None
            else f"not sent: the broker blocks orders on the account ({account.blocked})"
            if account.blocked
            else None
        )
        if account.blocked:
            log.error(
                "cycle %s: the broker blocks orders on the account (%s): no order is sent",
                cycle_id,
                account.blocked,
            )
        if unsent is not None:
            notes = {
                p.symbol: f"{p.symbol}: {p.side} {p.qty:g} {unsent}" + (f"; {p.note}" if p.note else "")
                for p in planned.orders
            }
            planned = CyclePlan([], {**planned.notes, **notes})
        plans = planned.orders
        for symbol, note in planned.notes.items():  # a target a cap (or another rule) keeps out of reach
            log.warning("cycle %s: no order for %s: %s", cycle_id, symbol, note)
        for p in plans:
            if p.note is not None:
                log.info("cycle %s: order %s %g %s: %s", cycle_id, p.side, p.qty, p.symbol, p.note)

        # The intents reach the disk before any order reaches the broker, and so do the decision rows,
        # provisional: a crash during the submits leaves them for the next cycle to settle.
        intents = {p.decision_id: _intent(p, answer.model, now) for p in plans}
        state.peak_equity = peak
        if switch is not None:  # else held with the rule unknown: the switch waits, as it was
            state.kill_switch = SavedKillSwitch.of(switch, peak)
        state.pending = still_open + unlogged + list(intents.values())
        earlier = state.unlogged_rows  # rows earlier cycles saved, settled above
        if self.store is not None:
            provisional = decision_rows(now, cycle_id, answer, plans, {}, {}, {}, loop_state, planned.notes)
            state.unlogged_rows = bounded_rows(
                earlier + [row_for_state(r, r["decision_id"] in intents) for r in provisional], self.store
            )
        state.save(self.state_file)

        submitted: dict[str, str] = {}
        rejected: dict[str, str] = {}
        uncertain: dict[str, str] = {}
        latency: dict[str, float] = {}
        for plan in plans:
            if (aged := _aged_out(plan.symbol, quotes, clock(), limits)) is not None:
                rejected[plan.decision_id] = aged  # the submits before it took that long (paced)
                log.warning("order %s not sent: %s", plan.decision_id, aged)
                continue
            # sent now, minutes into a paced cycle: its fill's latency counts from here
            intents[plan.decision_id]["submitted_at"] = clock().isoformat()
            try:
                order_id = self.broker.submit(plan)
            except Exception as exc:  # one refused order must not stop the others
                message = " ".join(str(exc).split())[:300]
                try:
                    found = self.broker.order_by_client_id(plan.client_order_id)
                except Exception as lookup_exc:
                    uncertain[plan.decision_id] = message
                    log.warning(
                        "order %s: submit and look-up failed: %s; %s", plan.decision_id, message, lookup_exc
                    )
                    continue
                if found is None and not (isinstance(exc, SourceError) and exc.refused()):
                    # no answer, or a 5xx, and the broker does not show the order (yet): it may exist.
                    # Its intent stays planned and the next cycle's sync looks it up again (adopted,
                    # its fills logged, or dropped as never received); counted refused, it was forgotten
                    uncertain[plan.decision_id] = message
                    log.warning(
                        "order %s: submit failed (%s) and the broker does not show it yet: its outcome "
                        "is settled next cycle",
                        plan.decision_id,
                        message,
                    )
                    continue
                if found is None:
                    rejected[plan.decision_id] = message
                    log.warning("order %s refused: %s", plan.decision_id, message)
                    continue
                log.warning("order %s: submit errored (%s) but the broker has it", plan.decision_id, message)
                order_id = found.order_id
            submitted[plan.decision_id] = order_id
            latency[plan.decision_id] = (time.perf_counter() - asked) * 1e3
            intents[plan.decision_id].update(order_id=order_id, status="submitted")
        rows = decision_rows(
            now, cycle_id, answer, plans, submitted, rejected, latency, loop_state, planned.notes
        )
        # A row whose order's outcome is still unknown (its submit and look-up both failed) stays
        # provisional in the state file, for the cycle that resolves the order; the others are logged.
        final = [r for r in rows if r["decision_id"] not in uncertain]
        # Rows an earlier cycle saved and a crash kept from the store, then this cycle's: saved with
        # the orders, so a crash before the log below loses none of them.
        carried = [row_from_state(r) for r in earlier if not is_provisional(r)]
        if self.store is not None:
            state.unlogged_rows = bounded_rows(
                earlier + [row_for_state(r, r["decision_id"] in uncertain) for r in rows], self.store
            )
        state.pending = [p for p in state.pending if p["decision_id"] not in rejected]
        state.save(self.state_file)

        logged = self._log(fill_rows + carried + final)
        fills_logged = sum(1 for r in logged if any(r is f for f in fill_rows))
        # their rows are in the store (or its quarantine) now; without a store (a run without --store)
        # the rows an earlier run carried stay in the state file for a run that has one
        if unlogged or (self.store is not None and state.unlogged_rows):
            done = {id(p) for p in unlogged}
            state.pending = [p for p in state.pending if id(p) not in done]
            if self.store is not None:
                state.unlogged_rows = [r for r in state.unlogged_rows if is_provisional(r)]
            state.save(self.state_file)
        # rewarded at the account marked at the quotes, as the observation and the switch read it
        sent = _sent_weights(plans, submitted, uncertain, resting, positions, quotes, seen.equity)
        self._log_transitions(now, cycle_id, answer, seen.equity, sent)
        return CycleReport(
            cycle_id, answer, plans, submitted, rejected, fills_logged, uncertain, planned.notes, held_here
        )

    def _asset_flags(self) -> dict[str, AssetFlags]:
        """The broker's flags of the loop's symbols (:meth:`Broker.assets`); those it could not read are
        missing, logged: the planner holds each this cycle but for a reduction (fail closed: a symbol is
        never sized on a guess of its flags). A read that fails as a whole leaves every one missing."""
        try:
            flags = dict(self.broker.assets(self.symbols))
        except SourceError as exc:
            log.warning(
                "asset flags could not be read (%s): every symbol is held this cycle but for a reduction", exc
            )
            return {}
        if missing := [s for s in self.symbols if s not in flags]:
            log.warning(
                "asset flags of %s could not be read: held this cycle but for a reduction", ", ".join(missing)
            )
        return flags

    def _ask(
        self, request: ActRequest, saved: SavedKillSwitch | None, account_peak: float
    ) -> tuple[ActResponse, KillSwitchTracker | None, str | None]:
        """The service's answer to ``request`` stamped with the switch advanced by the served rule,
        read now (every cycle: a hot swap between cycles may have changed it), and that switch; with the
        rule unknown, or an answer (or a refusal) that the rule read cannot account for, a local
        hold-everything answer and None (module doc, **Kill switch**). Third, why the answer is a hold
        made without the service's decision (:attr:`CycleReport.held_without_service`), else None.
        Raises :class:`KillSwitchRuleError` when a hot swap brings a rule the configured one is looser
        than."""
        from raytrade.serve.client import FALLBACK_MODEL, load_kill_switch_kernel

        load_kill_switch_kernel()  # once a process, before the deadline: the advance below runs under it
        deadline = self.policy.deadline()  # one for the rule read, the act, a re-read and a redo
        read = self._read_rule("this cycle", deadline)
        if isinstance(read, RuleUnknown):
            return self._hold(
                request, saved, account_peak, f"the served kill-switch rule is unknown ({read.why})"
            )
        self._settle_universe()  # once, if GET /v1/model could not be read at start
        spelled = self._servable(request)
        if spelled is None:  # nothing to ask: held here, the switch advanced with the rule just read
            held = self._kill_switch(saved, account_peak, read.rule)
            reason = f"{read.model} decides none of the loop's symbols"
            log.warning("%s: holding every position", reason)
            answer = hold_everything(held.stamp(request), model=read.model, version=0, reason=reason)
            return answer, held, reason
        servable, back = spelled
        self._served_spelling = {loop: served for served, loop in back.items()}
        switch: KillSwitchTracker | None = None

        def ask(rule: KillSwitchConfig) -> ActResponse | Refused:
            nonlocal switch
            switch = self._kill_switch(saved, account_peak, rule)  # this bar's advance, (re)done
            stamped = switch.stamp(servable)
            answer = self._act(stamped, deadline)
            if answer is not None and (again := switch.settle(stamped, answer)) is not None:
                stamped = again  # the answer observed the bar the switch was advanced at: not a new bar
                answer = self._act(stamped, deadline)
            if answer is None:
                return Refused(stamped.kill_switch.bars_active if stamped.kill_switch is not None else None)
            return answer

        asked = ask_under_served_rule(read, ask, partial(self._read_rule, deadline=deadline))
        if isinstance(asked, Held):
            return self._hold(request, saved, account_peak, asked.reason)
        if asked.answer.kill_switch_active and switch is not None:
            # the service's switch is on where the loop's is off: its trigger is stricter than the rule
            # read (kill_drawdown lowered since, say). Taken as tripped at this bar, as PolicyClient
            # does, so the loop unwinds under the rule's hysteresis instead of re-risking next bar.
            if switch.state is not None and not switch.state.active:
                log.warning("kill switch: the service tripped it at this bar; the loop's rule had not")
            switch.tripped_by_service()
        elif switch is not None and switch.state is not None and switch.state.active:
            # the loop's switch is on and the answer says the service's is off: whatever its targets,
            # this cycle only unwinds (serve.client's PolicyClient holds on such an answer; a policy
            # that is not one is held to the same rule here)
            log.warning("kill switch: on in the loop, off in the answer: only reductions go out")
            asked = asked._replace(answer=asked.answer.model_copy(update={"kill_switch_active": True}))
        answer = _respelled(asked.answer, back)
        client_hold = answer.fallback and answer.model == FALLBACK_MODEL  # serve.client's outage hold
        return answer, switch, (answer.reason or FALLBACK_MODEL) if client_hold else None

    def _act(self, request: ActRequest, deadline: Deadline) -> ActResponse | None:
        """The service's answer (an outage hold when ``deadline`` or the retries run out first), or
        None when it refuses the switch's count (a 422 on :data:`REFUSED_COUNT`, logged); any other 422
        propagates (the loop's bug)."""
        from raytrade.serve.client import ServiceRequestError

        try:
            return self.policy.act(request, deadline=deadline)
        except ServiceRequestError as exc:
            if REFUSED_COUNT not in exc.fields:
                raise
            log.warning("kill switch: %s", exc)
            return None

    def _read_rule(self, when: str, deadline: Deadline | None = None) -> LoopRule | RuleUnknown:
        """The rule the loop advances its switch with, from ``GET /v1/model`` now, before ``deadline``
        (the cycle's; None: the client's own) (logged when it is not the last one read), or why it
        cannot be had (logged: no order goes out until it can), a read the deadline cut included.
        ``ServiceAuthError`` (a wrong token) and :class:`KillSwitchRuleError` propagate."""
        from raytrade.serve.client import read_loop_rule

        chosen = read_loop_rule(partial(self._published, deadline), self.config.kill_switch)
        if isinstance(chosen, RuleUnknown):
            log.warning(
                "kill switch: the served rule cannot be read %s (%s): no order goes out until it can "
                "(asked again each cycle)",
                when,
                chosen.cause,
            )
            return chosen
        log_rule_change(log, chosen, self._rule)
        self._rule = chosen
        return chosen

    def _published(self, deadline: Deadline | None) -> Mapping[str, Any]:
        """``GET /v1/model`` before ``deadline``; its universe kept (:meth:`_settle_universe`,
        :meth:`_servable`)."""
        info = self.policy.model(deadline=deadline)
        self._served = ServedUniverse.of(info)
        return info

    def _servable(self, request: ActRequest) -> tuple[ActRequest, dict[str, str]] | None:
        """``request`` as the served model (its last ``GET /v1/model``) can take it, and the map back
        from its spelling to the loop's: a symbol it does not decide is left out, logged (the service
        refuses a request naming one: a hot swap to a smaller universe made every cycle fail, managing
        nothing), its position kept, held and counted against the caps; a pair it spells otherwise
        (``BTC/USD`` for the broker's ``BTCUSD``) is asked about, and its position sent, in its
        spelling (:func:`_respelled` turns the answer back). None when it decides none of the
        symbols; ``request`` itself while the universe is unknown."""
        served = self._served
        if served is None:
            return request, {}
        spelled = {s: served.spelling(s) for s in request.analysis}
        if dropped := sorted(s for s, sp in spelled.items() if sp is None):
            log.warning(
                "%s does not decide %s: held, not asked about (its positions still count against the caps)",
                served.model,
                ", ".join(dropped),
            )
        back = {sp: s for s, sp in spelled.items() if sp is not None and sp != s}
        if not dropped and not back:
            return request, {}
        analysis = {sp: request.analysis[s] for s, sp in spelled.items() if sp is not None}
        if not analysis:
            return None
        to_served = {s: sp for sp, s in back.items()}
        positions = [
            p.model_copy(update={"symbol": to_served[p.symbol]}) if p.symbol in to_served else p
            for p in request.positions
        ]
        return request.model_copy(update={"analysis": analysis, "positions": positions}), back

    def _settle_universe(self) -> None:
        """Match the loop's symbols, once, against the first served universe it reads (``GET
        /v1/model``: at start, or the first cycle that can read it; a pair in either spelling): one
        the model does not decide is named in a warning and held while it does not
        (:meth:`_servable`: a loop restarted after a hot swap that dropped one of its symbols keeps
        managing the others, its unwinds included); :class:`UniverseError` when it decides none of
        them (nothing could ever be traded)."""
        served = self._served
        if self._universe_settled or served is None:
            return
        matched = {s: served.spelling(s) for s in self.symbols}
        if not any(matched.values()):
            raise UniverseError(
                f"symbols: {served.model} decides none of {', '.join(self.symbols[:8])} "
                f"({served.shown()}): trade a subset of it, or name none to trade it all"
            )
        missing = [s for s, m in matched.items() if m is None]
        if missing:
            log.warning(
                "%s does not decide %s: held while it does not (%s)",
                served.model,
                ", ".join(missing),
                served.shown(),
            )
        self._universe_settled = True

    @staticmethod
    def _hold(
        request: ActRequest, saved: SavedKillSwitch | None, account_peak: float, reason: str
    ) -> tuple[ActResponse, None, str]:
        """A hold-everything answer made here (nothing asked): no order, the reason on its rows, and
        the switch as the state file left it (``account_peak``: its peak; not advanced: the rule to
        advance it with is in doubt), so the rows say whether it is on; and ``reason`` again (it is
        held without the service: ``_ask``)."""
        log.warning("%s: holding every position", reason)
        if saved is not None:
            request = request.model_copy(update={"kill_switch": saved.caller_state(account_peak)})
        return hold_everything(request, model=RULE_UNKNOWN_MODEL, version=0, reason=reason), None, reason

    def _kill_switch(
        self, saved: SavedKillSwitch | None, account_peak: float, rule: KillSwitchConfig
    ) -> KillSwitchTracker:
        """The switch as the state file left it (``account_peak``: its peak), advanced from now on with
        ``rule``; without one (an earlier version's file, or a new one), off from that peak until this
        cycle advances it."""
        from raytrade.serve.client import KillSwitchTracker

        if saved is not None and saved.rule is not None and saved.rule != rule:
            log.warning(
                "kill switch: the saved switch was advanced with %s; it is advanced with %s from now on",
                shown_rule(saved.rule),
                shown_rule(rule),
            )
        if saved is None:
            return KillSwitchTracker(
                rule, CallerKillSwitch(active=False, bars_active=0, peak_equity=account_peak)
            )
        return KillSwitchTracker(rule, saved.caller_state(account_peak), saved.as_of, saved.bar)

    def _log_transitions(
        self,
        now: datetime,
        cycle_id: str,
        answer: ActResponse,
        equity: float,
        sent: Mapping[str, float | None],
    ) -> None:
        """Log the previous decision's transition rows, after (and apart from) the cycle's fills and
        decisions: offline-RL bookkeeping must never cost an order or a fill record, so a failure
        here is logged, ends the episode's chain (the next decision starts afresh) and is not raised."""
        try:
            rows = self._advance_episode(now, cycle_id, answer, equity, sent)
            self._log(rows)
        except Exception:
            self._pending_step = None
            self._end_episode()  # the chain is broken: the next starts its own
            log.exception("cycle %s: transition rows not logged", cycle_id)

    def _advance_episode(
        self,
        now: datetime,
        cycle_id: str,
        answer: ActResponse,
        equity: float,
        sent: Mapping[str, float | None] | None = None,
    ) -> list[dict[str, Any]]:
        """The previous decision's transition rows, completed by this answer's observation (none when
        it cannot be completed: see the module docstring); this answer becomes the pending step, its
        action per symbol the weight the book was sent to (``sent``, :func:`_sent_weights`; None
        there, an order of unknown outcome or size, makes it no transition; a symbol without an order
        keeps its current weight). Symbols are in the served spelling (the store's, the learner's).

        The env's step is a bar: a cycle whose answer observes the bar the pending decision observed
        (``features_as_of``) completes nothing; the pending decision stays, its action now what this
        cycle sent the book to (the bar's last intent), so the transition runs from the bar's first
        cycle to the next bar's first, rewarded over that span. A decision that is no transition ends
        the episode, so its steps stay consecutive (a learner's returns read them in order)."""
        last, self._pending_step = self._pending_step, None
        obs = answer.observation
        rows: list[dict[str, Any]] = []
        served = [self._served_spelling.get(s, s) for s in answer.decisions]
        bar = answer.features_as_of
        # a step starts on its bar's first cycle: one from later on the bar would span part of it
        first_of_bar = bar is None or self._previous_bar is None or bar > self._previous_bar
        self._previous_bar = bar if bar is not None else self._previous_bar
        policy = (answer.model, answer.observation_spec)
        swapped = (
            self._episode_policy is not None
            and obs is not None
            and not answer.fallback  # a fallback answer is the service's, not another policy's
            and policy != self._episode_policy  # also across a fallback, which clears the pending step
        )
        decided = obs is not None and not answer.fallback
        actions = self._sent_actions(answer, sent or {}) if decided else None
        same_bar = bar is not None and last is not None and last.bar is not None and bar <= last.bar
        if last is not None and same_bar and decided and not swapped and served == last.symbols:
            if actions is not None:  # no step yet: the bar's first decision waits, with this intent
                self._pending_step = last._replace(actions=actions)
                return rows
            log.info("decision %s: orders of unknown outcome on its bar: not a transition", last.cycle_id)
            self._end_episode()
            return rows
        skipped = None if last is None or same_bar else bars_skipped(last.bar, bar, served)
        if last is not None and skipped:
            log.info(
                "decision %s observed the bar of %s, the next answer the bar of %s, %d bars missed in "
                "between: not logged as a transition (a step is one bar)",
                last.cycle_id,
                last.bar,
                bar,
                skipped,
            )
        elif last is not None:
            same = served == last.symbols and not swapped
            if obs is not None and same and not same_bar and equity > 0 and last.equity > 0:
                rows = transition_rows(now, self._episode_id or "", last, obs, equity)
            else:
                log.info("decision %s has no next observation: not logged as a transition", last.cycle_id)
        if (last is not None and not rows) or swapped:  # a broken chain (or another policy) ends it
            if swapped:
                log.info("the service now answers with %s: a new episode starts", answer.model)
            self._end_episode()
        if decided and actions is None:
            log.info("decision %s: orders of unknown outcome: not logged as a transition", cycle_id)
            self._end_episode()
        elif decided and not first_of_bar:  # the chain broke within this bar: the next bar starts one
            log.info(
                "decision %s: the chain broke within its bar: the next bar's decision starts one", cycle_id
            )
        elif decided and obs is not None and actions is not None:
            self._episode_id = self._episode_id or f"live:{cycle_id}"
            self._episode_policy = policy
            self._pending_step = PendingStep(
                cycle_id,
                self._step,
                answer.model,
                served,
                list(obs),
                actions,
                equity,
                answer.observation_spec,
                bar,
            )
            self._step += 1
        return rows

    def _end_episode(self) -> None:
        """The chain of transitions is broken: the episode ends, and the next one starts at step 0 (on
        a bar's first cycle: :meth:`_advance_episode`)."""
        self._episode_id, self._step = None, 0

    @staticmethod
    def _sent_actions(answer: ActResponse, sent: Mapping[str, float | None]) -> list[float] | None:
        """Per decided symbol, the weight the book was sent to (``sent``; the current weight where
        there is none), clipped to the action box; None when one of them is unknown."""
        weights = [sent.get(s, d.current_weight) for s, d in answer.decisions.items()]
        if any(w is None for w in weights):
            return None
        return [min(max(float(w), -1.0), 1.0) for w in weights if w is not None]

    def _sync_with_broker(self, state: LiveState, counting: bool = True) -> list[OrderState] | None:
        """Resolve ``planned`` orders by client id (adopted when the broker has them, dropped when it
        never saw them) and adopt the broker's open orders with this project's client-id prefix that
        the state does not know. A broker that cannot be asked leaves the state as it is; a failed
        look-up of a ``planned`` order counts as an unreadable cycle when ``counting`` (each cycle's
        sync, not the one at start, which precedes the first cycle's).

        Returns the orders the broker listed open, or None when it could not list them: then an order
        of this loop the state does not know (a lost state file, a submit whose look-up missed it) may
        be resting, unseen, and the cycle sends nothing on top of it."""
        kept: list[dict[str, Any]] = []
        for p in state.pending:
            if p.get("status", "submitted") == "planned":
                try:
                    found = self.broker.order_by_client_id(p["client_order_id"])
                except Exception as exc:  # counted like an unreadable submitted order
                    cycles = _count_unreadable(p, exc) if counting else int(p.get("unreadable_cycles", 0))
                    log.warning(
                        "cannot look up order %s (%s, %d cycles in a row): %s",
                        p["client_order_id"],
                        p.get("symbol"),
                        cycles,
                        exc,
                    )
                    kept.append(p)
                    continue
                _forget_unreadable(p)
                if found is None:
                    log.warning("order %s was never received by the broker; dropped", p["client_order_id"])
                    continue
                p = {**p, "order_id": found.order_id, "status": "submitted"}
                _record_size(p, found)
                log.warning("order %s was submitted before a crash; tracked", p["client_order_id"])
            if any(p.get("order_id") and p.get("order_id") == k.get("order_id") for k in kept):
                continue  # the same order twice: track it once
            kept.append(p)
        known = {p.get("order_id") for p in kept} | {p.get("client_order_id") for p in kept}
        try:
            open_orders = self.broker.open_orders()
        except Exception as exc:
            log.warning("cannot list open orders: %s; no order is sent this cycle", exc)
            state.pending = kept
            return None
        for o in open_orders:
            cid = o.client_order_id or ""
            if not cid.startswith(CLIENT_ORDER_PREFIX) or o.order_id in known or cid in known:
                continue
            log.warning("adopting open order %s (%s) the state did not know", o.order_id, cid)
            adopted: dict[str, Any] = {
                "decision_id": cid.removeprefix(CLIENT_ORDER_PREFIX),
                "client_order_id": cid,
                "order_id": o.order_id,
                "status": "submitted",
                "symbol": o.symbol,
                "side": o.side,
                "qty": None,  # unknown size unless the broker reports it
                "limit_price": None,
                "mid": None,
                "target_weight": None,
                "policy_version": "adopted",
                "submitted_at": None,
            }
            _record_size(adopted, o)
            kept.append(adopted)
        state.pending = kept
        return list(open_orders)

    def _open_quote_age_hours(self) -> float | None:
        """The equity quotes' age limit while the market is open, in hours, or None when the broker's
        clock says it is closed. A clock that cannot be read counts as open: the stricter limit."""
        try:
            is_open = self.broker.market_open()
        except Exception as exc:
            log.warning(
                "cannot read the market clock: %s; equity quotes are held to the open market's limit", exc
            )
            is_open = True
        return self.config.max_open_quote_age_minutes / 60.0 if is_open else None

    def _cancel(self, still_open: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Cancel the earlier cycles' orders that still rest: this cycle's decision supersedes them
        (and a resting order would hold shares or buying power the new one needs). They stay pending,
        so whatever they filled before the cancel is logged once they are done.

        Returns the records of the orders that may still fill: a ``planned`` order not resolved yet,
        one whose cancel failed, or one the broker still shows open (``pending_cancel`` included) or
        cannot read (a 404 included) ``cancel_confirm_s`` after the cancel was accepted (a cancel is
        asynchronous at Alpaca: the order can fill until it is done); each read of an order here
        refreshes its ``filled_qty``. The cycle holds their symbols (a new order on top could double
        the position) and counts their unfilled remainder against the gross budget; the next cycle
        sees the old order's state and re-plans."""
        resting: list[dict[str, Any]] = []
        cancelled: dict[str, dict[str, Any]] = {}  # order id -> record
        for p in still_open:
            if not p.get("order_id"):  # a planned order not resolved yet
                resting.append(p)
                continue
            try:
                self.broker.cancel(p["order_id"])
                cancelled[p["order_id"]] = p
            except Exception as exc:  # filled, gone, or still resting: the next reconcile sees which
                log.warning(
                    "cannot cancel order %s: %s; %s held this cycle", p["order_id"], exc, p.get("symbol")
                )
                resting.append(p)
        deadline = time.monotonic() + self.cancel_confirm_s
        while cancelled:
            for order_id in list(cancelled):
                try:
                    state = self.broker.order(order_id)
                except Exception:  # cannot tell: still open until the broker says otherwise. A 404
                    # too: Alpaca keeps a cancelled order (status ``canceled``), so one it does not
                    # know right after accepting its cancel is an anomaly, not proof that it is gone;
                    # the next cycle's reconcile drops it only if the listing of open orders agrees
                    continue
                _record_size(cancelled[order_id], state)
                if not order_is_open(state.status):
                    del cancelled[order_id]
            if not cancelled or time.monotonic() >= deadline:
                break
            time.sleep(CANCEL_POLL_S)
        for order_id, p in cancelled.items():
            log.warning(
                "order %s is still open (or unreadable) after its cancel; %s held this cycle",
                order_id,
                p.get("symbol"),
            )
            resting.append(p)
        return resting

    def _reconcile(
        self, state: LiveState, now: datetime, listed: set[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Experience rows for earlier orders that are done and (partly) filled, and the orders still
        open (kept for the next cycle). An order the broker says it does not know (404) is dropped only
        when this cycle's listing of open orders (``listed``; None: it failed) does not show it either:
        one the listing shows open is kept, counted as unreadable (dropped, its symbol would be planned
        again on top of it).

        A fill row is stamped with ``now``, when the loop learnt of it: the store is append-only per
        symbol, and a later cycle's decision may already be stored. The fill's own time is
        ``submitted + latency_order_to_fill_ms`` (``submitted`` is the decision's ``ts``); the latency
        is null when the broker reports no fill time (a 0 would claim a fill at once: cost calibration
        tells an order that waited for the market to open by its latency, ``envs.cost_calibration``)."""
        rows, still_open = [], []
        for p in state.pending:
            if not p.get("order_id"):
                still_open.append(p)  # planned, unresolved: the next sync looks it up again
                continue
            try:
                o = self.broker.order(p["order_id"])
            except OrderNotFound as exc:  # e.g. an id of another account: dropped, unless listed open
                if listed is not None and p["order_id"] not in listed:
                    log.error(
                        "order %s (%s) is unknown to the broker: dropped", p["order_id"], p.get("symbol")
                    )
                    continue
                shown = "listed open" if listed is not None else "not listed (the listing failed)"
                log.warning(
                    "order %s (%s) is unknown to the broker but %s: kept (cycle %d in a row)",
                    p["order_id"],
                    p.get("symbol"),
                    shown,
                    _count_unreadable(p, exc),
                )
                still_open.append(p)
                continue
            except Exception as exc:  # the broker is unreachable: try again next cycle (counted)
                log.warning(
                    "cannot read order %s (%s, cycle %d in a row): %s",
                    p["order_id"],
                    p.get("symbol"),
                    _count_unreadable(p, exc),
                    exc,
                )
                still_open.append(p)
                continue
            _forget_unreadable(p)
            if order_is_open(o.status):
                _record_size(p, o)
                still_open.append(p)
                continue
            if o.filled_qty <= 0 or o.filled_avg_price is None:
                continue
            sign = 1.0 if p["side"] == "buy" else -1.0
            mid = p.get("mid")
            submitted_at = datetime.fromisoformat(p["submitted_at"]) if p.get("submitted_at") else None
            filled_at = o.filled_at  # None: the broker gave no fill time, so the latency is unknown
            rows.append(
                {
                    "symbol": p["symbol"],
                    "ts": now,
                    "decision_id": p["decision_id"] + ":fill",
                    "policy_version": p["policy_version"],
                    "side": p["side"],
                    "target_weight": p["target_weight"],
                    "order_id": o.order_id,
                    "submitted": True,
                    "filled": o.status == "filled",
                    "fill_price": o.filled_avg_price,
                    "filled_qty": o.filled_qty,
                    "partial": o.status != "filled",
                    "slippage_bps": sign * (o.filled_avg_price - mid) / mid * 1e4 if mid else None,
                    "latency_order_to_fill_ms": (filled_at - submitted_at).total_seconds() * 1e3
                    if submitted_at is not None and filled_at is not None
                    else None,
                }
            )
        return rows, still_open

    def _stop_on_unreadable(self, state: LiveState) -> None:
        """Raise :class:`UnreadableOrderError` when the broker's open orders could not be listed on
        ``max_unreadable_order_cycles`` cycles in a row, or when an order of ``state.pending`` (the
        orders this cycle keeps) has been unreadable for as many. The cycle saved the state just before:
        the counts and the orders survive the stop. Nothing is cancelled, submitted or logged by the
        cycle that stops."""
        limit = self.config.max_unreadable_order_cycles
        if state.unlisted_cycles >= limit:
            raise UnreadableOrderError(
                f"live loop stopped: the broker's open orders could not be listed for "
                f"{state.unlisted_cycles} cycles in a row, and none of them sent an order (an order of this "
                f"loop the state does not know may rest at the broker). Check the account's open orders; the "
                f"state file {str(self.state_file)!r} keeps the count (max_unreadable_order_cycles={limit})"
            )
        stuck = [p for p in state.pending if int(p.get("unreadable_cycles", 0)) >= limit]
        if not stuck:
            return
        named = "; ".join(
            f"order {p.get('client_order_id')!r} ({p.get('symbol')}, broker id "
            f"{p.get('order_id') or 'unknown: submitted, its outcome never confirmed'}) "
            f"unreadable for {p['unreadable_cycles']} cycles, last error: {p.get('last_read_error')}"
            for p in stuck
        )
        raise UnreadableOrderError(
            f"live loop stopped: {named}; its symbol was held on each of those cycles. Check the order "
            f"at the broker; the state file {str(self.state_file)!r} keeps it (max_unreadable_order_cycles"
            f"={limit})"
        )

    def _log(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the rows whose decision id the store's experience table does not hold yet, in
        quarantine mode (an unwritable row is kept aside, never raised into the loop); returns the
        rows handed to the writer (all of ``rows`` without a store)."""
        if self.store is None or not rows:
            return rows
        from raytrade.replay.writer import ReplayWriter

        stored = self._stored_ids.keys(Path(self.store) / "experience", "decision_id")
        rows = new_decisions(stored, rows)
        if not rows:
            return rows
        with ReplayWriter(self.store, on_error="quarantine", key_cache=self._stored_ids) as writer:
            result = writer.append_experience(experience_frame(rows))
        if result.rows_refused:
            log.error("%d experience rows refused, kept in %s", result.rows_refused, result.quarantine_file)
        return rows


def _lock_state_file(state_file: Path) -> IO[str]:
    """An exclusive, non-blocking ``flock`` on ``<state_file>.lock`` (it holds the owner's pid), next to
    the file the path leads to: a state file reached through a symbolic link is locked where it lives,
    so a loop on the link and one on the file cannot both hold it."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    real = state_file.resolve()
    handle = open(real.with_name(real.name + ".lock"), "a+")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise LiveStateError(
            f"live state file {str(state_file)!r} is in use by another live loop (pid {owner}); "
            "one loop per account"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _lock_account(lock_dir: Path, account_id: str, state_file: Path) -> IO[str]:
    """An exclusive, non-blocking ``flock`` on ``<lock_dir>/<account id>.lock``, which records the
    holder's pid and state file: two loops on one account are refused whatever their state files."""
    name = _account_file_name(account_id, "an account lock (the broker gave no usable account id)")
    lock_dir.mkdir(parents=True, exist_ok=True)
    handle = open(lock_dir / f"{name}.lock", "a+")  # noqa: SIM115 - held for the loop's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        text = handle.read()
        handle.close()
        try:
            holder = json.loads(text)
            pid, held_state = holder.get("pid", "?"), holder.get("state_file", "?")
        except (ValueError, AttributeError):
            pid, held_state = "?", "?"
        raise LiveStateError(
            f"account {account_id!r} is traded by another live loop (pid {pid}, state file "
            f"{held_state!r}; lock {str(lock_dir / f'{name}.lock')!r}); one loop per account"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "state_file": str(state_file)}))
    handle.flush()
    return handle


def _count_unreadable(record: dict[str, Any], exc: Exception) -> int:
    """One more cycle on which the broker could not say what became of ``record``'s order (its
    look-up by broker id, or by client id while ``planned``): counted in the record with the error,
    for :meth:`LiveLoop._stop_on_unreadable`; returns the count."""
    record["unreadable_cycles"] = int(record.get("unreadable_cycles", 0)) + 1
    record["last_read_error"] = " ".join(str(exc).split())[:300]
    return int(record["unreadable_cycles"])


def _forget_unreadable(record: dict[str, Any]) -> None:
    """The broker answered for ``record``'s order: the count of unreadable cycles starts again."""
    record.pop("unreadable_cycles", None)
    record.pop("last_read_error", None)


def _record_size(record: dict[str, Any], order: OrderState) -> None:
    """Keep in ``record`` what the broker reports of its order's size: ``filled_qty`` (it only grows,
    so an older count overstates the remainder: safe; one that is not a finite number is dropped, and
    a missing one counts as 0, the whole order), ``qty`` and ``limit_price`` where the broker reports
    them as finite numbers (else the record keeps its own, e.g. the intent's). The state file refuses
    non-finite numbers, so none is written."""
    filled, qty, limit = _number(order.filled_qty), _number(order.qty), _number(order.limit_price)
    if filled is None:
        record.pop("filled_qty", None)
    else:
        record["filled_qty"] = filled
    if qty is not None:
        record["qty"] = qty
    if limit is not None:
        record["limit_price"] = limit


def _number(value: Any) -> float | None:
    """A state-file number, or None when it is missing or not a finite number (an unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # text that is no number; an integer beyond a float
        return None
    return number if math.isfinite(number) else None


def _aged_out(
    symbol: str,
    quotes: Mapping[str, TopOfBook],
    at: datetime,
    limits: tuple[float, float, float | None],
) -> str | None:
    """Why an order for ``symbol`` must not go out at ``at``: its quote, fresh when read, is past its
    age limit by now (``limits``: :func:`serve.orders.stale_quotes`'); None when it may."""
    quote = quotes.get(symbol)
    if quote is None or not (aged := stale_quotes({symbol: quote}, at, *limits)):
        return None
    age = _age_text(aged[symbol])
    return f"its quote is {age} old by now, past its limit (the cycle's requests took that long)"


def _age_text(hours: float) -> str:
    return f"{hours:.0f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def _foreign_orders(open_orders: Sequence[OrderState]) -> list[dict[str, Any]]:
    """The open orders this loop did not place (no ``rt-`` client id: the user's own, another
    program's), as records :func:`_resting_orders` sizes: each may fill, so its symbol is held and its
    worst case counts against the gross budget, like one of ours whose cancel failed; the loop never
    cancels them (logged, one line each, every cycle)."""
    out = []
    for o in open_orders:
        if (o.client_order_id or "").startswith(CLIENT_ORDER_PREFIX):
            continue
        log.warning(
            "open order %s (%s %s) was not placed by this loop: %s held, its remainder counted against "
            "the gross budget; it is not cancelled",
            o.order_id,
            o.side,
            o.symbol,
            o.symbol,
        )
        record: dict[str, Any] = {
            "symbol": o.symbol,
            "side": o.side,
            "client_order_id": f"not ours: {o.order_id}",
        }
        _record_size(record, o)
        out.append(record)
    return out


def _sent_weights(
    plans: Sequence[OrderPlan],
    submitted: Mapping[str, str],
    uncertain: Mapping[str, str],
    resting: Sequence[RestingOrder],
    positions: Sequence[BrokerPosition],
    quotes: Mapping[str, TopOfBook],
    equity: float,
) -> dict[str, float | None]:
    """Per symbol with an order, the weight of ``equity`` its book was sent to this cycle: the held
    units plus the orders' (a submitted plan's, the remainders of every earlier order still resting,
    the loop's or another's), at the symbol's mark (its tradeable mid, else its position's price; a
    plan at the mid it was planned at). Not the plan's target: a long-to-short flip sends only the
    closing order, and a capped order only part of the move. None where that cannot be known (an
    order whose submit outcome is unknown, a resting order of unknown size, a symbol without a
    price, no equity). A symbol absent keeps its current weight."""
    held = {p.symbol: p.qty for p in positions}
    position_price = {p.symbol: p.current_price for p in positions}
    units: dict[str, float | None] = {}
    price: dict[str, float | None] = {}
    for order in resting:
        if order.symbol is None:
            continue
        symbol, qty = order.symbol, order.remaining_qty
        mark = tradeable_mid(quotes.get(symbol)) or position_price.get(symbol) or order.limit_price
        price[symbol] = mark if mark is not None and mark > 0 else None
        before = units.get(symbol, held.get(symbol, 0.0))
        if order.side is None or qty is None or before is None:
            units[symbol] = None
            continue
        units[symbol] = before + (qty if order.side == "buy" else -qty)
    for plan in plans:
        if plan.decision_id in uncertain:
            units[plan.symbol] = None
        elif plan.decision_id in submitted:
            signed = plan.qty if plan.side == "buy" else -plan.qty
            units[plan.symbol], price[plan.symbol] = held.get(plan.symbol, 0.0) + signed, plan.mid
    out: dict[str, float | None] = {}
    for symbol, n in units.items():
        mark = price.get(symbol)
        out[symbol] = None if n is None or mark is None or not equity > 0 else n * mark / equity
    return out


def _resting_orders(
    records: Sequence[dict[str, Any]], quotes: Mapping[str, TopOfBook], positions: Sequence[BrokerPosition]
) -> list[RestingOrder]:
    """The orders of ``records`` (state-file records of orders that may still fill) as the planner
    sizes them: the unfilled remainder ``qty - filled_qty`` (a missing ``filled_qty`` is 0: the
    whole order, the worst case; a missing ``qty`` is an unknown size), priced at the highest of the
    record's mid, the symbol's mid in ``quotes`` and its position's price."""
    position_price = {p.symbol: p.current_price for p in positions}
    out = []
    for p in records:
        symbol = p.get("symbol") if isinstance(p.get("symbol"), str) and p.get("symbol") else None
        side = p.get("side") if p.get("side") in ("buy", "sell") else None
        qty, filled = _number(p.get("qty")), _number(p.get("filled_qty", 0.0))
        mid = tradeable_mid(quotes.get(symbol)) if symbol is not None else None
        held_price = position_price.get(symbol) if symbol is not None else None
        known = [x for x in (_number(p.get("mid")), mid, _number(held_price)) if x is not None and x > 0]
        out.append(
            RestingOrder(
                symbol=symbol,
                side=side,
                remaining_qty=None if qty is None or qty <= 0 or filled is None else max(qty - filled, 0.0),
                limit_price=_number(p.get("limit_price")),
                reference_price=max(known, default=None),
                label=str(p.get("client_order_id") or p.get("order_id") or "?"),
            )
        )
    return out


def _intent(plan: OrderPlan, policy_version: str, now: datetime) -> dict[str, Any]:
    """The state file's record of an order about to be submitted (status ``planned``)."""
    return {
        "decision_id": plan.decision_id,
        "client_order_id": plan.client_order_id,
        "order_id": None,
        "status": "planned",
        "symbol": plan.symbol,
        "side": plan.side,
        "qty": plan.qty,
        "limit_price": plan.limit_price,
        "filled_qty": 0.0,
        "mid": plan.mid,
        "target_weight": plan.target_weight,
        "policy_version": policy_version,
        "submitted_at": now.isoformat(),
    }


STORE_LAG_TRADING_DAYS = 1
"""How many sessions the newest closed bar of ``--store`` may lag the cycle's date before each cycle
warns that the store was not refreshed (its dollar volumes, which cap the orders, are old): NYSE
trading days for an equity, calendar days for a crypto pair (:func:`store_lag`)."""


class StoredVolumes(NamedTuple):
    """What the cycle read from the store's features: each symbol's latest closed ``dollar_volume_20``
    and the stamp of each symbol's newest closed bar (a symbol without one in the 30 days read is left
    out of both)."""

    volumes: dict[str, float]
    last_closed: dict[str, pd.Timestamp]


STORE_LAG_SHOWN = 5
"""Lagging symbols a store-lag warning names; the rest are counted."""


def store_lag(last_closed: Mapping[str, pd.Timestamp], symbols: Sequence[str], now: datetime) -> str | None:
    """Why the store looks not refreshed at ``now`` for some of ``symbols``, or None: a symbol whose
    newest closed bar (``last_closed``) is more than :data:`STORE_LAG_TRADING_DAYS` sessions behind
    ``now``'s UTC date (sessions before it, from the bar's date on), or that has none. An equity's
    sessions are NYSE trading days (``replay.exchange_calendar``: Friday's bar on the Tuesday after a
    Monday holiday is one session old), a crypto pair's (``replay.loop_rules.is_crypto_symbol``) are
    calendar days (its bars never pause: Friday's bar on Monday is three days old). Per symbol, so a
    store refreshed for some symbols only (crypto, one vendor's) still warns for the others, whose
    dollar volumes cap the orders. The first :data:`STORE_LAG_SHOWN` lagging symbols are named, the
    rest counted."""
    at = pd.Timestamp(now).tz_convert("UTC")
    lagging: list[str] = []
    for symbol in symbols:
        stamp = last_closed.get(symbol)
        if stamp is None:
            lagging.append(f"{symbol} (none in the 30 days before)")
            continue
        day = stamp.tz_convert("UTC").date() if stamp.tzinfo else stamp.date()
        if is_crypto_symbol(symbol):
            lag, unit = (at.date() - day).days, "days"
        else:
            lag, unit = trading_days_between(day, at.date()), "trading days"
        if lag > STORE_LAG_TRADING_DAYS:
            lagging.append(f"{symbol} ({day.isoformat()}, {lag} {unit} before)")
    if not lagging:
        return None
    more = len(lagging) - STORE_LAG_SHOWN
    shown = ", ".join(lagging[:STORE_LAG_SHOWN]) + (f" and {more} more" if more > 0 else "")
    return (
        f"the store's newest closed bar lags as_of {at.isoformat()} for {len(lagging)} of {len(symbols)} "
        f"symbols: {shown}"
    )


DAILY_BARS: Final = LONGEST_INTRADAY_BAR.to_pytimedelta()
"""Two bars at least this far apart are daily bars (:func:`bars_skipped`; ``series_closed_at``'s rule: a
store whose clock changes has 19 h between two days); closer, intraday ones."""


def bars_skipped(first: datetime | None, then: datetime | None, symbols: Sequence[str]) -> int:
    """How many daily bars lie strictly between the bars ``first`` and ``then`` that a universe of
    ``symbols`` steps on: NYSE sessions when it holds an equity (a store with equities steps on their
    sessions), calendar days for crypto pairs alone. 0 when they are consecutive, when either is
    unknown or when they are intraday (closer than :data:`DAILY_BARS`: their calendar is not known here)
    (``replay.exchange_calendar.daily_bars_between``)."""
    if first is None or then is None or then - first < DAILY_BARS:
        return 0
    crypto_only = all(is_crypto_symbol(s) for s in symbols)
    return daily_bars_between(first.astimezone(UTC).date(), then.astimezone(UTC).date(), crypto_only)


def _latest_dollar_volume(store: Path, symbols: Sequence[str], now: datetime) -> StoredVolumes | None:
    """None when the store has no features; else each symbol's latest ``dollar_volume_20`` in the
    store's features of bars that have closed by
    ``now`` (``replay.timeutil.series_closed_at``, the rule serving observes bars by: a partial bar of
    today, whose volume is a fraction of a day's, is not read; the last 30 days are read). It is the
    volume the simulator caps fills with; a symbol without one is left out (unknown, so only the
    equity-fraction cap applies to it). A 0 is kept: nothing traded, so nothing is sent
    (``serve.orders.plan_orders``). With them each symbol's newest closed bar (:func:`store_lag`)."""
    from raytrade.replay.reader import read_frame
    from raytrade.replay.timeutil import series_closed_at

    if not (Path(store) / "features").is_dir():
        return None
    frame = read_frame(
        store,
        "features",
        symbols=list(symbols),
        start=pd.Timestamp(now) - pd.Timedelta(days=30),
        end=pd.Timestamp(now),
        columns=["symbol", "ts", "dollar_volume_20"],
    )
    frame = frame.dropna(subset=["dollar_volume_20"]).sort_values("ts")
    closed = pd.Series(False, index=frame.index)
    for _, stamps in frame.groupby("symbol", observed=True)["ts"]:
        closed[stamps.index] = np.asarray(series_closed_at(stamps) <= pd.Timestamp(now))
    last = frame[closed].groupby("symbol")["dollar_volume_20"].last()
    stamps = frame[closed].groupby("symbol")["ts"].last()
    return StoredVolumes(
        {str(k): float(v) for k, v in last.items() if v >= 0}, {str(k): v for k, v in stamps.items()}
    )


def _marked_account(
    account: BrokerAccount, positions: Sequence[BrokerPosition], marked: MarkedBook
) -> tuple[BrokerAccount, Sequence[BrokerPosition]]:
    """The account and positions the cycle decides on: the broker's, unless the account ``marked`` at
    this cycle's quotes (``orders.marked_book``) is worth more than ``MARK_GAP_WARNING`` less, then
    the marked account: its equity, and each position's value and price at its mid (one picture, so
    the service's current weights are the marked values over the marked equity). An account worth
    nothing at the quotes keeps the broker's picture: the request needs a positive equity, and the
    cycle then sends only reductions (``cycle``)."""
    if not (0 < marked.equity < account.equity * (1.0 - MARK_GAP_WARNING)):  # NaN: unknown, kept
        return account, positions
    repriced = [
        p
        if marked.values[p.symbol] == p.market_value or p.qty == 0
        else p._replace(market_value=marked.values[p.symbol], current_price=marked.values[p.symbol] / p.qty)
        for p in positions
    ]
    return account._replace(equity=marked.equity), repriced


def _loop_state(
    account: BrokerAccount,
    positions: Sequence[BrokerPosition],
    quotes: Mapping[str, TopOfBook],
    symbols: Sequence[str],
    peak: float,
    dollar_volume: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The decision-time state in the trading loop's shape (``shared/contracts``). Each analysis row
    carries the symbol's average dollar volume per bar as ``avg_dollar_vol`` (the store's
    ``dollar_volume_20``, ``dollar_volume``) where it is known and finite, else None: the service's
    spread gate tells mega caps by it, and gives a row without it the strictest equity cap."""
    analysis: dict[str, Any] = {}
    for sym in symbols:
        volume = (dollar_volume or {}).get(sym)
        known = volume is not None and math.isfinite(volume) and volume >= 0
        row: dict[str, Any] = {"avg_dollar_vol": float(volume) if known and volume is not None else None}
        book = quotes.get(sym)
        if book is None or not (book.bid > 0 and book.ask > 0):
            analysis[sym] = {"bid_price": None, "ask_price": None, "spread_bps": None, **row}
            continue
        mid = 0.5 * (book.bid + book.ask)
        analysis[sym] = {
            "bid_price": book.bid,
            "ask_price": book.ask,
            "spread_bps": max(book.ask - book.bid, 0.0) / mid * 1e4,
            **row,
        }
    return {
        "account": {
            "equity": account.equity,
            "cash": account.cash,
            "buying_power": account.buying_power,
            "last_equity": account.last_equity,
        },
        "positions": [
            {
                "symbol": p.symbol,
                "qty": str(abs(p.qty)),
                "side": "long" if p.qty > 0 else "short",
                "market_value": str(p.market_value),
                # a price of 0 (a halted or delisted symbol) or NaN is no price: sent as unknown
                "current_price": str(p.current_price)
                if p.current_price is not None and p.current_price > 0
                else None,
            }
            for p in positions
            if p.qty != 0
        ],
        "drawdown_pct": min(account.equity / peak - 1.0, 0.0) if peak > 0 else 0.0,
        "analysis": analysis,
    }


def transition_rows(
    now: datetime, episode_id: str, step: PendingStep, next_observation: Sequence[float], equity: float
) -> list[dict[str, Any]]:
    """One experience row per symbol of ``step``'s universe: the transition from its observation to
    ``next_observation``, rewarded ``log(equity / step.equity)``, stamped ``now`` (the store is
    append-only per symbol; the decision's own time is in its cycle id)."""
    from raytrade.envs.gym_envs import N_PORTFOLIO_STATE
    from raytrade.replay.experience import split_flat_observation

    n = len(step.symbols)
    slices, portfolio = split_flat_observation(np.asarray(step.observation), n, N_PORTFOLIO_STATE)
    next_slices, next_portfolio = split_flat_observation(np.asarray(next_observation), n, N_PORTFOLIO_STATE)
    reward = math.log(equity / step.equity)
    return [
        {
            "symbol": sym,
            "ts": now,
            "decision_id": f"{step.cycle_id}:{sym}:transition",
            "policy_version": step.policy_version,
            "side": "flat",  # what was traded is on the decision and fill rows
            "target_weight": step.actions[i],
            "reward": reward,
            "episode_id": episode_id,
            "step": step.step,
            "asset_index": i,
            "observation": slices[i],
            "portfolio_state": portfolio,
            "action": step.actions[i],
            "next_observation": next_slices[i],
            "next_portfolio_state": next_portfolio,
            "terminal": False,
            "truncated": False,
            "observation_spec": step.observation_spec,
        }
        for i, sym in enumerate(step.symbols)
    ]
