"""``raytrade experiment``: every on-policy family, base and enriched features, on walk-forward
folds over the store's last three years, against the loop's rules and plain allocations.

Design decisions
----------------
* **Folds.** The test windows are ``replay.splits.walk_forward_folds`` over the store calendar
  after ``min_train`` bars (``plan_folds``): ``n_folds`` consecutive windows covering the last
  ``years`` years (less when the store is shorter). Fold k's validation window is the
  ``validation_bars`` bars that end one embargo before its test window, and its training window is
  everything before the validation window, less one embargo. A search (``raytrade tune``'s
  ``run_tune``, unchanged, with ``train_fraction`` / ``validation_fraction`` set to those windows)
  trains on the training window, scores every iteration on the validation window, and never loads
  the test window; the fractions are checked to give exactly those windows before any search runs.
* **On-policy families only.** An offline spec (``bc``, ``marwil``, ``cql``, ``iql``) is refused
  before any search (:func:`refuse_offline_families`): each fold's learner encodes observations
  with its own training window's normaliser, and the logged experience was encoded with one, so at
  most one fold could read it (the learner refuses other encodings); encoding an earlier fold with
  the recording's normaliser would leak its later bars' statistics into that fold's training.
* **Selection (nested walk-forward).** Per fold and variant (family x feature set), the checkpoint
  with the best validation objective (the search's leaderboard, as ``raytrade promote`` reads it).
  Across variants, fold ``k``'s choice is made on fold ``k``'s own validation window only
  (:func:`choose_by_fold`): every variant's selected model replayed on that window as its search
  scored it (:func:`validation_returns`, with ``raytrade select``'s checks), ranked by ``raytrade
  select``'s rule with its paired bootstrap intervals. No choice reads a bar of the test window it
  is judged on (:func:`check_nested`, run on the plan before any search): fold ``k``'s validation
  window ends one embargo before fold ``k``'s test window; it lies inside fold ``k-1``'s test window,
  which fold ``k-1``'s own choice, made earlier, never read. (The rule before this pooled every
  fold's validation window into one choice, so a third of the reported test bars had been used to
  choose the winner.) The *winner*, the variant the experiment names, is the last fold's choice,
  made on the most recent validation window.
* **Evaluation.** The code behind ``raytrade evaluate`` (``envs.evaluation.harness``): one plan with
  the same walk-forward test windows (``EvaluationConfig.walk_forward``), the baselines
  ``kelly_lite``, ``equal_weight``, ``inverse_vol``, ``buy_and_hold``, and one policy per variant
  whose decision on a window comes from the model selected for that window's fold
  (:class:`WalkForwardPolicy`; a window that is no fold's test window is refused, so no model is
  ever replayed on data it trained or was selected on). Stress scenarios run on the last fold's test
  window (the plan's ``test`` split is set to it) with the last fold's models. The claim is made on
  ``selected`` (:func:`selection_result`): fold ``k``'s chosen variant's run on fold ``k``'s test
  window, the folds chained as the harness chains them, with the winner's stress runs; it is added
  to the evaluation report as a policy. Each variant's own pooled test score is reported for
  information only (it was selected on nothing).
* **Gating in evaluation.** A gating module emits (mode, side) per symbol; its weights are the gated
  env's own ``gate_orders`` sizes (``models.inference.gated_weights_policy``). The evaluation
  replays every policy through one simulator and cost model, so a ``passive`` order is executed like
  an ``aggressive`` one (always filled, full spread), not with the training env's passive-fill
  model: conservative for the gate.
* Output in ``--out``: ``experiment.json`` / ``experiment.md`` / ``plots/`` (``experiment_report``),
  ``evaluation/`` (the evaluation report), ``runs/`` (the searches), and a dated section appended to
  ``marketsimulatorresults.md`` (or ``--results-log``). A search whose folder already holds a
  finished search of the same command by the same code (the run file's code fingerprint equal to
  ``models.registry.code_fingerprint``) on the same data (the run file's data fingerprint, and an
  offline search's experience fingerprint, equal to the store's at the experiment's start, hashed
  once) is reused, so an interrupted experiment continues; any other search in that folder is moved
  aside to ``NAME.replaced-<its start>``, never deleted nor searched into (``cluster.run_reuse``),
  and the log says which and why.
* **One store per verdict.** The searches take minutes to hours; a store appended to, restated or
  re-ingested meanwhile would give a verdict whose searches saw other data than its test evaluation.
  The store's fingerprints are taken once at the start (the reuse check's) and checked again after
  the last read of the store (the evaluation's ``prepare``; ``evaluate`` replays what it loaded),
  together with each search's and the evaluation's recorded one (:func:`check_store_unchanged`);
  on a change no verdict is written (no ``evaluation/``, ``experiment.json`` or log section), the
  command exits as on bad input naming the store and both fingerprints, and every search folder
  stays as it is. ``experiment.json`` names that one data fingerprint and the code fingerprint.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.experiment_report import (
    EXPERIMENT_JSON,
    EXPERIMENT_MD,
    RESULTS_LOG,
    SELECTED,
    BaselineResult,
    ExperimentDocument,
    FoldWindows,
    Selected,
    TestScore,
    VariantResult,
    fold_selection,
    interval,
    judge,
    mean_or_none,
    num,
    objective_of,
    objective_samples,
    render_markdown,
    results_log_section,
    write_plots,
)
from raytrade.cluster.options import (
    LocalPath,
    action_options,
    cash_rate_option,
    path_option,
    spread_fraction_option,
    written_path_option,
)
from raytrade.cluster.run_reuse import StoreState, settle_run_dir, store_state
from raytrade.envs.actions import ActionConfig, ActionMode
from raytrade.envs.cash_rate import MAX_ANNUAL_RATE, CashRate
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.cost_profile import with_spread_fraction
from raytrade.envs.costs import CostConfig
from raytrade.envs.evaluation.document import Window
from raytrade.envs.evaluation.stats import BootstrapConfig
from raytrade.envs.scenarios import ScenarioConfig
from raytrade.replay.errors import InputError
from raytrade.replay.feature_settings import read_feature_settings, spread_text
from raytrade.replay.splits import EMBARGO_BARS, TimeWindow, fractional_splits, walk_forward_folds
from raytrade.tune_specs.objective import UNDEFINED_SCORE
from raytrade.tune_specs.selection import RankedCandidate, rank_candidates

if TYPE_CHECKING:
    from raytrade.cluster.tune import TuneOptions
    from raytrade.envs.evaluation.harness import PolicyResult

BudgetName = Literal["smoke", "small", "medium", "full"]
FAMILIES: tuple[str, ...] = ("ppo", "distrl", "gnn", "gating")
FEATURE_SETS: tuple[str, ...] = ("base", "enriched")
BASELINES: tuple[str, ...] = ("kelly_lite", "equal_weight", "inverse_vol", "buy_and_hold")
SELECTION_RULE = (
    "per fold, highest objective on that fold's own validation window, paired stationary bootstrap "
    "(cluster.experiment.choose_by_fold: raytrade select's ranking); the winner is the last fold's choice"
)


class ExperimentBudget(BaseModel):
    """How much one experiment spends; ``small`` is sized for 45 minutes on 2 idle cores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_folds: int = Field(ge=1, description="walk-forward test folds")
    years: float = Field(3.0, gt=0, description="the test folds cover the store's last YEARS years")
    validation_bars: int = Field(ge=2, description="bars of each fold's validation window")
    min_train_bars: int = Field(ge=2, description="fewest bars fold 0 trains on")
    spec_smoke: bool = Field(description="searches use the spec's smoke budget (batch, epochs, episode)")
    num_samples: int = Field(ge=1, description="trials per search")
    iterations: int = Field(ge=1, description="training iterations per trial")
    families: tuple[str, ...] = FAMILIES
    features: tuple[str, ...] = FEATURE_SETS
    scenarios: tuple[str, ...] = Field(description="stress scenarios (envs.scenarios)")
    scenario_draws: int = Field(
        ScenarioConfig().draws, ge=1, description="draws per stress scenario (distinct seeds)"
    )
    bootstrap_samples: int = Field(ge=10)
    target_minutes: float | None = Field(
        None, gt=0, description="wall-time target of the searches + evaluation on 2 idle cores"
    )


