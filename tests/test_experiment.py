"""``raytrade experiment``: fold planning, the walk-forward policy's refusal of foreign windows, and
the smoke experiment end to end on the session's synthetic store."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raytrade.cluster.experiment import (
    BASELINES,
    BUDGETS,
    ExperimentOptions,
    FoldModel,
    FoldPlan,
    WalkForwardPolicy,
    check_nested,
    choice_windows,
    choose_by_fold,
    plan_folds,
)
from raytrade.cluster.experiment_report import (
    SELECTED,
    Candidate,
    ExperimentDocument,
    FoldSelection,
    FoldWindows,
    Interval,
    Selected,
    VariantResult,
    Verdict,
    judge,
    read_experiment,
    render_markdown,
    selection_lines,
    verdict_lines,
    wall_lines,
)
from raytrade.cluster.experiment_report import (
    TestScore as ScoreDoc,
)
from raytrade.envs.evaluation.document import Window
from raytrade.envs.evaluation.stats import BootstrapConfig, DifferenceCI, stationary_indices
from raytrade.replay.errors import InputError
from raytrade.tune_specs.objective import UNDEFINED_SCORE
from raytrade.tune_specs.selection import rank_candidates, score_of

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


BOOT = BootstrapConfig(samples=200, seed=0)
TEN_YEARS = pd.bdate_range("2016-01-04", periods=2570, tz="UTC")  # ~10 y of daily bars, like shared/data


def _bars(calendar: pd.DatetimeIndex, *windows: Any) -> pd.DatetimeIndex:
    """The calendar's bars inside any of ``windows``."""
    inside = np.zeros(len(calendar), dtype=bool)
    for w in windows:
        inside |= (calendar >= w.start) & (calendar <= w.end)
    return calendar[inside]


@pytest.mark.parametrize("budget", ["smoke", "small", "medium", "full"])
@pytest.mark.parametrize("calendar", [TEN_YEARS, DAILY], ids=["ten_years", "six_years"])
def test_no_choice_reads_a_bar_of_the_test_window_it_is_judged_on(
    budget: str, calendar: pd.DatetimeIndex
) -> None:
    folds, _ = plan_folds(calendar, BUDGETS[budget], 252)
    check_nested(folds)
    for fold, windows in zip(folds, choice_windows(folds), strict=True):
        used = _bars(calendar, *windows)
        judged = _bars(calendar, fold.test)
        assert len(used) > 0 and len(judged) > 0
        assert used.max() < fold.test.start, fold.index  # every bar the choice read precedes its test
        assert used.intersection(judged).empty
    # what the rule before read: every fold's validation window for every fold's choice, a third of
    # the pooled test bars with the small budget on ten years
    if budget == "small" and calendar is TEN_YEARS:
        pooled = _bars(calendar, *(f.validation for f in folds))
        tested = _bars(calendar, *(f.test for f in folds))
        assert len(pooled.intersection(tested)) == 252


def test_a_fold_whose_choice_reaches_its_test_window_is_refused() -> None:
    from dataclasses import replace

    folds, _ = plan_folds(TEN_YEARS, BUDGETS["small"], 252)
    reaching = replace(folds[2].validation, end=folds[2].test.start)  # one bar into its own test window
    leaky = [*folds[:2], replace(folds[2], validation=reaching)]
    with pytest.raises(AssertionError, match="fold 2: its choice reads bars up to"):
        check_nested(leaky)


def _per_bar(rng: np.random.Generator, n: int, mean: float, scale: float) -> np.ndarray:
    return mean + scale * rng.standard_normal(n)


def test_each_fold_chooses_on_its_own_validation_window_only() -> None:
    folds, _ = plan_folds(TEN_YEARS, BUDGETS["small"], 252)
    n = len(TEN_YEARS)
    rng = np.random.default_rng(0)
    bench = _per_bar(rng, n, 1e-3, 0.01)
    series = {"good": bench + _per_bar(rng, n, 5e-4, 5e-3), "late": bench + _per_bar(rng, n, -5e-4, 5e-3)}

    def on_validation(per_bar: dict[str, np.ndarray]) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
        cut = [
            slice(TEN_YEARS.get_loc(f.validation.start), TEN_YEARS.get_loc(f.validation.end) + 1)
            for f in folds
        ]
        return {k: [v[c] for c in cut] for k, v in per_bar.items()}, [bench[c] for c in cut]

    validation, bench_validation = on_validation(series)
    honest = [r[0].name for r in choose_by_fold(validation, bench_validation, 252, 1.0, BOOT)]
    assert honest == ["good", "good", "good"]
    for k, fold in enumerate(folds):
        # "late" becomes far better on every bar from fold k's test window on: no choice judged on
        # those bars may change
        late = series["late"].copy()
        start = TEN_YEARS.get_loc(fold.test.start)
        late[start:] = bench[start:] + _per_bar(rng, n - start, 3e-3, 1e-3)
        poisoned, _ = on_validation({"good": series["good"], "late": late})
        chosen = [r[0].name for r in choose_by_fold(poisoned, bench_validation, 252, 1.0, BOOT)]
        assert chosen[: k + 1] == honest[: k + 1]
        if k + 1 < len(folds):
            assert chosen[k + 1] == "late"  # the later bars are in the next fold's validation window
        if k == 0:
            # the rule before (one choice on every fold's validation pooled, judged on every test
            # fold) would have let fold 0's test bars choose the variant judged on them
            pooled = {name: np.concatenate(v) for name, v in poisoned.items()}
            assert rank_candidates(pooled, np.concatenate(bench_validation), 252, 1.0, BOOT)[0].name == "late"


