"""The service's front door without Ray: the token and the body size are checked before the body is
read (serve.guard), weak tokens are refused at start-up, and as_of must be near the server clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raytrade.serve.guard import MIN_TOKEN_CHARS, GuardMiddleware, WeakTokenError, check_token, token_digest

TOKEN = "guard-token-for-tests-0123456789abcdef"
LIMIT = 1024


class Recorder:
    """An ASGI app that records the body it was given (the app behind the guard)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(
    guard: GuardMiddleware,
    headers: dict[str, str],
    chunks: Iterator[bytes],
    path: str = "/v1/act",
    root_path: str = "",
) -> tuple[int, dict[str, Any], int]:
    """(status, JSON body, chunks read) of one request through ``guard``."""
    read = 0
    sent: list[dict[str, Any]] = []
    upcoming = next(chunks, None)

    async def receive() -> dict[str, Any]:
        nonlocal read, upcoming
        chunk, upcoming = upcoming, next(chunks, None)
        read += 1
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": upcoming is not None}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": root_path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    body = sent[1]["body"]
    return status, (json.loads(body) if body != b"ok" else {}), read


def _guard(app: Recorder | None = None) -> GuardMiddleware:
    return GuardMiddleware(app or Recorder(), token_digest(TOKEN), LIMIT, open_paths={"/v1/health"})


def _endless(chunk: bytes = b"{" * 100) -> Iterator[bytes]:
    while True:
        yield chunk


def _last(body: bytes) -> Iterator[bytes]:
    """A body as one final ASGI message."""
    yield body


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong-token"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "invalid bearer token"),
        ({"Authorization": "Bearer "}, "invalid bearer token"),
    ],
)
def test_no_or_wrong_token_is_401_and_the_body_is_never_read(headers: dict[str, str], detail: str) -> None:
    app = Recorder()
    status, body, read = _call(_guard(app), {**headers, "content-length": "999999999"}, _endless())
    assert (status, body, read) == (401, {"detail": detail}, 0)
    assert app.bodies == []


def test_a_declared_oversize_body_is_413_unread() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "content-length": str(LIMIT + 1)}
    status, body, read = _call(_guard(), headers, _endless())
    assert (status, body, read) == (413, {"detail": f"request body over {LIMIT} bytes"}, 0)


def test_a_streamed_oversize_body_is_413_after_reading_just_past_the_limit() -> None:
    status, body, read = _call(_guard(), {"Authorization": f"Bearer {TOKEN}"}, _endless(b"x" * 100))
    assert status == 413 and body == {"detail": f"request body over {LIMIT} bytes"}
    assert read == LIMIT // 100 + 1  # 11 chunks of 100 bytes: 1100 > 1024


def test_a_body_within_the_limit_reaches_the_app_unchanged_and_marked_authenticated() -> None:
    app = Recorder()
    payload = b'{"a": 1}' * 100
    status, _, _ = _call(
        _guard(app), {"Authorization": f"Bearer {TOKEN}"}, iter([payload[:500], payload[500:]])
    )
    assert status == 200 and app.bodies == [payload]
    assert app.scopes[0]["state"]["authenticated"] is True


def test_open_paths_pass_without_the_token_marked_unauthenticated() -> None:
    app = Recorder()
    status, _, _ = _call(_guard(app), {}, _last(b""), path="/v1/health")
    assert status == 200 and app.scopes[0]["state"]["authenticated"] is False
    status, _, _ = _call(_guard(app), {}, _last(b""), path="/v1/health/../model")
    assert status == 401


@pytest.mark.parametrize(
    ("path", "root_path", "status"),
    [
        ("/policy/v1/health", "/policy", 200),  # under a route prefix (Ray Serve sets root_path to it)
        ("/a/b/v1/health", "/a/b", 200),
        ("/policy/v1/health", "", 401),  # a prefix the server did not mount is part of the path
        ("/policy/v1/health", "/other", 401),
        ("/policyx/v1/health", "/policy", 401),
        ("/policy/v1/act", "/policy", 401),
        ("/policy", "/policy", 401),
    ],
)
def test_open_paths_are_matched_as_the_router_matches_them(path: str, root_path: str, status: int) -> None:
    """The open paths are the app's own, under whatever route prefix the server mounted it at: the
    health probe of a service deployed at ``/policy`` answered 401 without the token."""
    app = Recorder()
    got, _, _ = _call(_guard(app), {}, _last(b""), path=path, root_path=root_path)
    assert got == status
    if status == 200:
        assert app.scopes[0]["state"]["authenticated"] is False