# small: 3 folds x 4 families x 2 feature sets = 24 searches of 2 trials (one per core) x 3 iterations
# of the spec's default batch (4000 env steps, 6 epochs, 252-bar episodes). A search of that size
# took 80 s of tuning loop at a load of about 2 on this 2-core machine (most of it trial start-up),
# so about 24 x 95 s + the evaluation: about 40 minutes idle. smoke: the spec's smoke batch, 1 trial
# x 1 iteration per search, 2 folds, one stress scenario: the test suite's budget.
_SMALL = ExperimentBudget(
    n_folds=3,
    validation_bars=126,
    min_train_bars=252,
    spec_smoke=False,
    num_samples=2,
    iterations=3,
    scenarios=("crisis_2008_like", "flash_crash", "vol_spike", "bootstrap_crisis"),
    bootstrap_samples=1000,
    target_minutes=45.0,
)
BUDGETS: dict[str, ExperimentBudget] = {
    "smoke": ExperimentBudget(
        n_folds=2,
        validation_bars=40,
        min_train_bars=120,
        spec_smoke=True,
        num_samples=1,
        iterations=1,
        scenarios=("flash_crash",),
        scenario_draws=1,
        bootstrap_samples=50,
    ),
    "small": _SMALL,
    # medium: small's folds, windows, trials and evaluation with 10x the training per trial (30
    # iterations): whether the learned policies' gap to the baselines is the small budget's 3
    # iterations. About 10 minutes a search on 2 idle cores: every family on both feature sets is an
    # evening (24 searches); one family on one feature set (--families, --features) about 40 minutes.
    "medium": _SMALL.model_copy(update={"iterations": 30, "target_minutes": None}),
    "full": ExperimentBudget(
        n_folds=6,
        validation_bars=252,
        min_train_bars=504,
        spec_smoke=False,
        num_samples=16,
        iterations=60,
        scenarios=("crisis_2008_like", "flash_crash", "vol_spike", "bootstrap_crisis"),
        bootstrap_samples=2000,
    ),
}


_ACTION_FIELDS = ActionConfig.model_fields  # the action flags' defaults, stated once


