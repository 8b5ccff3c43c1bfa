"""Single-decision inference latency of the weight-producing RLModules; writes JSON, prints a table.

    python -m benchmarks.inference_latency --json out.json [--quick]

For ``ppo_mlp``, ``distributional`` and ``gnn``: ``forward_inference`` (what serving calls: encoder,
heads and the exact projection to feasible weights) on one observation (B = 1) of a synthetic
N = 32 market, under ``torch.no_grad`` with ``torch.set_num_threads(1)``. Reports the median and
p90 over many calls (after a warm-up) and the multiply-adds per decision
(``models.catalog.flops_per_decision``). Target: median <= 2 ms (``max_median_us`` <= 2000).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.rllib.core.columns import Columns

from benchmarks.common import print_table, quick_and_json_args, timed, write_report
from raytrade.envs.gym_envs import PortfolioEnv
from raytrade.models.catalog import flops_per_decision, rl_module_spec

FAMILIES = ("ppo_mlp", "distributional", "gnn")
N_ASSETS = 32
TARGET_US = 2000.0


def _latency_us(family: str, calls: int, warmup: int) -> dict[str, float]:
    env = PortfolioEnv({"data": {"kind": "synthetic", "n_assets": N_ASSETS, "seed": 0}, "flat_obs": True})
    spec = rl_module_spec(family)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    torch.manual_seed(0)
    module = spec.build()
    module.eval()  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=0)
    batch = {Columns.OBS: torch.as_tensor(obs)[None]}
    with torch.no_grad():
        for _ in range(warmup):
            module.forward_inference(batch)
        times = np.array([timed(lambda: module.forward_inference(batch))[1] for _ in range(calls)]) * 1e6
    return {
        "median_us": float(np.median(times)),
        "p90_us": float(np.percentile(times, 90)),
        "madds_per_decision": float(flops_per_decision(module, N_ASSETS)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = quick_and_json_args(__doc__, argv)
    torch.set_num_threads(1)
    calls, warmup = (50, 5) if args.quick else (2000, 100)
    per_family = {f: _latency_us(f, calls, warmup) for f in FAMILIES}
    results: dict[str, Any] = {
        "n_assets": N_ASSETS,
        "batch": 1,
        "calls": calls,
        "threads": 1,
        "families": per_family,
        "max_median_us": max(r["median_us"] for r in per_family.values()),
        "target_median_us": TARGET_US,
    }
    rows: list[tuple[str, Any, str]] = []
    for f, r in per_family.items():
        rows.append((f"{f} median us", r["median_us"], f"<= {TARGET_US:,.0f}"))
        rows.append((f"{f} p90 us", r["p90_us"], ""))
        rows.append((f"{f} multiply-adds", int(r["madds_per_decision"]), "matmuls only"))
    print_table(f"inference latency (B=1, N={N_ASSETS}, 1 thread, {calls} calls)", rows)
    write_report(args.json, "inference_latency", results)
    return results


if __name__ == "__main__":
    main()