def test_tokens_shorter_than_32_characters_are_refused_without_echoing_them() -> None:
    assert check_token("k" * MIN_TOKEN_CHARS) == "k" * MIN_TOKEN_CHARS
    with pytest.raises(WeakTokenError) as err:
        check_token("short-secret-value")
    assert "18 characters, fewer than 32" in str(err.value) and "short-secret-value" not in str(err.value)


@pytest.mark.parametrize("command", [["serve", "--model", "alpha"], ["live", "--paper", "--once"]])
def test_serve_and_live_refuse_a_weak_token_in_one_line(
    command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from raytrade.cluster.cli import main

    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "short-secret-value")
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    result = CliRunner().invoke(
        main, [*command, "--registry" if command[0] == "serve" else "--state-file", str(tmp_path / "x")]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: RAYTRADE_SERVE_TOKEN has 18 characters, fewer than 32: use a random one, "
        "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    ]


def test_serve_refuses_a_weak_registry_key_before_ray_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from raytrade.cluster import local_cluster
    from raytrade.cluster.cli import main

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started before the registry key was checked")

    monkeypatch.setattr(local_cluster, "init_ray", no_ray)
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "t" * 40)
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", "short-registry-key")
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    result = CliRunner().invoke(main, ["serve", "--model", "alpha", "--registry", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: RAYTRADE_REGISTRY_HMAC_KEY has 18 characters, fewer than 32")
    assert "short-registry-key" not in result.output


def test_the_app_builder_and_build_app_refuse_a_weak_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from raytrade.cluster.serve_app import app_builder
    from raytrade.serve.app import ServiceConfig, build_app

    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "short-secret-value")
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    with pytest.raises(WeakTokenError, match="fewer than 32"):
        app_builder({"model": "alpha", "registry": "/data/registry"})
    with pytest.raises(WeakTokenError, match="fewer than 32"):
        build_app(ServiceConfig(model="alpha", registry="/data/registry"), "short-secret-value")


def test_as_of_must_be_near_the_server_clock() -> None:
    from raytrade.serve.app import check_as_of
    from raytrade.serve.decide import RequestError

    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    check_as_of(now - timedelta(seconds=900), now, 900.0)
    check_as_of(None, now, 900.0)
    check_as_of(now - timedelta(days=400), now, None)
    with pytest.raises(RequestError) as err:
        check_as_of(now - timedelta(seconds=901), now, 900.0)
    assert err.value.loc == ("as_of",) and "-901 s from the server clock" in err.value.msg
    with pytest.raises(RequestError):
        check_as_of(now + timedelta(hours=1), now, 900.0)


REGISTRY_KEY = "registry-key-for-tests-0123456789abcdef"


def test_replicas_get_a_function_that_reads_the_registry_key_never_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ray import cloudpickle

    from raytrade.cluster.serve_app import app_builder
    from raytrade.cluster.settings import registry_hmac_key
    from tests.test_registry import _promote_fake

    _promote_fake(tmp_path, REGISTRY_KEY)  # the builder checks the version under the key
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", TOKEN)
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", REGISTRY_KEY)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    app = app_builder({"model": "alpha", "registry": str(tmp_path / "registry")})
    assert app._bound_deployment.init_args[2] is registry_hmac_key
    assert REGISTRY_KEY.encode() not in cloudpickle.dumps(app)  # what Ray ships to the controller


def test_a_replica_holding_the_key_refuses_a_version_without_an_hmac(tmp_path: Any) -> None:
    from pydantic import SecretStr

    from raytrade.models.registry import RegistryError
    from raytrade.serve.app import PolicyHolder, ServiceConfig
    from tests.test_registry import _promote_fake

    _promote_fake(tmp_path, None)
    holder = PolicyHolder(registry_key=lambda: SecretStr(REGISTRY_KEY))
    with pytest.raises(RegistryError, match=r"^alpha@1 .* carries no HMAC and a registry key is set"):
        holder.configure(ServiceConfig(model="alpha", registry=str(tmp_path / "registry")))
    assert holder.service is None


def test_a_replica_of_a_signing_deployment_without_the_key_refuses_to_load(tmp_path: Any) -> None:
    """The deployer had a key (the replica is bound a reader), the replica's machine has none: it
    refuses instead of loading the version with its sha256s only (which whoever rewrote a file can
    rewrite too)."""
    from raytrade.serve.app import PolicyHolder, ServiceConfig
    from tests.test_registry import _promote_fake

    _promote_fake(tmp_path, REGISTRY_KEY)
    holder = PolicyHolder(registry_key=lambda: None)
    with pytest.raises(RuntimeError, match=r"^alpha: this deployment checks registry signatures.*not set"):
        holder.configure(ServiceConfig(model="alpha", registry=str(tmp_path / "registry")))
    assert holder.service is None


# ------------------------------------------------------------------------- batching (no timer)


class Gated:
    """A batch function that records each batch and, while ``gate`` is clear, blocks in its thread
    (a batch "being decided")."""

    def __init__(self) -> None:
        import threading

        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.started.set()
        if not self.gate.wait(5):
            raise TimeoutError("the test never opened the gate")
        return [10 * i for i in items]


async def _batched(batcher: Any, run: Gated, first: int, rest: list[int]) -> list[int]:
    """``first`` starts a batch; ``rest`` arrive while it is decided; then the gate opens."""
    calls = [asyncio.ensure_future(batcher(first))]
    await asyncio.to_thread(run.started.wait, 5)
    calls += [asyncio.ensure_future(batcher(i)) for i in rest]
    await asyncio.sleep(0.01)  # every later call is queued behind the running batch
    run.gate.set()
    return list(await asyncio.gather(*calls))


def test_calls_arriving_during_a_batch_go_together_in_the_next_one_up_to_the_limit() -> None:
    from raytrade.serve.batcher import DrainBatcher

    run = Gated()
    answers = asyncio.run(_batched(DrainBatcher(run, max_batch_size=3), run, 0, [1, 2, 3, 4, 5]))
    assert answers == [0, 10, 20, 30, 40, 50]
    assert run.batches == [[0], [1, 2, 3], [4, 5]]


def test_by_default_a_call_on_an_idle_replica_waits_for_no_timer() -> None:
    from raytrade.serve.app import ServiceConfig
    from raytrade.serve.batcher import DrainBatcher

    async def one(wait_s: float) -> float:
        batcher: DrainBatcher[int, int] = DrainBatcher(lambda items: items, max_batch_size=16, wait_s=wait_s)
        await batcher(0)  # the worker thread pool is warm
        start = asyncio.get_running_loop().time()
        await batcher(1)
        return asyncio.get_running_loop().time() - start

    # a fill wait (ray.serve.batch's, 2 ms here before) is paid in full by a call that comes alone
    assert asyncio.run(one(0.1)) >= 0.1
    assert asyncio.run(one(ServiceConfig.model_fields["batch_wait_ms"].default / 1000)) < 0.1


def test_a_fill_wait_collects_calls_arriving_within_it() -> None:
    from raytrade.serve.batcher import DrainBatcher

    async def two(wait_s: float) -> list[list[int]]:
        batches: list[list[int]] = []
        batcher: DrainBatcher[int, int] = DrainBatcher(
            lambda items: batches.append(items) or items, max_batch_size=16, wait_s=wait_s
        )
        first = asyncio.ensure_future(batcher(1))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, batcher(2))
        return batches

    assert asyncio.run(two(0.0)) == [[1], [2]]
    assert asyncio.run(two(0.1)) == [[1, 2]]