class ExperimentOptions(BaseModel):
    """One ``raytrade experiment`` invocation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replay: Path = Field(description="replay store root")
    out: Path = Field(description="output folder (experiment.md, experiment.json, plots, runs)")
    budget: BudgetName = Field(
        "small",
        description="smoke (tests), small (45 min, 2 cores), medium (10x small's training), full (cluster)",
    )
    families: tuple[str, ...] | None = Field(None, description="specs to train (None: the budget's)")
    features: tuple[str, ...] | None = Field(None, description="feature sets (None: base and enriched)")
    results_log: Path | None = Field(None, description=f"results log (None: OUT/{RESULTS_LOG})")
    cvar_penalty: float = Field(1.0, ge=0, description="objective's CVaR weight, in search and report")
    action_mode: ActionMode = Field(
        "absolute", description="every search's action mode: absolute weights or a tilt around a baseline"
    )
    max_tilt: float = Field(
        _ACTION_FIELDS["max_tilt"].default, gt=0, le=1, description="tilt modes: largest tilt per symbol"
    )
    no_trade_band: float = Field(
        _ACTION_FIELDS["no_trade_band"].default, ge=0, le=1, description="no order within this of the weight"
    )
    spread_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of the stored spread paid per side, in every search and the evaluation "
        "alike (None: the cost model's)",
    )
    cash_rate: float | None = Field(
        None,
        ge=0,
        le=MAX_ANNUAL_RATE,
        description="annual rate idle cash earns in every search and the evaluation alike (None: 0 %)",
    )
    seed: int = Field(0, description="search seed")

    def action_suffix(self) -> str:
        """A search folder's mark of non-default action and cost settings (so reruns never mix them)."""
        defaults = ActionConfig()
        parts = [] if self.action_mode == "absolute" else [self.action_mode.replace(":", "-")]
        parts += [f"tilt{self.max_tilt:g}"] if self.max_tilt != defaults.max_tilt else []
        parts += [f"band{self.no_trade_band:g}"] if self.no_trade_band != defaults.no_trade_band else []
        parts += [f"spread{self.spread_fraction:g}"] if self.spread_fraction is not None else []
        parts += [f"cash{self.cash_rate:g}"] if self.cash_rate is not None else []
        return "".join("-" + p for p in parts)

    def cash(self) -> CashRate:
        """What idle cash earns in every search and the evaluation (0 % unless ``cash_rate``)."""
        return CashRate(annual=self.cash_rate or 0.0)

    def costs(self) -> CostConfig:
        """The cost model every search trains with and the evaluation replays every policy with."""
        return with_spread_fraction(CostConfig(), self.spread_fraction)

    def plan_budget(self) -> ExperimentBudget:
        """The budget with these options' families and feature sets. Its wall-time target is the
        named budget's only while every one of its variants is trained: a run of fewer variants has
        none (its time says nothing about the target's)."""
        base = BUDGETS[self.budget]
        update: dict[str, Any] = {}
        if self.families is not None:
            update["families"] = self.families
        if self.features is not None:
            update["features"] = self.features
        planned = base.model_copy(update=update)
        if not (set(base.families) <= set(planned.families) and set(base.features) <= set(planned.features)):
            planned = planned.model_copy(update={"target_minutes": None})
        return planned

    def command(self) -> str:
        parts = ["raytrade", "experiment", "--replay", str(self.replay), "--out", str(self.out)]
        parts += ["--budget", self.budget]
        parts += ["--families", ",".join(self.families)] if self.families else []
        parts += ["--features", ",".join(self.features)] if self.features else []
        parts += ["--cvar-penalty", repr(self.cvar_penalty), "--seed", str(self.seed)]
        parts += ["--action-mode", self.action_mode] if self.action_mode != "absolute" else []
        defaults = ActionConfig()
        parts += ["--max-tilt", repr(self.max_tilt)] if self.max_tilt != defaults.max_tilt else []
        parts += (
            ["--no-trade-band", repr(self.no_trade_band)]
            if self.no_trade_band != defaults.no_trade_band
            else []
        )
        parts += ["--spread-fraction", repr(self.spread_fraction)] if self.spread_fraction is not None else []
        parts += ["--cash-rate", repr(self.cash_rate)] if self.cash_rate is not None else []
        return shlex.join(parts)


# ------------------------------------------------------------------------------ folds


@dataclass(frozen=True)
class FoldPlan:
    """One fold's windows (calendar indices, hi exclusive) and the search fractions that give them."""

    index: int
    train: TimeWindow
    validation: TimeWindow
    test: TimeWindow
    train_fraction: float
    validation_fraction: float


def plan_folds(
    calendar: pd.DatetimeIndex, budget: ExperimentBudget, periods_per_year: int, embargo: int = EMBARGO_BARS
) -> tuple[list[FoldPlan], int]:
    """The folds (see the module docstring) and ``min_train``, the bars before the first test fold
    less the embargo (what ``walk_forward_folds`` and the evaluation are given).

    Raises ``InputError`` when the calendar cannot hold ``min_train_bars`` + a validation window +
    one test bar per fold."""
    n = len(calendar)
    history = budget.min_train_bars + budget.validation_bars + 2 * embargo
    region = min(round(budget.years * periods_per_year), n - history - embargo)
    if region < budget.n_folds:
        raise InputError(
            f"replay store calendar of {n} bars is too short for {budget.n_folds} folds after "
            f"{budget.min_train_bars} training and {budget.validation_bars} validation bars"
        )
    min_train = n - region - embargo
    folds = []
    for fold in walk_forward_folds(calendar, budget.n_folds, min_train, embargo):
        test_lo = int(calendar.searchsorted(fold.test.start))
        val_hi = test_lo - embargo
        train_hi = val_hi - budget.validation_bars - embargo
        train_fraction, validation_fraction = train_hi / n, (val_hi - train_hi) / n
        splits = fractional_splits(calendar, train_fraction, validation_fraction, embargo)
        train, validation = splits["train"], splits["validation"]
        if train.n_bars != train_hi or validation.end != calendar[val_hi - 1]:
            raise AssertionError(f"fold {fold.index}: fractions do not reproduce its windows")
        folds.append(FoldPlan(fold.index, train, validation, fold.test, train_fraction, validation_fraction))
    return folds, min_train


