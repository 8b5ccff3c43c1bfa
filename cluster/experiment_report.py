"""``raytrade experiment``'s documents: ``experiment.json`` (typed), ``experiment.md``, its plots, and
the dated section appended to ``marketsimulatorresults.md``.

Contract
--------
* ``experiment.json`` is ``ExperimentDocument.model_dump_json``; ``read_experiment`` reads it back
  (a missing or mistyped field is refused by pydantic, naming its path). Undefined figures are
  ``None``; NaN / inf are refused (``allow_inf_nan=False``).
* **Nested selection** (schema ``raytrade.experiment/2``). Fold ``k``'s variant is chosen on fold
  ``k``'s own validation window only (``selections[k]``; ``cluster.experiment.choose_by_fold``), and
  the claim is made on ``selected``: each fold's chosen variant on that fold's test window (which
  starts after its validation window), pooled in fold order: the figure of the selection procedure,
  what a user would have traded. ``verdict.winner``, the variant the experiment names, is the last
  fold's choice (chosen on the most recent validation window); the stress scenarios of ``selected``
  are the winner's. Each variant's own test score (``variants[i].test``) is shown for information:
  it was selected on nothing, and no claim is made on it. A ``raytrade.experiment/1`` document
  (written before this) chose one winner on every fold's validation window pooled, and those windows
  lie inside earlier folds' test windows: its verdict is on bars its choice had seen; it reads with
  ``selections`` empty and ``selected`` None, and the markdown says so.
* Every test score is computed from the pooled test-fold series of the evaluation report written
  beside it (``evaluation/report.json``, which holds ``selected`` as a policy too), against the
  ``equal_weight`` benchmark replayed on the same bars:
  ``objective = information_ratio(excess) - cvar_penalty * max(0, -cvar_5(excess))``, the Tune
  objective (``tune_specs.objective.objective_paths``), so a policy identical to the benchmark
  scores 0 and ``equal_weight`` itself scores 0. An undefined objective (a constant excess other
  than 0) is ``None`` (n/a), never ``UNDEFINED_SCORE``: the sentinel ranks a search's trials, it is
  no measured figure; a bootstrap path where it is undefined is dropped from the interval, as
  ``tune_specs.selection`` drops it, and a difference with an undefined side is undefined.
* Intervals: seeded stationary bootstrap over bars (``envs.evaluation.stats.stationary_indices``,
  the evaluation's ``BootstrapConfig``), one set of indices for every policy (paired), percentile
  bounds. ``vs_kelly_lite`` is the paired difference of objectives; ``sharpe_vs_*`` the paired
  difference of Sharpe ratios of the books' own net returns, on the same indices.
* The verdict (:func:`judge`): ``selected`` *beats* a baseline only when both its objective interval
  and its Sharpe-difference interval lie above 0 (``tune_specs.selection.beats``: the objective is
  scale-free in the excess, so leverage alone would pass it), and never when any of its test folds or
  stress draws was ruined (``TestScore.ruined_folds`` / ``ruined_stress_draws``). No Bonferroni
  adjustment: the choice of each fold was made on bars before that fold's test window.
* The markdown and plots are views of the document; nothing in them is computed elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raytrade.envs.evaluation.document import Window
from raytrade.envs.evaluation.stats import DifferenceCI
from raytrade.tune_specs.selection import (
    RankedCandidate,
    beats,
    cash_line,
    objective_paths,
    sharpe_difference,
)

EXPERIMENT_SCHEMA: Final = "raytrade.experiment/2"
OLD_SCHEMA: Final = "raytrade.experiment/1"  # one winner chosen on every fold's validation, pooled
SELECTED: Final = "selected"
"""The walk-forward selection's name among the policies: fold k's chosen variant on fold k's test."""
EXPERIMENT_JSON: Final = "experiment.json"
EXPERIMENT_MD: Final = "experiment.md"
RESULTS_LOG: Final = "marketsimulatorresults.md"
PLOT_NAMES: Final = ("equity_by_fold", "drawdown_by_fold", "scores", "ablation")

Number = float | None


class Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def num(value: float) -> Number:
    """A figure as the document stores it: None where undefined."""
    return float(value) if math.isfinite(value) else None


