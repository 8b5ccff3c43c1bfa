"""``make bench``: run every benchmark in its own process, collect their JSON, print one summary.

Each benchmark writes ``OUT/<name>.json`` and prints its own table; the summary lists the headline
figure of each against its target. Benchmarks are measurements, not tests: nothing here fails on a
missed target, but the summary marks it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# (module, headline key, target, higher is better)
BENCHMARKS: tuple[tuple[str, str, float, bool], ...] = (
    ("ingest", "seconds", 60.0, False),
    ("read_features", "ratio_ray_over_pyarrow", 0.3, True),
    ("env_throughput", "core_asset_steps_per_s", 10e6, True),
    ("inference_latency", "max_median_us", 2000.0, False),
    ("ppo_throughput", "ratio", 0.7, True),
    ("serve_latency", "act_p99_ms", 50.0, False),
    ("offline", "ratio", 0.5, True),
    ("spread_estimators", "cs_over_truth_liquid", 2.0, False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = []
    for module, key, target, higher in BENCHMARKS:
        if args.only and module not in args.only:
            continue
        path = args.out / f"{module}.json"
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{module}", "--json", str(path)])
        if code != 0 or not path.exists():
            summary.append((module, key, "failed", target, "FAILED"))
            continue
        value = float(json.loads(path.read_text())[key])
        met = value >= target if higher else value <= target
        summary.append((module, key, f"{value:,.3f}", target, "met" if met else "MISSED"))
    print("\nbenchmark summary (details in the tables above and in", args.out, ")")
    width = max(len(m) for m, *_ in BENCHMARKS) + 2
    print(f"{'benchmark':<{width}}{'metric':<28}{'value':>18}{'target':>14}  status")
    for module, key, value, target, status in summary:
        bound = ">=" if dict((m, h) for m, _, _, h in BENCHMARKS)[module] else "<="
        print(f"{module:<{width}}{key:<28}{value:>18}{bound:>4}{target:>10,.3g}  {status}")


if __name__ == "__main__":
    main()