def refuse_offline_families(families: Sequence[str]) -> None:
    """Raise ``InputError`` (one line naming ``--families`` and its value, and what works instead)
    when ``families`` holds an offline spec (``tune_specs.OFFLINE_SPECS``): called before any
    search starts.

    Why: an offline learner's observations are encoded with the normaliser fitted on its training
    window (``tune_specs.spec.train_normalizer``), and the logged transitions it learns from were
    encoded when they were logged, with one normaliser (``raytrade simulate-experience``: the
    default split's; a live loop: its served model's); the learner refuses transitions encoded
    otherwise (``observation_spec``). Every fold has its own training window, hence its own
    normaliser, so at most one fold's could match, and the experiment would stop with that refusal
    at the first offline search, after every search planned before it. Giving an earlier fold the
    recording's normaliser instead would encode its training observations with statistics of bars
    after its training window (its validation and test bars)."""
    from raytrade.tune_specs import OFFLINE_SPECS

    offline = [f for f in families if f in OFFLINE_SPECS]
    if not offline:
        return
    raise InputError(
        f"--families {','.join(families)}: offline specs ({', '.join(offline)}) cannot run on "
        "walk-forward folds: each fold's learner encodes observations with its own training window's "
        "normaliser and the store's experience was encoded with one; train them with `raytrade tune "
        f"--spec {offline[0]} --replay STORE` at the default split, and the experiment with the "
        f"on-policy families ({','.join(FAMILIES)})"
    )


def choice_windows(folds: Sequence[FoldPlan]) -> list[tuple[TimeWindow, ...]]:
    """Per fold, the windows whose bars its choice among the variants reads: its own validation
    window (:func:`choose_by_fold`; its checkpoint choice, inside each search, reads the same)."""
    return [(f.validation,) for f in folds]


def check_nested(folds: Sequence[FoldPlan]) -> None:
    """Raise ``AssertionError`` unless every bar fold ``k``'s choice reads lies before fold ``k``'s
    test window, the bars that choice is judged on."""
    for fold, windows in zip(folds, choice_windows(folds), strict=True):
        late = [w for w in windows if w.end >= fold.test.start]
        if late:
            raise AssertionError(
                f"fold {fold.index}: its choice reads bars up to {late[0].end.date()}, on or after its "
                f"test window's start {fold.test.start.date()}"
            )


def choose_by_fold(
    validation: Mapping[str, Sequence[np.ndarray]],
    benchmark: Sequence[np.ndarray],
    periods_per_year: float,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
) -> list[list[RankedCandidate]]:
    """Per fold, the variants best first (fold ``k``'s choice is ``[k][0]``), each fold on its own
    validation window only, never a test figure.

    ``validation[variant][k]``: per-bar net returns of the variant's model selected for fold ``k``,
    replayed on fold ``k``'s validation window; ``benchmark[k]``: ``equal_weight``'s on the same bars.
    Fold ``k`` is ranked by ``raytrade select``'s rule (``tune_specs.selection.rank_candidates``) on
    ``validation[*][k]`` and ``benchmark[k]`` alone: the objective of the excess, a tie to the variant
    listed first, paired stationary-bootstrap intervals against the choice and the benchmark. The
    point estimate decides even when the interval against the runner-up holds 0 (one fixed rule keeps
    the choice free of the test folds); the report states that interval.

    Why not pooled over the folds (the rule before): fold ``k``'s validation window lies inside fold
    ``k-1``'s test window, so a pooled choice is judged on bars it was made on. The cost: each choice
    sees one window, so a variant whose excess barely moves there (an information ratio in the tens)
    can carry that fold's choice; the claim on that fold's test window then says what it was worth."""
    n_folds = {len(series) for series in validation.values()}
    if len(n_folds) != 1 or n_folds != {len(benchmark)}:
        raise ValueError(
            f"every variant needs one validation series per fold ({len(benchmark)} benchmark folds, "
            f"variants: {sorted(n_folds)})"
        )
    return [
        rank_candidates(
            {name: series[k] for name, series in validation.items()},
            benchmark[k],
            periods_per_year,
            cvar_penalty,
            bootstrap,
        )
        for k in range(len(benchmark))
    ]


def selection_result(policies: Mapping[str, PolicyResult], chosen: Sequence[str]) -> PolicyResult:
    """The walk-forward selection as one evaluated policy, ``SELECTED``: fold ``k``'s run is
    ``policies[chosen[k]]``'s run on fold ``k``'s test window (every variant's models were replayed on
    every fold), chained as the harness chains folds (``harness.pool``: each fold from fresh equity,
    the account stays ruined after a ruin); fold ``k``'s run started in the drawdown and kill-switch
    state of that variant's own fold ``k - 1`` (``harness.run_folds``), not the selection's; its
    stress runs are those of the last fold's choice, the winner (the stress scenarios run on the last
    fold's test window, with the last fold's models)."""
    from dataclasses import replace

    from raytrade.envs.evaluation.harness import PolicyResult, pool

    n_folds = {len(policies[name].folds) for name in chosen}
    if n_folds != {len(chosen)}:
        raise ValueError(f"{len(chosen)} folds chosen, the chosen policies have {sorted(n_folds)} folds")
    runs = tuple(policies[name].folds[k] for k, name in enumerate(chosen))
    winner = policies[chosen[-1]]
    seed = winner.seeds[0]
    main = pool(runs)
    spec = replace(winner.spec, name=SELECTED, manifest=None)
    return PolicyResult(spec, (seed,), main, runs, {seed: main}, dict(winner.stress_draws))


# ------------------------------------------------------------------------------ policies


@dataclass(frozen=True)
class FoldModel:
    test_start: np.datetime64
    module: Any
    env_config: Any  # PortfolioEnvConfig or GatedEnvConfig
    gated: bool


def evaluation_columns(env_config: Any, gated: bool) -> tuple[str, ...]:
    """The store columns a selected model is evaluated with: what it observes, and for a gated model
    the columns the contract's gate reads (``envs.gate``: ``edge_column`` and the store's gate flag),
    so the gate it is evaluated with is the gate it trained with (its training data carried the
    loader's default columns, the flag among them; without it the gate falls back to the loop's rules
    replica, another gate)."""
    from raytrade.envs.gate import gate_columns

    columns = tuple(env_config.feature_columns)
    if not gated:
        return columns
    return columns + tuple(c for c in gate_columns(env_config) if c not in columns)


