"""The live loop's safety rules: an order is never sent twice, the order record comes before the log,
a fill is logged once, one loop per account with a remembered peak, and paper means paper."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest
from click.testing import CliRunner

from raytrade.cluster.settings import Settings
from raytrade.replay import read_frame
from raytrade.replay.credentials import shown_url
from raytrade.replay.sources.alpaca import SourceError
from raytrade.replay.writer import ReplayWriter
from raytrade.serve.alpaca_broker import AlpacaBroker, NotPaperError, broker_position
from raytrade.serve.client import ServiceError
from raytrade.serve.live import (
    LiveLoop,
    LiveState,
    LiveStateError,
    OrderNotFound,
    OrderState,
    UnreadableOrderError,
    _number,
    default_state_file,
    order_is_open,
)
from raytrade.serve.orders import LiveConfig, OrderPlan
from tests.fake_alpaca import TEST_KEYS, FakeAlpaca
from tests.fake_alpaca_trading import FakeAlpacaTrading
from tests.live_doubles import T0, RunnerLoop, ScriptedPolicy
from tests.test_live import PRICES, FakeBroker

PASSIVE_MSFT = {"MSFT": (0.05, "passive")}


class _Crash(BaseException):
    """A process death between the broker's answer and the loop's next step."""


class _CrashAfterSubmit(AlpacaBroker):
    def submit(self, plan: OrderPlan) -> str:
        super().submit(plan)
        raise _Crash


class _LostAnswer(AlpacaBroker):
    """The order reaches Alpaca, the answer does not (a read timeout on ``POST /orders``)."""

    def submit(self, plan: OrderPlan) -> str:
        super().submit(plan)
        raise SourceError("alpaca buy order failed: ReadTimeout: read timed out")


def _broker(trading: FakeAlpacaTrading, data: FakeAlpaca, cls: type[AlpacaBroker] = AlpacaBroker) -> Any:
    settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1], alpaca_data_url=data.url)
    return cls(settings.alpaca_access(), trading_url=trading.url)


def _posts(trading: FakeAlpacaTrading) -> int:
    return trading.paths().count("POST /v2/orders")


def _pending(state_file: Path) -> list[dict[str, Any]]:
    return list(json.loads(state_file.read_text())["pending"])


# ------------------------------------------------------------------ an order is never sent twice


def test_a_crash_between_submit_and_save_sends_no_second_order_and_tracks_the_first(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    state = tmp_path / "state.json"
    crashing = LiveLoop(
        _broker(trading, data, _CrashAfterSubmit), ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state, reset=True
    )
    with pytest.raises(_Crash):
        crashing.cycle(T0)
    crashing.close()
    (order,) = trading.requests[-1:]  # the order went out; the loop died before it heard back
    assert _posts(trading) == 1
    first_id = next(o for o in _open_orders(trading))

    restarted = LiveLoop(_broker(trading, data), ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state)
    restarted.start()
    assert _posts(trading) == 1
    (tracked,) = _pending(state)
    assert (tracked["order_id"], tracked["status"]) == (first_id, "submitted")
    assert tracked["client_order_id"] == order.body["client_order_id"]
    # ... from the intent saved before the submit (the decision, its mid and policy), not guessed.
    assert tracked["decision_id"] == T0.strftime("%Y%m%dT%H%M%S%fZ") + ":MSFT"
    assert (tracked["mid"], tracked["policy_version"]) == (367.95, "alpha@2")

    # The next decision supersedes the tracked order: it is cancelled before the new one goes out.
    report = restarted.cycle(T0 + timedelta(days=1))
    assert trading.order(first_id)["status"] == "canceled"
    assert _open_orders(trading) == [report.submitted[f"{report.cycle_id}:MSFT"]]


def _open_orders(trading: FakeAlpacaTrading) -> list[str]:
    client = TradingClient(*TEST_KEYS, paper=True, url_override=trading.url)
    return [str(o.id) for o in client.get_orders()]  # type: ignore[union-attr]


def _resting(client: TradingClient, client_order_id: str) -> str:
    """A resting 1-share MSFT buy limit placed behind the loop's back; its order id."""
    request = LimitOrderRequest(
        symbol="MSFT",
        qty=1,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        limit_price=300.0,
        client_order_id=client_order_id,
    )
    return str(client.submit_order(request).id)  # type: ignore[union-attr]