def test_the_busy_wait_is_paid_only_while_calls_overlap() -> None:
    from raytrade.serve.batcher import BUSY_SHARE, DrainBatcher

    async def scenario(busy_wait_s: float) -> tuple[list[float], list[list[int]], list[float]]:
        batches: list[list[int]] = []
        batcher: DrainBatcher[int, int] = DrainBatcher(
            lambda items: batches.append(items) or items, max_batch_size=16, busy_wait_s=busy_wait_s
        )
        alone = []
        for i in range(3):  # a lone client: no call finds another waiting, none waits
            await batcher(i)
            alone.append(batcher.fill_wait_s())
        assert batcher.overlap == 0.0
        await asyncio.gather(*(batcher(i) for i in range(10, 20)))  # ten at once: nine overlap
        assert batcher.overlap >= BUSY_SHARE
        batches.clear()
        first = asyncio.ensure_future(batcher(1))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, batcher(2))
        pair = list(batches)
        fills = []
        for i in range(30):  # alone again: the overlap fades and the wait with it
            await batcher(100 + i)
            fills.append(batcher.fill_wait_s())
        return alone, pair, fills

    alone, batches, fills = asyncio.run(scenario(0.1))
    assert alone == [0.0, 0.0, 0.0]
    assert batches == [[1, 2]]  # the second call arrived within the first's busy wait
    assert fills[0] == 0.1 and fills[-1] == 0.0
    assert asyncio.run(scenario(0.0))[1] == [[1], [2]]


