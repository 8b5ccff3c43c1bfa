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

The two sides run ``repeats`` times (5; 3 with ``--quick``), interleaved: core, vectorbt, core,
vectorbt, ... Each pair's ratio compares two runs a few seconds apart, so a burst of load on the
machine hits one pair rather than one side; ``core_vs_vectorbt`` (wall) and ``core_vs_vectorbt_cpu``
are the medians of the paired ratios (:func:`paired_median_ratio`), ``*_pairs`` every pair's
ratio, and the rates are the medians over the repeats. A single timed vectorbt call varied by 3x
between runs; the median of paired ratios is what a run reports.

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
from collections.abc import Callable, Sequence
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

Rates = tuple[float, float]
"""Asset-steps per second of wall time and of the measuring thread's CPU time."""


def paired_median_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The median over pairs of ``ours[k] / theirs[k]``: runs ``k`` of both sides were measured back
    to back, so each ratio sees the same load on the machine (the median of the ratios, not the
    ratio of the medians, which would pair runs measured apart)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"need as many runs of each side, at least one; got {len(ours)} and {len(theirs)}")
    return float(np.median(np.asarray(ours, dtype=np.float64) / np.asarray(theirs, dtype=np.float64)))


def _core_runner(b: int, n: int, n_steps: int) -> Callable[[], Rates]:
    """A warmed-up simulator; each call of the result steps it ``n_steps`` times and returns the rates."""
    data = synthetic_market_data(n_assets=n, n_steps=2000, seed=0, n_crypto=n // 8)
    sim = MarketSimulator(data, SimulatorConfig(episode_len=252), n_envs=b, seed=0)
    acts = np.random.default_rng(0).uniform(-1, 1, (16, b, n))
    for i in range(5):
        sim.step(acts[i])

    def measure() -> Rates:
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(n_steps):
            res = sim.step(acts[i % 16])
            done = res.terminated | res.truncated
            if done.any():
                sim.reset_envs(done)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return b * n * n_steps / wall, b * n * n_steps / cpu

    return measure


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


def _vectorbt_runner(b: int, n: int, n_steps: int) -> Callable[[], Rates] | str:
    """vectorbt compiled and its inputs drawn; each call of the result simulates B groups of N assets
    over ``n_steps`` bars and returns its asset-steps/s (wall, thread CPU). Or why it is absent."""
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

    def measure() -> Rates:
        t0, c0 = time.perf_counter(), time.thread_time()
        simulate(close, targets)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return b * n * n_steps / wall, b * n * n_steps / cpu

    return measure


def _paired(b: int, n: int, n_steps: int, repeats: int) -> dict[str, Any]:
    """Core and vectorbt measured ``repeats`` times each, interleaved: the median rates and the
    median of the paired ratios (wall and thread CPU), with every pair's ratios."""
    core = _core_runner(b, n, n_steps)
    peer = _vectorbt_runner(b, n, n_steps)
    ours: list[Rates] = []
    theirs: list[Rates] = []
    for _ in range(repeats):
        ours.append(core())
        if not isinstance(peer, str):
            theirs.append(peer())
    out: dict[str, Any] = {
        "core_asset_steps_per_s": float(np.median([r[0] for r in ours])),
        "core_cpu_asset_steps_per_s": float(np.median([r[1] for r in ours])),
        "repeats": repeats,
    }
    if isinstance(peer, str):
        none = dict.fromkeys(("vectorbt_asset_steps_per_s", "vectorbt_cpu_asset_steps_per_s"))
        pairs = dict.fromkeys(("core_vs_vectorbt", "core_vs_vectorbt_cpu"))
        lists = {"core_vs_vectorbt_pairs": None, "core_vs_vectorbt_cpu_pairs": None}
        return {**out, **none, **pairs, **lists, "vectorbt_absent": peer}
    wall = [o[0] / p[0] for o, p in zip(ours, theirs, strict=True)]
    cpu = [o[1] / p[1] for o, p in zip(ours, theirs, strict=True)]
    return {
        **out,
        "vectorbt_asset_steps_per_s": float(np.median([r[0] for r in theirs])),
        "vectorbt_cpu_asset_steps_per_s": float(np.median([r[1] for r in theirs])),
        "core_vs_vectorbt": paired_median_ratio([r[0] for r in ours], [r[0] for r in theirs]),
        "core_vs_vectorbt_cpu": paired_median_ratio([r[1] for r in ours], [r[1] for r in theirs]),
        "core_vs_vectorbt_pairs": wall,
        "core_vs_vectorbt_cpu_pairs": cpu,
        "vectorbt_absent": None,
    }


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
    paired = _paired(b, n, 1000 // k, 3 if quick else 5)
    return {
        "config": {"B": b, "N": n, "quick": quick},
        **paired,
        "core_b1_step_us": _b1_latency_us(n, 5000 // k),
        "gym_single_steps_per_s": _gym_single(n, 5000 // k),
        "gym_vector_env_steps_per_s": _gym_vector(b, n, 500 // k),
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
            ("core / vectorbt", out["core_vs_vectorbt"], ">= 5; " + _pairs(out["core_vs_vectorbt_pairs"])),
            (
                "core / vectorbt in CPU time",
                out["core_vs_vectorbt_cpu"],
                ">= 5 (less load-dependent); " + _pairs(out["core_vs_vectorbt_cpu_pairs"]),
            ),
        ],
    )
    write_report(args.json, "env_throughput", out)
    return out


def _pairs(ratios: list[float] | None) -> str:
    """The note on a ratio: the median of which paired runs."""
    if ratios is None:
        return "no pairs"
    return f"median of {len(ratios)} paired runs: " + " ".join(f"{r:.2f}" for r in ratios)


if __name__ == "__main__":
    main()
