"""The Alpaca clients wait their turn under the broker's rate limit instead of being refused: at most
``max_requests`` requests start in any window (``replay.pacing.RequestPacer``). Unpaced, a cycle of a
500-name book (a read, a cancel and an order a symbol) ran into Alpaca's 429 past 200 requests a
minute, and every symbol whose call was refused was held that cycle."""

from __future__ import annotations

import math

import pytest

from raytrade.cluster.settings import Settings
from raytrade.replay.pacing import RequestPacer
from raytrade.serve.alpaca_broker import TRADING_REQUESTS_PER_MINUTE, AlpacaBroker
from tests.fake_alpaca import TEST_KEYS
from tests.fake_alpaca_trading import FakeAlpacaTrading


class _Clock:
    """A clock that moves only when the pacer sleeps."""

    def __init__(self) -> None:
        self.now, self.sleeps = 1000.0, []  # type: ignore[var-annotated]

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _most_in_any_window(starts: list[float], window: float) -> int:
    return max(sum(s <= t < s + window for t in starts) for s in starts)


def test_no_more_than_the_limit_start_in_any_window() -> None:
    clock = _Clock()
    pacer = RequestPacer(5, 10.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(12):
        pacer.wait()
        starts.append(clock.now)
    assert starts[:5] == [1000.0] * 5  # the first five go at once
    assert starts[5:10] == [1010.0] * 5 and starts[10:] == [1020.0] * 2
    assert _most_in_any_window(starts, 10.0) == 5
    assert pacer.waited_s == pytest.approx(sum(clock.sleeps)) and pacer.waited_s > 0


def test_requests_spread_over_time_never_wait() -> None:
    clock = _Clock()
    pacer = RequestPacer(3, 10.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        assert pacer.wait() == 0.0
        clock.now += 4.0  # 2.5 a window
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("max_requests", "window_s", "field"),
    [(0, 60.0, "max_requests"), (True, 60.0, "max_requests"), (1.5, 60.0, "max_requests"),
     (5, 0.0, "window_s"), (5, math.inf, "window_s"), (5, math.nan, "window_s")],
)  # fmt: skip
def test_a_pacer_refuses_a_limit_it_cannot_keep(max_requests: object, window_s: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RequestPacer(max_requests, window_s)  # type: ignore[arg-type]


def test_the_alpaca_broker_paces_every_trading_request(caplog: pytest.LogCaptureFixture) -> None:
    assert TRADING_REQUESTS_PER_MINUTE < 200  # Alpaca's limit a minute
    clock = _Clock()
    with FakeAlpacaTrading() as trading:
        settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1])
        broker = AlpacaBroker(settings.alpaca_access(), trading_url=trading.url, requests_per_minute=3)
        broker.pacer._clock, broker.pacer._sleep = clock, clock.sleep
        starts = []
        with caplog.at_level("WARNING", logger="raytrade.pacing"):
            for _ in range(7):
                broker.market_open()
                starts.append(clock.now)
        assert len([r for r in trading.requests if r.path == "/v2/clock"]) == 7
    assert _most_in_any_window(starts, 60.0) == 3
    assert starts[-1] - starts[0] == pytest.approx(120.0)  # 7 at 3 a minute: two minutes
    assert "alpaca trading requests: 3 in the last 60 s" in caplog.text
