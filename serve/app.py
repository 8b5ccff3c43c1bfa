"""Ray Serve application: the FastAPI ingress around :class:`serve.decide.DecisionService`.

Routes
------
Every route but ``GET /v1/health`` needs the bearer token, checked before the body is read
(:mod:`serve.guard`: 401 whatever the body; 413 above ``HttpConfig.max_body_bytes``).

* ``POST /v1/act`` — :class:`serve.schemas.ActRequest` -> :class:`serve.schemas.ActResponse`.
  422 naming the field for a malformed request (NaN, inf, out-of-range values, too many rows, unknown
  symbol, ``as_of`` before the data or further than ``HttpConfig.max_as_of_skew_s`` from the server
  clock); 503 while no policy is loaded.
* ``GET /v1/health`` — 200 ``{"status": "ok"}`` without the token (a liveness probe reveals nothing);
  with it, also the model, its data's last bar and the request counters.
* ``GET /v1/model`` — the loaded version's manifest summary.
* ``/docs``, ``/redoc``, ``/openapi.json`` — only with ``HttpConfig.docs`` (and then open).

The routes are built by :func:`create_api` over a :class:`Backend` (a replica, or
:class:`DirectBackend` without Ray), so the same HTTP surface runs in-process for tests.

Design decisions
----------------
* **The token never enters Ray.** The deployment holds the SHA-256 of the bearer token, not the token:
  deployment arguments live in the Serve controller's state. Requests are checked by hashing the
  presented token and comparing digests in constant time.
* **Nor does the registry key.** With an HMAC key for the registry (``models.registry.verify_mac``),
  the deployment is bound a function that reads it (:data:`RegistryKey`); each replica calls it in
  its own process whenever it loads a version, and refuses to load when its machine has no key
  (a deployment whose deployer signs never serves a version unchecked).
* **Dynamic batching without a timer.** Concurrent requests are decided in one policy forward
  (:class:`serve.batcher.DrainBatcher`, ``max_batch_size``): a request that finds no batch being
  decided is decided at once, those that arrive meanwhile go together in the next batch, so an idle
  service adds no wait and a loaded one batches as much as the load gives (``batch_wait_ms`` > 0
  adds a fill wait; measured in ``benchmarks.serve_latency``). Each request is checked on its own
  first, so one bad request gets its 422 and never fails a batch.
* **The body parsed once.** ``POST /v1/act`` reads its raw body and validates it with one
  pydantic-core call (``ActRequest.model_validate_json``), not FastAPI's body parameter (``json.loads``
  and then validation of the Python objects, about twice the time for a 32-symbol request); errors
  keep FastAPI's 422 shape (``loc`` from ``body``), and the OpenAPI document still describes the
  request. The answer is written by ``ActResponse.model_dump_json`` (it was validated when built),
  not validated and serialised again by FastAPI's ``response_model``.
* **The act route past FastAPI's stack.** :class:`ServiceAPI` sends ``POST /v1/act`` from the guard
  straight to the route's own handler (FastAPI's middleware stack, router and request handler were
  ~60 us of CPU a request); the responses are the route's, and every other request goes through FastAPI.
* **Hot swap without dropping requests.** The policy reference lives in ``user_config``: a new
  ``model`` there (``serve.run`` of the same app, or ``raytrade serve`` again) calls
  :meth:`PolicyService.reconfigure` on the running replicas, which load the new version and swap one
  reference. Without a pinned ``@VERSION`` the replicas also follow the registry's ``latest`` and the
  store's newest bars: Serve's periodic health check looks, and a change is loaded in a background
  thread while the old version keeps answering. A request in flight finishes on the version it
  started with (its batch carries the service it was checked against).
* **Probed before it answers.** Every version a replica loads decides a probe request first
  (:meth:`serve.decide.DecisionService.probe`). In a background reload, a new version that raises or
  falls back on it is refused and the previous one keeps answering (new bars of the same version are
  refused only when the probe raises: their fallback is the data's answer, and requests hold on it).
  At start-up or on ``reconfigure`` the error ends the load: Serve marks the replica failed, so a
  deploy of a version that cannot decide fails loudly instead of serving it.
* **The collector kept off the request path.** After each load the heap is collected and frozen
  (:mod:`serve.heap`), and what the first requests built is frozen after
  :data:`serve.heap.FREEZE_AFTER_REQUESTS`: full collections then scan only what requests leave,
  not the whole loaded heap (measured: 10-30 ms pauses every ~2 s under load became ~0.5 ms).
* **Kill switch, stale data, holds:** see :mod:`serve.decide`.
"""

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from ray import serve
from starlette._utils import get_route_path  # as FastAPI's router imports it
from starlette.types import ASGIApp, Receive, Scope, Send

