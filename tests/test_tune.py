"""``raytrade tune``: spec registry, input errors, a smoke search per spec, crash recovery, resume."""

from __future__ import annotations

import _thread
import json
import os
import signal
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
from raytrade.tune_specs.objective import CHECKPOINT_SCORE
from tests.conftest import SmokeRun


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


@pytest.mark.parametrize(("budget", "updates"), [("smoke", 1), ("budget", 4)])
def test_tqc_iteration_is_a_fixed_number_of_fragments_and_updates(budget: str, updates: int) -> None:
    from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights

    from raytrade.tune_specs.tqc import updates_per_iteration

    spec = get_spec("tqc")
    b = getattr(spec, budget)
    cfg = spec.build({"data": {"kind": "synthetic", "n_assets": 3, "n_steps": 50}}, b)
    # RLlib's "auto" fragment was n_step (1) env step with one update each: train_batch updates of
    # minibatch replayed steps an iteration (32 for smoke, 1000 for the full budget), and SAC's
    # one-second minimum iteration repeated training steps on a fast machine
    assert cfg.get_rollout_fragment_length() == b.minibatch
    assert calculate_rr_weights(cfg) == [1, 1]  # one fragment sampled, one update, per training step
    assert cfg.min_time_s_per_iteration == 0
    assert cfg.min_sample_timesteps_per_iteration == b.train_batch
    assert cfg.num_steps_sampled_before_learning_starts == b.train_batch
    assert b.train_batch // cfg.get_rollout_fragment_length() == updates_per_iteration(b) == updates


def test_tqc_refuses_a_train_batch_of_partial_fragments() -> None:
    spec = get_spec("tqc")
    budget = spec.budget.model_copy(update={"train_batch": 1000})
    with pytest.raises(ValueError, match="tqc budget: train_batch=1000 must be a multiple of minibatch=256"):
        spec.build({"data": {"kind": "synthetic", "n_assets": 3, "n_steps": 50}}, budget)


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
    for row in rows:  # the best of every iteration's checkpoint, whichever Tune deleted after
        scores = {r["training_iteration"]: r[CHECKPOINT_SCORE] for r in _results(run_dir / row["trial_dir"])}
        assert all(np.isfinite(list(scores.values())))
        assert row["objective"] == max(scores.values()) == scores[row["iteration"]]
        assert row["checkpoints_compared"] == len(scores)
        kept = list((run_dir / row["trial_dir"]).glob("checkpoint_*"))
        assert (run_dir / row["checkpoint"]) in kept and len(kept) <= spec.smoke.checkpoints_kept + 1


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


# Checkpoints come every ``CHECKPOINT_EVERY`` iterations (the smoke budget). The watchers act once the
# driver has logged the iteration after the first checkpoint: Tune holds a trial's next iteration until
# it has processed the save of the previous one, so that row proves the checkpoint is the one a
# restart restores. A checkpoint folder alone proves nothing: the trial writes it before the driver
# records it, and an interrupt in between restarts the trial from zero (issue 9's flake).
# ``TUNE_GLOBAL_CHECKPOINT_S=0`` syncs the driver's result.json to the run folder on every controller
# step (Tune's default is every 10 s or more), so the watcher sees that row one step after it is
# logged. The kill / the interrupt then lands at about iteration CHECKPOINT_EVERY + 2, and
# FAULT_ITERATIONS leaves the trial 5 more iterations (each a train batch and two scorings: 0.5 s or
# more idle, slower under load) against the watcher's one step plus a 50 ms poll; load slows the trial
# at least as much as the watcher, which needs only a slice of the driver's process.
CHECKPOINT_EVERY = get_spec("ppo").smoke.checkpoint_every
FAULT_ITERATIONS = CHECKPOINT_EVERY + 6


def _trial_dirs(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("*_0000*") if p.is_dir()] if run_dir.is_dir() else []