def test_a_tie_goes_to_the_variant_listed_first_and_the_runner_up_interval_is_zero() -> None:
    rng = np.random.default_rng(1)
    bench = [_per_bar(rng, 60, 0.001, 0.01) for _ in range(2)]
    same = [_per_bar(rng, 60, m, 0.01) for m in (0.002, 0.0)]
    for ranked in choose_by_fold({"b": same, "a": [x.copy() for x in same]}, bench, 252, 1.0, BOOT):
        assert [r.name for r in ranked] == ["b", "a"]
        assert ranked[1].vs_winner == DifferenceCI(0.0, 0.0, 0.0, BOOT.samples)


def test_choose_by_fold_refuses_variants_with_different_fold_counts() -> None:
    rng = np.random.default_rng(2)
    bench = [_per_bar(rng, 60, 0.001, 0.01) for _ in range(2)]
    with pytest.raises(ValueError, match="one validation series per fold"):
        choose_by_fold({"a": bench, "b": bench[:1]}, bench, 252, 1.0, BOOT)


def _run(returns: np.ndarray, ruin_bar: int | None = None) -> Any:
    from raytrade.envs.evaluation.harness import RunSeries

    n = len(returns)
    return RunSeries(
        timestamps=np.arange(n).astype("datetime64[D]"),
        returns=returns,
        turnover=np.full(n, 0.01),
        costs=np.zeros((n, 4)),
        regime=np.zeros(n, np.int64),
        ruined=ruin_bar is not None,
        ruin_bar=ruin_bar,
    )


def _policy(name: str, folds: list[Any], stress: dict[str, tuple[Any, ...]]) -> Any:
    from raytrade.envs.evaluation.harness import PolicyResult, pool
    from raytrade.envs.evaluation.policies import PolicySpec

    spec = PolicySpec(name=name, kind="registry", make=lambda data, seed: None, manifest="m.json")
    main = pool(folds)
    return PolicyResult(spec, (0,), main, tuple(folds), {0: main}, stress)


def test_the_selection_is_each_folds_choice_on_that_folds_test_window_with_the_winners_stress() -> None:
    from raytrade.cluster.experiment import selection_result

    rng = np.random.default_rng(3)
    a = [_run(_per_bar(rng, 20, 0.001, 0.01)) for _ in range(3)]
    b = [_run(_per_bar(rng, 20, -0.001, 0.01)) for _ in range(3)]
    stress_b = {"crash": (_run(_per_bar(rng, 5, 0.0, 0.01)),)}
    policies = {"a": _policy("a", a, {}), "b": _policy("b", b, stress_b)}
    selected = selection_result(policies, ["b", "a", "b"])
    np.testing.assert_array_equal(
        selected.main.returns, np.concatenate([b[0].returns, a[1].returns, b[2].returns])
    )
    assert selected.folds == (b[0], a[1], b[2])
    assert selected.stress_draws == stress_b and selected.spec.name == SELECTED
    assert selected.spec.manifest is None and not selected.ruined
    # a ruined fold ruins the chained account, as the harness pools any policy's folds
    ruined = [_run(_per_bar(rng, 20, 0.0, 0.01), ruin_bar=4) for _ in range(3)]
    policies["c"] = _policy("c", ruined, {})
    chained = selection_result(policies, ["a", "c", "a"])
    assert chained.main.ruined and chained.main.ruin_bar == 24
    assert np.all(chained.main.returns[25:] == 0.0)
    with pytest.raises(ValueError, match="2 folds chosen"):
        selection_result(policies, ["a", "b"])


def _score(estimate: float) -> ScoreDoc:
    return ScoreDoc(
        objective=Interval(estimate=estimate, low=estimate - 1, high=estimate + 1),
        objective_by_fold=(estimate,),
        excess_return=0.0,
        total_return=0.0,
        sharpe=0.0,
        max_drawdown=0.0,
        turnover=0.0,
        costs_paid=0.0,
        stress_total_return={},
    )


def _document(
    runner_up_gap: Interval, family_seconds: dict[str, float], evaluation: float
) -> ExperimentDocument:
    """A two-variant, one-fold document: fold 0 chose ppo-base, gnn-base trails it by ``runner_up_gap``."""

    def variant(name: str) -> VariantResult:
        spec, features = name.split("-")
        return VariantResult(
            name=name,
            spec=spec,
            features=features,
            selected=(),
            validation_objective=0.5,
            wall_seconds=1.0,
            test=_score(0.0),
        )

    zero = Interval(estimate=0.0, low=0.0, high=0.0)
    window = Window(start="2026-01-02", end="2026-01-30", n_bars=20)
    selection = FoldSelection(
        fold=0,
        chosen="ppo-base",
        candidates=(
            Candidate(name="ppo-base", objective=Interval(estimate=0.5, low=-0.2, high=1.1), vs_chosen=zero),
            Candidate(
                name="gnn-base", objective=Interval(estimate=0.2, low=-0.5, high=0.9), vs_chosen=runner_up_gap
            ),
        ),
    )
    return ExperimentDocument(
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        replay="STORE",
        data_sha256="0" * 64,
        budget="small",
        command="raytrade experiment",
        cvar_penalty=1.0,
        embargo_bars=5,
        periods_per_year=252,
        folds=(
            FoldWindows(
                index=0,
                train=window,
                validation=window,
                test=window,
                train_fraction=0.5,
                validation_fraction=0.1,
            ),
        ),
        selection_rule="rule",
        selections=(selection,),
        selected=_score(0.0),
        variants=(variant("ppo-base"), variant("gnn-base")),
        baselines=(),
        verdict=Verdict(
            winner="ppo-base",
            vs_equal_weight=zero,
            vs_kelly_lite=zero,
            beats_equal_weight=False,
            beats_kelly_lite=False,
        ),
        scenarios=(),
        refused_scenarios={},
        evaluation_report="evaluation/report.json",
        wall_seconds_by_family=family_seconds,
        evaluation_seconds=evaluation,
        wall_seconds=10.0,
        target_minutes=45.0,
        load_average_start=(9.04, 5.0, 3.0),
        load_average_end=(17.3, 9.1, 3.9),
        cpu_count=2,
    )