from raytrade.serve.batcher import DEFAULT_BUSY_WAIT_MS, DrainBatcher
from raytrade.serve.decide import (
    DecisionService,
    Prepared,
    ProbeFellBack,
    RequestError,
    ServeConfig,
    serving_market_data,
)
from raytrade.serve.guard import GuardMiddleware, check_digest, check_token, token_digest
from raytrade.serve.heap import LateFreeze, settle
from raytrade.serve.schemas import ACT_PATH, HEALTH_PATH, MODEL_PATH, ActRequest, ActResponse

log = logging.getLogger("raytrade.serve")

APP_NAME = "raytrade"
DEPLOYMENT_NAME = "PolicyService"


class ServiceConfig(BaseModel):
    """``user_config`` of the deployment (changes are applied live by ``reconfigure``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="registry reference NAME (follows latest) or NAME@VERSION (pinned)")
    registry: str = Field(description="registry folder")
    decide: ServeConfig = ServeConfig()
    max_batch_size: int = Field(16, ge=1, le=1024, description="requests decided in one forward")
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long a batch that is not full waits to fill before it is decided (0: at once; "
        "requests that arrive while a batch is decided go in the next one)",
    )
    busy_wait_ms: float = Field(
        DEFAULT_BUSY_WAIT_MS,
        ge=0,
        le=1000,
        description="the same fill wait, paid only while requests overlap (serve.batcher: a lone client "
        "never waits; under load it turns batches of one into batches of several); 0: off",
    )


RegistryKey = Callable[[], SecretStr | None]
"""Where a replica reads the registry's HMAC key (``cluster.settings.registry_hmac_key``: its own
environment): the function travels to the replicas, the key never enters Ray's state."""


def load_service(
    model: str, registry: str, decide: ServeConfig, hmac_key: SecretStr | None = None
) -> DecisionService:
    """A registry version and its market data, ready to decide (with ``hmac_key``, only a version
    whose HMAC matches: ``models.registry.verify_mac``)."""
    from raytrade.models.registry_load import load

    handle = load(model, registry, hmac_key)
    symbols = handle.manifest.data.symbols
    return DecisionService(handle, serving_market_data(handle.env_config(), symbols), decide)


def _source_signature(cfg: ServiceConfig) -> tuple[Any, ...]:
    """What changes when a reload is due: the registry's ``latest`` (unless pinned) and the feature
    files of the store the version was trained on (count, newest modification)."""
    from raytrade.envs.registry_ref import parse_registry_ref
    from raytrade.models.manifest import MANIFEST
    from raytrade.models.registry import resolve

    folder = resolve(cfg.registry, cfg.model)
    version = None if parse_registry_ref(cfg.model).version is not None else folder.name
    stat = (folder / MANIFEST).stat()
    root = _data_root(str(folder), stat.st_mtime_ns, stat.st_size)
    if root is None:
        return (version,)
    files = sorted((Path(root) / "features").glob("year=*/part-*.parquet"))
    return (version, len(files), max((f.stat().st_mtime_ns for f in files), default=0))


@functools.lru_cache(maxsize=32)
def _data_root(folder: str, mtime_ns: int, size: int) -> str | None:
    """The store root of the version in ``folder`` (None: not trained on a store), read from its
    manifest once per (folder, the manifest's modification time and size). Why: Serve's health probe
    asks for :func:`_source_signature` every few seconds on the replica's event loop, where parsing
    the manifest (~1 ms) held every request in flight; a version's manifest does not change, and one
    rewritten in place has another stamp, so it is read again."""
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.models.manifest import read_manifest

    data = read_manifest(folder).env_config().data
    return str(data.root) if isinstance(data, ReplayDataConfig) else None


