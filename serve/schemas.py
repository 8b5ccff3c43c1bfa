"""The serving contract: what the trading loop sends to ``POST /v1/act`` and what it gets back.

The request is built from what the loop holds at decision time (``../shared/contracts``): the account,
the broker's positions (numbers as strings, as Alpaca returns them), the current drawdown and one
analysis row per symbol. Rows carry many more keys than the policy uses; unknown keys are ignored,
but every number the service reads must be finite (NaN or inf is a 422 naming the field).

Response: per symbol the target weight (fraction of equity, signed), the target quantity it means at
the request's price, the side, the gate mode, a confidence in [0, 1], and whether the symbol could
trade; plus a unique ``decision_id``, the model version, the bar whose features the decision used and
the exposure caps that applied. A fallback response (the service down, or the client's own safety rule)
holds every position where it is: no new risk.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from uuid import uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from raytrade.replay.loop_rules import is_crypto_symbol

ACT_PATH: Final = "/v1/act"
HEALTH_PATH: Final = "/v1/health"
MODEL_PATH: Final = "/v1/model"
"""The service's routes (the deployment serves them, the client calls them)."""

MAX_ABS_VALUE: Final = 1e12
"""Every number of a request is within +-1e12 (currency units, quantities, prices), so weights
(value / equity, equity >= :data:`MIN_EQUITY`) stay finite."""
MIN_EQUITY: Final = 1.0
MAX_ROWS: Final = 2000
"""At most this many positions, and this many analysis rows, in one request."""
MAX_SYMBOL_CHARS: Final = 32
MAX_TEXT_CHARS: Final = 512

KillSwitchRule = Literal["caller_state", "stateless", "disabled"]
"""Which kill-switch rule an answer applied: ``caller_state``, the request's ``kill_switch`` with the
trained hysteresis (on while the state says so, or when the drawdown from its peak trips the trigger
now); ``stateless``, no state in the request, on only while ``drawdown_pct`` reaches the trigger (no
hysteresis, bars-active feature 0: not what the policy was trained and evaluated with); ``disabled``,
the policy has no kill switch."""
GateMode = Literal["flat", "probe", "passive", "aggressive", "hold"]
"""``hold`` keeps the current position: the fallback, and symbols the service could not trade."""
Side = Literal["long", "short", "flat"]
UNKNOWN_BLOCK: Final = "trade_blocked sent as null (unknown)"
"""The reason a symbol sent with ``trade_blocked: null`` is held under (it was a 422, which stopped
the loop's cycle; unknown gates fail closed)."""


