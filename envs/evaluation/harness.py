"""Evaluation harness: every policy through the same simulator and cost model, on the same windows.

Two phases, so bad input fails before any work:

1. ``prepare`` resolves the policy names, checks that the store holds the features they need and
   that every window is long enough for the longest lookback, builds the walk-forward folds and the
   stress-scenario data, and fingerprints the replay files. Every problem raises
   ``EvaluationInputError`` (a ``ValueError``) naming what is missing.
2. ``evaluate`` replays each policy (``replay_policy``: one ``SimulatorConfig``, one cost model for
   all) on the plan's windows, for each seed where a policy is stochastic, and on each stress
   scenario. It returns per-bar series only; metrics are computed from those series by the report,
   so the reported numbers always recompute from the reported returns.

Windows: with ``walk_forward = K`` the evaluation windows are the test windows of
``replay.splits.walk_forward_folds`` over the whole store calendar (fold k's test window starts
after its training window and the embargo); pooled results chain the folds' returns in time order.
Otherwise the window is the ``split`` of ``envs.replay_loader.load_market_data``. Stress scenarios
always run on the ``split`` window (same shocked data for every policy): ``scenario_config.draws``
draws per scenario (``envs.scenarios.scenario_draws``, seeded by ``[scenario_seed, k]``), each run
by every policy (``PolicyResult.stress_draws``). A scenario the data cannot carry (the scenarios
module's ``ScenarioDataError``: a crisis pool too small for the bootstrap's blocks, a split shorter
than a crisis window) is not an input error: it is recorded in ``EvaluationPlan.refused_scenarios``
with its reason, and every other scenario and every policy still runs. An unknown scenario name, or
one listed twice (as a policy listed twice), is an input error.
Registry models are checked out of sample (``envs.evaluation.insample``): a window (the split, every
walk-forward test fold, and in walk-forward mode the stress scenarios' split) that starts before the
first bar ``embargo_bars`` after a model's training window is refused (``InSampleError``) unless
``in_sample`` is set; ``after_training`` cuts the walk-forward folds from that bar on instead (the
latest over the registry models). ``EvaluationPlan.sample_checks`` holds each model's check.
With registry models among the policies, every policy (baselines included) is replayed on the
universe the models trained on (``envs.evaluation.universe``: never a symbol the store gained since);
``EvaluationPlan.universe`` says which universe and why.
Features are the store's, computed from data ``<= t``; a window taken from the whole store is the
same as loading it, except that a missing spread is costed at the whole store's median.

The end of a window (one rule, for the policy and every baseline alike): every run (each window, each
walk-forward fold, each stress draw) ends by closing the book. Every position still open at the window's
last bar is traded to zero at that bar's close with the simulator's own cost model (fee, half spread,
tier slippage and square-root impact of the participation at that bar, of the smaller of its 20-bar
dollar volume and its own: a thin last bar prices a thin exit; all of it fills, a position at or
above the participation cap paying the cap's impact: ``envs.costs.exit_cost_parts``, the formulas
every fill pays, through ``MarketSimulator.exit_costs``), and the cost is
charged to the window's final equity: the last return, the last bar's fee / spread / slippage and its
turnover include it (``replay_policy(close_at_end=True)``). So total return, Sharpe, drawdown, the
equity curve and the bootstrap are net of getting out, and a book that ends large, levered, short or
illiquid pays for it as a flat one does not. ``RunSeries.exit_cost`` / ``exit_bps`` keep the exit's own
part for the report. A ruined (flat) account pays nothing; a position whose symbol has no bar after an
earlier one (a delisting, a feed that stops) was already closed by the simulator at that last close,
paying the same exit's costs there (the report lists those symbols per window: ``FoldReport.bars_stop``,
and in its ``warnings``). Walk-forward folds each start from fresh equity, so each closes its own book;
the pooled series carries each fold's exit at the fold's last bar. The tuning objective and selection
close the book the same way (``tune_specs.objective.CLOSE_AT_END``), so models are chosen on the terms
they are judged on; training (the RL env's episodes) does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from raytrade.envs.cash_rate import CashRate, cash_return_per_bar
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.edges import FirstBarMove, HaltAtEnd, first_bar_moves, halts_at_end
from raytrade.envs.evaluation.insample import (
    SampleCheck,
    Span,
    TrainedOn,
    check_windows,
    first_allowed_start,
    refusal,
)
from raytrade.envs.evaluation.kelly_lite import KellyLiteConfig
from raytrade.envs.evaluation.policies import EvaluationInputError, Loader, PolicySpec, resolve_policies
from raytrade.envs.evaluation.stats import BootstrapConfig
from raytrade.envs.evaluation.universe import evaluation_universe
from raytrade.envs.market_data import MarketData, bars_before_slice, listed_after_slice
from raytrade.envs.rollout import AccountCarry, replay_policy
from raytrade.envs.scenarios import ScenarioConfig, ScenarioDataError, row_regimes, scenario_draws
from raytrade.replay.feature_settings import read_feature_settings, spread_text
from raytrade.replay.fingerprint import data_fingerprint
from raytrade.replay.schema import FEATURES_SCHEMA
from raytrade.replay.splits import (
    EMBARGO_BARS,
    TRAIN_FRACTION,
    VALIDATION_FRACTION,
    TimeWindow,
    walk_forward_folds,
)

DEFAULT_SCENARIOS: tuple[str, ...] = ("crisis_2008_like", "flash_crash", "vol_spike", "bootstrap_crisis")
MIN_RETURNS = 2
"""Returns a window must yield after the longest lookback."""
log = logging.getLogger(__name__)


class CashRateCoverageError(EvaluationInputError):
    """The cash rate's schedule starts after the first bar a window's cash earns over (names the
    window and that bar): refused before any replay, never guessed."""


def check_cash_rate_covers(rate: CashRate, windows: Sequence[EvalWindow]) -> None:
    """Refuse (:class:`CashRateCoverageError`) a schedule that starts after the first bar cash earns
    over in any of ``windows`` (``envs.cash_rate.cash_return_per_bar``'s rule); a stress draw keeps
    its window's first dates (``envs.scenarios.path_calendar``)."""
    for w in windows:
        try:
            cash_return_per_bar(w.data.ts, rate, w.data.periods_per_year)
        except ValueError as exc:
            raise CashRateCoverageError(f"{w.name}: {exc}") from None


class InSampleError(EvaluationInputError):
    """Registry models asked to be evaluated on bars they trained on; ``reasons``: policy -> its
    one-line refusal (``insample.refusal``), ``facts``: the same without ``raytrade evaluate``'s ways
    forward (for callers without those options, the nightly). The message is the first reason's,
    naming the others."""

    def __init__(self, reasons: dict[str, str], facts: dict[str, str] | None = None) -> None:
        first, *others = reasons
        more = f" (also in sample: {', '.join(others)})" if others else ""
        super().__init__(reasons[first] + more)
        self.reasons = dict(reasons)
        self.facts = dict(facts or reasons)


class EvaluationConfig(BaseModel):
    """What an evaluation run compares, on which windows, with which randomness."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    split: Literal["train", "validation", "test", "all"] = Field("test", description="evaluated window")
    walk_forward: int | None = Field(None, ge=1, description="K consecutive folds instead of one split")
    min_train_fraction: float = Field(
        0.5, gt=0, lt=1, description="walk-forward: share of the calendar before the first test fold"
    )
    train_fraction: float = Field(TRAIN_FRACTION, gt=0, lt=1, description="share of the calendar in train")
    validation_fraction: float = Field(
        VALIDATION_FRACTION, gt=0, lt=1, description="share of the calendar in validation"
    )
    embargo_bars: int = Field(EMBARGO_BARS, ge=0, description="bars left out between train and test windows")
    in_sample: bool = Field(
        False,
        description="evaluate registry models on bars they trained on, labelled IN-SAMPLE (else refused)",
    )
    after_training: bool = Field(
        False, description="walk-forward: folds start after every registry model's training window + embargo"
    )
    symbols: tuple[str, ...] | None = Field(None, description="universe (None: every symbol)")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="seeds of stochastic policies")
    scenarios: tuple[str, ...] = Field(DEFAULT_SCENARIOS, description="stress scenarios (envs.scenarios)")
    scenario_seed: int = Field(0, description="seed of the scenario generators")
    benchmark: str = Field("equal_weight", description="policy the bootstrap differences refer to")
    bootstrap: BootstrapConfig = BootstrapConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    kelly_lite: KellyLiteConfig = KellyLiteConfig()
    scenario_config: ScenarioConfig = ScenarioConfig()

    @model_validator(mode="after")
    def _after_training_needs_folds(self) -> EvaluationConfig:
        if self.after_training and self.walk_forward is None:
            raise ValueError("after_training cuts walk-forward folds: it needs walk_forward")
        return self


@dataclass(frozen=True)
class EvalWindow:
    """One evaluated window; ``train`` is the fold's training window (walk-forward only; a registry
    model's own training window is in ``EvaluationPlan.sample_checks``)."""

    name: str
    data: MarketData
    train: TimeWindow | None = None
    halted_at_end: tuple[HaltAtEnd, ...] = ()  # symbols halted over its end (envs.evaluation.edges)
    first_bar_moves: tuple[FirstBarMove, ...] = ()  # large moves on its first bar, which nothing holds


@dataclass(frozen=True)
class EvaluationPlan:
    """Everything checked and loaded; ``evaluate`` only replays."""

    root: str
    config: EvaluationConfig
    specs: tuple[PolicySpec, ...]
    windows: tuple[EvalWindow, ...]
    split_data: MarketData
    scenario_draws: dict[str, tuple[MarketData, ...]]  # every draw of each scenario that was built
    refused_scenarios: dict[str, str]  # scenario -> why this data cannot carry it
    fingerprint: str
    n_files: int
    sample_checks: dict[str, SampleCheck] = field(default_factory=dict)  # registry models by name
    universe: str = "every symbol of the store"  # why the windows hold their symbols (the report says)
    spread_source: str = "the high/low estimate"  # the store's spreads on unquoted bars (the report says)

    @property
    def periods_per_year(self) -> int:
        return self.split_data.periods_per_year


@dataclass(frozen=True)
class RunSeries:
    """Per-step results of one policy on one window (or pooled windows); step k earns at ``timestamps[k]``."""

    timestamps: np.ndarray  # [T] datetime64
    returns: np.ndarray  # [T] simple net returns
    turnover: np.ndarray  # [T] traded notional / equity before the trade
    costs: np.ndarray  # [T, 4] currency, ordered as envs.costs.COST_COMPONENTS
    regime: np.ndarray  # [T] int: 0 calm, 1 choppy, 2 crisis, -1 nothing listed
    ruined: bool = False  # the account was ruined (liquidated; flat afterwards, returns 0)
    ruin_bar: int | None = None  # index into returns / timestamps of the ruin step (None: never)
    exit_cost: float = 0.0  # currency: closing the book at the window's end, already in returns and
    #                         costs (pooled folds: summed over the folds)
    exit_bps: float = 0.0  # that cost in bps of the equity it was charged to (pooled: summed over folds)
    risk_free: np.ndarray | None = None  # [T] what idle cash earned over each step's bar (None: 0 %)
    interest: float = 0.0  # currency: what idle cash earned over the run, in the returns (pooled: summed)
    kill_active: np.ndarray | None = None  # [T] bool: the kill switch was on at step k's decision
    #                                        (only unwinds allowed; None: not recorded)
    carry: AccountCarry | None = None  # the account's drawdown state at the end, for the next fold

    @property
    def excess(self) -> np.ndarray:
        """``[T]`` returns over the risk-free return (what the Sharpe and Sortino ratios measure)."""
        return self.returns if self.risk_free is None else self.returns - self.risk_free


@dataclass(frozen=True)
class PolicyResult:
    """One policy: its main series (first seed, pooled folds), folds, seeds and stress runs (one per
    draw of every scenario in ``plan.scenario_draws``, with the first seed)."""

    spec: PolicySpec
    seeds: tuple[int, ...]
    main: RunSeries
    folds: tuple[RunSeries, ...]
    by_seed: dict[int, RunSeries]
    stress_draws: dict[str, tuple[RunSeries, ...]]

    @property
    def ruined(self) -> bool:
        """Any run of this policy (main, any seed, any stress scenario) ended in ruin."""
        stress = (r for draws in self.stress_draws.values() for r in draws)
        return any(r.ruined for r in (self.main, *self.folds, *self.by_seed.values(), *stress))

    @property
    def ruined_runs(self) -> tuple[str, ...]:
        """Names of the ruined runs: ``seed <s>`` and ``stress <scenario> draw <k>``."""
        seeds = [f"seed {s}" for s, r in self.by_seed.items() if r.ruined]
        stress = [
            f"stress {n} draw {k}"
            for n, draws in self.stress_draws.items()
            for k, r in enumerate(draws)
            if r.ruined
        ]
        return (*seeds, *stress)


@dataclass(frozen=True)
class EvaluationResult:
    plan: EvaluationPlan
    policies: dict[str, PolicyResult]


# --------------------------------------------------------------------------- prepare


def _needed_features(specs: Sequence[PolicySpec]) -> tuple[str, ...]:
    columns: list[str] = []
    for spec in specs:
        columns.extend(c for c in spec.feature_columns if c not in columns)
    return tuple(columns)


def check_features(root: Path, specs: Sequence[PolicySpec], data: MarketData) -> None:
    """Refuse a store whose features table lacks values a policy needs in the evaluated span."""
    from raytrade.replay.reader import read_frame

    needed = _needed_features(specs)
    if not needed:
        return
    frame = read_frame(
        root,
        "features",
        symbols=list(data.symbols),
        start=pd.Timestamp(data.ts[0], tz="UTC"),
        end=pd.Timestamp(data.ts[-1], tz="UTC"),
        columns=list(needed),
    )
    for column in needed:
        if frame[column].notna().sum() == 0:
            users = [s.name for s in specs if column in s.feature_columns]
            raise EvaluationInputError(
                f"the store at {root} has no values of feature {column!r} between "
                f"{np.datetime_as_string(data.ts[0], 'D')} and {np.datetime_as_string(data.ts[-1], 'D')}, "
                f"needed by {', '.join(users)}"
            )


def check_length(specs: Sequence[PolicySpec], window: str, data: MarketData) -> None:
    """Refuse a window with fewer bars than the longest lookback plus ``MIN_RETURNS``."""
    longest = max(specs, key=lambda s: s.lookback_bars)
    need = longest.lookback_bars + MIN_RETURNS
    if data.n_steps < need:
        raise EvaluationInputError(
            f"window {window!r} has {data.n_steps} bars; {longest.name} needs at least {need} "
            f"(lookback {longest.lookback_bars} + {MIN_RETURNS} returns)"
        )


def edged(name: str, data: MarketData, train: TimeWindow | None, source: MarketData) -> EvalWindow:
    """The walk-forward window ``name`` with what its edges hide (``envs.evaluation.edges``; ``source``:
    the data it was cut from)."""
    return EvalWindow(name, data, train, halts_at_end(data, source), first_bar_moves(data))


def slice_window(data: MarketData, window: TimeWindow) -> MarketData:
    """The bars of ``data`` inside ``window`` (closed), with the closes and listed flags of the bars
    just before it (``MarketData.close_before``: ``kelly_lite``'s sigma does not restart at the window)."""
    ts = pd.DatetimeIndex(data.ts).tz_localize("UTC")
    lo, hi = int(ts.searchsorted(window.start, "left")), int(ts.searchsorted(window.end, "right"))
    sl = slice(lo, hi)
    close_before, listed_before = bars_before_slice(data, lo)
    return replace(
        data,
        ts=data.ts[sl],
        open=data.open[sl],
        close=data.close[sl],
        listed=data.listed[sl],
        spread_bps=data.spread_bps[sl],
        dollar_volume=data.dollar_volume[sl],
        bar_dollar_volume=None if data.bar_dollar_volume is None else data.bar_dollar_volume[sl],
        features=data.features[sl],
        regime_code=data.regime_code[sl],
        feature_missing=None if data.feature_missing is None else data.feature_missing[sl],
        forecast_fallback=None if data.forecast_fallback is None else data.forecast_fallback[sl],
        listed_after=listed_after_slice(data, hi),
        close_before=close_before,
        listed_before=listed_before,
    )


def _history(
    root: Path, cfg: EvaluationConfig, specs: Sequence[PolicySpec], split_data: MarketData
) -> MarketData | None:
    """Every bar up to the split's last one: where regime bootstraps draw their blocks and the warm-up
    of the features rebuilt from stressed prices (None: no scenario asked for). A stress test replays
    past regimes, so drawing from bars before the split is no look-ahead."""
    if not cfg.scenarios:
        return None
    everything = _load(root, "all", cfg, specs)
    start, end = (pd.Timestamp(t).tz_localize("UTC") for t in (everything.ts[0], split_data.ts[-1]))
    return slice_window(everything, TimeWindow("history", start, end, 0))


def _load(root: Path, split: str, cfg: EvaluationConfig, specs: Sequence[PolicySpec]) -> MarketData:
    """``load_market_data`` of the union of the specs' features; its errors name the policies."""
    from raytrade.envs.replay_loader import load_market_data

    try:
        return load_market_data(
            root,
            split,
            cfg.symbols,
            train_fraction=cfg.train_fraction,
            validation_fraction=cfg.validation_fraction,
            embargo_bars=cfg.embargo_bars,
            feature_columns=_needed_features(specs),
        )
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        users = [s.name for s in specs if any(repr(c) in message for c in s.feature_columns)]
        if not users:
            raise
        raise EvaluationInputError(f"{', '.join(users)}: {message}") from None


def _spans(cfg: EvaluationConfig, windows: Sequence[EvalWindow], split_data: MarketData) -> list[Span]:
    """Every window a registry model is replayed on: the evaluated windows, and in walk-forward mode
    the split the stress scenarios shock (when any scenario is asked for)."""
    spans = [Span(w.name, *_ends(w.data)) for w in windows]
    if cfg.walk_forward is not None and cfg.scenarios:
        spans.append(Span(f"stress scenarios on split {cfg.split}", *_ends(split_data)))
    return spans


def _ends(data: MarketData) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(data.ts[0], tz="UTC"), pd.Timestamp(data.ts[-1], tz="UTC")


def _sample_checks(
    cfg: EvaluationConfig,
    trained: dict[str, TrainedOn],
    windows: Sequence[EvalWindow],
    split_data: MarketData,
    everything: MarketData | None,
) -> dict[str, SampleCheck]:
    """``insample.check_windows`` of every registry model, on the whole store's calendar; the
    training and validation windows' ``n_bars`` are counted on it (a window read from a manifest
    records its dates only)."""
    spans = _spans(cfg, windows, split_data)
    calendar = (
        pd.DatetimeIndex([]) if everything is None else pd.DatetimeIndex(everything.ts).tz_localize("UTC")
    )
    checks = {}
    for name, seen in trained.items():
        if seen.train is not None:
            seen = replace(seen, train=_counted(seen.train, calendar))
        if seen.validation is not None:
            seen = replace(seen, validation=_counted(seen.validation, calendar))
        checks[name] = check_windows(name, seen, spans, calendar, cfg.embargo_bars)
    return checks


def _counted(window: TimeWindow, calendar: pd.DatetimeIndex) -> TimeWindow:
    """``window`` with its ``n_bars`` counted on ``calendar`` (the store's)."""
    return replace(window, n_bars=int(((calendar >= window.start) & (calendar <= window.end)).sum()))


def _after_training(calendar: pd.DatetimeIndex, trained: dict[str, TrainedOn], embargo: int) -> int | None:
    """``walk_forward_folds``' ``min_train_bars`` whose first test bar is the first bar ``embargo``
    bars after the latest registry model's training window, or after its validation window where that
    is known (the checkpoint was chosen on it: a fold there would be selection-biased); None: no model
    has a training window."""
    ends = [
        max(t.train.end, t.validation.end) if t.validation is not None else t.train.end
        for t in trained.values()
        if t.train is not None
    ]
    if not ends:
        return None
    first = int(calendar.searchsorted(first_allowed_start(calendar, max(ends), embargo), "left"))
    if first >= len(calendar):
        raise EvaluationInputError(
            f"--after-training: the store ends {calendar[-1].date()}, {embargo} bars (the embargo) after "
            f"the latest registry model's training (and known validation) window ({max(ends).date()}) "
            "leave no bar to evaluate"
        )
    return max(1, first - embargo)


def _restrict_universe(
    store: Path, cfg: EvaluationConfig, specs: Sequence[PolicySpec]
) -> tuple[EvaluationConfig, str]:
    """``cfg`` restricted to the evaluation's universe (``envs.evaluation.universe``) and why."""
    from raytrade.replay.reader import read_frame

    stored = set(read_frame(store, "bars", columns=["symbol"])["symbol"].astype(str))
    universe = evaluation_universe(specs, cfg.symbols, stored, str(store))
    return cfg.model_copy(update={"symbols": universe.symbols}), universe.reason


def prepare(
    root: str | os.PathLike[str],
    policies: Sequence[str],
    config: EvaluationConfig | None = None,
    registry: str | os.PathLike[str] | None = None,
    loader: Loader | None = None,
) -> EvaluationPlan:
    """Check and load everything an evaluation needs (see the module docstring); no replay yet."""
    cfg = config or EvaluationConfig()
    store = Path(root)
    if not (store / "bars").is_dir():
        raise EvaluationInputError(f"{store} is not a replay store (no bars table)")
    names = list(policies)
    if cfg.benchmark not in names:
        names.append(cfg.benchmark)
    unknown = [name for name in cfg.scenarios if name not in cfg.scenario_config.scenarios]
    if unknown:
        raise EvaluationInputError(
            f"unknown scenario {unknown[0]!r}; known: {', '.join(sorted(cfg.scenario_config.scenarios))}"
        )
    twice = [name for i, name in enumerate(cfg.scenarios) if name in cfg.scenarios[:i]]
    if twice:  # refused like a repeated policy: a second run would replace the first's draws unseen
        raise EvaluationInputError(f"scenario {twice[0]!r} is listed twice")
    specs = resolve_policies(names, Path(registry) if registry is not None else None, cfg.kelly_lite, loader)
    known = set(FEATURES_SCHEMA.names)
    for spec in specs:
        unknown = [c for c in spec.feature_columns if c not in known]
        if unknown:
            raise EvaluationInputError(
                f"{spec.name} needs feature {unknown[0]!r}, which the replay store does not define"
            )
    cfg, universe = _restrict_universe(store, cfg, specs)
    needed = _needed_features(specs)
    if needed and not (store / "features").is_dir():
        users = [s.name for s in specs if s.feature_columns]
        raise EvaluationInputError(
            f"the store at {store} has no features table; {', '.join(users)} need features "
            f"{', '.join(needed)}"
        )
    split_data = _load(store, cfg.split, cfg, specs)
    check_features(store, specs, split_data)
    check_length(specs, cfg.split, split_data)
    fingerprint, n_files = data_fingerprint(store)
    trained = {s.name: s.trained_on(str(store), fingerprint) for s in specs if s.trained_on is not None}
    everything = None
    if cfg.walk_forward is not None or any(t.train is not None for t in trained.values()):
        everything = _load(store, "all", cfg, specs)
    windows: list[EvalWindow]
    if cfg.walk_forward is None:
        source = everything  # where the reopens of halts over the split's end are
        if source is None and halts_at_end(split_data):
            source = _load(store, "all", cfg, specs)
        windows = [EvalWindow(cfg.split, split_data, None, halts_at_end(split_data, source))]
    else:
        assert everything is not None
        calendar = pd.DatetimeIndex(everything.ts).tz_localize("UTC")
        min_train = max(1, round(len(calendar) * cfg.min_train_fraction))
        if cfg.after_training:
            after = _after_training(calendar, trained, cfg.embargo_bars)
            if after is None:
                raise EvaluationInputError(
                    "--after-training: no registry model among the policies has a known training window "
                    "to start the folds after (baselines train on nothing); leave the flag out"
                )
            min_train = after
        try:
            folds = walk_forward_folds(calendar, cfg.walk_forward, min_train, cfg.embargo_bars)
        except ValueError as exc:
            raise EvaluationInputError(f"--walk-forward {cfg.walk_forward}: {exc}") from None
        windows = [edged(f.test.name, slice_window(everything, f.test), f.train, everything) for f in folds]
        for w in windows:
            check_length(specs, w.name, w.data)
    check_cash_rate_covers(cfg.simulator.cash_rate, windows)
    if cfg.scenarios:  # the draws keep the split's dates
        try:
            check_cash_rate_covers(
                cfg.simulator.cash_rate, [EvalWindow(f"{cfg.split} (its stress scenarios)", split_data)]
            )
        except CashRateCoverageError as exc:
            raise CashRateCoverageError(
                f"{exc}; or evaluate without stress scenarios (--scenarios '')"
            ) from None
    checks = _sample_checks(cfg, trained, windows, split_data, everything)
    in_sample = [c for c in checks.values() if c.in_sample]
    if in_sample and not cfg.in_sample:
        spans = _spans(cfg, windows, split_data)
        raise InSampleError(
            {c.policy: refusal(c, spans) for c in in_sample},
            {c.policy: refusal(c, spans, advice=False) for c in in_sample},
        )
    for check in checks.values():
        if check.in_sample:
            log.warning("%s is evaluated IN-SAMPLE on %s", check.policy, ", ".join(check.in_sample))
        if check.warning is not None:
            log.warning("%s", check.warning)
    history = _history(store, cfg, specs, split_data)
    draws: dict[str, tuple[MarketData, ...]] = {}
    refused: dict[str, str] = {}
    # the stress paths rebuild each draw's features: minutes for a large store (a terminal sees a bar)
    shown = tqdm(cfg.scenarios, desc="stress scenarios", unit="scenario", disable=None, leave=False)
    for k, name in enumerate(shown):
        try:
            draws[name] = scenario_draws(
                name, split_data, [cfg.scenario_seed, k], cfg.scenario_config, history
            )
        except ScenarioDataError as exc:
            refused[name] = str(exc)
    return EvaluationPlan(
        spread_source=spread_text(read_feature_settings(store).unquoted_spread_bps),
        root=str(root),
        config=cfg,
        specs=tuple(specs),
        windows=tuple(windows),
        split_data=split_data,
        scenario_draws=draws,
        refused_scenarios=refused,
        fingerprint=fingerprint,
        n_files=n_files,
        sample_checks=checks,
        universe=universe,
    )


# --------------------------------------------------------------------------- evaluate


def bar_regimes(data: MarketData) -> np.ndarray:
    """``[T]`` market regime of each bar (majority over listed assets, ties to the more severe)."""
    return row_regimes(data.regime_code, np.where(data.listed, 0.0, np.nan))


def run_window(
    spec: PolicySpec, data: MarketData, seed: int, sim: SimulatorConfig, carry: AccountCarry | None = None
) -> RunSeries:
    """Replay ``spec`` built for ``data`` with ``seed`` over the whole window (one episode), the
    account starting in the drawdown state ``carry`` (the fold before's end; None: a fresh account)."""
    rollout = replay_policy(data, spec.make(data, seed), sim, n_envs=1, close_at_end=True, carry=carry)
    ruin_step = int(rollout.ruin_step[0])
    assert rollout.exit_costs is not None  # close_at_end
    return RunSeries(
        timestamps=rollout.timestamps,
        returns=rollout.returns[0],
        turnover=rollout.turnover[0],
        costs=rollout.costs[0],
        regime=bar_regimes(data)[1:],
        ruined=ruin_step >= 0,
        ruin_bar=ruin_step if ruin_step >= 0 else None,
        exit_cost=float(rollout.exit_costs[0].sum()),
        exit_bps=float(rollout.exit_bps[0]),
        risk_free=rollout.risk_free,
        interest=0.0 if rollout.interest is None else float(rollout.interest[0].sum()),
        kill_active=None if rollout.kill_active is None else rollout.kill_active[0],
        carry=None if rollout.carry is None else rollout.carry[0],
    )


def run_folds(
    spec: PolicySpec, windows: Sequence[MarketData], seed: int, sim: SimulatorConfig
) -> tuple[RunSeries, ...]:
    """:func:`run_window` on each window in order, as one account: each fold starts from fresh
    equity (flat, its book closed at the fold before's end) in the drawdown and kill-switch state the
    fold before ended in (``envs.rollout.AccountCarry``), so the loop's rule sees the pooled account's
    drawdown, not each fold's own (a 21 % drawdown across a fold boundary never tripped it)."""
    runs: list[RunSeries] = []
    carry: AccountCarry | None = None
    for data in windows:
        run = run_window(spec, data, seed, sim, carry)
        runs.append(run)
        carry = run.carry
    return tuple(runs)


def pool(series: Sequence[RunSeries]) -> RunSeries:
    """Chain runs in order (walk-forward folds, :func:`run_folds`): each fold restarts from fresh
    equity, in the drawdown state the fold before ended in.

    The chain is one account: once a fold is ruined the pooled account stays ruined, so every later
    bar has return, turnover and costs 0 (the folds keep their own series); ``ruin_bar`` is the
    ruin's index in the chained series. ``exit_cost`` / ``exit_bps`` sum the folds' exits up to the
    ruined fold (a ruined fold's is 0).

    Amounts in currency (``costs``, ``exit_cost``, ``interest``) are the account's: each fold's are
    scaled by what the pooled account had grown to at the fold's start, since the fold itself ran
    from fresh equity. Summed as they were, a pooled account that grew 3.5x over three folds
    reported 42 % less in costs than it paid (its returns were the account's all along).
    """
    if len(series) == 1:
        return series[0]
    timestamps, returns, turnover, _, regime = (
        np.concatenate(parts) for parts in zip(*(_fields(s) for s in series), strict=True)
    )
    growth, scaled = 1.0, []
    offset, ruin_bar, exit_cost, exit_bps, interest = 0, None, 0.0, 0.0, 0.0
    for s in series:
        scaled.append(s.costs * growth)
        exit_cost, exit_bps = exit_cost + s.exit_cost * growth, exit_bps + s.exit_bps
        interest += s.interest * growth
        growth *= float(np.prod(1.0 + s.returns))
        if s.ruin_bar is not None:
            ruin_bar = offset + s.ruin_bar
            break
        offset += len(s.returns)
    costs = np.concatenate([*scaled, *(s.costs * 0.0 for s in series[len(scaled) :])])
    risk_free = np.concatenate([_risk_free(s) for s in series])
    recorded = any(s.kill_active is not None for s in series)
    kill_active = np.concatenate([_kill_active(s) for s in series]) if recorded else None
    if ruin_bar is not None:
        returns[ruin_bar + 1 :] = 0.0
        turnover[ruin_bar + 1 :] = 0.0
        costs[ruin_bar + 1 :] = 0.0
        if kill_active is not None:
            kill_active[ruin_bar + 1 :] = False
    return RunSeries(
        timestamps,
        returns,
        turnover,
        costs,
        regime,
        ruined=ruin_bar is not None,
        ruin_bar=ruin_bar,
        exit_cost=exit_cost,
        exit_bps=exit_bps,
        risk_free=risk_free,
        interest=interest,
        kill_active=kill_active,
        carry=None if ruin_bar is not None else series[-1].carry,
    )


def _kill_active(s: RunSeries) -> np.ndarray:
    return np.zeros(len(s.returns), dtype=bool) if s.kill_active is None else s.kill_active


def _fields(s: RunSeries) -> tuple[np.ndarray, ...]:
    return (s.timestamps, s.returns, s.turnover, s.costs, s.regime)


def _risk_free(s: RunSeries) -> np.ndarray:
    return np.zeros(len(s.returns)) if s.risk_free is None else s.risk_free


def evaluate_policy(spec: PolicySpec, plan: EvaluationPlan) -> PolicyResult:
    """All runs of one policy: each seed on every window, and the first seed on every scenario draw."""
    cfg = plan.config
    seeds = cfg.seeds if spec.stochastic else cfg.seeds[:1]
    by_seed: dict[int, RunSeries] = {}
    folds: tuple[RunSeries, ...] = ()
    for seed in seeds:
        runs = run_folds(spec, [w.data for w in plan.windows], seed, cfg.simulator)
        by_seed[seed] = pool(runs)
        if seed == seeds[0]:
            folds = runs
    stress_draws = {
        name: tuple(run_window(spec, data, seeds[0], cfg.simulator) for data in draws)
        for name, draws in plan.scenario_draws.items()
    }
    return PolicyResult(spec, tuple(seeds), by_seed[seeds[0]], folds, by_seed, stress_draws)


def evaluate(plan: EvaluationPlan) -> EvaluationResult:
    """Replay every policy of ``plan`` (see ``evaluate_policy``)."""
    specs = tqdm(plan.specs, desc="evaluate", unit="policy", disable=None, leave=False)  # a bar on a terminal
    return EvaluationResult(plan, {spec.name: evaluate_policy(spec, plan) for spec in specs})
