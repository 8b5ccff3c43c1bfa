"""``raytrade experiment``: fold planning, the walk-forward policy's refusal of foreign windows, and
the smoke experiment end to end on the session's synthetic store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.cluster.experiment import (
    BASELINES,
    BUDGETS,
    FoldModel,
    WalkForwardPolicy,
    choose_winner,
    plan_folds,
)
from raytrade.cluster.experiment_report import read_experiment
from raytrade.replay.errors import InputError

DAILY = pd.bdate_range("2019-01-01", periods=1500, tz="UTC")


def test_folds_cover_the_last_three_years_with_validation_before_each_test_window() -> None:
    folds, min_train = plan_folds(DAILY, BUDGETS["small"], periods_per_year=252, embargo=5)
    assert [f.test.n_bars for f in folds] == [252, 252, 252]
    assert folds[-1].test.end == DAILY[-1]
    assert folds[0].test.start == DAILY[1500 - 756]
    assert min_train == 1500 - 756 - 5
    for f in folds:
        i = DAILY.get_loc
        assert i(f.validation.start) - i(f.train.end) == 6  # 5 embargo bars between
        assert i(f.test.start) - i(f.validation.end) == 6
        assert f.validation.n_bars == 126
        assert f.train.start == DAILY[0]


def test_folds_shrink_to_a_short_store_and_refuse_one_too_short() -> None:
    folds, _ = plan_folds(DAILY[:400], BUDGETS["small"], periods_per_year=252, embargo=5)
    assert sum(f.test.n_bars for f in folds) == 400 - 252 - 126 - 3 * 5
    with pytest.raises(InputError, match="too short for 3 folds"):
        plan_folds(DAILY[:390], BUDGETS["small"], periods_per_year=252, embargo=5)


def test_walk_forward_policy_refuses_a_window_that_is_no_folds_test_window() -> None:
    from raytrade.envs.synthetic_market import synthetic_market_data

    data = synthetic_market_data(n_assets=2, n_steps=20, seed=0)
    model = FoldModel(np.datetime64(data.ts[1], "ns"), module=None, env_config=None, gated=False)
    policy = WalkForwardPolicy("ppo-base", ("ret_1",), (model,))
    with pytest.raises(InputError, match="is no fold's test window"):
        policy.policy(data)


def test_winner_is_the_best_mean_validation_objective() -> None:
    assert choose_winner({"ppo-base": 0.4, "gnn-enriched": 1.2, "gating-base": -0.3}) == "gnn-enriched"


def test_a_symbol_without_bars_in_a_window_loads_as_never_listed(synthetic_store: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    data = load_market_data(synthetic_store, "train", train_fraction=0.1, validation_fraction=0.1)
    never = ~data.listed.any(axis=0)
    assert never.any()
    assert np.all(data.open[:, never] == 1.0) and np.all(data.close[:, never] == 1.0)


def test_tune_split_fractions_move_the_training_window_and_its_normaliser(synthetic_store: Path) -> None:
    from raytrade.cluster.tune import TuneOptions
    from raytrade.tune_specs import get_spec

    spec = get_spec("ppo")
    fold = TuneOptions(
        spec="ppo",
        replay=synthetic_store,
        smoke=True,
        features="base",
        train_fraction=0.3,
        validation_fraction=0.1,
    )
    default = fold.model_copy(update={"train_fraction": None, "validation_fraction": None})
    configs = [
        spec.env_config(str(synthetic_store), o.budget(spec), o.feature_columns(spec), o.split_fractions())
        for o in (fold, default)
    ]
    assert configs[0]["data"]["train_fraction"] == 0.3 and configs[0]["data"]["validation_fraction"] == 0.1
    assert "train_fraction" not in configs[1]["data"]
    assert configs[0]["normalizer"]["center"] != configs[1]["normalizer"]["center"]
    assert "--train-fraction 0.3 --validation-fraction 0.1" in fold.command()


# ------------------------------------------------------------------------------ smoke run (Ray)


@pytest.fixture(scope="module")
def smoke_experiment(
    ray_session: None, synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from click.testing import CliRunner

    from raytrade.cluster.experiment import experiment_command

    out = tmp_path_factory.mktemp("experiment")
    args = ["--replay", str(synthetic_store), "--out", str(out), "--budget", "smoke"]
    args += ["--families", "ppo", "--features", "base"]  # two searches (one per fold): the test budget
    result = CliRunner().invoke(experiment_command, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return out


def test_smoke_experiment_writes_every_output(smoke_experiment: Path) -> None:
    for name in ("experiment.md", "experiment.json", "marketsimulatorresults.md", "evaluation/report.json"):
        assert (smoke_experiment / name).is_file(), name
    for stem in ("equity_by_fold", "drawdown_by_fold", "scores", "ablation"):
        assert (smoke_experiment / "plots" / f"{stem}.png").stat().st_size > 0
    log = (smoke_experiment / "marketsimulatorresults.md").read_text()
    doc = read_experiment(smoke_experiment / "experiment.json")
    assert log.startswith(f"## {doc.created_at:%Y-%m-%d} raytrade experiment (smoke)")


def test_smoke_experiment_test_windows_follow_their_training_and_validation(smoke_experiment: Path) -> None:
    doc = read_experiment(smoke_experiment / "experiment.json")
    assert len(doc.folds) == BUDGETS["smoke"].n_folds
    for f in doc.folds:
        assert f.train.end < f.validation.start <= f.validation.end < f.test.start
    for a, b in zip(doc.folds, doc.folds[1:], strict=False):
        assert a.test.end < b.test.start


def test_smoke_experiment_scores_every_policy_on_every_fold(smoke_experiment: Path) -> None:
    doc = read_experiment(smoke_experiment / "experiment.json")
    assert [b.name for b in doc.baselines] == list(BASELINES)
    assert [v.name for v in doc.variants] == ["ppo-base"]
    for name, score in doc.policy_scores().items():
        assert len(score.objective_by_fold) == len(doc.folds), name
        assert all(x is not None and math.isfinite(x) for x in score.objective_by_fold), name
    bench = doc.policy_scores()["equal_weight"]
    assert bench.objective.estimate == 0.0 and bench.objective_by_fold == (0.0, 0.0)
    assert bench.excess_return == 0.0


def test_smoke_experiment_winner_is_chosen_on_validation_and_matches_its_figures(
    smoke_experiment: Path,
) -> None:
    doc = read_experiment(smoke_experiment / "experiment.json")
    means = {v.name: v.validation_objective for v in doc.variants}
    assert doc.verdict.winner == max(means, key=lambda k: means[k])
    for v in doc.variants:
        assert v.validation_objective == pytest.approx(np.mean([s.validation_objective for s in v.selected]))
        assert [s.fold for s in v.selected] == [f.index for f in doc.folds]
    winner = doc.policy_scores()[doc.verdict.winner]
    assert doc.verdict.vs_equal_weight == winner.objective
    kelly = doc.policy_scores()["kelly_lite"].objective.estimate
    assert winner.objective.estimate is not None and kelly is not None
    assert doc.verdict.vs_kelly_lite.estimate == pytest.approx(winner.objective.estimate - kelly)
    assert doc.verdict.beats_kelly_lite == ((doc.verdict.vs_kelly_lite.low or 0.0) > 0)


def test_a_finished_search_of_the_same_command_is_reused(
    smoke_experiment: Path, synthetic_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raytrade.cluster.tune as tune
    from raytrade.cluster.experiment import ExperimentOptions, _calendar, run_search

    def no_search(opts: object) -> None:
        raise AssertionError("searched again")

    monkeypatch.setattr(tune, "run_tune", no_search)
    opts = ExperimentOptions(
        replay=synthetic_store, out=smoke_experiment, budget="smoke", families=("ppo",), features=("base",)
    )
    calendar, ppy = _calendar(synthetic_store)
    folds, _ = plan_folds(calendar, opts.plan_budget(), ppy)
    again = run_search(opts, opts.plan_budget(), "ppo", "base", folds[1])
    first = read_experiment(smoke_experiment / "experiment.json").variants[0].selected[1]
    assert again.selected.model_dump(exclude={"tune_seconds"}) == first.model_dump(exclude={"tune_seconds"})
    assert again.selected.tune_seconds > 0