def test_a_lone_call_after_an_idle_spell_forgets_the_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    from raytrade.serve import batcher as module

    monkeypatch.setattr(module, "IDLE_RESET_S", 0.05)

    async def scenario() -> tuple[float, float, float]:
        batcher: module.DrainBatcher[int, int] = module.DrainBatcher(
            lambda items: items, max_batch_size=16, busy_wait_s=0.5
        )
        await asyncio.gather(*(batcher(i) for i in range(10)))
        busy = batcher.fill_wait_s()
        await asyncio.sleep(0.1)  # idle longer than IDLE_RESET_S
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher(99)
        return busy, loop.time() - start, batcher.overlap

    busy, lone, overlap = asyncio.run(scenario())
    assert busy == 0.5 and lone < 0.5 and overlap == 0.0


def test_callers_waiting_out_a_fill_wait_are_cancelled_with_the_batcher() -> None:
    from raytrade.serve.batcher import DrainBatcher

    async def scenario() -> bool:
        batcher: DrainBatcher[int, int] = DrainBatcher(lambda items: items, max_batch_size=16, wait_s=10.0)
        call = asyncio.ensure_future(batcher(1))
        await asyncio.sleep(0.01)  # the drain sleeps in its fill wait
        assert batcher._worker is not None
        batcher._worker.cancel()  # what a replica shutting down does to its tasks
        await asyncio.wait([call], timeout=1.0)
        return call.cancelled()

    assert asyncio.run(scenario())


def test_a_failing_batch_fails_its_callers_only_and_the_next_batch_is_decided() -> None:
    from raytrade.serve.batcher import DrainBatcher

    def run(items: list[int]) -> list[int]:
        if 1 in items:
            raise ValueError("bad batch")
        return items

    async def calls() -> tuple[list[Any], int]:
        batcher: DrainBatcher[int, int] = DrainBatcher(run, max_batch_size=2)
        got = await asyncio.gather(*(batcher(i) for i in (0, 1, 2)), return_exceptions=True)
        return got, batcher.batches

    got, batches = asyncio.run(calls())
    assert [type(g).__name__ for g in got[:2]] == ["ValueError", "ValueError"] and got[2] == 2
    assert batches == 2


def test_a_cancelled_caller_is_left_out_of_its_batch() -> None:
    from raytrade.serve.batcher import DrainBatcher

    async def calls() -> list[int]:
        run = Gated()
        batcher: DrainBatcher[int, int] = DrainBatcher(run, max_batch_size=8)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.to_thread(run.started.wait, 5)
        gone, kept = asyncio.ensure_future(batcher(1)), asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        run.gate.set()
        assert await asyncio.gather(first, kept) == [0, 20]
        return [i for batch in run.batches for i in batch]

    assert asyncio.run(calls()) == [0, 2]


def test_batch_limits_are_checked_naming_the_value() -> None:
    from raytrade.serve.batcher import DrainBatcher

    with pytest.raises(ValueError, match="max_batch_size must be >= 1, got 0"):
        DrainBatcher(list, max_batch_size=0)
    with pytest.raises(ValueError, match="wait_s must be >= 0, got -0.001"):
        DrainBatcher(list, max_batch_size=1, wait_s=-0.001)
    with pytest.raises(ValueError, match="busy_wait_s must be >= 0, got -1"):
        DrainBatcher(list, max_batch_size=1, busy_wait_s=-1)


def test_every_deploy_path_defaults_to_no_fill_wait() -> None:
    from raytrade.cluster.serve import serve_command
    from raytrade.cluster.serve_app import BuilderArgs
    from raytrade.serve.app import ServiceConfig

    cli = {p.name: p.default for p in serve_command.params}
    assert ServiceConfig.model_fields["batch_wait_ms"].default == 0.0
    assert BuilderArgs(model="m", registry="r").batch_wait_ms == 0.0
    assert cli["batch_wait_ms"] == 0.0
    # the busy wait (paid only under overlapping requests) is the same on every path
    busy = {
        ServiceConfig.model_fields["busy_wait_ms"].default,
        BuilderArgs(model="m", registry="r").busy_wait_ms,
    }
    assert busy == {cli["busy_wait_ms"]} == {2.0}


# ---------------------------------------------------------------------------------- the version, before Ray


class RayStarted(Exception):
    """Raised by the stand-in for ``init_ray``: the command got past its checks."""


