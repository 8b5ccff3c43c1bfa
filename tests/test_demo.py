"""``raytrade demo`` end to end on a small universe, on the session's Ray: every stage's output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from raytrade.cluster.demo import DEMO_APP, DemoConfig, run_demo

SMALL = DemoConfig(
    n_symbols=6,
    n_crypto=1,
    years=1.5,
    tune_samples=1,
    tune_iterations=1,
    scenarios=("flash_crash",),
    bootstrap_samples=20,
    model_seeds=1,
)
BASELINES = ("cash", "buy_and_hold", "equal_weight", "inverse_vol", "kelly_lite")


@pytest.mark.slow
@pytest.mark.ray
def test_the_demo_runs_every_stage_on_a_small_universe(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray
    from ray import serve

    from raytrade.replay import read_frame

    run_demo(tmp_path, seed=7, config=SMALL)
    out = capsys.readouterr().out

    # 1 ingest: 6 equities + 1 crypto pair in the store
    bars = read_frame(tmp_path / "store", "bars", columns=["symbol", "ts"])
    assert bars["symbol"].nunique() == 7
    # 2 Ray Data and pandas read the same number of feature rows
    ray_rows, pandas_rows = re.search(
        r"Ray Data read ([\d,]+) feature rows \(pandas: ([\d,]+)\)", out
    ).groups()
    assert (
        ray_rows == pandas_rows == f"{len(read_frame(tmp_path / 'store', 'features', columns=['symbol'])):,}"
    )
    # 3 the three splits
    assert [
        line.split()[0] for line in out.splitlines() if re.match(r"  (train|validation|test) ", line)
    ] == [
        "train",
        "validation",
        "test",
    ]
    # 4 the baselines' report
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert sorted(report["policies"]) == sorted(BASELINES)
    assert report["config"]["simulator"]["cash_rate"]["annual"] == 0.04  # idle cash earns the demo's rate
    cash = report["policies"]["cash"]
    assert cash["metrics"]["total_return"] > 0.0 and cash["metrics"]["sharpe"] is None
    assert "idle cash earns 4.00%/year" in out
    # 5 one trial searched, promoted as version 1, evaluated against the baselines
    leaderboard = json.loads((tmp_path / "runs" / "demo-ppo" / "leaderboard.json").read_text())
    assert len(leaderboard) == 1 and leaderboard[0]["iteration"] == 1
    manifest = json.loads((tmp_path / "registry" / "demo_ppo" / "1" / "manifest.json").read_text())
    assert manifest["name"] == "demo_ppo"
    model_report = json.loads((tmp_path / "report_model" / "report.json").read_text())
    assert sorted(model_report["policies"]) == sorted(["registry:demo_ppo", "equal_weight", "kelly_lite"])
    # the model trained with cash earning the rate its evaluation credits: no warning that they differ
    assert manifest["config"]["env_config"]["sim"]["cash_rate"]["annual"] == 0.04
    assert not any("trained with idle cash earning" in w for w in model_report["warnings"])
    assert all(f"warning: {line}" in out for line in model_report["warnings"])  # on the console too
    from raytrade.tune_specs.selection import cash_line

    held_cash = cash_line(leaderboard[0]["gross_exposure"])
    assert (f"warning: best trial {leaderboard[0]['trial']} {held_cash}" in out) == (held_cash is not None)
    # 6 the served model answered from the store's last bar, and the demo's Serve is gone again
    last_day = f"{bars['ts'].max():%Y-%m-%d}"
    assert re.search(rf"demo_ppo@1 decided from the features of {last_day}: gross", out), out[-2000:]
    assert ray.is_initialized()  # the session's Ray is still up
    # Serve stopped (the demo started it) or, if another test left Serve running, the demo's app deleted
    with pytest.raises(Exception, match=f"no Serve instance|'{DEMO_APP}' does not exist"):
        serve.get_app_handle(DEMO_APP)
