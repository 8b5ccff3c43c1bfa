"""An experiment reuses a finished search only on the data it was searched on, by the code that
searched it (``cluster.run_reuse``), and writes a verdict only on the store it started on.

No Ray: ``run_tune`` is a recorder and the finished search is a run folder written with
``cluster.run_file``'s helpers; ``load_selected`` returns no module (nothing is replayed here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster import experiment
from raytrade.cluster.experiment import (
    BUDGETS,
    ExperimentOptions,
    FoldPlan,
    SearchResult,
    experiment_store_state,
    plan_folds,
    search_options,
)
from raytrade.cluster.run_file import (
    LEADERBOARD_FILE,
    RUN_FILE,
    LeaderboardRow,
    RunFile,
    read_run_file,
    write_leaderboard,
    write_run_file,
)
from raytrade.cluster.run_reuse import REPLACED_MARK
from raytrade.cluster.tune import TuneOptions, TuneOutcome, provenance
from raytrade.models.manifest import BookEnd, Provenance, SearchObjective
from raytrade.models.registry import code_fingerprint
from raytrade.tune_specs.objective import BOOK_END
from raytrade.tune_specs.spec import ON_POLICY_SMOKE
from tests.test_experience_fingerprint import _log_decision


def _row(trial: str) -> LeaderboardRow:
    return LeaderboardRow(
        trial=trial,
        trial_dir=trial,
        params={},
        iteration=1,
        checkpoint=f"{trial}/checkpoint_000000",
        node_id=None,
        error=None,
        objective=0.5,
        sharpe=1.0,
        sortino=1.0,
        cvar_5=-0.01,
        total_return=0.1,
        turnover=0.2,
        max_drawdown=0.05,
    )


@pytest.fixture
def store(synthetic_store: Path, tmp_path: Path) -> Path:
    """A copy of the session's synthetic store, free to grow."""
    root = tmp_path / "store"
    shutil.copytree(synthetic_store, root)
    return root


def _fold() -> FoldPlan:
    calendar = pd.date_range("2020-01-01", periods=600, freq="B", tz="UTC")
    return plan_folds(calendar, BUDGETS["smoke"], 252)[0][0]


def _options(store: Path, tmp_path: Path, family: str) -> ExperimentOptions:
    return ExperimentOptions(
        replay=store, out=tmp_path / "out", budget="smoke", families=(family,), features=("base",)
    )


def _finished_search(
    tune_opts: TuneOptions, store: Path, offline: bool, book_end: BookEnd = BOOK_END
) -> Path:
    """A finished search of ``tune_opts``'s command on the store as it is now (trial ``old``), scored
    with the book ``book_end`` at the window's end (today's rule by default)."""
    run_dir = tune_opts.run_dir()
    record = RunFile(
        spec=tune_opts.spec,
        family=tune_opts.spec,
        replay=str(store.resolve()),
        budget=ON_POLICY_SMOKE,
        objective=SearchObjective(
            metric="validation/objective", mode="max", cvar_penalty=1.0, book_end=book_end
        ),
        searched=[],
        required_features=[],
        seed=tune_opts.seed,
        command=tune_opts.command(),
        provenance=provenance(store, store if offline else None),
    )
    write_run_file(run_dir, record)
    write_leaderboard(run_dir, [_row("old")])
    return run_dir


def _search(
    opts: ExperimentOptions, spec: str, fold: FoldPlan, monkeypatch: pytest.MonkeyPatch
) -> tuple[SearchResult, list[TuneOptions], list[str]]:
    """``run_search`` with a recorder for ``run_tune`` (its search: trial ``new``): (result, the
    searches run, the lines said)."""
    import raytrade.cluster.tune as tune

    searched: list[TuneOptions] = []

    def recorder(tune_opts: TuneOptions) -> TuneOutcome:
        assert not (tune_opts.run_dir() / RUN_FILE).exists()  # run_tune refuses such a folder
        searched.append(tune_opts)
        return TuneOutcome(run_dir=tune_opts.run_dir(), leaderboard=[_row("new")], plot=None)

    def no_module(run_dir: Path, checkpoint: str, trial_dir: str) -> tuple[Any, Any, bool]:
        return None, SimpleNamespace(feature_columns=("ret_1",)), False

    monkeypatch.setattr(tune, "run_tune", recorder)
    monkeypatch.setattr(experiment, "load_selected", no_module)
    budget = opts.plan_budget()
    said: list[str] = []
    state = experiment_store_state(opts, budget)
    result = experiment.run_search(opts, budget, spec, "base", fold, state, said.append)
    return result, searched, said


