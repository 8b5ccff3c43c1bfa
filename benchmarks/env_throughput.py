"""Simulator and gymnasium env throughput on one process; writes JSON and prints a table.

    python benchmarks/env_throughput.py --json out.json [--quick]   (or python -m benchmarks.env_throughput)

Measures (random target weights in [-1, 1], episodes reset as they end, like a training loop):

* ``core_asset_steps_per_s``: ``MarketSimulator.step`` with B = 256 episodes x N = 32 assets
  (target >= 10M asset-steps/s);
* ``core_b1_step_us``: one B = 1 step (the live path), median microseconds;
* ``gym_single_steps_per_s``: ``PortfolioEnv.step`` (B = 1, includes the observation dict);
* ``gym_vector_env_steps_per_s``: ``PortfolioVectorEnv.step`` with 256 envs, env-steps per second;
* ``vectorbt_asset_steps_per_s``: the peer reference, vectorbt's ``Portfolio.from_orders`` on the same
  B = 256 x N = 32 shape (target percent orders, cash shared within each episode's group, fees and
  slippage, orders sorted sells-first), measured in the same run after a warm-up call that compiles
  it; ``core_vs_vectorbt`` is our core's asset-steps/s over it (target >= 5). vectorbt comes with the
  optional ``bench`` extra (``make bench`` installs it); without it both are null with the reason.

vectorbt simulates a whole price history in one call while our core steps bar by bar (a policy
decides between bars), so the comparison favours vectorbt: it is the ceiling of a vectorised backtest.

On a shared machine wall time counts the time other processes hold the core: both measurements
also report the rate in the measuring thread's own CPU time (``*_cpu_*``; both run on one thread,
neither uses numba's parallel mode), and ``core_vs_vectorbt_cpu`` is their ratio. It leaves out the
time the thread waited, not what the other processes do to its caches and clock, so it is less
load-dependent than the wall ratio, not independent of load: quote several runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, quick_and_json_args, write_report
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.gym_envs import PortfolioEnv, PortfolioVectorEnv
from raytrade.envs.simulator import MarketSimulator
from raytrade.envs.synthetic_market import synthetic_market_data


def _core_throughput(b: int, n: int, n_steps: int) -> tuple[float, float]:
    """Asset-steps per second of wall time and of this thread's CPU time."""
    data = synthetic_market_data(n_assets=n, n_steps=2000, seed=0, n_crypto=n // 8)
    sim = MarketSimulator(data, SimulatorConfig(episode_len=252), n_envs=b, seed=0)
    acts = np.random.default_rng(0).uniform(-1, 1, (16, b, n))
    for i in range(5):
        sim.step(acts[i])
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(n_steps):
        res = sim.step(acts[i % 16])
        done = res.terminated | res.truncated
        if done.any():
            sim.reset_envs(done)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return b * n * n_steps / wall, b * n * n_steps / cpu


def _b1_latency_us(n: int, n_steps: int) -> float:
    data = synthetic_market_data(n_assets=n, n_steps=2000, seed=0, n_crypto=n // 8)
    sim = MarketSimulator(data, SimulatorConfig(episode_len=252), n_envs=1, seed=0)
    acts = np.random.default_rng(0).uniform(-1, 1, (16, 1, n))
    times = np.empty(n_steps)
    for i in range(n_steps):
        t0 = time.perf_counter()
        res = sim.step(acts[i % 16])
        times[i] = time.perf_counter() - t0
        if res.truncated[0] or res.terminated[0]:
            sim.reset_envs(np.ones(1, dtype=bool))
    return float(np.median(times) * 1e6)


def _vectorbt_throughput(b: int, n: int, n_steps: int) -> tuple[float, float] | str:
    """vectorbt's asset-steps/s (wall, thread CPU) on B groups of N assets over ``n_steps`` bars, or
    why it is absent."""
    try:
        import vectorbt as vbt
    except ImportError:
        return "vectorbt is not installed (pip install -e '.[bench]')"
    import pandas as pd

    rng = np.random.default_rng(0)

    def inputs(steps: int) -> tuple[pd.DataFrame, np.ndarray]:
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (steps, b * n)), axis=0))
        targets = rng.uniform(-1.0, 1.0, (steps, b * n)) / n  # gross <= 1 within each group
        return pd.DataFrame(close), targets

    def simulate(close: pd.DataFrame, targets: np.ndarray) -> None:
        vbt.Portfolio.from_orders(
            close,
            size=targets,
            size_type="targetpercent",
            group_by=np.repeat(np.arange(b), n),
            cash_sharing=True,
            call_seq="auto",
            fees=0.0005,
            slippage=0.0005,
            init_cash=1e6,
            freq="1D",
        )

    simulate(*inputs(8))  # compiles vectorbt's numba kernels
    close, targets = inputs(n_steps)
    t0, c0 = time.perf_counter(), time.thread_time()
    simulate(close, targets)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return b * n * n_steps / wall, b * n * n_steps / cpu