class FoldWindows(Doc):
    """One walk-forward fold: the search trains on ``train``, selects on ``validation``, and is
    reported on ``test``; each later than the one before, with ``embargo_bars`` bars between."""

    index: int = Field(ge=0)
    train: Window
    validation: Window
    test: Window
    train_fraction: float = Field(gt=0, lt=1, description="ReplayDataConfig.train_fraction of the search")
    validation_fraction: float = Field(gt=0, lt=1, description="ReplayDataConfig.validation_fraction")


class Selected(Doc):
    """The checkpoint a fold's search selected on its validation window."""

    fold: int = Field(ge=0)
    run_dir: str
    trial: str
    checkpoint: str
    iteration: int = Field(ge=0)
    validation_objective: Number = Field(
        description="the search's recorded objective (None: undefined, recorded as UNDEFINED_SCORE)"
    )
    validation_excess_return: Number
    validation_gross_exposure: Number
    tune_seconds: float = Field(ge=0)


class Interval(Doc):
    """A point estimate and its bootstrap interval (``low``/``high`` None when undefined)."""

    estimate: Number
    low: Number
    high: Number


class TestScore(Doc):
    """A policy on the pooled test folds (net of costs; the objective is against ``equal_weight``)."""

    objective: Interval
    objective_by_fold: tuple[Number, ...]
    excess_return: Number = Field(description="total return minus equal_weight's, pooled folds")
    total_return: Number
    sharpe: Number
    max_drawdown: Number
    turnover: Number = Field(description="mean traded notional / equity per bar")
    costs_paid: Number = Field(description="currency, pooled folds (each fold starts at fresh equity)")
    stress_total_return: dict[str, Number] = Field(description="mean over the scenario's draws")
    ruined_folds: int = Field(0, ge=0, description="test folds whose account was ruined")
    ruined_stress_draws: int = Field(0, ge=0, description="stress draws (all scenarios) ruined")
    stress_draws: int = Field(0, ge=0, description="stress draws run (all scenarios)")

    @property
    def ruined(self) -> bool:
        return self.ruined_folds > 0 or self.ruined_stress_draws > 0


class VariantResult(Doc):
    """One family observing one feature set: its per-fold selections and its own test score (for
    information: a variant's test score was selected on nothing, and no claim is made on it)."""

    name: str
    spec: str
    features: str
    selected: tuple[Selected, ...]
    validation_objective: Number = Field(
        description="mean over folds of the selected models' validation objectives (None: one undefined)"
    )
    selection: Interval | None = Field(
        None, description="schema /1 only: objective on the validation folds pooled vs equal_weight"
    )
    selection_vs_winner: Interval | None = Field(
        None, description="schema /1 only: that objective minus the winner's, paired (0 for the winner)"
    )
    wall_seconds: float = Field(ge=0)
    test: TestScore


class BaselineResult(Doc):
    name: str
    test: TestScore


class Candidate(Doc):
    """One variant on one fold's validation window, as ``rank_candidates`` ranked it (None: undefined)."""

    name: str
    objective: Interval = Field(description="objective vs equal_weight on the fold's validation window")
    vs_chosen: Interval = Field(description="objective minus the fold's chosen variant's, paired")


class FoldSelection(Doc):
    """Fold ``fold``'s choice among the variants, on its own validation window only (best first)."""

    fold: int = Field(ge=0)
    chosen: str
    candidates: tuple[Candidate, ...]


class Verdict(Doc):
    """The claim out of sample against the two references the issue names: for a schema /2 document
    on the walk-forward selection (``selected``: fold k's choice on fold k's test window, pooled), for
    a /1 document on the winner's own test folds."""

    winner: str = Field(description="the variant the experiment names: the last fold's choice (/1: pooled)")
    vs_equal_weight: Interval = Field(description="the judged series' objective (equal_weight scores 0)")
    vs_kelly_lite: Interval = Field(description="judged objective - kelly_lite objective, paired")
    sharpe_vs_equal_weight: Interval | None = Field(
        None,
        description="sharpe(judged) - sharpe(equal_weight), own net returns, paired (None: older)",
    )
    sharpe_vs_kelly_lite: Interval | None = Field(
        None,
        description="sharpe(judged) - sharpe(kelly_lite), own net returns, paired (None: older)",
    )
    winner_ruined: bool = Field(
        False, description="the judged series was ruined in a test fold or a stress draw"
    )
    beats_equal_weight: bool = Field(
        description="objective and Sharpe-difference lower bounds above 0, and the winner never ruined"
    )
    beats_kelly_lite: bool = Field(
        description="objective and Sharpe-difference lower bounds above 0, and the winner never ruined"
    )


