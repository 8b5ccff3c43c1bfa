"""``raytrade tune``: spec registry, input errors, a smoke search per spec, crash recovery, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from raytrade.cluster.tune import LEADERBOARD_FILE, PLOT_FILE, RUN_FILE, tune_command
from raytrade.tune_specs import OFFLINE_SPECS, SPECS, get_spec
from tests.conftest import SmokeRun

REPO = Path(__file__).resolve().parents[1]


def rewrite_feature(root: Path, column: str, values: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Replace ``column`` of every features file of the store at ``root`` in place.

    ``values(symbols, ts_us)`` gets one file's rows and returns the new column (NaN for null)."""
    import pyarrow as pa

    from raytrade.replay.reader import table_files

    for path in table_files(root, "features"):
        table = pq.read_table(path)
        symbols = np.asarray(table["symbol"].to_pylist())
        ts = table["ts"].cast(pa.int64()).to_numpy()
        new = np.asarray(values(symbols, ts), dtype=np.float64)
        field = table.schema.field(column)
        array = pa.array(new, type=field.type, from_pandas=True)
        table = table.set_column(table.schema.get_field_index(column), field, array)
        pq.write_table(table, path)


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(tune_command, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# ------------------------------------------------------------------------------ fast checks


def test_get_spec_unknown_lists_available() -> None:
    with pytest.raises(ValueError, match="available: bc, cql, distrl, gating, gnn, iql, marwil, ppo, tqc"):
        get_spec("nope")


def test_every_spec_has_tiny_smoke_budget() -> None:
    for name in SPECS:
        spec = get_spec(name)
        assert spec.name == name
        assert spec.smoke.iterations <= 5 and spec.smoke.num_samples <= 2
        assert spec.required_features


def test_unknown_spec_is_one_line_error(tmp_path: Path) -> None:
    code, out = invoke(["--spec", "nope", "--replay", str(tmp_path)])
    assert code == 2
    assert out.strip().splitlines() == [
        "error: unknown tune spec 'nope'; available: bc, cql, distrl, gating, gnn, iql, marwil, ppo, tqc"
    ]


def test_missing_replay_is_one_line_error(tmp_path: Path) -> None:
    code, out = invoke(["--spec", "ppo", "--replay", str(tmp_path / "absent"), "--smoke"])
    assert code == 2
    assert out.strip() == f"error: replay store {str(tmp_path / 'absent')!r} does not exist"


def test_replay_without_needed_features_is_one_line_error(tmp_path: Path) -> None:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path / "store"
    market = generate(n_symbols=3, years=1.0, seed=1)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    rewrite_feature(root, "fc_std", lambda s, t: np.full(len(s), np.nan))
    code, out = invoke(["--spec", "ppo", "--replay", str(root), "--smoke"])
    assert code == 2
    assert out.startswith("error: replay store") and "lacks features spec 'ppo' needs: ['fc_std']" in out
    assert len(out.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ smoke searches


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("name", sorted(set(SPECS) - OFFLINE_SPECS))  # offline ones: tests/test_offline.py
def test_smoke_search(name: str, smoke_runs: Callable[[str], SmokeRun]) -> None:
    run = smoke_runs(name)  # the session's one search of this spec (the registry/serve tests reuse ppo's)
    run_dir, out = run.run_dir, run.output
    rows = json.loads((run_dir / LEADERBOARD_FILE).read_text())
    spec = get_spec(name)
    assert len(rows) == (spec.smoke.num_samples if name == "ppo" else 1)  # see smoke_runs
    assert all(r["checkpoint"] for r in rows)
    assert all(np.isfinite(r["objective"]) for r in rows)
    assert [r["objective"] for r in rows] == sorted((r["objective"] for r in rows), reverse=True)
    assert (run_dir / PLOT_FILE).stat().st_size > 1000
    assert "leaderboard" in out and rows[0]["trial"] in out
    assert json.loads((run_dir / RUN_FILE).read_text())["spec"] == name


@pytest.mark.slow
@pytest.mark.ray
def test_smoke_trials_carry_the_train_normaliser_and_report_exposure(ppo_smoke_run: Path) -> None:
    from raytrade.envs.replay_loader import DEFAULT_FEATURES

    rows = json.loads((ppo_smoke_run / LEADERBOARD_FILE).read_text())
    env_config = json.loads((ppo_smoke_run / rows[0]["trial_dir"] / "params.json").read_text())["env_config"]
    assert env_config["feature_columns"] == list(DEFAULT_FEATURES)
    assert env_config["normalizer"]["columns"] == list(DEFAULT_FEATURES)
    assert env_config["normalizer"]["fitted_on"].endswith(" train")
    assert all(r["gross_exposure"] >= 0 and r["costs"] >= 0 and r["turnover"] >= 0 for r in rows)


# ------------------------------------------------------------------------------ fault tolerance


# Long enough that the kill / the interrupt lands mid-run (checkpoints every 2 iterations, one smoke
# iteration takes about 0.5-2 s here with its train and validation scores), short enough to keep the
# suite's wall time down (16 iterations let a run finish before the watcher fired, once).
FAULT_ITERATIONS = 40


def _trial_dirs(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("*_0000*") if p.is_dir()] if run_dir.is_dir() else []


def _results(trial_dir: Path) -> list[dict[str, Any]]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _wait_for_checkpoints(run_dir: Path, count: int, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trial in _trial_dirs(run_dir):
            if len(list(trial.glob("checkpoint_*"))) >= count and (trial / "result.json").exists():
                return trial
        time.sleep(0.05)
    raise TimeoutError(f"no trial of {run_dir} wrote {count} checkpoints in {timeout}s")


@pytest.mark.slow
@pytest.mark.ray
def test_killed_trial_resumes_from_checkpoint(
    ray_session: None, synthetic_store: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "runs"
    run_dir = storage / "crash"
    killed: dict[str, int] = {}

    def kill_after_second_checkpoint() -> None:
        trial = _wait_for_checkpoints(run_dir, 2, timeout=120)
        pid = int(_results(trial)[-1]["pid"])
        killed["pid"], killed["iteration"] = pid, len(_results(trial))
        os.kill(pid, signal.SIGKILL)

    watcher = threading.Thread(target=kill_after_second_checkpoint, daemon=True)
    watcher.start()
    args = ["--spec", "ppo", "--replay", str(synthetic_store), "--smoke", "--storage", str(storage)]
    iterations = str(FAULT_ITERATIONS)
    code, out = invoke(
        [*args, "--name", "crash", "--num-samples", "1", "--iterations", iterations, "--no-wandb"]
    )
    watcher.join(timeout=5)
    assert code == 0, out
    assert "pid" in killed, "the watcher never killed the trial"
    results = _results(_trial_dirs(run_dir)[0])
    assert results[-1]["training_iteration"] == FAULT_ITERATIONS
    restored = [r for r in results if r["pid"] != killed["pid"]]
    first = restored[0]
    # The restarted process continued from a checkpoint (every 2 iterations), not from zero.
    assert first["iterations_since_restore"] == 1
    assert first["training_iteration"] > 1 and (first["training_iteration"] - 1) % 2 == 0


@pytest.mark.slow
@pytest.mark.ray
def test_resume_continues_interrupted_run(ray_session: None, synthetic_store: Path, tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    run_dir = storage / "paused"
    args = ["--spec", "ppo", "--replay", str(synthetic_store), "--smoke", "--storage", str(storage)]
    # Enough iterations that the interrupt lands mid-run even on a quiet machine (the first
    # checkpoint comes after 2 of FAULT_ITERATIONS); the resumed run then finishes the rest.
    args += ["--name", "paused", "--num-samples", "1", "--iterations", str(FAULT_ITERATIONS), "--no-wandb"]
    code = "import sys; from raytrade.cluster.tune import tune_command; tune_command(sys.argv[1:])"
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env)
    try:
        _wait_for_checkpoints(run_dir, 1, timeout=180)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = _results(_trial_dirs(run_dir)[0])
    assert interrupted[-1]["training_iteration"] < FAULT_ITERATIONS

    code_, out = invoke([*args, "--resume"])
    assert code_ == 0, out
    results = _results(_trial_dirs(run_dir)[0])
    assert results[-1]["training_iteration"] == FAULT_ITERATIONS
    resumed = results[len(interrupted) :]
    assert resumed[0]["iterations_since_restore"] == 1
    assert resumed[0]["training_iteration"] > 1
    assert json.loads((run_dir / LEADERBOARD_FILE).read_text())[0]["iteration"] >= 1


def test_run_file_records_code_libraries_and_data_when_the_search_starts(synthetic_store: Path) -> None:
    from raytrade.cluster.tune import TuneOptions, run_record
    from raytrade.models.registry import code_version, library_versions
    from raytrade.replay.fingerprint import data_fingerprint

    record = run_record(TuneOptions(spec="ppo", replay=synthetic_store, smoke=True), get_spec("ppo"))
    sha, n_files = data_fingerprint(synthetic_store)
    assert (record.provenance.data_sha256, record.provenance.data_files) == (sha, n_files)
    assert record.provenance.code_version == code_version()
    assert record.provenance.libraries == library_versions()


@pytest.mark.slow
@pytest.mark.ray
def test_the_search_prints_where_tensorboard_and_wandb_log_and_writes_there(
    smoke_runs: Callable[[str], SmokeRun],
) -> None:
    run = smoke_runs("ppo")  # the session's ppo search: wandb offline, the CLI's defaults
    assert f"TensorBoard logs: {run.run_dir} (open: tensorboard --logdir {run.run_dir})" in run.output
    assert f"(upload: wandb sync {run.run_dir / 'wandb'}/offline-run-*)" in run.output
    assert list(run.run_dir.glob("*/events.out.tfevents.*"))
    assert list((run.run_dir / "wandb").glob("offline-run-*"))


def test_no_dashboard_reaches_the_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raytrade.cluster import tune

    asked: list[bool] = []

    def fake_run_tune(opts: Any, dashboard: bool = True) -> Any:
        asked.append(dashboard)
        raise SystemExit(0)

    monkeypatch.setattr(tune, "run_tune", fake_run_tune)
    args = ["--spec", "ppo", "--replay", str(tmp_path), "--no-wandb"]
    CliRunner().invoke(tune_command, args)
    CliRunner().invoke(tune_command, [*args, "--no-dashboard"])
    assert asked == [True, False]
