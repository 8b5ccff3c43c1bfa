"""Ray Serve application: the FastAPI ingress around :class:`serve.decide.DecisionService`.

Routes
------
* ``POST /v1/act`` — :class:`serve.schemas.ActRequest` -> :class:`serve.schemas.ActResponse`.
  401 without the bearer token; 422 naming the field for a malformed request (NaN, inf, unknown
  symbol, ``as_of`` before the data); 503 while no policy is loaded.
* ``GET /v1/health`` — 200 with the model and its data's last bar (no token needed: a liveness probe
  carries no secrets and reveals no positions).
* ``GET /v1/model`` — the loaded version's manifest summary (token needed).

Design decisions
----------------
* **The token never enters Ray.** The deployment holds the SHA-256 of the bearer token, not the token:
  deployment arguments live in the Serve controller's state. Requests are checked by hashing the
  presented token and comparing digests in constant time.
* **Dynamic batching.** Concurrent requests are decided in one policy forward (``serve.batch``,
  ``max_batch_size`` / ``batch_wait_ms``); each request is checked on its own first, so one bad
  request gets its 422 and never fails a batch.
* **Hot swap without dropping requests.** The policy reference lives in ``user_config``: a new
  ``model`` there (``serve.run`` of the same app, or ``raytrade serve`` again) calls
  :meth:`PolicyService.reconfigure` on the running replicas, which load the new version and swap one
  reference. Without a pinned ``@VERSION`` the replicas also follow the registry's ``latest`` and the
  store's newest bars: Serve's periodic health check looks, and a change is loaded in a background
  thread while the old version keeps answering. A request in flight finishes on the version it
  started with (its batch carries the service it was checked against).
* **Kill switch, stale data, holds:** see :mod:`serve.decide`.
"""