@dataclass(frozen=True)
class WalkForwardPolicy:
    """One variant across folds, as the evaluation harness's policy handle: on a window it acts with
    the model of the fold whose test window starts at the window's first bar, and refuses any other."""

    name: str
    feature_columns: tuple[str, ...]
    folds: tuple[FoldModel, ...]

    def act(self, observation: Any) -> Any:
        raise TypeError(f"{self.name} acts only through policy(data), on a fold's test window")

    def env_config(self) -> Any:
        """The first fold's training env config: the harness reads its action mode, so a tilt
        policy's baseline inputs and lookback are loaded with the window (every fold shares it)."""
        return self.folds[0].env_config

    def trained_on(self, root: str, store_sha256: str) -> Any:
        """What the evaluation's out-of-sample check is told: fold models, each trained on its fold's
        training window only, which ends before its test window (:func:`check_nested` on the plan)."""
        from raytrade.envs.evaluation.insample import TrainedOn

        return TrainedOn(
            None,
            "walk-forward: each fold's model trained only on bars before its own test window "
            "(checked when the folds were planned)",
            walk_forward=True,
        )

    def policy(self, data: Any) -> Callable[[Any], Any]:
        from raytrade.models.inference import module_policy

        start = np.datetime64(data.ts[0], "ns")
        matches = [m for m in self.folds if m.test_start == start]
        if not matches:
            raise InputError(
                f"{self.name}: window starting {np.datetime_as_string(start, 'D')} is no fold's test window"
            )
        model = matches[0]
        return module_policy(model.module, data, model.env_config)  # a gated config: gated_weights_policy


def load_selected(run_dir: Path, checkpoint: str, trial_dir: str) -> tuple[Any, Any, bool]:
    """(module in eval mode, env config, gated) of a search's selected checkpoint."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from raytrade.cluster.promote import module_checkpoint
    from raytrade.envs.config import env_config_from_dict
    from raytrade.envs.gym_envs import GATED_ENV_ID

    config = json.loads((run_dir / trial_dir / "params.json").read_text())
    gated = config.get("env") == GATED_ENV_ID
    module: Any = RLModule.from_checkpoint(module_checkpoint((run_dir / checkpoint).resolve()))
    module.eval()
    return module, env_config_from_dict(config["env_config"], gated=gated), gated


# ------------------------------------------------------------------------------ searches


@dataclass(frozen=True)
class SearchResult:
    selected: Selected
    model: FoldModel
    feature_columns: tuple[str, ...]


def search_options(
    opts: ExperimentOptions, budget: ExperimentBudget, spec: str, features: str, fold: FoldPlan
) -> TuneOptions:
    """The ``raytrade tune`` options of ``spec`` with ``features`` on ``fold``'s windows."""
    from raytrade.cluster.tune import TuneOptions

    return TuneOptions(
        spec=spec,
        replay=opts.replay,
        smoke=budget.spec_smoke,
        num_samples=budget.num_samples,
        iterations=budget.iterations,
        storage=opts.out / "runs",
        name=f"{spec}-{features}{opts.action_suffix()}-fold{fold.index}",
        wandb="disabled",
        features=features,
        cvar_penalty=opts.cvar_penalty,
        action_mode=opts.action_mode,
        max_tilt=opts.max_tilt,
        no_trade_band=opts.no_trade_band,
        spread_fraction=opts.spread_fraction,
        cash_rate=opts.cash_rate,
        train_fraction=fold.train_fraction,
        validation_fraction=fold.validation_fraction,
        seed=opts.seed,
    )


def experiment_store_state(opts: ExperimentOptions, budget: ExperimentBudget) -> StoreState:
    """The store's fingerprints the experiment's finished searches are checked against, hashed once
    per experiment: bars and features, and the experience table when an offline family is planned
    (its searches read the replay store's own experience: the experiment passes no ``--experience``)."""
    from raytrade.tune_specs import OFFLINE_SPECS

    offline = any(family in OFFLINE_SPECS for family in budget.families)
    return store_state(opts.replay, opts.replay if offline else None)


class StoreChangedError(InputError):
    """The replay store changed while an experiment ran: its searches, its choice and its test
    evaluation may have read different data, so no verdict is written (an input error: the store was
    written to under the experiment; its searches are kept for a rerun to reuse or move aside)."""


def check_store_unchanged(
    opts: ExperimentOptions, budget: ExperimentBudget, start: StoreState, seen: Mapping[str, str]
) -> None:
    """Raise :class:`StoreChangedError` unless the store is still the one the experiment started on:
    its fingerprints hashed again now (:func:`experiment_store_state`; called after the experiment's
    last read of the store) equal ``start``'s, and so does every data fingerprint recorded on the way
    (``seen``: where -> fingerprint, e.g. each search's run file and the evaluation plan's, which
    catch a store changed and changed back). The message names the store and both fingerprints
    (first 12 hex); nothing is moved or deleted."""
    now = experiment_store_state(opts, budget)
    changes = [("now", now.data_sha256), *seen.items()]
    later = next(((where, sha) for where, sha in changes if sha != start.data_sha256), None)
    if later is not None:
        what = f"data fingerprint at its start {start.data_sha256[:12]}, {later[0]} {later[1][:12]}"
    elif now.experience_sha256 != start.experience_sha256:
        then, current = (
            "none" if sha is None else sha[:12] for sha in (start.experience_sha256, now.experience_sha256)
        )
        what = f"experience fingerprint at its start {then}, now {current}"
    else:
        return
    raise StoreChangedError(
        f"replay store {str(opts.replay)!r} changed while the experiment ran ({what}): no verdict "
        f"written; its searches are kept in {str(opts.out / 'runs')!r} (rerun on a store left as it is)"
    )