def _append_bar(store: Path) -> None:
    """One bar after the store's last, for the symbol of its last row (an incremental ingest)."""
    from raytrade.replay.reader import read_frame
    from raytrade.replay.writer import ReplayWriter

    bars = read_frame(store, "bars")
    last = bars.sort_values("ts").tail(1).copy()
    last["ts"] = last["ts"] + pd.Timedelta(days=1)
    with ReplayWriter(store) as writer:
        assert writer.append_bars(last.reset_index(drop=True)) is not None


def _moved_aside(run_dir: Path) -> list[Path]:
    return sorted(run_dir.parent.glob(f"{run_dir.name}{REPLACED_MARK}*"))


def test_a_finished_search_of_the_same_command_on_the_same_store_is_reused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, fold = _options(store, tmp_path, "ppo"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "ppo", "base", fold), store, offline=False
    )
    sha = read_run_file(run_dir).provenance.data_sha256
    result, searched, said = _search(opts, "ppo", fold, monkeypatch)
    assert searched == []
    assert (result.selected.trial, result.selected.run_dir) == ("old", str(run_dir))
    assert said == [
        f"reusing the finished search {run_dir.name}: same command, same code ({code_fingerprint()[:12]}), "
        f"same data ({sha[:12]})"
    ]
    assert _moved_aside(run_dir) == []


def test_a_bar_appended_since_searches_again_and_keeps_the_old_search(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, fold = _options(store, tmp_path, "ppo"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "ppo", "base", fold), store, offline=False
    )
    old = read_run_file(run_dir)
    _append_bar(store)
    now = experiment_store_state(opts, opts.plan_budget()).data_sha256
    assert now != old.provenance.data_sha256
    result, searched, said = _search(opts, "ppo", fold, monkeypatch)
    assert [s.command() for s in searched] == [old.command]
    assert result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert kept.name == f"{run_dir.name}{REPLACED_MARK}{old.provenance.started_at:%Y%m%dT%H%M%SZ}"
    assert read_run_file(kept) == old and (kept / LEADERBOARD_FILE).is_file()
    assert said == [
        f"searching {run_dir.name} again: the store's data changed since (fingerprint then "
        f"{old.provenance.data_sha256[:12]}, now {now[:12]}); the old search is kept in {kept.name}"
    ]


def _finished_offline_search(
    store: Path, tmp_path: Path
) -> tuple[ExperimentOptions, FoldPlan, Path, Provenance]:
    """A finished ``cql`` search (options, fold, folder, recorded provenance) on a store holding one
    logged decision, so it has an experience table to fingerprint."""
    _log_decision(store, "d0", "2024-01-02")
    opts, fold = _options(store, tmp_path, "cql"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "cql", "base", fold), store, offline=True
    )
    return opts, fold, run_dir, read_run_file(run_dir).provenance


def test_an_offline_familys_changed_experience_searches_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, fold, run_dir, old = _finished_offline_search(store, tmp_path)
    assert old.experience is not None
    _log_decision(store, "d1", "2024-01-03")  # bars and features untouched
    now = experiment_store_state(opts, opts.plan_budget())
    assert now.data_sha256 == old.data_sha256 and now.experience_sha256 is not None
    result, searched, said = _search(opts, "cql", fold, monkeypatch)
    assert len(searched) == 1 and result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert said == [
        f"searching {run_dir.name} again: its experience store changed since (fingerprint then "
        f"{old.experience.sha256[:12]}, now {now.experience_sha256[:12]}); the old search is kept in "
        f"{kept.name}"
    ]


def test_an_offline_familys_unchanged_experience_is_reused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, fold, run_dir, old = _finished_offline_search(store, tmp_path)
    assert old.experience is not None
    result, searched, said = _search(opts, "cql", fold, monkeypatch)
    assert searched == [] and result.selected.trial == "old"
    assert said == [
        f"reusing the finished search {run_dir.name}: same command, same code ({code_fingerprint()[:12]}), "
        f"same data ({old.data_sha256[:12]}) and experience ({old.experience.sha256[:12]})"
    ]


def test_a_search_of_another_command_in_the_folder_is_moved_aside_not_refused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fold = _fold()
    other = _options(store, tmp_path, "ppo").model_copy(update={"seed": 7})  # same folder name
    run_dir = _finished_search(
        search_options(other, other.plan_budget(), "ppo", "base", fold), store, offline=False
    )
    result, searched, said = _search(_options(store, tmp_path, "ppo"), "ppo", fold, monkeypatch)
    assert len(searched) == 1 and result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert read_run_file(kept).seed == 7
    assert said == [
        f"searching {run_dir.name} again: its command differs; the old search is kept in {kept.name}"
    ]


