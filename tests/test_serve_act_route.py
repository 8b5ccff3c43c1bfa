"""``POST /v1/act``'s fast path (``serve.app.ServiceAPI``) answers every request as the FastAPI route
does: the same status, content type and body (decision ids apart) for valid, malformed, unauthorised,
oversized and unanswerable requests. No Ray: an untrained seeded policy (``tests.test_serve_fast_path``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from raytrade.serve.app import DirectBackend, HttpConfig, ServiceAPI, create_api
from raytrade.serve.decide import DecisionService, Prepared, ServeConfig, serving_market_data
from raytrade.serve.schemas import ACT_PATH, ActResponse
from tests.test_serve_fast_path import _handle

TOKEN = "act-route-token-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def service() -> DecisionService:
    handle = _handle("ppo_mlp")
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    return DecisionService(handle, data, ServeConfig(max_feature_age_hours=None))


def _body(service: DecisionService, **update: Any) -> dict[str, Any]:
    symbols = list(service.data.symbols)
    body: dict[str, Any] = {
        "account": {"equity": 100_000.0, "cash": 70_000.0},
        "positions": [{"symbol": symbols[0], "qty": "10", "side": "long", "market_value": "20000"}],
        "drawdown_pct": -0.02,
        "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in symbols},
        "as_of": service.closed_at(-1).isoformat(),
    }
    return {**body, **update}


class _Backend(DirectBackend):
    """A DirectBackend whose service can be taken away (503) or whose decision can raise (500)."""

    loaded = True
    broken = False

    def current(self) -> DecisionService | None:
        return self.service if self.loaded else None

    async def decide(self, service: DecisionService, prepared: Prepared) -> ActResponse:
        if self.broken:
            raise RuntimeError("the decision failed")
        return await super().decide(service, prepared)


def _clients(
    service: DecisionService, backend: _Backend, **http: Any
) -> tuple[TestClient, TestClient, list[str]]:
    """The same app twice, through the fast path and with it off (FastAPI's route), and the paths of the
    requests the fast path took."""
    api = create_api(backend, HttpConfig(**{"max_as_of_skew_s": None, **http}))
    assert isinstance(api, ServiceAPI) and api.fast_act is not None
    fast_act, taken = api.fast_act, []

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        taken.append(scope["path"])
        await fast_act(scope, receive, send)

    class _Off(ServiceAPI):  # the route's side: the same app, its fast path off
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            api.fast_act = None
            try:
                await api(scope, receive, send)
            finally:
                api.fast_act = counted

    api.fast_act = counted
    return (
        TestClient(api, raise_server_exceptions=False),
        TestClient(_Off(), raise_server_exceptions=False),
        taken,
    )


def _seen(response: Any) -> tuple[int, str | None, Any]:
    content_type = response.headers.get("content-type")
    try:
        payload = response.json()
    except ValueError:
        return response.status_code, content_type, response.text
    if isinstance(payload, dict):
        payload.pop("decision_id", None)
    return response.status_code, content_type, payload


def _cases(service: DecisionService) -> list[tuple[str, Callable[[TestClient], Any]]]:
    symbols = list(service.data.symbols)
    good = _body(service)
    nan_body = json.dumps(good).replace('"cash": 70000.0', '"cash": NaN')
    unknown = _body(service, analysis={"NOPE": {"bid_price": 1.0, "ask_price": 1.01}})
    return [
        ("valid", lambda c: c.post(ACT_PATH, json=good, headers=AUTH)),
        (
            "valid, charset",
            lambda c: c.post(
                ACT_PATH,
                content=json.dumps(good),
                headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
            ),
        ),
        ("no token", lambda c: c.post(ACT_PATH, json=good)),
        ("wrong token", lambda c: c.post(ACT_PATH, json=good, headers={"Authorization": "Bearer x" * 40})),
        ("over the size limit", lambda c: c.post(ACT_PATH, content=b" " * 5000, headers=JSON)),
        ("not JSON", lambda c: c.post(ACT_PATH, content=b"{not json", headers=JSON)),
        ("empty", lambda c: c.post(ACT_PATH, content=b"", headers=JSON)),
        (
            "not sent as JSON",
            lambda c: c.post(
                ACT_PATH, content=json.dumps(good), headers={**AUTH, "Content-Type": "text/plain"}
            ),
        ),
        ("no content type", lambda c: c.post(ACT_PATH, content=json.dumps(good), headers=AUTH)),
        ("NaN", lambda c: c.post(ACT_PATH, content=nan_body, headers=JSON)),
        (
            "a field out of range",
            lambda c: c.post(ACT_PATH, json={**good, "drawdown_pct": 0.5}, headers=AUTH),
        ),
        (
            "a boolean as a number",
            lambda c: c.post(ACT_PATH, json={**good, "account": {"equity": True}}, headers=AUTH),
        ),
        ("a symbol outside the universe", lambda c: c.post(ACT_PATH, json=unknown, headers=AUTH)),
        (
            "a repeated position",
            lambda c: c.post(ACT_PATH, json={**good, "positions": good["positions"] * 2}, headers=AUTH),
        ),
        ("an as_of far from now", lambda c: c.post(ACT_PATH, json=good, headers=AUTH)),  # skew set below
        ("GET", lambda c: c.get(ACT_PATH, headers=AUTH)),
        ("trailing slash", lambda c: c.post(ACT_PATH + "/", json=good, headers=AUTH, follow_redirects=False)),
        ("health", lambda c: c.get("/v1/health", headers=AUTH)),
        (
            "a symbol missing",
            lambda c: c.post(
                ACT_PATH,
                json=_body(service, analysis={symbols[1]: {"bid_price": 1.0, "ask_price": 1.01}}),
                headers=AUTH,
            ),
        ),
    ]


@pytest.mark.parametrize("skew", [None, 60.0])
def test_the_fast_path_answers_every_request_as_the_route_does(
    service: DecisionService, skew: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.serve import app

    class _Clock(datetime):  # one server clock for both paths: a skew's 422 quotes it
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime(2026, 12, 4, 16, 0, tzinfo=UTC)

    monkeypatch.setattr(app, "datetime", _Clock)
    backend = _Backend(service, TOKEN)
    fast, route, taken = _clients(service, backend, max_body_bytes=4096, max_as_of_skew_s=skew)
    for name, call in _cases(service):
        got, want = _seen(call(fast)), _seen(call(route))
        assert got == want, name
    assert taken and set(taken) == {ACT_PATH}  # every POST /v1/act, and nothing else, took the fast path
    assert _seen(_cases(service)[0][1](fast))[0] == (200 if skew is None else 422)


@pytest.mark.parametrize(("state", "status"), [("loaded", 503), ("broken", 500)])
def test_a_missing_policy_and_a_failing_decision_answer_as_the_route_does(
    service: DecisionService, state: str, status: int
) -> None:
    backend = _Backend(service, TOKEN)
    fast, route, taken = _clients(service, backend)
    setattr(backend, state, state == "broken")  # loaded=False: no policy; broken=True: decide raises
    good = _body(service)
    got, want = (_seen(c.post(ACT_PATH, json=good, headers=AUTH)) for c in (fast, route))
    assert got == want and got[0] == status and taken == [ACT_PATH]


def test_requests_count_once_whichever_way_they_come(service: DecisionService) -> None:
    backend = _Backend(service, TOKEN)
    for client in _clients(service, backend)[:2]:
        assert client.post(ACT_PATH, json=_body(service), headers=AUTH).status_code == 200
    assert (backend.requests, backend.batches) == (2, 2)


def _scope(method: str, path: str, root: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An HTTP request's ASGI scope, the app mounted at ``root`` (as Ray Serve mounts it at its route
    prefix: ``path`` holds the prefix, ``root_path`` names it)."""
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
    }