def test_an_unknown_open_order_with_the_project_prefix_is_adopted_and_others_are_left_alone(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    client = TradingClient(*TEST_KEYS, paper=True, url_override=trading.url)

    ours, manual = _resting(client, "rt-20261101T143000000000Z-MSFT"), _resting(client, "manual-1")
    state = tmp_path / "state.json"
    loop = LiveLoop(_broker(trading, data), ScriptedPolicy({}), ["MSFT"], state, reset=True)
    loop.start()
    (adopted,) = _pending(state)
    assert (adopted["order_id"], adopted["symbol"], adopted["side"]) == (ours, "MSFT", "buy")
    loop.cycle(T0)  # a new decision supersedes the adopted order like any resting one of ours
    assert trading.order(ours)["status"] == "canceled" and trading.order(manual)["status"] == "new"


def test_an_adopted_orders_fill_is_logged_with_an_unknown_target_not_quarantined(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    client = TradingClient(*TEST_KEYS, paper=True, url_override=trading.url)
    ours = _resting(client, "rt-20261101T143000000000Z-MSFT")
    store = tmp_path / "store"
    broker, state = _broker(trading, data), tmp_path / "s.json"
    loop = LiveLoop(broker, ScriptedPolicy({}), ["MSFT"], state, store, reset=True)
    loop.start()  # adopts it: the decision that placed it (its target, its mid) is unknown here
    trading.fill_open_orders("MSFT")
    loop.cycle(T0)
    rows = read_frame(store, "experience")
    (fill,) = rows[rows["decision_id"] == "20261101T143000000000Z-MSFT:fill"].to_dict("records")
    assert (fill["order_id"], fill["policy_version"], fill["filled_qty"]) == (ours, "adopted", 1.0)
    assert fill["target_weight"] != fill["target_weight"]  # null: NaN when read back
    assert fill["slippage_bps"] != fill["slippage_bps"]  # no mid: cost calibration skips it
    assert not (store / "_quarantine").exists()


class _GatewayTimeoutAfterPlacing(FakeAlpacaTrading):
    """``POST /v2/orders`` places the order and answers 504 (a gateway that timed out on the way
    back), once; the first look-up by client id then misses it (404: not visible yet)."""

    armed = True
    misses = 1

    def handle(
        self, method: str, path: str, query: dict[str, str], raw_body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any]:
        status, payload = super().handle(method, path, query, raw_body, headers)
        if (method, path) == ("POST", "/v2/orders") and status == 200 and self.armed:
            self.armed = False
            return 504, {"message": "gateway timeout"}
        if path == "/v2/orders:by_client_order_id" and self.misses:
            self.misses -= 1
            return 404, {"code": 40410000, "message": "order not found"}
        return status, payload


def test_a_submit_is_never_retried_so_a_placed_order_is_never_read_as_refused(tmp_path: Path) -> None:
    """alpaca-py retried the POST after the 504: the retry was refused 422 (client_order_id reused),
    the loop took that for a refusal, the look-up missed, and the order, placed, was forgotten. Now
    the one attempt's 504 leaves it unknown; the next cycle finds it by client id and tracks it."""
    from tests.fake_alpaca import FakeAlpaca

    with _GatewayTimeoutAfterPlacing(cash=100_000, positions={"AAPL": 10}) as trading, FakeAlpaca() as data:
        data.stamp_quotes(T0)
        state = tmp_path / "state.json"
        loop = LiveLoop(_broker(trading, data), ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state, reset=True)
        first = loop.cycle(T0)
        decision = f"{first.cycle_id}:MSFT"
        assert _posts(trading) == 1 and first.rejected == {} and list(first.uncertain) == [decision]
        (order_id,) = _open_orders(trading)
        assert [p["status"] for p in _pending(state)] == ["planned"]
        loop.cycle(T0 + timedelta(hours=1))  # found by client id, tracked, cancelled for the new decision
        assert order_id not in _open_orders(trading) and len(_open_orders(trading)) == 1
        assert "planned" not in [p["status"] for p in _pending(state)]
        loop.close()


def test_a_submit_that_errors_but_reached_the_broker_is_not_counted_rejected(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    state = tmp_path / "state.json"
    loop = LiveLoop(
        _broker(trading, data, _LostAnswer), ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state, reset=True
    )
    report = loop.cycle(T0)
    decision = f"{report.cycle_id}:MSFT"
    (order_id,) = _open_orders(trading)
    assert report.rejected == {} and report.submitted == {decision: order_id}
    assert [(p["order_id"], p["status"]) for p in _pending(state)] == [(order_id, "submitted")]
    assert "GET /v2/orders:by_client_order_id" in trading.paths()


class _CancelRefused(FakeBroker):
    """A broker whose cancel fails (an HTTP 500): the resting order is still live."""

    def cancel(self, order_id: str) -> None:
        raise RuntimeError("alpaca cancel failed: HTTP 500 internal error")


class _SubmitLost(FakeBroker):
    """The order reaches the broker, the answer is lost, and the look-up by client id fails too."""

    def submit(self, plan: OrderPlan) -> str:
        super().submit(plan)
        raise RuntimeError("alpaca buy order failed: ReadTimeout")

    def order_by_client_id(self, client_order_id: str) -> OrderState | None:
        raise RuntimeError("alpaca order look-up failed: HTTP 500")


def test_a_resting_order_that_cannot_be_cancelled_gets_no_second_order(tmp_path: Path) -> None:
    broker = _CancelRefused(100_000.0, PRICES)
    loop = LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", reset=True)
    first = loop.cycle(T0)  # a 12-share buy limit rests at the bid
    second = loop.cycle(T0 + timedelta(days=1))
    assert [p.qty for p in broker.submitted] == [12.0] and second.plans == []
    assert [p["order_id"] for p in _pending(tmp_path / "s.json")] == [
        first.submitted[f"{first.cycle_id}:MSFT"]
    ]


class _CancelThen404(FakeBroker):
    """Alpaca's cancel is asynchronous: accepted (nothing raised) while the order still rests, and the
    read that confirms it answers 404 once (a hiccup: the order exists, still open)."""

    def __init__(self, cash: float, prices: dict[str, tuple[float, float]]):
        super().__init__(cash, prices)
        self.not_found_once: set[str] = set()

    def cancel(self, order_id: str) -> None:
        self.cancelled.append(order_id)
        self.not_found_once.add(order_id)

    def order(self, order_id: str) -> OrderState:
        if order_id in self.not_found_once:
            self.not_found_once.discard(order_id)
            raise OrderNotFound(f"alpaca order {order_id}: HTTP 404 order not found")
        return super().order(order_id)


def test_a_404_while_confirming_a_cancel_holds_the_symbol_and_keeps_the_order(tmp_path: Path) -> None:
    """A 404 right after an accepted cancel proves nothing (Alpaca keeps cancelled orders): the order
    may still rest and fill, so no second MSFT order goes on top of it and the state keeps it."""
    broker = _CancelThen404(100_000.0, PRICES)
    loop = LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", reset=True)
    loop.cancel_confirm_s = 0.0  # one look, no wait
    first = loop.cycle(T0)  # a 12-share buy limit rests at the bid
    (order_id,) = first.submitted.values()
    second = loop.cycle(T0 + timedelta(hours=1))
    assert broker.cancelled == [order_id] and second.plans == [] and len(broker.submitted) == 1
    assert [p["order_id"] for p in _pending(tmp_path / "s.json")] == [order_id]
    assert [o.order_id for o in broker.open_orders()] == [order_id]


def test_an_order_of_unknown_outcome_gets_no_second_order(tmp_path: Path) -> None:
    broker = _SubmitLost(100_000.0, PRICES)
    loop = LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", reset=True)
    first = loop.cycle(T0)
    assert list(first.uncertain) == [f"{first.cycle_id}:MSFT"]
    second = loop.cycle(T0 + timedelta(days=1))  # the look-up still fails: the first may rest
    assert len(broker.submitted) == 1 and second.plans == []
    assert [p["status"] for p in _pending(tmp_path / "s.json")] == ["planned"]


# ------------------------------------------------------------------ only a final state is done


class _UnderReview(FakeBroker):
    """Market orders wait in ``status`` (Alpaca's ``pending_review``, or a status the loop has never
    seen) instead of filling; a cancel is asynchronous (``pending_cancel``); :meth:`clear` ends the
    wait with a fill at the ask."""

    def __init__(self, cash: float, prices: dict[str, tuple[float, float]], status: str):
        super().__init__(cash, prices)
        self.status = status

    def submit(self, plan: OrderPlan) -> str:
        self.submitted.append(plan)
        order_id = f"o{len(self.submitted)}"
        self.client_ids[plan.client_order_id] = order_id
        self.sides[order_id] = (plan.symbol, plan.side, plan.client_order_id)
        self.orders[order_id] = OrderState(order_id, self.status, 0.0, None, None)
        return order_id

    def cancel(self, order_id: str) -> None:
        self.cancelled.append(order_id)
        self.orders[order_id] = self.orders[order_id]._replace(status="pending_cancel")

    def clear(self, order_id: str) -> None:
        plan = self.submitted[int(order_id.removeprefix("o")) - 1]
        price = self.prices[plan.symbol][1]
        self.qty[plan.symbol] = self.qty.get(plan.symbol, 0.0) + plan.qty
        self.cash -= plan.qty * price
        self.orders[order_id] = OrderState(order_id, "filled", plan.qty, price, T0 + timedelta(minutes=7))


@pytest.mark.parametrize(
    "status", ["pending_review", "awaiting_compliance"], ids=["pending-review", "unknown"]
)
def test_an_order_in_a_state_that_is_not_final_is_cancelled_held_and_its_fill_logged(
    tmp_path: Path, status: str
) -> None:
    """An order under review (or in a status Alpaca adds later) may still fill: the next cycle cancels
    it and holds AAPL while the cancel is pending, sends no second buy, and logs the fill once the
    order is done. (Taken for done, it was dropped: three cycles sent three 100-share buys.)"""
    broker = _UnderReview(100_000.0, PRICES, status)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")})
    state = tmp_path / "s.json"
    loop = LiveLoop(broker, policy, ["AAPL"], state, tmp_path / "store", reset=True)
    loop.cancel_confirm_s = 0.0
    first = loop.cycle(T0)  # a 100-share market buy, waiting
    second = loop.cycle(T0 + timedelta(minutes=5))
    assert [p.qty for p in broker.submitted] == [100.0] and second.plans == []
    assert broker.cancelled == ["o1"] and [p["order_id"] for p in _pending(state)] == ["o1"]
    broker.clear("o1")  # the wait ends in a fill: the cancel came too late
    third = loop.cycle(T0 + timedelta(minutes=10))
    assert third.fills_logged == 1 and third.plans == [] and len(broker.submitted) == 1
    rows = read_frame(tmp_path / "store", "experience")
    fill = rows[rows["decision_id"] == f"{first.cycle_id}:AAPL:fill"].iloc[0]
    assert (fill["filled_qty"], fill["fill_price"], fill["filled"]) == (100.0, 100.01, True)
    assert _pending(state) == []


def test_only_alpacas_final_order_states_count_as_done() -> None:
    from alpaca.trading.enums import OrderStatus

    done = {s.value for s in OrderStatus if not order_is_open(s.value)}
    assert done == {"filled", "canceled", "expired", "rejected", "replaced"}
    assert order_is_open("a_status_alpaca_adds_later") and order_is_open("")


def test_an_alpaca_order_in_pending_review_gets_no_second_order(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    """Through alpaca-py: a resting order Alpaca moves to ``pending_review`` (which refuses the cancel)
    is kept and holds MSFT."""
    trading, data = fakes
    state = tmp_path / "s.json"
    loop = LiveLoop(_broker(trading, data), ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state, reset=True)
    loop.cancel_confirm_s = 0.0
    first = loop.cycle(T0)
    (order_id,) = first.submitted.values()
    trading.set_order_status(order_id, "pending_review")
    second = loop.cycle(T0 + timedelta(days=1))
    assert _posts(trading) == 1 and second.plans == []
    assert [p["order_id"] for p in _pending(state)] == [order_id]


# ------------------------------------------------------------------ an order the broker cannot read


class _Unreadable(FakeBroker):
    """Order look-ups and cancels by id fail (not a 404) for the ids in ``broken``; ``tries`` records
    every call on an order id."""

    def __init__(self, cash: float, prices: dict[str, tuple[float, float]]):
        super().__init__(cash, prices)
        self.broken: set[str] = set()
        self.tries: list[str] = []

    def order(self, order_id: str) -> OrderState:
        self.tries.append(f"order {order_id}")
        if order_id in self.broken:
            raise RuntimeError(f"alpaca order {order_id} failed: HTTP 503 Service Unavailable")
        return super().order(order_id)

    def cancel(self, order_id: str) -> None:
        self.tries.append(f"cancel {order_id}")
        if order_id in self.broken:
            raise RuntimeError(f"alpaca cancel {order_id} failed: HTTP 503 Service Unavailable")
        super().cancel(order_id)


def _unreadable_loop(tmp_path: Path, broker: FakeBroker, limit: int = 3) -> LiveLoop:
    config = LiveConfig(max_unreadable_order_cycles=limit)
    loop = LiveLoop(
        broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", config=config, reset=True
    )
    loop.cancel_confirm_s = 0.0  # one look, no wait
    return loop


def test_an_order_unreadable_for_the_limit_of_cycles_stops_the_loop_naming_it(tmp_path: Path) -> None:
    """A resting MSFT order (``o1``) the broker cannot read holds MSFT on every cycle; on the third
    unreadable cycle in a row (the limit) the loop stops, naming the order's client id, its symbol and
    the last error, before it cancels, submits or saves anything else; the state keeps the order."""
    broker = _Unreadable(100_000.0, PRICES)
    loop = _unreadable_loop(tmp_path, broker)
    first = loop.cycle(T0)  # a 12-share buy limit rests at the bid
    broker.broken = {"o1"}
    loop.cycle(T0 + timedelta(hours=1))
    loop.cycle(T0 + timedelta(hours=2))
    tries = len(broker.tries)
    client_id = f"rt-{first.cycle_id}-MSFT"
    with pytest.raises(
        UnreadableOrderError,
        match=rf"order '{client_id}' \(MSFT, broker id o1\) unreadable for 3 cycles, last error: .*HTTP 503",
    ):
        loop.cycle(T0 + timedelta(hours=3))
    assert broker.tries[tries:] == ["order o1"]  # the stopping cycle read it; no cancel, no order
    assert len(broker.submitted) == 1
    assert [(p["client_order_id"], p["unreadable_cycles"]) for p in _pending(tmp_path / "s.json")] == [
        (client_id, 3)
    ]


def test_a_restart_after_the_stop_still_knows_the_unreadable_order(tmp_path: Path) -> None:
    broker = _Unreadable(100_000.0, PRICES)
    with _unreadable_loop(tmp_path, broker, limit=1) as loop:
        loop.cycle(T0)
        broker.broken = {"o1"}
        with pytest.raises(UnreadableOrderError):
            loop.cycle(T0 + timedelta(hours=1))
    with _unreadable_loop(tmp_path, broker, limit=1) as restarted:
        with pytest.raises(UnreadableOrderError, match="unreadable for 2 cycles"):
            restarted.cycle(T0 + timedelta(hours=2))
        broker.broken = set()  # readable again: still resting, so the new decision cancels it first
        restarted.cycle(T0 + timedelta(hours=3))
    assert broker.cancelled == ["o1"] and [p.symbol for p in broker.submitted] == ["MSFT", "MSFT"]


def test_a_planned_order_the_broker_cannot_look_up_stops_the_loop_too(tmp_path: Path) -> None:
    """The MSFT order reached the broker but its answer was lost and every look-up by client id
    fails: it stays ``planned`` (MSFT held), the failed look-ups are counted per cycle (not at start),
    and on the third the loop stops naming it, with no second MSFT order ever sent."""
    broker = _SubmitLost(100_000.0, PRICES)
    with _unreadable_loop(tmp_path, broker) as loop:
        first = loop.cycle(T0)
        client_id = f"rt-{first.cycle_id}-MSFT"
        for hour in (1, 2):
            loop.cycle(T0 + timedelta(hours=hour))
        assert [(p["status"], p["unreadable_cycles"]) for p in _pending(tmp_path / "s.json")] == [
            ("planned", 2)
        ]
        with pytest.raises(
            UnreadableOrderError,
            match=rf"order '{client_id}' \(MSFT, broker id unknown: submitted, its outcome never confirmed\) "
            r"unreadable for 3 cycles, last error: alpaca order look-up failed: HTTP 500",
        ):
            loop.cycle(T0 + timedelta(hours=3))
    assert len(broker.submitted) == 1


def _unreadable_counts(state_file: Path) -> dict[str, int | None]:
    return {p["order_id"]: p.get("unreadable_cycles") for p in _pending(state_file)}


def test_a_successful_read_resets_the_unreadable_count(tmp_path: Path) -> None:
    broker = _Unreadable(100_000.0, PRICES)
    loop = _unreadable_loop(tmp_path, broker)
    loop.cycle(T0)
    broker.broken = {"o1"}
    for hour in (1, 2):
        loop.cycle(T0 + timedelta(hours=hour))
    assert _unreadable_counts(tmp_path / "s.json")["o1"] == 2
    broker.broken = set()
    loop.cycle(T0 + timedelta(hours=3))  # o1 read (and cancelled); a new MSFT order o2 goes out
    assert _unreadable_counts(tmp_path / "s.json")["o1"] is None
    broker.broken = {"o1"}
    for hour in (4, 5):  # two more: 2 in a row, not 4, so under the limit of 3
        loop.cycle(T0 + timedelta(hours=hour))
    assert _unreadable_counts(tmp_path / "s.json")["o1"] == 2


def test_raytrade_live_ends_on_an_unreadable_order_instead_of_cycling_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``raytrade live`` keeps cycling through a failed cycle (a broker hiccup), but not through the
    stop: the error reaches the command, which exits with status 2 and the message."""
    from raytrade.cluster import live as live_cli

    class _Stopping:
        def cycle(self) -> None:
            raise UnreadableOrderError("live loop stopped: order 'rt-x' (MSFT, broker id o1) unreadable")

    def _no_sleep(seconds: float) -> None:
        raise AssertionError(f"the loop cycled on ({seconds} s sleep) after the stop")

    monkeypatch.setattr(live_cli.time, "sleep", _no_sleep)
    with pytest.raises(UnreadableOrderError):
        live_cli._run(_Stopping(), once=False, every_minutes=1.0)  # type: ignore[arg-type]


def _report(held: str | None = None, reason: str | None = None) -> Any:
    """A cycle's report: held without the service for ``held``, else decided (a hold of the
    service's own for ``reason``)."""
    answer = SimpleNamespace(fallback=reason is not None, model="alpha@3", reason=reason)
    return SimpleNamespace(
        cycle_id="c",
        answer=answer,
        plans=[],
        submitted={},
        rejected={},
        uncertain={},
        fills_logged=0,
        held_without_service=held,
    )


def _cycles_until_stop(
    outcomes: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], limit: int = 3
) -> tuple[int, str]:
    """Run ``raytrade live``'s runner over ``outcomes`` (a report, or an exception to raise); how
    many cycles it ran before it stopped, and the stop's message. Every completed cycle's report line
    was printed, the last before the stop included."""
    from raytrade.cluster import live as live_cli
    from raytrade.serve.live import FailedCyclesError

    ran = iter(outcomes)
    count = 0

    class _Loop(RunnerLoop):
        def cycle(self) -> Any:
            nonlocal count
            count += 1
            outcome = next(ran)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

    monkeypatch.setattr(live_cli.time, "sleep", lambda seconds: None)
    with pytest.raises(FailedCyclesError) as err:
        live_cli._run(_Loop(), once=False, every_minutes=1.0, max_failed_cycles=limit)  # type: ignore[arg-type]
    completed = [o for o in outcomes[:count] if not isinstance(o, BaseException)]
    assert capsys.readouterr().out.count("[c] ") == len(completed)
    return count, str(err.value)


def test_raytrade_live_stops_after_the_limit_of_failed_cycles_in_a_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker that fails every cycle was retried for ever: a line on stderr each cycle, nothing
    managed. The count is of failures in a row: a cycle that completes resets it. The message is one
    line whatever the error's (an HTML page of a 500, say), the last error at its end."""
    down = ConnectionError("broker down\n<html>\n502</html>")
    ran, message = _cycles_until_stop(
        [down, down, _report(), down, down, down, _report()], monkeypatch, capsys
    )
    assert ran == 6  # the completed third cycle reset the count
    assert "\n" not in message
    assert message.startswith(
        "live loop stopped: 3 cycles in a row failed or held without the policy service"
    )
    assert message.endswith("the last failed: ConnectionError: broker down <html> 502</html>")


def test_a_policy_service_that_stays_down_stops_the_loop_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable service raises nothing: the loop holds. Each such cycle completed and reset the
    count, so the loop held for ever, kill-switch unwinds included. The service's own holds (stale
    features) are its decisions and do not count."""
    outage, no_rule = _report("policy service unavailable: refused"), _report("the rule is unknown")
    stale = _report(reason="features are from the bar of 2026-11-20: holding")
    ran, message = _cycles_until_stop([outage, stale, no_rule, outage, no_rule, stale], monkeypatch, capsys)
    assert ran == 5  # the service's own hold reset the count; three in a row then stopped it
    assert message.endswith("the last held without the service: the rule is unknown")


def test_a_cycle_says_when_it_held_without_the_service(tmp_path: Path) -> None:
    """What the runner counts: the client's outage hold, the loop's own for an unreadable rule, and a
    hot swap to a model that decides none of the loop's symbols (nothing asked, every cycle: it held
    for ever under the model's name). A decided cycle says None."""
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")})
    with LiveLoop(FakeBroker(100_000.0, PRICES), policy, ["AAPL"], tmp_path / "s.json", reset=True) as loop:
        assert loop.cycle(T0).held_without_service is None
        policy.fallback = True  # serve.client's hold: model "unavailable"
        assert loop.cycle(T0 + timedelta(days=1)).held_without_service == "policy service unavailable: test"
        policy.fallback, policy.model_error = (
            False,
            ServiceError("policy service unreachable: ConnectError", 0),
        )
        held = loop.cycle(T0 + timedelta(days=2)).held_without_service
        assert held is not None and "the served kill-switch rule is unknown" in held
        policy.model_error, policy.universe = None, ["NVDA"]  # a hot swap to another universe
        report = loop.cycle(T0 + timedelta(days=3))
        assert report.held_without_service == "alpha@2 decides none of the loop's symbols"
        assert report.answer.model == "alpha@2" and report.plans == []


def test_a_loop_against_a_closed_port_stops_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the real client and nothing listening on its port (no Ray, no network: loopback)."""
    from pydantic import SecretStr

    from raytrade.cluster import live as live_cli
    from raytrade.serve.client import ClientConfig, PolicyClient
    from raytrade.serve.live import FailedCyclesError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    broker = FakeBroker(100_000.0, PRICES)
    client = PolicyClient(ClientConfig(base_url=f"http://127.0.0.1:{port}"), SecretStr("t" * 40))
    monkeypatch.setattr(live_cli.time, "sleep", lambda seconds: None)
    stopped = pytest.raises(FailedCyclesError, match="3 cycles in a row failed or held without the policy")
    with LiveLoop(broker, client, ["AAPL"], tmp_path / "s.json", None, reset=True) as loop, stopped:
        live_cli._run(loop, once=False, every_minutes=1.0, max_failed_cycles=3)
    assert broker.submitted == []


def _held_loop(tmp_path: Path, policy: ScriptedPolicy) -> LiveLoop:
    return LiveLoop(FakeBroker(100_000.0, PRICES), policy, ["AAPL"], tmp_path / "s.json", reset=True)


def test_the_failed_cycle_count_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor restarting the stopped loop started the count from 0: with the service down the
    loop held 3 more cycles on every restart, for ever, kill-switch unwinds included. The count is in
    the state file: the restarted loop stops at its first held cycle, and a decided one resets it."""
    from raytrade.cluster import live as live_cli
    from raytrade.serve.live import FailedCyclesError

    monkeypatch.setattr(live_cli.time, "sleep", lambda seconds: None)
    down = ScriptedPolicy({"AAPL": (0.1, "aggressive")}, fallback=True)  # serve.client's outage hold
    with _held_loop(tmp_path, down) as loop, pytest.raises(FailedCyclesError, match="^live loop stopped: 3 "):
        live_cli._run(loop, once=False, every_minutes=1.0, max_failed_cycles=3)
    assert LiveState.load(tmp_path / "s.json").failed_cycles == 3
    again = pytest.raises(FailedCyclesError, match="^live loop stopped: 4 cycles in a row")
    with _held_loop(tmp_path, down) as restarted, again:
        live_cli._run(restarted, once=False, every_minutes=1.0, max_failed_cycles=3)
    up = ScriptedPolicy({"AAPL": (0.1, "aggressive")})
    with _held_loop(tmp_path, up) as mended:
        live_cli._run(mended, once=True, every_minutes=1.0, max_failed_cycles=3)
    assert LiveState.load(tmp_path / "s.json").failed_cycles == 0


def test_once_runs_count_on_and_stop_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--once`` from a timer: a held run exits 0 and says how many in a row; the run that reaches the
    limit stops (exit status 2). A run whose cycle raises counts too, and still raises its error."""
    from raytrade.cluster import live as live_cli
    from raytrade.serve.live import FailedCyclesError

    down = ScriptedPolicy({"AAPL": (0.1, "aggressive")}, fallback=True)
    for _ in range(2):
        with _held_loop(tmp_path, down) as loop:
            live_cli._run(loop, once=True, every_minutes=1.0, max_failed_cycles=4)
    assert capsys.readouterr().err.count("in a row; the loop stops at 4); the next run counts on") == 2

    class _Broken(FakeBroker):
        def account(self) -> Any:
            raise ConnectionError("broker down")

    with LiveLoop(_Broken(100_000.0, PRICES), down, ["AAPL"], tmp_path / "s.json") as broken:
        broken.start = lambda: None  # type: ignore[method-assign]  # the start would ask the account too
        with pytest.raises(ConnectionError, match="broker down"):
            live_cli._run(broken, once=True, every_minutes=1.0, max_failed_cycles=4)
    assert LiveState.load(tmp_path / "s.json").failed_cycles == 3
    with _held_loop(tmp_path, down) as loop, pytest.raises(FailedCyclesError, match="^live loop stopped: 4 "):
        live_cli._run(loop, once=True, every_minutes=1.0, max_failed_cycles=4)


# ------------------------------------------------------------------ the order record comes first


def test_an_unwritable_experience_row_never_costs_the_order_record(tmp_path: Path) -> None:
    store = tmp_path / "store"
    broker = FakeBroker(100_000.0, PRICES)
    loop = LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", store, reset=True)
    with ReplayWriter(store) as busy:  # another writer holds the experience table
        busy.append_experience(_empty_experience())
        report = loop.cycle(T0)
    assert [p["order_id"] for p in _pending(tmp_path / "s.json")] == list(report.submitted.values()) == ["o1"]
    (quarantined,) = (store / "_quarantine" / "experience").glob("*.jsonl")
    assert (
        json.loads(quarantined.read_text().splitlines()[0])["record"]["decision_id"]
        == f"{report.cycle_id}:MSFT"
    )


def test_the_state_is_saved_before_the_log_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no space left on device")

    monkeypatch.setattr(ReplayWriter, "append_experience", disk_full)
    broker = FakeBroker(100_000.0, PRICES)
    loop = LiveLoop(
        broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", tmp_path / "store", reset=True
    )
    with pytest.raises(OSError, match="no space"):
        loop.cycle(T0)
    assert [(p["order_id"], p["status"]) for p in _pending(tmp_path / "s.json")] == [("o1", "submitted")]


def test_a_fill_whose_log_failed_is_logged_by_the_next_cycle(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker, store = FakeBroker(100_000.0, PRICES), tmp_path / "store"
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")})
    loop = LiveLoop(broker, policy, ["AAPL"], tmp_path / "s.json", store, reset=True)
    first = loop.cycle(T0)  # a market order, filled at once
    append = ReplayWriter.append_experience

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no space left on device")

    monkeypatch.setattr(ReplayWriter, "append_experience", disk_full)
    with pytest.raises(OSError, match="no space"):
        loop.cycle(T0 + timedelta(days=1))  # reads the fill, cannot log it
    monkeypatch.setattr(ReplayWriter, "append_experience", append)
    assert loop.cycle(T0 + timedelta(days=2)).fills_logged == 1
    assert _pending(tmp_path / "s.json") == []
    rows = read_frame(store, "experience")
    assert list(rows["decision_id"]).count(f"{first.cycle_id}:AAPL:fill") == 1


THREE = {"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.05, "aggressive")}


def _crash_in_log(monkeypatch: pytest.MonkeyPatch, write_first: bool) -> None:
    """The process dies in the cycle's first ``_log``: before the write, or after it (before the state
    clears the rows it wrote)."""
    log = LiveLoop._log

    def crash(self: LiveLoop, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if write_first:
            log(self, rows)
        raise _Crash("killed between the state save and the experience write")

    monkeypatch.setattr(LiveLoop, "_log", crash)


@pytest.mark.parametrize("write_first", [False, True], ids=["before-the-write", "after-the-write"])
def test_a_crash_around_the_experience_write_logs_each_decision_row_once_after_a_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_first: bool
) -> None:
    broker, store, state = FakeBroker(100_000.0, PRICES), tmp_path / "store", tmp_path / "s.json"
    symbols, policy = list(THREE), ScriptedPolicy(THREE)
    with monkeypatch.context() as m:
        _crash_in_log(m, write_first)
        loop = LiveLoop(broker, policy, symbols, state, store, reset=True)
        with pytest.raises(_Crash):
            loop.cycle(T0)
        loop.close()
    cycle_id = T0.strftime("%Y%m%dT%H%M%S%fZ")
    decisions = [f"{cycle_id}:{s}" for s in symbols]
    saved = json.loads(state.read_text())["unlogged_rows"]
    assert sorted(r["decision_id"] for r in saved) == sorted(decisions)  # saved before the log
    with LiveLoop(broker, policy, symbols, state, store) as restarted:
        assert restarted.cycle(T0 + timedelta(days=1)).fills_logged == 2
    ids = list(read_frame(store, "experience")["decision_id"])
    assert [ids.count(d) for d in decisions] == [1, 1, 1]
    assert ids.count(f"{cycle_id}:AAPL:fill") == ids.count(f"{cycle_id}:BTCUSD:fill") == 1
    aapl = read_frame(store, "experience").set_index("decision_id").loc[f"{cycle_id}:AAPL"]
    assert (aapl["order_id"], bool(aapl["submitted"]), aapl["gate_mode"]) == ("o1", True, "aggressive")
    assert not (store / "_quarantine").exists()  # a row already stored is skipped, not refused
    assert json.loads(state.read_text())["unlogged_rows"] == []


def test_rows_a_crash_saved_survive_a_run_without_a_store_and_reach_the_next_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A run without ``--store`` writes nothing: it must not clear the rows an earlier crash saved."""
    broker, store, state = FakeBroker(100_000.0, PRICES), tmp_path / "store", tmp_path / "s.json"
    symbols, policy = list(THREE), ScriptedPolicy(THREE)
    with monkeypatch.context() as m:
        _crash_in_log(m, write_first=False)
        loop = LiveLoop(broker, policy, symbols, state, store, reset=True)
        with pytest.raises(_Crash):
            loop.cycle(T0)
        loop.close()
    with LiveLoop(broker, policy, symbols, state, None) as storeless:
        storeless.cycle(T0 + timedelta(days=1))
    assert len(json.loads(state.read_text())["unlogged_rows"]) == 3  # was: cleared, written nowhere
    with LiveLoop(broker, policy, symbols, state, store) as again:
        again.cycle(T0 + timedelta(days=2))
    ids = list(read_frame(store, "experience")["decision_id"])
    cycle_id = T0.strftime("%Y%m%dT%H%M%S%fZ")
    assert [ids.count(f"{cycle_id}:{s}") for s in symbols] == [1, 1, 1]
    assert json.loads(state.read_text())["unlogged_rows"] == []


class _DiesOnSecondSubmit(FakeBroker):
    """The first order reaches the broker; the process dies before the second one is sent."""

    def submit(self, plan: OrderPlan) -> str:
        if self.submitted:
            raise _Crash("killed during the submits")
        return super().submit(plan)


def _stored(store: Path) -> pd.DataFrame:
    return read_frame(store, "experience").set_index("decision_id")


def test_a_crash_during_the_submits_keeps_the_cycles_decision_rows_and_settles_them_from_the_broker(
    tmp_path: Path,
) -> None:
    """Each decision row is saved (provisional) before the first submit: the restarted loop logs them
    once, each with what the broker says became of its order, and sends neither order again."""
    from raytrade.serve.decision_rows import ADOPTED, NEVER_RECEIVED

    broker, store, state = _DiesOnSecondSubmit(100_000.0, PRICES), tmp_path / "store", tmp_path / "s.json"
    symbols, policy = list(THREE), ScriptedPolicy(THREE)
    loop = LiveLoop(broker, policy, symbols, state, store, reset=True)
    with pytest.raises(_Crash):
        loop.cycle(T0)
    loop.close()
    cycle_id = T0.strftime("%Y%m%dT%H%M%S%fZ")
    sent = broker.submitted[0].decision_id  # one of the two orders went out
    lost = next(f"{cycle_id}:{s}" for s in ("AAPL", "BTCUSD") if f"{cycle_id}:{s}" != sent)
    saved = {r["decision_id"]: r for r in json.loads(state.read_text())["unlogged_rows"]}
    assert set(saved) == {f"{cycle_id}:{s}" for s in symbols}  # was: none (rows built after the submits)
    assert saved[sent]["provisional"] and saved[lost]["provisional"]
    assert "provisional" not in saved[f"{cycle_id}:MSFT"]  # no order: nothing to settle

    broker.__class__ = FakeBroker  # the restarted process submits normally
    with LiveLoop(broker, policy, symbols, state, store) as restarted:
        restarted.cycle(T0 + timedelta(days=1))
    assert [p.decision_id for p in broker.submitted].count(sent) == 1
    assert lost not in [p.decision_id for p in broker.submitted]  # never resubmitted under its id
    rows = _stored(store)
    assert list(rows.index).count(sent) == list(rows.index).count(lost) == 1
    assert (bool(rows.loc[sent, "submitted"]), rows.loc[sent, "order_id"]) == (True, "o1")
    assert json.loads(rows.loc[sent, "state"])["restart_note"] == ADOPTED
    assert not rows.loc[lost, "submitted"] and pd.isna(rows.loc[lost, "order_id"])
    assert json.loads(rows.loc[lost, "state"])["restart_note"] == NEVER_RECEIVED
    assert f"{sent}:fill" in rows.index  # the fill of the order that went out points at its decision
    assert json.loads(state.read_text())["unlogged_rows"] == []
    assert not (store / "_quarantine").exists()


class _UnreadableSubmit(FakeBroker):
    """BTCUSD's order reaches the broker, its answer is lost, and the look-up by client id fails
    until ``readable``."""

    readable = False

    def submit(self, plan: OrderPlan) -> str:
        order_id = super().submit(plan)
        if plan.symbol == "BTCUSD":
            raise RuntimeError("read timed out")
        return order_id

    def order_by_client_id(self, client_order_id: str) -> OrderState | None:
        if not self.readable:
            raise RuntimeError("connection reset")
        return super().order_by_client_id(client_order_id)


def test_a_decision_whose_submit_outcome_is_unknown_is_logged_once_the_broker_says(tmp_path: Path) -> None:
    """A submit whose error and look-up both fail leaves its order ``planned``: its decision row is
    not logged as "not submitted" (the order may rest at the broker); it waits, provisional, and is
    logged once the look-up says what happened."""
    broker, store, state = _UnreadableSubmit(100_000.0, PRICES), tmp_path / "store", tmp_path / "s.json"
    symbols, policy = list(THREE), ScriptedPolicy(THREE)
    cycle_id = T0.strftime("%Y%m%dT%H%M%S%fZ")
    btc = f"{cycle_id}:BTCUSD"
    with LiveLoop(broker, policy, symbols, state, store, reset=True) as loop:
        report = loop.cycle(T0)
        assert btc in report.uncertain
        assert btc not in set(_stored(store).index)  # was: logged at once, submitted False, no order id
        (waiting,) = json.loads(state.read_text())["unlogged_rows"]
        assert (waiting["decision_id"], waiting["provisional"]) == (btc, True)
        loop.cycle(T0 + timedelta(hours=1))  # still unreadable: BTCUSD held, its row still waits
    assert btc not in set(_stored(store).index)
    assert [r["decision_id"] for r in json.loads(state.read_text())["unlogged_rows"]] == [btc]
    broker.readable = True
    with LiveLoop(broker, policy, symbols, state, store) as later:
        later.cycle(T0 + timedelta(days=1))
    row = _stored(store).loc[btc]
    assert (bool(row["submitted"]), row["order_id"]) == (True, broker.client_ids[_client_id(broker, btc)])
    assert list(_stored(store).index).count(btc) == 1
    assert json.loads(state.read_text())["unlogged_rows"] == []


def _client_id(broker: FakeBroker, decision_id: str) -> str:
    return next(p.client_order_id for p in broker.submitted if p.decision_id == decision_id)


def test_a_store_that_keeps_failing_cannot_grow_the_state_file_without_bound(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import raytrade.serve.decision_rows as decision_rows

    monkeypatch.setattr(decision_rows, "MAX_UNLOGGED_ROWS", 7)
    broken = tmp_path / "store_is_a_file"
    broken.write_text("not a directory")  # every write (and its quarantine) raises
    broker, state, policy = FakeBroker(100_000.0, PRICES), tmp_path / "s.json", ScriptedPolicy(THREE)
    counts = []
    with LiveLoop(broker, policy, list(THREE), state, broken, reset=True) as loop:
        for hour in range(5):
            with pytest.raises(OSError):
                loop.cycle(T0 + timedelta(hours=hour))
            counts.append(len(json.loads(state.read_text())["unlogged_rows"]))
    assert counts == [3, 6, 7, 7, 7]  # 3 rows a cycle, the oldest dropped past the bound
    assert "the oldest 2 rows are dropped from the state file (7 kept)" in caplog.text


def test_the_bound_on_unlogged_rows_never_drops_a_provisional_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provisional row stands for an order whose outcome is still to be recorded: the bound drops
    the oldest settled rows instead, however old the provisional one is."""
    import raytrade.serve.decision_rows as decision_rows

    monkeypatch.setattr(decision_rows, "MAX_UNLOGGED_ROWS", 3)
    rows = [{"decision_id": f"d{i}", "provisional": i == 0} for i in range(5)]
    kept = decision_rows.bounded_rows(rows, "store")
    assert [r["decision_id"] for r in kept] == ["d0", "d3", "d4"]
    with pytest.raises(ValueError, match="d0.*provisional"):
        decision_rows.row_from_state({**rows[0], "ts": T0.isoformat()})


def test_a_state_file_without_unlogged_rows_loads_and_trades(tmp_path: Path) -> None:
    """A state file of the version before ``unlogged_rows`` loads with none."""
    (tmp_path / "s.json").write_text(json.dumps({"account_id": "PA-TEST", "peak_equity": 1e5, "pending": []}))
    assert LiveState.load(tmp_path / "s.json").unlogged_rows == []
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy(PASSIVE_MSFT)
    with LiveLoop(broker, policy, ["MSFT"], tmp_path / "s.json", tmp_path / "store") as loop:
        report = loop.cycle(T0)
    assert list(report.submitted.values()) == ["o1"]
    assert json.loads((tmp_path / "s.json").read_text())["unlogged_rows"] == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ('{"d": 1}', r"\(unlogged_rows is a dict, not a list\)"),
        ('["c:AAPL"]', r"\(unlogged_rows\[0\] is a str, not a row\)"),
        ('[{"ts": "2026-11-24T14:30:00+00:00"}]', r"\(unlogged_rows\[0\].decision_id is missing, not text\)"),
        ('[{"decision_id": 7}]', r"\(unlogged_rows\[0\].decision_id is a int, not text\)"),
        ('[{"decision_id": "c:AAPL", "ts": "yesterday"}]', "'c:AAPL' has ts='yesterday', not an ISO time"),
        (
            '[{"decision_id": "c:AAPL", "ts": "2026-11-24T14:30:00+00:00", "provisional": "yes"}]',
            "'c:AAPL' has provisional='yes', not true or false",
        ),
    ],
)
def test_a_state_file_with_malformed_unlogged_rows_is_unreadable(
    tmp_path: Path, rows: str, message: str
) -> None:
    (tmp_path / "s.json").write_text(
        f'{{"account_id": "PA-TEST", "peak_equity": 1e5, "pending": [], "unlogged_rows": {rows}}}'
    )
    with pytest.raises(ValueError, match=message):
        LiveState.load(tmp_path / "s.json")


def _empty_experience() -> Any:
    import pandas as pd

    from raytrade.replay.schema import EXPERIENCE_SCHEMA

    return pd.DataFrame({name: [] for name in EXPERIENCE_SCHEMA.names})


# ------------------------------------------------------------------ fills


def test_the_fills_of_an_order_being_cancelled_are_logged_when_it_is_done(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    loop = LiveLoop(
        broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", tmp_path / "store", reset=True
    )
    first = loop.cycle(T0)
    order_id = first.submitted[f"{first.cycle_id}:MSFT"]
    broker.orders[order_id] = OrderState(order_id, "pending_cancel", 3.0, 399.9, None)
    assert loop.cycle(T0 + timedelta(days=1)).fills_logged == 0  # it can still fill
    broker.orders[order_id] = OrderState(order_id, "canceled", 5.0, 399.9, None)
    assert loop.cycle(T0 + timedelta(days=2)).fills_logged == 1
    rows = read_frame(tmp_path / "store", "experience")
    (fill,) = rows[rows["decision_id"] == f"{first.cycle_id}:MSFT:fill"].itertuples()
    assert fill.filled_qty == 5.0 and fill.partial


def test_a_fill_already_in_the_store_is_not_logged_twice(tmp_path: Path) -> None:
    # A loop that logged the fill and died before saving its state finds the order pending again.
    broker = FakeBroker(100_000.0, PRICES)
    state = tmp_path / "s.json"
    loop = LiveLoop(
        broker, ScriptedPolicy({"AAPL": (0.1, "aggressive")}), ["AAPL"], state, tmp_path / "store", reset=True
    )
    first = loop.cycle(T0)
    shutil.copy(state, tmp_path / "before.json")
    assert loop.cycle(T0 + timedelta(days=1)).fills_logged == 1
    shutil.copy(tmp_path / "before.json", state)
    assert loop.cycle(T0 + timedelta(days=2)).fills_logged == 0
    rows = read_frame(tmp_path / "store", "experience")
    assert list(rows["decision_id"]).count(f"{first.cycle_id}:AAPL:fill") == 1


# ------------------------------------------------------------------ one loop, one account, remembered


def test_a_second_loop_on_the_same_state_file_refuses_to_start(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    first = LiveLoop(broker, ScriptedPolicy({}), ["AAPL"], tmp_path / "s.json", reset=True)
    with pytest.raises(LiveStateError, match="in use by another live loop"):
        LiveLoop(broker, ScriptedPolicy({}), ["AAPL"], tmp_path / "s.json", reset=True)
    first.close()
    LiveLoop(broker, ScriptedPolicy({}), ["AAPL"], tmp_path / "s.json", reset=True).close()


def test_a_state_file_behind_a_link_is_saved_and_locked_where_it_lives(tmp_path: Path) -> None:
    """The lock sat beside the path given, and a save renamed over the path: a loop on ``link.json ->
    real/s.json`` replaced the link with a plain file on its first save (the volume the link led to
    never written) and locked ``link.json.lock``, so a second loop on the file (another account-lock
    folder) shared the state. Now both go where the file lives."""
    broker = FakeBroker(100_000.0, PRICES)
    real, link = tmp_path / "real" / "s.json", tmp_path / "link.json"
    real.parent.mkdir()
    link.symlink_to(real)
    config = LiveConfig(account_lock_dir=tmp_path / "locks-a")
    with LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], link, config=config, reset=True) as first:
        first.cycle(T0)
        assert link.is_symlink() and LiveState.load(real).pending  # saved through the link, to the file
        other = LiveConfig(account_lock_dir=tmp_path / "locks-b")
        with pytest.raises(LiveStateError, match="in use by another live loop"):
            LiveLoop(broker, ScriptedPolicy({}), ["MSFT"], real, config=other, reset=True)


def test_a_second_loop_on_the_same_account_refuses_to_start_whatever_its_state_file(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)  # one account, PA-TEST
    policy = ScriptedPolicy(PASSIVE_MSFT)  # a resting limit the second loop would cancel
    first = LiveLoop(broker, policy, ["MSFT"], tmp_path / "a" / "s.json", reset=True)
    first.cycle(T0)
    second = LiveLoop(broker, policy, ["MSFT"], tmp_path / "b" / "s.json", reset=True)
    held_by = re.escape(f"(pid {os.getpid()}, state file {str(tmp_path / 'a' / 's.json')!r}")
    with pytest.raises(LiveStateError, match=rf"^account 'PA-TEST' is traded by another live loop {held_by}"):
        second.cycle(T0 + timedelta(seconds=1))
    assert len(broker.submitted) == 1 and broker.cancelled == []
    assert not (tmp_path / "b" / "s.json").exists()
    second.close()
    first.close()  # the account is free again
    with LiveLoop(broker, policy, ["MSFT"], tmp_path / "b" / "s.json", reset=True) as third:
        third.start()


def test_the_account_lock_lives_in_the_configured_folder(tmp_path: Path) -> None:
    config = LiveConfig(account_lock_dir=tmp_path / "locks")
    with LiveLoop(
        FakeBroker(100_000.0, PRICES),
        ScriptedPolicy({}),
        ["AAPL"],
        tmp_path / "s.json",
        config=config,
        reset=True,
    ) as loop:
        loop.start()
        holder = json.loads((tmp_path / "locks" / "PA-TEST.lock").read_text())
        assert holder == {"pid": os.getpid(), "state_file": str(tmp_path / "s.json")}
        other = LiveLoop(
            FakeBroker(100_000.0, PRICES),
            ScriptedPolicy({}),
            ["AAPL"],
            tmp_path / "t.json",
            config=config,
            reset=True,
        )
        with pytest.raises(LiveStateError, match="account 'PA-TEST' is traded by another live loop"):
            other.start()
        other.close()


def test_a_missing_state_file_is_refused_without_reset(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    loop = LiveLoop(broker, ScriptedPolicy({"AAPL": (0.1, "aggressive")}), ["AAPL"], tmp_path / "s.json")
    with pytest.raises(LiveStateError, match="s.json' is missing.*--reset"):
        loop.cycle(T0)
    assert broker.submitted == [] and not (tmp_path / "s.json").exists()


def test_a_new_state_file_starts_from_the_accounts_high_water_mark(tmp_path: Path) -> None:
    # The account peaked at $125k and is at $100k: a loop started anew sees a 20 % drawdown, so the
    # kill switch stays armed across a lost state file.
    broker = FakeBroker(100_000.0, PRICES)
    broker.history_peak = 125_000.0
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "s.json", reset=True) as loop:
        loop.cycle(T0)
    assert json.loads((tmp_path / "s.json").read_text())["peak_equity"] == 125_000.0
    assert policy.requests[0].drawdown_pct == pytest.approx(-0.20)


def test_a_new_account_without_history_starts_its_peak_at_its_equity(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)  # history_peak None: no portfolio history yet
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "s.json", reset=True) as loop:
        loop.cycle(T0)
    assert json.loads((tmp_path / "s.json").read_text())["peak_equity"] == 100_000.0
    assert policy.requests[0].drawdown_pct == 0.0


def test_alpacas_portfolio_history_gives_the_peak_ignoring_padding(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca],
) -> None:
    trading, data = fakes
    broker = _broker(trading, data)
    assert broker.peak_equity(365) is None  # a new account: no history
    trading.equity_history = [0.0, 0.0, None, 95_000.0, 130_500.25, 110_000.0]
    assert broker.peak_equity(365) == 130_500.25
    assert "GET /v2/account/portfolio/history" in trading.paths()
    query = [r for r in trading.requests if r.path == "/v2/account/portfolio/history"][-1].query
    assert (query["period"], query["timeframe"]) == ("365D", "1D")


@pytest.mark.parametrize(
    "peak",
    ["NaN", "Infinity", "-Infinity", "1e999", "0", "-5.0", '"nan"', '"inf"', "true", "[1]"],
)
def test_a_state_file_whose_peak_is_not_a_finite_positive_number_is_refused(
    tmp_path: Path, peak: str
) -> None:
    """A NaN peak gave a drawdown of 0 on every cycle and was saved back: the kill switch disarmed for
    good. Such a file is refused like a malformed one, ``reset`` or not, and left as it was."""
    text = f'{{"account_id": "PA-TEST", "peak_equity": {peak}, "pending": []}}'
    (tmp_path / "s.json").write_text(text)
    broker = FakeBroker(100_000.0, PRICES)
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")})
    with (
        LiveLoop(broker, policy, ["AAPL"], tmp_path / "s.json", reset=True) as loop,
        pytest.raises(ValueError, match=r"s.json' is unreadable \(.*\); fix or move it"),
    ):
        loop.cycle(T0)
    assert broker.submitted == [] and policy.requests == []
    assert (tmp_path / "s.json").read_text() == text


def test_a_non_finite_number_anywhere_in_the_state_file_makes_it_unreadable(tmp_path: Path) -> None:
    pending = '[{"decision_id": "d", "client_order_id": "rt-d", "order_id": "o9", "mid": NaN}]'
    (tmp_path / "s.json").write_text(f'{{"account_id": "PA-TEST", "peak_equity": 1e5, "pending": {pending}}}')
    with pytest.raises(LiveStateError, match=r"\(pending\[0\]\.mid=NaN is not a finite number\)"):
        LiveState.load(tmp_path / "s.json")


def test_an_integer_beyond_a_float_anywhere_in_the_state_file_makes_it_unreadable(tmp_path: Path) -> None:
    """A 400-digit ``qty`` loaded and then overflowed every cycle's float arithmetic on it."""
    pending = f'[{{"decision_id": "d", "client_order_id": "rt-d", "order_id": "o9", "qty": {"9" * 400}}}]'
    (tmp_path / "s.json").write_text(f'{{"account_id": "PA-TEST", "peak_equity": 1e5, "pending": {pending}}}')
    with pytest.raises(ValueError, match="integer of 400 digits is beyond a float"):
        LiveState.load(tmp_path / "s.json")


def test_a_state_file_number_beyond_a_float_reads_as_unknown() -> None:
    assert _number(10**400) is None and _number("1e999") is None and _number(12) == 12.0


def test_a_non_finite_peak_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        LiveState(account_id="PA-TEST", peak_equity=math.nan).save(tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_a_broker_peak_that_is_not_a_positive_number_starts_no_state_file(tmp_path: Path) -> None:
    broker = FakeBroker(100_000.0, PRICES)
    broker.history_peak = math.nan
    with (
        LiveLoop(broker, ScriptedPolicy({}), ["AAPL"], tmp_path / "s.json", reset=True) as loop,
        pytest.raises(LiveStateError, match="peak equity over 365 days is nan"),
    ):
        loop.start()
    assert not (tmp_path / "s.json").exists()


def test_a_state_file_of_another_account_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(
        json.dumps({"account_id": "PA-OTHER", "peak_equity": 1.0, "pending": []})
    )
    loop = LiveLoop(FakeBroker(100_000.0, PRICES), ScriptedPolicy({}), ["AAPL"], tmp_path / "s.json")
    with pytest.raises(LiveStateError, match="belongs to account 'PA-OTHER', not 'PA-TEST'"):
        loop.start()


def test_the_default_state_file_is_absolute_and_per_account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_file("abc-123") == tmp_path / ".raytrade" / "live" / "abc-123.json"
    with pytest.raises(LiveStateError, match="account_id='../x'"):
        default_state_file("../x")


# ------------------------------------------------------------------ paper means paper


def test_a_live_trading_url_is_refused_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raytrade.cluster.cli import main

    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "serve-token-for-the-live-test-12345")
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    args = ["live", "--paper", "--once", "--trading-url", "https://api.alpaca.markets"]
    result = CliRunner().invoke(main, [*args, "--state-file", str(tmp_path / "s.json"), "--reset"])
    assert result.exit_code == 2
    assert result.output == (
        "error: trading_url='https://api.alpaca.markets' is not Alpaca's paper API "
        "(https://paper-api.alpaca.markets) nor loopback: live trading is not offered\n"
    )


def _live_env(monkeypatch: pytest.MonkeyPatch, data_url: str | None = None) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "serve-token-for-the-live-test-12345")
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    if data_url is not None:
        monkeypatch.setenv("ALPACA_DATA_URL", data_url)


def test_a_refused_serve_url_is_one_line_naming_the_field_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from raytrade.cluster.cli import main

    _live_env(monkeypatch)
    args = ["live", "--paper", "--once", "--serve-url", "http://example.com:8000", "--trading-url"]
    result = CliRunner().invoke(main, [*args, "http://127.0.0.1:9", "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 2
    assert result.output == (
        "error: ClientConfig.base_url: base_url='http://example.com:8000' must use https:// "
        "(plain http:// is allowed only for 127.0.0.1/localhost)\n"
    )


def test_raytrade_live_without_its_policy_service_is_one_line_and_orders_nothing(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The start-up ``GET /v1/model`` (no ``--symbols``) finds nothing listening: exit status 2, one
    line, and no order, state file or account lock."""
    from raytrade.cluster.cli import main

    trading, data = fakes
    _live_env(monkeypatch, data.url)
    with socket.socket() as closed:  # a loopback port nothing listens on once this is closed
        closed.bind(("127.0.0.1", 0))
        serve_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    args = ["live", "--paper", "--once", "--reset", "--serve-url", serve_url, "--trading-url", trading.url]
    args += ["--state-file", str(tmp_path / "s.json"), "--account-lock-dir", str(tmp_path / "locks")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("error: policy service unreachable: ") and "Connect" in line
    assert _posts(trading) == 0
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "locks").exists()


def test_a_refused_trading_url_never_shows_its_credentials() -> None:
    from raytrade.serve.alpaca_broker import check_paper_trading_url

    with pytest.raises(NotPaperError) as info:
        check_paper_trading_url("https://AKEY:s3cret-key@api.alpaca.markets/?key=s3cret-key")
    assert str(info.value).startswith("trading_url='https://api.alpaca.markets/' is not Alpaca's paper API")
    assert "s3cret-key" not in str(info.value)


def test_the_default_trading_url_is_alpacas_paper_host() -> None:
    """Without ``--trading-url`` alpaca-py's own paper URL (a ``BaseURL`` enum, whose ``str()`` is
    its member name) passes the check of the client's base URL."""
    access = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1]).alpaca_access()
    broker = AlpacaBroker(access)  # builds the client only: no request
    assert repr(broker) == "AlpacaBroker(paper=True)"


def test_a_client_that_would_use_alpacas_live_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from alpaca.common.enums import BaseURL

    class _LiveClient(TradingClient):  # alpaca-py choosing its live URL despite paper=True
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._base_url = BaseURL.TRADING_LIVE

    monkeypatch.setattr("alpaca.trading.client.TradingClient", _LiveClient)
    access = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1]).alpaca_access()
    with pytest.raises(NotPaperError, match=re.escape("the client's base URL='https://api.alpaca.markets'")):
        AlpacaBroker(access)