def test_a_search_scored_with_the_book_marked_to_market_is_searched_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its leaderboard chose its checkpoint before the objective closed the book at the window's end:
    # same command, same data, but another rule (tune --resume refuses the mix; so does the reuse)
    opts, fold = _options(store, tmp_path, "ppo"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "ppo", "base", fold), store, offline=False, book_end="marked"
    )
    result, searched, said = _search(opts, "ppo", fold, monkeypatch)
    assert len(searched) == 1 and result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert said == [
        f"searching {run_dir.name} again: it was scored with the book marked at the window's end (now: "
        f"closed); the old search is kept in {kept.name}"
    ]


def test_an_unfinished_search_in_the_folder_is_moved_aside_and_searched_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, fold = _options(store, tmp_path, "ppo"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "ppo", "base", fold), store, offline=False
    )
    (run_dir / LEADERBOARD_FILE).unlink()  # interrupted: the run file alone
    result, searched, said = _search(opts, "ppo", fold, monkeypatch)
    assert len(searched) == 1 and result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert (kept / RUN_FILE).is_file()
    assert said == [
        f"searching {run_dir.name} again: it did not finish (no {LEADERBOARD_FILE}); the old search is kept "
        f"in {kept.name}"
    ]


def test_an_offline_search_is_not_reused_when_its_experience_table_is_gone(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _log_decision(store, "d0", "2024-01-02")
    opts, fold = _options(store, tmp_path, "cql"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "cql", "base", fold), store, offline=True
    )
    old = read_run_file(run_dir).provenance.experience
    assert old is not None
    shutil.rmtree(store / "experience")
    assert experiment_store_state(opts, opts.plan_budget()).experience_sha256 is None
    result, searched, said = _search(opts, "cql", fold, monkeypatch)
    assert len(searched) == 1 and result.selected.trial == "new"
    assert said[0].startswith(
        f"searching {run_dir.name} again: its experience store changed since (fingerprint then "
        f"{old.sha256[:12]}, now none)"
    )


def _recorded_code(run_dir: Path, code_sha256: str | None) -> RunFile:
    """Rewrite ``run_dir``'s run file as recorded by the code of fingerprint ``code_sha256`` (None: by a
    raytrade older than the field, whose run file has no such key); the record as read back."""
    path = run_dir / RUN_FILE
    record = json.loads(path.read_text())
    if code_sha256 is None:
        del record["provenance"]["code_sha256"]
    else:
        record["provenance"]["code_sha256"] = code_sha256
    path.write_text(json.dumps(record))
    return read_run_file(run_dir)


def test_a_search_by_other_code_searches_again_and_keeps_the_old_search(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # same command, same data: only the code differs (a search space, model or objective changed)
    opts, fold = _options(store, tmp_path, "ppo"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "ppo", "base", fold), store, offline=False
    )
    old = _recorded_code(run_dir, "c0de" * 16)
    result, searched, said = _search(opts, "ppo", fold, monkeypatch)
    assert [s.command() for s in searched] == [old.command] and result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert read_run_file(kept) == old
    assert said == [
        f"searching {run_dir.name} again: the code changed since (code fingerprint then c0dec0dec0de, now "
        f"{code_fingerprint()[:12]}); the old search is kept in {kept.name}"
    ]


def test_a_run_file_older_than_the_code_fingerprint_reads_and_searches_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, fold = _options(store, tmp_path, "ppo"), _fold()
    run_dir = _finished_search(
        search_options(opts, opts.plan_budget(), "ppo", "base", fold), store, offline=False
    )
    old = _recorded_code(run_dir, None)
    assert old.provenance.code_sha256 is None
    result, searched, said = _search(opts, "ppo", fold, monkeypatch)
    assert len(searched) == 1 and result.selected.trial == "new"
    (kept,) = _moved_aside(run_dir)
    assert said == [
        f"searching {run_dir.name} again: its run file records no code fingerprint (now "
        f"{code_fingerprint()[:12]}): its code is unknown; the old search is kept in {kept.name}"
    ]


def test_a_fresh_search_records_the_code_fingerprint(store: Path) -> None:
    assert provenance(store).code_sha256 == code_fingerprint()


# ------------------------------------------------------------------------------ one store per verdict


def _window_of(calendar: pd.DatetimeIndex, fold: FoldPlan) -> SimpleNamespace:
    """What the evaluation's plan holds for ``fold``'s test window: its bars' timestamps."""
    lo = int(calendar.searchsorted(fold.test.start))
    ts = calendar[lo : lo + fold.test.n_bars].tz_convert(None).to_numpy()
    return SimpleNamespace(name=f"fold{fold.index}", data=SimpleNamespace(ts=ts))