class ExperimentDocument(Doc):
    """``experiment.json``: what ran, on which windows, what was selected and how it did."""

    experiment_schema: Literal["raytrade.experiment/1", "raytrade.experiment/2"] = Field(
        EXPERIMENT_SCHEMA, alias="schema"
    )
    created_at: datetime
    replay: str
    data_sha256: str = Field(
        description="the store's data fingerprint when the experiment started, checked unchanged before "
        "the verdict was written (cluster.experiment.check_store_unchanged; older documents: at the end)"
    )
    code_sha256: str | None = Field(
        None,
        description="models.registry.code_fingerprint of the code that ran it (None: an older document)",
    )
    budget: str
    command: str
    spread_source: str | None = Field(
        None,
        description="where the store's spreads on bars without a quote came from (replay.feature_settings."
        "spread_text: 'stated, 5 bps' or 'the high/low estimate'); None: a document from before it was "
        "recorded",
    )
    cvar_penalty: float
    embargo_bars: int
    periods_per_year: int
    folds: tuple[FoldWindows, ...]
    selection_rule: str
    selections: tuple[FoldSelection, ...] = Field(
        (), description="per fold, the choice on its own validation window (empty: schema /1)"
    )
    selected: TestScore | None = Field(
        None, description=f"{SELECTED}: fold k's chosen variant on fold k's test window (None: /1)"
    )
    variants: tuple[VariantResult, ...]
    baselines: tuple[BaselineResult, ...]
    verdict: Verdict
    scenarios: tuple[str, ...]
    refused_scenarios: dict[str, str]
    evaluation_report: str = Field(description="path of the evaluation report.json, relative to the document")
    wall_seconds_by_family: dict[str, float]
    evaluation_seconds: float
    wall_seconds: float
    target_minutes: float | None = Field(
        None, description="the budget's wall-time target (searches + evaluation) on 2 idle cores"
    )
    load_average_start: tuple[float, float, float] | None = Field(
        None, description="os.getloadavg() (1, 5, 15 min) when the command started"
    )
    load_average_end: tuple[float, float, float] | None = Field(None, description="the same at the end")
    cpu_count: int | None = Field(None, description="os.cpu_count() of the machine that ran it")

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, serialize_by_alias=True)

    @model_validator(mode="after")
    def _selection_matches_schema(self) -> ExperimentDocument:
        if self.experiment_schema == OLD_SCHEMA:
            if self.selections or self.selected is not None:
                raise ValueError(f"a {OLD_SCHEMA} document has no selections and no selected score")
            return self
        if self.selected is None or not self.selections or len(self.selections) != len(self.folds):
            raise ValueError(
                f"a {EXPERIMENT_SCHEMA} document needs selected and one selection per fold "
                f"({len(self.selections)} selections, {len(self.folds)} folds)"
            )
        if [s.fold for s in self.selections] != [f.index for f in self.folds]:
            raise ValueError("selections must follow the folds in order")
        if self.verdict.winner != self.selections[-1].chosen:
            raise ValueError(
                f"verdict.winner {self.verdict.winner!r} is not the last fold's choice "
                f"{self.selections[-1].chosen!r}"
            )
        return self

    @property
    def nested(self) -> bool:
        """Chosen per fold on its own validation window and judged on ``selected`` (schema /2)."""
        return self.selected is not None

    def policy_scores(self) -> dict[str, TestScore]:
        """Every policy's test score: the walk-forward selection first, then variants, baselines."""
        head = {} if self.selected is None else {SELECTED: self.selected}
        return {
            **head,
            **{v.name: v.test for v in self.variants},
            **{b.name: b.test for b in self.baselines},
        }

    def judged_score(self) -> TestScore | None:
        """The test score the verdict is on: ``selected`` (/1: the winner's own)."""
        return self.selected if self.selected is not None else self.policy_scores().get(self.verdict.winner)

    def budget_seconds(self) -> float:
        """What the budget's target counts: every search (a reused one counts the time it took) plus
        the evaluation."""
        return sum(self.wall_seconds_by_family.values()) + self.evaluation_seconds


