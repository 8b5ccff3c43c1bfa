"""A fake of Alpaca's trading HTTP API (paper), for tests that run the real alpaca-py ``TradingClient``.

Point the client at it with ``TradingClient(*TEST_KEYS, paper=True, url_override=fake.url)``; alpaca-py
appends ``/v2`` to the URL itself (``alpaca/common/rest.py``). It serves, on ``127.0.0.1`` and a free
port, the JSON shapes ``alpaca/trading/models.py`` parses:

* ``GET /v2/account``                               -> ``TradeAccount``
* ``GET /v2/clock`` -> ``Clock`` (``is_open`` from :attr:`FakeAlpacaTrading.market_is_open`)
* ``GET /v2/positions``, ``GET /v2/positions/{sym}``  -> ``[Position]``, ``Position``
* ``POST /v2/orders``                               -> ``Order`` (market or limit; ``qty`` or ``notional``)
* ``GET /v2/orders`` (``status`` open/closed/all, ``limit``, ``direction``, ``symbols``, ``side``,
  ``after``, ``until``; both bounds exclusive)       -> ``[Order]``
* ``GET /v2/orders/{id}``, ``GET /v2/orders:by_client_order_id`` -> ``Order``
* ``DELETE /v2/orders/{id}`` -> 204; ``DELETE /v2/orders`` -> 207 ``[{id, status, body}]``
* ``GET /v2/assets`` (``status``, ``asset_class``, ``exchange``) -> ``[Asset]``;
  ``GET /v2/assets/{sym}`` (either spelling of a pair: ``BTCUSD``, ``BTC/USD``) -> ``Asset``

Design decisions:

* Symbols. The quote book's keys name the assets: a key with a slash (``"BTC/USD"``) is crypto, any
  other key a US equity. Orders may name a pair either way (``"BTC/USD"`` or ``"BTCUSD"``; Alpaca
  accepts both) and the order echoes it slashed; positions spell it unslashed (``"BTCUSD"``), as
  Alpaca does, so ``GET /v2/positions/BTCUSD`` finds it and ``/v2/positions/BTC/USD`` is a 404 (on
  Alpaca too).
* Fills are deterministic and whole. A market order fills at once at the ask (buy) or bid (sell). A
  marketable limit (buy limit >= ask, sell limit <= bid) fills at once at the ask/bid; any other limit
  rests as ``new`` until the test calls ``fill_open_orders()`` (it fills at its limit price) or it is
  canceled; an ``ioc`` limit that cannot fill at once is canceled. A notional order trades
  ``floor(notional / price)`` to 9 decimals. No partial fills, no fees, no cent rounding.
* Accounting, exact in ``Decimal``: cash moves by qty x fill price; equity = cash + sum(qty x mid);
  ``last_equity`` is what the test sets (the starting equity by default). Buying power is a 1x
  simplification: cash, less what open buy orders hold, plus the (negative) market value of shorts.
* Refusals follow Alpaca's answers (status, ``code``, message): an unknown asset is 422/42210000; a
  malformed order (qty or notional not > 0, both or neither, a limit without ``limit_price``, a
  reused ``client_order_id``) 422/40010001; fractional or notional equity orders that are not
  ``day``, crypto orders that are not ``gtc``/``ioc``, fractional short sales 422/42210000. Selling
  more than the long position not already held by open sells (or buying to cover more than the
  short), i.e. flipping through zero in one order, is 403/40310000 "insufficient qty available";
  crypto cannot go short (403/40310000 "insufficient balance"); opening a short while a buy is open,
  or a long while a sell is open, is 403; a buy to open beyond buying power is 403 "insufficient
  buying power".
* Assets. Every symbol of the book is an asset, active, tradable and fractionable; an equity is
  shortable and easy to borrow, a pair is not (and has a ``min_order_size`` and ``min_trade_increment``
  of 1e-9, which never bind here). ``set_asset()`` changes a symbol's flags, and the orders follow
  them, as Alpaca's do: an order on an asset that is not tradable (or not active) is 422/42210000
  'asset "X" is not tradable'; a fractional qty or a notional on an equity that is not fractionable
  422/42210000 'asset "X" is not fractionable'; a sale that opens or adds to a short of an equity
  that is not shortable, or not easy to borrow, 422/42210000 'asset "X" cannot be sold short'; a
  crypto qty under the pair's ``min_order_size`` or off its ``min_trade_increment`` 422/40010001,
  unless it sells the whole position.
* Keys: every endpoint needs ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` equal to ``keys``; otherwise
  401 ``{"code": 40110000, "message": "request is not authorized"}``, which is what Alpaca's trading API
  answers to an unknown key (its market-data API answers 403, see ``tests.fake_alpaca``).
* ``fail()`` answers the next ``times`` matching requests with an HTTP error (alpaca-py sleeps 3 s and
  retries 429 and 504, so prefer other statuses in fast tests). Every request is recorded in
  ``requests``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from tests.fake_alpaca import CRYPTO_ORDERBOOKS, STOCK_QUOTES, TEST_KEYS
from tests.loopback import serve_on_loopback, stop_serving

__all__ = ["DEFAULT_QUOTES", "FAKE_NOW", "TEST_KEYS", "FakeAlpacaTrading", "RecordedTradingRequest"]

# The same top of book the market-data fake serves, so a loop reading both sees one market.
DEFAULT_QUOTES: Final[dict[str, tuple[float, float]]] = {
    **{sym: (q["bp"], q["ap"]) for sym, q in STOCK_QUOTES.items()},
    **{
        pair: (max(lv["p"] for lv in book["b"]), min(lv["p"] for lv in book["a"]))
        for pair, book in CRYPTO_ORDERBOOKS.items()
    },
}
FAKE_NOW: Final[datetime] = datetime(2024, 1, 4, 15, 0, tzinfo=UTC)
_NS: Final[uuid.UUID] = uuid.UUID("6f0e7a52-55b1-4d3c-9a43-5d2f6c1f7a10")
_QTY_STEP: Final[Decimal] = Decimal("1e-9")
_OPEN: Final[frozenset[str]] = frozenset({"new"})
_ASSET_FLAGS: Final[frozenset[str]] = frozenset(
    {"tradable", "marginable", "shortable", "easy_to_borrow", "fractionable"}
)
_ASSET_QUANTITIES: Final[frozenset[str]] = frozenset({"min_order_size", "min_trade_increment"})
_TIFS: Final[dict[bool, frozenset[str]]] = {
    False: frozenset({"day", "gtc", "ioc"}),
    True: frozenset({"gtc", "ioc"}),
}


@dataclass(frozen=True)
class RecordedTradingRequest:
    """One request the fake received: method, path, query (last value per key), JSON body, headers."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


