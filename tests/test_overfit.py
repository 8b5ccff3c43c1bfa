"""Overfitting made visible: the plateau stop rule, the overfit check, and where a search shows them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from pyarrow.fs import LocalFileSystem

from raytrade.cluster.run_file import LeaderboardRow
from raytrade.cluster.tune import (
    LEADERBOARD_FILE,
    TuneOptions,
    TuneOutcome,
    draw_objective,
    format_leaderboard,
    leaderboard,
    tune_command,
)
from raytrade.tune_specs import get_spec
from raytrade.tune_specs.objective import CHECKPOINT_SCORE, METRIC, REPORTED, TRAIN_METRIC
from raytrade.tune_specs.overfit import OverfitCheck, check_overfit, least_squares_slope
from raytrade.tune_specs.spec import ON_POLICY_BUDGET, ON_POLICY_SMOKE
from raytrade.tune_specs.stopping import SearchStopper, plateaued
from tests.conftest import SmokeRun

# ------------------------------------------------------------------------------ the plateau rule


def test_no_improvement_on_the_best_for_patience_iterations_is_a_plateau() -> None:
    # best before the last 3 is 2.0; the last 3 peak at 1.9
    assert plateaued([1.0, 2.0, 1.5, 1.9, 1.8], patience=3, tolerance=0.0)


def test_an_improvement_inside_the_last_patience_iterations_is_no_plateau() -> None:
    # best before the last 2 is 2.0; 2.1 beats it
    assert not plateaued([1.0, 2.0, 1.5, 2.1], patience=2, tolerance=0.0)


def test_an_improvement_within_the_tolerance_does_not_count() -> None:
    series = [1.0, 2.0, 2.04, 2.03, 2.01]  # the last 3 beat 2.0 by at most 0.04
    assert plateaued(series, patience=3, tolerance=0.05)
    assert not plateaued(series, patience=3, tolerance=0.03)


def test_a_trial_with_no_more_than_patience_iterations_never_plateaus() -> None:
    assert not plateaued([3.0, 1.0, 1.0], patience=3, tolerance=0.0)


def test_mode_min_plateaus_when_the_lowest_value_stops_falling() -> None:
    assert plateaued([5.0, 3.0, 4.0, 4.0, 4.0], patience=3, tolerance=0.0, mode="min")
    assert not plateaued([5.0, 3.0, 4.0, 2.5], patience=2, tolerance=0.0, mode="min")


def test_a_non_finite_score_is_never_an_improvement_nor_a_best() -> None:
    assert plateaued([1.0, math.nan, math.nan], patience=2, tolerance=0.0)
    assert not plateaued([math.nan, 1.0, 0.5], patience=2, tolerance=0.0)


def test_a_patience_below_one_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="patience must be >= 1 iteration, got 0"):
        plateaued([1.0, 2.0], patience=0, tolerance=0.0)


# ------------------------------------------------------------------------------ the Tune stopper


def _result(iteration: int, objective: float) -> dict[str, Any]:
    """A result as Tune hands it to a stopper: nested, not flattened."""
    return {"training_iteration": iteration, "validation": {"objective": objective}}


def test_the_stopper_ends_a_trial_at_the_budget_iterations() -> None:
    stopper = SearchStopper(iterations=4)
    assert [stopper("t", _result(i, 1.0)) for i in (1, 2, 3, 4)] == [False, False, False, True]


def test_the_stopper_ends_a_trial_on_a_validation_plateau() -> None:
    stopper = SearchStopper(iterations=60, patience=3)
    stops = [stopper("t", _result(i, v)) for i, v in enumerate([1.0, 2.0, 1.5, 1.9, 1.8], start=1)]
    assert stops == [False, False, False, False, True]


def test_the_stopper_counts_each_trial_apart() -> None:
    stopper = SearchStopper(iterations=60, patience=1)
    assert [stopper("a", _result(1, 2.0)), stopper("b", _result(1, 1.0))] == [False, False]
    assert stopper("b", _result(2, 1.5)) is False  # b improved; a's 2.0 is not b's best
    assert stopper("a", _result(2, 1.5)) is True


def test_a_trial_restarted_from_a_checkpoint_forgets_the_rewound_iterations() -> None:
    stopper = SearchStopper(iterations=60, patience=2)
    first_run = [(1, 1.0), (2, 2.0), (3, 2.5), (4, 0.5)]
    assert [stopper("t", _result(i, v)) for i, v in first_run] == [False] * 4
    # restarted from the checkpoint of iteration 2: the lost iterations 3 and 4 must not count
    # (with the old 4 kept, or the new 3 appended, the trial would stop at once)
    assert [stopper("t", _result(i, v)) for i, v in [(3, 1.5), (4, 1.8)]] == [False, True]


def test_early_stopping_is_on_for_the_default_budget_and_off_for_smoke() -> None:
    spec = get_spec("ppo")
    default, smoke = spec.stop(ON_POLICY_BUDGET), spec.stop(ON_POLICY_SMOKE)
    assert (default.iterations, default.patience, default.tolerance) == (60, 20, 0.05)
    assert (smoke.iterations, smoke.patience) == (4, 0)


def test_early_stop_option_overrides_the_budget_and_reproduces(tmp_path: Path) -> None:
    spec = get_spec("ppo")
    off = TuneOptions(spec="ppo", replay=tmp_path, early_stop=0)
    assert off.budget(spec).early_stop == 0
    assert TuneOptions(spec="ppo", replay=tmp_path, smoke=True, early_stop=5).budget(spec).early_stop == 5
    assert TuneOptions(spec="ppo", replay=tmp_path).budget(spec).early_stop == 20
    assert "--early-stop 0" in off.command()


# ------------------------------------------------------------------------------ the overfit check


def test_least_squares_slope_of_a_crafted_series() -> None:
    # x mean 2.5, y mean 3: sum dx*dy = 7, sum dx^2 = 5
    assert least_squares_slope([1, 2, 3, 4], [1.0, 3.0, 2.0, 6.0]) == pytest.approx(1.4, abs=1e-12)


def test_least_squares_slope_is_nan_without_two_iterations_or_with_a_nan() -> None:
    assert math.isnan(least_squares_slope([3], [1.0]))
    assert math.isnan(least_squares_slope([1, 2], [1.0, math.nan]))


# iterations 1-2 pull validation down hard: a fit over all six would not see it fall at the end
ITERATIONS = [1, 2, 3, 4, 5, 6]
TRAIN = [0.0, 0.0, 0.2, 0.4, 0.5, 0.9]
VALIDATION = [-5.0, -5.0, 1.0, 0.8, 0.9, 0.5]


def test_validation_falling_while_train_rises_over_the_last_k_iterations_is_overfitting() -> None:
    check = check_overfit(ITERATIONS, TRAIN, VALIDATION, window=4)
    assert check is not None
    assert (check.first_iteration, check.last_iteration) == (3, 6)
    # over iterations 3..6: dx = -1.5 -0.5 0.5 1.5 (sum dx^2 = 5); train sum dx*dy = 1.1, validation -0.7
    assert check.train_slope == pytest.approx(0.22, abs=1e-12)
    assert check.validation_slope == pytest.approx(-0.14, abs=1e-12)
    assert check.overfitting


def test_both_rising_is_not_overfitting() -> None:
    check = check_overfit(ITERATIONS, TRAIN, VALIDATION, window=6)
    assert check is not None and check.validation_slope > 0
    assert not check.overfitting


def test_the_last_report_of_a_repeated_iteration_counts() -> None:
    # iteration 3 reported twice (a restart from a checkpoint): validation [3, 2, 4, 1] over 1..4
    # has slope -2 / 5; with the first report ([3, 2, 0, 1]) it would be -4 / 5
    iterations, train, validation = [1, 2, 3, 4, 3], [0.0, 1.0, 2.0, 3.0, 2.0], [3.0, 2.0, 0.0, 1.0, 4.0]
    check = check_overfit(iterations, train, validation, window=4)
    assert check is not None and check.validation_slope == pytest.approx(-0.4, abs=1e-12)


def test_a_trial_with_fewer_than_k_iterations_is_not_judged() -> None:
    assert check_overfit([1, 2, 3], [0.0, 1.0, 2.0], [2.0, 1.0, 0.0], window=4) is None


def test_the_warning_names_the_trial_and_both_slopes() -> None:
    check = OverfitCheck(first_iteration=51, last_iteration=60, train_slope=0.031, validation_slope=-0.0425)
    assert check.warning("PPO_abc_00001") == (
        "warning: trial PPO_abc_00001 looks overfitted: over iterations 51-60 its validation "
        "objective fell (-0.0425/iter) while its train objective rose (+0.0310/iter)"
    )


# ------------------------------------------------------------------------------ leaderboard, plot, summary


def _trial(tmp_path: Path, name: str, validation: list[float], train: list[float]) -> Any:
    """A stand-in for a Tune ``Result``: per-iteration scores and one checkpoint at the best
    validation iteration."""
    iterations = list(range(1, len(validation) + 1))
    scores = {METRIC: validation, TRAIN_METRIC: train, CHECKPOINT_SCORE: validation}
    frame = pd.DataFrame({"training_iteration": iterations, **scores})
    best = max(iterations, key=lambda i: validation[i - 1])
    metrics = {
        "training_iteration": best,
        METRIC: validation[best - 1],
        TRAIN_METRIC: train[best - 1],
        CHECKPOINT_SCORE: validation[best - 1],
    }
    folder = tmp_path / name / f"checkpoint_{best:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = SimpleNamespace(path=str(folder), filesystem=LocalFileSystem())
    return SimpleNamespace(
        metrics={"trial_id": name, "training_iteration": iterations[-1]},
        metrics_dataframe=frame,
        best_checkpoints=[(checkpoint, metrics)],
        path=str(tmp_path / name),
        config={},
        error=None,
    )


def test_leaderboard_rows_carry_the_train_objective_at_the_checkpoint_and_the_overfit_check(
    tmp_path: Path,
) -> None:
    trials = [_trial(tmp_path, "over", VALIDATION, TRAIN), _trial(tmp_path, "fine", [0.1, 0.2], [0.1, 0.3])]
    rows = leaderboard(trials, tmp_path, [], overfit_window=4, checkpoint_every=1)
    assert [(r.trial, r.iteration, r.objective, r.train_objective) for r in rows] == [
        ("over", 3, 1.0, 0.2),
        ("fine", 2, 0.2, 0.3),
    ]
    assert rows[0].overfit == check_overfit(ITERATIONS, TRAIN, VALIDATION, window=4)
    assert rows[1].overfit is None  # 2 iterations < k = 4
    outcome = TuneOutcome(run_dir=tmp_path, leaderboard=rows, plot=None)
    assert outcome.overfit_warnings == [rows[0].overfit.warning("over")]  # type: ignore[union-attr]


def test_leaderboard_row_with_its_overfit_check_round_trips_through_json() -> None:
    check = OverfitCheck(first_iteration=3, last_iteration=6, train_slope=0.22, validation_slope=math.nan)
    row = _row(objective=1.0, train_objective=0.5, overfit=check)
    again = LeaderboardRow.model_validate_json(row.model_dump_json())
    assert again.overfit is not None and math.isnan(again.overfit.validation_slope)
    assert again.model_dump_json() == row.model_dump_json()


def _row(**fields: Any) -> LeaderboardRow:
    base = dict.fromkeys(("sharpe", "sortino", "cvar_5", "total_return", "max_drawdown", "turnover"), 0.0)
    return LeaderboardRow(
        trial="t1", trial_dir="t1", params={}, iteration=3, checkpoint=None, node_id=None, error=None,
        **{**base, **fields},
    )  # fmt: skip


def test_leaderboard_table_shows_the_train_objective_beside_validation() -> None:
    header, line = format_leaderboard([_row(objective=-0.5, train_objective=1.25)]).splitlines()
    assert header.split()[:4] == ["trial", "iter", "objective", "train"]
    assert line.split()[:4] == ["t1", "3", "-0.500", "1.250"]


def test_the_plot_draws_train_dashed_in_the_colour_of_its_validation_line(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    trials = [_trial(tmp_path, "a", [0.1, 0.2], [0.3, 0.4]), _trial(tmp_path, "b", [0.5, 0.1], [0.0, 0.2])]
    assert draw_objective(ax, trials) == 2
    lines = ax.get_lines()
    plt.close(fig)
    assert [(ln.get_linestyle(), list(ln.get_ydata())) for ln in lines] == [
        ("-", [0.1, 0.2]),
        ("--", [0.3, 0.4]),
        ("-", [0.5, 0.1]),
        ("--", [0.0, 0.2]),
    ]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()


def test_the_plot_marks_each_train_point_so_a_one_iteration_trial_shows_both_scores(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    draw_objective(ax, [_trial(tmp_path, "a", [0.1], [0.3])])
    validation, train = ax.get_lines()
    plt.close(fig)
    assert (validation.get_marker(), train.get_marker()) == ("o", "s")


def test_tune_command_passes_early_stop_and_prints_the_overfit_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raytrade.cluster.tune as tune_module

    check = check_overfit(ITERATIONS, TRAIN, VALIDATION, window=4)
    seen: list[TuneOptions] = []

    def fake_run(opts: TuneOptions, dashboard: bool = True) -> TuneOutcome:
        seen.append(opts)
        rows = [_row(objective=1.0, train_objective=0.2, overfit=check)]
        return TuneOutcome(run_dir=tmp_path, leaderboard=rows, plot=None)

    monkeypatch.setattr(tune_module, "run_tune", fake_run)
    result = CliRunner().invoke(
        tune_command, ["--spec", "ppo", "--replay", str(tmp_path), "--early-stop", "7"]
    )
    assert result.exit_code == 0, result.output
    assert seen[0].early_stop == 7
    assert check is not None and check.warning("t1") in result.output.splitlines()


# ------------------------------------------------------------------------------ the session's smoke search


@pytest.mark.slow
@pytest.mark.ray
def test_the_smoke_search_reports_train_beside_validation(smoke_runs: Callable[[str], SmokeRun]) -> None:
    run = smoke_runs("ppo")  # the session's one ppo smoke search (see tests/conftest.py)
    rows = json.loads((run.run_dir / LEADERBOARD_FILE).read_text())
    for row in rows:
        results = [json.loads(line) for line in (run.run_dir / row["trial_dir"] / "result.json").open()]
        assert all(set(r["train"]) == set(REPORTED) == set(r["validation"]) for r in results)
        assert math.isfinite(row["train_objective"])
    # ASHA lets the better trial run all 4 smoke iterations: the smoke budget's k = 4 judges it
    assert any(row["overfit"] is not None for row in rows)
    lines = run.output.splitlines()
    header = lines[1 + max(i for i, line in enumerate(lines) if line.startswith("leaderboard ("))]
    assert header.split()[:4] == ["trial", "iter", "objective", "train"]


def test_a_failed_trials_leaderboard_row_keeps_the_innermost_error_not_rays_header(tmp_path: Path) -> None:
    # the text's first line is Tune's "Failure # 1", its second Ray's remote-task header: neither says why
    from tests.test_tune_precheck import RAY_DATA_FAILURE

    trial = _trial(tmp_path, "failed", [0.1], [0.1])
    trial.error = RuntimeError(RAY_DATA_FAILURE)
    (row,) = leaderboard([trial], tmp_path, [], overfit_window=4, checkpoint_every=1)
    assert row.error == (
        "ExperienceError: experience column 'observation_spec' of episode 'ep-0' is b9e1aaaaaaaa..., the "
        "learner's is 4920bbbbbbbb... (observations encoded with other feature columns or another normaliser)"
    )
