"""CPU per request of the policy service's ``/v1/act`` path in process, this tree against a baseline
tree, measured interleaved in one run; writes JSON, prints a table.

    python -m benchmarks.decide_cpu --registry /tmp/sl/work/registry --baseline OLD/.layout
        [--rounds 8] [--reps 200] [--json out.json] [--quick]

Why: at 8 clients the Ray benchmark's latency (``benchmarks.serve_latency``) follows the replica's CPU
per request, and on a shared 2-core machine one in-process figure moves by 10-30 % from minute to
minute with the other processes. So the comparison is A/B: two worker processes, one importing
``raytrade`` from this tree and one from ``--baseline`` (a ``.layout`` folder of another checkout,
e.g. ``git archive`` of the base commit with its own ``.layout``), each loading the registry's
``ppo_mlp`` and ``gnn`` (the serve_latency benchmark's 32-symbol models, ``/tmp/sl/build.py``),
probed as a replica probes them; then ``--rounds`` rounds, each asking both workers in turn (the
order alternating) for the same measurement. The ratio per round is new / old; the table shows the
median of the rounds' ratios and their range.

What is measured (thread CPU, ``time.thread_time``, one torch thread, ``--reps`` calls):

* ``asgi``: one request through the service's FastAPI app (``serve.app.create_api``: the guard,
  the body parse, ``prepare``, the decision inline on the same thread, the answer's JSON), driven
  as an ASGI call without a server;
* ``decide B=k``: ``DecisionService.decide_prepared`` of ``k`` prepared requests (the replica's
  batch), per request (the batch's CPU / ``k``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import quotes_at_close  # after the path fix above

MODELS = ("ppo_mlp", "gnn")
BATCHES = (1, 2, 4, 8)
TOKEN = "decide-cpu-benchmark-token-0123456789"


# ------------------------------------------------------------------------------------ the worker


class _Worker:
    """One tree's services, measured on request (runs in its own process)."""

    def __init__(self, registry: str) -> None:
        import torch

        from raytrade.serve.app import DirectBackend, HttpConfig, create_api, load_service
        from raytrade.serve.decide import ServeConfig

        torch.set_num_threads(1)
        self.services = {m: load_service(m, registry, ServeConfig()) for m in MODELS}
        self.apps: dict[str, Any] = {}
        for name, service in self.services.items():
            service.probe(max(BATCHES))
            backend = DirectBackend(service, TOKEN)

            async def inline(svc: Any, prepared: Any, backend: Any = backend) -> Any:
                backend.batches += 1
                return svc.decide_prepared([prepared])[0]  # on this thread: its CPU is counted

            backend.decide = inline  # type: ignore[method-assign,assignment]
            # the request is dated when the data's last bar closed (fresh features), not at the server clock
            self.apps[name] = create_api(backend, HttpConfig(max_as_of_skew_s=None))
        self.loop = asyncio.new_event_loop()

    def _body(self, name: str) -> bytes:
        service = self.services[name]
        symbols = list(service.data.symbols)
        last = service.closed_at(-1).isoformat()  # the earliest as_of that observes the last bar
        return json.dumps(
            {
                "account": {"equity": 100_000.0, "cash": 80_000.0},
                "positions": [{"symbol": symbols[0], "qty": "10", "side": "long", "market_value": "20000"}],
                "drawdown_pct": -0.02,
                "analysis": quotes_at_close(service),
                "as_of": last,
            }
        ).encode()

    async def _asgi(self, app: Any, body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/act",
            "raw_path": b"/v1/act",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {TOKEN}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    def measure(self, name: str, what: str, reps: int) -> float:
        """Thread CPU ms per request of ``what`` (``asgi`` or ``decide B=k``) for model ``name``."""
        if what == "asgi":
            app, body = self.apps[name], self._body(name)

            async def run(n: int) -> float:
                start = time.thread_time()
                for _ in range(n):
                    if await self._asgi(app, body) != 200:
                        raise RuntimeError(f"{name}: /v1/act did not answer 200")
                return time.thread_time() - start

            self.loop.run_until_complete(run(5))
            return self.loop.run_until_complete(run(reps)) / reps * 1e3
        from datetime import UTC, datetime

        from raytrade.serve.schemas import ActRequest

        service = self.services[name]
        size = int(what.split("=")[1])
        request = ActRequest.model_validate_json(self._body(name))
        prepared = [service.prepare(request, datetime.now(UTC)) for _ in range(size)]
        for _ in range(5):
            service.decide_prepared(prepared)
        start = time.thread_time()
        for _ in range(reps):
            service.decide_prepared(prepared)
        return (time.thread_time() - start) / reps / size * 1e3


def _serve_worker(registry: str) -> None:
    """The worker's loop: one JSON command a line on stdin, one JSON answer a line on stdout."""
    worker = _Worker(registry)
    import raytrade

    print(json.dumps({"ready": True, "raytrade": str(Path(raytrade.__path__[0]).resolve())}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        print(json.dumps({"ms": worker.measure(cmd["model"], cmd["what"], cmd["reps"])}), flush=True)


# ------------------------------------------------------------------------------------ the driver


class _Client:
    def __init__(self, layout: Path, registry: str) -> None:
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(layout), str(root)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.decide_cpu", "--worker", "--registry", registry],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        self.raytrade = self._read()["raytrade"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker exited (code {self.proc.wait()})")
        return dict(json.loads(line))

    def measure(self, model: str, what: str, reps: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"model": model, "what": what, "reps": reps}) + "\n")
        self.proc.stdin.flush()
        return float(self._read()["ms"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run(registry: str, baseline: Path, rounds: int, reps: int) -> dict[str, Any]:
    """Interleaved A/B: per model and measurement, each round's new and old CPU ms per request."""
    here = Path(__file__).resolve().parents[1] / ".layout"
    new, old = _Client(here, registry), _Client(baseline, registry)
    whats = ["asgi", *(f"decide B={b}" for b in BATCHES)]
    out: dict[str, Any] = {"new_tree": new.raytrade, "baseline_tree": old.raytrade, "rounds": rounds}
    try:
        results: dict[str, dict[str, dict[str, list[float]]]] = {
            m: {w: {"new": [], "old": []} for w in whats} for m in MODELS
        }
        for r in range(rounds):
            for model in MODELS:
                for what in whats:
                    pair = [("new", new), ("old", old)]
                    for label, client in pair if r % 2 == 0 else pair[::-1]:
                        results[model][what][label].append(client.measure(model, what, reps))
    finally:
        new.close()
        old.close()
    for model in MODELS:
        for what in whats:
            cell = results[model][what]
            ratios = [a / b for a, b in zip(cell["new"], cell["old"], strict=True)]
            cell["ratio_median"] = [statistics.median(ratios)]
            cell["ratio_range"] = [min(ratios), max(ratios)]
    out["results"] = results
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    from benchmarks.common import print_table, write_report

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--registry", default="/tmp/sl/work/registry", help="registry with ppo_mlp and gnn")
    parser.add_argument("--baseline", type=Path, help="the baseline tree's .layout folder")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--reps", type=int, default=200, help="calls per measurement")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 20 calls (smoke test)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _serve_worker(args.registry)
        return
    if args.baseline is None:
        parser.error("--baseline is required (the .layout folder of the tree to compare with)")
    rounds, reps = (2, 20) if args.quick else (args.rounds, args.reps)
    out = run(args.registry, args.baseline, rounds, reps)
    rows = []
    for model, cells in out["results"].items():
        for what, cell in cells.items():
            lo, hi = cell["ratio_range"]
            rows.append(
                (
                    f"{model} {what}",
                    f"{statistics.median(cell['new']):.3f} / {statistics.median(cell['old']):.3f}",
                    f"new/old {cell['ratio_median'][0]:.2f} (rounds {lo:.2f}-{hi:.2f})",
                )
            )
    print_table("CPU ms per request, new / old (medians over rounds)", rows)
    write_report(args.json, "decide_cpu", out)


if __name__ == "__main__":
    main()
