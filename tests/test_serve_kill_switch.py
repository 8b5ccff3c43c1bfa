"""The served kill switch is the simulator's: the caller carries its state (replicas keep none), the
client advances it with ``envs.kill_switch.update_kill_switch`` once per bar, and the decision core
applies it with its hysteresis and shows it in the observation. No Ray: an untrained (seeded) module
on a small synthetic market whose action always asks for more risk, behind a loopback HTTP server
that answers with the decision core (the client's real HTTP path) or the service's FastAPI app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from raytrade.envs.gym_envs import batched_observation, feature_index
from raytrade.envs.kill_switch import KillSwitchConfig, KillSwitchState, init_kill_switch, update_kill_switch
from raytrade.envs.simulator import MarketSimulator
from raytrade.serve.client import ClientConfig, PolicyClient
from raytrade.serve.decide import DecisionService, RequestError, ServeConfig, serving_market_data
from raytrade.serve.fallback import hold_everything
from raytrade.serve.schemas import ActRequest, ActResponse, CallerKillSwitch
from tests.loopback import serve_on_loopback, stop_serving
from tests.test_serve_crypto_cap import _FixedAction
from tests.test_serve_fast_path import _handle
from tests.test_serve_http import TOKEN

pytestmark = pytest.mark.timeout(60)

PEAK = 100_000.0
HELD = 0.05  # the first symbol's weight held on every bar: above it is new risk, below an unwind


@pytest.fixture(scope="module")
def service() -> DecisionService:
    """A policy that asks for +1 on every symbol (capped: always more than it holds)."""
    handle = _handle("ppo_mlp")
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    policy = _FixedAction(handle, np.ones(len(data.symbols)))
    return DecisionService(policy, data, ServeConfig(max_feature_age_hours=None))


@pytest.fixture(scope="module")
def served(service: DecisionService) -> Iterator[tuple[str, list[ActRequest]]]:
    """The decision core over HTTP on 127.0.0.1, and the requests it received."""
    yield from _serving(service)


def _serving(service: DecisionService) -> Iterator[tuple[str, list[ActRequest]]]:
    received: list[ActRequest] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # GET /v1/model: the rule the client advances its switch with
            assert self.path == "/v1/model", self.path
            self._send(200, json.dumps(service.describe(), default=str).encode())

        def do_POST(self) -> None:
            request = ActRequest.model_validate_json(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(request)
            assert request.as_of is not None
            try:
                status, body = 200, service.decide([request], request.as_of)[0].model_dump_json().encode()
            except RequestError as exc:
                status, body = 422, json.dumps({"detail": [exc.detail()]}).encode()
            self._send(status, body)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server, thread = serve_on_loopback(Handler, "decision-core")
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}", received
    finally:
        stop_serving(server, thread)


def _bars(service: DecisionService, count: int) -> list[datetime]:
    """When the last ``count`` bars at which every symbol has a bar (none is held for want of one)
    closed: the ``as_of`` that observes each."""
    every = np.flatnonzero(service.data.listed.all(axis=1))
    assert len(every) >= count
    return [service.closed_at(int(i)) for i in every[-count:]]


def _request(service: DecisionService, as_of: datetime, equity: float, **update: Any) -> ActRequest:
    """The loop's request at ``as_of``: ``equity`` after a peak of :data:`PEAK`, :data:`HELD` of it in
    the first symbol, every symbol quoted."""
    first = service.data.symbols[0]
    body: dict[str, Any] = {
        "account": {"equity": equity, "cash": equity * (1 - HELD)},
        "positions": [{"symbol": first, "qty": "10", "side": "long", "market_value": str(HELD * equity)}],
        "drawdown_pct": min(equity / PEAK - 1.0, 0.0),
        "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in service.data.symbols},
        "as_of": as_of.isoformat(),
        "observation": True,
    }
    return ActRequest.model_validate(body | update)


def _through_the_client(
    url: str, service: DecisionService, equities: list[float], bars: list[datetime] | None = None
) -> list[ActResponse]:
    bars = bars or _bars(service, len(equities))
    with PolicyClient(
        # one deadline covers the rule read and the act: room for a loaded CI machine
        ClientConfig(base_url=url, timeout_s=10.0, total_deadline_s=30.0),
        SecretStr(TOKEN),
    ) as c:
        answers = [c.act(_request(service, bar, equity)) for bar, equity in zip(bars, equities, strict=True)]
    assert not any(a.fallback for a in answers), [a.reason for a in answers]
    return answers


def _simulated(equities: list[float]) -> list[KillSwitchState]:
    """The simulator's switch after each bar of the equity path (from a fresh state at :data:`PEAK`)."""
    state, out = init_kill_switch(np.array([PEAK])), []
    for equity in equities:
        state = update_kill_switch(state, np.array([equity]), KillSwitchConfig())
        out.append(state)
    return out


