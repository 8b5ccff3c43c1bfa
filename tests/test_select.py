"""``raytrade select``: one winner across searches, paired bootstrap intervals, refusals, the manifest."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from raytrade.cluster.run_file import (
    LEADERBOARD_FILE,
    RUN_FILE,
    LeaderboardRow,
    checkpoints_compared,
    read_leaderboard,
    read_run_file,
    write_leaderboard,
    write_run_file,
)
from raytrade.cluster.select import select_command
from raytrade.envs.evaluation.stats import BootstrapConfig, stationary_indices
from raytrade.envs.metrics import cvar, sharpe_ratio
from raytrade.models.manifest import (
    Manifest,
    ScoreInterval,
    Selection,
    manifest_json,
)
from raytrade.tune_specs.objective import CHECKPOINT_SCORE, METRIC, UNDEFINED_SCORE, objective_paths
from raytrade.tune_specs.selection import (
    beats,
    benchmark_claim,
    claim_level,
    claim_samples,
    rank_candidates,
    sharpe_difference,
)
from raytrade.tune_specs.spec import ON_POLICY_SMOKE
from tests.conftest import SmokeRun
from tests.run_files import smoke_run_file
from tests.test_registry import manifest_record

BOOT = BootstrapConfig(samples=200, block_len=5.0, seed=1)


def _planted(n: int = 250) -> dict[str, np.ndarray]:
    """A benchmark and two policies: ``good`` earns 10 bps a bar over it, ``bad`` loses 10 bps."""
    rng = np.random.default_rng(4)
    bench = rng.normal(4e-4, 0.01, n)
    return {
        "bench": bench,
        "bad": bench - 1e-3 + rng.normal(0.0, 2e-3, n),
        "good": bench + 1e-3 + rng.normal(0.0, 2e-3, n),
    }


# ------------------------------------------------------------------------------ ranking (pure)


def test_the_planted_better_policy_wins_and_the_worse_ones_interval_is_below_it() -> None:
    s = _planted()
    ranked = rank_candidates({"bad": s["bad"], "good": s["good"]}, s["bench"], 252, 1.0, BOOT)
    assert [r.name for r in ranked] == ["good", "bad"]
    good, bad = ranked
    assert good.vs_winner == (0.0, 0.0, 0.0, BOOT.samples)
    assert bad.vs_winner.high < 0.0  # worse than the winner on every 95 % of paths
    assert good.vs_benchmark.low > 0.0 and bad.vs_benchmark.high < 0.0  # equal_weight scores 0


def test_a_candidates_score_is_the_search_objective_of_its_excess() -> None:
    s = _planted()
    (ranked,) = rank_candidates({"good": s["good"]}, s["bench"], 252, 0.5, BOOT)
    excess = s["good"] - s["bench"]
    expected = sharpe_ratio(excess, 252) - 0.5 * max(0.0, -cvar(excess))
    assert ranked.objective == pytest.approx(expected, rel=1e-12)
    assert ranked.vs_benchmark.estimate == ranked.objective


def test_a_float_constant_excess_scores_undefined_ranks_last_and_beats_nothing() -> None:
    s = _planted()
    steady = s["bench"] + 5e-4  # 5 bps a bar over the benchmark: constant up to float rounding
    assert np.ptp(steady - s["bench"]) > 0.0  # not exactly constant: the rule's tolerance decides
    ranked = rank_candidates({"steady": steady, "good": s["good"]}, s["bench"], 252, 1.0, BOOT)
    assert [r.name for r in ranked] == ["good", "steady"]  # was first, at ~2.5e16
    assert ranked[1].objective == UNDEFINED_SCORE
    assert ranked[1].vs_benchmark.n_valid == 0 and np.isnan(ranked[1].vs_benchmark.low)
    claim = benchmark_claim(steady, s["bench"], 252, 1.0, BOOT, 1)
    assert claim.objective.estimate == UNDEFINED_SCORE and not claim.beats


def test_differences_are_paired_a_copy_of_the_winner_has_a_zero_interval() -> None:
    s = _planted()
    ranked = rank_candidates({"good": s["good"], "copy": s["good"].copy()}, s["bench"], 252, 1.0, BOOT)
    assert [r.name for r in ranked] == ["good", "copy"]  # a tie keeps the caller's order
    assert ranked[1].vs_winner == (0.0, 0.0, 0.0, BOOT.samples)


def test_beating_needs_both_lower_bounds_above_zero_and_rounding_is_not_a_sharpe_gain() -> None:
    assert beats(0.1, 0.05)
    assert not beats(0.1, 1e-15)  # a*r against r: rounding, not a higher Sharpe ratio
    assert not beats(0.1, -0.05) and not beats(-0.1, 0.05) and not beats(None, 0.05)
    assert not beats(0.1, float("nan"))


def test_the_claim_level_is_bonferroni_adjusted_for_the_candidates() -> None:
    assert claim_level(0.95, 1) == 0.95
    assert claim_level(0.95, 16) == pytest.approx(1 - 0.05 / 16, rel=1e-15)
    with pytest.raises(ValueError, match="n_candidates must be >= 1, got 0"):
        claim_level(0.95, 0)


def test_a_winner_holding_the_benchmark_levered_does_not_beat_it() -> None:
    rng = np.random.default_rng(2)
    bench = rng.normal(1.5e-3, 0.01, 504)  # two years with a Sharpe ratio near 2.4
    good = bench + 1e-3 + rng.normal(0.0, 2e-3, 504)
    boot = BOOT.model_copy(update={"samples": claim_samples(BOOT.samples, 0.95)})  # enough at N = 1
    claim = benchmark_claim(1.001 * bench, bench, 252, 1.0, boot, 1)
    (ranked,) = rank_candidates({"lev": 1.001 * bench}, bench, 252, 1.0, boot)
    assert claim.objective == ranked.vs_benchmark  # same paths, same level at N = 1
    assert claim.objective.low > 0  # the objective alone would call it a win
    assert not claim.beats
    assert benchmark_claim(good, bench, 252, 1.0, BOOT, 1).beats


def test_a_mostly_cash_winner_gains_no_sharpe_from_the_yield_over_the_cash_rate() -> None:
    """A book 10 % in the benchmark, 90 % in cash earning 5 %/yr: over 0 its steady yield reads as a
    Sharpe far above the benchmark's; over the rate cash earned, the two ratios are the same."""
    rng = np.random.default_rng(3)
    rf = np.full(504, 0.05 / 252)
    bench = rf + rng.normal(2e-4, 0.01, 504)
    mostly_cash = 0.1 * bench + 0.9 * rf
    boot = BOOT.model_copy(update={"samples": claim_samples(BOOT.samples, 0.95)})
    naive = benchmark_claim(mostly_cash, bench, 252, 1.0, boot, 1)
    over = benchmark_claim(mostly_cash, bench, 252, 1.0, boot, 1, risk_free=rf)
    assert naive.sharpe.low > 1.0  # the yield alone, read as skill
    assert over.sharpe.estimate == pytest.approx(0.0, abs=1e-9) and not over.beats
    assert over.objective == naive.objective  # the objective is of the excess over the benchmark
    idx = stationary_indices(504, 100, 5.0, np.random.default_rng(0))
    diff = sharpe_difference(mostly_cash, bench, 252, idx, 0.95, risk_free=rf)
    assert diff.estimate == pytest.approx(0.0, abs=1e-9) and diff.high == pytest.approx(0.0, abs=1e-9)