def _version(tmp_path: Path, case: str) -> Path:
    """A registry with ``alpha@1``: ``{}`` for a manifest, a file changed after promotion, signed with
    another key, or sound (signed with the test key)."""
    from tests.test_registry import KEY, OTHER_KEY, _promote_fake

    if case == "empty_manifest":
        folder = tmp_path / "registry" / "alpha" / "1"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
        return folder
    folder = _promote_fake(tmp_path, OTHER_KEY if case == "other_key" else KEY)
    if case == "tampered":
        (folder / "module" / "module_state.pt").write_bytes(b"other weights")
    return folder


def _refusal(case: str, folder: Path) -> str:
    where = f"alpha@1 ({str(folder.resolve())!r})"
    return {
        "empty_manifest": f"{str(folder.resolve() / 'manifest.json')!r} is not a valid manifest: "
        "field 'name': Field required",
        "tampered": f"{where}: file 'module/module_state.pt' does not match its sha256 in the manifest",
        "other_key": f"{where}: manifest.json does not match its HMAC under the registry key (the "
        "manifest edited, or signed with another key)",
    }[case]


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """``init_ray`` raises :class:`RayStarted`; the token and the registry key are set."""
    from raytrade.cluster import local_cluster
    from tests.test_registry import KEY

    def started(*args: Any, **kwargs: Any) -> None:
        raise RayStarted

    monkeypatch.setattr(local_cluster, "init_ray", started)
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", TOKEN)
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", KEY)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)


@pytest.mark.parametrize("case", ["empty_manifest", "tampered", "other_key"])
@pytest.mark.usefixtures("no_ray")
def test_serve_refuses_a_version_the_replicas_would_refuse_before_ray_starts(
    case: str, tmp_path: Path
) -> None:
    import ray

    from raytrade.cluster.cli import main

    folder = _version(tmp_path, case)
    registry = str(tmp_path / "registry")
    before = ray.is_initialized()  # another test of this worker may have started Ray: not this one
    result = CliRunner().invoke(main, ["serve", "--model", "alpha@1", "--registry", registry])
    assert not isinstance(result.exception, RayStarted), "Ray was started before the version was checked"
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {_refusal(case, folder)}"]
    assert ray.is_initialized() == before


@pytest.mark.usefixtures("no_ray")
def test_serve_of_a_sound_version_gets_past_the_check(tmp_path: Path) -> None:
    from raytrade.cluster.cli import main

    _version(tmp_path, "sound")
    registry = str(tmp_path / "registry")
    result = CliRunner().invoke(main, ["serve", "--model", "alpha@1", "--registry", registry])
    assert isinstance(result.exception, RayStarted), result.output


@pytest.mark.parametrize("case", ["empty_manifest", "tampered", "other_key"])
@pytest.mark.usefixtures("no_ray")
def test_the_app_builder_refuses_a_version_the_replicas_would_refuse(case: str, tmp_path: Path) -> None:
    import ray

    from raytrade.cluster.serve_app import app_builder
    from raytrade.replay.errors import InputError

    folder = _version(tmp_path, case)
    before = ray.is_initialized()  # another test of this worker may have started Ray: not this one
    with pytest.raises(InputError) as refused:
        app_builder({"model": "alpha@1", "registry": str(tmp_path / "registry")})
    assert str(refused.value) == _refusal(case, folder)
    assert ray.is_initialized() == before


@pytest.mark.parametrize("declared", [b"\xb2", b"1\xb2", b"\xb9\xb2", b"-5", b"x"])
def test_a_content_length_that_is_not_ascii_digits_is_left_to_the_stream_check(declared: bytes) -> None:
    """Latin-1 ``"²"`` (byte 0xB2, as ASGI servers decode headers) passes ``isdigit()`` but ``int()``
    raises on it: such a header must not crash the guard (on the act route's fast path no middleware
    would turn the error into a 500); the body's own size still decides the 413."""
    for chunks, status in ((_last(b"{}"), 200), (_endless(b"x" * 100), 413)):
        sent: list[dict[str, Any]] = []

        async def receive(chunks: Iterator[bytes] = chunks) -> dict[str, Any]:
            chunk = next(chunks)
            return {"type": "http.request", "body": chunk, "more_body": chunk != b"{}"}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        headers = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-length", declared)]
        scope = {"type": "http", "method": "POST", "path": "/v1/act", "headers": headers}
        asyncio.run(_guard()(scope, receive, send))
        assert sent[0]["status"] == status