@pytest.mark.parametrize(
    "url",
    [
        "https://AKEY:s3cret-key@paper-api.alpaca.markets",
        "https://s3cret-key@paper-api.alpaca.markets/v2",
        "http://AKEY:s3cret-key@127.0.0.1:9",
    ],
    ids=["paper-user-password", "paper-user", "loopback-user-password"],
)
def test_a_trading_url_with_credentials_in_it_is_refused_without_showing_them(url: str) -> None:
    from raytrade.replay.credentials import UnsafeURLError

    access = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1]).alpaca_access()
    with pytest.raises(UnsafeURLError, match="must not carry credentials") as info:
        AlpacaBroker(access, trading_url=url)
    assert str(info.value).startswith(f"trading_url={shown_url(url)!r}")
    assert "s3cret-key" not in str(info.value) and "AKEY" not in str(info.value)


def test_an_account_that_is_not_paper_gets_no_order(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trading, data = fakes
    real = trading._account_json
    monkeypatch.setattr(trading, "_account_json", lambda: {**real(), "account_number": "512345678"})
    broker = _broker(trading, data)
    plan = OrderPlan(
        symbol="AAPL",
        side="buy",
        qty=1,
        order_type="market",
        time_in_force="day",
        client_order_id="rt-x-AAPL",
        decision_id="x:AAPL",
        gate_mode="aggressive",
        target_weight=0.1,
        mid=181.9,
    )
    with pytest.raises(NotPaperError, match="account_number='512345678' is not an Alpaca paper account"):
        broker.submit(plan)
    loop = LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], tmp_path / "s.json", reset=True)
    with pytest.raises(NotPaperError):
        loop.cycle(T0)
    assert _posts(trading) == 0