def read_experiment(path: Path) -> ExperimentDocument:
    return ExperimentDocument.model_validate_json(path.read_text())


# ------------------------------------------------------------------------------ scores


def objective_of(excess: np.ndarray, ppy: float, penalty: float) -> Number:
    """The objective of one excess series, None where it is undefined (never ``UNDEFINED_SCORE``)."""
    e = np.asarray(excess, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"excess must be 1-D [bars], got shape {e.shape}")
    return num(float(objective_paths(e[None, :], ppy, penalty)[0]))


def objective_samples(excess: np.ndarray, ppy: float, penalty: float, indices: np.ndarray) -> np.ndarray:
    """The objective of ``excess`` resampled along each row of ``indices`` (``[S]``), NaN on a path
    where it is undefined (:func:`interval` drops it)."""
    e = np.asarray(excess, dtype=np.float64)
    samples: np.ndarray = objective_paths(e[np.asarray(indices)], ppy, penalty)
    return samples


def interval(point: Number, samples: np.ndarray, level: float) -> Interval:
    """``point`` (None: undefined) with the percentile interval of the finite ``samples``."""
    estimate = None if point is None else num(point)
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(estimate=estimate, low=None, high=None)
    lo, hi = np.quantile(finite, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(estimate=estimate, low=num(float(lo)), high=num(float(hi)))


def _minus(a: Number, b: Number) -> Number:
    return None if a is None or b is None else num(a - b)


def judge(
    judged: str,
    returns: Mapping[str, np.ndarray],
    ppy: float,
    penalty: float,
    indices: np.ndarray,
    level: float,
    ruined: bool,
    winner: str | None = None,
    risk_free: np.ndarray | None = None,
) -> Verdict:
    """The verdict on the pooled test returns ``returns[judged]`` (the experiment judges
    ``SELECTED``, the walk-forward selection) against ``returns["kelly_lite"]`` and
    ``returns["equal_weight"]`` (same bars), with paired intervals over ``indices``; ``ruined``: the
    judged series was ruined in a test fold or a stress draw (beats nothing); ``winner``: the
    variant the verdict names (default ``judged``); ``risk_free``: per bar, what cash earned (the Sharpe
    differences are over it; None: 0). An undefined objective is None and beats nothing."""
    w, kelly, bench = (
        np.asarray(returns[k], dtype=np.float64) for k in (judged, "kelly_lite", "equal_weight")
    )
    w_excess, k_excess = w - bench, kelly - bench
    w_samples = objective_samples(w_excess, ppy, penalty, indices)
    k_samples = objective_samples(k_excess, ppy, penalty, indices)
    w_point, k_point = objective_of(w_excess, ppy, penalty), objective_of(k_excess, ppy, penalty)
    vs_equal = interval(w_point, w_samples, level)
    vs_kelly = interval(_minus(w_point, k_point), w_samples - k_samples, level)
    sharpe_equal = ci_interval(sharpe_difference(w, bench, ppy, indices, level, risk_free))
    sharpe_kelly = ci_interval(sharpe_difference(w, kelly, ppy, indices, level, risk_free))
    return Verdict(
        winner=judged if winner is None else winner,
        vs_equal_weight=vs_equal,
        vs_kelly_lite=vs_kelly,
        sharpe_vs_equal_weight=sharpe_equal,
        sharpe_vs_kelly_lite=sharpe_kelly,
        winner_ruined=ruined,
        beats_equal_weight=not ruined and beats(vs_equal.low, sharpe_equal.low),
        beats_kelly_lite=not ruined and beats(vs_kelly.low, sharpe_kelly.low),
    )


def fold_selection(
    fold: int, ranked: Sequence[RankedCandidate], objectives: Mapping[str, Number]
) -> FoldSelection:
    """Fold ``fold``'s ranking (``rank_candidates``, best first) as the document stores it;
    ``objectives[name]``: each candidate's objective on the fold's validation window, None where
    undefined (``rank_candidates`` ranks an undefined one at ``UNDEFINED_SCORE``, a rule, not a figure)."""
    chosen = ranked[0].name

    def candidate(r: RankedCandidate) -> Candidate:
        return Candidate(
            name=r.name,
            objective=Interval(
                estimate=objectives[r.name], low=num(r.vs_benchmark.low), high=num(r.vs_benchmark.high)
            ),
            vs_chosen=Interval(
                estimate=_minus(objectives[r.name], objectives[chosen]),
                low=num(r.vs_winner.low),
                high=num(r.vs_winner.high),
            ),
        )

    return FoldSelection(fold=fold, chosen=chosen, candidates=tuple(candidate(r) for r in ranked))


def mean_or_none(values: Sequence[Number]) -> Number:
    """The mean of ``values``, None when any is None (a mean with an undefined term is undefined)."""
    if not values or any(v is None for v in values):
        return None
    return num(float(np.mean([v for v in values if v is not None])))


def ci_interval(ci: DifferenceCI) -> Interval:
    """``tune_specs.selection``'s interval as the document stores it."""
    return Interval(estimate=num(ci.estimate), low=num(ci.low), high=num(ci.high))


# ------------------------------------------------------------------------------ markdown


def _f(value: Number, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Number) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _ci(value: Interval) -> str:
    return f"{_f(value.estimate)} [{_f(value.low)}, {_f(value.high)}]"


def _window(w: Window) -> str:
    return f"{w.start[:10]} .. {w.end[:10]} ({w.n_bars})"


def verdict_lines(doc: ExperimentDocument) -> list[str]:
    """The outcome in plain words (used by experiment.md and the results log)."""
    v = doc.verdict
    if doc.nested:
        judged = "the walk-forward selection"
        lines = [
            f"- Chosen per fold on that fold's own validation window only (rule: {doc.selection_rule}): "
            + ", ".join(f"fold {s.fold} **{s.chosen}**" for s in doc.selections)
            + f". The winner (the variant this experiment names) is the last fold's choice: **{v.winner}**.",
            *selection_lines(doc),
            f"- Out of sample, {judged} (each fold's choice on that fold's test window, after its "
            f"validation window, pooled: what would have been traded) scores {_ci(v.vs_equal_weight)} "
            f"against equal_weight (95 % CI){_sharpe_clause(v.sharpe_vs_equal_weight, 'equal_weight')}: "
            f"it {'beats' if v.beats_equal_weight else 'does not beat'} equal_weight.",
        ]
    else:
        judged = "the winner"
        lines = [
            f"- **Written before nested selection** ({OLD_SCHEMA}): the winner was chosen on every "
            "fold's validation window pooled, and those windows lie inside earlier folds' test windows, "
            "so its test figures include bars its choice had seen.",
            f"- Winner on validation: **{v.winner}** (rule: {doc.selection_rule}).",
            *selection_lines(doc),
            f"- Out of sample, its objective against equal_weight is {_ci(v.vs_equal_weight)} (95 % CI)"
            f"{_sharpe_clause(v.sharpe_vs_equal_weight, 'equal_weight')}: it "
            f"{'beats' if v.beats_equal_weight else 'does not beat'} equal_weight.",
        ]
    lines += [
        f"- Its objective minus kelly_lite's is {_ci(v.vs_kelly_lite)}"
        f"{_sharpe_clause(v.sharpe_vs_kelly_lite, 'kelly_lite')}: it "
        f"{'beats' if v.beats_kelly_lite else 'does not beat'} kelly_lite.",
        "- Beating a baseline needs both intervals above 0 (leverage alone raises the objective, not "
        "the Sharpe ratio) and no ruin in any test fold or stress draw.",
    ]
    score = doc.judged_score()
    if v.winner_ruined or (score is not None and score.ruined):
        lines.append(f"- **{judged.capitalize()} was ruined**{_ruin_clause(score)}: it beats nothing.")
    if doc.nested:
        lines.append(
            "- Each variant's own test row is for information only: it was selected on nothing, and no "
            "claim is made on it."
        )
    by_family: dict[str, dict[str, VariantResult]] = {}
    for var in doc.variants:
        by_family.setdefault(var.spec, {})[var.features] = var
    for family, pair in by_family.items():
        if {"base", "enriched"} <= set(pair):
            b, e = pair["base"], pair["enriched"]
            lines.append(
                f"- Ablation {family}: validation objective base {_f(b.validation_objective)} vs enriched "
                f"{_f(e.validation_objective)}; test objective base {_f(b.test.objective.estimate)} vs "
                f"enriched {_f(e.test.objective.estimate)}."
            )
    return lines


def _sharpe_clause(value: Interval | None, baseline: str) -> str:
    return "" if value is None else f" and its Sharpe ratio minus {baseline}'s is {_ci(value)}"


def _ruins(score: TestScore) -> str:
    return f"{score.ruined_folds} folds, {score.ruined_stress_draws}/{score.stress_draws} stress draws"


def _ruin_clause(score: TestScore | None) -> str:
    return "" if score is None else f" ({_ruins(score)})"


def _or_minus_inf(value: Number) -> float:
    return -math.inf if value is None else value


def _apart(gap: Interval) -> bool:
    return gap.high is not None and gap.high < 0


def _chosen_gross_exposure(doc: ExperimentDocument, fold: int, chosen: str) -> float | None:
    """The mean gross exposure on fold ``fold``'s validation window of variant ``chosen``'s selected
    checkpoint (None when the document does not hold it)."""
    variant = next((var for var in doc.variants if var.name == chosen), None)
    selected = None if variant is None else next((s for s in variant.selected if s.fold == fold), None)
    return None if selected is None else selected.validation_gross_exposure


def selection_lines(doc: ExperimentDocument) -> list[str]:
    """Each fold's choice with its validation figures and whether that fold's validation window tells
    it from the runner-up; for a /1 document the pooled figures (none when they were not recorded)."""
    if doc.nested:
        lines = []
        for sel in doc.selections:
            best, rest = sel.candidates[0], sel.candidates[1:]
            line = f"- Fold {sel.fold}: {sel.chosen} scores {_ci(best.objective)} against equal_weight"
            if rest:
                second = rest[0]
                tell = "tells" if _apart(second.vs_chosen) else "cannot tell"
                line += (
                    f"; the runner-up {second.name} trails it by {_ci(second.vs_chosen)} (paired): "
                    f"the validation window {tell} them apart"
                )
            lines.append(line + ".")
            cash = cash_line(_chosen_gross_exposure(doc, sel.fold, sel.chosen))
            if cash is not None:  # a book of cash scores cash's objective: say so beside the choice
                lines.append(f"- Fold {sel.fold} (validation window): {sel.chosen} {cash}.")
        return lines
    winner = next((var for var in doc.variants if var.name == doc.verdict.winner), None)
    if winner is None or winner.selection is None:
        return []
    lines = [f"- On validation (folds pooled) its objective is {_ci(winner.selection)} against equal_weight."]
    gaps = {
        var.name: var.selection_vs_winner
        for var in doc.variants
        if var is not winner and var.selection_vs_winner is not None
    }
    if gaps:
        runner_up = max(gaps, key=lambda name: _or_minus_inf(gaps[name].estimate))
        gap = gaps[runner_up]
        lines.append(
            f"- The runner-up {runner_up} trails it by {_ci(gap)} (paired): the validation windows "
            f"{'tell them apart' if _apart(gap) else 'cannot tell them apart'}."
        )
    return lines


def wall_lines(doc: ExperimentDocument) -> list[str]:
    """Per family, the evaluation, the total against the budget's target, and the machine's load."""
    lines = [f"- {family}: {sec:.0f} s" for family, sec in doc.wall_seconds_by_family.items()]
    lines += [f"- evaluation: {doc.evaluation_seconds:.0f} s"]
    total = doc.budget_seconds()
    line = f"- searches + evaluation: {total:.0f} s ({total / 60:.0f} min)"
    if doc.target_minutes is not None:
        met = "met" if total <= 60 * doc.target_minutes else "not met"
        line += f"; target for `{doc.budget}`: {doc.target_minutes:g} min on 2 idle cores: **{met}**"
    lines += [line, f"- this invocation: {doc.wall_seconds:.0f} s (reused searches take none)"]
    if doc.load_average_start is not None and doc.load_average_end is not None:
        start, end = (
            "/".join(f"{x:.1f}" for x in la) for la in (doc.load_average_start, doc.load_average_end)
        )
        lines.append(
            f"- load average (1/5/15 min): {start} at the start, {end} at the end, on {doc.cpu_count} cores"
        )
    return lines


def _selection_table(doc: ExperimentDocument) -> list[str]:
    """The validation objective of every variant's selected model per fold (bold: the fold's choice)."""
    folds = " | ".join(f"fold {f.index}" for f in doc.folds)
    if doc.nested:
        objective = {(s.fold, c.name): c.objective.estimate for s in doc.selections for c in s.candidates}
        chosen = {s.fold: s.chosen for s in doc.selections}
        out = [
            "## Selection (validation only; each fold chooses on its own window)",
            "",
            f"| variant | {folds} | mean | tune wall s |",
            "|---|" + "---|" * len(doc.folds) + "---|---|",
        ]
        for var in doc.variants:
            row = []
            for sel in var.selected:
                cell = f"{_f(objective.get((sel.fold, var.name)))} (it {sel.iteration})"
                row.append(f"**{cell}**" if chosen.get(sel.fold) == var.name else cell)
            out.append(
                f"| {var.name} | {' | '.join(row)} | {_f(var.validation_objective)} | "
                f"{var.wall_seconds:.0f} |"
            )
        return out
    out = [
        "## Selection (validation only)",
        "",
        f"| variant | {folds} | mean | pooled [95 % CI] | pooled - winner's [95 % CI] | tune wall s |",
        "|---|" + "---|" * len(doc.folds) + "---|---|---|---|",
    ]
    for var in doc.variants:
        cells = " | ".join(f"{_f(s.validation_objective)} (it {s.iteration})" for s in var.selected)
        pooled = "n/a" if var.selection is None else _ci(var.selection)
        gap = "n/a" if var.selection_vs_winner is None else _ci(var.selection_vs_winner)
        out.append(
            f"| {var.name} | {cells} | {_f(var.validation_objective)} | {pooled} | {gap} | "
            f"{var.wall_seconds:.0f} |"
        )
    return out


def render_markdown(doc: ExperimentDocument, plots: Sequence[str]) -> str:
    """``experiment.md``: windows, selection, test scores with intervals, ablation, stress, timings."""
    out = [
        f"# Experiment ({doc.budget}) on {doc.replay}",
        "",
        f"Run {doc.created_at:%Y-%m-%d %H:%M} UTC, data sha256 `{doc.data_sha256[:16]}`, "
        + ("" if doc.code_sha256 is None else f"code sha256 `{doc.code_sha256[:16]}`, ")
        + f"{len(doc.folds)} walk-forward folds, embargo {doc.embargo_bars} bars, "
        f"cvar_penalty {doc.cvar_penalty}. Command: `{doc.command}`"
        + ("" if doc.spread_source is None else f". Spreads on bars without a quote: {doc.spread_source}."),
        "",
        "## Outcome",
        "",
        *verdict_lines(doc),
        "",
        "## Folds",
        "",
        "| fold | train | validation (selection) | test (reported) |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {f.index} | {_window(f.train)} | {_window(f.validation)} | {_window(f.test)} |" for f in doc.folds
    ]
    out += ["", *_selection_table(doc)]
    out += [
        "",
        "## Test folds (out of sample, net of costs)",
        "",
        "Objective = information ratio of the per-bar excess over equal_weight minus cvar_penalty x "
        "the loss of its worst 5 % of bars, max(0, -CVaR 5 %) (the Tune objective); interval: 95 % "
        "stationary bootstrap; n/a: undefined (a constant excess).",
        "",
    ]
    if doc.nested:
        out += [
            f"The claim is the row `{SELECTED}`: each fold's chosen variant on that fold's test window, "
            "pooled (its stress runs are the winner's). The variants' rows are each variant's own models "
            "on every test fold, for information only: not selected on anything, no claim.",
            "",
        ]
    out += [
        "| policy | objective [95 % CI] | by fold | excess return | total return | sharpe | max DD | "
        "turnover | costs | ruined |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, score in doc.policy_scores().items():
        folds = ", ".join(_f(x) for x in score.objective_by_fold)
        ruined = f"**{_ruins(score)}**" if score.ruined else "none"
        out.append(
            f"| {name} | {_ci(score.objective)} | {folds} | {_pct(score.excess_return)} | "
            f"{_pct(score.total_return)} | {_f(score.sharpe)} | {_pct(score.max_drawdown)} | "
            f"{_f(score.turnover, 4)} | {_f(score.costs_paid, 0)} | {ruined} |"
        )
    if doc.scenarios:
        ran = [s for s in doc.scenarios if s not in doc.refused_scenarios]
        out += [
            "",
            "## Stress (last fold's test window, mean total return over draws)",
            "",
            "| policy | " + " | ".join(ran) + " |",
            "|---|" + "---|" * len(ran),
        ]
        for name, score in doc.policy_scores().items():
            out.append(
                f"| {name} | " + " | ".join(_pct(score.stress_total_return.get(s)) for s in ran) + " |"
            )
        out += [f"- refused {k}: {v}" for k, v in doc.refused_scenarios.items()]
    out += ["", "## Wall time", "", *wall_lines(doc), ""]
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    out += [f"Full evaluation report (every policy, regimes, stress draws): `{doc.evaluation_report}`", ""]
    return "\n".join(out)


def results_log_section(doc: ExperimentDocument, experiment_md: Path) -> str:
    """The dated section appended to ``marketsimulatorresults.md``."""
    lines = [
        f"## {doc.created_at:%Y-%m-%d} raytrade experiment ({doc.budget}) on {doc.replay}",
        "",
        *verdict_lines(doc),
        f"- Folds: {len(doc.folds)}; test windows "
        + ", ".join(f"{f.test.start[:10]}..{f.test.end[:10]}" for f in doc.folds)
        + f"; searches + evaluation {doc.budget_seconds():.0f} s"
        + (f" (target {doc.target_minutes:g} min)" if doc.target_minutes is not None else "")
        + f". Details: {experiment_md}",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ plots


def write_plots(
    doc: ExperimentDocument,
    fold_series: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    folder: Path,
) -> list[Path]:
    """Equity curves and drawdowns per fold (``fold_series[policy][k] = (timestamps, returns)``; the
    judged series, ``SELECTED`` or a /1 document's winner, drawn thicker), test objective with its
    interval per policy (validation objective beside it for the variants), and the base vs enriched
    ablation per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raytrade.envs.metrics import drawdown_series

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"Software": None}
    paths = {name: folder / f"{name}.png" for name in PLOT_NAMES}
    n = len(doc.folds)
    judged = SELECTED if doc.nested else doc.verdict.winner
    for stem, curve, title in (
        ("equity_by_fold", lambda r: np.cumprod(1.0 + r), "equity (start 1, net of costs)"),
        ("drawdown_by_fold", drawdown_series, "drawdown"),
    ):
        fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.4), squeeze=False)
        for k in range(n):
            ax = axes[0][k]
            for name, folds in fold_series.items():
                ts, returns = folds[k]
                ax.plot(ts, curve(returns), lw=1.4 if name == judged else 0.8, label=name)
            ax.set_title(f"fold {k} test: {title}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=5)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(paths[stem], dpi=70, metadata=meta)
        plt.close(fig)

    scores = doc.policy_scores()
    names = list(scores)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, name in enumerate(names):
        o = scores[name].objective
        if o.estimate is None:
            continue
        lo = o.estimate - (o.low if o.low is not None else o.estimate)
        hi = (o.high if o.high is not None else o.estimate) - o.estimate
        ax.errorbar(i, o.estimate, yerr=[[lo], [hi]], fmt="o", color="C0", capsize=3)
    val = {v.name: v.validation_objective for v in doc.variants if v.validation_objective is not None}
    xs = [i for i, n_ in enumerate(names) if n_ in val]
    ax.scatter(xs, [val[names[i]] for i in xs], marker="x", color="C3", label="validation, mean over folds")
    if doc.nested:
        ax.axvline(names.index(SELECTED) + 0.5, color="0.6", lw=0.6, ls=":")  # the claim | information
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=6)
    ax.set_title("test objective vs equal_weight, 95 % CI (o); validation, fold mean (x)", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(paths["scores"], dpi=70, metadata=meta)
    plt.close(fig)

    families = sorted({v.spec for v in doc.variants})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.2
    for j, (features, split) in enumerate(
        (("base", "validation"), ("enriched", "validation"), ("base", "test"), ("enriched", "test"))
    ):
        heights = []
        for family in families:
            match = [v for v in doc.variants if v.spec == family and v.features == features]
            value: Number = None
            if match:
                var = match[0]
                value = var.validation_objective if split == "validation" else var.test.objective.estimate
            heights.append(math.nan if value is None else value)
        ax.bar(np.arange(len(families)) + (j - 1.5) * width, heights, width, label=f"{features} {split}")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(range(len(families)), families, fontsize=7)
    ax.set_title("ablation: base vs enriched features (objective)", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(paths["ablation"], dpi=70, metadata=meta)
    plt.close(fig)
    return [paths[name] for name in PLOT_NAMES]