class _Reject(Exception):
    """An Alpaca-style error answer: HTTP ``status`` and ``{"code", "message", **extra}``."""

    def __init__(self, status: int, code: int, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.body = status, {"code": code, "message": message, **extra}


@dataclass
class _Order:
    id: uuid.UUID
    client_order_id: str
    symbol: str  # the quote-book key ("AAPL", "BTC/USD")
    crypto: bool
    side: str
    type: str
    time_in_force: str
    qty: Decimal  # for a notional order, what the notional buys at the price it was priced at
    notional: Decimal | None
    limit_price: Decimal | None
    position_intent: str
    extended_hours: bool
    created_at: datetime
    status: str = "new"
    updated_at: datetime | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None


@dataclass
class _Failure:
    path_prefix: str
    method: str | None
    status: int
    times: int | None
    body: dict[str, Any]


class FakeAlpacaTrading:
    """The fake paper account and server; use as a context manager (``with FakeAlpacaTrading() as f``).

    Args:
        cash: starting cash, USD.
        positions: starting quantities by quote-book symbol (``"AAPL"``, ``"BTC/USD"``; ``"BTCUSD"`` is
            read as the pair), negative for an equity short; entered at the mid.
        quotes: the book, symbol -> (bid, ask) in USD; its keys are the only tradable assets.
        last_equity: yesterday's close equity; the starting equity when None.
        keys: the (key id, secret) every endpoint requires.
        now: the clock stamped on orders; tests may move ``fake.now`` between calls.
    """

    def __init__(
        self,
        *,
        cash: float | str | Decimal = 100_000,
        positions: Mapping[str, float | str | Decimal] | None = None,
        quotes: Mapping[str, tuple[float | str | Decimal, float | str | Decimal]] = DEFAULT_QUOTES,
        last_equity: float | str | Decimal | None = None,
        keys: tuple[str, str] = TEST_KEYS,
        now: datetime = FAKE_NOW,
    ) -> None:
        self.keys, self.now = keys, now
        self.requests: list[RecordedTradingRequest] = []
        self._lock = threading.RLock()
        self._orders: list[_Order] = []
        self._failures: list[_Failure] = []
        self._quotes: dict[str, tuple[Decimal, Decimal]] = {}
        for sym, (bid, ask) in quotes.items():
            self.set_quote(sym, bid, ask)
        self._cash = _decimal(cash, "cash")
        self._positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (qty, avg entry price)
        for raw, qty_value in (positions or {}).items():
            known, qty = self._symbol(raw), _decimal(qty_value, f"positions[{raw!r}]")
            if known is None:
                raise ValueError(f"positions: {raw!r} is not in the quote book {sorted(self._quotes)}")
            if qty < 0 and "/" in known:
                raise ValueError(f"positions[{raw!r}] = {qty}: crypto cannot be short")
            if qty != 0:
                self._positions[known] = (qty, self._mid(known))
        self._last_equity = self.equity() if last_equity is None else _decimal(last_equity, "last_equity")
        self._asset_changes: dict[str, dict[str, Any]] = {}  # symbol -> what set_asset() changed
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.account_flags: dict[str, bool] = {}
        """``GET /v2/account``'s ``trading_blocked``, ``account_blocked`` and ``trade_suspended_by_user``
        (False unless a test sets one)."""
        self.market_is_open = False
        """What ``GET /v2/clock`` answers for ``is_open`` (closed unless a test opens it: the loop then
        holds equity quotes older than its open-market limit)."""
        self.equity_history: list[float | None] = []
        """Daily closing equity ``GET /v2/account/portfolio/history`` reports, oldest first (Alpaca
        pads days before the account existed with 0 and may send null)."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to pass as ``TradingClient(url_override=...)`` (no ``/v2``, no trailing slash)."""
        if self._server is None:
            raise RuntimeError("FakeAlpacaTrading is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAlpacaTrading:
        """Bind ``127.0.0.1`` on a free port and serve from a daemon thread."""
        self._server, self._thread = serve_on_loopback(_handler_for(self), "fake-alpaca-trading")
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        stop_serving(self._server, self._thread)
        self._server, self._thread = None, None

    def __enter__(self) -> FakeAlpacaTrading:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- test controls -----------------------------------------------------------------------

    def set_quote(self, symbol: str, bid: float | str | Decimal, ask: float | str | Decimal) -> None:
        """Set (or add) a symbol's top of book; needs 0 < bid <= ask."""
        b, a = _decimal(bid, f"{symbol} bid"), _decimal(ask, f"{symbol} ask")
        if not 0 < b <= a:
            raise ValueError(f"quote for {symbol!r} needs 0 < bid <= ask, got bid={b} ask={a}")
        if "/" in symbol and len(symbol.split("/")) != 2:
            raise ValueError(f"crypto symbol {symbol!r} must be BASE/QUOTE")
        with self._lock:
            self._quotes[symbol] = (b, a)

    def set_asset(self, symbol: str, **changes: bool | str | float | None) -> None:
        """Change the asset flags of ``symbol`` (either spelling of a pair): ``tradable``,
        ``marginable``, ``shortable``, ``easy_to_borrow``, ``fractionable`` (bools), ``status``
        (``"active"``/``"inactive"``), ``min_order_size`` and ``min_trade_increment`` (numbers, None:
        none); the orders on it follow them (module doc)."""
        with self._lock:
            sym = self._symbol(symbol)
            if sym is None:
                raise ValueError(f"set_asset: {symbol!r} is not in the quote book {sorted(self._quotes)}")
            for name, value in changes.items():
                if name in _ASSET_FLAGS and not isinstance(value, bool):
                    raise ValueError(f"set_asset: {name} must be true or false, got {value!r}")
                if name == "status" and value not in ("active", "inactive"):
                    raise ValueError(f"set_asset: status must be active or inactive, got {value!r}")
                if name in _ASSET_QUANTITIES and value is not None:
                    changes[name] = _decimal(value, name)
                if name not in _ASSET_FLAGS | _ASSET_QUANTITIES | {"status"}:
                    raise ValueError(f"set_asset: the fake has no asset field {name!r}")
            self._asset_changes.setdefault(sym, {}).update(changes)

    def fill_open_orders(self, symbol: str | None = None) -> list[str]:
        """Fill every open order (of ``symbol``, either spelling) at its limit price; ids, oldest first."""
        with self._lock:
            want = None if symbol is None else self._symbol(symbol)
            if symbol is not None and want is None:
                raise ValueError(
                    f"fill_open_orders: {symbol!r} is not in the quote book {sorted(self._quotes)}"
                )
            filled = []
            for order in self._orders:
                if order.status in _OPEN and (symbol is None or order.symbol == want):
                    assert order.limit_price is not None  # only limits rest
                    self._fill(order, order.limit_price)
                    filled.append(str(order.id))
            return filled

    def set_order_status(self, order_id: str, status: str) -> None:
        """Put the order in ``status`` as Alpaca's own processes would (e.g. ``pending_review``: held
        for a compliance review). Only ``new`` orders count as open to this fake (listed as open,
        cancellable); an order in any other status is refused a cancel, 422."""
        with self._lock:
            self._find(order_id).status = status

    def fail(
        self,
        path_prefix: str,
        status: int,
        times: int | None = 1,
        *,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (all, when None) whose path starts with ``path_prefix``
        (and whose method is ``method``, when given) with HTTP ``status``."""
        body = {"code": status * 100_000, "message": message or f"fake error {status}"}
        with self._lock:
            self._failures.append(_Failure(path_prefix, method, status, times, body))

    @property
    def cash(self) -> Decimal:
        with self._lock:
            return self._cash

    @property
    def last_equity(self) -> Decimal:
        return self._last_equity

    @last_equity.setter
    def last_equity(self, value: float | str | Decimal) -> None:
        self._last_equity = _decimal(value, "last_equity")

    def equity(self) -> Decimal:
        """Cash plus every position at its mid."""
        with self._lock:
            return self._cash + sum((q * self._mid(s) for s, (q, _) in self._positions.items()), Decimal(0))

    def position_qty(self, symbol: str) -> Decimal:
        """Signed quantity held (either crypto spelling); 0 when flat."""
        with self._lock:
            sym = self._symbol(symbol)
            return self._positions[sym][0] if sym in self._positions else Decimal(0)

    def order(self, order_id: str) -> dict[str, Any]:
        """The order's JSON, as ``GET /v2/orders/{id}`` answers it."""
        with self._lock:
            return self._order_json(self._find(order_id))

    def paths(self) -> list[str]:
        """``"METHOD path"`` of every request so far, in order."""
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    # -- request handling (runs on the server's threads) ------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], raw_body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any]:
        """Record the request and return (status, JSON-able payload, or None for an empty body)."""
        try:
            body: Any = json.loads(raw_body) if raw_body else None
            bad_body = False
        except ValueError:
            body, bad_body = raw_body.decode(errors="replace"), True
        lower = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.requests.append(RecordedTradingRequest(method, path, query, body, headers))
            failure = self._take_failure(method, path)
            if failure is not None:
                return failure
            if (lower.get("apca-api-key-id"), lower.get("apca-api-secret-key")) != self.keys:
                return 401, {"code": 40110000, "message": "request is not authorized"}
            try:
                if bad_body:
                    raise _Reject(400, 40010000, "request body format is invalid")
                return self._route(method, path, query, body)
            except _Reject as reject:
                return reject.status, reject.body

    def _take_failure(self, method: str, path: str) -> tuple[int, Any] | None:
        for f in self._failures:
            if path.startswith(f.path_prefix) and f.method in (None, method):
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self._failures.remove(f)
                return f.status, f.body
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/v2/account"):
            return 200, self._account_json()
        if (method, path) == ("GET", "/v2/account/portfolio/history"):
            days = len(self.equity_history)
            return 200, {
                "timestamp": [int(self.now.timestamp()) - 86_400 * (days - i) for i in range(days)],
                "equity": list(self.equity_history),
                "profit_loss": [0.0] * days,
                "profit_loss_pct": [0.0] * days,
                "base_value": float(self._last_equity),
                "timeframe": query.get("timeframe", "1D"),
            }
        if (method, path) == ("GET", "/v2/clock"):
            return 200, {
                "timestamp": _ts(self.now),
                "is_open": self.market_is_open,
                "next_open": _ts(self.now + timedelta(hours=1)),
                "next_close": _ts(self.now + timedelta(hours=2)),
            }
        if (method, path) == ("GET", "/v2/positions"):
            return 200, [self._position_json(s) for s in sorted(self._positions)]
        if method == "GET" and path.startswith("/v2/positions/"):
            wanted = path.removeprefix("/v2/positions/")
            for sym in self._positions:
                if sym.replace("/", "") == wanted:
                    return 200, self._position_json(sym)
            raise _Reject(404, 40410000, "position does not exist")
        if (method, path) == ("GET", "/v2/assets"):
            return 200, self._list_assets(query)
        if method == "GET" and path.startswith("/v2/assets/"):
            sym = self._symbol(path.removeprefix("/v2/assets/"))
            if sym is None:
                raise _Reject(404, 40410000, "asset not found")
            return 200, self._asset_json(sym)
        if (method, path) == ("POST", "/v2/orders"):
            return 200, self._order_json(self._submit(body))
        if (method, path) == ("GET", "/v2/orders"):
            return 200, [self._order_json(o) for o in self._list_orders(query)]
        if (method, path) == ("DELETE", "/v2/orders"):
            open_orders = [o for o in self._orders if o.status in _OPEN]
            for o in open_orders:
                self._cancel(o)
            return 207, [{"id": str(o.id), "status": 200, "body": self._order_json(o)} for o in open_orders]
        if (method, path) == ("GET", "/v2/orders:by_client_order_id"):
            cid = query.get("client_order_id", "")
            match = next((o for o in self._orders if o.client_order_id == cid), None)
            if match is None:
                raise _Reject(404, 40410000, "order not found")
            return 200, self._order_json(match)
        if path.startswith("/v2/orders/") and method in ("GET", "DELETE"):
            order = self._find(path.removeprefix("/v2/orders/"))
            if method == "GET":
                return 200, self._order_json(order)
            if order.status not in _OPEN:
                raise _Reject(422, 42210000, f'order is already in "{order.status}" state')
            self._cancel(order)
            return 204, None
        return 404, {"message": f"the fake does not serve {method} {path}"}

    # -- orders ------------------------------------------------------------------------------

    def _submit(self, body: Any) -> _Order:
        if not isinstance(body, dict):
            raise _Reject(400, 40010000, "request body format is invalid")
        if body.get("order_class") not in (None, "", "simple") or any(
            body.get(k) for k in ("legs", "take_profit", "stop_loss")
        ):
            raise _Reject(422, 42210000, "the fake supports only simple orders")
        raw_symbol = body.get("symbol")
        if not raw_symbol:
            raise _Reject(422, 40010001, "symbol is required")
        sym = self._symbol(str(raw_symbol))
        if sym is None:
            raise _Reject(422, 42210000, f'asset "{raw_symbol}" not found')
        crypto = "/" in sym
        side, otype, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in ("buy", "sell"):
            raise _Reject(422, 40010001, f"side must be buy or sell, got {side!r}")
        if otype not in ("market", "limit"):
            raise _Reject(422, 40010001, f"the fake supports type market or limit, got {otype!r}")
        if tif not in _TIFS[crypto]:
            what = "crypto" if crypto else "equity"
            raise _Reject(422, 42210000, f"invalid {what} time_in_force {tif!r}")
        qty, notional = _amount(body, "qty"), _amount(body, "notional")
        if (qty is None) == (notional is None):
            raise _Reject(422, 40010001, "exactly one of qty or notional is required")
        if notional is not None and otype != "market":
            raise _Reject(422, 42210000, "the fake supports notional only on market orders")
        limit_price = _amount(body, "limit_price")
        if otype == "limit" and limit_price is None:
            raise _Reject(422, 40010001, "limit_price is required for limit orders")
        if otype == "market" and limit_price is not None:
            raise _Reject(422, 40010001, "limit_price is not allowed for market orders")
        cid = body.get("client_order_id")
        if cid is not None and (not isinstance(cid, str) or not 0 < len(cid) <= 128):
            raise _Reject(422, 40010001, "client_order_id must be a string of 1 to 128 characters")
        if cid is not None and any(o.client_order_id == cid for o in self._orders):
            raise _Reject(422, 40010001, "client_order_id must be unique")

        bid, ask = self._quotes[sym]
        touch = ask if side == "buy" else bid
        if notional is not None:
            qty = (notional / touch).quantize(_QTY_STEP, rounding=ROUND_DOWN)
            if qty <= 0:
                raise _Reject(422, 40010001, f"notional {notional} buys no {sym} at {touch}")
        assert qty is not None
        fractional = notional is not None or qty != qty.to_integral_value()
        asset = self._asset(sym)
        if not asset["tradable"] or asset["status"] != "active":
            raise _Reject(422, 42210000, f'asset "{raw_symbol}" is not tradable')
        if not crypto and fractional and not asset["fractionable"]:
            raise _Reject(422, 42210000, f'asset "{raw_symbol}" is not fractionable')
        if not crypto and fractional and tif != "day":
            raise _Reject(422, 42210000, "fractional orders must be DAY orders")
        if crypto and notional is None:
            self._check_crypto_qty(sym, side, qty, asset)
        intent = self._check_position(sym, crypto, side, qty, fractional)
        if intent == "sell_to_open" and not (asset["shortable"] and asset["easy_to_borrow"]):
            raise _Reject(422, 42210000, f'asset "{raw_symbol}" cannot be sold short')
        if intent == "buy_to_open":
            cost = notional if notional is not None else qty * (limit_price or ask)
            power = self._buying_power()
            if cost > power:
                raise _Reject(
                    403,
                    40310000,
                    "insufficient buying power",
                    buying_power=_fmt(power),
                    cost_basis=_fmt(cost),
                )

        n = len(self._orders) + 1
        order = _Order(
            id=uuid.UUID(int=n, version=4),
            client_order_id=cid if cid is not None else str(uuid.uuid5(_NS, f"client-order-{n}")),
            symbol=sym,
            crypto=crypto,
            side=side,
            type=otype,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            position_intent=intent,
            extended_hours=bool(body.get("extended_hours", False)),
            created_at=self.now,
            updated_at=self.now,
        )
        self._orders.append(order)
        if limit_price is None or (limit_price >= ask if side == "buy" else limit_price <= bid):
            self._fill(order, touch)
        elif tif == "ioc":
            self._cancel(order)
        return order

    def _check_crypto_qty(self, sym: str, side: str, qty: Decimal, asset: dict[str, Any]) -> None:
        """A pair's least order and quantity increment; a sale of the whole position is exempt."""
        held = self._positions.get(sym, (Decimal(0), Decimal(0)))[0]
        if side == "sell" and qty == held:
            return
        least, step = asset["min_order_size"], asset["min_trade_increment"]
        if least is not None and qty < least:
            raise _Reject(422, 40010001, f"qty {_fmt(qty)} is under the minimum order size {_fmt(least)}")
        if step is not None and qty % step != 0:
            raise _Reject(422, 40010001, f"qty {_fmt(qty)} is not a multiple of the increment {_fmt(step)}")

    def _check_position(self, sym: str, crypto: bool, side: str, qty: Decimal, fractional: bool) -> str:
        """Alpaca's position rules for a new order; returns its position intent."""
        held = self._positions.get(sym, (Decimal(0), Decimal(0)))[0]
        open_orders = [o for o in self._orders if o.status in _OPEN and o.symbol == sym]
        open_buy = sum((o.qty for o in open_orders if o.side == "buy"), Decimal(0))
        open_sell = sum((o.qty for o in open_orders if o.side == "sell"), Decimal(0))
        if side == "sell":
            available = max(held - open_sell, Decimal(0))
            if crypto and qty > available:
                base = sym.split("/")[0]
                msg = (
                    f"insufficient balance for {base} (requested: {_fmt(qty)}, available: {_fmt(available)})"
                )
                raise _Reject(403, 40310000, msg, balance=_fmt(held), available=_fmt(available), symbol=base)
            if held > 0:
                if qty > available:
                    raise _insufficient_qty(qty, available)
                return "sell_to_close"
            if fractional:
                raise _Reject(422, 42210000, "fractional orders cannot be sold short")
            if open_buy > 0:
                raise _Reject(403, 40310000, "cannot open a short sell while a long buy order is open")
            return "sell_to_open"
        if held < 0:
            available = max(-held - open_buy, Decimal(0))
            if qty > available:
                raise _insufficient_qty(qty, available)
            return "buy_to_close"
        if held == 0 and open_sell > 0:
            raise _Reject(403, 40310000, "cannot open a long buy while a short sell order is open")
        return "buy_to_open"

    def _fill(self, order: _Order, price: Decimal) -> None:
        signed = order.qty if order.side == "buy" else -order.qty
        self._cash -= signed * price
        old, avg = self._positions.get(order.symbol, (Decimal(0), Decimal(0)))
        new = old + signed
        if new == 0:
            self._positions.pop(order.symbol, None)
        elif old == 0 or (old > 0) == (signed > 0):
            self._positions[order.symbol] = (new, (abs(old) * avg + order.qty * price) / abs(new))
        else:  # reducing; flips are refused at submission
            self._positions[order.symbol] = (new, avg)
        order.status, order.filled_qty, order.filled_avg_price = "filled", order.qty, price
        order.filled_at = order.updated_at = self.now

    def _cancel(self, order: _Order) -> None:
        order.status, order.canceled_at, order.updated_at = "canceled", self.now, self.now

    def _find(self, order_id: str) -> _Order:
        match = next((o for o in self._orders if str(o.id) == order_id), None)
        if match is None:
            raise _Reject(404, 40410000, "order not found")
        return match

    def _list_orders(self, query: dict[str, str]) -> list[_Order]:
        status = query.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise _Reject(422, 40010001, f"status must be open, closed or all, got {status!r}")
        direction = query.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise _Reject(422, 40010001, f"direction must be asc or desc, got {direction!r}")
        try:
            limit = int(query.get("limit", "50"))
            after = _parse_ts(query["after"]) if "after" in query else None
            until = _parse_ts(query["until"]) if "until" in query else None
        except ValueError as exc:
            raise _Reject(422, 40010001, f"invalid query: {exc}") from exc
        if not 0 < limit <= 500:
            raise _Reject(422, 40010001, f"limit must be in 1..500, got {limit}")
        symbols = {self._symbol(s) or s for s in query.get("symbols", "").split(",") if s}
        side = query.get("side")
        rows = [
            o
            for o in self._orders
            if status == "all" or (o.status in _OPEN) == (status == "open")
            if not symbols or o.symbol in symbols
            if side is None or o.side == side
            if (after is None or o.created_at > after) and (until is None or o.created_at < until)
        ]
        rows.sort(key=lambda o: o.created_at)  # stable: submission order within one timestamp
        return (rows[::-1] if direction == "desc" else rows)[:limit]

    def _asset(self, sym: str) -> dict[str, Any]:
        """``sym``'s flags: the defaults of its class (module doc), then what ``set_asset`` changed."""
        crypto = "/" in sym
        base: dict[str, Any] = {
            "status": "active",
            "tradable": True,
            "marginable": not crypto,
            "shortable": not crypto,
            "easy_to_borrow": not crypto,
            "fractionable": True,
            "min_order_size": _QTY_STEP if crypto else None,
            "min_trade_increment": _QTY_STEP if crypto else None,
        }
        return {**base, **self._asset_changes.get(sym, {})}

    def _list_assets(self, query: dict[str, str]) -> list[dict[str, Any]]:
        rows = [self._asset_json(s) for s in sorted(self._quotes)]
        for key in ("status", "asset_class", "exchange"):
            if key in query:
                field_name = "class" if key == "asset_class" else key
                rows = [r for r in rows if r[field_name] == query[key]]
        return rows

    # -- JSON --------------------------------------------------------------------------------

    def _asset_json(self, sym: str) -> dict[str, Any]:
        """Alpaca's asset object (``alpaca.trading.models.Asset``): a pair spelled ``BTC/USD``."""
        crypto, flags = "/" in sym, self._asset(sym)
        out = {
            "id": str(uuid.uuid5(_NS, sym)),
            "class": "crypto" if crypto else "us_equity",
            "exchange": "CRYPTO" if crypto else "NASDAQ",
            "symbol": sym,
            "name": f"{sym} pair" if crypto else f"{sym} common stock",
            **{k: v for k, v in flags.items() if k not in _ASSET_QUANTITIES},
            "maintenance_margin_requirement": 100 if crypto else 30,
            "attributes": [],
        }
        if crypto:  # Alpaca's numbers as strings; a pair also has a price increment
            for name in _ASSET_QUANTITIES:
                out[name] = None if flags[name] is None else _fmt(flags[name])
            out["price_increment"] = "0.01"
        return out

    def _symbol(self, symbol: str) -> str | None:
        if symbol in self._quotes:
            return symbol
        return next((s for s in self._quotes if "/" in s and s.replace("/", "") == symbol), None)

    def _mid(self, symbol: str) -> Decimal:
        bid, ask = self._quotes[symbol]
        return (bid + ask) / 2

    def _buying_power(self) -> Decimal:
        held = sum(
            (o.qty * (o.limit_price or 0) for o in self._orders if o.status in _OPEN and o.side == "buy"),
            Decimal(0),
        )
        shorts = sum((q * self._mid(s) for s, (q, _) in self._positions.items() if q < 0), Decimal(0))
        return max(self._cash + shorts - held, Decimal(0))

    def _account_json(self) -> dict[str, Any]:
        values = {s: q * self._mid(s) for s, (q, _) in self._positions.items()}
        equity = self._cash + sum(values.values(), Decimal(0))
        power = _fmt(self._buying_power())
        return {
            "id": str(uuid.uuid5(_NS, "account")),
            "account_number": "PA0FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": power,
            "regt_buying_power": power,
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": power,
            "options_buying_power": power,
            "cash": _fmt(self._cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": _fmt(equity),
            "pattern_day_trader": False,
            "trading_blocked": self.account_flags.get("trading_blocked", False),
            "transfers_blocked": False,
            "account_blocked": self.account_flags.get("account_blocked", False),
            "created_at": _ts(datetime(2024, 1, 2, tzinfo=UTC)),
            "trade_suspended_by_user": self.account_flags.get("trade_suspended_by_user", False),
            "multiplier": "1",
            "shorting_enabled": True,
            "equity": _fmt(equity),
            "last_equity": _fmt(self._last_equity),
            "long_market_value": _fmt(sum((v for v in values.values() if v > 0), Decimal(0))),
            "short_market_value": _fmt(sum((v for v in values.values() if v < 0), Decimal(0))),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "options_approved_level": 0,
            "options_trading_level": 0,
        }

    def _position_json(self, symbol: str) -> dict[str, Any]:
        qty, avg = self._positions[symbol]
        crypto, price = "/" in symbol, self._mid(symbol)
        value, cost = qty * price, qty * avg
        pl = value - cost
        closing = "sell" if qty > 0 else "buy"
        held = sum(
            (o.qty for o in self._orders if o.status in _OPEN and o.symbol == symbol and o.side == closing),
            Decimal(0),
        )
        return {
            "asset_id": str(uuid.uuid5(_NS, symbol)),
            "symbol": symbol.replace("/", ""),
            "exchange": "CRYPTO" if crypto else "NASDAQ",
            "asset_class": "crypto" if crypto else "us_equity",
            "asset_marginable": not crypto,
            "avg_entry_price": _fmt(avg),
            "qty": _fmt(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": _fmt(value),
            "cost_basis": _fmt(cost),
            "unrealized_pl": _fmt(pl),
            "unrealized_plpc": _fmt(pl / abs(cost)),
            "unrealized_intraday_pl": _fmt(pl),
            "unrealized_intraday_plpc": _fmt(pl / abs(cost)),
            "current_price": _fmt(price),
            "lastday_price": _fmt(price),
            "change_today": "0",
            "qty_available": _fmt(qty - held if qty > 0 else qty + held),  # open closing orders hold qty
        }

    def _order_json(self, o: _Order) -> dict[str, Any]:
        return {
            "id": str(o.id),
            "client_order_id": o.client_order_id,
            "created_at": _ts(o.created_at),
            "updated_at": _ts(o.updated_at or o.created_at),
            "submitted_at": _ts(o.created_at),
            "filled_at": _ts(o.filled_at),
            "expired_at": None,
            "canceled_at": _ts(o.canceled_at),
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(_NS, o.symbol)),
            "symbol": o.symbol,
            "asset_class": "crypto" if o.crypto else "us_equity",
            "notional": None if o.notional is None else _fmt(o.notional),
            "qty": None if o.notional is not None else _fmt(o.qty),
            "filled_qty": _fmt(o.filled_qty),
            "filled_avg_price": None if o.filled_avg_price is None else _fmt(o.filled_avg_price),
            "order_class": "simple",
            "order_type": o.type,
            "type": o.type,
            "side": o.side,
            "position_intent": o.position_intent,
            "time_in_force": o.time_in_force,
            "limit_price": None if o.limit_price is None else _fmt(o.limit_price),
            "stop_price": None,
            "status": o.status,
            "extended_hours": o.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


def _decimal(value: object, name: str) -> Decimal:
    """A finite Decimal from a number or numeric string (floats through ``str``, so 0.1 is exact)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _amount(body: dict[str, Any], name: str) -> Decimal | None:
    """An order's positive amount field (qty, notional, limit_price), None when absent."""
    if body.get(name) is None:
        return None
    try:
        value = _decimal(body[name], name)
    except ValueError as exc:
        raise _Reject(422, 40010001, str(exc)) from None
    if value <= 0:
        raise _Reject(422, 40010001, f"{name} must be > 0, got {body[name]!r}")
    if name != "limit_price" and value != value.quantize(_QTY_STEP, rounding=ROUND_DOWN):
        raise _Reject(422, 40010001, f"{name} can have at most 9 decimal places, got {body[name]!r}")
    return value


def _insufficient_qty(requested: Decimal, available: Decimal) -> _Reject:
    text = (
        f"insufficient qty available for order (requested: {_fmt(requested)}, available: {_fmt(available)})"
    )
    return _Reject(403, 40310000, text)


def _fmt(value: Decimal) -> str:
    """Alpaca's number-as-string: plain notation, no exponent, no trailing zeros, no ``-0``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_ts(text: str) -> datetime:
    out = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return out if out.tzinfo is not None else out.replace(tzinfo=UTC)


def _handler_for(fake: FakeAlpacaTrading) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, payload = fake.handle(method, parts.path, query, raw, dict(self.headers.items()))
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
            return

    return Handler
