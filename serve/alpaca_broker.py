"""The live loop's broker on Alpaca (alpaca-py ``TradingClient``, paper account only).

Symbols are the store's spelling (``BTCUSD``); orders go out in Alpaca's (``BTC/USD``). Quotes come
from :func:`replay.sources.alpaca.fetch_top_of_book` (latest stock quote, latest crypto order book).
Keys come from an :class:`replay.credentials.AlpacaAccess` (built by the entrypoint from its settings)
and are read only to build the clients. A refused or
failed call is a one-line :class:`replay.sources.alpaca.SourceError` (status and Alpaca's message).

Paper means paper. In alpaca-py ``url_override`` beats ``paper=True``, so the trading URL is checked
here: only Alpaca's paper host (``https://paper-api.alpaca.markets``) or a loopback URL (a test fake)
is accepted, without credentials in it (``user:password@``: the keys come from the settings, and a
URL gets logged), and the URL the client actually uses is checked again after it is built. Every account
read checks the account is a paper one (Alpaca's paper account numbers start with ``PA``) before the
loop can send an order, and :meth:`AlpacaBroker.submit` refuses until such a check has passed.
Live trading is not offered.

What Alpaca allows on each traded asset (tradable, fractionable, shortable and easy to borrow, a
crypto pair's minimum order and quantity increment) is read with the trading client
(:meth:`AlpacaBroker.assets`: ``get_asset`` per equity, or one ``get_all_assets`` of the equity
class when more than :data:`ASSET_READS_ONE_BY_ONE` are due, and one of the crypto class for the
pairs, so no pair's slash goes into a URL path) and kept for ``asset_max_age_s`` (an hour by
default: the flags change seldom, and an order a change catches in between is refused as it was
before they were read); an entry past that age is read again, and one that cannot be read is left
out (the loop holds that symbol).

Every trading request waits its turn under Alpaca's rate limit (:data:`TRADING_REQUESTS_PER_MINUTE`,
:class:`replay.pacing.RequestPacer`): a 500-name book's cycle ran into 429s and held what they refused.
A hung call must not hang the loop: every HTTP request of the trading client has a timeout
(``timeout_s``; alpaca-py sets none), and alpaca-py's own retries (429/504) stay bounded; an order's
submit is never retried (:meth:`AlpacaBroker.submit`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from raytrade.replay.credentials import LOOPBACK_HOSTS, AlpacaAccess, check_secure_url, shown_url
from raytrade.replay.errors import InputError
from raytrade.replay.pacing import RequestPacer
from raytrade.replay.sources.alpaca import (
    SourceError,
    TopOfBook,
    alpaca_call,
    bound_http,
    fetch_top_of_book,
    is_crypto_symbol,
    parse_symbol,
)
from raytrade.serve.live import BrokerAccount, BrokerPosition, OrderNotFound, OrderState
from raytrade.serve.orders import AssetFlags, OrderPlan

log = logging.getLogger("raytrade.live")

PAPER_TRADING_HOST: Final = "paper-api.alpaca.markets"
ORDERS_PAGE: Final = 500
"""The most orders Alpaca answers in one listing (``GET /v2/orders``'s ``limit``)."""
MOST_OPEN_ORDERS: Final = 20_000
"""More open orders than this and the listing is refused (the loop sends nothing that cycle)."""
PAPER_ACCOUNT_PREFIX: Final = "PA"
"""Alpaca's paper account numbers start with it (live ones do not)."""
TRADING_REQUESTS_PER_MINUTE: Final = 180
"""The most trading requests :class:`AlpacaBroker` starts in a minute, waiting rather than sending
more: Alpaca allows 200 a minute per account and answers a 429 past it (the margin is for another
client of the same account, e.g. a dashboard)."""
ASSET_READS_ONE_BY_ONE: Final = 20
"""Up to this many equities' flags are read one ``GET /v2/assets/{symbol}`` each; more, from one
listing of every US equity (Alpaca limits a key to 200 requests a minute: a 500-name book read one
by one would pass it on the loop's first cycle, and every hour after)."""
ASSET_MAX_AGE_S: Final = 3600.0
"""How long :class:`AlpacaBroker` keeps an asset's flags before it reads them again, seconds."""


class NotPaperError(InputError):
    """The trading URL or the account is not Alpaca paper: live trading is not offered."""


def check_paper_trading_url(url: str, *, field: str = "trading_url") -> str:
    """``url`` if it is Alpaca's paper trading API over https or a loopback URL, without credentials in
    it (:func:`replay.credentials.check_secure_url`); else :class:`NotPaperError` or
    ``UnsafeURLError`` naming ``field`` and the value (less any credentials and query)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if (parts.scheme == "https" and host == PAPER_TRADING_HOST) or (
        parts.scheme in ("http", "https") and host in LOOPBACK_HOSTS
    ):
        return check_secure_url(str(url), field=field)
    raise NotPaperError(  # shown without user:password@ or a query: they may hold the keys
        f"{field}={shown_url(url)!r} is not Alpaca's paper API (https://{PAPER_TRADING_HOST}) nor loopback: "
        "live trading is not offered"
    )


def _not_found(exc: Exception) -> bool:
    """``exc`` (raised by ``alpaca_call``) is Alpaca's 404: the order does not exist."""
    from alpaca.common.exceptions import APIError

    cause = exc.__cause__
    return isinstance(cause, APIError) and cause.status_code == 404


def _float(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def broker_position(pos: Any) -> BrokerPosition:
    """One of Alpaca's positions (signed by its side). Without ``market_value`` it is valued at
    ``current_price`` (one that is not positive is no price); with neither, :class:`SourceError`: a
    position valued at 0 (as it was) would count nothing against the gross and crypto caps, and the
    cycle must not size orders around it."""
    symbol = parse_symbol(str(pos.symbol)).name
    qty = abs(float(pos.qty))
    sign = -1.0 if _enum_text(pos.side) == "short" else 1.0
    value, price = _float(pos.market_value), _float(pos.current_price)
    if price is not None and not price > 0:  # 0, negative or NaN: no price
        price = None
    if value is None and price is not None:
        value = qty * price
    if value is None:
        raise SourceError(
            f"alpaca position {symbol}: neither market_value nor current_price; it cannot be valued"
        )
    return BrokerPosition(symbol=symbol, qty=sign * qty, market_value=sign * abs(value), current_price=price)


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _few(symbols: Sequence[str], shown: int = 10) -> str:
    """``symbols`` for a log line: the first ``shown`` and how many more."""
    more = len(symbols) - shown
    return ", ".join(symbols[:shown]) + (f" and {more} more" if more > 0 else "")


def asset_flags(asset: Any) -> AssetFlags:
    """One of Alpaca's assets (alpaca-py's ``Asset``) as :class:`serve.orders.AssetFlags`: an inactive
    asset is not tradable. A crypto quantity (``min_order_size``, ``min_trade_increment``) that is
    not a positive number is :class:`SourceError` (an increment of 0 or NaN cannot size an order;
    the loop holds the symbol rather than guess); a ``min_order_size`` of 0 is no minimum."""

    def quantity(name: str) -> float | None:
        value = _float(getattr(asset, name, None))
        if value == 0 and name == "min_order_size":
            return None
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SourceError(f"alpaca asset {asset.symbol}: {name}={value!r} is not a positive number")
        return value

    return AssetFlags(
        tradable=bool(asset.tradable) and _enum_text(asset.status) == "active",
        fractionable=bool(asset.fractionable),
        shortable=bool(asset.shortable),
        easy_to_borrow=bool(asset.easy_to_borrow),
        min_order_size=quantity("min_order_size"),
        min_trade_increment=quantity("min_trade_increment"),
    )


class AlpacaBroker:
    """:class:`serve.live.Broker` over an Alpaca **paper** account."""

    def __init__(
        self,
        access: AlpacaAccess,
        trading_url: str | None = None,
        data_url: str | None = None,
        timeout_s: float = 15.0,
        asset_max_age_s: float = ASSET_MAX_AGE_S,
        requests_per_minute: int = TRADING_REQUESTS_PER_MINUTE,
    ):
        from alpaca.trading.client import TradingClient

        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        url = None
        if trading_url:
            url = check_paper_trading_url(trading_url)
        creds = access.credentials()
        self._access, self._data_url, self._timeout_s = access, data_url, timeout_s
        self._client = TradingClient(
            creds.api_key.get_secret_value(),
            creds.secret_key.get_secret_value(),
            paper=True,
            url_override=url,
        )
        # alpaca-py keeps its default as a ``BaseURL`` enum, whose str() is the member's name
        used = _enum_text(getattr(self._client, "_base_url", ""))
        check_paper_trading_url(used, field="the client's base URL")
        self.pacer = RequestPacer(requests_per_minute, 60.0, name="alpaca trading requests")
        """Every trading request waits its turn under Alpaca's rate limit (``replay.pacing``)."""
        bound_http(self._client, timeout_s, self.pacer)
        self._paper_checked = False
        self.asset_max_age_s = asset_max_age_s
        """An asset's flags older than this (seconds) are read again (:meth:`assets`)."""
        self._assets: dict[str, tuple[AssetFlags, float]] = {}  # symbol -> (flags, time.monotonic() read)

    def __repr__(self) -> str:
        return "AlpacaBroker(paper=True)"

    def account(self) -> BrokerAccount:
        with alpaca_call("trading account"):
            a: Any = self._client.get_account()
        number = str(getattr(a, "account_number", "") or "")
        if not number.startswith(PAPER_ACCOUNT_PREFIX):
            raise NotPaperError(
                f"account_number={number!r} is not an Alpaca paper account "
                f"(they start with {PAPER_ACCOUNT_PREFIX!r}): live trading is not offered"
            )
        self._paper_checked = True
        equity = _float(a.equity)
        if equity is None or equity <= 0:
            raise RuntimeError(f"Alpaca account has no usable equity ({a.equity!r})")
        flags = ("account_blocked", "trading_blocked", "trade_suspended_by_user")
        blocked = [flag for flag in flags if getattr(a, flag, False) is not False]  # None or junk: blocked
        return BrokerAccount(
            equity=equity,
            cash=_float(a.cash) or 0.0,
            buying_power=_float(a.buying_power) or 0.0,
            last_equity=_float(a.last_equity),
            account_id=str(a.id),
            blocked=", ".join(blocked) or None,
        )

    def positions(self) -> list[BrokerPosition]:
        with alpaca_call("trading positions"):
            held = self._client.get_all_positions()
        return [broker_position(p) for p in held]

    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]:
        return fetch_top_of_book(
            symbols, self._access, url_override=self._data_url, timeout_s=self._timeout_s
        )

    def peak_equity(self, days: int) -> float | None:
        from alpaca.trading.requests import GetPortfolioHistoryRequest

        fields = GetPortfolioHistoryRequest(period=f"{days}D", timeframe="1D").to_request_fields()
        with alpaca_call("portfolio history"):
            # The raw answer: alpaca-py's model refuses the nulls Alpaca may send for some days.
            history: Any = self._client.get("/account/portfolio/history", fields)
        # Alpaca pads days before the account existed with zeros (and may send nulls): not equity.
        seen = [float(e) for e in (history.get("equity") or []) if e is not None and float(e) > 0]
        return max(seen) if seen else None

    def assets(self, symbols: Sequence[str]) -> dict[str, AssetFlags]:
        """The flags of ``symbols`` (the store's spelling) Alpaca answers for, from the cache where read
        less than ``asset_max_age_s`` ago, else read again: ``get_asset`` per equity (one
        ``get_all_assets`` of the equity class for more than :data:`ASSET_READS_ONE_BY_ONE`), one
        ``get_all_assets`` of the crypto class for all the pairs. A symbol whose read fails (an error,
        a 404, an answer that does not parse) is left out, logged: the loop holds it."""
        now = time.monotonic()
        due = [
            s
            for s in dict.fromkeys(symbols)
            if s not in self._assets or now - self._assets[s][1] >= self.asset_max_age_s
        ]
        for symbol in due:  # past its age an entry is no answer, whether the read below works or not
            self._assets.pop(symbol, None)
        pairs = [s for s in due if is_crypto_symbol(s)]
        equities = [s for s in due if s not in pairs]
        if pairs:
            self._read_listing("crypto", pairs, now)
        if len(equities) > ASSET_READS_ONE_BY_ONE:  # one listing: a read each would pass the rate limit
            self._read_listing("us_equity", equities, now)
        else:
            for symbol in equities:
                self._read_equity(symbol, now)
        return {s: self._assets[s][0] for s in symbols if s in self._assets}

    def _read_equity(self, symbol: str, now: float) -> None:
        try:
            with alpaca_call("asset", [symbol]):
                asset: Any = self._client.get_asset(symbol)
            if str(asset.symbol) != symbol:
                raise SourceError(f"alpaca asset {symbol}: the answer is {asset.symbol!r}'s")
            self._assets[symbol] = (asset_flags(asset), now)
        except (SourceError, ValueError) as exc:  # ValueError: an answer alpaca-py's model refuses
            log.warning("asset flags of %s could not be read: %s", symbol, " ".join(str(exc).split())[:300])

    def _read_listing(self, asset_class: str, wanted: Sequence[str], now: float) -> None:
        """The flags of ``wanted`` from one listing of Alpaca's ``asset_class`` assets (``crypto``:
        Alpaca spells a pair ``BTC/USD``, the store ``BTCUSD``)."""
        from alpaca.trading.enums import AssetClass
        from alpaca.trading.requests import GetAssetsRequest

        try:
            with alpaca_call(f"{asset_class} assets", list(wanted)):
                listed: Any = self._client.get_all_assets(
                    GetAssetsRequest(asset_class=AssetClass(asset_class))
                )
        except (SourceError, ValueError) as exc:
            shown = " ".join(str(exc).split())[:300]
            log.warning("asset flags of %s could not be read: %s", _few(wanted), shown)
            return
        keep = set(wanted)
        for asset in listed:
            name = str(asset.symbol).replace("/", "")
            if name not in keep:
                continue
            try:
                self._assets[name] = (asset_flags(asset), now)
            except SourceError as exc:
                log.warning("asset flags of %s could not be read: %s", name, exc)
        if missing := [s for s in wanted if s not in self._assets]:
            log.warning("asset flags of %s could not be read: Alpaca lists no such asset", _few(missing))

    def submit(self, plan: OrderPlan) -> str:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

        common: dict[str, Any] = {
            "symbol": parse_symbol(plan.symbol).alpaca,
            "qty": plan.qty,
            "side": OrderSide.BUY if plan.side == "buy" else OrderSide.SELL,
            "time_in_force": TimeInForce.GTC if plan.time_in_force == "gtc" else TimeInForce.DAY,
            "client_order_id": plan.client_order_id,
        }
        if not self._paper_checked:
            self.account()  # raises unless the account is a paper one
        request = (
            LimitOrderRequest(limit_price=plan.limit_price, **common)
            if plan.order_type == "limit"
            else MarketOrderRequest(**common)
        )
        # One attempt, no retry: alpaca-py retries a POST on 429 and 504, and a retry after a 504 that
        # placed the order is answered 422 (client_order_id reused) or 403 (the buying power it took),
        # which reads as a refusal of an order that exists. The loop's look-up by client id, then its
        # next cycle, settle an unanswered submit instead (serve.live: "An order is never sent twice").
        retries, self._client._retry = self._client._retry, 0
        try:
            with alpaca_call(f"{plan.side} order", [plan.symbol]):
                order: Any = self._client.submit_order(request)
        finally:
            self._client._retry = retries
        return str(order.id)

    def cancel(self, order_id: str) -> None:
        with alpaca_call(f"cancel of order {order_id}"):
            self._client.cancel_order_by_id(order_id)

    def order(self, order_id: str) -> OrderState:
        """The order's state; :class:`serve.live.OrderNotFound` when Alpaca answers 404."""
        try:
            with alpaca_call(f"order {order_id}"):
                o: Any = self._client.get_order_by_id(order_id)
        except Exception as exc:
            if _not_found(exc):
                raise OrderNotFound(order_id) from exc
            raise
        return _order_state(o)

    def order_by_client_id(self, client_order_id: str) -> OrderState | None:
        try:
            with alpaca_call(f"order {client_order_id}"):
                o: Any = self._client.get_order_by_client_id(client_order_id)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        return _order_state(o)

    def market_open(self) -> bool:
        with alpaca_call("clock"):
            clock: Any = self._client.get_clock()
        if not isinstance(clock.is_open, bool):
            raise SourceError(f"alpaca clock: is_open={clock.is_open!r} is not a boolean")
        return clock.is_open

    def open_orders(self) -> list[OrderState]:
        """Every open order, page by page (:data:`ORDERS_PAGE` a page, newest first, each page ending
        where the one before ended). Alpaca answers at most 500 orders a listing and says nothing of the
        rest: read once, the oldest orders of a larger book were missing, and the loop ordered beside a
        resting order it could not see. A listing that cannot page on (a whole page of orders
        submitted within one microsecond, or more than :data:`MOST_OPEN_ORDERS`) raises
        :class:`SourceError`: the loop then sends no order this cycle."""
        from alpaca.common.enums import Sort
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        seen: dict[str, Any] = {}
        until = None
        while True:
            with alpaca_call("open orders"):
                page: Any = self._client.get_orders(
                    GetOrdersRequest(
                        status=QueryOrderStatus.OPEN, limit=ORDERS_PAGE, direction=Sort.DESC, until=until
                    )
                )
            fresh = [o for o in page if str(o.id) not in seen]
            seen.update((str(o.id), o) for o in fresh)
            if len(page) < ORDERS_PAGE:
                return [_order_state(o) for o in seen.values()]
            if not fresh:
                raise SourceError(
                    f"alpaca open orders: more than {ORDERS_PAGE} open orders were submitted within one "
                    "microsecond; the listing cannot page past them"
                )
            if len(seen) > MOST_OPEN_ORDERS:
                raise SourceError(f"alpaca open orders: more than {MOST_OPEN_ORDERS:,} open orders")
            until = min(_submitted(o) for o in page) + timedelta(microseconds=1)


def _submitted(o: Any) -> datetime:
    """When the order was submitted (Alpaca pages its listing by it), else created; an order with
    neither cannot be paged past: :class:`SourceError`."""
    when = o.submitted_at or o.created_at
    if when is None:
        raise SourceError(f"alpaca open orders: order {o.id} has no submission time; the listing cannot page")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _order_state(o: Any) -> OrderState:
    return OrderState(
        order_id=str(o.id),
        status=_enum_text(o.status),
        filled_qty=_float(o.filled_qty) or 0.0,
        filled_avg_price=_float(o.filled_avg_price),
        filled_at=o.filled_at,
        client_order_id=None if o.client_order_id is None else str(o.client_order_id),
        symbol=parse_symbol(str(o.symbol)).name if o.symbol else None,
        side=None if o.side is None else _enum_text(o.side),
        qty=_float(o.qty),  # None for an order for a notional: its size is unknown to the loop
        limit_price=_float(o.limit_price),
    )
