"""Alpaca market data as rows of the replay store's ``bars`` table.

Design decisions
----------------
* The real alpaca-py clients do the HTTP work (``StockHistoricalDataClient``,
  ``CryptoHistoricalDataClient``); they follow ``next_page_token`` themselves, so a long window
  arrives as one list. ``url_override`` points them at a proxy or a test double.
* Symbols are stored as the trading loop writes them: ``BTCUSD``, not Alpaca's ``BTC/USD``. A
  symbol is crypto when it contains ``/``, ends in ``USD``, ``USDT`` or ``USDC`` after at least one
  more character, or is a coin-quoted pair longer than any listed ticker (``ETHBTC``, not ``GBTC``):
  ``replay.loop_rules.is_crypto_symbol``.
* Top of book (``bid``, ``ask``, ``bid_size``, ``ask_size``) is only known *now* (latest stock
  quote, latest crypto order book), so it lands on each symbol's last bar, and only when the
  quote's timestamp falls inside that bar (``ts <= quote_ts < ts + timeframe``): a quote taken after
  the bar closed would leak the future into the past. Every other bar has NaN there. For crypto the
  sizes are the summed size of the best 5 levels of each side. :func:`fetch_top_of_book` returns
  that top of book on its own (the live loop's quotes).
* Only bars whose period has surely ended are returned (``replay.timeutil.bar_closed_at(ts) <= now``):
  a bar still in progress (today's daily bar during the session, the current hour) holds a partial
  high, low, close and volume that Alpaca restates once it closes, and the store is append-only (a
  later ingest of the completed bar would be refused as a restatement). An intraday bar ends one
  timeframe after its stamp. A daily bar stamped at a local midnight (stocks: New York, crypto: US
  Central) ends at the next one, 23, 24 or 25 h later across daylight-saving changes: it is stored
  25 h after its stamp, up to 2 h after it really ended. Dropped bars are logged, and a symbol left
  with none is refused like one Alpaca returned nothing for.
* Stock data needs both Alpaca keys (``MissingCredentialsError`` otherwise); crypto data is public,
  so keys are sent when set and a crypto-only fetch works without them.
* Any HTTP or connection failure becomes ``SourceError`` with a one-line message (status, what,
  symbols). A symbol for which Alpaca returns no bars is refused with ``ValueError`` naming it.
* Daily stocks and daily crypto fetched together share one clock: the crypto's daily bars are built
  from its hourly bars per New York day and stamped at New York midnight like the stocks'
  (``replay.sources.alpaca_daily``), so the simulator can step both. Crypto fetched alone keeps
  Alpaca's own daily bars (stamped at its day start). ``refuse_second_crypto_clock`` there keeps a
  store's daily crypto on one of the two (the ingest checks it).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, TypeVar

import pandas as pd
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models import Bar, BarSet, Orderbook, OrderbookQuote, Quote
from alpaca.data.requests import (
    CryptoBarsRequest,
    CryptoLatestOrderbookRequest,
    StockBarsRequest,
    StockLatestQuoteRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from requests.exceptions import RequestException

from raytrade.replay.credentials import AlpacaAccess, check_secure_url
from raytrade.replay.errors import InputError
from raytrade.replay.loop_rules import is_crypto_symbol as is_crypto_symbol  # the loop's rule, re-exported
from raytrade.replay.loop_rules import pair_quote
from raytrade.replay.pacing import RequestPacer
from raytrade.replay.schema import BARS_SCHEMA
from raytrade.replay.sources.alpaca_daily import BarRow, new_york_daily, new_york_hours
from raytrade.replay.timeutil import bar_closed_at, bar_open_until

logger = logging.getLogger(__name__)

SOURCE: Final[str] = "alpaca"
BOOK_DEPTH: Final[int] = 5
DATA_TIMEOUT_S: Final[float] = 30.0
"""Seconds any one market-data request may take before it fails (alpaca-py sets no timeout)."""
_Client = TypeVar("_Client", bound=RESTClient)
BAR_COLUMNS: Final[tuple[str, ...]] = tuple(BARS_SCHEMA.names)
BAR_DTYPES: Final[dict[str, str]] = {
    "symbol": "str",
    "ts": "datetime64[us, UTC]",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
    "vwap": "float64",
    "trade_count": "Int64",
    "bid": "float64",
    "ask": "float64",
    "bid_size": "float64",
    "ask_size": "float64",
    "asset_class": "str",
    "source": "str",
}
# timeframe name -> (amount, Alpaca unit, bar length)
TIMEFRAMES: Final[Mapping[str, tuple[int, TimeFrameUnit, timedelta]]] = {
    "1d": (1, TimeFrameUnit.Day, timedelta(days=1)),
    "1h": (1, TimeFrameUnit.Hour, timedelta(hours=1)),
    "1m": (1, TimeFrameUnit.Minute, timedelta(minutes=1)),
}
_EQUITY_RE: Final[re.Pattern[str]] = re.compile(r"[A-Z0-9][A-Z0-9.]*")
_PAIR_RE: Final[re.Pattern[str]] = re.compile(r"[A-Z0-9]+/[A-Z0-9]+")


class SourceError(RuntimeError):
    """Alpaca refused or failed a request; the message is one line (status, request, symbols).
    ``status``: the HTTP status Alpaca answered with (None: no answer, e.g. a timeout)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def refused(self) -> bool:
        """Alpaca answered and turned the request down (a 4xx other than a timeout or a 429): it did
        nothing. A 5xx or no answer says nothing about what it did, and neither does a 429: alpaca-py
        retries a request on 429 and 504, so a last attempt's 429 may follow an earlier one (a 504)
        that went through, an order placed."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)


@dataclass(frozen=True)
class AlpacaSymbol:
    """A requested symbol: ``name`` as stored (``BTCUSD``), ``alpaca`` as Alpaca spells it."""

    name: str
    alpaca: str
    asset_class: Literal["equity", "crypto"]


class TopOfBook(NamedTuple):
    """Best bid/ask at ``ts``; sizes in shares or coins (crypto: summed over the best 5 levels)."""

    ts: datetime
    bid: float
    ask: float
    bid_size: float
    ask_size: float


def parse_symbol(symbol: str) -> AlpacaSymbol:
    """Classify ``symbol`` and derive both spellings; an ``InputError`` naming it when malformed (a
    lower-case ``aapl`` is the user's typo, not a bug)."""
    if not isinstance(symbol, str) or not (_PAIR_RE.fullmatch(symbol) or _EQUITY_RE.fullmatch(symbol)):
        raise InputError(
            f"symbol={symbol!r} is not a valid Alpaca symbol (upper-case, e.g. 'AAPL', 'BTCUSD', 'BTC/USD')"
        )
    if "/" in symbol:
        return AlpacaSymbol(name=symbol.replace("/", ""), alpaca=symbol, asset_class="crypto")
    quote = pair_quote(symbol)  # None: not a pair (is_crypto_symbol's rule)
    if quote is None:
        return AlpacaSymbol(name=symbol, alpaca=symbol, asset_class="equity")
    return AlpacaSymbol(name=symbol, alpaca=f"{symbol[: -len(quote)]}/{quote}", asset_class="crypto")


def fetch_alpaca_bars(
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    access: AlpacaAccess,
    timeframe: str = "1d",
    url_override: str | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Completed bars of ``symbols`` in ``[start, end]`` from Alpaca, as a ``bars``-table frame.

    Args:
        symbols: stocks (``AAPL``) and crypto pairs (``BTCUSD`` or ``BTC/USD``), no duplicates.
        start, end: timezone-aware bounds, ``start < end``; Alpaca includes both ends.
        access: the Alpaca keys and, unless ``url_override`` is given, the data URL.
        timeframe: ``"1d"``, ``"1h"`` or ``"1m"``.
        url_override: base URL of a proxy or test double (``https://``, or ``http://`` on loopback).
        now: the fetch time (default: the clock); bars not ended by then are left out (module doc).
            With ``timeframe="1d"`` and both stocks and crypto, the crypto's daily bars are built
            from its hourly bars per New York day, stamped at New York midnight (module doc).

    Returns:
        One row per (symbol, ts), sorted by symbol then ts, with exactly :data:`BAR_COLUMNS` in
        the dtypes of :data:`BAR_DTYPES`; ``source`` is ``"alpaca"``.

    Raises:
        InputError: empty/malformed/duplicate symbols, naive or reversed window, unknown
            timeframe, or a symbol Alpaca returned no bars for (named in the message).
        MissingCredentialsError: stock symbols requested without both Alpaca keys.
        SourceError: Alpaca answered with an HTTP error or could not be reached.
    """
    parsed = _parse_symbols(symbols)
    amount, unit, bar_length = _timeframe(timeframe)
    _check_window(start, end)
    url = check_secure_url(url_override, field="url_override") if url_override else access.data_url
    tf = TimeFrame(amount, unit)

    bars: dict[str, list[BarRow]] = {}
    stocks = [s.alpaca for s in parsed if s.asset_class == "equity"]
    crypto = [s.alpaca for s in parsed if s.asset_class == "crypto"]
    stock_client = _stock_client(access, url) if stocks else None
    crypto_client = _crypto_client(access, url) if crypto else None
    if stock_client is not None:
        with alpaca_call("stock bars", stocks):
            bars |= _bar_data(
                stock_client.get_stock_bars(
                    StockBarsRequest(symbol_or_symbols=stocks, timeframe=tf, start=start, end=end)
                )
            )
    if crypto_client is not None and stocks and timeframe == "1d":
        bars |= _crypto_on_stock_clock(crypto_client, crypto, start, end)
    elif crypto_client is not None:
        with alpaca_call("crypto bars", crypto):
            bars |= _bar_data(
                crypto_client.get_crypto_bars(
                    CryptoBarsRequest(symbol_or_symbols=crypto, timeframe=tf, start=start, end=end)
                )
            )
    books = _top_of_book(stock_client, stocks, crypto_client, crypto)
    bars = _completed(bars, bar_length, now or datetime.now(UTC))

    empty = [s.name for s in parsed if not bars.get(s.alpaca)]
    if empty:
        raise InputError(
            f"Alpaca returned no completed {timeframe} bars for symbols={empty} in [{start.isoformat()}, "
            f"{end.isoformat()}] (unknown symbol, no trading in the window, or only a bar still in progress)"
        )
    frame = _frame(parsed, bars, books, bar_length)
    logger.info("fetched %d alpaca %s bars for %d symbols", len(frame), timeframe, len(parsed))
    return frame


def _crypto_on_stock_clock(
    client: CryptoHistoricalDataClient, crypto: Sequence[str], start: datetime, end: datetime
) -> dict[str, list[BarRow]]:
    """Daily bars of ``crypto`` for the New York days stamped in ``[start, end]``, built from Alpaca's
    hourly bars (``replay.sources.alpaca_daily.new_york_daily``); days still in progress included
    (:func:`_completed` drops them)."""
    window = new_york_hours(start, end)
    if window is None:
        return {}
    with alpaca_call("crypto hourly bars", crypto):
        hourly = _bar_data(
            client.get_crypto_bars(
                CryptoBarsRequest(
                    symbol_or_symbols=list(crypto), timeframe=TimeFrame.Hour, start=window[0], end=window[1]
                )
            )
        )
    return {sym: new_york_daily(series, sym) for sym, series in hourly.items()}


def _completed(
    bars: Mapping[str, Sequence[BarRow]], bar_length: timedelta, now: datetime
) -> dict[str, list[BarRow]]:
    """``bars`` without those whose period has not surely ended at ``now`` (still in progress, by
    ``replay.timeutil.bar_closed_at``: a daily bar stamped at a local midnight ends 25 h later)."""
    kept: dict[str, list[BarRow]] = {}
    for sym, series in bars.items():
        closed_at = bar_closed_at(pd.DatetimeIndex([b.timestamp for b in series]), pd.Timedelta(bar_length))
        kept[sym] = [b for b, at in zip(series, closed_at, strict=True) if at <= now]
    for sym, series in bars.items():
        if dropped := len(series) - len(kept[sym]):
            logger.info("%s: %d bar(s) still in progress at %s left out", sym, dropped, now)
    return kept


def _parse_symbols(symbols: Sequence[str]) -> list[AlpacaSymbol]:
    if isinstance(symbols, str) or not symbols:
        raise InputError(f"symbols={symbols!r}: expected a non-empty list of symbols")
    parsed = [parse_symbol(s) for s in symbols]
    names = [p.name for p in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"symbols={list(symbols)!r} name {duplicates} more than once")
    return parsed


def _timeframe(timeframe: str) -> tuple[int, TimeFrameUnit, timedelta]:
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise InputError(f"timeframe={timeframe!r}; expected one of {sorted(TIMEFRAMES)}") from None


def _check_window(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputError(f"{name}={value.isoformat()} is naive; pass a timezone-aware datetime")
    if start >= end:
        raise InputError(f"start={start.isoformat()} must be before end={end.isoformat()}")


def fetch_top_of_book(
    symbols: Sequence[str],
    access: AlpacaAccess,
    url_override: str | None = None,
    timeout_s: float = DATA_TIMEOUT_S,
) -> dict[str, TopOfBook]:
    """Best bid and ask *now* for each symbol (latest stock quote, latest crypto order book), keyed
    by the stored name (``BTCUSD``). A symbol Alpaca has nothing for is left out. Errors as for
    :func:`fetch_alpaca_bars` (``MissingCredentialsError`` for stocks without keys, ``SourceError``).
    Every request has ``timeout_s`` (a hung data server must not hang the live loop)."""
    parsed = _parse_symbols(symbols)
    url = check_secure_url(url_override, field="url_override") if url_override else access.data_url
    stocks = [s.alpaca for s in parsed if s.asset_class == "equity"]
    crypto = [s.alpaca for s in parsed if s.asset_class == "crypto"]
    books = _top_of_book(
        _stock_client(access, url, timeout_s) if stocks else None,
        stocks,
        _crypto_client(access, url, timeout_s) if crypto else None,
        crypto,
    )
    return {s.name: books[s.alpaca] for s in parsed if s.alpaca in books}


def bound_http(client: _Client, timeout_s: float, pacer: RequestPacer | None = None) -> _Client:
    """``client`` (an alpaca-py REST client) with a timeout on every request of its ``requests``
    session (alpaca-py passes none, so a hung server would hang the caller) and its own 429/504
    retries kept at 2, 1 s apart; with ``pacer``, every request (retries included) waits its turn
    (:class:`replay.pacing.RequestPacer`)."""
    from requests import PreparedRequest, Response
    from requests.adapters import HTTPAdapter

    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")

    class _TimeoutAdapter(HTTPAdapter):
        def send(
            self,
            request: PreparedRequest,
            stream: bool = False,
            timeout: float | tuple[float | None, float | None] | None = None,
            verify: bool | str = True,
            cert: str | tuple[str, str] | None = None,
            proxies: dict[str, str] | None = None,
        ) -> Response:
            if pacer is not None:
                pacer.wait()
            return super().send(
                request, stream, timeout_s if timeout is None else timeout, verify, cert, proxies
            )

    adapter = _TimeoutAdapter()
    client._session.mount("https://", adapter)
    client._session.mount("http://", adapter)
    client._retry, client._retry_wait = 2, 1
    return client


def _stock_client(
    access: AlpacaAccess, url: str | None, timeout_s: float = DATA_TIMEOUT_S
) -> StockHistoricalDataClient:
    creds = access.credentials()
    return bound_http(
        StockHistoricalDataClient(
            api_key=creds.api_key.get_secret_value(),
            secret_key=creds.secret_key.get_secret_value(),
            url_override=url,
        ),
        timeout_s,
    )


def _crypto_client(
    access: AlpacaAccess, url: str | None, timeout_s: float = DATA_TIMEOUT_S
) -> CryptoHistoricalDataClient:
    creds = access.optional_credentials()
    return bound_http(
        CryptoHistoricalDataClient(
            api_key=creds.api_key.get_secret_value() if creds else None,
            secret_key=creds.secret_key.get_secret_value() if creds else None,
            url_override=url,
        ),
        timeout_s,
    )


def _top_of_book(
    stock_client: StockHistoricalDataClient | None,
    stocks: Sequence[str],
    crypto_client: CryptoHistoricalDataClient | None,
    crypto: Sequence[str],
) -> dict[str, TopOfBook]:
    """Latest top of book keyed by Alpaca's spelling (``BTC/USD``)."""
    books: dict[str, TopOfBook] = {}
    if stock_client is not None and stocks:
        with alpaca_call("stock latest quotes", stocks):
            quotes = stock_client.get_stock_latest_quote(
                StockLatestQuoteRequest(symbol_or_symbols=list(stocks))
            )
        books |= {sym: _quote_top(q) for sym, q in quotes.items() if isinstance(q, Quote)}
    if crypto_client is not None and crypto:
        with alpaca_call("crypto latest orderbooks", crypto):
            orderbooks = crypto_client.get_crypto_latest_orderbook(
                CryptoLatestOrderbookRequest(symbol_or_symbols=list(crypto))
            )
        books |= {sym: _book_top(b) for sym, b in orderbooks.items() if isinstance(b, Orderbook)}
    return books


@contextmanager
def alpaca_call(what: str, symbols: Sequence[str] = ()) -> Iterator[None]:
    """Turn alpaca-py / requests failures inside the block into a one-line :class:`SourceError`
    (``what`` and ``symbols`` name the call in the message)."""
    try:
        yield
    except APIError as exc:
        raise SourceError(
            f"alpaca {what}{_for(symbols)} failed: HTTP {exc.status_code} {_error_text(str(exc))}",
            exc.status_code if isinstance(exc.status_code, int) else None,
        ) from exc
    except RequestException as exc:
        raise SourceError(
            f"alpaca {what}{_for(symbols)} failed: {type(exc).__name__}: {_error_text(str(exc))}"
        ) from exc


def _for(symbols: Sequence[str]) -> str:
    return f" for {','.join(symbols)}" if symbols else ""


def _error_text(body: str, limit: int = 200) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    text = str(decoded["message"]) if isinstance(decoded, dict) and "message" in decoded else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bar_data(result: BarSet | dict[str, Any]) -> dict[str, list[BarRow]]:
    if not isinstance(result, BarSet):
        raise SourceError(f"alpaca client returned {type(result).__name__}, expected BarSet")
    return {sym: [_row(b) for b in bars] for sym, bars in result.data.items()}


def _row(bar: Bar) -> BarRow:
    return BarRow(
        bar.timestamp, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count, bar.vwap
    )


def _quote_top(quote: Quote) -> TopOfBook:
    return TopOfBook(quote.timestamp, quote.bid_price, quote.ask_price, quote.bid_size, quote.ask_size)


def _book_top(book: Orderbook) -> TopOfBook:
    bids: list[OrderbookQuote] = sorted(book.bids, key=lambda q: q.price, reverse=True)[:BOOK_DEPTH]
    asks: list[OrderbookQuote] = sorted(book.asks, key=lambda q: q.price)[:BOOK_DEPTH]
    return TopOfBook(
        ts=book.timestamp,
        bid=bids[0].price if bids else math.nan,
        ask=asks[0].price if asks else math.nan,
        bid_size=math.fsum(q.size for q in bids) if bids else math.nan,
        ask_size=math.fsum(q.size for q in asks) if asks else math.nan,
    )


def _frame(
    parsed: Sequence[AlpacaSymbol],
    bars: Mapping[str, Sequence[BarRow]],
    books: Mapping[str, TopOfBook],
    bar_length: timedelta,
) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    for sym in sorted(parsed, key=lambda s: s.name):
        series = sorted(bars[sym.alpaca], key=lambda b: b.timestamp)
        book = books.get(sym.alpaca)
        for i, bar in enumerate(series):
            top = book if i == len(series) - 1 and _in_bar(book, bar.timestamp, bar_length) else None
            records.append(
                {
                    "symbol": sym.name,
                    "ts": bar.timestamp,
                    "open": bar.open,
                    "high": bar.high,
                    "low": bar.low,
                    "close": bar.close,
                    "volume": bar.volume,
                    "vwap": bar.vwap,
                    "trade_count": bar.trade_count,
                    "bid": top.bid if top else math.nan,
                    "ask": top.ask if top else math.nan,
                    "bid_size": top.bid_size if top else math.nan,
                    "ask_size": top.ask_size if top else math.nan,
                    "asset_class": sym.asset_class,
                    "source": SOURCE,
                }
            )
    frame = pd.DataFrame.from_records(records, columns=list(BAR_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("us")
    frame = frame.astype(BAR_DTYPES)
    duplicated = frame.duplicated(["symbol", "ts"])
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise SourceError(f"alpaca returned duplicate bars, e.g. symbol={first['symbol']} ts={first['ts']}")
    return frame.reset_index(drop=True)


def _in_bar(book: TopOfBook | None, bar_ts: datetime, bar_length: timedelta) -> bool:
    """Whether ``book`` was quoted while the bar was surely still open (``replay.timeutil.bar_open_until``:
    a daily bar stamped at a local midnight may last only 23 h, a spring-forward day)."""
    if book is None:
        return False
    (open_until,) = bar_open_until(pd.DatetimeIndex([bar_ts]), pd.Timedelta(bar_length))
    return bar_ts <= book.ts < open_until