def test_the_best_of_16_noise_candidates_rarely_claims_to_beat_the_benchmark() -> None:
    """The review's null: every candidate is the benchmark plus mean-0 noise; the winner is picked
    on the window it is judged on. Nominal 95 % intervals of the winner clear 0 in ~40 % of runs."""
    rng = np.random.default_rng(1)
    trials, n_candidates = 60, 16
    nominal = adjusted = claimed = 0
    for trial in range(trials):
        bench = rng.normal(5e-4, 0.01, 126)
        cands = {f"c{i}": bench + rng.normal(0.0, 3e-3, 126) for i in range(n_candidates)}
        boot = BootstrapConfig(samples=1000, seed=trial)  # select's default paths
        ranked = rank_candidates(cands, bench, 252, 1.0, boot)
        claim = benchmark_claim(cands[ranked[0].name], bench, 252, 1.0, boot, n_candidates)
        nominal += ranked[0].vs_benchmark.low > 0
        adjusted += claim.objective.low > 0
        claimed += claim.beats
    assert nominal / trials > 0.2  # the bias the adjustment is for is present in this setup
    assert adjusted / trials < 0.1 and claimed / trials < 0.1


def test_a_claim_resamples_enough_paths_for_its_adjusted_level() -> None:
    # each end of the interval at least CLAIM_TAIL_PATHS = 10 paths in: 400 paths at 95 %, and for
    # the 480 checkpoints of a 16-trial, 30-iteration search 192,000
    assert claim_samples(1000, 0.95) == 1000
    assert claim_samples(200, 0.95) == 400
    assert claim_samples(1000, claim_level(0.95, 480)) == 192_000