def test_report_says_whether_validation_tells_the_winner_from_the_runner_up() -> None:
    close = _document(Interval(estimate=-0.3, low=-0.9, high=0.2), {"ppo": 1.0}, 1.0)
    apart = _document(Interval(estimate=-0.3, low=-0.9, high=-0.05), {"ppo": 1.0}, 1.0)
    assert selection_lines(close) == [
        "- Fold 0: ppo-base scores 0.50 [-0.20, 1.10] against equal_weight; the runner-up gnn-base trails "
        "it by -0.30 [-0.90, 0.20] (paired): the validation window cannot tell them apart.",
    ]
    assert selection_lines(apart)[0].endswith("the validation window tells them apart.")


@pytest.mark.parametrize(("gross", "flagged"), [(0.01, True), (0.05, False), (None, False)])
def test_a_fold_choice_that_holds_cash_on_its_validation_window_is_said_to(
    gross: float | None, flagged: bool
) -> None:
    """A chosen checkpoint of mean gross exposure below tune_specs.selection.CASH_GROSS_EXPOSURE scores
    what cash scores: the report says so under the fold's choice (not at the threshold, nor unmeasured)."""
    doc = _document(Interval(estimate=-0.3, low=-0.9, high=0.2), {"ppo": 1.0}, 1.0)
    chosen = Selected(
        fold=0,
        run_dir="runs/ppo-base-fold0",
        trial="t0",
        checkpoint="checkpoint_000002",
        iteration=2,
        validation_objective=0.5,
        validation_excess_return=0.0,
        validation_gross_exposure=gross,
        tune_seconds=1.0,
    )
    ppo = doc.variants[0].model_copy(update={"selected": (chosen,)})
    doc = doc.model_copy(update={"variants": (ppo, *doc.variants[1:])})
    cash = "- Fold 0 (validation window): ppo-base holds cash: mean gross exposure 0.01; its score is cash's."
    assert selection_lines(doc)[1:] == ([cash] if flagged else [])
    assert (cash in verdict_lines(doc)) is flagged


def test_the_report_makes_its_claim_on_the_selection_and_names_the_last_folds_choice() -> None:
    doc = _document(Interval(estimate=-0.3, low=-0.9, high=0.2), {"ppo": 1.0}, 1.0)
    lines = verdict_lines(doc)
    assert lines[0].startswith("- Chosen per fold on that fold's own validation window only (rule: rule): ")
    assert lines[0].endswith(
        "fold 0 **ppo-base**. The winner (the variant this experiment names) is the "
        "last fold's choice: **ppo-base**."
    )
    assert any(x.startswith("- Out of sample, the walk-forward selection (each fold's choice") for x in lines)
    md = render_markdown(doc, [])
    assert f"The claim is the row `{SELECTED}`" in md
    assert "| selected | 0.00 [-1.00, 1.00] |" in md  # first row of the test table
    assert md.index("| selected |") < md.index("| ppo-base | 0.00")
    assert "| ppo-base | **0.50 (it" not in md  # no selected checkpoints in this document: no cells
    with pytest.raises(ValueError, match="is not the last fold's choice"):
        ExperimentDocument.model_validate(
            {**doc.model_dump(by_alias=True), "verdict": {**doc.verdict.model_dump(), "winner": "gnn-base"}}
        )
    with pytest.raises(ValueError, match="needs selected and one selection per fold"):
        ExperimentDocument.model_validate({**doc.model_dump(by_alias=True), "selected": None})


def test_a_document_of_the_pooled_rule_still_reads_and_says_its_choice_saw_its_test_bars() -> None:
    old = read_experiment(
        Path(__file__).parents[1] / "results" / "experiment-shared-daily-tilt-band-all.json"
    )
    assert old.experiment_schema == "raytrade.experiment/1" and not old.nested
    lines = verdict_lines(old)
    assert lines[0].startswith("- **Written before nested selection** (raytrade.experiment/1)")
    assert lines[1] == f"- Winner on validation: **{old.verdict.winner}** (rule: {old.selection_rule})."
    assert "The claim is the row" not in render_markdown(old, [])


@pytest.mark.parametrize(
    "name",
    [
        "experiment-shared-daily",
        "experiment-shared-daily-1205",
        "experiment-shared-daily-cash0.04",
        "experiment-shared-daily-spread5",
        "experiment-shared-daily-spread5-seed1",
        "experiment-shared-daily-spread5-seed2",
        "experiment-shared-daily-spread5-medium-ppo",
        "experiment-shared-daily-spread5-medium-tiltband",
    ],
)
def test_the_published_real_data_experiment_is_a_nested_selection_document(name: str) -> None:
    """results/experiment-shared-daily.json (the README's headline) was re-evaluated with the nested rule;
    its 2026-12-05 reruns at 0 % and 4 % cash and at a stated 5 bps spread (the README's tables) are
    nested documents of one command but the rate (the spread is the store's)."""
    doc = read_experiment(Path(__file__).parents[1] / "results" / f"{name}.json")
    assert doc.experiment_schema == "raytrade.experiment/2" and doc.nested
    assert "The claim is the row" in render_markdown(doc, [])
    assert ("--cash-rate 0.04" in doc.command) == name.endswith("cash0.04")


def test_the_report_says_where_the_spreads_on_unquoted_bars_came_from() -> None:
    doc = _document(Interval(estimate=-0.3, low=-0.9, high=0.2), {"ppo": 20.0}, 6.0)
    stated = doc.model_copy(update={"spread_source": "stated, 5 bps"})
    assert ". Spreads on bars without a quote: stated, 5 bps." in render_markdown(stated, [])
    assert "Spreads on bars without a quote" not in render_markdown(doc, [])  # not recorded: not said