def run_search(
    opts: ExperimentOptions,
    budget: ExperimentBudget,
    spec: str,
    features: str,
    fold: FoldPlan,
    store: StoreState,
    say: Callable[[str], None] = click.echo,
) -> SearchResult:
    """``raytrade tune`` of ``spec`` on ``fold``'s training window, scored on its validation window;
    the best checkpoint. A finished search in its folder is reused when it ran the same command, by
    the same code (``models.registry.code_fingerprint``), on the data ``store`` fingerprints
    (``cluster.run_reuse``); any other search there is moved aside first, and ``say`` gets one line
    saying which and why."""
    from raytrade.cluster.run_file import LEADERBOARD_FILE, read_leaderboard
    from raytrade.cluster.tune import run_tune
    from raytrade.models.registry import code_fingerprint

    tune_opts = search_options(opts, budget, spec, features, fold)
    run_dir = tune_opts.run_dir()
    started = time.perf_counter()
    reused, line = settle_run_dir(run_dir, tune_opts.command(), store, code_fingerprint())
    if line is not None:
        say(line)
    if reused is not None:
        rows = read_leaderboard(run_dir)
        # a reused search's wall time is the one it took: run file start to leaderboard written
        began = reused.provenance.started_at.timestamp()
        seconds = max(0.0, (run_dir / LEADERBOARD_FILE).stat().st_mtime - began)
    else:
        rows = run_tune(tune_opts).leaderboard
        seconds = time.perf_counter() - started
    best = next(r for r in rows if r.checkpoint)
    assert best.checkpoint is not None
    module, env_config, gated = load_selected(run_dir, best.checkpoint, best.trial_dir)
    selected = Selected(
        fold=fold.index,
        run_dir=str(run_dir),
        trial=best.trial,
        checkpoint=best.checkpoint,
        iteration=best.iteration,
        # the search records an undefined objective as UNDEFINED_SCORE: no figure
        validation_objective=None if best.objective == UNDEFINED_SCORE else num(best.objective),
        validation_excess_return=num(best.excess_return),
        validation_gross_exposure=num(best.gross_exposure),
        tune_seconds=seconds,
    )
    test_start = np.datetime64(fold.test.start.tz_convert(None).to_datetime64(), "ns")
    columns = evaluation_columns(env_config, gated)
    return SearchResult(selected, FoldModel(test_start, module, env_config, gated), columns)


def validation_returns(
    searches: Mapping[str, Sequence[SearchResult]], root: Path
) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """(``equal_weight``'s per-bar net returns on each fold's validation window, each variant's
    selected model's on the same bars): the inputs of :func:`choose_by_fold`.

    Per fold, the variants' searches go through ``raytrade select``'s checks (one store state, one
    objective, one validation window and market, else ``SelectionError``) and each selected model is
    replayed as its search scored it (``tune_specs.objective.module_rollout``, every book closed at
    the window's last bar: ``CLOSE_AT_END``), so a fold's series scores exactly the validation
    objective its leaderboard recorded (a search scored under another rule is never reused:
    ``cluster.run_reuse``)."""
    from raytrade.cluster.select import check_comparable_searches, common_window, load_candidates
    from raytrade.tune_specs.objective import benchmark_rollout, module_rollout

    n_folds = {len(results) for results in searches.values()}
    if len(n_folds) != 1:
        raise ValueError(f"variants were searched on different numbers of folds: {sorted(n_folds)}")
    bench: list[np.ndarray] = []
    returns: dict[str, list[np.ndarray]] = {name: [] for name in searches}
    for k in range(n_folds.pop()):
        names = list(searches)
        candidates = load_candidates([Path(searches[n][k].selected.run_dir) for n in names])
        check_comparable_searches(candidates)
        data, sim = common_window(candidates, root)
        bench.append(benchmark_rollout(data, sim).returns[0])
        for name, c in zip(names, candidates, strict=True):
            rollout, _ = module_rollout(searches[name][k].model.module, c.env_config(root), data, c.gated)
            returns[name].append(rollout.returns[0])
    return bench, returns


# ------------------------------------------------------------------------------ experiment


def _window(w: TimeWindow) -> Window:
    return Window(start=w.start.isoformat(), end=w.end.isoformat(), n_bars=w.n_bars)


def _calendar(root: Path) -> tuple[pd.DatetimeIndex, int]:
    """The calendar the loader splits (and the evaluation folds), and its periods per year."""
    from raytrade.envs.replay_loader import load_market_data

    data = load_market_data(root, "all", feature_columns=())
    return pd.DatetimeIndex(data.ts).tz_localize("UTC"), data.periods_per_year


def _test_score(
    result_policy: Any,
    bench: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    report_policy: Any,
    ppy: int,
    penalty: float,
    indices: np.ndarray,
    level: float,
) -> TestScore:
    from raytrade.envs.metrics import total_return

    returns = result_policy.main.returns
    excess = returns - bench
    point = objective_of(excess, ppy, penalty)
    by_fold = tuple(objective_of(r - b, ppy, penalty) for r, b in folds)
    m = report_policy.metrics
    return TestScore(
        objective=interval(point, objective_samples(excess, ppy, penalty, indices), level),
        objective_by_fold=by_fold,
        excess_return=num(total_return(returns) - total_return(bench)),
        total_return=m.total_return,
        sharpe=m.sharpe,
        max_drawdown=m.max_drawdown,
        turnover=m.turnover,
        costs_paid=m.costs_paid,
        stress_total_return={k: s.summary.total_return.mean for k, s in report_policy.stress.items()},
        ruined_folds=sum(f.ruined for f in result_policy.folds),
        ruined_stress_draws=sum(r.ruined for draws in result_policy.stress_draws.values() for r in draws),
        stress_draws=sum(len(draws) for draws in result_policy.stress_draws.values()),
    )