@pytest.mark.parametrize(
    ("path", "root", "fast"),
    [
        ("/v1/act", "", True),
        ("/service/v1/act", "/service", True),  # Serve mounts an app at its route prefix
        ("/servicev1/act", "/service", False),
        ("/v1/act", "/v1/act", False),  # a route prefix of /v1/act: FastAPI's 404, not the fast path
        ("/other/v1/act", "/service", False),
        ("/service/v1/act/", "/service", False),
    ],
)
def test_the_fast_path_takes_the_path_the_router_would_match(
    service: DecisionService, path: str, root: str, fast: bool
) -> None:
    import asyncio

    api = create_api(_Backend(service, TOKEN), HttpConfig(max_as_of_skew_s=None))
    assert isinstance(api, ServiceAPI)
    taken: list[str] = []

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        taken.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    api.fast_act = recorded
    asyncio.run(api(_scope("POST", path, root), receive, send))
    assert taken == ([path] if fast else [])


@pytest.mark.parametrize("root", ["", "/service"])
def test_health_is_open_and_the_model_is_not_under_a_route_prefix(
    service: DecisionService, root: str
) -> None:
    """Ray Serve mounts the app at its route prefix (``root_path``): the liveness probe answers there
    without the token (it was 401), saying only that the service is up; every other path still wants it."""
    import asyncio

    api = create_api(_Backend(service, TOKEN), HttpConfig(max_as_of_skew_s=None))

    def get(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        asyncio.run(api(_scope("GET", root + path, root, headers), receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    assert get("/v1/health", {}) == (200, b'{"status":"ok"}')
    status, body = get("/v1/health", AUTH)
    assert status == 200 and json.loads(body)["model"] == service.model_ref
    assert get("/v1/model", {})[0] == 401
