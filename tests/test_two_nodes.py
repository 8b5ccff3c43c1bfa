"""A Tune search on a local two-node Ray cluster places its trials on both nodes.

The cluster (``ray.cluster_utils.Cluster``: head + one worker node, 1 CPU and one ``trial_slot``
custom resource each) runs in a subprocess so the session's Ray stays untouched. Each trial asks for
one ``trial_slot``, so two concurrent trials must land on different nodes; the node ids come from
the trials' own results (``node_id``, written by the objective callback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from raytrade.cluster.tune import TuneOptions, run_tune

store, storage = Path(sys.argv[1]), Path(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"trial_slot": 1}})
cluster.add_node(num_cpus=1, resources={"trial_slot": 1})
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
cluster.wait_for_nodes()
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
opts = TuneOptions(spec="ppo", replay=store, smoke=True, num_samples=2, iterations=2, storage=storage,
                   wandb="disabled", trial_resources={"trial_slot": 1})
outcome = run_tune(opts)
print("RESULT " + json.dumps({"nodes": nodes, "trial_nodes": [r.node_id for r in outcome.leaderboard]}))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
@pytest.mark.ray
def test_trials_spread_over_two_nodes(synthetic_store: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(synthetic_store), str(tmp_path / "runs")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert len(result["nodes"]) == 2
    assert sorted(result["trial_nodes"]) == result["nodes"]