def _added_risk(service: DecisionService, answer: ActResponse) -> bool:
    d = answer.decisions[service.data.symbols[0]]
    assert d.current_weight == pytest.approx(HELD)
    return d.target_weight > d.current_weight + 1e-9


def test_a_trip_and_recovery_unwinds_until_the_release_drawdown_as_the_simulator_does(
    service: DecisionService, served: tuple[str, list[ActRequest]]
) -> None:
    equities = [PEAK * (1 - dd) for dd in (0.10, 0.21, 0.19, 0.12, 0.04)]
    answers = _through_the_client(served[0], service, equities)
    simulated = _simulated(equities)
    expected = [bool(s.active[0]) for s in simulated]
    assert expected == [False, True, True, True, False]
    assert [a.kill_switch_active for a in answers] == expected
    assert [_added_risk(service, a) for a in answers] == [True, False, False, False, True]
    assert {a.kill_switch_rule for a in answers} == {"caller_state"}
    rb = KillSwitchConfig().release_after_bars
    assert rb is not None
    # the observation's kill features (active, bars / release bars) are the simulator's state
    assert [a.observation[-3:-1] for a in answers if a.observation is not None] == [
        [float(s.active[0]), np.float32(s.bars_active[0] / rb)] for s in simulated
    ]


def test_the_switch_releases_after_release_after_bars_and_restarts_its_peak(
    service: DecisionService, served: tuple[str, list[ActRequest]]
) -> None:
    rb = KillSwitchConfig().release_after_bars
    assert rb == 20
    equities = [PEAK * 0.75] * (rb + 2)  # 25 % down throughout: only the timed release lifts it
    answers = _through_the_client(served[0], service, equities)
    expected = [bool(s.active[0]) for s in _simulated(equities)]
    assert expected == [True] * rb + [False, False]  # released on bar 21, its peak restarted at equity
    assert [a.kill_switch_active for a in answers] == expected
    assert [_added_risk(service, a) for a in answers] == [not e for e in expected]
    assert served[1][-1].kill_switch == CallerKillSwitch(active=False, bars_active=0, peak_equity=PEAK * 0.75)


def test_a_retried_bar_does_not_advance_the_count(
    service: DecisionService, served: tuple[str, list[ActRequest]]
) -> None:
    url, received = served
    first = len(received)
    b1, b2, b3 = _bars(service, 3)
    _through_the_client(url, service, [PEAK * 0.79] * 4, [b1, b2, b2, b3])  # bar 2 asked twice
    assert [r.kill_switch.bars_active for r in received[first:] if r.kill_switch is not None] == [0, 1, 1, 2]


def test_calls_that_observe_the_same_bar_do_not_advance_the_count(
    service: DecisionService, served: tuple[str, list[ActRequest]]
) -> None:
    """Asked hourly on a daily policy: the answers at b1 + 1 h and + 2 h observe b1 again, so each
    advance is undone and the request asked again with the switch as it was; the count moves once per
    bar the service observed (it moved once per call: 0, 1, 2, 3, 4, 5)."""
    url, received = served
    first = len(received)
    b1, b2, b3 = _bars(service, 3)
    hour = timedelta(hours=1)
    asked = [b1, b1 + hour, b1 + 2 * hour, b2, b2 + hour, b3]
    answers = _through_the_client(url, service, [PEAK * 0.79] * 6, asked)
    seen = [a.features_as_of for a in answers]
    assert seen[0] == seen[1] == seen[2] != seen[3] == seen[4] != seen[5], seen
    counts = [r.kill_switch.bars_active for r in received[first:] if r.kill_switch is not None]
    # each later call within a bar: the advanced count asked, then the count as it was
    assert counts == [0, 1, 0, 1, 0, 1, 2, 1, 2]
    assert all(a.kill_switch_active for a in answers)