def _decide_grouped(items: list[tuple[DecisionService, Prepared]]) -> list[ActResponse]:
    """Decide each request with the service version it was checked against (defined before the
    deployment class: Serve serialises the class when it is decorated)."""
    out: dict[int, ActResponse] = {}
    groups: dict[int, list[int]] = {}
    for i, (service, _) in enumerate(items):
        groups.setdefault(id(service), []).append(i)
    for idx in groups.values():
        service = items[idx[0]][0]
        out.update(zip(idx, service.decide_prepared([items[i][1] for i in idx]), strict=True))
    return [out[i] for i in range(len(items))]


class HttpConfig(BaseModel):
    """The HTTP surface of a deployment (fixed for its replicas: a change redeploys them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=64 << 20, description="larger request bodies get 413 without being read"
    )
    docs: bool = Field(False, description="serve /docs, /redoc and /openapi.json (off: they are 404)")
    max_as_of_skew_s: float | None = Field(
        900.0,
        gt=0,
        description="a request's as_of further than this from the server clock is a 422 (None: any as_of, "
        "for replays and tests)",
    )


class Backend(Protocol):
    """What the routes need from a replica: the token digest, the policy, a way to decide, counters."""

    token_sha256: str
    requests: int

    @property
    def batches(self) -> int: ...

    def current(self) -> DecisionService | None: ...

    async def decide(self, service: DecisionService, prepared: Prepared) -> ActResponse: ...


class DirectBackend:
    """A :class:`Backend` without Ray: one service, each request decided on its own (no batching).
    ``create_api(DirectBackend(...), http)`` is the same HTTP surface as a replica's, e.g. for
    in-process clients and tests."""

    def __init__(self, service: DecisionService, token: str) -> None:
        self.token_sha256 = token_digest(check_token(token))
        self.service = service
        self.requests = 0
        self.batches = 0

    def current(self) -> DecisionService | None:
        return self.service

    async def decide(self, service: DecisionService, prepared: Prepared) -> ActResponse:
        self.batches += 1
        (response,) = await asyncio.to_thread(service.decide_prepared, [prepared])
        return response


def check_as_of(as_of: datetime | None, now: datetime, max_skew_s: float | None) -> None:
    """``RequestError`` on ``as_of`` when it is further than ``max_skew_s`` from the server's ``now``.

    A live decision is for *now*: an old ``as_of`` would pick old features (and pass the staleness
    check, which measures feature age from ``as_of``), a future one would mark fresh features stale.
    """
    if as_of is None or max_skew_s is None:
        return
    skew = (as_of - now).total_seconds()
    if abs(skew) > max_skew_s:
        raise RequestError(
            ("as_of",),
            f"{as_of.isoformat()} is {skew:+.0f} s from the server clock {now.isoformat()} "
            f"(allowed: {max_skew_s:g} s); send the current time or leave as_of out",
        )


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters such as ``charset`` aside)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _invalid(errors: Sequence[Mapping[str, Any]]) -> RequestValidationError:
    """FastAPI's 422 for ``errors`` (pydantic's shape), each ``loc`` under ``body``."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


def _parse_act_request(raw: bytes, content_type: str | None) -> ActRequest:
    """The request body as an :class:`ActRequest`, parsed and validated in one pydantic-core call
    (FastAPI's own body parameter runs ``json.loads`` and then validates the Python objects: about
    twice the time for a 32-symbol request). What FastAPI's parameter accepted, this accepts: a body
    pydantic-core's parser refuses (a byte-order mark, UTF-16, a lone surrogate escape) is read by
    ``json.loads`` as FastAPI did. Errors keep FastAPI's shape: a body not sent as JSON, not JSON,
    or not a valid request is a :class:`RequestValidationError` (422) whose ``loc`` starts at ``body``."""
    if not _is_json(content_type):
        shown = (content_type or "none")[:64]
        msg = f"send the body as JSON (Content-Type: application/json), not {shown}"
        raise _invalid([{"loc": (), "msg": msg, "type": "content_type"}])
    try:
        return ActRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] != "json_invalid":
            raise _invalid(errors) from None
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON for json.loads either (a UnicodeDecodeError is a
        raise _invalid(errors) from None  # ValueError; a body nested deeper than Python recurses)
    try:
        return ActRequest.model_validate(document)
    except ValidationError as exc:
        raise _invalid(exc.errors(include_url=False)) from None


def _act_request_body() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``POST /v1/act`` (its route reads the raw body itself, so
    FastAPI does not see the model: :func:`_add_request_schemas` adds it to the components)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActRequest"}}},
        }
    }