def test_a_hung_trading_server_times_out(tmp_path: Path) -> None:
    settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1])
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        broker = AlpacaBroker(settings.alpaca_access(), trading_url=url, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(SourceError, match="ReadTimeout"):
            broker.account()
        assert time.monotonic() - started < 5.0


def test_a_hung_market_data_server_times_out() -> None:
    from raytrade.replay.sources.alpaca import fetch_top_of_book

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        access = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1]).alpaca_access()
        started = time.monotonic()
        with pytest.raises(SourceError, match="ReadTimeout"):
            fetch_top_of_book(["AAPL"], access, url_override=url, timeout_s=0.3)
        assert time.monotonic() - started < 5.0


def test_raytrade_live_keeps_its_state_per_account_under_the_home_directory(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from raytrade.cluster.cli import main
    from tests.live_doubles import StubPolicyService

    trading, data = fakes
    token = "serve-token-for-the-live-test-12345"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("ALPACA_DATA_URL", data.url)
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", token)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    account_id = str(TradingClient(*TEST_KEYS, paper=True, url_override=trading.url).get_account().id)  # type: ignore[union-attr]
    state = tmp_path / ".raytrade" / "live" / f"{account_id}.json"
    stub = StubPolicyService(token)
    try:
        args = ["live", "--paper", "--once", "--serve-url", stub.url, "--trading-url", trading.url]
        refused = CliRunner().invoke(main, args)
        first = CliRunner().invoke(main, [*args, "--reset"])
        second = CliRunner().invoke(main, args)
    finally:
        stub.close()
    assert refused.exit_code == 2 and f"{str(state)!r} is missing" in refused.output
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert json.loads(state.read_text())["account_id"] == account_id


def test_raytrade_live_refuses_an_account_another_loop_trades(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--state-file`` names another file, ``--account-lock-dir`` the running loop's lock folder: the
    command exits 2 with one line naming the account and the running loop, and sends nothing."""
    from raytrade.cluster.cli import main
    from tests.live_doubles import StubPolicyService

    trading, data = fakes
    token = "serve-token-for-the-live-test-12345"
    for name, value in [
        ("ALPACA_API_KEY", TEST_KEYS[0]),
        ("ALPACA_SECRET_KEY", TEST_KEYS[1]),
        ("ALPACA_DATA_URL", data.url),
        ("RAYTRADE_SERVE_TOKEN", token),
    ]:
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    locks = tmp_path / "locks"
    running = LiveLoop(
        _broker(trading, data),
        ScriptedPolicy({}),
        ["AAPL"],
        tmp_path / "running.json",
        config=LiveConfig(account_lock_dir=locks),
        reset=True,
    )
    running.start()
    stub = StubPolicyService(token)
    try:
        args = ["live", "--paper", "--once", "--reset", "--symbols", "AAPL", "--serve-url", stub.url]
        args += ["--trading-url", trading.url, "--state-file", str(tmp_path / "other.json")]
        result = CliRunner().invoke(main, [*args, "--account-lock-dir", str(locks)])
    finally:
        stub.close()
        running.close()
    account_id = str(TradingClient(*TEST_KEYS, paper=True, url_override=trading.url).get_account().id)  # type: ignore[union-attr]
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"error: account {account_id!r} is traded by another live loop (pid {os.getpid()}, state file "
        f"{str(tmp_path / 'running.json')!r}"
    )
    assert len(result.output.strip().splitlines()) == 1
    assert _posts(trading) == 0 and not (tmp_path / "other.json").exists()


class _UnsureBroker(FakeBroker):
    """A submit whose answer is lost (the order rests, the call raises) and whose look-ups by client
    id miss it ``misses`` times; a listing of open orders, or a cancel, that fails when told; orders
    whose read is a 404, or a 500."""

    def __init__(self) -> None:
        super().__init__(100_000.0, dict(PRICES))
        self.lose_answer: set[str] = set()
        self.lost_status: int | None = None  # the status the lost submit's error carries (None: no answer)
        self.misses = 1  # look-ups by client id that miss an order whose answer was lost
        self.hidden: dict[str, int] = {}
        self.listing_fails = False
        self.not_found: set[str] = set()
        self.unreadable: set[str] = set()
        self.cancel_fails = False

    def submit(self, plan: OrderPlan) -> str:
        order_id = super().submit(plan)
        if plan.symbol in self.lose_answer:
            self.lose_answer.discard(plan.symbol)
            self.hidden[plan.client_order_id] = self.misses
            raise SourceError("alpaca buy order failed: POST /v2/orders", self.lost_status)
        return order_id

    def order_by_client_id(self, client_order_id: str) -> Any:
        if self.hidden.get(client_order_id, 0) > 0:
            self.hidden[client_order_id] -= 1
            return None
        return super().order_by_client_id(client_order_id)

    def open_orders(self) -> Any:
        if self.listing_fails:
            raise RuntimeError("HTTP 500 on GET /v2/orders")
        return super().open_orders()

    def order(self, order_id: str) -> Any:
        if order_id in self.not_found:
            raise OrderNotFound(order_id)
        if order_id in self.unreadable:
            raise RuntimeError("HTTP 500")
        return super().order(order_id)

    def cancel(self, order_id: str) -> None:
        if self.cancel_fails:
            raise RuntimeError("HTTP 500 on DELETE /v2/orders")
        super().cancel(order_id)

    def resting(self, symbol: str) -> list[str]:
        return [i for i, o in self.orders.items() if o.status == "new" and self.sides[i][0] == symbol]


def test_a_cycle_whose_open_orders_cannot_be_listed_sends_nothing(tmp_path: Path) -> None:
    """Cycle 1's passive MSFT buy rests at the broker but its submit timed out and the look-ups by
    client id miss it (cycle 1's, and cycle 2's, which then drops it as never received). Cycle 2's
    listing, the one thing that would adopt it, fails: the cycle traded MSFT again (two resting
    buys). Now it sends nothing that cycle; the next cycle's listing adopts the order, cancels it as
    any resting order, and only then buys again."""
    broker, state = _UnsureBroker(), tmp_path / "state.json"
    config = LiveConfig(account_lock_dir=tmp_path / "locks")
    with LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state, None, config, reset=True) as loop:
        broker.lose_answer, broker.misses = {"MSFT"}, 2
        first = loop.cycle(T0)
        assert list(first.uncertain) and first.rejected == {} and broker.resting("MSFT") == ["o1"]
        broker.listing_fails = True
        second = loop.cycle(T0 + timedelta(days=1))
        assert second.plans == [] and broker.resting("MSFT") == ["o1"]
        broker.listing_fails = False
        third = loop.cycle(T0 + timedelta(days=2))
    # adopted, then cancelled as every resting order is (the new decision supersedes it): one order rests
    assert "o1" in broker.cancelled and [p.symbol for p in third.plans] == ["MSFT"]
    assert broker.resting("MSFT") == ["o2"]


def test_an_order_the_broker_404s_but_lists_open_is_kept(tmp_path: Path) -> None:
    """``GET /orders/{id}`` answers 404 for the resting MSFT buy while the cycle's own listing shows it
    open: it was dropped, and the symbol planned again on top of it. Now it is kept (counted as
    unreadable), cancelled as any resting order is, and a new order goes out only once it is gone."""
    broker, state = _UnsureBroker(), tmp_path / "state.json"
    config = LiveConfig(account_lock_dir=tmp_path / "locks")
    with LiveLoop(broker, ScriptedPolicy(PASSIVE_MSFT), ["MSFT"], state, None, config, reset=True) as loop:
        first = loop.cycle(T0)
        (order_id,) = first.submitted.values()
        broker.not_found = {order_id}
        broker.cancel_fails = True
        second = loop.cycle(T0 + timedelta(days=1))
    assert second.plans == [] and broker.resting("MSFT") == [order_id]  # held on top of it, not doubled
    kept = LiveState.load(state).pending
    assert [p["order_id"] for p in kept] == [order_id] and kept[0]["unreadable_cycles"] == 1


class _RefusingPolicy(ScriptedPolicy):
    """Answers until ``refusing``, then every request is a 422 naming an analysis row (a hot swap to a
    version whose universe lacks a symbol the loop trades)."""

    refusing = False

    def act(self, request: Any, *, deadline: Any = None) -> Any:
        from raytrade.serve.client import ServiceRequestError

        if self.refusing:
            raise ServiceRequestError(
                "HTTP 422: analysis.MSFT: not in the model's universe", ("analysis.MSFT",)
            )
        return super().act(request, deadline=deadline)


def test_a_loop_the_service_refuses_every_cycle_still_counts_its_unreadable_orders(tmp_path: Path) -> None:
    """Each cycle raised out before its first save, so what the broker said was lost every time: the
    unreadable order's count never reached --max-unreadable-order-cycles and the loop failed for ever.
    Now the state is saved before the ask: the count grows by one a cycle and the loop stops at 3."""
    broker, state = _UnsureBroker(), tmp_path / "state.json"
    policy = _RefusingPolicy(PASSIVE_MSFT)
    config = LiveConfig(account_lock_dir=tmp_path / "locks", max_unreadable_order_cycles=3)
    with LiveLoop(broker, policy, ["MSFT"], state, None, config, reset=True) as loop:
        (order_id,) = loop.cycle(T0).submitted.values()
        broker.unreadable, policy.refusing = {order_id}, True
        counts = []
        for day in (1, 2):
            with pytest.raises(ServiceError, match="HTTP 422"):
                loop.cycle(T0 + timedelta(days=day))
            counts.append(LiveState.load(state).pending[0].get("unreadable_cycles"))
        with pytest.raises(UnreadableOrderError):
            loop.cycle(T0 + timedelta(days=3))
    assert counts == [1, 2] and LiveState.load(state).pending[0]["unreadable_cycles"] == 3


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"market_value": "1010.5", "current_price": "99.0"}, -1010.5),  # the market value first
        ({"market_value": None, "current_price": "101.05"}, -1010.5),  # valued at the price
        ({"market_value": "", "current_price": "101.05"}, -1010.5),
    ],
)
def test_a_position_is_valued_at_its_market_value_else_its_price(
    fields: dict[str, Any], value: float
) -> None:
    held = broker_position(SimpleNamespace(symbol="AAPL", qty="10", side="short", **fields))
    assert (held.symbol, held.qty, held.market_value) == ("AAPL", -10.0, pytest.approx(value))


def test_a_position_that_cannot_be_valued_stops_the_cycle_instead_of_counting_as_zero() -> None:
    """It counted 0 against the gross and crypto caps (``market_value or 0.0``)."""
    for price in (None, "0", "-1"):  # a price that is not positive is no price
        position = SimpleNamespace(
            symbol="BTC/USD", qty="2", side="long", market_value=None, current_price=price
        )
        with pytest.raises(
            SourceError, match="alpaca position BTCUSD: neither market_value nor current_price"
        ):
            broker_position(position)


def test_a_loop_whose_open_orders_can_never_be_listed_stops(tmp_path: Path) -> None:
    """Each such cycle sends nothing; without a count the loop held every order, kill-switch unwinds
    included, for ever. The failures in a row are saved, and the loop stops at
    --max-unreadable-order-cycles; one listing that works resets the count."""
    broker, state = _UnsureBroker(), tmp_path / "state.json"
    config = LiveConfig(account_lock_dir=tmp_path / "locks", max_unreadable_order_cycles=3)
    with LiveLoop(
        broker, ScriptedPolicy({"AAPL": (0.1, "aggressive")}), ["AAPL"], state, None, config, reset=True
    ) as loop:
        broker.listing_fails = True
        for day in (0, 1):
            assert loop.cycle(T0 + timedelta(days=day)).plans == []
        assert LiveState.load(state).unlisted_cycles == 2 and broker.submitted == []
        broker.listing_fails = False
        assert [p.symbol for p in loop.cycle(T0 + timedelta(days=2)).plans] == ["AAPL"]
        assert LiveState.load(state).unlisted_cycles == 0
        broker.listing_fails = True
        for day in (3, 4):
            loop.cycle(T0 + timedelta(days=day))
        with pytest.raises(UnreadableOrderError, match="could not be listed for 3 cycles in a row"):
            loop.cycle(T0 + timedelta(days=5))
    assert LiveState.load(state).unlisted_cycles == 3


@pytest.mark.parametrize("key", ["unlisted_cycles", "failed_cycles"])
@pytest.mark.parametrize(
    ("saved", "loaded"), [(None, 0), (2, 2), (-1, None), (2.5, None), ("2", None), (True, None)]
)
def test_the_saved_counts_of_cycles_load_or_are_refused(
    tmp_path: Path, key: str, saved: object, loaded: int | None
) -> None:
    """A file of an earlier version has no count (0); a count that is not one makes the file unreadable."""
    path = tmp_path / "state.json"
    LiveState(peak_equity=100_000.0).save(path)
    raw = json.loads(path.read_text())
    if saved is None:
        del raw[key]
    else:
        raw[key] = saved
    path.write_text(json.dumps(raw))
    if loaded is None:
        with pytest.raises(LiveStateError, match=key):
            LiveState.load(path)
    else:
        assert getattr(LiveState.load(path), key) == loaded


@pytest.mark.parametrize("key", ["account_id", "peak_equity", "pending"])
def test_a_state_file_without_a_key_the_loop_always_writes_is_refused(tmp_path: Path, key: str) -> None:
    """A file the loop did not write (an edited ``{}``, a key deleted) loaded as a fresh state: the peak
    forgotten, a tripped kill switch disarmed, the account check skipped, the pending orders lost."""
    path = tmp_path / "state.json"
    LiveState(peak_equity=100_000.0, account_id="PA-TEST").save(path)
    raw = json.loads(path.read_text())
    del raw[key]
    path.write_text(json.dumps(raw))
    with pytest.raises(LiveStateError, match=rf"unreadable \(no {key}: the loop writes") as err:
        LiveState.load(path)
    older = 'a file of a loop older than 2026-12-02 needs "account_id": null added'  # its way forward
    assert (older in str(err.value)) == (key == "account_id")


def test_a_null_peak_beside_a_saved_kill_switch_is_refused(tmp_path: Path) -> None:
    """A null peak is the loop's own only before its first cycle (a new file, the broker without
    history), and that cycle saves the peak with the switch: a tripped switch without a peak would
    measure the drawdown from today's equity, 0, and release."""
    path = tmp_path / "state.json"
    LiveState(peak_equity=100_000.0, account_id="PA-TEST").save(path)
    raw = json.loads(path.read_text())
    raw["kill_switch"] = {"active": True, "bars_active": 2, "peak_equity": None, "as_of": "2026-11-23T14:30Z"}
    path.write_text(json.dumps(raw))
    assert LiveState.load(path).kill_switch is not None  # with its peak, it loads
    raw["peak_equity"] = None
    path.write_text(json.dumps(raw))
    with pytest.raises(LiveStateError, match="peak_equity=None beside a saved kill switch"):
        LiveState.load(path)
    del raw["kill_switch"]
    path.write_text(json.dumps(raw))
    assert LiveState.load(path).peak_equity is None  # a new file's, before its first cycle


@pytest.mark.parametrize("status", [None, 429, 504], ids=["timeout", "retried-429", "retried-504"])
def test_a_submit_that_timed_out_unseen_is_settled_next_cycle_not_counted_refused(
    tmp_path: Path, status: int | None
) -> None:
    """The market buy of AAPL filled, but its submit timed out (or alpaca-py's retries of the POST
    ended in a 429 or a 504, an earlier attempt having gone through) and the look-up by client id did
    not see it yet: it was counted refused and forgotten (its fill never logged, its decision row
    "refused"). Without a refusal from the broker it stays planned; the next cycle finds it by client
    id and tracks it. A submit the broker refuses (HTTP 403) is still refused at once (test_live.py)."""
    broker, state = _UnsureBroker(), tmp_path / "state.json"
    broker.lost_status = status
    config = LiveConfig(account_lock_dir=tmp_path / "locks")
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive")})
    with LiveLoop(broker, policy, ["AAPL"], state, None, config, reset=True) as loop:
        broker.lose_answer = {"AAPL"}
        first = loop.cycle(T0)
        decision = f"{first.cycle_id}:AAPL"
        assert first.rejected == {} and list(first.uncertain) == [decision] and broker.qty["AAPL"] == 100.0
        assert [(p["decision_id"], p["status"]) for p in LiveState.load(state).pending] == [
            (decision, "planned")
        ]
        loop.cycle(T0 + timedelta(days=1))
    assert len(broker.submitted) == 1  # found, not sent again: AAPL is at its target
    assert all(p["decision_id"] != decision for p in LiveState.load(state).pending)  # filled, settled


@pytest.mark.parametrize(
    ("status", "refused"), [(403, True), (422, True), (429, False), (408, False), (500, False), (None, False)]
)
def test_only_an_answered_4xx_is_a_refusal(status: int | None, refused: bool) -> None:
    """A refusal means the broker did nothing; a timeout (408, or no answer) or a 5xx says nothing, nor
    does a 429: alpaca-py retries a POST on 429 and 504, so the last attempt's 429 may follow one
    that went through."""
    assert SourceError("alpaca buy order failed", status).refused() is refused


def test_an_open_order_the_loop_did_not_place_holds_its_symbol_and_is_never_cancelled(tmp_path: Path) -> None:
    """The user's own limit buy of 50 AAPL rests at the broker: the loop ignored it (no ``rt-`` id),
    bought AAPL beside it (both could fill, past the caps) and counted nothing of it against the gross.
    Now its symbol is held, its remainder counts against the gross budget, and it is never cancelled."""
    broker, state = _UnsureBroker(), tmp_path / "state.json"
    broker.orders["u1"] = OrderState("u1", "new", 0.0, None, None, qty=50.0, limit_price=99.0)
    broker.sides["u1"] = ("AAPL", "buy", "my-own-order")
    config = LiveConfig(account_lock_dir=tmp_path / "locks")
    policy = ScriptedPolicy({"AAPL": (0.1, "aggressive"), "MSFT": (0.05, "aggressive")})
    with LiveLoop(broker, policy, ["AAPL", "MSFT"], state, None, config, reset=True) as loop:
        first = loop.cycle(T0)
        second = loop.cycle(T0 + timedelta(days=1))
    assert [p.symbol for p in first.plans] == ["MSFT"] and second.plans == []
    assert "u1" not in broker.cancelled and broker.orders["u1"].status == "new"
    assert all(p["order_id"] != "u1" for p in LiveState.load(state).pending)  # not adopted as ours
