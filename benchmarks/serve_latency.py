"""Latency and throughput of the policy service over HTTP on 127.0.0.1 (Ray Serve, one replica), against
a trivial deployment on the same proxy and path (the floor), and the cost of the service's checks.

    python -m benchmarks.serve_latency --json out.json [--quick] [--registry PATH]

Builds its own models first (one synthetic store of N = 32 symbols; a smoke search of spec ``ppo``
(family ``ppo_mlp``) and one of spec ``gnn``, one sample each, each promoted; ``--registry PATH``
serves those of an earlier build instead), then, in one run:

* **floor**: a FastAPI ingress behind the same :class:`serve.guard.GuardMiddleware` (bearer token,
  body size), on the same proxy, path and replica size, that answers ``POST /v1/act`` with a fixed
  copy of a real 32-symbol answer (the same bytes size as the model's): the cost of the proxy and
  the HTTP path with nothing parsed or decided; and a second, identical floor (``floor_b``), whose
  ratio to the first is an A/A measure of how far the ratios move with nothing changed;
* **ideal** (per model): the floor, spinning per request the CPU time of the model's in-process
  ``DecisionService.decide`` of the benchmark's request (median, one torch thread) on its replica's
  event loop: a service whose only cost is its decision, with no parse, no batching and no answer to
  build; its p99 ratio says how far under the target any implementation of that decision can get on
  this machine;
* **ppo_mlp** and **gnn**: ``POST /v1/act`` of a 32-symbol request to :class:`serve.app.PolicyService`;
* **serve.batch**: the same replica with its requests batched by ``ray.serve.batch`` (2 ms fill
  wait) instead of :class:`serve.batcher.DrainBatcher`, the service as it was before (an A/B);
* each at concurrency 1, 8 and 32 (``aiohttp`` clients on one event loop, one keep-alive connection
  each, a fixed number of requests each; every answer is parsed the same way): p50 / p99 latency,
  requests/s, symbol-decisions/s (requests/s x symbols per request) and errors (a non-200, or a
  fallback answer). The floors, the model and its serve.batch variant are deployed side by side
  (route prefixes ``/floor``, ``/floor_b``, ``/ideal``, ``/service``, ``/serve_batch``) and measured in
  alternating rounds whose order rotates, so a load drift hits them all alike; each p99 ratio comes
  with a 95 % interval over the rounds;
* where the CPU goes: for the floor and the model at concurrency 8, the CPU seconds per request of
  the Serve proxy, of the target's replica and of the client (``psutil`` process times, two
  alternating rounds): the model's replica over the floor's is what the service itself adds;
* the issue's ratios: p99 at concurrency 8 over the floor's (target <= 1.3; judged on its 95 % interval
  over rounds: ``met``, ``not met`` or ``undecided``, :func:`p99_verdict`), symbol-decisions/s at
  concurrency 32 (target >= 4,000), errors (target 0);
* the cost of the checks, in process, as A/B pairs timed alternately (so load drifts hit both
  sides): the guard middleware (token digest + body read) per request, the hard caps
  (``cap_targets`` alone, and ``DecisionService.decide`` with and without them), as fractions of p50
  at concurrency 1 and of the in-process ``decide`` (target: guard + caps <= 10 % of p50), and the
  registry's sha256 check (``verify_files``) at load, alone and as ``models.load`` with and without
  it (paid once per load).

The floor stays deployed; each model's pair replaces the previous one. Only ratios measured in the
same run are comparable: the clients share the machine with the proxy and the replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import print_table, quick_and_json_args, quotes_at_close, write_report

TOKEN = "benchmark-token-not-a-secret-0123456789"
N_SYMBOLS = 32
CONCURRENCY = (1, 8, 32)
MODELS = (("ppo_mlp", "ppo"), ("gnn", "gnn"))  # (registry name, tune spec)
TARGETS = {"p99_ratio_c8": 1.3, "symbol_decisions_per_s_c32": 4000.0, "errors": 0, "checks_fraction": 0.10}
REPLICA_CPUS = 0.5  # the floor's and the service's replica alike


def _build_store(work: Path) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    store = work / "store"
    market = generate(n_symbols=N_SYMBOLS, years=2.0, seed=5)
    ingest_frames(store, market.bars, market.macro, show_progress=False)
    return store


def _build_model(work: Path, store: Path, spec: str, name: str) -> Path:
    """A smoke search of ``spec`` (one sample) promoted as ``name`` in ``work/registry``."""
    from raytrade.cluster.promote import promote
    from raytrade.cluster.tune import TuneOptions, run_tune

    outcome = run_tune(
        TuneOptions(
            spec=spec, replay=store, smoke=True, num_samples=1, storage=work / "runs", wandb="disabled"
        )
    )
    registry = work / "registry"
    promote(outcome.run_dir, name, registry)
    return registry


def _floor_app(token_sha256: str, answer: bytes, burn_ms: float = 0.0) -> Any:
    """The trivial deployment: the service's guard in front of a route that answers the bytes
    ``answer`` (a real answer to the benchmark's request) without reading the request (defined in a
    function so Serve ships the class by value). ``burn_ms`` > 0: each request first spins that many
    milliseconds of its thread's CPU time on the replica's event loop (the ideal service's reference)."""
    from fastapi import FastAPI, Response
    from ray import serve

    from raytrade.serve.guard import GuardMiddleware
    from raytrade.serve.schemas import ACT_PATH

    @serve.deployment(name="Floor", max_ongoing_requests=256)
    @serve.ingress()
    class Floor:
        def __init__(self, digest: str, body: bytes, burn_s: float) -> None:
            self.digest, self.body, self.burn_s = digest, body, burn_s

        def __serve_build_asgi_app__(self) -> FastAPI:
            api = FastAPI()
            api.add_middleware(GuardMiddleware, token_sha256=self.digest, max_body_bytes=1 << 20)

            @api.post(ACT_PATH)
            async def act() -> Response:
                start = time.thread_time()  # the ideal service: spin burn_s of this thread's CPU
                while time.thread_time() - start < self.burn_s:
                    pass
                return Response(self.body, media_type="application/json")

            return api

    deployment: Any = Floor
    return deployment.options(ray_actor_options={"num_cpus": REPLICA_CPUS}).bind(
        token_sha256, answer, burn_ms / 1e3
    )


def _serve_batch_app(config: Any, http: Any) -> Any:
    """The service as it was before :class:`serve.batcher.DrainBatcher`: the same replica, its
    requests decided through ``ray.serve.batch`` (16 a batch, 2 ms fill wait, one worker-thread hop
    per batch), for a same-run A/B (defined in a function so Serve ships the class by value)."""
    from ray import serve

    from raytrade.serve.app import PolicyService, _decide_grouped
    from raytrade.serve.guard import token_digest

    base: Any = PolicyService.func_or_class  # the ingress-wrapped replica class

    class ServeBatched(base):  # type: ignore[misc,valid-type]
        async def decide(self, service: Any, prepared: Any) -> Any:
            return await self._serve_batch((service, prepared))

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
        async def _serve_batch(self, items: list[Any]) -> list[Any]:
            return await asyncio.to_thread(_decide_grouped, items)

    deployment: Any = serve.deployment(name="ServeBatched", max_ongoing_requests=256)(ServeBatched)
    return deployment.options(
        user_config=config.model_dump(mode="json"), ray_actor_options={"num_cpus": REPLICA_CPUS}
    ).bind(token_digest(TOKEN), http.model_dump(mode="json"))


def _quantiles_ms(seconds: list[float]) -> dict[str, float]:
    arr = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def _is_error(status: int, body: bytes) -> bool:
    """A non-200, or a fallback answer (the floor's fixed answer is not one)."""
    return status != 200 or bool(json.loads(body).get("fallback"))


def _load(url: str, payload: bytes, clients: int, per_client: int) -> tuple[list[float], int, float]:
    """Latencies (s), errors and wall seconds of ``clients`` concurrent clients on one event loop, one
    keep-alive connection each, ``per_client`` POSTs each (``aiohttp``: far less client CPU per
    request than threads, which share the 2 cores with the proxy and the replica)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def client_loop(session: aiohttp.ClientSession) -> tuple[list[float], int]:
        latencies, errors = [], 0
        for _ in range(per_client):
            start = time.perf_counter()
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    failed = _is_error(response.status, await response.read())
            except (aiohttp.ClientError, TimeoutError):
                failed = True
            latencies.append(time.perf_counter() - start)
            errors += failed
        return latencies, errors

    async def all_clients() -> tuple[list[tuple[list[float], int]], float]:
        connector = aiohttp.TCPConnector(limit=clients)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.perf_counter()
            results = await asyncio.gather(*(client_loop(session) for _ in range(clients)))
            return list(results), time.perf_counter() - start

    results, wall = asyncio.run(all_clients())
    return [s for lat, _ in results for s in lat], sum(e for _, e in results), wall


def _summary(latencies: list[float], errors: int, wall: float) -> dict[str, Any]:
    rps = len(latencies) / wall
    return {
        "requests": len(latencies),
        **_quantiles_ms(latencies),
        "requests_per_s": rps,
        "symbol_decisions_per_s": rps * N_SYMBOLS,
        "errors": errors,
    }


def _alternating_sweep(
    urls: dict[str, str], payload: bytes, per_client: dict[int, int], rounds: int
) -> dict[str, dict[str, Any]]:
    """Each target of ``urls`` at each concurrency, in ``rounds`` rounds of ``per_client / rounds``
    requests per client whose order rotates (a load drift on the shared machine hits every target
    alike; the ratios between targets are same-run A/Bs)."""
    for url in urls.values():
        _load(url, payload, 1, 20)  # warm-up
    names = list(urls)
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    for c in CONCURRENCY:
        pooled: dict[str, tuple[list[list[float]], list[int], list[float]]] = {n: ([], [], []) for n in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                latencies, errors, wall = _load(urls[name], payload, c, max(1, per_client[c] // rounds))
                pooled[name][0].append(latencies)
                pooled[name][1].append(errors)
                pooled[name][2].append(wall)
        for name, (per_round, errors, walls) in pooled.items():
            out[name][f"c{c}"] = _summary([s for lat in per_round for s in lat], sum(errors), sum(walls))
        for name in names:
            if name != "floor":  # urls holds "floor": every other target's p99 is read against it
                interval = _p99_ratio_interval(pooled[name][0], pooled["floor"][0])
                out[name][f"c{c}"]["p99_ratio_interval"] = interval
    return out


def _p99_ratio_interval(rounds: list[list[float]], floor_rounds: list[list[float]]) -> list[float]:
    """95 % interval of p99(target) / p99(floor) over the rounds, resampled with replacement (the same
    rounds for both: a round of the target and the floor's next to it share the machine's load)."""
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(2000):
        pick = rng.integers(0, len(rounds), len(rounds))
        target = np.concatenate([rounds[i] for i in pick])
        floor = np.concatenate([floor_rounds[i] for i in pick])
        ratios.append(np.percentile(target, 99) / np.percentile(floor, 99))
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


REPLICA_TITLES = {  # the process title prefix of each target's replica (Ray names its workers so)
    "floor": "ray::ServeReplica:floor:Floor",
    "service": "ray::ServeReplica:raytrade:PolicyService",
}
PROXY_TITLE = "ray::ProxyActor"


def _process_cpu_s(title: str) -> float:
    """User + system CPU seconds so far of the processes whose title starts with ``title``."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or [""]
        if cmd and cmd[0].startswith(title):
            try:
                times = proc.cpu_times()
            except psutil.Error:  # exited meanwhile
                continue
            total += times.user + times.system
    return total


def _cpu_split(urls: dict[str, str], payload: bytes, clients: int, requests: int, rounds: int = 2) -> Any:
    """Per target of :data:`REPLICA_TITLES`: CPU ms per request of the proxy, of the target's replica
    and of this client process, at ``clients`` concurrent clients (``rounds`` alternating rounds of
    ``requests`` requests each, summed)."""
    import psutil

    me = psutil.Process()
    sums = {
        t: {"proxy": 0.0, "replica": 0.0, "client": 0.0, "requests": 0, "wall": 0.0} for t in REPLICA_TITLES
    }
    for r in range(rounds):
        for target in list(REPLICA_TITLES)[:: 1 if r % 2 == 0 else -1]:
            before = (_process_cpu_s(PROXY_TITLE), _process_cpu_s(REPLICA_TITLES[target]), me.cpu_times())
            latencies, _, wall = _load(urls[target], payload, clients, max(1, requests // clients))
            after = (_process_cpu_s(PROXY_TITLE), _process_cpu_s(REPLICA_TITLES[target]), me.cpu_times())
            acc = sums[target]
            acc["proxy"] += after[0] - before[0]
            acc["replica"] += after[1] - before[1]
            acc["client"] += (after[2].user + after[2].system) - (before[2].user + before[2].system)
            acc["requests"] += len(latencies)
            acc["wall"] += wall
    return {
        target: {
            "proxy_cpu_ms_per_request": acc["proxy"] / acc["requests"] * 1e3,
            "replica_cpu_ms_per_request": acc["replica"] / acc["requests"] * 1e3,
            "client_cpu_ms_per_request": acc["client"] / acc["requests"] * 1e3,
            "requests_per_s": acc["requests"] / acc["wall"],
        }
        for target, acc in sums.items()
    }


def _median_s(fn: Callable[[], Any], n: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def _ab_median_s(a: Callable[[], Any], b: Callable[[], Any], n: int, warmup: int = 10) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, timed alternately, in turn first (a load drift, or
    whatever the first of a pair pays, hits both alike)."""
    for _ in range(warmup):
        a()
        b()
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        pairs = ((a, samples[0]), (b, samples[1]))
        for fn, out in pairs if i % 2 == 0 else pairs[::-1]:
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return float(np.median(samples[0])), float(np.median(samples[1]))


def _guard_cost_s(body: bytes, n: int) -> float:
    """Median per-request cost of :class:`serve.guard.GuardMiddleware` (token digest, body read and
    replay) in process: the guard around a no-op app minus the no-op app alone, timed alternately."""
    from raytrade.serve.guard import GuardMiddleware, token_digest

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_: Any) -> None:
        return None

    guard = GuardMiddleware(inner, token_digest(TOKEN), 1 << 20)
    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    def scope() -> dict[str, Any]:
        return {"type": "http", "path": "/v1/act", "headers": headers}

    async def timed() -> float:
        samples: dict[Any, list[float]] = {guard: [], inner: []}
        for i in range(n + 20):
            for app, out in samples.items():
                start = time.perf_counter()
                await app(scope(), receive, send)
                if i >= 20:  # warm-up
                    out.append(time.perf_counter() - start)
        return float(np.median(samples[guard]) - np.median(samples[inner]))

    return asyncio.run(timed())


def _check_costs(name: str, registry: Path, request: Any, n: int) -> dict[str, Any]:
    """The in-process cost of the caps and of the registry's sha256 check for model ``name`` (torch
    on one thread, as in a replica of 0.5 CPU: Ray sets ``OMP_NUM_THREADS=1`` there)."""
    import torch

    torch.set_num_threads(1)
    from pydantic import SecretStr

    from raytrade.models import registry_load
    from raytrade.models.manifest import read_manifest
    from raytrade.models.registry import resolve, sign_manifest, verify_files, verify_mac
    from raytrade.serve import decide
    from raytrade.serve.app import load_service
    from raytrade.serve.caps import CappedTargets

    service = load_service(name, str(registry), decide.ServeConfig(max_feature_age_hours=None))
    uncapped = mock.patch.object(decide, "cap_targets", lambda target, *_: CappedTargets(target, ()))

    def without_caps() -> None:
        with uncapped:
            service.decide([request])

    with_caps, no_caps = _ab_median_s(lambda: service.decide([request]), without_caps, n)
    prepared = service.prepare(request, request.as_of)
    weights = np.full(N_SYMBOLS, 0.05)
    caps_alone = _median_s(
        lambda: decide.cap_targets(
            weights, prepared.w_now, prepared.tradeable, service.config.caps, prepared.external_gross
        ),
        n,
    )
    folder = resolve(registry, name)
    manifest = read_manifest(folder)
    key = SecretStr(TOKEN)  # any 32+ character key: the MAC's cost does not depend on it
    signed = sign_manifest(manifest, key)
    n_load = max(3, n // 100)

    def load_unverified() -> None:
        with mock.patch.object(registry_load, "verify_files", lambda *_: None):
            registry_load.load(name, registry)

    load_with, load_without = _ab_median_s(
        lambda: registry_load.load(name, registry), load_unverified, n_load, warmup=1
    )
    return {
        "decide_with_caps_ms": with_caps * 1e3,
        "decide_without_caps_ms": no_caps * 1e3,
        "caps_alone_ms": caps_alone * 1e3,
        "load_with_verify_ms": load_with * 1e3,
        "load_without_verify_ms": load_without * 1e3,
        "verify_files_alone_ms": _median_s(lambda: verify_files(folder, manifest), n_load * 3, warmup=1)
        * 1e3,
        "verify_mac_alone_ms": _median_s(lambda: verify_mac(folder, signed, key), n) * 1e3,
    }


def _decide_ms(name: str, registry: Path, request: Any, n: int) -> float:
    """Median in-process milliseconds of model ``name``'s ``DecisionService.decide`` of ``request`` alone
    (torch on one thread, as in a replica of 0.5 CPU): the work the ideal service spins per request."""
    import torch

    torch.set_num_threads(1)
    from raytrade.serve.app import load_service
    from raytrade.serve.decide import ServeConfig

    service = load_service(name, str(registry), ServeConfig(max_feature_age_hours=None))
    return _median_s(lambda: service.decide([request]), n) * 1e3


def run(quick: bool = False, registry: Path | None = None) -> dict[str, Any]:
    """All measurements (``quick``: a smoke test, few requests; ``registry``: one that already holds
    ``ppo_mlp`` and ``gnn`` at 32 symbols, e.g. a previous run's, instead of building them)."""
    import ray
    from ray import serve

    from raytrade.serve.app import APP_NAME, HttpConfig, ServiceConfig, build_app, load_service
    from raytrade.serve.decide import ServeConfig
    from raytrade.serve.guard import token_digest

    # c=8: 16 rounds of 384 requests a target (6,144 in all). Why so many: with 2,048 in 8 rounds the 95 %
    # interval of a p99 ratio spanned ~0.3 even for the A/A pair and for the ideal service, too wide
    # to tell 1.15 from 1.35 (benchmarks/serve_latency.md); a burst of load hits a round of each target
    per_client = {1: 20, 8: 4, 32: 2} if quick else {1: 320, 8: 768, 32: 32}
    rounds = 2 if quick else 16
    n_core = 50 if quick else 300
    config = {
        "n_symbols": N_SYMBOLS,
        "per_client": per_client,
        "rounds": rounds,
        "quick": quick,
        "built_models": not registry,
    }
    out: dict[str, Any] = {"config": config}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # logical CPUs for the five replicas of REPLICA_CPUS side by side (the machine has 2 cores)
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
        try:
            if registry is None:
                store = _build_store(work)
                for name, spec in MODELS:
                    registry = _build_model(work, store, spec, name)
            assert registry is not None
            decide_cfg = ServeConfig(max_feature_age_hours=None)
            first = load_service(MODELS[0][0], str(registry), decide_cfg)
            request = _request(first)
            payload = request.model_dump_json().encode()
            answer = first.decide([request])[0].model_dump_json().encode()
            out["config"].update(request_bytes=len(payload), floor_answer_bytes=len(answer))

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            targets = ("floor", "floor_b", "ideal", "service", "serve_batch")
            urls = {t: f"http://127.0.0.1:{port}/{t}/v1/act" for t in targets}
            for floor in ("floor", "floor_b"):  # the second floor: an A/A reference of the ratios' noise
                serve.run(_floor_app(token_digest(TOKEN), answer), name=floor, route_prefix=f"/{floor}")
            http = HttpConfig(max_as_of_skew_s=None)  # the request is dated when the data's last bar closed
            out["floor"], out["floor_b"], out["ideal"], out["serve_batch"], out["ideal_burn_ms"] = (
                {},
                {},
                {},
                {},
                {},
            )
            for name, _ in MODELS:
                burn_ms = out["ideal_burn_ms"][name] = _decide_ms(name, registry, request, n_core)
                serve.run(
                    _floor_app(token_digest(TOKEN), answer, burn_ms), name="ideal", route_prefix="/ideal"
                )
                config = ServiceConfig(model=name, registry=str(registry), decide=decide_cfg)
                serve.run(
                    build_app(config, TOKEN, replica_cpus=REPLICA_CPUS, http=http),
                    name=APP_NAME,
                    route_prefix="/service",
                )
                serve.run(_serve_batch_app(config, http), name="serve_batch", route_prefix="/serve_batch")
                sweep = _alternating_sweep(urls, payload, per_client, rounds)
                out.setdefault("cpu_split", {})[name] = _cpu_split(urls, payload, 8, 80 if quick else 720)
                for target in ("floor", "floor_b", "ideal", "serve_batch"):
                    out[target][name] = sweep[target]
                out[name] = sweep["service"]
                for app in (APP_NAME, "serve_batch", "ideal"):
                    serve.delete(app)
            serve.shutdown()
            out["guard_ms"] = _guard_cost_s(payload, n_core) * 1e3
            out["costs"] = {name: _check_costs(name, registry, request, n_core) for name, _ in MODELS}
        finally:
            serve.shutdown()
            ray.shutdown()
    _ratios(out)
    return out


def _ratios(out: dict[str, Any]) -> None:
    """The issue's figures, from measurements of the same run (each model against the floor and the
    ``serve.batch`` variant measured alternately with it)."""
    for name, _ in MODELS:
        sweep, costs, floor, before = (
            out[name],
            out["costs"][name],
            out["floor"][name],
            out["serve_batch"][name],
        )
        p50 = sweep["c1"]["p50_ms"]
        costs["guard_fraction_of_p50"] = out["guard_ms"] / p50
        costs["caps_fraction_of_p50"] = costs["caps_alone_ms"] / p50
        costs["caps_decide_delta_fraction_of_p50"] = (
            costs["decide_with_caps_ms"] - costs["decide_without_caps_ms"]
        ) / p50
        costs["checks_fraction_of_p50"] = costs["guard_fraction_of_p50"] + costs["caps_fraction_of_p50"]
        costs["checks_fraction_of_decide"] = (out["guard_ms"] + costs["caps_alone_ms"]) / costs[
            "decide_with_caps_ms"
        ]
        costs["verify_fraction_of_p50"] = costs["verify_files_alone_ms"] / p50
        costs["verify_fraction_of_load"] = costs["verify_files_alone_ms"] / costs["load_with_verify_ms"]
        out[f"{name}_p99_ratio_c8"] = sweep["c8"]["p99_ms"] / floor["c8"]["p99_ms"]
        out[f"{name}_symbol_decisions_per_s_c32"] = sweep["c32"]["symbol_decisions_per_s"]
        out[f"{name}_rps_over_floor_c32"] = sweep["c32"]["requests_per_s"] / floor["c32"]["requests_per_s"]
        out[f"{name}_ideal_p99_ratio_c8"] = out["ideal"][name]["c8"]["p99_ms"] / floor["c8"]["p99_ms"]
        out[f"{name}_serve_batch_p99_ratio_c8"] = before["c8"]["p99_ms"] / floor["c8"]["p99_ms"]
        out[f"{name}_serve_batch_symbol_decisions_per_s_c32"] = before["c32"]["symbol_decisions_per_s"]
    out["errors"] = sum(
        sweep[c]["errors"]
        for name, _ in MODELS
        for sweep in (out[name], *(out[t][name] for t in ("floor", "floor_b", "ideal", "serve_batch")))
        for c in sweep
    )
    out["act_p99_ms"] = out[MODELS[0][0]]["c1"]["p99_ms"]  # run_all's headline (ppo_mlp, one at a time)
    out["targets"] = TARGETS
    target = TARGETS["p99_ratio_c8"]
    intervals = {name: out[name]["c8"]["p99_ratio_interval"] for name, _ in MODELS}
    out["p99_verdict_c8"] = {name: p99_verdict(bounds, target) for name, bounds in intervals.items()}
    out["ideal_p99_verdict_c8"] = {
        name: p99_verdict(out["ideal"][name]["c8"]["p99_ratio_interval"], target) for name, _ in MODELS
    }
    out["met"] = {
        name: {
            "p99_ratio_c8": out["p99_verdict_c8"][name] == "met",
            "symbol_decisions_per_s_c32": out[f"{name}_symbol_decisions_per_s_c32"]
            >= TARGETS["symbol_decisions_per_s_c32"],
            "errors": out["errors"] <= TARGETS["errors"],
            "checks_fraction": out["costs"][name]["checks_fraction_of_p50"] <= TARGETS["checks_fraction"],
        }
        for name, _ in MODELS
    }


def p99_verdict(interval: list[float], target: float) -> str:
    """``met`` when the whole 95 % interval of the p99 ratio is at or under ``target``, ``not met`` when
    it is wholly above, ``undecided`` when it straddles it: on a shared 2-core machine the ratio of two
    tails moves by +-0.2 between identical deployments (the A/A row), so a point estimate under the
    target is not a result."""
    low, high = interval
    if high <= target:
        return "met"
    return "not met" if low > target else "undecided"


def _request(service: Any) -> Any:
    from raytrade.serve.schemas import ActRequest

    last = service.closed_at(-1).isoformat()  # the earliest as_of that observes the last bar
    symbols = list(service.data.symbols)
    return ActRequest.model_validate(
        {
            "account": {"equity": 100_000.0, "cash": 80_000.0},
            "positions": [{"symbol": symbols[0], "qty": "10", "side": "long", "market_value": "20000"}],
            "drawdown_pct": -0.02,
            "analysis": quotes_at_close(service),
            "as_of": last,
        }
    )


def _interval(bounds: list[float]) -> str:
    return f" (95 % over rounds: {bounds[0]:.2f}-{bounds[1]:.2f})"


def _met(out: dict[str, Any], name: str, key: str) -> str:
    """The target of ``key`` and whether model ``name`` met it in this run (the p99 ratio: its
    :func:`p99_verdict`, from the interval over rounds, not the point estimate)."""
    shown = {"p99_ratio_c8": "<= 1.3", "symbol_decisions_per_s_c32": ">= 4,000", "checks_fraction": "<= 0.10"}
    if key == "p99_ratio_c8":
        verdict = out["p99_verdict_c8"][name]
        return f"{shown[key]}: {verdict.upper() if verdict == 'not met' else verdict}"
    return f"{shown[key]}: {'met' if out['met'][name][key] else 'NOT met'}"


def _rows(out: dict[str, Any]) -> list[tuple[str, Any, str]]:
    rows: list[tuple[str, Any, str]] = []
    for model, _ in MODELS:
        for target, sweep in (
            (f"floor (with {model})", out["floor"][model]),
            (model, out[model]),
            (f"{model} serve.batch", out["serve_batch"][model]),
        ):
            for c in CONCURRENCY:
                r = sweep[f"c{c}"]
                rows.append((f"{target} c={c} p50 / p99 ms", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}", ""))
                rows.append(
                    (
                        f"{target} c={c} req/s, symbol-dec/s",
                        f"{r['requests_per_s']:,.0f} / {r['symbol_decisions_per_s']:,.0f}",
                        f"errors {r['errors']}",
                    )
                )
    for name, _ in MODELS:
        c = out["costs"][name]
        rows += [
            (
                f"{name}: p99 c=8 / floor p99 c=8",
                out[f"{name}_p99_ratio_c8"],
                _met(out, name, "p99_ratio_c8") + _interval(out[name]["c8"]["p99_ratio_interval"]),
            ),
            (
                f"{name}: p50 c=8 / floor p50 c=8",
                out[name]["c8"]["p50_ms"] / out["floor"][name]["c8"]["p50_ms"],
                "the same, at the median (steadier than the tail)",
            ),
            (
                f"{name} ideal (floor + {out['ideal_burn_ms'][name]:.2f} ms CPU): p99 c=8 / floor's",
                out[f"{name}_ideal_p99_ratio_c8"],
                f"<= 1.3: {out['ideal_p99_verdict_c8'][name]}; the in-process decide's CPU spun on the "
                "floor's replica, nothing else: the best any service could do"
                + _interval(out["ideal"][name]["c8"]["p99_ratio_interval"]),
            ),
            (
                f"{name} ideal: p50 c=8 / floor's",
                out["ideal"][name]["c8"]["p50_ms"] / out["floor"][name]["c8"]["p50_ms"],
                "the same, at the median",
            ),
            (
                f"A/A (with {name}): p99 c=8 second floor / floor",
                out["floor_b"][name]["c8"]["p99_ms"] / out["floor"][name]["c8"]["p99_ms"],
                "identical deployments: the ratio's noise"
                + _interval(out["floor_b"][name]["c8"]["p99_ratio_interval"]),
            ),
            (
                f"{name}: symbol-decisions/s c=32",
                out[f"{name}_symbol_decisions_per_s_c32"],
                _met(out, name, "symbol_decisions_per_s_c32"),
            ),
            (
                f"{name} serve.batch (before): p99 c=8 / floor's",
                out[f"{name}_serve_batch_p99_ratio_c8"],
                "same-run A/B: ray.serve.batch, 2 ms fill wait",
            ),
            (
                f"{name} serve.batch (before): symbol-decisions/s c=32",
                out[f"{name}_serve_batch_symbol_decisions_per_s_c32"],
                "same-run A/B",
            ),
            (
                f"{name}: requests/s c=32 / floor's",
                out[f"{name}_rps_over_floor_c32"],
                "reference: the client's ceiling",
            ),
            (
                f"{name}: guard / p50 c=1",
                c["guard_fraction_of_p50"],
                f"{out['guard_ms'] * 1e3:.1f} us per request",
            ),
            (
                f"{name}: caps / p50 c=1",
                c["caps_fraction_of_p50"],
                f"{c['caps_alone_ms'] * 1e3:.1f} us per request (cap_targets alone)",
            ),
            (
                f"{name}: guard + caps / p50 c=1",
                c["checks_fraction_of_p50"],
                _met(out, name, "checks_fraction"),
            ),
            (
                f"{name}: guard + caps / in-process decide",
                c["checks_fraction_of_decide"],
                f"stricter: of {c['decide_with_caps_ms']:.3f} ms (no HTTP, no proxy)",
            ),
            (
                f"{name}: decide with - without caps / p50",
                c["caps_decide_delta_fraction_of_p50"],
                f"{c['decide_with_caps_ms']:.3f} vs {c['decide_without_caps_ms']:.3f} ms (A/B, noisy)",
            ),
            (
                f"{name}: sha256 check / p50 c=1",
                c["verify_fraction_of_p50"],
                f"once per load: {c['verify_files_alone_ms']:.2f} of {c['load_with_verify_ms']:.0f} ms "
                f"(without: {c['load_without_verify_ms']:.0f} ms)",
            ),
            (
                f"{name}: registry HMAC check / p50 c=1",
                c["verify_mac_alone_ms"] / out[name]["c1"]["p50_ms"],
                f"once per load, with a key: {c['verify_mac_alone_ms'] * 1e3:.1f} us",
            ),
        ]
    for name, _ in MODELS:
        split = out["cpu_split"][name]
        for target, label in (("floor", f"floor (with {name})"), ("service", name)):
            c = split[target]
            rows.append(
                (
                    f"{label} c=8 CPU ms/request: proxy / replica / client",
                    f"{c['proxy_cpu_ms_per_request']:.2f} / {c['replica_cpu_ms_per_request']:.2f} / "
                    f"{c['client_cpu_ms_per_request']:.2f}",
                    f"{c['requests_per_s']:,.0f} req/s",
                )
            )
        rows.append(
            (
                f"{name}: replica CPU over the floor's, c=8",
                split["service"]["replica_cpu_ms_per_request"] - split["floor"]["replica_cpu_ms_per_request"],
                "ms per request: what the service itself adds",
            )
        )
    rows.append(("errors (all runs)", out["errors"], "0"))
    return rows


def _registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="serve the models of this registry (built by an earlier run) instead of building them",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``--registry PATH`` (this benchmark only): serve the models of PATH instead of building them."""
    parsed = quick_and_json_args(__doc__, argv, _registry_arg)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    out = run(quick=parsed.quick, registry=parsed.registry)
    print_table(
        f"policy service on 127.0.0.1, N={N_SYMBOLS}, one replica, vs a trivial deployment (floor)",
        _rows(out),
    )
    write_report(parsed.json, "serve_latency", out)
    return out


if __name__ == "__main__":
    main()