def test_the_best_of_many_checkpoints_is_judged_at_its_level_not_at_the_samples_extreme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At N = 100 the interval's ends are the 0.025 % quantiles: 1,000 resampled paths would read them
    at the sample's extremes, a narrower interval than the level asks for (the claim cleared too
    easily). The claim draws 40,000 paths from the bootstrap's seed instead (in chunks of a bounded
    number of path-bars), and the same inputs give the same claim."""
    from raytrade.tune_specs import selection

    rng = np.random.default_rng(5)
    bench = rng.normal(5e-4, 0.01, 60)
    winner = bench + 1.5e-3 + rng.normal(0.0, 3e-3, 60)
    boot = BootstrapConfig(samples=1000, seed=3)
    claim = benchmark_claim(winner, bench, 252, 1.0, boot, 100)
    assert claim.objective.n_valid == claim.sharpe.n_valid == 40_000
    # the old reading: the same level on the ranking's 1,000 paths, whose ends are their extremes
    idx = stationary_indices(bench.size, boot.samples, boot.block_len, np.random.default_rng(boot.seed))
    few = np.quantile(objective_paths((winner - bench)[idx], 252, 1.0), (1 - claim.level) / 2)
    assert claim.objective.low < few  # wider: the level's own quantile, not the sample's extreme
    assert benchmark_claim(winner, bench, 252, 1.0, boot, 100) == claim
    monkeypatch.setattr(selection, "CLAIM_CHUNK_BARS", 60 * 15_000)  # three chunks: 15,000 + 15,000 + 10,000
    chunked = benchmark_claim(winner, bench, 252, 1.0, boot, 100)
    assert chunked.objective.n_valid == chunked.sharpe.n_valid == 40_000
    assert chunked == benchmark_claim(winner, bench, 252, 1.0, boot, 100)
    assert chunked.objective.low < few


# ------------------------------------------------------------------------------ refusals


def _crafted_run(
    folder: Path, store: Path, sha: str, compared: tuple[int | None, ...] = (1,), **data: Any
) -> Path:
    """A run folder as ``raytrade tune`` leaves it (run file, leaderboard, trial params) on ``store``,
    whose checkpoint is never loaded: the refusals come first. One leaderboard row per entry of
    ``compared`` (that trial's ``checkpoints_compared``), the first the best; ``None`` entries write
    the row as an older raytrade did, without the count."""
    write_run_file(folder, smoke_run_file(str(store.resolve()), "abc", sha))
    scores = dict.fromkeys(("sharpe", "sortino", "cvar_5", "total_return"), 0.1)
    rows = [
        LeaderboardRow(
            trial=f"t{i}", trial_dir=f"t{i}", params={}, iteration=2,
            checkpoint=None if n == 0 else f"t{i}/ckpt", checkpoints_compared=n,
            node_id=None, error=None, turnover=0.0, max_drawdown=0.0,
            objective=0.1 - 0.01 * i, **scores,
        )
        for i, n in enumerate(compared)
    ]  # fmt: skip
    write_leaderboard(folder, rows)
    if any(n is None for n in compared):  # an older leaderboard has no such key at all
        board = json.loads((folder / LEADERBOARD_FILE).read_text())
        for entry, n in zip(board, compared, strict=True):
            if n is None:
                del entry["checkpoints_compared"]
        (folder / LEADERBOARD_FILE).write_text(json.dumps(board))
    (folder / "t0").mkdir()
    env_config = {"data": {"kind": "replay", "root": str(store.resolve()), "split": "train", **data}}
    (folder / "t0" / "params.json").write_text(
        json.dumps({"env": "raytrade/PortfolioEnv-v0", "env_config": env_config})
    )
    return folder


def _select(*args: Path | str) -> Any:
    return CliRunner().invoke(select_command, [str(a) for a in args])


def test_a_leaderboard_that_names_a_checkpoint_but_counts_none_compared_is_refused(
    synthetic_store: Path, tmp_path: Path
) -> None:
    a = _crafted_run(tmp_path / "a", synthetic_store, "1" * 64, compared=(2,))
    board = json.loads((a / LEADERBOARD_FILE).read_text())
    board[0]["checkpoints_compared"] = 0
    (a / LEADERBOARD_FILE).write_text(json.dumps(board))
    result = _select(a)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: run {str(a.resolve())!r}: its leaderboard names checkpoint 't0/ckpt' but counts 0 "
        "checkpoints_compared"
    )


def test_runs_scored_on_different_validation_windows_are_refused(
    synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.replay.fingerprint import data_fingerprint

    sha, _ = data_fingerprint(synthetic_store)
    a = _crafted_run(tmp_path / "a", synthetic_store, sha)
    b = _crafted_run(tmp_path / "b", synthetic_store, sha, validation_fraction=0.1)
    result = _select(a, b, "--out", tmp_path / "out")
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith("error: runs were scored on different validation windows: a: ") and "; b: " in line
    assert len(line.splitlines()) == 1
    window_a, window_b = line.split("a: ")[1].split("; b: ")
    assert window_a != window_b and " bars, 14 symbols #" in window_a
    assert not (tmp_path / "out").exists()


def _with_sim(run: Path, sim: dict[str, Any]) -> Path:
    """``run`` (a ``_crafted_run``) whose trial trained with the simulator fields ``sim``."""
    params = json.loads((run / "t0" / "params.json").read_text())
    params["env_config"]["sim"] = sim
    (run / "t0" / "params.json").write_text(json.dumps(params))
    return run


def test_runs_on_different_markets_are_refused_naming_each_field_that_differs(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """One line naming the differing fields and every run's value, not two simulator configs to diff;
    idle cash is compared on the window's days: the same rate from a constant and from a file is one
    market, another rate is refused naming both."""
    from raytrade.replay.fingerprint import data_fingerprint

    sha, _ = data_fingerprint(synthetic_store)
    a = _with_sim(_crafted_run(tmp_path / "a", synthetic_store, sha), {"costs": {"fee_bps_equity": 2.0}})
    b = _with_sim(_crafted_run(tmp_path / "b", synthetic_store, sha), {"initial_equity": 50_000.0})
    result = _select(a, b, "--out", tmp_path / "out")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.strip() == (
        "error: runs simulate different markets (costs, constraints, account): costs.fee_bps_equity: a 2.0, "
        "b 5.0; initial_equity: a 100000.0, b 50000.0"
    )
    file_rate = {"schedule": [{"start": "2000-01-03", "annual": 0.04}], "source": "fred.csv"}
    c = _with_sim(_crafted_run(tmp_path / "c", synthetic_store, sha), {"cash_rate": {"annual": 0.04}})
    d = _with_sim(_crafted_run(tmp_path / "d", synthetic_store, sha), {"cash_rate": file_rate})
    e = _with_sim(_crafted_run(tmp_path / "e", synthetic_store, sha), {"cash_rate": {"annual": 0.03}})
    refused = " ".join(_select(c, e, "--out", tmp_path / "out").output.split())
    assert refused.startswith("error: runs credit idle cash different rates on the validation window (")
    assert refused.endswith("c: 4.00%/year; e: 3.00%/year; their Sharpe ratios are over different rates")
    same = _select(
        c, d, "--out", tmp_path / "out"
    )  # past the market checks: the crafted checkpoint is absent
    assert "different rates" not in same.output and "different markets" not in same.output
    assert not (tmp_path / "out").exists()


def test_runs_searched_on_different_stores_are_refused(synthetic_store: Path, tmp_path: Path) -> None:
    a = _crafted_run(tmp_path / "a", synthetic_store, "1" * 64)
    b = _crafted_run(tmp_path / "b", synthetic_store, "2" * 64)
    result = _select(a, b)
    assert result.exit_code == 2
    store = synthetic_store.resolve()
    assert result.output.strip() == (
        "error: runs were searched on different replay stores: "
        f"a: {store} @ 111111111111; b: {store} @ 222222222222"
    )


def test_a_store_that_changed_since_the_searches_is_refused(synthetic_store: Path, tmp_path: Path) -> None:
    a = _crafted_run(tmp_path / "a", synthetic_store, "1" * 64)
    result = _select(a)
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: the store {str(synthetic_store.resolve())!r} is not the one runs a "
    )
    assert "at the searches 111111111111" in result.output


def test_promote_with_another_store_folder_is_refused_before_any_work(
    synthetic_store: Path, tmp_path: Path
) -> None:
    import shutil

    from raytrade.replay.fingerprint import data_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_store, copy)  # the same bytes: the same fingerprint, another folder
    a = _crafted_run(tmp_path / "a", synthetic_store, data_fingerprint(synthetic_store)[0])
    result = _select(
        a, "--replay", copy, "--promote", "x", "--registry", tmp_path / "reg", "--out", tmp_path / "o"
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --promote re-scores the winner on the store its search recorded: run a names "
        f"{str(synthetic_store.resolve())!r}, not {str(copy.resolve())!r}"
    )
    assert not (tmp_path / "o").exists() and not (tmp_path / "reg").exists()


@pytest.mark.parametrize(
    ("name", "registry", "expected"),
    [
        ("../evil", None, "policy name '../evil' must match"),
        ("alpha", "s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/reg", "credentials in the URI are refused"),
    ],
)
def test_a_bad_promote_name_or_registry_is_refused_before_any_replay(
    synthetic_store: Path, tmp_path: Path, name: str, registry: str | None, expected: str
) -> None:
    """They were refused only after the replays, once select.json had been written."""
    from raytrade.replay.fingerprint import data_fingerprint

    a = _crafted_run(tmp_path / "a", synthetic_store, data_fingerprint(synthetic_store)[0])
    result = _select(
        a, "--promote", name, "--registry", registry or tmp_path / "reg", "--out", tmp_path / "o"
    )
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "wJalrXUtnFEMI" not in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "reg").exists()


# ------------------------------------------------------------------------------ the claim's N


def _edge(edge: float) -> tuple[np.ndarray, np.ndarray]:
    """(a policy earning ``edge`` a bar over the benchmark plus noise, the benchmark)."""
    rng = np.random.default_rng(4)
    bench = rng.normal(4e-4, 0.01, 250)
    return bench + edge + rng.normal(0.0, 2e-3, 250), bench


def _result(tmp_path: Path, name: str, scores: list[float], every: int = 1) -> Any:
    """A stand-in for a Tune ``Result``: one iteration per validation score, checkpointed every
    ``every`` iterations and at the last, all kept."""
    from types import SimpleNamespace

    import pandas as pd
    from pyarrow.fs import LocalFileSystem

    iterations = list(range(1, len(scores) + 1))
    saved = [i for i in iterations if i % every == 0 or i == iterations[-1]]
    for i in saved:
        (tmp_path / name / f"checkpoint_{i:06d}").mkdir(parents=True, exist_ok=True)
    checkpoints = [
        (SimpleNamespace(path=str(tmp_path / name / f"checkpoint_{i:06d}"), filesystem=LocalFileSystem()), {
            "training_iteration": i, METRIC: scores[i - 1], CHECKPOINT_SCORE: scores[i - 1],
        })
        for i in saved
    ]  # fmt: skip
    history = pd.DataFrame({"training_iteration": iterations, METRIC: scores, CHECKPOINT_SCORE: scores})
    return SimpleNamespace(
        metrics={"trial_id": name, "training_iteration": len(scores)},
        metrics_dataframe=history,
        best_checkpoints=checkpoints,
        path=str(tmp_path / name),
        config={},
        error=None,
    )


def test_the_leaderboard_counts_each_trials_checkpoints_compared_on_validation(tmp_path: Path) -> None:
    from raytrade.cluster.tune import leaderboard

    results = [
        _result(tmp_path, "a", [0.1, float("nan"), 0.3, -10.0]),  # nan: never eligible; -10: undefined
        _result(tmp_path, "b", [float("nan")]),
    ]
    rows = leaderboard(results, tmp_path, [], overfit_window=4, checkpoint_every=1)
    assert [(r.trial, r.checkpoint, r.checkpoints_compared) for r in rows] == [
        ("a", "a/checkpoint_000003", 3),
        ("b", None, 0),
    ]
    write_leaderboard(tmp_path, rows)
    assert checkpoints_compared(read_leaderboard(tmp_path)) == 3
    # every other iteration and the last saved: 2, 4 and 5; iteration 1's 0.9 was never compared
    sparse = _result(tmp_path, "c", [0.9, 0.2, -0.1, 0.05, 0.0], every=2)
    (row,) = leaderboard([sparse], tmp_path, [], overfit_window=4, checkpoint_every=2)
    assert (row.checkpoint, row.objective, row.checkpoints_compared) == ("c/checkpoint_000002", 0.2, 3)


def test_a_checkpoint_is_ranked_by_its_own_iterations_score_not_a_repeated_one(tmp_path: Path) -> None:
    """With ``score_every`` > 1 an iteration repeats the last validation scores; its checkpoint carries
    them but no score of its own (CHECKPOINT_SCORE NaN), so it is not a candidate, and a history that
    does not report the score counts as unknown (no claim can be adjusted for it)."""
    from raytrade.cluster.tune import leaderboard

    result = _result(tmp_path, "a", [0.4, 0.4])
    result.best_checkpoints[1][1][CHECKPOINT_SCORE] = math.nan  # iteration 2 repeated iteration 1's
    result.metrics_dataframe.loc[1, CHECKPOINT_SCORE] = math.nan
    (row,) = leaderboard([result], tmp_path, [], overfit_window=4, checkpoint_every=1)
    assert (row.iteration, row.checkpoint, row.checkpoints_compared) == (1, "a/checkpoint_000001", 1)
    result.metrics_dataframe = result.metrics_dataframe.drop(columns=[CHECKPOINT_SCORE])
    (row,) = leaderboard([result], tmp_path, [], overfit_window=4, checkpoint_every=1)
    assert (row.checkpoint, row.checkpoints_compared) == ("a/checkpoint_000001", None)


def test_a_scoring_schedule_that_misses_every_checkpoint_is_refused() -> None:
    from raytrade.cluster.tune import checkpoint_config
    from raytrade.replay.errors import InputError

    sparse = ON_POLICY_SMOKE.model_copy(update={"checkpoint_every": 2})
    with pytest.raises(InputError, match="score_every=3 with checkpoint_every=2"):
        checkpoint_config(sparse, score_every=3)
    assert checkpoint_config(sparse, score_every=1).checkpoint_frequency == 2
    assert checkpoint_config(ON_POLICY_SMOKE, score_every=3).num_to_keep == ON_POLICY_SMOKE.checkpoints_kept


def test_a_listed_checkpoint_that_is_gone_is_left_out_of_the_leaderboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A search resumed from an experiment state saved before a trial deleted a checkpoint lists it."""
    import shutil

    from raytrade.cluster.tune import leaderboard

    result = _result(tmp_path, "a", [0.1, 0.5, 0.3])
    shutil.rmtree(tmp_path / "a" / "checkpoint_000002")
    (row,) = leaderboard([result], tmp_path, [], overfit_window=4, checkpoint_every=1)
    assert (row.checkpoint, row.objective) == ("a/checkpoint_000003", 0.3)
    assert "warning: trial a: checkpoint_000002 is listed but gone" in capsys.readouterr().err


def test_tune_keeps_each_trials_best_checkpoints_by_the_flat_score_and_the_latest(
    tmp_path: Path,
) -> None:
    """The search's ``CheckpointConfig`` through the checkpoint manager Tune gives each trial, fed
    results shaped as the scoring callback writes them (the objective nested under ``validation``,
    the flat ``CHECKPOINT_SCORE`` beside it). Ranked by the nested key, Tune would keep the latest
    checkpoints and delete the best (iteration 1 here) without a word."""
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from raytrade.cluster.tune import checkpoint_config

    budget = ON_POLICY_SMOKE.model_copy(update={"checkpoints_kept": 2})
    manager = _CheckpointManager(checkpoint_config(budget, score_every=1))
    scores = [5.0, 1.0, math.nan, 2.0, 0.5]
    for i, score in enumerate(scores, start=1):
        folder = tmp_path / f"checkpoint_{i:06d}"
        folder.mkdir()
        metrics = {"training_iteration": i, "validation": {"objective": score}, CHECKPOINT_SCORE: score}
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(folder), metrics))
    best = sorted(r.metrics["training_iteration"] for r in manager.best_checkpoint_results)
    assert best == [1, 4]  # what a trial's Result.best_checkpoints lists, the leaderboard's choice
    assert manager.latest_checkpoint_result.metrics["training_iteration"] == 5  # a restart's
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint_{i:06d}" for i in (1, 4, 5)]