def _env_config(n: int) -> dict[str, Any]:
    return {
        "data": {"kind": "synthetic", "n_assets": n, "n_steps": 2000, "seed": 0},
        "sim": {"episode_len": 252},
    }


def _gym_single(n: int, n_steps: int) -> float:
    env = PortfolioEnv(_env_config(n))
    env.reset(seed=0)
    acts = np.random.default_rng(0).uniform(-1, 1, (16, n)).astype(np.float32)
    t0 = time.perf_counter()
    for i in range(n_steps):
        _, _, term, trunc, _ = env.step(acts[i % 16])
        if term or trunc:
            env.reset()
    return n_steps / (time.perf_counter() - t0)


def _gym_vector(b: int, n: int, n_steps: int) -> float:
    venv = PortfolioVectorEnv(_env_config(n), num_envs=b)
    venv.reset(seed=0)
    acts = np.random.default_rng(0).uniform(-1, 1, (16, b, n)).astype(np.float32)
    t0 = time.perf_counter()
    for i in range(n_steps):
        venv.step(acts[i % 16])
    return b * n_steps / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict[str, Any]:
    """All measurements; ``quick`` shrinks every budget to a smoke test."""
    k = 20 if quick else 1
    b, n = 256, 32
    core, core_cpu = _core_throughput(b, n, 1000 // k)
    peer = _vectorbt_throughput(b, n, 1000 // k)
    return {
        "config": {"B": b, "N": n, "quick": quick},
        "core_asset_steps_per_s": core,
        "core_cpu_asset_steps_per_s": core_cpu,
        "core_b1_step_us": _b1_latency_us(n, 5000 // k),
        "gym_single_steps_per_s": _gym_single(n, 5000 // k),
        "gym_vector_env_steps_per_s": _gym_vector(b, n, 500 // k),
        "vectorbt_asset_steps_per_s": peer[0] if not isinstance(peer, str) else None,
        "vectorbt_cpu_asset_steps_per_s": peer[1] if not isinstance(peer, str) else None,
        "core_vs_vectorbt": core / peer[0] if not isinstance(peer, str) else None,
        "core_vs_vectorbt_cpu": core_cpu / peer[1] if not isinstance(peer, str) else None,
        "vectorbt_absent": peer if isinstance(peer, str) else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = quick_and_json_args(__doc__, argv)
    out = run(quick=args.quick)
    print_table(
        "env throughput (one process)",
        [
            ("core asset-steps/s (B=256, N=32)", out["core_asset_steps_per_s"], ">= 10,000,000"),
            ("core asset-steps/s per CPU second", out["core_cpu_asset_steps_per_s"], "thread CPU time"),
            ("core B=1 step latency (us, median)", out["core_b1_step_us"], "live path"),
            ("gym PortfolioEnv steps/s", out["gym_single_steps_per_s"], "B=1 incl. obs dict"),
            ("gym PortfolioVectorEnv env-steps/s", out["gym_vector_env_steps_per_s"], "256 envs"),
            (
                "vectorbt from_orders asset-steps/s",
                out["vectorbt_asset_steps_per_s"],
                out["vectorbt_absent"] or "peer",
            ),
            (
                "vectorbt asset-steps/s per CPU second",
                out["vectorbt_cpu_asset_steps_per_s"],
                "thread CPU time",
            ),
            ("core / vectorbt", out["core_vs_vectorbt"], ">= 5"),
            ("core / vectorbt in CPU time", out["core_vs_vectorbt_cpu"], ">= 5 (less load-dependent)"),
        ],
    )
    write_report(args.json, "env_throughput", out)
    return out


if __name__ == "__main__":
    main()
