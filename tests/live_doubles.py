"""Test doubles for the live loop: a policy that answers with scripted target weights, and a stub of
the policy service on 127.0.0.1 that answers with it (for the loop's real ``PolicyClient``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.serve.client import Deadline, ServiceRequestError
from raytrade.serve.fallback import hold_everything
from raytrade.serve.schemas import ActRequest, ActResponse, SymbolDecision
from tests.loopback import serve_on_loopback, stop_serving

T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
PAPER_TARGETS = {"AAPL": (0.1, "aggressive"), "MSFT": (0.05, "passive"), "BTCUSD": (0.02, "aggressive")}
SERVED_UNIVERSE = ("AAPL", "AMZN", "AVGO", "BTCUSD", "ETHUSD", "GOOG", "JPM", "META", "MSFT", "NVDA", "TSLA")
"""The universe :class:`ScriptedPolicy` publishes on ``GET /v1/model`` by default (with its targets):
the symbols the live tests trade; the loop refuses to start on a symbol outside it."""
DEADLINE_S = 60.0
"""The decision deadline :class:`ScriptedPolicy` gives (it answers at once: it never runs out)."""


class ScriptedPolicy:
    """Answers with fixed target weights (current weights taken from the request) as ``served``
    (``NAME@VERSION``), and publishes ``kill_switch`` as its rule on ``model()`` (``GET /v1/model``);
    ``model_error`` makes ``model()`` raise it instead (the service unreachable). Like the service
    (``serve.decide.PolicyService.prepare``), it refuses a caller's switch whose count reaches its
    rule's ``release_after_bars`` (a 422 on ``kill_switch.bars_active``) unless its rule is disabled;
    ``enforced`` overrides the rule it checks that with (a service inconsistent with what it publishes).
    ``universe``: the symbols it publishes (default :data:`SERVED_UNIVERSE` and its targets); a request
    naming another is refused, as the service refuses it (a 422 on ``analysis.<symbol>``)."""

    def __init__(
        self,
        targets: dict[str, tuple[float, str]],
        fallback: bool = False,
        kill_switch: KillSwitchConfig | None = None,
        served: str = "alpha@2",
        universe: list[str] | None = None,
        observed_bar: Callable[[datetime], datetime | None] | None = None,
    ):
        self.targets, self.fallback = targets, fallback
        self.observed_bar = observed_bar
        """The bar an answer at ``as_of`` observed (``features_as_of``; None: not said)."""
        self.universe = universe if universe is not None else sorted({*SERVED_UNIVERSE, *targets})
        self.kill_switch = kill_switch or KillSwitchConfig()
        self.served = served
        self.model_error: Exception | None = None
        self.enforced: KillSwitchConfig | None = None
        self.model_reads = 0
        self.requests: list[ActRequest] = []

    def deadline(self) -> Deadline:
        return Deadline.from_now(DEADLINE_S)

    def model(self, deadline: Deadline | None = None) -> dict[str, Any]:
        self.model_reads += 1
        if self.model_error is not None:
            raise self.model_error
        return {
            "model": self.served,
            "symbols": list(self.universe),
            "kill_switch": self.kill_switch.model_dump(),
        }

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        self.requests.append(request)
        unknown = sorted(set(request.analysis) - set(self.universe))
        if unknown:  # as the service refuses a symbol outside its universe
            raise ServiceRequestError(
                f"policy service rejected the request (HTTP 422): analysis.{unknown[0]}: "
                f"{unknown[0]!r} is not in the model's universe",
                (f"analysis.{unknown[0]}",),
            )
        self._refuse_a_count_past_the_release(request)
        if self.fallback:
            return hold_everything(request, "unavailable", 0, "policy service unavailable: test")
        eq = request.account.equity
        current = {p.symbol: p.signed_value() / eq for p in request.positions}
        decisions = {
            s: SymbolDecision(
                target_weight=t,
                current_weight=current.get(s, 0.0),
                side="flat" if t == 0 else ("long" if t > 0 else "short"),
                gate_mode=mode,  # type: ignore[arg-type]
                confidence=0.6,
                tradeable=True,
            )
            for s, (t, mode) in self.targets.items()
        }
        as_of = request.as_of or T0
        return ActResponse(
            model=self.served,
            model_version=int(self.served.rsplit("@", 1)[1]),
            as_of=as_of,
            features_as_of=None if self.observed_bar is None else self.observed_bar(as_of),
            decisions=decisions,
            gross_exposure=0.0,
        )

    def _refuse_a_count_past_the_release(self, request: ActRequest) -> None:
        rule = self.enforced or self.kill_switch
        release = rule.release_after_bars if rule.enabled else None
        state = request.kill_switch
        if state is not None and release is not None and state.bars_active >= release:
            raise ServiceRequestError(
                f"policy service rejected the request (HTTP 422): kill_switch.bars_active: "
                f"{state.bars_active} bars: the policy's kill switch releases after {release} "
                "(release_after_bars), so its state never counts that far",
                ("kill_switch.bars_active",),
            )


class StubPolicyService:
    """``/v1/model`` and ``/v1/act`` on 127.0.0.1, answering with :class:`ScriptedPolicy` (default:
    :data:`PAPER_TARGETS`, its universe too; its ``model()`` for ``/v1/model``: 503 while it raises).
    ``delays`` holds, per method (``GET``, ``POST``), the seconds to wait before each next answer
    (popped in order; none left: at once): a slow service, for the client's deadline."""

    def __init__(self, token: str, policy: ScriptedPolicy | None = None):
        policy = policy or ScriptedPolicy(PAPER_TARGETS, universe=list(PAPER_TARGETS))
        expected = f"Bearer {token}"
        self.delays: dict[str, list[float]] = {}
        stopping, delays, lock = threading.Event(), self.delays, threading.Lock()
        self._stopping = stopping

        def wait(method: str) -> None:
            with lock:
                queued = delays.get(method)
                seconds = queued.pop(0) if queued else 0.0
            stopping.wait(seconds)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up on this answer (its deadline), as it should

            def do_GET(self) -> None:
                wait("GET")
                if self.headers.get("Authorization") != expected:
                    return self._send(401, {"detail": "invalid bearer token"})
                try:
                    info = policy.model()
                except Exception:  # policy.model_error: GET /v1/model fails, POST /v1/act still answers
                    return self._send(503, {"detail": "not ready"})
                self._send(200, info)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                wait("POST")
                if self.headers.get("Authorization") != expected:
                    return self._send(401, {"detail": "invalid bearer token"})
                answer = policy.act(ActRequest.model_validate_json(body))
                self._send(200, answer.model_dump(mode="json"))

        self.server, self.thread = serve_on_loopback(Handler, "stub-policy-service")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self._stopping.set()  # wakes handlers still waiting out a delay
        stop_serving(self.server, self.thread)


class RunnerLoop:
    """What ``raytrade live``'s runner (``cluster.live._run``) needs of a loop besides ``cycle``:
    ``record_cycle``, counting the failed cycles in a row as ``LiveLoop.record_cycle`` does in its
    state file (here in memory: one runner's test)."""

    failed_cycles = 0

    def record_cycle(self, failed: bool) -> int:
        self.failed_cycles = self.failed_cycles + 1 if failed else 0
        return self.failed_cycles