def test_the_observations_kill_features_are_the_simulators_for_the_same_state(
    service: DecisionService,
) -> None:
    data, cfg = service.data, service.env_cfg
    bar = data.n_steps - cfg.sim.episode_len - 2
    sim = MarketSimulator(data, cfg.sim, n_envs=1)
    sim.reset(starts=np.array([bar]))
    equity = cfg.sim.initial_equity
    peak = equity / 0.75
    sim.peak = np.array([peak])
    sim.kill = KillSwitchState(np.array([peak]), np.array([True]), np.array([7]))
    rb = cfg.sim.kill_switch.release_after_bars
    expected = batched_observation(
        sim.observe(), feature_index(data, cfg.feature_columns), rb, cfg.flat_obs, cfg.normalizer
    )
    request = ActRequest.model_validate(
        {
            "account": {"equity": equity, "cash": equity},
            "drawdown_pct": -float(sim.observe().drawdown[0]),
            "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in data.symbols},
            "as_of": service.closed_at(bar).isoformat(),  # observes the bar: it has closed
            "kill_switch": {"active": True, "bars_active": 7, "peak_equity": peak},
        }
    )
    observed = service.env_observation([service.prepare(request, service.closed_at(bar))])
    assert observed[0, -3:-1].tolist() == [1.0, np.float32(7 / 20)]
    np.testing.assert_array_equal(observed, expected)


def test_the_answer_says_which_rule_it_applied(service: DecisionService) -> None:
    bar = _bars(service, 1)[0]
    stateless = service.decide([_request(service, bar, PEAK * 0.81)], bar)[0]
    state = {"active": True, "bars_active": 3, "peak_equity": PEAK}
    carried = service.decide([_request(service, bar, PEAK * 0.81, kill_switch=state)], bar)[0]
    # 19 % down: the stateless rule lets new risk in, the caller's tripped switch unwinds
    assert (stateless.kill_switch_rule, stateless.kill_switch_active) == ("stateless", False)
    assert (carried.kill_switch_rule, carried.kill_switch_active) == ("caller_state", True)


def test_the_drawdown_from_the_switchs_own_peak_trips_it_now(service: DecisionService) -> None:
    """A state not advanced to this bar (off, its peak 25 % above equity) still trips at the trigger."""
    bar = _bars(service, 1)[0]
    state = {"active": False, "bars_active": 0, "peak_equity": PEAK}
    answer = service.decide([_request(service, bar, PEAK * 0.75, drawdown_pct=0.0, kill_switch=state)], bar)[
        0
    ]
    assert answer.kill_switch_active and not _added_risk(service, answer)


