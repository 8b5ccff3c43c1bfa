"""``serve.client`` against a scripted fake of the policy service on ``127.0.0.1`` (no other network).

Each test starts its own :class:`FakePolicyService`, tells it how to answer (a status, a body, a delay
before answering, a pause between body bytes), and checks what the client did: the request it sent,
how many attempts it made, and whether it returned the service's answer, held, or raised. ``GET
/v1/model`` (the served kill-switch rule the client advances a switch with) is answered apart, from
``published`` (by default :data:`PUBLISHED`: the default rule, for the model that answers).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr, ValidationError

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.serve.client import (
    FALLBACK_MODEL,
    FALLBACK_PREFIX,
    ClientConfig,
    KillSwitchTracker,
    PolicyClient,
    ServiceAuthError,
    ServiceError,
    ServiceRequestError,
    request_from_loop,
    request_payload,
)
from raytrade.serve.kill_switch_rule import RULE_UNKNOWN_MODEL, KillSwitchRuleError, shown_rule
from raytrade.serve.schemas import ActRequest, ActResponse, CallerKillSwitch, SymbolDecision
from tests.loopback import serve_on_loopback, stop_serving

pytestmark = pytest.mark.timeout(10)

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "contracts" / "trade_loop_decision.json"
TOKEN = "serve-token-DO-NOT-LEAK-7f3a9c"
AS_OF = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
STATE: dict[str, Any] = {
    "_about": "test state",
    "account": {"equity": "100000", "cash": "50000"},
    "positions": [
        {"symbol": "NVDA", "qty": "40", "side": "long", "market_value": "7412.80", "current_price": "185.32"},
        {"symbol": "ETHUSD", "qty": "1", "side": "short", "market_value": "-2500", "current_price": "2500"},
    ],
    "drawdown_pct": -0.021,
    "analysis": {
        "NVDA": {"bid_price": 185.29, "ask_price": 185.35, "spread_bps": 3.24, "last_close": 185.32},
        "AAPL": {"bid_price": 230.10, "ask_price": 230.14, "spread_bps": 1.74, "last_close": 230.12},
    },
    "as_of": "2026-11-25T15:30:00Z",
}
# What hold_everything must give for STATE: each position at its signed value / equity.
HELD = {"NVDA": 7412.80 / 100_000, "ETHUSD": -2500 / 100_000, "AAPL": 0.0}
ANSWER = ActResponse(
    model="ppo_gate@3",
    model_version=3,
    as_of=AS_OF,
    features_as_of=datetime(2026, 11, 24, tzinfo=UTC),
    decisions={
        "NVDA": SymbolDecision(
            target_weight=0.1,
            current_weight=HELD["NVDA"],
            side="long",
            gate_mode="aggressive",
            confidence=0.8,
            tradeable=True,
        ),
        "AAPL": SymbolDecision(
            target_weight=0.0,
            current_weight=0.0,
            side="flat",
            gate_mode="flat",
            confidence=0.6,
            tradeable=True,
        ),
    },
    gross_exposure=0.1,
    unmanaged=["ETHUSD"],
)


def published_body(model: str = "ppo_gate@3", rule: KillSwitchConfig | None = None) -> bytes:
    """A ``GET /v1/model`` body publishing ``rule`` (default: the simulator's) for ``model``."""
    info = {
        "model": model,
        "symbols": ["NVDA", "AAPL"],
        "kill_switch": (rule or KillSwitchConfig()).model_dump(),
    }
    return json.dumps(info).encode()


# -- the fake service ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer: wait ``delay_s``, then send ``status`` and ``body``, a byte per ``trickle_s``."""

    status: int = 200
    body: bytes = ANSWER.model_dump_json().encode()
    delay_s: float = 0.0
    trickle_s: float = 0.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakePolicyService:
    """Answers the n-th request with ``replies[n]`` (the last one repeats); records every request.
    ``GET /v1/model`` is answered with ``published[n]`` (the last one repeats) and recorded in
    ``model_reads`` instead, unless ``published`` is empty (then it is a request like any other)."""

    replies: list[Reply]
    published: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    model_reads: list[Received] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePolicyService:
        self._server, self._thread = serve_on_loopback(_handler_for(self), "fake-policy-service")
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers still waiting out a delay
        stop_serving(self._server, self._thread)

    def __enter__(self) -> FakePolicyService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def next_reply(self, request: Received) -> Reply:
        with self._lock:
            if self.published and (request.method, request.path) == ("GET", "/v1/model"):
                self.model_reads.append(request)
                return self.published[min(len(self.model_reads), len(self.published)) - 1]
            self.received.append(request)
            return self.replies[min(len(self.received), len(self.replies)) - 1]

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the fake is stopping (the handler should give up)."""
        return not self._stopping.wait(seconds)


def _handler_for(fake: FakePolicyService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = fake.next_reply(Received(self.command, self.path, dict(self.headers.items()), body))
            if reply.delay_s and not fake.pause(reply.delay_s):
                return
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if not reply.trickle_s:
                    self.wfile.write(reply.body)
                    return
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i : i + 1])
                    self.wfile.flush()
                    if not fake.pause(reply.trickle_s):
                        return
            except OSError:
                pass  # the client gave up on this answer, as it should

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


PUBLISHED = Reply(body=published_body())


@pytest.fixture
def service() -> Iterator[Callable[..., FakePolicyService]]:
    """Start a fake that answers with the given replies, and ``GET /v1/model`` with ``published``
    (stopped after the test)."""
    started: list[FakePolicyService] = []

    def start(*replies: Reply, published: tuple[Reply, ...] = (PUBLISHED,)) -> FakePolicyService:
        fake = FakePolicyService(list(replies) or [Reply()], list(published)).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def client_for(url: str, token: str | None = TOKEN, **config: Any) -> PolicyClient:
    return PolicyClient(ClientConfig(base_url=url, **config), SecretStr(token) if token is not None else None)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_holds_everything(answer: ActResponse, request: ActRequest, model: str = FALLBACK_MODEL) -> None:
    assert answer.fallback is True
    assert answer.model == model and answer.model_version == 0
    assert answer.reason is not None and answer.reason.startswith(FALLBACK_PREFIX)
    assert answer.as_of == request.as_of
    assert set(answer.decisions) == set(HELD)
    for symbol, weight in HELD.items():
        decision = answer.decisions[symbol]
        assert decision.target_weight == pytest.approx(weight, abs=1e-12)
        assert decision.current_weight == pytest.approx(weight, abs=1e-12)
        assert decision.gate_mode == "hold" and not decision.tradeable
    assert answer.gross_exposure == pytest.approx(0.074128 + 0.025)


@pytest.fixture
def request_() -> ActRequest:
    return request_from_loop(STATE)


# -- act: success and retries ---------------------------------------------------------------


def test_act_returns_the_service_answer_and_sends_the_request_with_the_bearer_token(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply())
    with client_for(fake.url) as client:
        answer = client.act(request_)
    assert answer == ANSWER
    [sent] = fake.received
    assert (sent.method, sent.path) == ("POST", "/v1/act")
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    # with the account's kill switch: off, from the peak the request's drawdown implies
    switch = CallerKillSwitch(active=False, bars_active=0, peak_equity=100_000.0 / (1 - 0.021))
    assert ActRequest.model_validate_json(sent.body) == request_.model_copy(update={"kill_switch": switch})
    assert (client.fallbacks, client.retries_used) == (0, 0)


def test_a_500_is_retried_and_the_second_answer_returned(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(status=500, body=b'{"detail": "boom"}'), Reply())
    with client_for(fake.url) as client:
        answer = client.act(request_)
    assert answer == ANSWER
    assert len(fake.received) == 2
    assert (client.fallbacks, client.retries_used) == (0, 1)


def test_a_503_on_every_attempt_holds_after_the_retries(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(status=503, body=b'{"detail": "not ready"}'))
    with client_for(fake.url, retries=2, backoff_s=0.01) as client:
        answer = client.act(request_)
    assert len(fake.received) == 3
    assert_holds_everything(answer, request_)
    assert answer.reason == f"{FALLBACK_PREFIX}HTTP 503 (3 attempts)"
    assert (client.fallbacks, client.retries_used) == (1, 2)


def test_a_slow_service_gives_a_hold_within_the_deadline(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(delay_s=3.0))
    with client_for(fake.url, timeout_s=0.2, retries=5, backoff_s=0.05, total_deadline_s=0.5) as client:
        started = time.monotonic()
        answer = client.act(request_)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.15
    assert_holds_everything(answer, request_)
    assert "no answer within" in (answer.reason or "")
    assert 2 <= len(fake.received) <= 3  # the deadline, not the 5 retries, stopped it
    assert client.fallbacks == 1


def test_an_answer_trickling_past_the_attempt_budget_is_abandoned(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(trickle_s=0.05))  # ~1 KB at 20 bytes/s: headers fast, body never in time
    with client_for(fake.url, timeout_s=0.3, retries=0, total_deadline_s=0.3) as client:
        started = time.monotonic()
        answer = client.act(request_)
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.1  # one attempt budget plus at most one read wait between bytes
    assert_holds_everything(answer, request_)


def test_a_closed_port_holds_fast(request_: ActRequest) -> None:
    with client_for(closed_port_url(), retries=2, backoff_s=0.01) as client:
        started = time.monotonic()
        answer = client.act(request_)
        elapsed = time.monotonic() - started
    assert elapsed < 0.3
    assert_holds_everything(answer, request_, RULE_UNKNOWN_MODEL)  # GET /v1/model is refused first
    assert "ConnectError" in (answer.reason or "")
    assert (client.fallbacks, client.retries_used) == (1, 2)


def test_an_outage_holds_and_reports_the_accounts_tripped_kill_switch(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """The rule is read, then ``POST /v1/act`` fails: the bar's advance is kept (the rule is known)."""
    fake = service(Reply(status=503, body=b'{"detail": "not ready"}'))
    down = request_.model_copy(update={"drawdown_pct": -0.25})
    with client_for(fake.url, retries=0) as client:
        answer = client.act(down)
        state = client.kill_switch().state
    assert answer.fallback and answer.kill_switch_active and answer.kill_switch_rule is None
    assert state == CallerKillSwitch(active=True, bars_active=0, peak_equity=100_000.0 / 0.75)


def test_an_answer_that_ignores_the_requests_tripped_kill_switch_holds(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """A service that drops the state (an older replica) answers the stateless rule: at 2.1 % down,
    switch off, new risk allowed, though the caller's switch is on."""
    fake = service(Reply())  # ANSWER: kill_switch_active False, NVDA to 0.1 from 0.074
    tripped = CallerKillSwitch(active=True, bars_active=4, peak_equity=130_000.0)
    with client_for(fake.url) as client:
        answer = client.act(request_.model_copy(update={"kill_switch": tripped}))
    assert answer.fallback and "the request's kill switch is on, the answer's off" in (answer.reason or "")
    [sent] = fake.received
    assert ActRequest.model_validate_json(sent.body).kill_switch == tripped  # a caller's state, sent as is


# -- act: caller bugs raise -------------------------------------------------------------------


def test_401_raises_auth_error_without_retrying(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(status=401, body=b'{"detail": "bad token"}'))
    with client_for(fake.url) as client, pytest.raises(ServiceAuthError, match="token was refused") as info:
        client.act(request_)
    assert info.value.status_code == 401
    assert len(fake.received) == 1 and client.fallbacks == 0
    assert TOKEN not in str(info.value)


def test_no_token_sends_no_authorization_header(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(status=403, body=b'{"detail": "forbidden"}'))
    with client_for(fake.url, token=None) as client, pytest.raises(ServiceAuthError, match="no token"):
        client.act(request_)
    assert "Authorization" not in fake.received[0].headers


def test_422_raises_request_error_naming_the_field(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    detail = {
        "detail": [
            {
                "type": "finite_number",
                "loc": ["body", "analysis", "NVDA", "spread_bps"],
                "msg": "Input should be a finite number",
                "input": "inf",
            }
        ]
    }
    fake = service(Reply(status=422, body=json.dumps(detail).encode()))
    with client_for(fake.url) as client, pytest.raises(ServiceRequestError) as info:
        client.act(request_)
    assert info.value.status_code == 422
    assert "analysis.NVDA.spread_bps: Input should be a finite number" in str(info.value)
    assert '"inf"' in str(info.value)
    assert len(fake.received) == 1 and client.fallbacks == 0


def test_a_422_names_the_fields_it_refuses(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """The loop tells a refused kill-switch count (which it can redo) from a bug by these; a caller's
    own switch (sent as it is) gets the 422 raised."""
    detail = {
        "detail": [
            {"type": "value_error", "loc": ["body", "kill_switch", "bars_active"], "msg": "10 bars: ..."},
            {"type": "value_error", "loc": ["body", "as_of"], "msg": "too far"},
        ]
    }
    fake = service(Reply(status=422, body=json.dumps(detail).encode()))
    own = CallerKillSwitch(active=True, bars_active=10, peak_equity=130_000.0)
    with client_for(fake.url) as client, pytest.raises(ServiceRequestError) as info:
        client.act(request_.model_copy(update={"kill_switch": own}))
    assert info.value.fields == ("kill_switch.bars_active", "as_of")


# -- act: the served kill-switch rule ---------------------------------------------------------------

STRICT = KillSwitchConfig(trigger_drawdown=0.10)  # trips at 10 % down; the default at 20 %
DAY = timedelta(days=1)


def _at(days: int, **changes: Any) -> bytes:
    """:data:`ANSWER` (with ``changes``) for the bar ``days`` after :data:`AS_OF`: asked then, observing
    the bar ``days`` after :data:`ANSWER`'s."""
    assert ANSWER.features_as_of is not None
    observed = (ANSWER.features_as_of + days * DAY).isoformat()
    return _answer_with(**{"as_of": (AS_OF + days * DAY).isoformat(), "features_as_of": observed, **changes})


def _sent_switches(fake: FakePolicyService) -> list[CallerKillSwitch | None]:
    return [ActRequest.model_validate_json(r.body).kill_switch for r in fake.received]


def test_the_switch_is_advanced_with_the_served_rule_not_the_default(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """15 % down: under the default trigger (20 %), over the served one (10 %): the switch goes on."""
    fake = service(
        Reply(body=_answer_with(kill_switch_active=True)),
        published=(Reply(body=published_body(rule=STRICT)),),
    )
    down = request_.model_copy(update={"drawdown_pct": -0.15})
    with client_for(fake.url) as client:
        answer = client.act(down)
    assert not answer.fallback, answer.reason
    assert _sent_switches(fake) == [
        CallerKillSwitch(active=True, bars_active=0, peak_equity=100_000.0 / 0.85)
    ]
    assert len(fake.model_reads) == 1


def test_an_answer_from_another_version_rereads_the_rule_and_redoes_the_bar(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """ppo_gate@3 (default rule) is swapped for ppo_gate@4 (trigger 10 %) between two bars at 15 % down:
    @4's answer to the bar advanced with @3's rule makes the client read @4's rule and ask again."""
    fake = service(
        Reply(),  # bar 1, @3: switch off
        Reply(body=_at(1, model="ppo_gate@4", model_version=4)),  # bar 2 advanced with @3's rule
        Reply(body=_at(1, model="ppo_gate@4", model_version=4, kill_switch_active=True)),
        Reply(body=_at(2, model="ppo_gate@4", model_version=4, kill_switch_active=True)),
        published=(Reply(body=published_body()), Reply(body=published_body("ppo_gate@4", STRICT))),
    )
    down = request_.model_copy(update={"drawdown_pct": -0.15})
    peak = 100_000.0 / 0.85
    with client_for(fake.url) as client:
        client.act(down)
        answer = client.act(down.model_copy(update={"as_of": AS_OF + DAY}))
        again = client.act(down.model_copy(update={"as_of": AS_OF + 2 * DAY}))
    assert (answer.fallback, answer.model, answer.kill_switch_active) == (False, "ppo_gate@4", True)
    assert not again.fallback and len(fake.model_reads) == 2  # @4's rule is kept: no third read
    assert _sent_switches(fake) == [
        CallerKillSwitch(active=False, bars_active=0, peak_equity=peak),
        CallerKillSwitch(active=False, bars_active=0, peak_equity=peak),  # bar 2 under @3's rule
        CallerKillSwitch(active=True, bars_active=0, peak_equity=peak),  # bar 2 redone under @4's
        CallerKillSwitch(active=True, bars_active=1, peak_equity=peak),  # bar 3, @4's rule
    ]


def test_a_refused_count_rereads_the_rule_and_redoes_the_bar(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """25 % down: the switch trips at bar 1; the service now releases after 1 bar and refuses bar 2's
    count (1, advanced with the old rule's 20); the rule read again releases it at bar 2."""
    refused = {"detail": [{"type": "value_error", "loc": ["body", "kill_switch", "bars_active"], "msg": "1"}]}
    fake = service(
        Reply(body=_answer_with(kill_switch_active=True)),
        Reply(status=422, body=json.dumps(refused).encode()),
        Reply(body=_at(1, model="ppo_gate@4", model_version=4)),
        published=(
            Reply(body=published_body()),
            Reply(body=published_body("ppo_gate@4", KillSwitchConfig(release_after_bars=1))),
        ),
    )
    down = request_.model_copy(update={"drawdown_pct": -0.25})
    with client_for(fake.url) as client:
        client.act(down)
        answer = client.act(down.model_copy(update={"as_of": AS_OF + DAY}))
    assert (answer.fallback, answer.model) == (False, "ppo_gate@4")
    assert _sent_switches(fake) == [
        CallerKillSwitch(active=True, bars_active=0, peak_equity=100_000.0 / 0.75),
        CallerKillSwitch(active=True, bars_active=1, peak_equity=100_000.0 / 0.75),  # refused
        CallerKillSwitch(active=False, bars_active=0, peak_equity=100_000.0),  # released, peak restarted
    ]


def test_a_trip_the_service_reports_beyond_its_published_rule_is_kept(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """15 % down, under the published trigger (20 %), but the answer's switch is on (a service stricter
    than it publishes): the account's switch is taken as tripped at this bar, so its hysteresis follows."""
    fake = service(Reply(body=_answer_with(kill_switch_active=True)))
    with client_for(fake.url) as client:
        client.act(request_.model_copy(update={"drawdown_pct": -0.15}))
        state = client.kill_switch().state
    assert state == CallerKillSwitch(active=True, bars_active=0, peak_equity=100_000.0 / 0.85)


@pytest.mark.parametrize(
    ("published", "why"),
    [
        (Reply(status=503, body=b"{}"), "GET /v1/model unreadable: HTTP 503 (3 attempts)"),
        (Reply(body=b'{"model": "ppo_gate@3", "kill_switch": {"enabled": true}}'), "publishes no valid rule"),
    ],
    ids=["unreachable", "incomplete"],
)
def test_no_act_is_sent_while_the_served_rule_cannot_be_read(
    service: Callable[..., FakePolicyService], request_: ActRequest, published: Reply, why: str
) -> None:
    fake = service(Reply(), published=(published,))
    with client_for(fake.url, backoff_s=0.01) as client:
        answer = client.act(request_)
        client.act(request_)
        state = client.kill_switch().state
    assert_holds_everything(answer, request_, RULE_UNKNOWN_MODEL)  # named as raytrade live names it
    assert (answer.reason or "").startswith(f"{FALLBACK_PREFIX}the served kill-switch rule is unknown (")
    assert why in (answer.reason or "")
    assert fake.received == [] and state is None  # nothing asked, the switch not advanced on a guess
    assert len(fake.model_reads) == (6 if published.status == 503 else 2)  # asked again on each call


def test_a_configured_rule_looser_than_the_served_one_is_refused_naming_both(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    fake = service(Reply(), published=(Reply(body=published_body(rule=STRICT)),))
    with (
        client_for(fake.url, kill_switch=KillSwitchConfig()) as client,
        pytest.raises(KillSwitchRuleError) as err,
    ):
        client.act(request_)
    message = str(err.value)
    assert f"(ClientConfig.kill_switch: {shown_rule(KillSwitchConfig())})" in message
    assert f"(ppo_gate@3, GET /v1/model kill_switch: {shown_rule(STRICT)})" in message
    assert "trigger_drawdown=0.2 (served 0.1: trips later)" in message
    assert fake.received == []


# -- act: one deadline for every request of a call -------------------------------------------------

# A deadline of one attempt, so each request of the old client (a deadline of its own each) could take
# all of it: a call reading the rule took up to twice that, redoing a swap three times.
ONE_DEADLINE: dict[str, Any] = {"timeout_s": 0.5, "total_deadline_s": 0.5, "backoff_s": 0.01}
MARGIN_S = 0.15  # scheduling on a busy machine; the old client overran by 0.2 s and more
PENDING = r" pending: no answer within \d+ ms \(1 attempt\)"


def _ran_out(pending: str, rule_unknown: bool = False) -> str:
    """The reason (a pattern) of a hold the 0.5 s deadline cut with ``pending`` unanswered."""
    unknown = "the served kill-switch rule is unknown: " if rule_unknown else ""
    text = f"{FALLBACK_PREFIX}{unknown}the act() deadline (total_deadline_s=0.5 s) ran out with {pending}"
    return re.escape(text) + PENDING


@pytest.fixture(scope="module")
def warm_kill_switch() -> None:
    """The kill-switch kernel loaded (a process's first act() loads it, about 0.5 s, before its
    deadline starts): these tests time the deadline, not that load."""
    KillSwitchTracker(KillSwitchConfig()).stamp(request_from_loop(STATE))


def _timed_act(client: PolicyClient, request: ActRequest) -> tuple[ActResponse, float]:
    started = time.monotonic()
    answer = client.act(request)
    return answer, time.monotonic() - started


@pytest.mark.usefixtures("warm_kill_switch")
def test_a_slow_rule_read_and_a_slow_act_hold_within_one_deadline(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """``GET /v1/model`` takes 0.3 s of the 0.5 s and ``POST /v1/act`` would take 1 s: the act gets
    what is left, and the call holds at 0.5 s (it took 0.8 s before); an act the deadline cut is an
    outage of the act: the bar's advance under the rule read is kept, as when its retries run out."""
    fake = service(Reply(delay_s=1.0), published=(Reply(body=published_body(), delay_s=0.3),))
    with client_for(fake.url, **ONE_DEADLINE) as client:
        answer, elapsed = _timed_act(client, request_)
        state = client.kill_switch().state
    assert elapsed < 0.5 + MARGIN_S
    assert_holds_everything(answer, request_)
    assert re.fullmatch(_ran_out("POST /v1/act"), answer.reason or ""), answer.reason
    assert len(fake.received) == 1  # the act not retried
    assert state is not None and state == _sent_switches(fake)[-1]  # the bar's advance kept


@pytest.mark.usefixtures("warm_kill_switch")
def test_a_rule_read_that_overruns_the_deadline_holds_as_rule_unknown_sending_no_act(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """The hold is named as ``raytrade live`` names a hold for want of the rule, and says the deadline
    ran out on the rule's read."""
    fake = service(Reply(), published=(Reply(body=published_body(), delay_s=1.0),))
    with client_for(fake.url, **ONE_DEADLINE) as client:
        answer, elapsed = _timed_act(client, request_)
    assert elapsed < 0.5 + MARGIN_S
    assert_holds_everything(answer, request_, RULE_UNKNOWN_MODEL)
    assert re.fullmatch(_ran_out("GET /v1/model", rule_unknown=True), answer.reason or ""), answer.reason
    assert fake.received == []


@pytest.mark.usefixtures("warm_kill_switch")
def test_a_hot_swap_whose_rule_read_overruns_the_deadline_holds_at_it(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """Bar 2's answer comes from ppo_gate@4 after 0.2 s; @4's rule would take 1 s: the call holds at
    0.5 s, the switch left at bar 1 (the old client gave the read 0.5 s of its own: 0.7 s)."""
    fake = service(
        Reply(),  # bar 1, @3
        Reply(body=_at(1, model="ppo_gate@4", model_version=4), delay_s=0.2),
        published=(
            Reply(body=published_body()),
            Reply(body=published_body("ppo_gate@4", STRICT), delay_s=1.0),
        ),
    )
    down = request_.model_copy(update={"drawdown_pct": -0.15})
    with client_for(fake.url, **ONE_DEADLINE) as client:
        client.act(down)
        answer, elapsed = _timed_act(client, down.model_copy(update={"as_of": AS_OF + DAY}))
        switch = client.kill_switch()
    assert elapsed < 0.5 + MARGIN_S
    assert (answer.fallback, answer.model) == (True, RULE_UNKNOWN_MODEL)
    assert re.fullmatch(_ran_out("GET /v1/model", rule_unknown=True), answer.reason or ""), answer.reason
    assert len(fake.received) == 2  # no redo
    assert switch.bar == AS_OF  # bar 2 not advanced


@pytest.mark.usefixtures("warm_kill_switch")
def test_a_hot_swap_whose_redone_act_overruns_the_deadline_holds_and_keeps_the_new_rule(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """Bar 2: @4's answer (0.1 s), @4's rule (0.1 s), the redo would take 1 s: the call holds at 0.5 s
    (the old client at 0.7 s and more), an outage of the redone act: bar 2's advance under @4's rule
    is kept, as for any outage of the act; bar 3 is asked under @4's rule, read once."""
    fake = service(
        Reply(),  # bar 1, @3
        Reply(body=_at(1, model="ppo_gate@4", model_version=4), delay_s=0.1),
        Reply(body=_at(1, model="ppo_gate@4", model_version=4, kill_switch_active=True), delay_s=1.0),
        Reply(body=_at(2, model="ppo_gate@4", model_version=4, kill_switch_active=True)),
        published=(
            Reply(body=published_body()),
            Reply(body=published_body("ppo_gate@4", STRICT), delay_s=0.1),
        ),
    )
    down = request_.model_copy(update={"drawdown_pct": -0.15})
    bar_2 = down.model_copy(update={"as_of": AS_OF + DAY})
    with client_for(fake.url, **ONE_DEADLINE) as client:
        client.act(down)
        answer, elapsed = _timed_act(client, bar_2)
        third = client.act(down.model_copy(update={"as_of": AS_OF + 2 * DAY}))
    assert elapsed < 0.5 + MARGIN_S
    assert_holds_everything(answer, bar_2)
    assert re.fullmatch(_ran_out("POST /v1/act"), answer.reason or ""), answer.reason
    assert (third.fallback, third.model, len(fake.model_reads)) == (False, "ppo_gate@4", 2)
    # @4's rule (trigger 10 %) turned the switch on at bar 2 (15 % down), kept through the outage:
    # bar 3 is its second bar on
    peak = 100_000.0 / 0.85
    assert _sent_switches(fake)[-1] == CallerKillSwitch(active=True, bars_active=1, peak_equity=peak)


@pytest.mark.usefixtures("warm_kill_switch")
def test_a_first_call_whose_rule_read_and_act_fit_the_deadline_decides(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """Each request takes 0.1 s (about 0.15 s with the fake's own latency): both fit in 0.5 s."""
    fake = service(Reply(delay_s=0.1), published=(Reply(body=published_body(), delay_s=0.1),))
    with client_for(fake.url, **ONE_DEADLINE) as client:
        answer = client.act(request_)
    assert answer == ANSWER


# -- act: answers that cannot be trusted hold ------------------------------------------------------


def _answer_with(**changes: Any) -> bytes:
    """:data:`ANSWER` with ``changes``; one with the kill switch on halves NVDA instead of growing it
    (an answer that grows a position under the switch is held: ``serve.answer_check``)."""
    if changes.get("kill_switch_active"):
        changes = {"decisions__NVDA__target_weight": HELD["NVDA"] / 2, **changes}
    data = ANSWER.model_dump(mode="json")
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return json.dumps(data).encode()  # allow_nan: NaN goes out as the literal NaN


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (Reply(body=b"{not json"), "malformed answer"),
        (Reply(body=b'{"model": "ppo@3"}'), "malformed answer (model_version: Field required)"),
        (
            Reply(body=_answer_with(decisions__TSLA=ANSWER.decisions["AAPL"].model_dump())),
            "decision for symbol(s) not in the request: TSLA",
        ),
        (Reply(body=_answer_with(decisions__NVDA__target_weight=math.nan)), "NVDA.target_weight is nan"),
        (Reply(body=_answer_with(gross_exposure=math.inf)), "gross_exposure is inf"),
        (Reply(body=_answer_with(decisions__NVDA__target_qty=math.inf)), "NVDA.target_qty is inf"),
        (Reply(status=404, body=b'{"detail": "Not Found"}'), "HTTP 404"),
        (
            Reply(
                body=ANSWER.model_copy(update={"decisions": {"NVDA": ANSWER.decisions["NVDA"]}})
                .model_dump_json()
                .encode()
            ),
            "no decision for requested symbol(s): AAPL",
        ),
        (
            Reply(body=_answer_with(as_of="2026-11-24T15:30:00Z")),
            "answer is for as_of 2026-11-24T15:30:00+00:00, the request for 2026-11-25T15:30:00+00:00",
        ),
        # answers that keep the schema and break the service's own rules (serve.answer_check)
        (
            Reply(body=_answer_with(decisions__NVDA__target_weight=5.0)),
            "decisions.NVDA.target_weight 5 is over the per-symbol cap 0.15",
        ),
        (
            Reply(body=_answer_with(decisions__NVDA__target_qty=1e9)),
            "decisions.NVDA.target_qty is 1e+09; the request's book and prices make it 53.9607",
        ),
        (Reply(body=_answer_with(decisions__NVDA__side="short")), "decisions.NVDA.side is 'short'"),
        (
            Reply(body=_answer_with(decisions__NVDA__current_weight=0.5)),
            "decisions.NVDA.current_weight is 0.5; the request's positions make it 0.074128",
        ),
        (
            Reply(body=_answer_with(kill_switch_active=True, decisions__NVDA__target_weight=0.1)),
            "decisions.NVDA.target_weight 0.1 grows or flips 0.074128 under the kill switch",
        ),
        (
            Reply(
                body=_answer_with(
                    decisions__AAPL__target_weight=0.05,
                    decisions__AAPL__side="long",
                    decisions__AAPL__tradeable=False,
                )
            ),
            "decisions.AAPL.target_weight moves 0 -> 0.05 while the symbol is held (not tradeable)",
        ),
    ],
    ids=[
        "garbage",
        "wrong-shape",
        "unknown-symbol",
        "nan-weight",
        "inf-gross",
        "inf-qty",
        "404",
        "partial",
        "another-as_of",
        "over-cap",
        "wrong-qty",
        "wrong-side",
        "another-book",
        "grows-under-kill-switch",
        "moves-a-held-symbol",
    ],
)
def test_an_untrustworthy_answer_holds_without_retrying(
    service: Callable[..., FakePolicyService], request_: ActRequest, reply: Reply, cause: str
) -> None:
    fake = service(reply)
    with client_for(fake.url) as client:
        answer = client.act(request_)
    assert_holds_everything(answer, request_)
    assert cause in (answer.reason or "")
    assert len(fake.received) == 1
    assert (client.fallbacks, client.retries_used) == (1, 0)


def test_the_services_idle_holds_of_unrequested_symbols_are_dropped_not_refused(
    service: Callable[..., FakePolicyService], request_: ActRequest
) -> None:
    """The service answers every symbol of its universe; a loop that trades part of it gets the
    decisions for its own symbols, and the rest (held, untradeable, no weight) is dropped, not taken
    for an answer to another request."""
    idle = SymbolDecision(
        target_weight=0.0,
        current_weight=0.0,
        side="flat",
        gate_mode="hold",
        confidence=0.0,
        tradeable=False,
        reason="not in the request",
    )
    reply = Reply(body=_answer_with(decisions__TSLA=idle.model_dump(mode="json"), observation=[0.5] * 9))
    with client_for(service(reply).url) as client:
        answer = client.act(request_)
    assert not answer.fallback and client.fallbacks == 0
    assert answer.decisions == ANSWER.decisions
    # the observation covers TSLA too: split over fewer decisions it would log wrong transitions
    assert answer.observation is None


# -- secrets ----------------------------------------------------------------------------------------


def test_the_token_never_appears_in_reprs_logs_or_errors(
    service: Callable[..., FakePolicyService], request_: ActRequest, caplog: pytest.LogCaptureFixture
) -> None:
    fake = service(Reply(status=500), Reply(), Reply(status=401), Reply(delay_s=2.0))
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG), client_for(fake.url, timeout_s=0.1, retries=1) as client:
        shown.append(repr(client))
        client.act(request_)  # 500, retried: 200
        with pytest.raises(ServiceAuthError) as info:
            client.act(request_)
        shown.append(str(info.value))
        client.act(request_)  # times out twice: fallback warning
        shown.append(repr(client))
    assert "holding every position" in caplog.text  # the warning was logged
    assert any(r.name.startswith("httpx") for r in caplog.records)  # so were httpx's own logs
    for text in [*shown, caplog.text]:
        assert TOKEN not in text
    assert "token=set" in shown[0]


def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it() -> None:
    bad = "secret-with\nnewline"
    with pytest.raises(ValueError, match="visible ASCII") as info:
        PolicyClient(ClientConfig(base_url="http://127.0.0.1:1"), SecretStr(bad))
    assert bad not in str(info.value)


# -- health -------------------------------------------------------------------------------------


def test_health_is_true_on_200(service: Callable[..., FakePolicyService]) -> None:
    fake = service(Reply(body=b'{"status": "ok", "model": "ppo_gate@3"}'))
    with client_for(fake.url) as client:
        assert client.health() is True
    assert (fake.received[0].method, fake.received[0].path) == ("GET", "/v1/health")


@pytest.mark.parametrize("reply", [Reply(status=503), Reply(delay_s=2.0)], ids=["503", "slow"])
def test_health_is_false_when_not_ready_or_slow(
    service: Callable[..., FakePolicyService], reply: Reply
) -> None:
    fake = service(reply)
    with client_for(fake.url, timeout_s=0.2) as client:
        started = time.monotonic()
        assert client.health() is False
        assert time.monotonic() - started < 0.4


def test_health_is_false_when_nothing_listens() -> None:
    with client_for(closed_port_url()) as client:
        assert client.health() is False


# -- model: retried under a deadline, as act is ------------------------------------------------------


def test_model_retries_a_503_and_returns_the_next_answer(service: Callable[..., FakePolicyService]) -> None:
    """The loop's start-up read and its rule read: a service that is not ready yet for one attempt is
    asked again (the old client made one attempt and raised)."""
    fake = service(Reply(status=503, body=b"{}"), Reply(body=published_body()), published=())
    with client_for(fake.url) as client:
        info = client.model()
        retries = client.retries_used
    assert info == json.loads(published_body())
    assert (len(fake.received), retries) == (2, 1)


def test_model_gives_up_when_its_deadline_runs_out(service: Callable[..., FakePolicyService]) -> None:
    """Attempts of 0.2 s under a deadline of 0.5 s: two or three are made, not the five retries, and
    the error says the deadline ran out and what was pending (the old client waited 0.5 s once)."""
    fake = service(Reply(body=published_body(), delay_s=1.0), published=())
    with client_for(fake.url, timeout_s=0.2, retries=5, backoff_s=0.05, total_deadline_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(ServiceError) as err:
            client.model()
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + MARGIN_S
    assert err.value.status_code == 0
    expected = "policy service unreachable: the model() deadline (total_deadline_s=0.5 s) ran out with"
    assert re.fullmatch(
        re.escape(expected) + r" GET /v1/model pending: no answer within \d+ ms \(\d attempts\)",
        str(err.value),
    )
    assert 2 <= len(fake.received) <= 3


# -- config ---------------------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    config = ClientConfig(base_url="http://127.0.0.1:8000", backoff_s=0.05, max_backoff_s=0.15)
    assert [config.backoff(n) for n in (1, 2, 3, 4)] == pytest.approx([0.05, 0.1, 0.15, 0.15])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_url": "head:8000"}, "absolute http"),
        ({"base_url": "ftp://head:8000"}, "absolute http"),
        ({"base_url": "https://user:pw@head"}, "credentials"),
        ({"base_url": "http://head:8000"}, "must use https"),
        ({"base_url": "https://head", "timeout_s": 0}, "greater than 0"),
        ({"base_url": "https://head", "retries": -1}, "greater than or equal to 0"),
        ({"base_url": "https://head", "timeout_s": 2.0, "total_deadline_s": 1.0}, "shorter than one attempt"),
    ],
)
def test_config_refuses_unsafe_or_impossible_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClientConfig(**fields)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cret-pw@head",
        "http://user:s3cret-pw@remote:8000",
        "ftp://user:s3cret-pw@head",
        "https://head/v1?token=s3cret-pw",
    ],
    ids=["https-userinfo", "http-userinfo", "ftp-userinfo", "query"],
)
def test_a_refused_base_url_never_shows_its_secret(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        ClientConfig(base_url=url)
    assert "s3cret-pw" not in str(info.value)


def test_config_strips_the_trailing_slash() -> None:
    assert ClientConfig(base_url="https://serve.internal:8000/").base_url == "https://serve.internal:8000"


# -- request_from_loop ----------------------------------------------------------------------------


def test_the_contract_state_becomes_a_valid_request() -> None:
    if not CONTRACT.is_file():
        pytest.skip(f"the trading-loop contract {CONTRACT} is not checked out next to this repository")
    state = json.loads(CONTRACT.read_text())
    for row in state["analysis"].values():
        row["predictions"] = [{"date": "2026-11-24", "close": 1.0}]  # the loop's backtest, never sent
    payload = request_payload(state)
    assert "_about" in state and "_about" not in payload
    assert all("predictions" not in row for row in payload["analysis"].values())
    json.dumps(payload)  # plain JSON data
    request = request_from_loop(state, as_of=AS_OF)
    assert request.as_of == AS_OF
    assert set(request.analysis) == set(state["analysis"])
    assert [(p.symbol, p.qty, p.market_value) for p in request.positions] == [
        ("NVDA", 40.0, 7412.80),
        ("BTCUSD", 0.052, 4902.11),
    ]
    assert request.drawdown_pct == -0.021
    assert request.analysis["UNIUSD"].trade_blocked is True


def test_a_predictions_dataframe_and_other_objects_in_a_row_are_dropped() -> None:
    state = json.loads(json.dumps(STATE))
    row = state["analysis"]["NVDA"]
    row["predictions"] = pd.DataFrame({"close": [1.0, 2.0]})
    row["fit"] = np.zeros(3)
    row["_cache"] = {"k": 1}
    row["trade_blocked"] = np.bool_(True)  # numpy scalars are kept as Python values, not dropped
    row["kelly_fraction"] = np.float32(0.125)
    payload = request_payload(state)
    assert set(payload["analysis"]["NVDA"]) == {
        "bid_price",
        "ask_price",
        "spread_bps",
        "last_close",
        "trade_blocked",
        "kelly_fraction",
    }
    request = request_from_loop(state)
    assert request.analysis["NVDA"].trade_blocked is True
    assert request.analysis["NVDA"].kelly_fraction == 0.125


def test_an_object_in_a_list_raises_naming_its_path() -> None:
    state = {**STATE, "positions": [STATE["positions"][0], object()]}
    with pytest.raises(TypeError, match=r"state\.positions\[1\] is a object"):
        request_from_loop(state)


def test_an_invalid_state_raises_the_validation_error() -> None:
    with pytest.raises(ValidationError, match="drawdown_pct"):
        request_from_loop({**STATE, "drawdown_pct": 0.5})


def test_an_account_that_lost_everything_is_stamped_with_its_implied_peak() -> None:
    """A first request at ``drawdown_pct`` -1 implies a peak of equity / 1e-12 (the tracker's floor
    on the fraction left): far above the 1e12 every other number is held to, and still a request."""
    request = request_from_loop({**STATE, "drawdown_pct": -1.0})
    stamped = KillSwitchTracker(KillSwitchConfig()).stamp(request)
    assert stamped.kill_switch is not None and stamped.kill_switch.peak_equity == pytest.approx(1e17)
    sent = ActRequest.model_validate_json(stamped.model_dump_json())  # as the service reads it
    assert sent.kill_switch == stamped.kill_switch