def test_a_store_changed_while_the_experiment_ran_writes_no_verdict_and_keeps_the_searches(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bar ingested after the first search: the second search and the evaluation read another
    store than the first search; the command refuses (exit 2, one line), writes no verdict and
    leaves both search folders as they are. The searches, the validation replay and the evaluation
    are recorders (no Ray, no module)."""
    import raytrade.cluster.tune as tune
    import raytrade.envs.evaluation.harness as harness
    from raytrade.cluster.experiment import experiment_command
    from raytrade.replay.fingerprint import data_fingerprint

    opts = _options(store, tmp_path, "ppo")
    start = data_fingerprint(store)[0]
    calendar, ppy = experiment._calendar(store)
    folds, _ = plan_folds(calendar, opts.plan_budget(), ppy)

    def search(tune_opts: TuneOptions) -> TuneOutcome:
        run_dir = _finished_search(tune_opts, store, offline=False)
        if tune_opts.run_dir().name.endswith("fold0"):
            _append_bar(store)  # an incremental ingest while the searches run
        return TuneOutcome(run_dir=run_dir, leaderboard=[_row("new")], plot=None)

    def no_module(run_dir: Path, checkpoint: str, trial_dir: str) -> tuple[Any, Any, bool]:
        return None, SimpleNamespace(feature_columns=("ret_1",)), False

    def validation(searches: Any, root: Path) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
        rng = np.random.default_rng(0)
        series = [rng.normal(0.0, 0.01, 40) for _ in folds]
        return [np.zeros(40) for _ in folds], {name: series for name in searches}

    def plan(root: Any, names: Any, cfg: Any, registry: Any = None, loader: Any = None) -> Any:
        windows = [_window_of(calendar, f) for f in folds]
        return SimpleNamespace(windows=windows, fingerprint=data_fingerprint(root)[0])

    evaluated: list[Any] = []
    monkeypatch.setattr(tune, "run_tune", search)
    monkeypatch.setattr(experiment, "load_selected", no_module)
    monkeypatch.setattr(experiment, "validation_returns", validation)
    monkeypatch.setattr(harness, "prepare", plan)
    monkeypatch.setattr(harness, "evaluate", evaluated.append)
    args = ["--replay", str(store), "--out", str(opts.out), "--budget", "smoke"]
    result = CliRunner().invoke(experiment_command, [*args, "--families", "ppo", "--features", "base"])

    now = data_fingerprint(store)[0]
    import traceback

    traceback.print_exception(result.exception)
    assert now != start and len(evaluated) == 1
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"error: replay store {str(store)!r} changed while the experiment ran (data fingerprint at its start "
        f"{start[:12]}, now {now[:12]}): no verdict written; its searches are kept in "
        f"{str(opts.out / 'runs')!r} (rerun on a store left as it is)"
    )
    assert sorted(p.name for p in opts.out.iterdir()) == ["runs"]
    runs = sorted((opts.out / "runs").iterdir())
    assert [p.name for p in runs] == ["ppo-base-fold0", "ppo-base-fold1"]
    assert [read_run_file(p).provenance.data_sha256 for p in runs] == [start, now]
    assert all((p / LEADERBOARD_FILE).is_file() for p in runs)


def test_a_store_changed_and_changed_back_is_refused_by_the_fingerprint_a_search_recorded(
    store: Path, tmp_path: Path
) -> None:
    opts = _options(store, tmp_path, "ppo")
    start = experiment_store_state(opts, opts.plan_budget())
    other = "e" * 64
    with pytest.raises(experiment.StoreChangedError) as refused:
        experiment.check_store_unchanged(
            opts,
            opts.plan_budget(),
            start,
            {"at search ppo-base-fold0": start.data_sha256, "at search ppo-base-fold1": other},
        )
    assert str(refused.value).startswith(
        f"replay store {str(store)!r} changed while the experiment ran (data fingerprint at its start "
        f"{start.data_sha256[:12]}, at search ppo-base-fold1 eeeeeeeeeeee): no verdict written"
    )


def test_an_unchanged_store_passes_the_verdict_check(store: Path, tmp_path: Path) -> None:
    opts = _options(store, tmp_path, "ppo")
    start = experiment_store_state(opts, opts.plan_budget())
    experiment.check_store_unchanged(
        opts, opts.plan_budget(), start, {"at the evaluation": start.data_sha256}
    )
