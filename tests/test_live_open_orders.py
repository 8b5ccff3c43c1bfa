"""The broker's listing of open orders is the whole book, however large: Alpaca answers at most 500
orders a listing (newest first) and says nothing of the rest, so the loop pages through them. Read
once, the oldest orders of a larger book were missing: the loop ordered beside a user's resting order
it could not see, dropped its own order on one 404 and ordered its symbol again, and a restart with a
new state file did not adopt it. The real alpaca-py client against the fake on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from raytrade.cluster.settings import Settings
from raytrade.replay.sources.alpaca import SourceError
from raytrade.serve.alpaca_broker import ORDERS_PAGE, AlpacaBroker
from raytrade.serve.live import LiveLoop
from tests.fake_alpaca import TEST_KEYS, FakeAlpaca
from tests.fake_alpaca_trading import FakeAlpacaTrading
from tests.live_doubles import T0, ScriptedPolicy


def _broker(trading: FakeAlpacaTrading, data: FakeAlpaca) -> AlpacaBroker:
    settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1], alpaca_data_url=data.url)
    return AlpacaBroker(settings.alpaca_access(), trading_url=trading.url)


MSFT_BID = {
    "symbol": "MSFT",
    "side": "buy",
    "type": "limit",
    "time_in_force": "gtc",
    "qty": "1",
    "limit_price": "1",
}
"""A resting order the user placed himself (no ``rt-`` client id): a bid at $1 never fills."""
MS = timedelta(milliseconds=1)


def _user_orders(
    trading: FakeAlpacaTrading, n: int, start: Any, step: timedelta = MS, body: dict[str, str] = MSFT_BID
) -> list[str]:
    """``n`` of the user's orders, submitted ``step`` apart from ``start``; their ids."""
    ids = []
    for i in range(n):
        trading.now = start + i * step
        with trading._lock:
            ids.append(str(trading._submit(dict(body)).id))
    return ids


def _listings(trading: FakeAlpacaTrading) -> int:
    return sum(r.method == "GET" and r.path == "/v2/orders" for r in trading.requests)


def _posts(trading: FakeAlpacaTrading, symbol: str) -> list[dict[str, Any]]:
    return [r.body for r in trading.requests if r.method == "POST" and r.body.get("symbol") == symbol]


def test_every_open_order_is_listed_past_alpacas_page_of_500() -> None:
    with FakeAlpacaTrading(cash=100_000) as trading, FakeAlpaca() as data:
        start = T0 - timedelta(hours=5)
        ids = _user_orders(trading, 2 * ORDERS_PAGE + 203, start)
        # three more submitted within one microsecond of the first page's oldest: the page's edge
        edge = start + (2 * ORDERS_PAGE + 203 - ORDERS_PAGE) * MS
        ids += _user_orders(trading, 3, edge, step=timedelta(0))
        trading.requests.clear()
        listed = _broker(trading, data).open_orders()
        assert sorted(o.order_id for o in listed) == sorted(ids)  # each once, none missing
        assert _listings(trading) == 3


def test_a_users_order_older_than_500_others_still_holds_its_symbol(tmp_path: Path) -> None:
    d = tmp_path
    with FakeAlpacaTrading(cash=100_000, positions={"AAPL": 10}) as trading, FakeAlpaca() as data:
        data.stamp_quotes(T0)
        # the user's old GTC bid for 100 AAPL at 170, then 500 newer resting orders on another name
        aapl_bid = {**MSFT_BID, "symbol": "AAPL", "qty": "100", "limit_price": "170"}
        _user_orders(trading, 1, T0 - timedelta(hours=3), body=aapl_bid)
        _user_orders(trading, ORDERS_PAGE, T0 - timedelta(hours=2))
        trading.now = T0
        loop = LiveLoop(
            _broker(trading, data),
            ScriptedPolicy({"AAPL": (0.1, "aggressive")}),
            ["AAPL"],
            d / "s.json",
            reset=True,
        )
        report = loop.cycle(T0)
        loop.close()
        assert _posts(trading, "AAPL") == []  # before: a market buy of 45 beside the user's 100
        assert "AAPL" in report.notes


@pytest.mark.parametrize("mode", ["404", "reset"])
def test_the_loops_own_order_older_than_500_others_is_kept_on_a_404_and_adopted_after_a_reset(
    mode: str, tmp_path: Path
) -> None:
    d = tmp_path
    with FakeAlpacaTrading(cash=100_000, positions={"AAPL": 10}) as trading, FakeAlpaca() as data:
        policy = ScriptedPolicy({"AAPL": (0.1, "passive")})
        trading.now = T0 - timedelta(hours=1)
        data.stamp_quotes(trading.now)
        loop = LiveLoop(_broker(trading, data), policy, ["AAPL"], d / "s.json", reset=True)
        (first,) = loop.cycle(trading.now).submitted.values()  # a passive bid: it rests
        _user_orders(trading, ORDERS_PAGE, T0 - timedelta(minutes=30))
        trading.now = T0
        data.stamp_quotes(T0)
        if mode == "404":
            trading.fail(f"/v2/orders/{first}", 404, times=1, method="GET", message="order not found")
        else:  # the state file is lost: the operator starts over with --reset
            loop.close()
            loop = LiveLoop(_broker(trading, data), policy, ["AAPL"], d / "s2.json", reset=True)
        loop.cycle(T0)
        loop.close()
        open_aapl = [o for o in trading._orders if o.symbol == "AAPL" and o.status == "new"]
        # before: the first bid was dropped (404) or not adopted (reset), never cancelled, and a
        # second bid of 45 went out beside it
        assert trading.order(first)["status"] == "canceled", mode
        assert len(open_aapl) <= 1, mode
        state = json.loads((d / ("s.json" if mode == "404" else "s2.json")).read_text())
        assert first in {p.get("order_id") for p in state["pending"]}, (
            mode
        )  # tracked until its fills are read


def test_a_listing_that_cannot_page_on_sends_nothing(tmp_path: Path) -> None:
    d = tmp_path
    with FakeAlpacaTrading(cash=100_000, positions={"AAPL": 10}) as trading, FakeAlpaca() as data:
        data.stamp_quotes(T0)
        _user_orders(trading, ORDERS_PAGE + 1, T0 - timedelta(hours=1), step=timedelta(0))  # one timestamp
        trading.now = T0
        broker = _broker(trading, data)
        with pytest.raises(SourceError, match="within one microsecond"):
            broker.open_orders()
        loop = LiveLoop(
            broker, ScriptedPolicy({"AAPL": (0.1, "aggressive")}), ["AAPL"], d / "s.json", reset=True
        )
        loop.cycle(T0)
        loop.close()
        assert _posts(trading, "AAPL") == []