def _results(trial_dir: Path) -> list[dict[str, Any]]:
    """The trial's rows in the run folder's result.json. Tune's sync copies the file over while a
    search runs, so a read may end inside a row: only rows ended by a newline are complete."""
    lines = (trial_dir / "result.json").read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def _wait_past_first_checkpoint(run_dir: Path, timeout: float) -> list[dict[str, Any]]:
    """The rows of the run's trial once the driver has logged iteration ``CHECKPOINT_EVERY + 1`` (the
    first checkpoint is then registered: see above)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trial in _trial_dirs(run_dir):
            rows = _results(trial) if (trial / "result.json").exists() else []
            if any(r["training_iteration"] > CHECKPOINT_EVERY for r in rows):
                return rows
        time.sleep(0.05)
    raise TimeoutError(f"no trial of {run_dir} logged iteration {CHECKPOINT_EVERY + 1} in {timeout}s")


def _fault_args(store: Path, storage: Path, name: str) -> list[str]:
    """A one-trial ppo smoke search of FAULT_ITERATIONS iterations named ``name``."""
    args = ["--spec", "ppo", "--replay", str(store), "--smoke", "--storage", str(storage), "--name", name]
    return [*args, "--num-samples", "1", "--iterations", str(FAULT_ITERATIONS), "--no-wandb"]


@pytest.mark.slow
@pytest.mark.ray
def test_killed_trial_resumes_from_checkpoint(
    ray_session: None, synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # see FAULT_ITERATIONS
    run_dir = tmp_path / "runs" / "crash"
    killed: dict[str, int] = {}

    def kill_after_first_checkpoint() -> None:
        rows = _wait_past_first_checkpoint(run_dir, timeout=180)
        killed["pid"] = int(rows[-1]["pid"])
        os.kill(killed["pid"], signal.SIGKILL)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    code, out = invoke(_fault_args(synthetic_store, tmp_path / "runs", "crash"))
    watcher.join(timeout=5)
    assert code == 0, out
    assert "pid" in killed, "the watcher never killed the trial"
    results = _results(_trial_dirs(run_dir)[0])
    assert results[-1]["training_iteration"] == FAULT_ITERATIONS
    restored = [r for r in results if r["pid"] != killed["pid"]]
    first = restored[0]
    # The restarted process continued from a checkpoint, not from zero: one the killed process saved
    # after an iteration the driver had logged (a checkpoint is registered after its result row).
    last_logged = max(r["training_iteration"] for r in results if r["pid"] == killed["pid"])
    assert first["iterations_since_restore"] == 1
    assert 1 < first["training_iteration"] <= last_logged + 1


@pytest.mark.slow
@pytest.mark.ray
def test_resume_continues_interrupted_run(
    ray_session: None, synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The search runs in this process, on the session's Ray, and is interrupted as Ctrl-C would:
    # interrupt_main runs the SIGINT handler Tune installs (in the main thread only) for its graceful
    # stop, which saves the experiment state one last time.
    assert threading.current_thread() is threading.main_thread()
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # see FAULT_ITERATIONS
    run_dir = tmp_path / "runs" / "paused"
    args = _fault_args(synthetic_store, tmp_path / "runs", "paused")
    sent: list[bool] = []

    def interrupt_after_first_checkpoint() -> None:
        _wait_past_first_checkpoint(run_dir, timeout=180)
        _thread.interrupt_main(signal.SIGINT)
        sent.append(True)

    watcher = threading.Thread(target=interrupt_after_first_checkpoint, daemon=True)
    watcher.start()
    code, out = invoke(args)
    watcher.join(timeout=5)
    assert sent, "the watcher never interrupted the search"
    assert code == 1 and "search interrupted with 1 of 1 trials unfinished" in out, out
    interrupted = _results(_trial_dirs(run_dir)[0])
    assert interrupted[-1]["training_iteration"] < FAULT_ITERATIONS

    code, out = invoke([*args, "--resume"])
    assert code == 0, out
    results = _results(_trial_dirs(run_dir)[0])
    assert results[-1]["training_iteration"] == FAULT_ITERATIONS
    # On restore Tune appends to the result.json it had (rows past the checkpoint included), so the
    # resumed run's rows are told by the process that wrote them, not by their position.
    before = {r["pid"] for r in interrupted}
    resumed = [r for r in results if r["pid"] not in before]
    assert resumed[0]["iterations_since_restore"] == 1
    assert resumed[0]["training_iteration"] > 1
    # 7 iterations, each checkpointed, across a resume: the trial kept its best few and its latest on
    # disk, and the leaderboard names the best iteration of them all
    (row,) = json.loads((run_dir / LEADERBOARD_FILE).read_text())
    scores = {r["training_iteration"]: r[CHECKPOINT_SCORE] for r in results}
    assert row["objective"] == max(scores.values()) == scores[row["iteration"]]
    assert row["checkpoints_compared"] == FAULT_ITERATIONS
    kept = sorted((run_dir / row["trial_dir"]).glob("checkpoint_*"))
    assert (run_dir / row["checkpoint"]) in kept
    # the best few, the latest, and at most a folder the interrupted run wrote but never registered
    assert len(kept) <= get_spec("ppo").smoke.checkpoints_kept + 2 < FAULT_ITERATIONS


def test_run_file_records_code_libraries_and_data_when_the_search_starts(synthetic_store: Path) -> None:
    from raytrade.cluster.tune import TuneOptions, run_record
    from raytrade.models.registry import code_version, library_versions
    from raytrade.replay.fingerprint import data_fingerprint

    record = run_record(TuneOptions(spec="ppo", replay=synthetic_store, smoke=True), get_spec("ppo"))
    sha, n_files = data_fingerprint(synthetic_store)
    assert (record.provenance.data_sha256, record.provenance.data_files) == (sha, n_files)
    assert record.provenance.code_version == code_version()
    assert record.provenance.libraries == library_versions()


def test_a_search_recorded_marked_to_market_is_not_resumed_under_the_closed_book_rule(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming a search started before the objective closed the book would rank its checkpoints
    under two rules in one leaderboard: refused, before Ray starts, naming both rules."""
    from raytrade.cluster import local_cluster
    from raytrade.cluster.run_file import RUN_FILE, write_run_file
    from raytrade.cluster.tune import TuneOptions, run_record

    monkeypatch.setattr(local_cluster, "init_ray", lambda *_, **__: pytest.fail("Ray started"))
    args = _fault_args(synthetic_store, tmp_path / "runs", "old")
    record = run_record(TuneOptions(spec="ppo", replay=synthetic_store, smoke=True), get_spec("ppo"))
    run_dir = tmp_path / "runs" / "old"
    write_run_file(run_dir, record)
    recorded = json.loads((run_dir / RUN_FILE).read_text())
    assert recorded["objective"]["book_end"] == "closed"  # what a search records now
    del recorded["objective"]["book_end"]  # as a raytrade older than the exit cost wrote it
    (run_dir / RUN_FILE).write_text(json.dumps(recorded))
    code, out = invoke([*args, "--resume"])
    assert code != 0
    assert (
        f"{str(run_dir)!r} was scored with objective.book_end 'marked' and the objective now scores "
        "'closed' (the book closed at the validation window's end): resuming would rank its checkpoints "
        "under two rules; start a new search (--name)"
    ) in out