def run_experiment(opts: ExperimentOptions, say: Callable[[str], None] = click.echo) -> ExperimentDocument:
    """Plan the folds, run every search, evaluate, write the documents; returns ``experiment.json``'s."""
    from dataclasses import replace

    from raytrade.envs.evaluation.harness import EvaluationConfig, evaluate, prepare
    from raytrade.envs.evaluation.render import write_report
    from raytrade.envs.evaluation.stats import stationary_indices
    from raytrade.models.inference import single_threaded
    from raytrade.models.registry import code_fingerprint
    from raytrade.tune_specs import get_spec

    started, load_start = time.perf_counter(), os.getloadavg()
    budget = opts.plan_budget()
    boot = BootstrapConfig(samples=budget.bootstrap_samples, seed=opts.seed)
    for family in budget.families:
        get_spec(family)
    refuse_offline_families(budget.families)
    if not (opts.replay / "bars").is_dir():
        raise InputError(f"replay store {str(opts.replay)!r} has no bars table; run `raytrade ingest` first")
    calendar, ppy = _calendar(opts.replay)
    folds, min_train = plan_folds(calendar, budget, ppy)
    check_nested(folds)
    for f in folds:
        say(
            f"fold {f.index}: train {f.train.start.date()}..{f.train.end.date()}, validation "
            f"{f.validation.start.date()}..{f.validation.end.date()}, "
            f"test {f.test.start.date()}..{f.test.end.date()}"
        )
    opts.out.mkdir(parents=True, exist_ok=True)
    store = experiment_store_state(opts, budget)

    searches: dict[str, list[SearchResult]] = {}
    variant_seconds: dict[str, float] = {}
    family_seconds: dict[str, float] = {}
    for family in budget.families:
        for features in budget.features:
            name = f"{family}-{features}"
            results = []
            for fold in folds:
                say(f"[{name}] fold {fold.index}: searching ...")
                results.append(run_search(opts, budget, family, features, fold, store, say))
                score = results[-1].selected.validation_objective
                say(f"[{name}] fold {fold.index}: validation objective {_fmt(score)}")
            searches[name] = results
            variant_seconds[name] = sum(r.selected.tune_seconds for r in results)
            say(f"[{name}] done in {variant_seconds[name]:.0f} s")
        family_seconds[family] = sum(variant_seconds[f"{family}-{x}"] for x in budget.features)
        say(f"family {family}: {family_seconds[family]:.0f} s wall")

    say("choosing each fold's variant on its own validation window ...")
    # (module_rollout replays on one torch thread itself)
    bench_validation, variant_validation = validation_returns(searches, opts.replay)
    rankings = choose_by_fold(variant_validation, bench_validation, ppy, opts.cvar_penalty, boot)
    selections = tuple(
        fold_selection(
            k,
            ranked,
            {
                name: objective_of(series[k] - bench_validation[k], ppy, opts.cvar_penalty)
                for name, series in variant_validation.items()
            },
        )
        for k, ranked in enumerate(rankings)
    )
    chosen = [sel.chosen for sel in selections]
    winner = chosen[-1]
    for sel in selections:
        best = _fmt(sel.candidates[0].objective.estimate)
        say(f"fold {sel.fold}: chose {sel.chosen} (validation objective {best})")
    say(f"winner (the last fold's choice): {winner}")

    t_eval = time.perf_counter()
    handles = {
        name: WalkForwardPolicy(name, results[0].feature_columns, tuple(r.model for r in results))
        for name, results in searches.items()
    }
    last = folds[-1]
    cfg = EvaluationConfig(
        split="test",
        walk_forward=budget.n_folds,
        min_train_fraction=min_train / len(calendar),
        train_fraction=last.train_fraction,
        validation_fraction=last.validation_fraction,
        seeds=(0,),
        scenarios=budget.scenarios,
        scenario_config=ScenarioConfig(draws=budget.scenario_draws),
        bootstrap=boot,
        simulator=SimulatorConfig(costs=opts.costs(), cash_rate=opts.cash()),
    )
    names = [*BASELINES, *(f"registry:{n}" for n in handles)]
    plan = prepare(
        opts.replay, names, cfg, registry=opts.out / "runs", loader=lambda ref, registry: handles[ref]
    )
    for window, fold in zip(plan.windows, folds, strict=True):
        if (
            pd.Timestamp(window.data.ts[0], tz="UTC") != fold.test.start
            or len(window.data.ts) != fold.test.n_bars
        ):
            raise AssertionError(f"evaluation window {window.name} is not fold {fold.index}'s test window")
    say("evaluating on the test folds and stress scenarios ...")
    with single_threaded():
        result = evaluate(plan)
    # after the last read of the store (prepare's; evaluate replays what it loaded), before any of the
    # verdict is written
    seen = {
        f"at search {Path(r.selected.run_dir).name}": _searched_on(r) for rs in searches.values() for r in rs
    }
    seen["at the evaluation"] = plan.fingerprint
    check_store_unchanged(opts, budget, store, seen)
    selected = selection_result(result.policies, [f"registry:{name}" for name in chosen])
    result = replace(result, policies={SELECTED: selected, **result.policies})
    _, report = write_report(result, opts.out / "evaluation", plots=False)
    evaluation_seconds = time.perf_counter() - t_eval

    def display(policy: str) -> str:
        return policy.removeprefix("registry:")

    bench = result.policies["equal_weight"]
    n_bars = len(bench.main.returns)
    indices = stationary_indices(
        n_bars, cfg.bootstrap.samples, cfg.bootstrap.block_len, np.random.default_rng(cfg.bootstrap.seed)
    )
    level = cfg.bootstrap.level
    scores: dict[str, TestScore] = {}
    fold_series: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for policy, res in result.policies.items():
        pairs = [(f.returns, b.returns) for f, b in zip(res.folds, bench.folds, strict=True)]
        scores[display(policy)] = _test_score(
            res,
            bench.main.returns,
            pairs,
            report.policies[policy],
            ppy,
            opts.cvar_penalty,
            indices,
            level,
        )
        fold_series[display(policy)] = [(f.timestamps, f.returns) for f in res.folds]

    by_fold = {
        name: tuple(c.objective.estimate for sel in selections for c in sel.candidates if c.name == name)
        for name in searches
    }
    variants = tuple(
        VariantResult(
            name=name,
            spec=name.rsplit("-", 1)[0],
            features=name.rsplit("-", 1)[1],
            selected=tuple(r.selected for r in results),
            validation_objective=mean_or_none(by_fold[name]),
            wall_seconds=variant_seconds[name],
            test=scores[name],
        )
        for name, results in searches.items()
    )
    verdict = judge(
        SELECTED,
        {display(p): result.policies[p].main.returns for p in (SELECTED, *BASELINES)},
        ppy,
        opts.cvar_penalty,
        indices,
        level,
        ruined=scores[SELECTED].ruined,
        winner=winner,
        risk_free=bench.main.risk_free,
    )
    doc = ExperimentDocument(
        created_at=datetime.now(UTC).replace(microsecond=0),
        replay=str(opts.replay),
        data_sha256=store.data_sha256,
        code_sha256=code_fingerprint(),
        budget=opts.budget,
        command=opts.command(),
        spread_source=spread_text(read_feature_settings(opts.replay).unquoted_spread_bps),
        cvar_penalty=opts.cvar_penalty,
        embargo_bars=EMBARGO_BARS,
        periods_per_year=ppy,
        folds=tuple(
            FoldWindows(
                index=f.index,
                train=_window(f.train),
                validation=_window(f.validation),
                test=_window(f.test),
                train_fraction=f.train_fraction,
                validation_fraction=f.validation_fraction,
            )
            for f in folds
        ),
        selection_rule=SELECTION_RULE,
        selections=selections,
        selected=scores[SELECTED],
        variants=variants,
        baselines=tuple(BaselineResult(name=b, test=scores[b]) for b in BASELINES),
        verdict=verdict,
        scenarios=budget.scenarios,
        refused_scenarios=dict(plan.refused_scenarios),
        evaluation_report="evaluation/report.json",
        wall_seconds_by_family=family_seconds,
        evaluation_seconds=evaluation_seconds,
        wall_seconds=time.perf_counter() - started,
        target_minutes=budget.target_minutes,
        load_average_start=load_start,
        load_average_end=os.getloadavg(),
        cpu_count=os.cpu_count(),
    )
    plots = write_plots(doc, fold_series, opts.out / "plots")
    (opts.out / EXPERIMENT_JSON).write_text(doc.model_dump_json(indent=2))
    md = opts.out / EXPERIMENT_MD
    md.write_text(render_markdown(doc, [p.relative_to(opts.out).as_posix() for p in plots]))
    log = opts.results_log or opts.out / RESULTS_LOG
    with open(log, "a") as fh:
        fh.write(("\n" if log.exists() and log.stat().st_size else "") + results_log_section(doc, md))
    return doc