import asyncio
import hashlib
import hmac
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from raytrade.serve.decide import DecisionService, Prepared, RequestError, ServeConfig, serving_market_data
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
    batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long a batch waits to fill")


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a bearer token (what the deployment stores instead of the token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_service(model: str, registry: str, decide: ServeConfig) -> DecisionService:
    """A registry version and its market data, ready to decide."""
    from raytrade.models.registry_load import load

    handle = load(model, registry)
    symbols = handle.manifest.data.symbols
    return DecisionService(handle, serving_market_data(handle.env_config(), symbols), decide)


def _source_signature(cfg: ServiceConfig) -> tuple[Any, ...]:
    """What changes when a reload is due: the registry's ``latest`` (unless pinned) and the feature
    files of the store the version was trained on (count, newest modification)."""
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.envs.registry_ref import parse_registry_ref
    from raytrade.models.manifest import read_manifest
    from raytrade.models.registry import resolve

    folder = resolve(cfg.registry, cfg.model)
    version = None if parse_registry_ref(cfg.model).version is not None else folder.name
    data = read_manifest(folder).env_config().data
    if not isinstance(data, ReplayDataConfig):
        return (version,)
    files = sorted((Path(data.root) / "features").glob("year=*/part-*.parquet"))
    return (version, len(files), max((f.stat().st_mtime_ns for f in files), default=0))


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


api = FastAPI(title="raytrade policy service", version="1")


@api.exception_handler(RequestValidationError)
async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field; the offending input is left out (a NaN cannot be written as JSON,
    and positions should not be echoed into logs)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


class PolicyHolder:
    """The policy a replica answers with, and its swaps (plain Python: the deployment delegates here).

    :meth:`configure` loads and swaps synchronously (Serve's ``reconfigure``). :meth:`refresh` compares
    the sources (registry ``latest``, the store's feature files) with what is loaded and, when they
    changed, loads the new version in a background thread and swaps one reference; requests keep
    being answered by the old version meanwhile. A version that fails to load is not retried until
    the sources change again, and the old one keeps answering.
    """

    def __init__(self) -> None:
        self.cfg: ServiceConfig | None = None
        self.service: DecisionService | None = None
        self._signature: tuple[Any, ...] = ()
        self._failed: tuple[Any, ...] | None = None
        self.loading = threading.Lock()

    def configure(self, cfg: ServiceConfig) -> DecisionService:
        with self.loading:
            service = load_service(cfg.model, cfg.registry, cfg.decide)
            self._signature, self._failed = _source_signature(cfg), None
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
                service = load_service(cfg.model, cfg.registry, cfg.decide)
            except Exception as exc:  # keep the old version answering
                self._failed = signature
                log.error("reload of %s failed, still serving the previous version: %s", cfg.model, exc)
                return
            self.service, self._signature, self._failed = service, signature, None
        log.info("now serving %s", service.model_ref)


@serve.deployment(name=DEPLOYMENT_NAME, health_check_period_s=5, max_ongoing_requests=256)
@serve.ingress(api)
class PolicyService:
    """One replica: a loaded policy behind the ``/v1`` routes."""

    def __init__(self, token_sha256: str):
        if len(token_sha256) != 64:
            raise ValueError("token_sha256 must be the SHA-256 hex digest of the bearer token")
        self._token_sha256 = token_sha256
        self._holder = PolicyHolder()
        self.requests = 0
        self.batches = 0

    # -------------------------------------------------------------------- configuration and swap

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config``: load the policy it names and swap it in."""
        cfg = ServiceConfig.model_validate(user_config)
        self._holder.configure(cfg)
        batcher: Any = self._decide_batch  # serve.batch adds the setters at runtime
        batcher.set_max_batch_size(cfg.max_batch_size)
        batcher.set_batch_wait_timeout_s(cfg.batch_wait_ms / 1000.0)

    def check_health(self) -> None:
        """Serve's periodic probe: raises if unusable; starts a reload when the sources changed."""
        if self._holder.service is None:
            raise RuntimeError("no policy loaded")
        self._holder.refresh()

    # -------------------------------------------------------------------- routes

    def _authorize(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token_digest(token.strip()), self._token_sha256):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    def _ready(self) -> DecisionService:
        service = self._holder.service
        if service is None:
            raise HTTPException(503, "no policy loaded yet")
        return service

    @api.post(ACT_PATH, response_model=ActResponse)
    async def act(self, body: ActRequest, authorization: str | None = Header(None)) -> ActResponse:
        self._authorize(authorization)
        service = self._ready()
        self.requests += 1
        try:
            prepared = service.prepare(body, datetime.now(UTC))
        except RequestError as exc:
            raise HTTPException(422, [exc.detail()]) from None
        result: ActResponse = await self._decide_batch((service, prepared))
        return result

    @api.get(HEALTH_PATH)
    def health(self) -> dict[str, Any]:
        service = self._ready()
        return {
            "status": "ok",
            "model": service.model_ref,
            "data_last_bar": service.describe()["data_last_bar"],
            "requests": self.requests,
            "batches": self.batches,
        }

    @api.get(MODEL_PATH)
    def model(self, authorization: str | None = Header(None)) -> dict[str, Any]:
        self._authorize(authorization)
        return self._ready().describe()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _decide_batch(self, items: list[tuple[DecisionService, Prepared]]) -> list[ActResponse]:
        """Decide a batch in a worker thread (the event loop keeps accepting requests), grouped by
        the service version each request was checked against."""
        self.batches += 1
        return await asyncio.to_thread(_decide_grouped, items)


def build_app(config: ServiceConfig, token: str, replicas: int = 1, replica_cpus: float = 1.0) -> Any:
    """The Serve application for ``serve.run`` (the token is hashed here; only its digest is bound)."""
    if not token:
        raise ValueError("the Serve token is empty: set RAYTRADE_SERVE_TOKEN")
    deployment: Any = PolicyService  # serve.deployment turns the class into a Deployment at runtime
    return deployment.options(
        user_config=config.model_dump(mode="json"),
        num_replicas=replicas,
        ray_actor_options={"num_cpus": replica_cpus},
    ).bind(token_digest(token))