def test_a_search_is_not_resumed_with_other_options_than_it_started_with(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tune restores a search's trials with the configs they began with: a resume with another
    ``--cash-rate`` (or none), budget or seed would do nothing while its command line said otherwise.
    Refused before Ray starts, naming each flag, both values and the command to resume with; that
    command (less ``--env-runners``, which ``--resume`` refuses) passes every check, and so does a
    runs folder moved elsewhere (``--storage`` is where it is now)."""
    import shlex
    import shutil

    from raytrade.cluster import local_cluster
    from raytrade.cluster.run_file import read_run_file, write_run_file
    from raytrade.cluster.tune import TuneOptions, command_flags, run_record

    class RayWouldStart(Exception):
        pass

    def no_ray(*_: Any, **__: Any) -> None:
        raise RayWouldStart

    monkeypatch.setattr(local_cluster, "init_ray", no_ray)
    args = [*_fault_args(synthetic_store, tmp_path / "runs", "rated"), "--cash-rate", "0.04"]
    started = TuneOptions(
        spec="ppo", replay=synthetic_store, smoke=True, storage=tmp_path / "runs", name="rated",
        num_samples=1, iterations=FAULT_ITERATIONS, cash_rate=0.04, env_runners=1,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "rated"
    write_run_file(run_dir, run_record(started, get_spec("ppo")))
    recorded = read_run_file(run_dir)
    flags = command_flags(recorded.command)
    assert flags["--cash-rate"] == "0.04" and flags["--smoke"] == "" and flags["--env-runners"] == "1"

    code, out = invoke([*args[:-1], "0.05", "--resume"])
    assert code == 2, out
    said = " ".join(out.split())
    assert f"{str(run_dir)!r} cannot be resumed with other options than it started with: " in said
    assert "--cash-rate now 0.05, started 0.04." in said
    hint = said.split("resume it with its own command: ")[1].split(" (or start a new search")[0]
    assert "--env-runners" not in hint and hint.endswith("--no-wandb --resume")
    resumed = CliRunner().invoke(tune_command, shlex.split(hint)[2:])
    assert isinstance(resumed.exception, RayWouldStart), resumed.output  # past every refusal
    code, out = invoke([*args[:-2], "--seed", "7", "--resume"])
    assert code == 2 and "--cash-rate now not given, started 0.04; --seed now 7, started 0" in " ".join(
        out.split()
    )
    assert read_run_file(run_dir) == recorded  # nothing rewritten

    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "runs", moved)
    again = CliRunner().invoke(tune_command, [*shlex.split(hint)[2:], "--storage", str(moved)])
    assert isinstance(again.exception, RayWouldStart), again.output


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("code_sha256", "0" * 64, "the code changed since (code fingerprint then 000000000000, now {code})"),
        ("code_sha256", None, "its run file records no code fingerprint (now {code}): its code is unknown"),
        (
            "data_sha256",
            "f" * 64,
            "the store's data changed since (fingerprint then ffffffffffff, now {data})",
        ),
    ],
    ids=["other-code", "code-unknown", "other-data"],
)
def test_a_search_is_not_resumed_by_other_code_or_on_other_data(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: Any, why: str
) -> None:
    """A resume adds trials to the search's leaderboard: trials of another code or another store
    would be ranked with the first ones as one search. Refused before Ray starts, naming both."""
    from raytrade.cluster import local_cluster
    from raytrade.cluster.run_file import RUN_FILE, write_run_file
    from raytrade.cluster.tune import TuneOptions, run_record
    from raytrade.models.registry import code_fingerprint
    from raytrade.replay.fingerprint import data_fingerprint

    monkeypatch.setattr(local_cluster, "init_ray", lambda *_, **__: pytest.fail("Ray started"))
    args = _fault_args(synthetic_store, tmp_path / "runs", "old")
    record = run_record(TuneOptions(spec="ppo", replay=synthetic_store, smoke=True), get_spec("ppo"))
    run_dir = tmp_path / "runs" / "old"
    write_run_file(run_dir, record)
    recorded = json.loads((run_dir / RUN_FILE).read_text())
    if value is None:
        del recorded["provenance"][field]  # as a raytrade older than the code fingerprint wrote it
    else:
        recorded["provenance"][field] = value
    (run_dir / RUN_FILE).write_text(json.dumps(recorded))
    code, out = invoke([*args, "--resume"])
    assert code == 2, out
    reason = why.format(code=code_fingerprint()[:12], data=data_fingerprint(synthetic_store)[0][:12])
    assert (
        f"{str(run_dir)!r} cannot be resumed: {reason}; resuming would rank checkpoints of two searches "
        "in one leaderboard; start a new search (--name)"
    ) in " ".join(out.split())
    assert json.loads((run_dir / RUN_FILE).read_text()) == recorded  # nothing rewritten


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
