"""A tiny fake of Alpaca's market-data HTTP API, for tests that run the real alpaca-py clients.

It serves, on ``127.0.0.1`` and a free port, the four endpoints ``replay.sources.alpaca`` calls,
with the paths and JSON shapes alpaca-py expects (``alpaca/data/historical/{stock,crypto}.py``,
``alpaca/common/rest.py``, ``alpaca/data/mappings.py``):

* ``GET /v2/stocks/bars``                       -> ``{"bars": {sym: [bar]}, "next_page_token"}``
* ``GET /v2/stocks/quotes/latest``              -> ``{"quotes": {sym: quote}}``
* ``GET /v1beta3/crypto/us/bars``               -> ``{"bars": {pair: [bar]}, "next_page_token"}``
* ``GET /v1beta3/crypto/us/latest/orderbooks``  -> ``{"orderbooks": {pair: book}}``

Crypto bars come from ``crypto_hourly_bars`` when the request's timeframe is ``1Hour``, else from
``crypto_bars`` (the daily ones). Bars are filtered by ``symbols``/``start``/``end`` (both ends
inclusive, as Alpaca does) and cut into pages of ``page_size`` bars over all symbols (ordered by
symbol, then time); a page that is not the last carries an opaque ``next_page_token`` the client must
send back as ``page_token``. Symbols the fake does not know are left out of the answer, as Alpaca
does. Stock endpoints require the ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers to match
``keys`` (403 otherwise); crypto endpoints are public. ``fail()`` makes matching requests answer with
an HTTP error. Every request is recorded (path, query, headers) in ``requests``.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from tests.loopback import serve_on_loopback, stop_serving

STOCK_BARS_PATH: Final[str] = "/v2/stocks/bars"
STOCK_QUOTES_PATH: Final[str] = "/v2/stocks/quotes/latest"
CRYPTO_BARS_PATH: Final[str] = "/v1beta3/crypto/us/bars"
CRYPTO_BOOKS_PATH: Final[str] = "/v1beta3/crypto/us/latest/orderbooks"
TEST_KEYS: Final[tuple[str, str]] = ("PKTESTKEYID0000000000", "test-secret-DO-NOT-LEAK-1234567890")


def use_fake_alpaca(monkeypatch: Any, data_url: str) -> None:
    """The environment a ``raytrade`` command reads Alpaca's keys and data URL from, set for one test
    (``monkeypatch``: pytest's) to the test keys and the fake at ``data_url``."""
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("ALPACA_DATA_URL", data_url)


def _bar(t: str, o: float, h: float, low: float, c: float, v: float, n: int | None, vw: float | None) -> dict:
    return {"t": t, "o": o, "h": h, "l": low, "c": c, "v": v, "n": n, "vw": vw}


# Daily stock bars open at midnight New York time (05:00Z in winter), crypto ones at 00:00Z.
STOCK_BARS: Final[dict[str, list[dict[str, Any]]]] = {
    "AAPL": [
        _bar("2024-01-02T05:00:00Z", 187.15, 188.44, 183.885, 185.64, 82488674.0, 1009074, 185.9465),
        _bar("2024-01-03T05:00:00Z", 184.22, 185.88, 183.43, 184.25, 58414460.0, 656956, 184.3226),
        _bar("2024-01-04T05:00:00Z", 182.15, 183.0872, 180.88, 181.91, 71983570.0, 712850, 181.9828),
    ],
    "MSFT": [
        _bar("2024-01-02T05:00:00Z", 373.86, 375.9, 366.77, 370.87, 25258633.0, 344588, 370.5785),
        _bar("2024-01-03T05:00:00Z", 369.01, 373.2562, 368.51, 370.6, 23083465.0, 321413, 370.9182),
        _bar("2024-01-04T05:00:00Z", 370.665, 373.1, 367.17, 367.94, 20901503.0, 315096, None),
    ],
}
CRYPTO_BARS: Final[dict[str, list[dict[str, Any]]]] = {
    "BTC/USD": [
        _bar("2024-01-02T00:00:00Z", 44180.0, 45899.5, 44150.25, 45010.75, 12.345678, 1532, 45012.3),
        _bar("2024-01-03T00:00:00Z", 45010.75, 45503.0, 40750.0, 42851.5, 30.5, 3021, 43110.1),
        _bar("2024-01-04T00:00:00Z", 42851.5, 44775.0, 42629.0, 44190.0, 8.125, 988, 43900.0),
    ],
    "ETH/USD": [
        _bar("2024-01-02T00:00:00Z", 2352.1, 2430.5, 2342.0, 2355.9, 150.25, 801, 2389.4),
        _bar("2024-01-03T00:00:00Z", 2355.9, 2385.0, 2100.0, 2209.7, 310.5, 1203, 2250.8),
    ],
}


def hourly_bars(first: str, hours: int, price: float, seed: int) -> list[dict[str, Any]]:
    """``hours`` consecutive hourly bars from ``first`` (ISO, UTC), a seeded random walk from ``price``:
    each opens at the previous close, with a trade count and a vwap inside its range."""
    rng, start = random.Random(seed), datetime.fromisoformat(first.replace("Z", "+00:00"))
    bars = []
    for i in range(hours):
        close = round(price * (1 + rng.uniform(-0.01, 0.01)), 2)
        high = round(max(price, close) * (1 + rng.uniform(0, 0.005)), 2)
        low = round(min(price, close) * (1 - rng.uniform(0, 0.005)), 2)
        stamp = (start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        vwap = round(rng.uniform(low, high), 4)
        bars.append(
            _bar(stamp, price, high, low, close, round(rng.uniform(0.1, 5.0), 6), rng.randint(1, 300), vwap)
        )
        price = close
    return bars


# Hourly crypto bars: whole New York days (midnight New York is 05:00Z in January), BTC Jan 2-4 and
# ETH Jan 2-3 as the daily ones; a daily fetch of stocks and crypto builds its daily crypto from them.
CRYPTO_HOURLY_BARS: Final[dict[str, list[dict[str, Any]]]] = {
    "BTC/USD": hourly_bars("2024-01-02T05:00:00Z", 3 * 24, 44180.0, seed=1),
    "ETH/USD": hourly_bars("2024-01-02T05:00:00Z", 2 * 24, 2352.1, seed=2),
}
# Latest top of book: timestamps inside each symbol's last canned bar (nanoseconds, as Alpaca sends).
STOCK_QUOTES: Final[dict[str, dict[str, Any]]] = {
    "AAPL": {"t": "2024-01-04T20:59:59.123456789Z", "bp": 181.9, "bs": 3.0, "ap": 181.93, "as": 5.0,
             "bx": "V", "ax": "V", "c": ["R"], "z": "C"},
    "MSFT": {"t": "2024-01-04T20:59:58.5Z", "bp": 367.9, "bs": 1.0, "ap": 368.0, "as": 2.0,
             "bx": "V", "ax": "V", "c": ["R"], "z": "C"},
}  # fmt: skip
CRYPTO_ORDERBOOKS: Final[dict[str, dict[str, Any]]] = {
    # Levels deliberately out of order: the best bid is the highest, the best ask the lowest.
    "BTC/USD": {
        "t": "2024-01-04T23:59:59.5Z",
        "b": [{"p": 44188.0, "s": 0.5}, {"p": 44189.5, "s": 0.25}, {"p": 44187.0, "s": 1.0},
              {"p": 44186.0, "s": 2.0}, {"p": 44185.0, "s": 0.125}, {"p": 44100.0, "s": 50.0}],
        "a": [{"p": 44191.0, "s": 0.75}, {"p": 44190.5, "s": 0.5}, {"p": 44192.0, "s": 1.5},
              {"p": 44193.0, "s": 0.25}, {"p": 44194.0, "s": 3.0}, {"p": 44300.0, "s": 40.0}],
    },
    "ETH/USD": {
        "t": "2024-01-03T12:00:00Z",
        "b": [{"p": 2209.5, "s": 4.0}, {"p": 2209.0, "s": 6.0}],
        "a": [{"p": 2210.0, "s": 3.0}],
    },
}  # fmt: skip


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received: path, query (last value per key), headers (as sent)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Failure:
    status: int
    path_contains: str
    body: str


@dataclass
class FakeAlpaca:
    """The fake server; use as a context manager (``with FakeAlpaca() as fake: fake.url``).

    Attributes:
        page_size: bars per page over all symbols of one request (small, to force pagination).
        keys: the (key id, secret) stock endpoints accept.
        stock_bars, crypto_bars, crypto_hourly_bars, stock_quotes, crypto_orderbooks: the canned data
            (copies; tests may edit them before requesting).
        requests: every request received, in order.
    """

    page_size: int = 10_000
    keys: tuple[str, str] = TEST_KEYS
    stock_bars: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: json_copy(STOCK_BARS))
    crypto_bars: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: json_copy(CRYPTO_BARS))
    crypto_hourly_bars: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: json_copy(CRYPTO_HOURLY_BARS)
    )
    stock_quotes: dict[str, dict[str, Any]] = field(default_factory=lambda: json_copy(STOCK_QUOTES))
    crypto_orderbooks: dict[str, dict[str, Any]] = field(default_factory=lambda: json_copy(CRYPTO_ORDERBOOKS))
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stamp_quotes(self, when: datetime) -> None:
        """Stamp every latest quote and order book at ``when`` (the time the loop under test reads
        them: a quote stamped later than the loop's clock counts as a broken feed)."""
        stamp = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
        for book in (*self.stock_quotes.values(), *self.crypto_orderbooks.values()):
            book["t"] = stamp

    @property
    def url(self) -> str:
        """Base URL to pass as alpaca-py's ``url_override`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("FakeAlpaca is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAlpaca:
        """Bind ``127.0.0.1`` on a free port and serve from a daemon thread."""
        self._server, self._thread = serve_on_loopback(_handler_for(self), "fake-alpaca")
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        stop_serving(self._server, self._thread)
        self._server, self._thread = None, None

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def fail(self, status: int, *, path_contains: str = "", message: str | None = None) -> None:
        """Answer every later request whose path contains ``path_contains`` with HTTP ``status``."""
        body = json.dumps({"code": status * 100_000, "message": message or f"fake error {status}"})
        with self._lock:
            self._failures.append(_Failure(status, path_contains, body))

    def paths(self) -> list[str]:
        """Paths of the requests received so far, in order."""
        with self._lock:
            return [r.path for r in self.requests]

    # -- request handling (runs on the server's threads) ------------------------------------

    def handle(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """Record the request and return (status, JSON body)."""
        with self._lock:
            self.requests.append(RecordedRequest(path, query, headers))
            failure = next((f for f in self._failures if f.path_contains in path), None)
        if failure is not None:
            return failure.status, failure.body
        symbols = [s for s in query.get("symbols", "").split(",") if s]
        if (
            path in (STOCK_BARS_PATH, STOCK_QUOTES_PATH)
            and (
                headers.get("APCA-API-KEY-ID"),
                headers.get("APCA-API-SECRET-KEY"),
            )
            != self.keys
        ):
            return 403, json.dumps({"message": "forbidden."})
        try:
            if path == STOCK_BARS_PATH:
                return 200, json.dumps(self._bars_page(self.stock_bars, symbols, query))
            if path == CRYPTO_BARS_PATH:
                hourly = query.get("timeframe") == "1Hour"
                table = self.crypto_hourly_bars if hourly else self.crypto_bars
                return 200, json.dumps(self._bars_page(table, symbols, query))
            if path == STOCK_QUOTES_PATH:
                return 200, json.dumps({"quotes": _pick(self.stock_quotes, symbols)})
            if path == CRYPTO_BOOKS_PATH:
                return 200, json.dumps({"orderbooks": _pick(self.crypto_orderbooks, symbols)})
        except ValueError as exc:
            return 400, json.dumps({"code": 40010001, "message": str(exc)})
        return 404, json.dumps({"message": "Not Found"})

    def _bars_page(
        self, table: dict[str, list[dict[str, Any]]], symbols: list[str], query: dict[str, str]
    ) -> dict[str, Any]:
        if not symbols:
            raise ValueError("missing symbols")
        if "timeframe" not in query:
            raise ValueError("missing timeframe")
        start = _parse_ts(query["start"]) if "start" in query else None
        end = _parse_ts(query["end"]) if "end" in query else None
        rows = [
            (sym, bar)
            for sym in sorted(symbols)
            for bar in sorted(table.get(sym, []), key=lambda b: _parse_ts(b["t"]))
            if (start is None or _parse_ts(bar["t"]) >= start) and (end is None or _parse_ts(bar["t"]) <= end)
        ]
        token = query.get("page_token")
        offset = _token_offset(token) if token else 0
        size = min(self.page_size, int(query.get("limit", self.page_size)))
        page = rows[offset : offset + size]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for sym, bar in page:
            grouped.setdefault(sym, []).append(bar)
        more = offset + size < len(rows)
        return {"bars": grouped, "next_page_token": f"page-{offset + size}" if more else None}


def json_copy(value: Any) -> Any:
    """A deep copy through JSON (the canned data are plain JSON values)."""
    return json.loads(json.dumps(value))


def _pick(table: dict[str, dict[str, Any]], symbols: list[str]) -> dict[str, dict[str, Any]]:
    return {s: table[s] for s in symbols if s in table}


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _token_offset(token: str) -> int:
    if not token.startswith("page-") or not token[5:].isdigit():
        raise ValueError(f"invalid page_token {token!r}")
    return int(token[5:])


def _handler_for(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status, body = fake.handle(parts.path, query, dict(self.headers.items()))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
            return

    return Handler