def _searched_on(result: SearchResult) -> str:
    """The data fingerprint a search's run file recorded when it started."""
    from raytrade.cluster.run_file import read_run_file

    return read_run_file(Path(result.selected.run_dir)).provenance.data_sha256


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("experiment")
@path_option("--replay", type=LocalPath(), required=True, help="Replay store root.")
@written_path_option("--out", type=LocalPath(), required=True, help="Output folder.")
@click.option(
    "--budget",
    type=click.Choice(["smoke", "small", "medium", "full"]),
    default="small",
    show_default=True,
    help="smoke: test suite; small: <= 45 min on 2 idle cores; medium: small with 10x the training "
    "per trial (one family and feature set: ~40 min on 2 cores); full: a cluster.",
)
@click.option(
    "--families",
    help=f"Comma list of on-policy specs (default: {','.join(FAMILIES)}); the offline specs are refused.",
)
@click.option("--features", help="Comma list of feature sets (default: base,enriched).")
@written_path_option(
    "--results-log",
    type=LocalPath(),
    help=f"Results log the dated section is appended to (default: OUT/{RESULTS_LOG}).",
)
@click.option("--cvar-penalty", type=click.FloatRange(min=0), default=1.0, show_default=True)
@action_options()
@spread_fraction_option()
@cash_rate_option()
@click.option("--seed", type=int, default=0, show_default=True)
@one_line_errors
def experiment_command(
    replay: Path,
    out: Path,
    budget: str,
    families: str | None,
    features: str | None,
    results_log: Path | None,
    cvar_penalty: float,
    action_mode: ActionMode,
    max_tilt: float,
    no_trade_band: float,
    spread_fraction: float | None,
    cash_rate: float | None,
    seed: int,
) -> None:
    """Train every family (base and enriched features) on walk-forward folds, choose a variant per fold
    on that fold's validation window, and report that walk-forward selection on the test folds against
    kelly_lite, equal_weight, inverse_vol and buy_and_hold."""
    opts = ExperimentOptions(
        replay=replay,
        out=out,
        budget=budget,
        families=_names(families),
        features=_names(features),
        results_log=results_log,
        cvar_penalty=cvar_penalty,
        action_mode=action_mode,
        max_tilt=max_tilt,
        no_trade_band=no_trade_band,
        spread_fraction=spread_fraction,
        cash_rate=cash_rate,
        seed=seed,
    )
    doc = run_experiment(opts)
    click.echo(f"wrote {out / EXPERIMENT_MD}, {out / EXPERIMENT_JSON}")
    for line in render_markdown(doc, []).split("## Outcome")[1].split("## Folds")[0].strip().splitlines():
        click.echo(line)