@pytest.mark.parametrize(
    ("state", "loc"),
    [
        ({"active": True, "bars_active": -1, "peak_equity": PEAK}, ["body", "kill_switch", "bars_active"]),
        ({"active": True, "bars_active": 1.5, "peak_equity": PEAK}, ["body", "kill_switch", "bars_active"]),
        (
            {"active": True, "bars_active": 10**30, "peak_equity": PEAK},
            ["body", "kill_switch", "bars_active"],
        ),
        ({"active": True, "bars_active": 20, "peak_equity": PEAK}, ["body", "kill_switch", "bars_active"]),
        ({"active": "perhaps", "bars_active": 0, "peak_equity": PEAK}, ["body", "kill_switch", "active"]),
        ({"active": True, "bars_active": 0, "peak_equity": 0}, ["body", "kill_switch", "peak_equity"]),
        ({"active": True, "bars_active": 0, "peak_equity": "NaN"}, ["body", "kill_switch", "peak_equity"]),
        ({"active": True, "bars_active": 0}, ["body", "kill_switch", "peak_equity"]),
        ({"active": False, "bars_active": 3, "peak_equity": PEAK}, ["body", "kill_switch"]),
    ],
)
def test_a_bad_kill_switch_state_is_a_422_naming_the_field(
    service: DecisionService, state: dict[str, Any], loc: list[str]
) -> None:
    from fastapi.testclient import TestClient

    from raytrade.serve.app import DirectBackend, HttpConfig, create_api

    bar = _bars(service, 1)[0]
    body = _request(service, bar, PEAK).model_dump(mode="json") | {"kill_switch": state}
    api = create_api(DirectBackend(service, TOKEN), HttpConfig(max_as_of_skew_s=None))
    with TestClient(api) as client:
        r = client.post("/v1/act", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == loc, detail
    if loc == ["body", "kill_switch"]:
        assert "bars_active=3" in detail["msg"]


def test_a_policy_without_a_switch_ignores_the_callers_count_instead_of_refusing_it() -> None:
    """A loop keeps its own switch on when the served rule is ``disabled`` (``serve.kill_switch_rule``),
    and the service honours its state (unwind only): its count may pass the trained
    ``release_after_bars``, a rule a policy without a switch never applies, so it is not refused."""
    handle = _handle("ppo_mlp")
    cfg = handle.env_config()
    off = cfg.model_copy(
        update={"sim": cfg.sim.model_copy(update={"kill_switch": KillSwitchConfig(enabled=False)})}
    )
    data = serving_market_data(off, handle.manifest.data.symbols)
    service = DecisionService(
        _FixedAction(handle, np.ones(len(data.symbols)), off), data, ServeConfig(max_feature_age_hours=None)
    )
    rb = off.sim.kill_switch.release_after_bars
    assert rb is not None
    state = CallerKillSwitch(active=True, bars_active=rb + 5, peak_equity=PEAK)
    (answer,) = service.decide([_request(service, _bars(service, 1)[0], PEAK, kill_switch=state)])
    assert not answer.fallback, answer.reason
    assert (answer.kill_switch_rule, answer.kill_switch_active) == ("caller_state", True)
    assert not _added_risk(service, answer)


def test_a_fallback_holds_and_reports_the_callers_switch() -> None:
    request = ActRequest.model_validate(
        {
            "account": {"equity": 80_000.0},
            "positions": [{"symbol": "AAPL", "qty": "10", "side": "long", "market_value": "4000"}],
            "drawdown_pct": -0.2,
            "analysis": {"AAPL": {"bid_price": 399.9, "ask_price": 400.1}},
            "kill_switch": {"active": True, "bars_active": 2, "peak_equity": PEAK},
        }
    )
    answer = hold_everything(request, "unavailable", 0, "policy service unavailable: test")
    assert answer.fallback and answer.decisions["AAPL"].target_weight == 0.05
    assert (answer.kill_switch_active, answer.kill_switch_rule) == (True, None)


def test_the_model_summary_gives_the_rule_a_caller_advances_its_state_with(service: DecisionService) -> None:
    assert KillSwitchConfig.model_validate(service.describe()["kill_switch"]) == KillSwitchConfig()
    tighter = DecisionService(service.handle, service.data, ServeConfig(kill_drawdown=0.1))
    assert tighter.describe()["kill_switch"] == KillSwitchConfig(trigger_drawdown=0.1).model_dump()


def test_the_client_advances_its_switch_with_the_stricter_trigger_the_service_publishes(
    service: DecisionService,
) -> None:
    # the service trips at 10 % and publishes it (GET /v1/model), which the client advances with instead
    # of the default rule (trigger 20 %): at 15 % down the client's switch is on; at 8 % (under both
    # triggers, above the 5 % release) the trained hysteresis keeps it on; at 4 % it is released
    tighter = DecisionService(service.handle, service.data, ServeConfig(kill_drawdown=0.1))
    equities = [PEAK * (1 - dd) for dd in (0.15, 0.08, 0.04)]
    serving = _serving(tighter)
    url, received = next(serving)
    try:
        answers = _through_the_client(url, tighter, equities)
    finally:
        serving.close()
    assert [a.kill_switch_active for a in answers] == [True, True, False]
    assert [_added_risk(tighter, a) for a in answers] == [False, False, True]
    assert [r.kill_switch for r in received] == [
        CallerKillSwitch(active=True, bars_active=0, peak_equity=PEAK),  # the served rule: tripped
        CallerKillSwitch(active=True, bars_active=1, peak_equity=PEAK),
        CallerKillSwitch(active=False, bars_active=0, peak_equity=PEAK),  # back within 5 %: released
    ]