class RequestNumber:
    """The schema of a request's number (an ``Annotated`` marker): a JSON number, or a string that
    holds one, within its bounds (``ge`` or ``gt``, ``le``; None: unbounded on that side); never
    JSON's ``true`` or ``false``, nor a Python ``bool``.

    Broker numbers arrive as strings ("40", "-61.70", " 7 "): pydantic-core's lax parsing reads ASCII
    numbers as ``float()`` does (signs, exponents, surrounding whitespace, ``1_000``), in Rust: a
    Python validator per number was a third of a request's parse. A string it cannot read ("ten",
    "", "nan", "inf", "1e400", and, unlike ``float()``, non-ASCII digits such as "١٢" or "１２") is
    a 422 naming the field. So is a boolean: pydantic's lax ``float`` reads ``true`` as 1 and
    ``false`` as 0 (``"qty": true`` was one unit held, ``"equity": true`` an account of 1), so a
    number is a strict number or a string parsed as one (a union of the two, all in pydantic-core),
    with one error message stating the range. (A numpy ``bool_`` in a Python-mode validation still
    reads as a number: strict floats take anything with ``__float__``; neither the HTTP body nor
    ``serve.client.request_payload``, which turns numpy scalars into Python ones, can carry one.)
    All of a field's bounds are given here: a ``Field(ge=...)`` beside this marker would be a second
    place for them, and one of the two would be lost."""

    def __init__(
        self,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = MAX_ABS_VALUE,
        integer: bool = False,
    ) -> None:
        if ge is not None and gt is not None:
            raise ValueError("RequestNumber takes ge or gt, not both")
        self.ge, self.gt, self.le, self.integer = ge, gt, le, integer
        self.message = (
            f"Input should be {self._described()}, as a JSON number or a string of one (not a boolean)"
        )

    def _described(self) -> str:
        def shown(bound: float) -> str:  # 1e+12, 0.5, 1234567.5: short, and the bound exactly
            short = f"{bound:g}"
            return str(int(bound)) if self.integer else short if float(short) == bound else repr(bound)

        kind = "an integer" if self.integer else "a finite number"
        low = self.ge if self.ge is not None else self.gt
        if low is not None and self.le is not None:
            return f"{kind} in {'[' if self.ge is not None else '('}{shown(low)}, {shown(self.le)}]"
        if low is not None:
            return f"{kind} {'>=' if self.ge is not None else '>'} {shown(low)}"
        return kind if self.le is None else f"{kind} <= {shown(self.le)}"

    def _scalar(self, strict: bool) -> core_schema.CoreSchema:
        if self.integer:
            ge, gt, le = (None if b is None else int(b) for b in (self.ge, self.gt, self.le))
            return core_schema.int_schema(strict=strict, ge=ge, gt=gt, le=le)
        return core_schema.float_schema(
            strict=strict, allow_inf_nan=False, ge=self.ge, gt=self.gt, le=self.le
        )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        lax = self._scalar(strict=False)  # reached only through a strict type: never from a bool
        choices: list[core_schema.CoreSchema | tuple[core_schema.CoreSchema, str]] = [
            self._scalar(strict=True)
        ]
        if self.integer:  # 3.0 is the integer 3 (3.5 is refused), as pydantic's lax int reads it
            choices.append(core_schema.chain_schema([core_schema.float_schema(strict=True), lax]))
        choices.append(core_schema.chain_schema([core_schema.str_schema(strict=True), lax]))
        return core_schema.union_schema(
            choices,
            mode="left_to_right",
            custom_error_type="request_number",
            custom_error_message=self.message,
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The bounded number, or a string holding one (JSON Schema cannot bound a string's value:
        its description says so); not the union's branches, whose chains carry no bounds."""
        number: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        for key, bound in (("minimum", self.ge), ("exclusiveMinimum", self.gt), ("maximum", self.le)):
            if bound is not None:
                number[key] = int(bound) if self.integer else bound
        text = {"type": "string", "description": f"{self._described()}, written as text"}
        return {"anyOf": [number, text]}


Number = Annotated[float, RequestNumber(ge=-MAX_ABS_VALUE)]
"""A finite number within +-:data:`MAX_ABS_VALUE` (:class:`RequestNumber`)."""
NonNegative = Annotated[float, RequestNumber(ge=0)]
Positive = Annotated[float, RequestNumber(gt=0)]
"""A :data:`Number` that is also >= 0 / > 0."""
MAX_KILL_BARS: Final = 1_000_000_000
"""``kill_switch.bars_active`` is at most this (a bound, so it fits the observation's int64)."""
SYMBOL_PATTERN: Final = r"^[!-~]+$"
"""A symbol is printable ASCII without spaces (BTC/USD, BRK.B): a ticker with a space, a control or
zero-width character would read as another symbol than the one held, and its position as one
outside the universe (its cap then unenforced)."""
Symbol = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SYMBOL_CHARS, pattern=SYMBOL_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class Account(_Strict):
    """The broker account at decision time (currency units)."""

    equity: Annotated[float, RequestNumber(ge=MIN_EQUITY)] = Field(description="account equity")
    last_equity: Number | None = Field(None, description="equity at the previous close")
    buying_power: NonNegative | None = Field(None, description="buying power")
    cash: Number | None = Field(None, description="cash (negative when borrowing)")


class Position(_Strict):
    """One open position, as the broker reports it."""

    symbol: Symbol
    qty: Number = Field(description="units held (the broker's sign convention: see ``side``)")
    side: Literal["long", "short"]
    market_value: Number = Field(description="position value; negative or positive for shorts")
    current_price: Positive | None = None
    unrealized_pl: Number | None = None

    def signed_value(self) -> float:
        """Market value with the position's sign (short positions negative)."""
        return -abs(self.market_value) if self.side == "short" else abs(self.market_value)

    def signed_qty(self) -> float:
        """Units held with the position's sign (short positions negative, whatever sign ``qty`` has)."""
        return -abs(self.qty) if self.side == "short" else abs(self.qty)


def _two_sided(bid: float | None, ask: float | None) -> bool:
    """The loop's quote rule: both sides present, the bid positive, the ask not below it."""
    return bid is not None and ask is not None and bid > 0 and ask >= bid


class SymbolSnapshot(_Strict):
    """The loop's analysis row for one symbol: the fields the service reads (others are ignored)."""

    bid_price: Number | None = Field(None, description="best bid; missing or <= 0 means no quote")
    ask_price: Number | None = Field(None, description="best ask; missing or <= 0 means no quote")
    spread_bps: NonNegative | None = Field(None, description="(ask - bid) / mid in bps; None: no quote")
    last_close: Positive | None = None
    expected_move_pct: Number | None = None
    kelly_fraction: NonNegative | None = None
    kelly_sigma_pct: NonNegative | None = None
    avg_dollar_vol: NonNegative | None = Field(
        None,
        description="average traded notional per bar (mega-cap spread gate); None: unknown, and an "
        "equity of unknown volume gets the strictest equity spread cap",
    )
    spread_cap_bps: NonNegative | None = Field(
        None,
        description="the loop's own spread cap for the symbol, bps; the stricter of it and the "
        "service's cap applies",
    )
    trade_blocked: bool | None = Field(
        False,
        description="the loop's own gates blocked the symbol: no new risk (null: unknown, held as blocked)",
    )
    block_reason: str | None = Field(None, max_length=MAX_TEXT_CHARS)

    def blocked(self) -> bool:
        """The loop blocked the symbol, or does not know (``trade_blocked`` null): fail closed. Read
        this, never ``trade_blocked``'s truth (null is falsy). :class:`ActRequest` also rewrites a null
        to True with :data:`UNKNOWN_BLOCK` as its reason (one check per request: a validator per row
        was a quarter of a request's parse)."""
        return self.trade_blocked is not False

    def blocked_reason(self) -> str:
        """Why :meth:`blocked` (the loop's reason; :data:`UNKNOWN_BLOCK` for a null flag)."""
        if self.block_reason:
            return self.block_reason
        return UNKNOWN_BLOCK if self.trade_blocked is None else "no reason given"

    def has_quote(self) -> bool:
        """A two-sided, uncrossed quote (the loop's rule: missing or non-positive prices = no quote)."""
        return _two_sided(self.bid_price, self.ask_price)

    def mid(self) -> float | None:
        """``(bid + ask) / 2`` of a quote (:meth:`has_quote`), else None."""
        bid, ask = self.bid_price, self.ask_price
        if bid is None or ask is None or not _two_sided(bid, ask):
            return None
        return 0.5 * (bid + ask)

    def quoted_spread_bps(self) -> float | None:
        """``(ask - bid) / mid`` in bps from the quote itself, or None without a quote."""
        bid, ask = self.bid_price, self.ask_price
        if bid is None or ask is None or not _two_sided(bid, ask):
            return None
        return (ask - bid) / (0.5 * (bid + ask)) * 1e4

    def price(self) -> float | None:
        """The price a weight is turned into units with: the mid, else ``last_close``, else None."""
        return self.mid() or self.last_close


class CallerKillSwitch(_Strict):
    """The caller's drawdown kill switch (``envs.kill_switch``'s state of one account), advanced with
    the request's bar: the simulator's rule with its hysteresis, carried by the caller because
    replicas keep no state (several may answer one loop). ``serve.client.KillSwitchTracker`` keeps
    and advances it with the simulator's own ``update_kill_switch``."""

    active: bool = Field(description="unwind-only is on: tripped and not released yet")
    bars_active: Annotated[int, RequestNumber(ge=0, le=MAX_KILL_BARS, integer=True)] = Field(
        description="bars since it tripped (0 on the bar it trips, +1 each bar after while on); 0 while "
        "off; below the policy's release_after_bars",
    )
    peak_equity: Annotated[float, RequestNumber(gt=0, le=None)] = Field(
        description="the equity (currency units) the switch measures its drawdown from: the running "
        "peak, restarted at the equity of a timed release (so it can be below the account's peak)"
    )

    @model_validator(mode="after")
    def _off_counts_no_bars(self) -> CallerKillSwitch:
        if not self.active and self.bars_active != 0:
            raise ValueError(f"bars_active={self.bars_active} must be 0 while active is false")
        return self


class ActRequest(_Strict):
    """``POST /v1/act`` body."""

    account: Account
    positions: list[Position] = Field(default_factory=list, max_length=MAX_ROWS)
    drawdown_pct: Annotated[float, RequestNumber(ge=-1.0, le=0.0)] = Field(
        description="current drawdown from the equity peak, <= 0 (-0.021 = 2.1 % down)"
    )
    analysis: dict[Symbol, SymbolSnapshot] = Field(
        min_length=1, max_length=MAX_ROWS, description="one row per symbol"
    )
    as_of: datetime | None = Field(None, description="decision time (UTC); default: when received")
    kill_switch: CallerKillSwitch | None = Field(
        None,
        description="the caller's kill-switch state at this bar: the trained rule with its hysteresis "
        "(answer's kill_switch_rule caller_state); None: the stateless rule (on only while "
        "drawdown_pct reaches the trigger)",
    )
    attributions: bool = Field(False, description="also return each symbol's top feature attributions")
    observation: bool = Field(
        False,
        description="also return the flat observation the policy acted on (`raytrade live --store` "
        "asks for it to log offline-RL transitions; off by default: it is most of the answer's bytes)",
    )

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("as_of must carry a timezone (e.g. 2026-11-25T15:30:00Z)")
        if value is not None:
            try:  # 9999-12-31T23:59:59-01:00 has no UTC datetime
                return value.astimezone(UTC)
            except OverflowError:
                raise ValueError(f"as_of {value.isoformat()} is out of range in UTC") from None
        return value

    @model_validator(mode="after")
    def _one_position_per_symbol(self) -> ActRequest:
        seen: dict[str, str] = {}
        for i, pos in enumerate(self.positions):
            if pos.side == "long" and (pos.qty < 0 or pos.market_value < 0):  # a short read as a long
                raise ValueError(
                    f"positions[{i}] ({pos.symbol!r}) has side 'long' with qty {pos.qty:g} and market_value "
                    f"{pos.market_value:g}: a long position's qty and market_value are >= 0"
                )
            pair = _unslashed(pos.symbol)  # BTC/USD and BTCUSD are one pair
            if pair in seen:
                again = "appears twice" if seen[pair] == pos.symbol else f"is {seen[pair]!r} again"
                raise ValueError(f"positions[{i}].symbol {pos.symbol!r} {again}")
            seen[pair] = pos.symbol
        for symbol, row in self.analysis.items():  # a null trade_blocked reads as a block from here on
            if row.trade_blocked is None:
                update = {"trade_blocked": True, "block_reason": row.blocked_reason()}
                self.analysis[symbol] = row.model_copy(update=update)
        return self

    def respelled(self, symbols: Collection[str]) -> ActRequest:
        """This request with each position of a crypto pair that ``symbols`` spells the other way
        (``BTC/USD`` for ``BTCUSD``, or back) renamed as ``symbols`` spells it; itself when none is.
        The broker and a store ingested from CSV may spell a pair differently: read as written, a held
        coin was a position outside the universe, its current weight 0, so the per-symbol cap let the
        same coin be bought again past it."""
        renamed: dict[str, str] = {}
        for pos in self.positions:
            if pos.symbol in symbols or not is_crypto_symbol(pos.symbol):
                continue
            pair = _unslashed(pos.symbol)
            spelled = pair if pair in symbols else next((s for s in symbols if _unslashed(s) == pair), None)
            if spelled is not None:
                renamed[pos.symbol] = spelled
        if not renamed:
            return self
        positions = [p.model_copy(update={"symbol": renamed.get(p.symbol, p.symbol)}) for p in self.positions]
        return self.model_copy(update={"positions": positions})

    def held_quantities(self) -> dict[str, float]:
        """Per position's symbol, the signed units held (:meth:`Position.signed_qty`)."""
        return {p.symbol: p.signed_qty() for p in self.positions}

    def reference_price(self, symbol: str) -> float | None:
        """``symbol``'s price for quantities: its row's :meth:`SymbolSnapshot.price`, else the
        position's ``current_price`` (the broker's last), else None."""
        return self.reference_prices([symbol])[0]

    def reference_prices(self, symbols: Iterable[str]) -> list[float | None]:
        """:meth:`reference_price` of each of ``symbols`` (the positions' prices looked up once: the
        service prices every symbol of every answer)."""
        held = {p.symbol: p.current_price for p in self.positions}
        prices: list[float | None] = []
        for symbol in symbols:
            row = self.analysis.get(symbol)
            price = row.price() if row is not None else None
            prices.append(held.get(symbol) if price is None else price)
        return prices


def _unslashed(symbol: str) -> str:
    """A pair spelled ``BASE/QUOTE`` as ``BASEQUOTE`` (other symbols as they are)."""
    return symbol.replace("/", "")


def target_quantity(weight: float, equity: float, price: float | None) -> float | None:
    """Units that hold ``weight`` of ``equity`` at ``price`` (signed; None without a price, or with
    one too small to size with: the units would not be finite)."""
    if price is None:
        return None
    units = weight * equity / price
    return units if math.isfinite(units) else None


class SymbolDecision(BaseModel):
    """What the policy holds for one symbol."""

    model_config = ConfigDict(frozen=True)

    target_weight: float = Field(description="signed fraction of equity to hold after the next fill")
    target_qty: float | None = Field(
        None,
        description="signed units for the target weight: target_weight x equity / price, price = the "
        "quote's mid, else the last price; None when the request gave no price (or one too small for finite "
        "units), and for a pair quoted in a "
        "coin (ETHBTC: its prices are in BTC, not the account's dollars). A symbol the answer "
        "keeps where it is (held: gate_mode hold, a fallback; or its target weight is its current "
        "weight) has the signed units the request says are held (0 for none), whatever the price: "
        "target_qty - qty is then no trade",
    )
    current_weight: float = Field(description="signed fraction of equity held now")
    side: Side
    gate_mode: GateMode
    confidence: float = Field(ge=0.0, le=1.0)
    tradeable: bool = Field(description="the symbol had a quote and was not blocked")
    reason: str | None = Field(None, description="why the symbol was held or unwound, when it was")
    attributions: dict[str, float] | None = Field(
        None, description="when asked: the symbol's top features by gradient x input (serve.attribution)"
    )


CapName = Literal["per_symbol_cap", "gross_cap", "leverage_cap", "max_gross_add", "crypto_gross_cap"]
"""The hard exposure caps the service applies after the model (``serve.caps``)."""


class AppliedCaps(BaseModel):
    """The exposure caps an answer was held to (fractions of equity) and which of them bound."""

    model_config = ConfigDict(frozen=True)

    per_symbol_cap: float = Field(description="|target weight| cap of one symbol")
    gross_cap: float = Field(description="gross exposure cap of the loop's own sizing")
    leverage_cap: float = Field(description="gross leverage cap at the close")
    max_gross_add: float = Field(description="basket throttle: most gross one answer may add")
    crypto_gross_cap: float = Field(
        description="gross exposure cap of crypto (positions outside the model's universe included)"
    )
    binding: list[CapName] = Field(
        default_factory=list, description="the caps that changed the model's targets in this answer"
    )


def new_decision_id() -> str:
    """A fresh, unique decision id: a random UUID4 as 32 hex characters."""
    return uuid4().hex


class ActResponse(BaseModel):
    """``POST /v1/act`` answer."""

    model_config = ConfigDict(frozen=True)

    decision_id: str = Field(
        default_factory=new_decision_id,
        description="unique per answer (a random UUID4, hex), made when the answer is made; the loop "
        "logs it with the orders and fills it leads to",
    )
    model: str = Field(description="NAME@VERSION of the policy that decided")
    model_version: int
    as_of: datetime
    features_as_of: datetime | None = Field(
        None,
        description="the stamp of the bar whose features were observed: the newest bar closed by as_of",
    )
    decisions: dict[str, SymbolDecision]
    gross_exposure: float = Field(description="sum of |target weight| over the decisions")
    kill_switch_active: bool = Field(
        False, description="unwind-only was on (a fallback: the request's kill_switch state says so)"
    )
    kill_switch_rule: KillSwitchRule | None = Field(
        None, description="the kill-switch rule applied (KillSwitchRule); None on a fallback: held, no rule"
    )
    fallback: bool = Field(False, description="True: positions held as they are, no new risk")
    reason: str | None = None
    unmanaged: list[str] = Field(
        default_factory=list, description="positions outside the model's universe (counted, not traded)"
    )
    caps: AppliedCaps | None = Field(None, description="the exposure caps applied; None on a fallback")
    observation: list[float] | None = Field(
        None,
        description="the flat env observation the policy acted on (features of each symbol of "
        "`decisions` in order, their weights, listed flags, portfolio state), what the loop logs "
        "for offline RL; None unless the request asked for it, on a fallback, or for a policy that does "
        "not observe a flat vector",
    )
    observation_spec: str | None = Field(
        None,
        description="with `observation`: how it was encoded (envs.experience.observation_spec: observed "
        "columns, normaliser), logged with the transitions so an offline learner that encodes "
        "otherwise refuses them",
    )