def test_the_claim_counts_every_checkpoint_the_searches_compared_not_the_runs(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """One run whose leaderboard compared 8 checkpoints (5 + 3 + a trial with none): its winner's
    claim is adjusted for 8, and an edge that cleared the N = 1 intervals (select counted runs) does
    not clear them."""
    from raytrade.cluster.select import claim_candidates, load_candidates, winner_claim
    from raytrade.replay.fingerprint import data_fingerprint

    sha, _ = data_fingerprint(synthetic_store)
    a = _crafted_run(tmp_path / "a", synthetic_store, sha, compared=(5, 3, 0))
    b = _crafted_run(tmp_path / "b", synthetic_store, sha, compared=(4, 2))
    assert claim_candidates(load_candidates([a, b])) == 14  # the choice among the two adds none
    candidates = load_candidates([a])
    assert [c.compared for c in candidates] == [8]
    good, bench = _edge(4.5e-4)
    assert benchmark_claim(good, bench, 252, 1.0, BOOT, 1).beats  # what the count of runs claimed
    claim, refused = winner_claim(candidates, good, bench, 252, 1.0, BOOT)
    assert refused is None and claim is not None
    assert (claim.candidates, claim.counted) == (8, "checkpoints")
    assert claim.level == pytest.approx(claim_level(BOOT.level, 8), rel=1e-15)
    assert claim.objective.low is not None and claim.objective.low < 0 and not claim.beats


def test_no_claim_is_made_when_a_runs_leaderboard_does_not_count_its_checkpoints(
    synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.select import claim_line, load_candidates, render_markdown, winner_claim
    from raytrade.replay.fingerprint import data_fingerprint

    sha, _ = data_fingerprint(synthetic_store)
    a = _crafted_run(tmp_path / "a", synthetic_store, sha, compared=(5,))
    old = _crafted_run(tmp_path / "old", synthetic_store, sha, compared=(None, None))
    assert "checkpoints_compared" not in (old / LEADERBOARD_FILE).read_text()
    good, bench = _edge(1e-3)
    assert benchmark_claim(good, bench, 252, 1.0, BOOT, 1).beats  # the N = 1 claim would say beats
    claim, refused = winner_claim(load_candidates([a, old]), good, bench, 252, 1.0, BOOT)
    assert claim is None and refused is not None
    assert refused.startswith(
        f"the leaderboard of run {str(old.resolve())!r} does not record how many checkpoints its search "
        "compared on this validation window"
    )
    assert str(a.resolve()) not in refused and "`raytrade evaluate --split test`" in refused
    selection = _selection().model_copy(update={"claim_refused": refused})
    line = claim_line(selection)
    assert line == f"good: no claim made against equal_weight: {refused}"
    assert f"Claim: {line}." in render_markdown(selection).splitlines()


def test_select_records_the_count_and_refuses_the_claim_for_an_older_run(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``raytrade select`` end to end, each checkpoint's replay stood in for by ``inverse_vol``'s (no
    Ray, no checkpoint): the claim's N and each run's count reach select.json and select.md."""
    import raytrade.cluster.select as select
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.evaluation.policies import inverse_vol_policy
    from raytrade.envs.rollout import replay_policy
    from raytrade.replay.fingerprint import data_fingerprint

    def rollout(module: Any, env_config: Any, data: Any, gated: bool) -> Any:
        sim = env_config_from_dict(env_config).sim
        return replay_policy(data, inverse_vol_policy(data, 0), sim), sim

    monkeypatch.setattr(select, "load_module", lambda path: None)
    monkeypatch.setattr(select, "module_rollout", rollout)
    sha, _ = data_fingerprint(synthetic_store)
    a = _crafted_run(tmp_path / "a", synthetic_store, sha, compared=(3, 2))
    b = _crafted_run(tmp_path / "b", synthetic_store, sha, compared=(4,))
    result = _select(a, b, "--out", tmp_path / "out", "--bootstrap-samples", "50")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    assert selection.claim is not None and selection.claim_refused is None
    assert (selection.claim.candidates, selection.claim.counted) == (9, "checkpoints")
    assert {Path(c.run).name: c.checkpoints_compared for c in selection.candidates} == {"a": 5, "b": 4}
    md = (tmp_path / "out" / "select.md").read_text()
    assert "adjusted for 9 checkpoints compared on this window: " in md and "--split test" in md

    old = _crafted_run(tmp_path / "old", synthetic_store, sha, compared=(None,))
    result = _select(a, old, "--out", tmp_path / "out2", "--bootstrap-samples", "50")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out2" / "select.json").read_text())
    assert selection.claim is None and selection.claim_refused is not None
    assert repr(str(old.resolve())) in selection.claim_refused
    assert f"warning: {Path(selection.winner).name}: no claim made against equal_weight: " in result.output
    md = (tmp_path / "out2" / "select.md").read_text()
    assert f"Claim: {select.claim_line(selection)}." in md.splitlines() and " beats equal_weight" not in md


def test_a_search_recorded_marked_to_market_is_rescored_with_the_exit_and_says_so(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run searched before the objective closed the book (its run file has no ``book_end``) is
    compared with a run searched after it, not refused: both re-scored with the exit, each candidate
    recording the rule of its search's figure, ``select.md`` naming the older one."""
    import raytrade.cluster.select as select
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.evaluation.policies import inverse_vol_policy
    from raytrade.envs.rollout import replay_policy
    from raytrade.replay.fingerprint import data_fingerprint

    def rollout(module: Any, env_config: Any, data: Any, gated: bool) -> Any:
        sim = env_config_from_dict(env_config).sim
        return replay_policy(data, inverse_vol_policy(data, 0), sim, close_at_end=True), sim

    monkeypatch.setattr(select, "load_module", lambda path: None)
    monkeypatch.setattr(select, "module_rollout", rollout)
    sha, _ = data_fingerprint(synthetic_store)
    old = _crafted_run(tmp_path / "old", synthetic_store, sha)
    new = _crafted_run(tmp_path / "new", synthetic_store, sha)
    run = read_run_file(new)
    closed = run.objective.model_copy(update={"book_end": "closed"})
    write_run_file(new, run.model_copy(update={"objective": closed}))
    recorded = json.loads((old / RUN_FILE).read_text())
    del recorded["objective"]["book_end"]  # as a raytrade older than the exit cost wrote it
    (old / RUN_FILE).write_text(json.dumps(recorded))
    result = _select(old, new, "--out", tmp_path / "out", "--bootstrap-samples", "50")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((tmp_path / "out" / "select.json").read_text())
    assert selection.book_end == "closed"
    assert {Path(c.run).name: c.search_book_end for c in selection.candidates} == {
        "old": "marked",
        "new": "closed",
    }
    md = (tmp_path / "out" / "select.md").read_text()
    assert (
        "Re-scored: the search of old recorded its objective with books marked to market at the window's "
        "last bar, no exit charged; every objective here is scored with every book closed at the "
        "window's last bar, its exit cost charged, so it differs from the search's by that exit."
    ) in md.splitlines()


# ------------------------------------------------------------------------------ the manifest


def _selection() -> Selection:
    s = _planted()
    ranked = rank_candidates({"good": s["good"], "bad": s["bad"]}, s["bench"], 252, 1.0, BOOT)
    interval = lambda ci: {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "n_valid": ci.n_valid}  # noqa: E731
    return Selection.model_validate(
        {
            "window": {
                "split": "validation",
                "start": "2025-01-02T00:00:00Z",
                "end": "2025-12-31T00:00:00Z",
                "bars": 251,
                "symbols": ["A", "B"],
                "store_sha256": "2" * 64,
                "store_files": 4,
            },
            "benchmark": "equal_weight",
            "cvar_penalty": 1.0,
            "bootstrap": BOOT.model_dump(),
            "winner": "/runs/good",
            "candidates": [
                {
                    "run": f"/runs/{r.name}",
                    "spec": "ppo",
                    "family": "ppo_mlp",
                    "trial": "t0",
                    "checkpoint": "t0/ckpt",
                    "iteration": 2,
                    "objective": r.objective,
                    "search_objective": None,
                    "checkpoints_compared": 1,
                    "vs_winner": interval(r.vs_winner),
                    "vs_benchmark": interval(r.vs_benchmark),
                    "excess_return": 0.01,
                    "gross_exposure": 1.0,
                    "turnover": 0.02,
                    "costs": 0.001,
                }
                for r in ranked
            ],
        }
    )


def test_the_manifest_round_trips_the_comparison() -> None:
    selection = _selection()
    manifest = Manifest.model_validate(
        manifest_record(schema_version=2, selection=selection.model_dump(mode="json"))
    )
    again = Manifest.model_validate_json(manifest_json(manifest))
    assert again == manifest and again.selection == selection
    assert (
        again.selection.candidates[1].vs_winner.high is not None
        and again.selection.candidates[1].vs_winner.high < 0
    )


def test_the_manifest_records_the_adjusted_claim_and_select_md_states_it() -> None:
    from raytrade.cluster.select import claim_record, render_markdown

    s = _planted()
    claim = benchmark_claim(s["good"], s["bench"], 252, 1.0, BOOT, 2)
    selection = _selection().model_copy(update={"claim": claim_record(claim)})
    manifest = Manifest.model_validate(
        manifest_record(schema_version=2, selection=selection.model_dump(mode="json"))
    )
    again = Manifest.model_validate_json(manifest_json(manifest))
    assert again.selection is not None and again.selection.claim == selection.claim
    assert selection.claim is not None and selection.claim.level == 0.975 and selection.claim.candidates == 2
    assert selection.claim.objective.low == claim.objective.low
    assert selection.claim.counted == "checkpoints"
    md = render_markdown(selection)
    assert (
        "at the 97.50% level (Bonferroni: 95% adjusted for 2 checkpoints compared on this window: "
        "good 1 + bad 1)" in md
    )
    assert "judged on the validation window the checkpoints were chosen on" in md
    assert "`raytrade evaluate --replay STORE --policies registry:NAME --split test --out DIR`" in md


def test_the_selection_records_what_cash_earned_and_one_written_before_reads_and_signs_as_0() -> None:
    """``select.json`` (and a promoted manifest's selection) records the window's cash rate and
    ``select.md`` says the Sharpe ratios are over it; a selection written before the field reads 0 %,
    and a manifest holding it signs without the field (its signature stays valid)."""
    from raytrade.cluster.select import render_markdown
    from raytrade.envs.cash_rate import CashRate
    from raytrade.models.registry import canonical_manifest

    before = _selection()
    record = before.model_dump(mode="json")
    del record["cash_rate"]
    assert Selection.model_validate(record).cash_rate == CashRate()
    assert "Idle cash earned nothing on the window" in render_markdown(before)
    old = Manifest.model_validate(manifest_record(schema_version=2, selection=record))
    assert "cash_rate" not in json.loads(canonical_manifest(old))["manifest"]["selection"]

    at = before.model_copy(update={"cash_rate": CashRate(annual=0.04)})
    assert Selection.model_validate_json(at.model_dump_json()).cash_rate.annual == 0.04
    assert (
        "Idle cash (equity not held long) earned 4.00%/year, every candidate's and equal_weight's "
        "alike: the Sharpe ratios and the claim's Sharpe difference are over it." in render_markdown(at)
    )
    new = Manifest.model_validate(manifest_record(schema_version=2, selection=at.model_dump(mode="json")))
    assert json.loads(canonical_manifest(new))["manifest"]["selection"]["cash_rate"]["annual"] == 0.04


def test_a_claim_written_before_the_count_reads_as_adjusted_for_runs_only() -> None:
    from raytrade.cluster.select import claim_line, claim_record

    s = _planted()
    claim = claim_record(benchmark_claim(s["good"], s["bench"], 252, 1.0, BOOT, 2))
    old = claim.model_dump(mode="json")
    del old["counted"]  # what select wrote before it counted checkpoints
    selection = Selection.model_validate({**_selection().model_dump(mode="json"), "claim": old})
    assert selection.claim is not None and selection.claim.counted == "runs"
    assert "adjusted for 2 runs only, not the checkpoints each search compared on this window" in (
        claim_line(selection)
    )


def _legend(fig: Any) -> Any:
    """select.png's one legend, the figure's or the axes'."""
    (legend,) = [lg for lg in (*fig.legends, fig.axes[0].get_legend()) if lg is not None]
    return legend


def test_select_png_draws_the_winners_adjusted_claim_interval_beside_the_nominal_ones() -> None:
    import matplotlib.pyplot as plt

    from raytrade.cluster.select import claim_record, selection_figure

    s = _planted()
    claim = benchmark_claim(s["good"], s["bench"], 252, 1.0, BOOT, 2)
    selection = _selection().model_copy(update={"claim": claim_record(claim)})
    fig = selection_figure(selection)
    try:
        ax = fig.axes[0]
        labels = [t.get_text() for t in _legend(fig).get_texts()]
        assert "winner's claim: 97.50% CI (adjusted for 2 checkpoints)" in labels
        spans = [  # every vertical error segment drawn: (low, high)
            tuple(sorted((seg[0][1], seg[1][1]))) for coll in ax.collections for seg in coll.get_segments()
        ]
        assert (claim.objective.low, claim.objective.high) in [
            (pytest.approx(lo), pytest.approx(hi)) for lo, hi in spans
        ]
        nominal = selection.candidates[0].vs_benchmark
        assert claim.objective.low is not None and nominal.low is not None
        assert claim.objective.low < nominal.low  # the claim's interval is the wider one
    finally:
        plt.close(fig)
    without = selection_figure(_selection())  # no claim recorded: no claim bar, no legend entry
    try:
        assert not any("claim" in t.get_text() for t in _legend(without).get_texts())
    finally:
        plt.close(without)


def _selection_of(n: int) -> Selection:
    """``_selection`` with n candidates (the winner, then copies of the loser under long run names) and
    the winner's claim: the longest labels select.png draws."""
    from raytrade.cluster.select import claim_record

    s = _planted()
    base = _selection()
    winner, loser = base.candidates
    others = [loser.model_copy(update={"run": f"/runs/ppo-2026-12-04T03-51-{i:02d}"}) for i in range(n - 1)]
    claim = claim_record(benchmark_claim(s["good"], s["bench"], 252, 1.0, BOOT, n))
    return base.model_copy(update={"candidates": [winner, *others], "claim": claim})


@pytest.mark.parametrize("n", [2, 10])
def test_select_png_keeps_every_text_inside_the_figure_and_the_legend_off_the_bars(n: int) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from raytrade.cluster.select import selection_figure

    fig = selection_figure(_selection_of(n))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        numbers = set(ax.yaxis.get_ticklabels())  # some stand off the axis's view, never drawn
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text() and t not in numbers]
        assert ax.title in texts
        page = fig.bbox
        boxes = {t.get_text(): t.get_window_extent(renderer) for t in texts}
        outside = [
            text
            for text, b in boxes.items()
            if not (page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1)
        ]
        assert outside == []
        legend = _legend(fig).get_window_extent(renderer)
        bars = [p.get_window_extent(renderer) for p in ax.patches]
        assert len(bars) == n
        assert not any(legend.overlaps(b) for b in [*bars, ax.get_window_extent(renderer)])
    finally:
        plt.close(fig)


def test_a_manifest_written_before_the_schema_version_loads_as_version_1() -> None:
    manifest = Manifest.model_validate(manifest_record())
    assert manifest.schema_version == 1 and manifest.selection is None


@pytest.mark.parametrize(
    ("update", "field"),
    [({"schema_version": 3}, "schema_version"), ({"schema_version": 1, "selection": "SEL"}, "selection")],
)
def test_a_manifest_of_an_unknown_version_or_a_v1_with_a_selection_is_refused(
    update: dict[str, Any], field: str
) -> None:
    from pydantic import ValidationError

    if update.get("selection") == "SEL":
        update = {**update, "selection": _selection().model_dump(mode="json")}
    with pytest.raises(ValidationError, match=field):
        Manifest.model_validate(manifest_record(**update))


def test_a_selection_whose_winner_is_not_first_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="winner '/runs/bad' is not the first candidate '/runs/good'"):
        Selection.model_validate({**_selection().model_dump(mode="json"), "winner": "/runs/bad"})


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
@pytest.mark.ray
def test_select_compares_two_families_and_promotes_the_winner(
    smoke_runs: Callable[[str], SmokeRun], tmp_path: Path
) -> None:
    from raytrade.models.manifest import read_manifest

    runs = [smoke_runs("ppo").run_dir, smoke_runs("gnn").run_dir]
    registry, out = tmp_path / "registry", tmp_path / "select"
    args = [*runs, "--out", out, "--promote", "best", "--registry", registry, "--bootstrap-samples", "200"]
    result = _select(*args)
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((out / "select.json").read_text())
    # each candidate scores on the window exactly what its search recorded for the same checkpoint
    for c in selection.candidates:
        assert c.objective == pytest.approx(c.search_objective, rel=1e-9)
    objectives = {Path(c.run).name: c.objective for c in selection.candidates}
    assert Path(selection.winner).name == max(objectives, key=lambda k: objectives[k])
    assert {c.spec for c in selection.candidates} == {"ppo", "gnn"}
    counts = [c.checkpoints_compared for c in selection.candidates]  # each search's own choice
    assert selection.claim is not None and all(n is not None and n >= 1 for n in counts)
    assert selection.claim.candidates == sum(n or 0 for n in counts)
    assert selection.claim.counted == "checkpoints"
    assert (out / "select.png").stat().st_size > 1000
    assert (out / "select.md").read_text().count("| ") >= 3
    assert f"promoted {Path(selection.winner).name}" in result.output
    manifest = read_manifest(registry / "best" / "1")
    assert manifest.schema_version == 2 and manifest.selection == selection
    assert manifest.source.run == selection.winner
    assert manifest.metrics["validation"]["objective"] == pytest.approx(
        selection.candidates[0].objective, rel=1e-9
    )


@pytest.mark.slow
@pytest.mark.ray
def test_a_search_at_a_dated_cash_rate_is_rescored_over_it_and_never_compared_with_one_at_zero(
    smoke_runs: Callable[[str], SmokeRun], tmp_path: Path
) -> None:
    """The session's ``distrl`` smoke search ran with ``--cash-rates`` (tests/conftest.py): its trials
    trained with the file's rates, select re-scores its checkpoint to the search's own figure (over
    the same rates), and refuses to rank it beside a search whose cash earned nothing."""
    from datetime import date

    from raytrade.envs.cash_rate import CashRate

    run = smoke_runs("distrl").run_dir
    assert "warning: the cash-rate schedule (cash-rates.csv) ends 2018-07-01" in smoke_runs("distrl").output
    rows = json.loads((run / LEADERBOARD_FILE).read_text())
    env_config = json.loads((run / rows[0]["trial_dir"] / "params.json").read_text())["env_config"]
    rate = CashRate.model_validate(env_config["sim"]["cash_rate"])
    assert [s.start for s in rate.schedule] == [date(1990, 1, 1), date(2018, 7, 1)]
    assert [s.annual for s in rate.schedule] == pytest.approx([0.045, 0.03])

    # the search's validation Sharpe is over the rate: the replay of its checkpoint reproduces it over
    # what cash earned on those bars (the file's second rate), and not over 0 %
    from raytrade.cluster.promote import load_module
    from raytrade.envs.metrics import summarize
    from raytrade.tune_specs.objective import held_out_data, module_rollout

    data = held_out_data(env_config, "validation")
    rollout, sim = module_rollout(load_module(run / rows[0]["checkpoint"]), env_config, data)
    assert sim.cash_rate == rate and rollout.risk_free is not None
    assert rollout.risk_free == pytest.approx(0.03 / data.periods_per_year)
    lines = (run / rows[0]["trial_dir"] / "result.json").read_text().splitlines()
    searched = next(r for r in map(json.loads, lines) if r["training_iteration"] == rows[0]["iteration"])
    periods = data.periods_per_year
    over_rate = summarize(rollout.returns[0], periods, risk_free=rollout.risk_free)["sharpe"]
    over_zero = summarize(rollout.returns[0], periods)["sharpe"]
    assert searched["validation"]["sharpe"] == pytest.approx(over_rate, rel=1e-9)
    assert abs(over_rate - over_zero) > 1e-6

    out = tmp_path / "select"
    result = _select(run, "--out", out, "--bootstrap-samples", "200")
    assert result.exit_code == 0, result.output
    selection = Selection.model_validate_json((out / "select.json").read_text())
    (candidate,) = selection.candidates
    assert candidate.objective == pytest.approx(candidate.search_objective, rel=1e-9)
    assert selection.cash_rate == rate
    assert f"earned {rate.describe()}" in (out / "select.md").read_text()

    mixed = _select(smoke_runs("ppo").run_dir, run, "--out", tmp_path / "mixed")
    assert mixed.exit_code != 0
    said = " ".join(mixed.output.split())
    assert "runs credit idle cash different rates on the validation window" in said
    assert "ppo-smoke: 0.00%/year; distrl-smoke: a schedule of 2 rates from cash-rates.csv" in said
    assert not (tmp_path / "mixed" / "select.json").exists()


def test_select_says_when_the_window_cannot_tell_the_winner_from_the_runner_up() -> None:
    """The highest point estimate wins and ``--promote`` promotes it; where the runner-up's paired
    interval against it reaches 0 the window cannot tell them apart, and ``select.md`` (and the
    command's warning) now say so. A runner-up the window tells apart gets no such note."""
    from raytrade.cluster.select import render_markdown, runner_up_line

    apart = _selection()
    assert apart.candidates[1].vs_winner.high is not None and apart.candidates[1].vs_winner.high < 0
    assert runner_up_line(apart) is None and "cannot tell" not in render_markdown(apart)
    winner, second = apart.candidates
    close = second.model_copy(
        update={
            "run": "/runs/close",
            "trial": "t3",
            "vs_winner": ScoreInterval(estimate=-0.0002, low=-0.009, high=0.012, n_valid=100),
        }
    )
    tie = apart.model_copy(update={"candidates": [winner, close]})
    line = runner_up_line(tie)
    assert line == (
        "the window cannot tell good from the runner-up close (trial t3): it trails by [-0.009, 0.012] "
        "(paired), so the choice rests on a point estimate within the noise"
    )
    assert f"Note: {line}." in render_markdown(tie)
    assert runner_up_line(apart.model_copy(update={"candidates": [winner]})) is None


@pytest.mark.parametrize(
    ("spec", "iteration", "warned"), [("cql", 1, True), ("cql", 2, False), ("ppo", 1, False)]
)
def test_a_cql_checkpoint_of_the_first_iteration_is_named_as_cloning(
    tmp_path: Path, synthetic_store: Path, spec: str, iteration: int, warned: bool
) -> None:
    """CQL's first iteration's actor updates are all behaviour cloning (``bc_iters``: one iteration's
    updates): a best checkpoint from it was promoted and served as "cql" without a word."""
    from raytrade.cluster.promote import best_row, cloning_only

    run = _crafted_run(tmp_path / "run", synthetic_store, "s" * 64)
    record = read_run_file(run)
    write_run_file(run, record.model_copy(update={"spec": spec}))
    board = [r.model_copy(update={"iteration": iteration}) for r in read_leaderboard(run)]
    write_leaderboard(run, board)
    line = cloning_only(run, best_row(run))
    assert (line is not None) == warned
    if line is not None:
        assert line.startswith(
            f"trial t0's best checkpoint is from iteration {iteration}, whose actor updates"
        )
        assert "it is the behaviour policy cloned, not a CQL policy" in line