def _add_request_schemas(api: FastAPI) -> None:
    """``api``'s OpenAPI document also holds :class:`ActRequest` and the models it nests, as components."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        document = build()  # FastAPI keeps it in api.openapi_schema: completed once, here
        request = ActRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(request.pop("$defs", {}))
        components["ActRequest"] = request
        return document

    api.openapi = openapi  # type: ignore[method-assign]


NOT_LOADED = "no policy loaded yet"
"""The 503's detail while a replica has no policy."""


def _invalid_response(exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field; the offending input is left out (a NaN cannot be written as JSON,
    and positions should not be echoed into logs)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


async def _body(receive: Receive) -> bytes | None:
    """A request's whole body (None: the client went away first)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


class ServiceAPI(FastAPI):
    """The service's FastAPI app, with ``POST /v1/act`` sent straight to its handler.

    The route is a FastAPI route (its OpenAPI document, its tests through ``TestClient``), but each
    call through FastAPI's middleware stack, router and request handler cost ~60 us of a replica's
    CPU per request (in process, one thread: 67 us for a guarded route answering fixed bytes against
    5 us for the guard alone), more than the request's whole parse. So ``fast_act``, when set, takes
    ``POST`` on that exact path itself: the same guard (:class:`serve.guard.GuardMiddleware`: 401
    before the body, 413), then the same handler as the route, whose responses (the answer, 422, 503)
    are the same objects the route returns; an error it raises is a bare 500, as Starlette's
    ``ServerErrorMiddleware`` sends, and is raised on to Serve. Every other request, ``/v1/act``
    with another method or a trailing slash included, goes through FastAPI as before."""

    fast_act: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_act is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and get_route_path(scope) == ACT_PATH  # the path the router matches (under a route prefix too)
        ):
            await self.fast_act(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_api(backend: Backend, http: HttpConfig) -> FastAPI:
    """The service's FastAPI app over ``backend``, wrapped in :class:`serve.guard.GuardMiddleware`
    (token before body, body size); the docs routes exist only when ``http.docs``."""
    docs: dict[str, str | None] = {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    if not http.docs:
        docs = dict.fromkeys(docs)
    api = ServiceAPI(title="raytrade policy service", version="1", **docs)  # type: ignore[arg-type]
    _add_request_schemas(api)
    open_paths = {HEALTH_PATH, *(v for v in docs.values() if v)}
    if http.docs:
        open_paths.add("/docs/oauth2-redirect")
    api.add_middleware(
        GuardMiddleware,
        token_sha256=backend.token_sha256,
        max_body_bytes=http.max_body_bytes,
        open_paths=open_paths,
    )

    @api.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid_response(exc)

    def ready() -> DecisionService:
        service = backend.current()
        if service is None:
            raise HTTPException(503, NOT_LOADED)
        return service

    async def answer(raw: bytes, content_type: str | None) -> Response:
        """``POST /v1/act``'s response to a body (what the route and the fast path both send)."""
        try:
            body = _parse_act_request(raw, content_type)
        except RequestValidationError as exc:
            return _invalid_response(exc)
        service = backend.current()
        if service is None:
            return JSONResponse({"detail": NOT_LOADED}, status_code=503)
        backend.requests += 1
        now = datetime.now(UTC)
        try:
            check_as_of(body.as_of, now, http.max_as_of_skew_s)
            prepared = service.prepare(body, now)
        except RequestError as exc:
            return JSONResponse({"detail": [exc.detail()]}, status_code=422)
        decided = await backend.decide(service, prepared)
        return Response(decided.model_dump_json(), media_type="application/json")

    @api.post(
        ACT_PATH,
        response_model=ActResponse,
        openapi_extra=_act_request_body(),
        responses={
            422: {"description": "a malformed request: `detail` names each bad field (`loc` from `body`)"}
        },
    )
    async def act(request: Request) -> Response:
        return await answer(await request.body(), request.headers.get("content-type"))

    async def fast_act(scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _body(receive)
        if raw is None:  # the client went away
            return
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
        try:
            response = await answer(raw, None if content_type is None else content_type.decode("latin-1"))
        except Exception:  # as Starlette's ServerErrorMiddleware: a bare 500, the error raised to Serve
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        await response(scope, receive, send)

    api.fast_act = GuardMiddleware(
        fast_act, token_sha256=backend.token_sha256, max_body_bytes=http.max_body_bytes
    )

    @api.get(HEALTH_PATH)
    def health(request: Request) -> dict[str, Any]:
        service = ready()
        if not request.scope["state"].get("authenticated"):
            return {"status": "ok"}
        return {
            "status": "ok",
            "model": service.model_ref,
            "data_last_bar": service.describe()["data_last_bar"],
            "requests": backend.requests,
            "batches": backend.batches,
        }

    @api.get(MODEL_PATH)
    def model() -> dict[str, Any]:
        return ready().describe()

    return api


class PolicyHolder:
    """The policy a replica answers with, and its swaps (plain Python: the deployment delegates here).

    :meth:`configure` loads and swaps synchronously (Serve's ``reconfigure``). :meth:`refresh` compares
    the sources (registry ``latest``, the store's feature files) with what is loaded and, when they
    changed, loads the new version in a background thread and swaps one reference; requests keep
    being answered by the old version meanwhile. A version that fails to load is not retried until
    the sources change again, and the old one keeps answering.
    """

    def __init__(self, registry_key: RegistryKey | None = None) -> None:
        self.registry_key = registry_key
        self.cfg: ServiceConfig | None = None
        self.service: DecisionService | None = None
        self._signature: tuple[Any, ...] = ()
        self._failed: tuple[Any, ...] | None = None
        self.loading = threading.Lock()

    def _load(self, cfg: ServiceConfig, new_version: bool = True) -> DecisionService:
        """Load, probe (:meth:`DecisionService.probe`) and settle the heap (``serve.heap.settle``).

        A new version that cannot decide the probe (it raises, or falls back) raises here. The same
        version over new store bars raises only when the probe raises: a fallback there (say, a NaN
        feature at the new last bar) is the new data's answer, and every request will hold on it;
        refusing it would keep the previous bars' features trading."""
        key = None if self.registry_key is None else self.registry_key()
        if self.registry_key is not None and key is None:  # the deployer signs: never load unchecked
            raise RuntimeError(
                f"{cfg.model}: this deployment checks registry signatures, but the registry key "
                "(RAYTRADE_REGISTRY_HMAC_KEY, or the settings file's registry_hmac_key) is not set on "
                "this replica's machine: refusing to load a version unchecked"
            )
        service = load_service(cfg.model, cfg.registry, cfg.decide, key)
        try:
            service.probe(batch_sizes=cfg.max_batch_size)
        except ProbeFellBack as exc:
            if new_version:
                raise
            log.error("the store's new bars give a fallback answer, serving them (requests hold): %s", exc)
        settle()
        return service

    def configure(self, cfg: ServiceConfig) -> DecisionService:
        with self.loading:
            # the sources as they were before the load: a promote landing during it changes them, and
            # the next refresh reloads (read after the load, they named the new latest while the old
            # version was served, and no refresh ever saw a change)
            signature = _source_signature(cfg)
            service = self._load(cfg)
            self._signature, self._failed = signature, None
            self.cfg, self.service = cfg, service
        log.info("serving %s", service.model_ref)
        return service

    def refresh(self) -> bool:
        """Start a background reload if the sources changed; True when one was started."""
        cfg = self.cfg
        if cfg is None:
            return False
        try:
            signature = _source_signature(cfg)
        except (OSError, ValueError) as exc:  # registry briefly unreadable: keep serving what we have
            log.warning("cannot read the policy's sources: %s", exc)
            return False
        if signature in (self._signature, self._failed) or self.loading.locked():
            return False
        threading.Thread(target=self._reload, args=(cfg, signature), daemon=True).start()
        return True

    def _reload(self, cfg: ServiceConfig, signature: tuple[Any, ...]) -> None:
        with self.loading:
            if self.cfg is not cfg:  # reconfigured meanwhile
                return
            try:
                service = self._load(cfg, new_version=signature[0] != self._signature[0])
            except Exception as exc:  # keep the old version answering
                self._failed = signature
                log.error("reload of %s failed, still serving the previous version: %s", cfg.model, exc)
                return
            self.service, self._signature, self._failed = service, signature, None
        log.info("now serving %s", service.model_ref)


@serve.deployment(name=DEPLOYMENT_NAME, health_check_period_s=5, max_ongoing_requests=256)
@serve.ingress()
class PolicyService:
    """One replica: a loaded policy behind the ``/v1`` routes (:func:`create_api`)."""

    def __init__(
        self, token_sha256: str, http: dict[str, Any] | None = None, registry_key: RegistryKey | None = None
    ):
        if len(token_sha256) != 64:
            raise ValueError("token_sha256 must be the SHA-256 hex digest of the bearer token")
        self.token_sha256 = token_sha256
        self._http = HttpConfig.model_validate(http or {})
        self._holder = PolicyHolder(registry_key)
        self._batcher: DrainBatcher[tuple[DecisionService, Prepared], ActResponse] = DrainBatcher(
            _decide_grouped, ServiceConfig.model_fields["max_batch_size"].default
        )
        self.requests = 0
        self._late_freeze = LateFreeze()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after ``__init__``: the routes close over this replica."""
        return create_api(self, self._http)

    # -------------------------------------------------------------------- configuration and swap

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config``: load the policy it names and swap it in."""
        cfg = ServiceConfig.model_validate(user_config)
        self._holder.configure(cfg)
        self._batcher.configure(cfg.max_batch_size, cfg.batch_wait_ms / 1000.0, cfg.busy_wait_ms / 1000.0)

    def check_health(self) -> None:
        """Serve's periodic probe: raises if unusable; starts a reload when the sources changed."""
        if self._holder.service is None:
            raise RuntimeError("no policy loaded")
        self._holder.refresh()

    # -------------------------------------------------------------------- Backend

    @property
    def batches(self) -> int:
        return self._batcher.batches

    def current(self) -> DecisionService | None:
        return self._holder.service

    async def decide(self, service: DecisionService, prepared: Prepared) -> ActResponse:
        """Decided in a batch (a worker thread, one hop per batch), with the service version the
        request was checked against."""
        self._late_freeze.served()
        return await self._batcher((service, prepared))


def build_app(
    config: ServiceConfig,
    token: str | None = None,
    replicas: int = 1,
    replica_cpus: float = 1.0,
    http: HttpConfig | None = None,
    registry_key: RegistryKey | None = None,
    *,
    token_sha256: str | None = None,
) -> Any:
    """The Serve application for ``serve.run``, given the token or its digest (``sha256:HEX``; one of
    them): the token is checked (:func:`serve.guard.check_token`) and hashed here, a digest checked
    for its shape (:func:`serve.guard.check_digest`); only the digest is bound. ``registry_key``: see
    :data:`RegistryKey`."""
    if (token is None) == (token_sha256 is None):
        raise ValueError("build_app takes the Serve token or its SHA-256 digest, exactly one of them")
    if token is not None and not token:
        raise ValueError("the Serve token is empty: set RAYTRADE_SERVE_TOKEN")
    digest = token_digest(check_token(token)) if token is not None else check_digest(str(token_sha256))
    deployment: Any = PolicyService  # serve.deployment turns the class into a Deployment at runtime
    return deployment.options(
        user_config=config.model_dump(mode="json"),
        num_replicas=replicas,
        ray_actor_options={"num_cpus": replica_cpus},
    ).bind(digest, (http or HttpConfig()).model_dump(mode="json"), registry_key)
