"""Latency and throughput of the policy service over HTTP on 127.0.0.1 (Ray Serve, one replica).

    python -m benchmarks.serve_latency --json out.json [--quick]

Builds its own model first (a synthetic store, a smoke PPO search, promotion), then measures:
* the decision core in process (``DecisionService.decide``, B = 1): the floor;
* ``GET /v1/health`` through Serve's proxy: the cost of the HTTP path alone (the baseline);
* ``POST /v1/act`` one request at a time (keep-alive): p50 / p99, and the ratio to the baseline p50;
* ``POST /v1/act`` from 8 client threads at once: requests per second, and requests per policy
  forward (dynamic batching).
Request counts are fixed (bounded); every answer must be a 200 that is not a fallback.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import print_table, quick_and_json_args, write_report

TOKEN = "benchmark-token-not-a-secret-0123456789"


def _build_registry(work: Path) -> Path:
    from raytrade.cluster.promote import promote
    from raytrade.cluster.tune import TuneOptions, run_tune
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    store = work / "store"
    market = generate(n_symbols=30, years=2.0, seed=5, n_crypto=2)
    ingest_frames(store, market.bars, market.macro, show_progress=False)
    outcome = run_tune(
        TuneOptions(
            spec="ppo", replay=store, smoke=True, num_samples=1, storage=work / "runs", wandb="disabled"
        )
    )
    registry = work / "registry"
    promote(outcome.run_dir, "bench", registry)
    return registry


def _quantiles_ms(seconds: list[float]) -> dict[str, float]:
    arr = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def run(quick: bool = False) -> dict[str, Any]:
    """All measurements (``quick``: fewer requests)."""
    import httpx
    import ray
    from ray import serve

    from raytrade.serve.app import APP_NAME, HttpConfig, ServiceConfig, build_app, load_service
    from raytrade.serve.decide import ServeConfig

    n_seq, n_conc = (40, 32) if quick else (300, 400)
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            registry = _build_registry(Path(tmp))
            decide_cfg = ServeConfig(max_feature_age_hours=None)
            service = load_service("bench", str(registry), decide_cfg)
            request = _request(service)
            for _ in range(20):
                service.decide([request])
            core = []
            for _ in range(n_seq):
                start = time.perf_counter()
                service.decide([request])
                core.append(time.perf_counter() - start)

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            config = ServiceConfig(model="bench", registry=str(registry), decide=decide_cfg)
            http = HttpConfig(max_as_of_skew_s=None)  # the request is dated at the synthetic data's last bar
            serve.run(build_app(config, TOKEN, replica_cpus=0.5, http=http), name=APP_NAME, route_prefix="/")
            base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
            body = request.model_dump(mode="json")
            with httpx.Client(timeout=30) as client:
                health, act = [], []
                for _ in range(20):  # warm-up
                    client.get(f"{base}/v1/health")
                    _check(client.post(f"{base}/v1/act", json=body, headers=headers))
                for _ in range(n_seq):
                    start = time.perf_counter()
                    client.get(f"{base}/v1/health").raise_for_status()
                    health.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    _check(client.post(f"{base}/v1/act", json=body, headers=headers))
                    act.append(time.perf_counter() - start)
                before = client.get(f"{base}/v1/health", headers=headers).json()

            def client_loop(n: int) -> None:  # one keep-alive connection per client, like the loop's
                with httpx.Client(timeout=30) as c:
                    for _ in range(n):
                        _check(c.post(f"{base}/v1/act", json=body, headers=headers))

            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(client_loop, [n_conc // 8] * 8))
            wall = time.perf_counter() - start
            after = httpx.get(f"{base}/v1/health", headers=headers, timeout=30).json()
        finally:
            serve.shutdown()
            ray.shutdown()
    out: dict[str, Any] = {
        "config": {"n_assets": len(service.data.symbols), "sequential": n_seq, "concurrent": n_conc},
        "core": _quantiles_ms(core),
        "health": _quantiles_ms(health),
        "act": _quantiles_ms(act),
        "concurrent_requests_per_s": (n_conc // 8 * 8) / wall,
        "requests_per_batch": (after["requests"] - before["requests"])
        / max(after["batches"] - before["batches"], 1),
    }
    out["act_p99_ms"] = out["act"]["p99_ms"]
    out["ratio_act_over_health_p50"] = out["act"]["p50_ms"] / out["health"]["p50_ms"]
    return out


def _request(service: Any) -> Any:
    from raytrade.serve.schemas import ActRequest

    last = service.data.ts[-1].astype("datetime64[us]").astype(str) + "Z"
    symbols = list(service.data.symbols)
    return ActRequest.model_validate(
        {
            "account": {"equity": 100_000.0, "cash": 80_000.0},
            "positions": [{"symbol": symbols[0], "qty": "10", "side": "long", "market_value": "20000"}],
            "drawdown_pct": -0.02,
            "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in symbols},
            "as_of": last,
        }
    )


def _check(response: Any) -> None:
    response.raise_for_status()
    if response.json().get("fallback"):
        raise RuntimeError(f"the service fell back: {response.json().get('reason')}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = quick_and_json_args(__doc__, argv)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    out = run(quick=args.quick)
    n = out["config"]["n_assets"]
    print_table(
        f"policy service on 127.0.0.1, N={n}, one replica (ms)",
        [
            ("decision core in process, p50", out["core"]["p50_ms"], "floor"),
            ("GET /v1/health p50", out["health"]["p50_ms"], "HTTP path alone (baseline)"),
            ("POST /v1/act p50", out["act"]["p50_ms"], "one at a time, keep-alive"),
            ("POST /v1/act p99", out["act"]["p99_ms"], "<= 50 ms"),
            ("ratio act / health p50", out["ratio_act_over_health_p50"], "reference"),
            ("8 clients: requests/s", out["concurrent_requests_per_s"], "reference"),
            ("8 clients: requests per forward", out["requests_per_batch"], "> 1: batching"),
        ],
    )
    write_report(args.json, "serve_latency", out)
    return out


if __name__ == "__main__":
    main()