def test_report_states_the_wall_time_against_the_budget_target_and_the_load() -> None:
    gap = Interval(estimate=-0.3, low=-0.9, high=0.2)
    on_time = wall_lines(_document(gap, {"ppo": 2000.0, "gnn": 100.0}, 600.0))  # 2700 s = 45 min
    late = wall_lines(_document(gap, {"ppo": 2000.0, "gnn": 100.0}, 601.0))
    assert on_time[:3] == ["- ppo: 2000 s", "- gnn: 100 s", "- evaluation: 600 s"]
    assert on_time[3] == (
        "- searches + evaluation: 2700 s (45 min); target for `small`: 45 min on 2 idle cores: **met**"
    )
    assert late[3].endswith("**not met**")
    assert (
        on_time[5]
        == "- load average (1/5/15 min): 9.0/5.0/3.0 at the start, 17.3/9.1/3.9 at the end, on 2 cores"
    )


def test_a_symbol_without_bars_in_a_window_loads_as_never_listed(synthetic_store: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    # 78 training bars: past the 60-bar warm-up of vol_regime_code (with crypto on the equity calendar
    # since envs.step_features, no symbol has a value in a shorter window: the loader refuses it)
    data = load_market_data(synthetic_store, "train", train_fraction=0.15, validation_fraction=0.1)
    never = ~data.listed.any(axis=0)
    assert never.any()
    assert np.all(data.open[:, never] == 1.0) and np.all(data.close[:, never] == 1.0)


def test_a_window_shorter_than_a_features_warm_up_is_refused_naming_it(synthetic_store: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    with pytest.raises(
        ValueError, match=r"'vol_regime_code' has no values .*52 bars: shorter than the feature's warm"
    ):
        load_market_data(synthetic_store, "train", train_fraction=0.1, validation_fraction=0.1)


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


# ------------------------------------------------------------------------------ the verdict (pure)

N_TEST = 756  # three yearly test folds pooled
_RNG = np.random.default_rng(7)


def _standard(n: int) -> np.ndarray:
    """``n`` normal draws shifted and scaled to sample mean 0 and standard deviation 1 exactly."""
    z = _RNG.standard_normal(n)
    return (z - z.mean()) / z.std(ddof=1)


EW = 1e-3 + 0.01 * _standard(N_TEST)  # equal_weight: annualised Sharpe 1.59 exactly
SKILL = EW + 4e-4 + 2e-3 * _standard(N_TEST)  # 4 bps a bar of alpha on top of equal_weight
KELLY = 0.3 * EW  # kelly_lite: mostly cash
INDICES = stationary_indices(N_TEST, 300, 10.0, np.random.default_rng(0))
FINANCING = 0.05 / 252  # 5 %/yr on the borrowed book, per bar, per unit borrowed


def _judge(winner: np.ndarray, ruined: bool = False) -> Verdict:
    returns = {"w": winner, "kelly_lite": KELLY, "equal_weight": EW}
    return judge("w", returns, 252, 1.0, INDICES, 0.95, ruined=ruined)


@pytest.mark.parametrize(
    ("leverage", "financing"), [(1.001, 0.0), (1.001, 0.001 * FINANCING), (2.0, 0.0), (2.0, FINANCING)]
)
def test_levered_equal_weight_beats_neither_baseline(leverage: float, financing: float) -> None:
    verdict = _judge(leverage * EW - financing)
    # the objective alone (the rule before) would say it beats both: leverage scores as skill
    assert verdict.vs_equal_weight.low is not None and verdict.vs_equal_weight.low > 0
    assert verdict.vs_kelly_lite.low is not None and verdict.vs_kelly_lite.low > 0
    assert verdict.sharpe_vs_equal_weight is not None and verdict.sharpe_vs_kelly_lite is not None
    assert verdict.sharpe_vs_equal_weight.estimate == pytest.approx(
        -financing / (leverage * EW.std(ddof=1)) * math.sqrt(252), abs=1e-9
    )
    assert not verdict.beats_equal_weight and not verdict.beats_kelly_lite


def test_the_verdicts_sharpe_differences_are_over_the_cash_rate() -> None:
    """kelly_lite 30 % in equal_weight, 70 % in cash earning 5 %/yr: over 0 the yield makes its
    Sharpe ratio the higher; over the rate the two are the same, so a copy of equal_weight ties it."""
    rf = np.full(N_TEST, 0.05 / 252)
    ew = EW + rf
    kelly = 0.3 * ew + 0.7 * rf
    returns = {"w": ew, "kelly_lite": kelly, "equal_weight": ew}
    naive = judge("w", returns, 252, 1.0, INDICES, 0.95, ruined=False)
    over = judge("w", returns, 252, 1.0, INDICES, 0.95, ruined=False, risk_free=rf)
    assert naive.sharpe_vs_kelly_lite is not None and over.sharpe_vs_kelly_lite is not None
    assert naive.sharpe_vs_kelly_lite.estimate is not None and naive.sharpe_vs_kelly_lite.estimate < -0.5
    assert over.sharpe_vs_kelly_lite.estimate == pytest.approx(0.0, abs=1e-9)


def test_a_policy_with_a_higher_sharpe_and_a_positive_information_ratio_beats_both() -> None:
    verdict = _judge(SKILL)
    assert verdict.sharpe_vs_equal_weight is not None and verdict.sharpe_vs_equal_weight.low is not None
    assert verdict.sharpe_vs_equal_weight.low > 0 and verdict.vs_equal_weight.low is not None
    assert verdict.beats_equal_weight and verdict.beats_kelly_lite and not verdict.winner_ruined


def test_the_verdict_intervals_are_the_test_scores_on_the_same_indices() -> None:
    from raytrade.cluster.experiment_report import interval, objective_samples
    from raytrade.envs.evaluation.stats import difference_ci

    verdict = _judge(SKILL)
    excess = SKILL - EW
    assert verdict.vs_equal_weight == interval(
        score_of(excess, 252, 1.0), objective_samples(excess, 252, 1.0, INDICES), 0.95
    )
    sharpe = difference_ci(SKILL, EW, 252, "sharpe", INDICES, 0.95)
    assert verdict.sharpe_vs_equal_weight == Interval(
        estimate=sharpe.estimate, low=sharpe.low, high=sharpe.high
    )


def test_the_test_score_counts_ruined_folds_and_stress_draws() -> None:
    from types import SimpleNamespace

    from raytrade.cluster.experiment import _test_score

    def run(ruined: bool) -> SimpleNamespace:
        return SimpleNamespace(returns=SKILL[:252], ruined=ruined)

    result = SimpleNamespace(
        main=SimpleNamespace(returns=SKILL),
        folds=(run(False), run(True), run(False)),
        stress_draws={"crash": (run(True), run(False)), "chop": (run(True), run(True), run(False))},
    )
    metrics = SimpleNamespace(total_return=0.1, sharpe=1.0, max_drawdown=-0.2, turnover=0.01, costs_paid=5.0)
    report = SimpleNamespace(metrics=metrics, stress={})
    folds = [(SKILL[k : k + 252], EW[k : k + 252]) for k in (0, 252, 504)]
    score = _test_score(result, EW, folds, report, 252, 1.0, INDICES, 0.95)
    assert (score.ruined_folds, score.ruined_stress_draws, score.stress_draws) == (1, 3, 5)
    assert score.ruined


def test_a_ruined_selection_beats_nothing_and_the_documents_say_so() -> None:
    verdict = _judge(SKILL, ruined=True)
    assert verdict.winner_ruined and not verdict.beats_equal_weight and not verdict.beats_kelly_lite
    gap = Interval(estimate=-0.3, low=-0.9, high=0.2)
    doc = _document(gap, {"ppo": 1.0}, 1.0)
    ruined = _score(0.0).model_copy(update={"ruined_folds": 1, "ruined_stress_draws": 2, "stress_draws": 20})
    doc = doc.model_copy(
        update={"selected": ruined, "verdict": verdict.model_copy(update={"winner": "ppo-base"})}
    )
    lines = verdict_lines(doc)
    assert (
        "- **The walk-forward selection was ruined** (1 folds, 2/20 stress draws): it beats nothing." in lines
    )
    assert any(line.endswith("it does not beat equal_weight.") for line in lines)
    md = render_markdown(doc, [])
    assert "| selected | 0.00 [-1.00, 1.00] | 0.00 |" in md and "| **1 folds, 2/20 stress draws** |" in md
    assert md.count("| none |") == 2  # ppo-base and gnn-base, never ruined


# ------------------------------------------------------------------------------ undefined figures


CONSTANT = EW + 2e-4  # equal_weight plus a fixed 2 bps a bar: the excess is constant, its ratio undefined


def test_an_undefined_objective_is_none_never_the_search_sentinel() -> None:
    from raytrade.cluster.experiment_report import interval, objective_of, objective_samples

    assert score_of(CONSTANT - EW, 252, 1.0) == UNDEFINED_SCORE  # how a search ranks it
    assert objective_of(CONSTANT - EW, 252, 1.0) is None  # how a document reports it
    assert objective_of(EW - EW, 252, 1.0) == 0.0
    samples = objective_samples(CONSTANT - EW, 252, 1.0, INDICES)
    assert np.isnan(samples).all()  # every resampled path undefined: dropped, not -10
    assert interval(None, samples, 0.95) == Interval(estimate=None, low=None, high=None)
    verdict = _judge(CONSTANT)
    assert verdict.vs_equal_weight == Interval(estimate=None, low=None, high=None)
    assert verdict.vs_kelly_lite == Interval(estimate=None, low=None, high=None)
    assert not verdict.beats_equal_weight and not verdict.beats_kelly_lite
    doc = _document(Interval(estimate=-0.3, low=-0.9, high=0.2), {"ppo": 1.0}, 1.0)
    doc = doc.model_copy(update={"verdict": verdict.model_copy(update={"winner": "ppo-base"})})
    line = next(x for x in verdict_lines(doc) if x.startswith("- Out of sample"))
    assert "scores n/a [n/a, n/a] against equal_weight" in line
    assert "-10" not in "\n".join(verdict_lines(doc))


def test_an_undefined_fold_is_none_in_the_test_score() -> None:
    from types import SimpleNamespace

    from raytrade.cluster.experiment import _test_score

    returns = np.concatenate([SKILL[:252], CONSTANT[252:504], SKILL[504:]])
    result = SimpleNamespace(main=SimpleNamespace(returns=returns), folds=(), stress_draws={})
    metrics = SimpleNamespace(total_return=0.1, sharpe=1.0, max_drawdown=-0.2, turnover=0.01, costs_paid=5.0)
    report = SimpleNamespace(metrics=metrics, stress={})
    folds = [(returns[k : k + 252], EW[k : k + 252]) for k in (0, 252, 504)]
    score = _test_score(result, EW, folds, report, 252, 1.0, INDICES, 0.95)
    assert score.objective_by_fold[1] is None
    assert score.objective_by_fold[0] is not None and score.objective_by_fold[2] is not None
    assert score.objective.estimate is not None  # the pooled excess does vary


def test_an_undefined_validation_objective_is_none_in_the_fold_ranking_and_the_mean() -> None:
    from raytrade.cluster.experiment_report import fold_selection, mean_or_none, objective_of

    rng = np.random.default_rng(4)
    bench = _per_bar(rng, 60, 0.001, 0.01)
    flat = bench + 1e-4  # undefined: ranked last at UNDEFINED_SCORE by the rule, reported as None
    good = bench + _per_bar(rng, 60, 5e-4, 5e-3)
    (ranked,) = choose_by_fold({"flat": [flat], "good": [good]}, [bench], 252, 1.0, BOOT)
    assert [r.name for r in ranked] == ["good", "flat"] and ranked[1].objective == UNDEFINED_SCORE
    objectives = {n: objective_of(x - bench, 252, 1.0) for n, x in (("flat", flat), ("good", good))}
    sel = fold_selection(0, ranked, objectives)
    assert sel.chosen == "good"
    assert sel.candidates[1].objective == Interval(estimate=None, low=None, high=None)
    assert sel.candidates[1].vs_chosen == Interval(estimate=None, low=None, high=None)
    assert sel.candidates[0].vs_chosen == Interval(estimate=0.0, low=0.0, high=0.0)
    assert mean_or_none([0.5, None, 0.25]) is None and mean_or_none([0.5, 0.25]) == 0.375


def test_the_verdict_lines_give_the_sharpe_difference_interval() -> None:
    gap = Interval(estimate=-0.3, low=-0.9, high=0.2)
    doc = _document(gap, {"ppo": 1.0}, 1.0)
    doc = doc.model_copy(update={"verdict": _judge(1.001 * EW).model_copy(update={"winner": "ppo-base"})})
    line = next(x for x in verdict_lines(doc) if x.startswith("- Out of sample"))
    assert re.search(r"and its Sharpe ratio minus equal_weight's is -?0\.00 \[-?0\.00, -?0\.00\]:", line)
    assert line.endswith(": it does not beat equal_weight.")


def test_an_offline_family_is_refused_before_any_search_naming_the_flag_and_what_works(
    synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each fold's offline learner would encode observations with its own training window's
    normaliser, the store's experience with one: refused in one line before the first search (the
    on-policy one listed first included), nothing written."""
    from click.testing import CliRunner

    import raytrade.cluster.experiment as experiment

    monkeypatch.setattr(experiment, "run_search", lambda *_, **__: pytest.fail("a search started"))
    out = tmp_path / "out"
    args = [
        "--replay",
        str(synthetic_store),
        "--out",
        str(out),
        "--budget",
        "smoke",
        "--families",
        "ppo,bc,iql",
    ]
    result = CliRunner().invoke(experiment.experiment_command, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: --families ppo,bc,iql: offline specs (bc, iql) cannot run on walk-forward folds: each "
        "fold's learner encodes observations with its own training window's normaliser and the store's "
        "experience was encoded with one; train them with `raytrade tune --spec bc --replay STORE` at the "
        "default split, and the experiment with the on-policy families (ppo,distrl,gnn,gating)"
    )
    assert not out.exists()


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


def test_smoke_experiment_names_the_code_and_the_store_it_ran_on(
    smoke_experiment: Path, synthetic_store: Path
) -> None:
    from raytrade.models.registry import code_fingerprint
    from raytrade.replay.fingerprint import data_fingerprint

    doc = read_experiment(smoke_experiment / "experiment.json")
    assert (doc.code_sha256, doc.data_sha256) == (code_fingerprint(), data_fingerprint(synthetic_store)[0])
    assert doc.spread_source == "the high/low estimate"  # the synthetic store states none
    for run in sorted((smoke_experiment / "runs").glob("*-fold*")):
        assert (run / "raytrade_run.json").read_text().count(code_fingerprint()) == 1, run.name


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


def test_smoke_experiment_chooses_per_fold_and_judges_the_selection(smoke_experiment: Path) -> None:
    doc = read_experiment(smoke_experiment / "experiment.json")
    assert doc.experiment_schema == "raytrade.experiment/2" and doc.selected is not None
    assert [s.fold for s in doc.selections] == [f.index for f in doc.folds]
    assert doc.verdict.winner == doc.selections[-1].chosen
    for sel in doc.selections:
        assert sel.chosen == sel.candidates[0].name
        estimates = [c.objective.estimate for c in sel.candidates]
        assert estimates[0] is not None
        assert all(e is None or e <= estimates[0] for e in estimates)
    for v in doc.variants:
        assert [s.fold for s in v.selected] == [f.index for f in doc.folds]
    scores = doc.policy_scores()
    assert next(iter(scores)) == SELECTED
    # one variant in the smoke run: every fold chose it, so the selection is its own test series
    assert scores[SELECTED].objective == scores["ppo-base"].objective
    assert doc.verdict.vs_equal_weight == scores[SELECTED].objective
    kelly = scores["kelly_lite"].objective.estimate
    selected = scores[SELECTED].objective.estimate
    assert selected is not None and kelly is not None
    assert doc.verdict.vs_kelly_lite.estimate == pytest.approx(selected - kelly)
    sharpe = doc.verdict.sharpe_vs_kelly_lite
    assert sharpe is not None
    assert doc.verdict.beats_kelly_lite == (
        (doc.verdict.vs_kelly_lite.low or 0.0) > 0 and (sharpe.low or 0.0) > 0 and not scores[SELECTED].ruined
    )
    report = (smoke_experiment / "evaluation" / "report.json").read_text()
    assert f'"{SELECTED}"' in report  # the evaluation report holds the selection as a policy


def _without_searching(
    smoke_experiment: Path, synthetic_store: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ExperimentOptions, list[FoldPlan], int]:
    """The smoke experiment's ppo-base options, folds and bars per year, with any new search made
    to fail: what follows must reuse the session's finished searches."""
    import raytrade.cluster.tune as tune
    from raytrade.cluster.experiment import _calendar

    def no_search(opts: object) -> None:
        raise AssertionError("searched again")

    monkeypatch.setattr(tune, "run_tune", no_search)
    opts = ExperimentOptions(
        replay=synthetic_store, out=smoke_experiment, budget="smoke", families=("ppo",), features=("base",)
    )
    calendar, ppy = _calendar(synthetic_store)
    folds, _ = plan_folds(calendar, opts.plan_budget(), ppy)
    return opts, folds, ppy


def test_a_finished_search_of_the_same_command_is_reused(
    smoke_experiment: Path, synthetic_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster.experiment import experiment_store_state, run_search

    opts, folds, _ = _without_searching(smoke_experiment, synthetic_store, monkeypatch)
    store = experiment_store_state(opts, opts.plan_budget())
    again = run_search(opts, opts.plan_budget(), "ppo", "base", folds[1], store)
    first = read_experiment(smoke_experiment / "experiment.json").variants[0].selected[1]
    assert again.selected.model_dump(exclude={"tune_seconds"}) == first.model_dump(exclude={"tune_seconds"})
    assert again.selected.tune_seconds > 0


def test_smoke_experiment_selection_replays_each_model_to_its_recorded_validation_objective(
    smoke_experiment: Path, synthetic_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster.experiment import experiment_store_state, run_search, validation_returns

    opts, folds, ppy = _without_searching(smoke_experiment, synthetic_store, monkeypatch)
    store = experiment_store_state(opts, opts.plan_budget())
    results = [run_search(opts, opts.plan_budget(), "ppo", "base", f, store) for f in folds]
    bench, returns = validation_returns({"ppo-base": results}, synthetic_store)
    for k, result in enumerate(results):
        replayed = score_of(returns["ppo-base"][k] - bench[k], ppy, 1.0)
        assert replayed == pytest.approx(result.selected.validation_objective, abs=1e-9)
    doc = read_experiment(smoke_experiment / "experiment.json")
    for k, sel in enumerate(doc.selections):
        fold_objective = score_of(returns["ppo-base"][k] - bench[k], ppy, 1.0)
        assert sel.candidates[0].objective.estimate == pytest.approx(fold_objective)


@pytest.mark.parametrize("mode", ["tilt:inverse_vol", "tilt:equal_weight"])
def test_a_flat_gate_in_a_tilt_mode_evaluates_as_its_baseline(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raytrade.models.inference as inference
    from raytrade.envs.config import GatedEnvConfig, SimulatorConfig
    from raytrade.envs.evaluation.policies import baseline_spec
    from raytrade.envs.rollout import replay_policy
    from raytrade.envs.synthetic_market import synthetic_market_data

    data = synthetic_market_data(n_assets=4, n_steps=60, seed=0)
    monkeypatch.setattr(inference, "gate_actions", lambda module, obs: np.zeros((1, 12), np.int64))
    cfg = GatedEnvConfig.model_validate({"action": {"mode": mode}})
    sim = SimulatorConfig(episode_len=59)
    flat = replay_policy(data, inference.gated_weights_policy(None, data, cfg), sim)
    baseline = replay_policy(data, baseline_spec(mode.removeprefix("tilt:")).make(data, 0), sim)
    assert np.abs(baseline.weights).sum() > 1.0  # the baseline does invest
    np.testing.assert_allclose(flat.returns, baseline.returns, rtol=0, atol=1e-12)


def test_a_gated_model_is_evaluated_with_the_gate_it_trained_with(synthetic_store: Path) -> None:
    from dataclasses import replace

    from raytrade.cluster.experiment import evaluation_columns
    from raytrade.envs.config import GatedEnvConfig
    from raytrade.envs.gate import contract_gate
    from raytrade.envs.market_data import MarketData
    from raytrade.envs.replay_loader import FEATURE_GROUPS, load_market_data

    cfg = GatedEnvConfig.model_validate({"feature_columns": list(FEATURE_GROUPS["base"])})
    trained = load_market_data(synthetic_store, "train")  # the loader's default columns, as in training

    def restricted(columns: tuple[str, ...]) -> MarketData:
        idx = [trained.feature_names.index(c) for c in columns]
        missing = None if trained.feature_missing is None else trained.feature_missing[..., idx]
        return replace(
            trained, features=trained.features[..., idx], feature_names=columns, feature_missing=missing
        )

    columns = evaluation_columns(cfg, gated=True)
    assert columns == (*FEATURE_GROUPS["base"], "fc_gate_open")
    gate, evaluated = contract_gate(trained, cfg), contract_gate(restricted(columns), cfg)
    assert gate.open.any()
    np.testing.assert_array_equal(evaluated.open, gate.open)
    np.testing.assert_array_equal(evaluated.kelly, gate.kelly)
    replica = contract_gate(restricted(FEATURE_GROUPS["base"]), cfg)
    assert (replica.open != gate.open).any()  # without the store's flag, another gate


def test_the_walk_forward_policy_brings_its_tilt_baselines_inputs_and_lookback() -> None:
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.kelly_lite import KELLY_FEATURES
    from raytrade.envs.evaluation.policies import registry_spec

    cfg = PortfolioEnvConfig.model_validate(
        {"feature_columns": ["ret_1", "vol_20"], "action": {"mode": "tilt:kelly_lite"}}
    )
    model = FoldModel(np.datetime64("2024-01-02", "ns"), module=None, env_config=cfg, gated=False)
    handle = WalkForwardPolicy("ppo-base", ("ret_1", "vol_20"), (model,))
    spec = registry_spec("ppo-base", Path("unused"), lambda ref, registry: handle)
    assert spec.feature_columns == ("ret_1", "vol_20", *KELLY_FEATURES)
    assert spec.lookback_bars == 7  # kelly_lite's sigma needs 7 closes


def test_a_spread_fraction_reaches_every_search_the_evaluation_and_the_folders(tmp_path: Path) -> None:
    from raytrade.envs.costs import CostConfig

    opts = ExperimentOptions(replay=tmp_path, out=tmp_path, budget="small", spread_fraction=0.0)
    assert opts.costs() == CostConfig(spread_fraction=0.0)
    assert ExperimentOptions(replay=tmp_path, out=tmp_path).costs() == CostConfig()
    assert opts.action_suffix() == "-spread0"  # its searches never mix with the default costs' folders
    assert "--spread-fraction 0.0" in opts.command()
    with pytest.raises(ValueError, match="spread_fraction"):
        ExperimentOptions(replay=tmp_path, out=tmp_path, spread_fraction=2.0)


def test_a_run_of_fewer_variants_than_its_budget_claims_no_wall_time_target(tmp_path: Path) -> None:
    def planned(**chosen: Any) -> float | None:
        return (
            ExperimentOptions(replay=tmp_path, out=tmp_path, budget="small", **chosen)
            .plan_budget()
            .target_minutes
        )

    assert planned() == 45.0
    assert planned(families=("ppo", "distrl", "gnn", "gating", "tqc")) == 45.0  # more work than the budget's
    assert planned(features=("base",)) is None  # half the variants: its time says nothing of the target
    assert planned(families=("ppo",)) is None
    assert planned(families=("ppo", "tqc")) is None


def test_the_selection_is_a_policy_of_the_evaluation_report_with_its_chosen_runs(
    synthetic_store: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from raytrade.cluster.experiment import _calendar, selection_result
    from raytrade.envs.evaluation.harness import EvaluationConfig, evaluate, prepare
    from raytrade.envs.evaluation.render import write_report

    calendar, ppy = _calendar(synthetic_store)
    folds, min_train = plan_folds(calendar, BUDGETS["smoke"], ppy)
    cfg = EvaluationConfig(
        split="test",
        walk_forward=len(folds),
        min_train_fraction=min_train / len(calendar),
        train_fraction=folds[-1].train_fraction,
        validation_fraction=folds[-1].validation_fraction,
        seeds=(0,),
        scenarios=(),
        bootstrap=BootstrapConfig(samples=50, seed=0),
    )
    result = evaluate(prepare(synthetic_store, list(BASELINES), cfg))
    chosen = ["inverse_vol", "buy_and_hold"]  # baselines standing in for the variants each fold chose
    result = replace(
        result, policies={SELECTED: selection_result(result.policies, chosen), **result.policies}
    )
    _, report = write_report(result, tmp_path / "evaluation", plots=False)
    selected = report.policies[SELECTED]
    for k, name in enumerate(chosen):
        assert selected.folds[k].metrics == report.policies[name].folds[k].metrics
        assert selected.folds[k].test == report.policies[name].folds[k].test
    pooled = np.concatenate([result.policies[n].folds[k].returns for k, n in enumerate(chosen)])
    np.testing.assert_array_equal(np.asarray(selected.returns, dtype=np.float64), pooled)


def test_the_plots_of_a_nested_document_draw_the_selection(tmp_path: Path) -> None:
    from raytrade.cluster.experiment_report import write_plots

    doc = _document(Interval(estimate=-0.3, low=-0.9, high=0.2), {"ppo": 1.0}, 1.0)
    doc = doc.model_copy(
        update={"variants": (doc.variants[0].model_copy(update={"validation_objective": None}),)}
    )
    ts = np.arange(20).astype("datetime64[D]")
    series = {
        name: [(ts, _per_bar(np.random.default_rng(5), 20, 0.0, 0.01))] for name in (SELECTED, "ppo-base")
    }
    paths = write_plots(doc, series, tmp_path)
    assert [p.stem for p in paths] == ["equity_by_fold", "drawdown_by_fold", "scores", "ablation"]
    assert all(p.stat().st_size > 0 for p in paths)


def _crafted_model(run: Path) -> tuple[dict[str, Any], Any]:
    """(env config, an untrained ppo_mlp module for it, seeded) of a crafted run's trial t0."""
    import torch

    from raytrade.envs.gym_envs import PortfolioEnv
    from raytrade.models.catalog import rl_module_spec

    env_config: dict[str, Any] = json.loads((run / "t0" / "params.json").read_text())["env_config"]
    torch.manual_seed(0)
    env = PortfolioEnv(env_config)
    spec = rl_module_spec("ppo_mlp")
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    return env_config, spec.build()


def test_validation_returns_replays_with_the_book_closed_as_the_score_is_recorded(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """A fold's series is the selected model's replay with its book closed at the validation
    window's end, the benchmark's too, so it scores exactly what the search records for it."""
    from types import SimpleNamespace

    from raytrade.cluster.experiment import validation_returns
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.evaluation.policies import equal_weight_policy
    from raytrade.envs.rollout import replay_policy
    from raytrade.models.inference import module_policy
    from raytrade.replay.fingerprint import data_fingerprint
    from raytrade.tune_specs.objective import ObjectiveConfig, held_out_data, score_module
    from tests.test_select import _crafted_run

    run = _crafted_run(tmp_path / "run", synthetic_store, data_fingerprint(synthetic_store)[0])
    env_config, module = _crafted_model(run)
    result = SimpleNamespace(selected=SimpleNamespace(run_dir=str(run)), model=SimpleNamespace(module=module))
    bench, returns = validation_returns({"ppo-base": [result]}, synthetic_store)  # type: ignore[list-item]

    data, cfg = held_out_data(env_config), env_config_from_dict(env_config)
    closed = replay_policy(data, module_policy(module, data, cfg), cfg.sim, close_at_end=True)
    assert closed.exit_bps[0] > 0.0  # the model ends the window holding a book
    np.testing.assert_array_equal(returns["ppo-base"][0], closed.returns[0])
    closed_bench = replay_policy(data, equal_weight_policy(data, seed=0), cfg.sim, close_at_end=True)
    np.testing.assert_array_equal(bench[0], closed_bench.returns[0])
    recorded = score_module(module, env_config, ObjectiveConfig())["objective"]
    assert score_of(returns["ppo-base"][0] - bench[0], data.periods_per_year, 1.0) == recorded
