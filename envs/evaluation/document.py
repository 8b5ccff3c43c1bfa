"""The evaluation report as a typed document: ``EvaluationReport`` and ``build_report``.

Contract
--------
* ``report.json`` is ``EvaluationReport.model_dump_json``; ``read_report`` reads it back with
  ``model_validate_json`` and gets an equal document. A file with a missing or mistyped field is
  refused with a ``pydantic.ValidationError`` naming the field's path.
* Per policy it holds the per-period series it reports (``timestamps`` as ISO dates, net simple
  ``returns``, ``turnover``, ``costs_per_period`` in currency, and ``risk_free``, what cash earned per
  period, where cash earned anything) and every metric computed from exactly those series with
  ``envs.metrics.summarize`` (so they recompute exactly).
* Every run ends by closing its book at the window's last close (``envs.evaluation.harness``: the
  rule); the series, metrics and cost breakdown include that exit, and each run says what it was on
  its own: ``exit_cost`` (currency) and ``exit_cost_bps`` (bps of the equity it was charged to; a
  pooled walk-forward series sums its folds').
* Undefined values (NaN, inf) are ``None`` in the document and ``null`` in the file: every number
  that can be undefined is typed ``float | None``, and the models refuse NaN / inf outright
  (``allow_inf_nan=False``), so the file is always valid JSON.
* Same inputs give byte-identical JSON: no wall-clock times (only the rendered report may mention
  the run time), fields and keys in a fixed order.
* Bootstrap intervals of the Sharpe / Sortino *difference* to the benchmark use one seeded set of
  stationary-bootstrap indices for all policies (``envs.evaluation.stats``).
* Per-regime metrics use the market regime of the bar each return is earned at (calm / choppy /
  crisis from ``MarketData.regime_code``); each regime's returns are concatenated in time order, so
  its drawdown figures describe that concatenation, not a contiguous period.
* Stress: every requested scenario is listed in ``stress_scenarios`` with its definition and, when
  the data could not carry it, ``refused`` (the reason); each policy's ``stress`` holds exactly the
  scenarios that ran. A scenario that ran is reported over its K draws: every draw's ``RunReport``
  and, per metric, the mean / std (ddof 1, None with one draw) / min / max over the draws where the
  metric is defined (``Spread``, as for seeds). One draw is one path, not a stress result.

* Out of sample: a registry model's ``sample`` (``SampleReport``) holds its training window, the
  first bar an out-of-sample window may start on, the windows evaluated IN-SAMPLE (only with
  ``config.in_sample``; ``FoldReport.in_sample``), its validation window where determinable and the
  windows overlapping it (selection-biased), or why its training window is unknown (``warning``).
  Each fold's ``train`` is the model's training window for a registry model, the fold's otherwise.
  ``ranked`` lists IN-SAMPLE policies after all the others.

Shape: every replayed run (the pooled main series, each walk-forward fold, each stress scenario)
is reported as a ``RunReport`` (or a subclass of it) built by ``run_report``, so a new per-run fact
(e.g. whether the run ended in ruin) is one field there and one line in ``run_report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raytrade.envs.cash_rate import CashRate, rates_agree, stale_rate
from raytrade.envs.costs import COST_COMPONENTS, CostConfig
from raytrade.envs.evaluation.edges import EDGE_MOVE, HaltAtEnd
from raytrade.envs.evaluation.harness import (
    EvaluationConfig,
    EvaluationResult,
    EvalWindow,
    PolicyResult,
    RunSeries,
)
from raytrade.envs.evaluation.insample import SampleCheck
from raytrade.envs.evaluation.moves import large_moves
from raytrade.envs.evaluation.policies import PolicySpec
from raytrade.envs.evaluation.stats import difference_ci, stationary_indices
from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.envs.market_data import MarketData, last_listed_bar
from raytrade.envs.metrics import summarize
from raytrade.envs.scenarios import Scenario
from raytrade.replay.splits import TimeWindow

REPORT_SCHEMA: Final = "raytrade.evaluation/8"
"""Version of the report layout; bump it when a field changes meaning or is removed. 8: each run says
where the drawdown kill switch was on (``RunReport.kill_switch_bars`` / ``kill_switch_from``, and a
warning), a registry model evaluated on bars its checkpoint was chosen on has the status
``selection_biased`` (it was ``out_of_sample`` with ``validation_overlap``), and ``large_moves`` lists
the windows' moves of ``envs.evaluation.moves.LARGE_MOVE`` or more; no figure changed (a file before
/8 reads with null counts and no moves listed). The crisis scenarios' default definitions gained a
volatility ceiling (``max_vol``) at the same time: each report's ``stress_scenarios`` records the
definition its draws used. 7: each window
lists the symbols halted over its end (``FoldReport.halted_at_end``, with the reopen's move), and
``warnings`` names them and the large moves on a pooled fold's first bar (``envs.evaluation.edges``);
no figure changed (a file before /7 reads with none listed). 6: idle cash earns
``config.simulator.cash_rate`` and the Sharpe and Sortino ratios (and their bootstrap differences) and
the hit rate are of returns over it (a file before /6 reads with a rate of 0, what its figures used).
5: a position whose symbol's bars stop inside a window is closed at its last close paying that exit's
costs (it was free), each window lists those symbols (``FoldReport.bars_stop``), and ``warnings`` says
what the figures cannot carry (a window too short to annualise, symbols whose bars stop). 4: every run
closes its book at the window's end, returns and costs include that exit, ``exit_cost`` and
``exit_cost_bps`` added. 3: a registry model's fold ``train`` is its own training window, ``sample``
and ``FoldReport.in_sample`` added. A /3 or /2 file still reads (its returns are marked to market
without the exit, ``exit_cost`` / ``exit_cost_bps`` null; a /2 file's ``sample`` None and its registry
folds' ``train`` the fold's); before /5, ``bars_stop`` and ``warnings`` are empty and the forced close
of a symbol whose bars stop was free."""

ANNUALISE_FRACTION: Final = 0.25
"""A window with fewer returns than this fraction of a year (63 daily bars) gets a report warning:
its annual return, volatility, Sharpe, Sortino and Calmar extrapolate a few weeks to a year."""

Number = float | None
"""A figure that may be undefined (a ratio without dispersion, an empty window): ``None`` then."""


class Document(BaseModel):
    """Base of every report model: immutable, no unknown fields, no NaN / inf."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------- per-run figures


class Metrics(Document):
    """``envs.metrics.summarize`` of one run: returns are fractions, ratios annualised."""

    total_return: Number
    annual_return: Number
    volatility: Number
    sharpe: Number
    sortino: Number
    max_drawdown: Number = Field(description="fraction, <= 0")
    max_drawdown_duration: Number = Field(description="bars")
    cvar_5: Number
    tail_hit_rate: Number
    turnover: Number
    costs_paid: Number = Field(description="currency")
    hit_rate: Number
    calmar: Number


class CostBreakdown(Document):
    """Total cost per component of ``envs.costs.COST_COMPONENTS`` and in all, currency."""

    fee: Number
    spread: Number
    slippage: Number
    financing: Number
    total: Number

    def components(self) -> tuple[tuple[str, Number], ...]:
        """``(name, amount)`` per component and ``total`` last, in ``COST_COMPONENTS`` order."""
        return tuple(self.model_dump().items())


class RunReport(Document):
    """What is reported of one replayed run. Subclasses add where the run came from."""

    metrics: Metrics
    costs: CostBreakdown
    ruined: bool = Field(False, description="the account was ruined: liquidated, flat afterwards")
    ruin_date: str | None = Field(None, description="ISO date of the ruin bar (null: never ruined)")
    exit_cost: Number = Field(
        None,
        description="currency: closing the book at the window's last close, already in the returns and "
        "costs (pooled folds: summed); null in a file before schema /4 (no exit charged)",
    )
    exit_cost_bps: Number = Field(
        None,
        description="that cost in bps of the equity it was charged to (pooled folds: summed); null "
        "before schema /4",
    )
    interest: Number = Field(
        None,
        description="currency: what idle cash earned over the run at config.simulator.cash_rate, in the "
        "returns and not in the costs (pooled folds: summed); null before schema /6",
    )
    kill_switch_bars: int | None = Field(
        None,
        ge=0,
        description="decisions taken with the drawdown kill switch on (config.simulator.kill_switch): "
        "there the policy could only shrink positions, so these figures are the policy under the "
        "account's rule (pooled folds: summed); null before schema /8",
    )
    kill_switch_from: str | None = Field(
        None,
        description="the first such step's bar, as in timestamps (the bar it earns at; it was decided "
        "at the close before): null when there is none, or before schema /8",
    )


class RegimeReport(Document):
    """Returns earned in one market regime (concatenated in time order)."""

    n_bars: int = Field(ge=0)
    metrics: Metrics


class Regimes(Document):
    calm: RegimeReport
    choppy: RegimeReport
    crisis: RegimeReport

    def by_name(self) -> tuple[tuple[str, RegimeReport], ...]:
        """``(regime, report)`` in ``REGIMES`` order (calm, choppy, crisis = codes 0, 1, 2)."""
        return (("calm", self.calm), ("choppy", self.choppy), ("crisis", self.crisis))


REGIMES: tuple[str, ...] = tuple(Regimes.model_fields)
"""Regime names in code order: ``REGIMES[code]`` names ``MarketData.regime_code == code``."""


class Spread(Document):
    """One metric across seeds (or stress draws), over the runs where it is defined (std: ddof 1,
    needs two)."""

    mean: Number
    std: Number
    min: Number
    max: Number


class SeedSummary(Document):
    """``Spread`` of the key metrics; its fields are ``SEED_METRICS``."""

    total_return: Spread
    annual_return: Spread
    sharpe: Spread
    sortino: Spread
    max_drawdown: Spread
    cvar_5: Spread


SEED_METRICS: tuple[str, ...] = tuple(SeedSummary.model_fields)


class StressSummary(Document):
    """``Spread`` over a scenario's draws of every ``Metrics`` field (same names, same units)."""

    total_return: Spread
    annual_return: Spread
    volatility: Spread
    sharpe: Spread
    sortino: Spread
    max_drawdown: Spread
    max_drawdown_duration: Spread
    cvar_5: Spread
    tail_hit_rate: Spread
    turnover: Spread
    costs_paid: Spread
    hit_rate: Spread
    calmar: Spread


class StressReport(Document):
    """One policy on one stress scenario: each draw's run (draw ``j`` seeded as in
    ``envs.scenarios.scenario_draws``) and the spread of every metric over the draws."""

    n_draws: int = Field(ge=1)
    summary: StressSummary
    draws: tuple[RunReport, ...]

    @model_validator(mode="after")
    def _one_run_per_draw(self) -> StressReport:
        if len(self.draws) != self.n_draws:
            raise ValueError(f"n_draws={self.n_draws} but {len(self.draws)} draws are reported")
        return self


class StressScenario(Document):
    """A requested stress scenario: its definition, and why this data could not carry it (``refused``;
    None when it ran, and then every policy's ``stress`` reports it)."""

    definition: Scenario
    refused: str | None = Field(description="reason the scenario could not be built on this data")


class SeedRun(Document):
    seed: int
    metrics: Metrics


class SeedSpread(Document):
    """Per-seed metrics of the pooled series and their spread (one seed for deterministic policies)."""

    seeds: tuple[int, ...] = Field(min_length=1)
    per_seed: tuple[SeedRun, ...]
    summary: SeedSummary


class Window(Document):
    """A closed window: ISO dates (ISO seconds for intraday bars) and its bar count."""

    start: str
    end: str
    n_bars: int = Field(ge=0)


class BarsStop(Document):
    """A symbol whose last real bar falls before its window's last bar."""

    symbol: str
    last_date: str = Field(description="ISO date of its last real bar in the data")


class HaltReport(Document):
    """A symbol halted over its window's end (``envs.evaluation.edges.HaltAtEnd``)."""

    symbol: str
    last_date: str = Field(description="ISO date of its last real bar in the window")
    reopen_date: str | None = Field(
        description="ISO date of its first real bar after the window (None: not in the data loaded)"
    )
    move: Number = Field(description="that bar's open over the last real close, minus 1 (None: unknown)")


class FoldReport(RunReport):
    """One walk-forward fold (or the single split): its test window and training window."""

    name: str
    train: Window | None = Field(
        description="training window: a registry model's own (None: unknown or synthetic data), else the "
        "fold's (walk-forward only)"
    )
    test: Window
    in_sample: bool = Field(
        False, description="a registry model evaluated on bars it trained on (--in-sample)"
    )
    bars_stop: tuple[BarsStop, ...] = Field(
        (),
        description="symbols whose bars stop inside the window (a delisting, a feed that ends): a position "
        "still held was closed at that last close, paying the exit's costs (empty before schema /5)",
    )
    halted_at_end: tuple[HaltReport, ...] = Field(
        (),
        description="symbols with no bar over the window's last bars that trade again after it (a halt "
        "outlasting the window): a position still held was valued and closed at its last close, which "
        "nothing traded at, and the reopen's move is in no window (empty before schema /7)",
    )


SampleStatus = Literal[
    "out_of_sample", "selection_biased", "IN-SAMPLE", "unchecked", "synthetic", "walk_forward"
]


class SampleReport(Document):
    """A registry model's out-of-sample check (``envs.evaluation.insample``)."""

    status: SampleStatus = Field(
        description="IN-SAMPLE: evaluated on bars it trained on (--in-sample), never an out-of-sample "
        "result; selection_biased: windows overlap the validation window its checkpoint was chosen on "
        "(schema /8 on; before, out_of_sample with validation_overlap); unchecked: its training window "
        "is unknown; synthetic: it trained on no store's bars; walk_forward: fold models, each trained "
        "before its own test window (checked when planned)"
    )
    train: Window | None = Field(description="the model's training window (None: unknown or synthetic)")
    how: str = Field(description="how the training window is known, or why it is not")
    first_allowed_start: str | None = Field(description="first bar an out-of-sample window may start on")
    in_sample_windows: tuple[str, ...] = Field(description="evaluated windows starting before it")
    validation: Window | None = Field(
        description="window its checkpoint was chosen on (None: not determinable, see the README)"
    )
    validation_overlap: tuple[str, ...] = Field(
        description="evaluated windows overlapping it: selection-biased"
    )
    warning: str | None


class DifferenceInterval(Document):
    """``ratio(policy) - ratio(benchmark)`` and its bootstrap interval; ``n_valid`` kept samples."""

    estimate: Number
    low: Number
    high: Number
    n_valid: int = Field(ge=0)


class Comparison(Document):
    benchmark: str
    sharpe_diff: DifferenceInterval
    sortino_diff: DifferenceInterval


class PolicyReport(RunReport):
    """One policy: ``metrics`` and ``costs`` of its main series (first seed, pooled folds), the series
    themselves, and its regimes, seeds, folds, stress runs and comparison to the benchmark."""

    kind: Literal["baseline", "registry"]
    stochastic: bool
    manifest: str | None = Field(description="registry models: path of manifest.json")
    timestamps: tuple[str, ...]
    returns: tuple[Number, ...] = Field(description="net simple return per period")
    turnover: tuple[Number, ...] = Field(description="traded notional / equity per period")
    costs_per_period: tuple[Number, ...] = Field(description="currency")
    risk_free: tuple[Number, ...] = Field(
        (),
        description="per period, what idle cash earned (config.simulator.cash_rate): the Sharpe and "
        "Sortino ratios are of returns over it; empty when cash earned nothing (and before /6)",
    )
    regimes: Regimes
    seeds: SeedSpread
    folds: tuple[FoldReport, ...]
    stress: dict[str, StressReport] = Field(description="the scenarios that ran (not refused)")
    vs_benchmark: Comparison
    ruined_runs: tuple[str, ...] = Field(
        (), description="runs of this policy that ended in ruin: 'seed S', 'stress NAME draw K'"
    )
    sample: SampleReport | None = Field(None, description="registry models: the out-of-sample check")

    @model_validator(mode="after")
    def _one_rate_per_return(self) -> PolicyReport:
        if self.risk_free and len(self.risk_free) != len(self.returns):
            raise ValueError(
                f"risk_free has {len(self.risk_free)} values for {len(self.returns)} returns (one per period)"
            )
        return self

    @property
    def in_sample(self) -> bool:
        """Evaluated on bars it trained on: its figures are no out-of-sample claim."""
        return self.sample is not None and self.sample.status == "IN-SAMPLE"

    @property
    def selection_biased(self) -> bool:
        """Evaluated on bars its checkpoint was chosen on (``validation_overlap``): no clean claim either."""
        return self.sample is not None and bool(self.sample.validation_overlap) and not self.in_sample


class ReplaySource(Document):
    """The replay store evaluated: where, exactly which files (sha256 over bars and features)."""

    root: str
    fingerprint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    n_files: int = Field(ge=0)
    symbols: tuple[str, ...]
    asset_class: tuple[str, ...]
    universe: str | None = Field(
        None, description="why these symbols: a registry model's trained universe, or the whole store"
    )
    spread_source: str | None = Field(
        None,
        description="where the store's spreads on bars without a quote came from (replay.feature_settings."
        "spread_text); None: a report from before it was recorded",
    )


class LargeMoveReport(Document):
    """A move of at least ``envs.evaluation.moves.LARGE_MOVE`` in an evaluated window (``large_moves``)."""

    window: str = Field(description="the evaluated window (the split's name, or a walk-forward fold's)")
    symbol: str
    date: str = Field(description="ISO date of the bar of the move")
    move: float = Field(description="the bar's close over the symbol's last real close before it, minus 1")
    bars_missing: int = Field(
        ge=0, description="bars between the two with no real bar of the symbol (a halt, a hole; 0: none)"
    )


class EvaluationReport(Document):
    """``report.json``: what was evaluated, how, and every policy's results."""

    report_schema: Literal[
        "raytrade.evaluation/8",
        "raytrade.evaluation/7",
        "raytrade.evaluation/6",
        "raytrade.evaluation/5",
        "raytrade.evaluation/4",
        "raytrade.evaluation/3",
        "raytrade.evaluation/2",
    ] = Field(REPORT_SCHEMA, alias="schema")
    replay: ReplaySource
    mode: Literal["split", "walk_forward"]
    split: str
    periods_per_year: int = Field(gt=0)
    config: EvaluationConfig
    cost_model: CostConfig
    stress_scenarios: dict[str, StressScenario]
    benchmark: str
    policies: dict[str, PolicyReport] = Field(min_length=1)
    warnings: tuple[str, ...] = Field(
        (),
        description="what the figures cannot carry: a window too short to annualise, symbols whose bars "
        "stop inside a window, a cash-rate file that ends before the window (empty before schema /5)",
    )
    large_moves: tuple[LargeMoveReport, ...] = Field(
        (),
        description="every move of at least envs.evaluation.moves.LARGE_MOVE in the evaluated windows, "
        "in window and bar order: the events every policy lived through (empty before schema /8)",
    )

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, serialize_by_alias=True)

    @model_validator(mode="after")
    def _stress_of_every_scenario_that_ran(self) -> EvaluationReport:
        ran = [name for name, sc in self.stress_scenarios.items() if sc.refused is None]
        for name, policy in self.policies.items():
            if list(policy.stress) != ran:
                raise ValueError(
                    f"policies.{name}.stress reports {list(policy.stress)}; the scenarios that ran are {ran}"
                )
        return self

    def ranked(self) -> list[str]:
        """Policy names by Sharpe, best first; an undefined Sharpe last (ties keep report order), then
        every selection-biased policy, then every IN-SAMPLE one (their figures are no clean claim)."""

        def key(name: str) -> tuple[bool, bool, int, float]:
            p = self.policies[name]
            s = p.metrics.sharpe
            return (p.in_sample, p.selection_biased, *((1, 0.0) if s is None else (0, -s)))

        return sorted(self.policies, key=key)

    def largest_moves(self) -> list[LargeMoveReport]:
        """``large_moves``, largest first (the report's table, the nightly's line)."""
        return sorted(self.large_moves, key=lambda m: -abs(m.move))

    def label(self, name: str) -> str:
        """The policy's name as every table shows it: marked IN-SAMPLE where its figures came from
        bars it trained on, SELECTION-BIASED where from bars its checkpoint was chosen on."""
        policy = self.policies[name]
        if policy.in_sample:
            return f"{name} [IN-SAMPLE]"
        return f"{name} [SELECTION-BIASED]" if policy.selection_biased else name


# --------------------------------------------------------------------------- numbers


def _num(value: float) -> Number:
    """A finite float, or None for NaN / inf (JSON has neither)."""
    v = float(value)
    return v if math.isfinite(v) else None


def _nums(values: np.ndarray) -> tuple[Number, ...]:
    return tuple(_num(v) for v in np.asarray(values, dtype=np.float64).tolist())


def iso_dates(ts: np.ndarray) -> list[str]:
    """ISO dates (``YYYY-MM-DD``), or ISO seconds when some bar is not at midnight (intraday)."""
    daily = bool((ts.astype("datetime64[D]") == ts).all())
    return [str(s) for s in np.datetime_as_string(ts, unit="D" if daily else "s")]


# --------------------------------------------------------------------------- series -> documents


def series_metrics(series: RunSeries, periods_per_year: float) -> Metrics:
    """``envs.metrics.summarize`` of the series' returns, turnover and per-period total costs."""
    raw = summarize(
        series.returns,
        periods_per_year,
        turnover=series.turnover,
        costs=series.costs.sum(-1),
        risk_free=0.0 if series.risk_free is None else series.risk_free,
    )
    return Metrics.model_validate({k: _num(v) for k, v in raw.items()})


def cost_breakdown(series: RunSeries) -> CostBreakdown:
    """Total cost per component and in all, currency."""
    totals = series.costs.sum(axis=0)
    parts = {name: _num(v) for name, v in zip(COST_COMPONENTS, totals.tolist(), strict=True)}
    return CostBreakdown.model_validate({**parts, "total": _num(float(totals.sum()))})


def run_report(series: RunSeries, periods_per_year: float) -> RunReport:
    """The per-run figures every reported run carries (see the module docstring)."""
    ruin_date = None if series.ruin_bar is None else iso_dates(series.timestamps[[series.ruin_bar]])[0]
    return RunReport(
        metrics=series_metrics(series, periods_per_year),
        costs=cost_breakdown(series),
        ruined=series.ruined,
        ruin_date=ruin_date,
        exit_cost=_num(series.exit_cost),
        exit_cost_bps=_num(series.exit_bps),
        interest=_num(series.interest),
        kill_switch_bars=None if series.kill_active is None else int(series.kill_active.sum()),
        kill_switch_from=_first_date(series.timestamps, series.kill_active),
    )


def _first_date(timestamps: np.ndarray, flags: np.ndarray | None) -> str | None:
    """ISO date of the first bar where ``flags`` is set (None: none, or nothing recorded)."""
    if flags is None or not flags.any():
        return None
    return iso_dates(timestamps[[int(np.argmax(flags))]])[0]


def regime_metrics(series: RunSeries, periods_per_year: float) -> Regimes:
    """Metrics of the returns earned in each regime (see the module docstring)."""
    out = {}
    for code, name in enumerate(REGIMES):
        m = series.regime == code
        sub = RunSeries(
            series.timestamps[m],
            series.returns[m],
            series.turnover[m],
            series.costs[m],
            series.regime[m],
            risk_free=None if series.risk_free is None else series.risk_free[m],
        )
        out[name] = RegimeReport(n_bars=int(m.sum()), metrics=series_metrics(sub, periods_per_year))
    return Regimes.model_validate(out)


def _spread(values: np.ndarray) -> Spread:
    finite = values[np.isfinite(values)]
    return Spread(
        mean=_num(finite.mean()) if finite.size else None,
        std=_num(finite.std(ddof=1)) if finite.size > 1 else None,
        min=_num(finite.min()) if finite.size else None,
        max=_num(finite.max()) if finite.size else None,
    )


def _spreads(runs: Sequence[Metrics], keys: Sequence[str]) -> dict[str, Spread]:
    """``Spread`` of each metric in ``keys`` over ``runs`` (None values count as undefined)."""
    return {key: _spread(np.array([getattr(m, key) for m in runs], dtype=np.float64)) for key in keys}


def seed_spread(policy: PolicyResult, periods_per_year: float) -> SeedSpread:
    """Per-seed key metrics and their mean / std (ddof 1) / min / max across seeds."""
    per_seed = [
        SeedRun(seed=s, metrics=series_metrics(policy.by_seed[s], periods_per_year)) for s in policy.seeds
    ]
    summary = _spreads([run.metrics for run in per_seed], SEED_METRICS)
    return SeedSpread(
        seeds=policy.seeds, per_seed=tuple(per_seed), summary=SeedSummary.model_validate(summary)
    )


def stress_report(draws: Sequence[RunSeries], periods_per_year: float) -> StressReport:
    """Every draw's ``run_report`` and the spread of every metric over the draws."""
    runs = tuple(run_report(run, periods_per_year) for run in draws)
    summary = _spreads([run.metrics for run in runs], tuple(StressSummary.model_fields))
    return StressReport(n_draws=len(runs), summary=StressSummary.model_validate(summary), draws=runs)


def _window_of(window: TimeWindow | None) -> Window | None:
    if window is None:
        return None
    return Window(
        start=window.start.date().isoformat(), end=window.end.date().isoformat(), n_bars=window.n_bars
    )


def sample_report(check: SampleCheck, in_sample_allowed: bool) -> SampleReport:
    """The report's view of a registry model's out-of-sample check."""
    seen = check.trained_on
    status: SampleStatus
    if not seen.known:
        status = "unchecked"
    elif seen.walk_forward:
        status = "walk_forward"
    elif seen.train is None:
        status = "synthetic"
    elif check.in_sample:
        assert in_sample_allowed  # prepare refuses in-sample windows without it
        status = "IN-SAMPLE"
    elif check.validation_overlap:
        status = "selection_biased"
    else:
        status = "out_of_sample"
    return SampleReport(
        status=status,
        train=_window_of(seen.train),
        how=seen.how,
        first_allowed_start=None if check.first_allowed is None else check.first_allowed.date().isoformat(),
        in_sample_windows=check.in_sample,
        validation=_window_of(seen.validation),
        validation_overlap=check.validation_overlap,
        warning=check.warning,
    )


def _interval(
    returns: np.ndarray,
    bench: np.ndarray,
    ppy: float,
    ratio: Literal["sharpe", "sortino"],
    indices: np.ndarray,
    level: float,
) -> DifferenceInterval:
    ci = difference_ci(returns, bench, ppy, ratio, indices, level)
    return DifferenceInterval(
        estimate=_num(ci.estimate), low=_num(ci.low), high=_num(ci.high), n_valid=ci.n_valid
    )


def build_report(result: EvaluationResult) -> EvaluationReport:
    """The ``report.json`` document of an evaluation (see the module docstring)."""
    plan, cfg = result.plan, result.plan.config
    ppy = plan.periods_per_year
    bench_series = result.policies[cfg.benchmark].main
    bench = bench_series.excess  # the ratios are of returns over the cash rate
    boot = cfg.bootstrap
    indices = stationary_indices(bench.size, boot.samples, boot.block_len, np.random.default_rng(boot.seed))
    policies: dict[str, PolicyReport] = {}
    for name, res in result.policies.items():
        main = res.main
        check = plan.sample_checks.get(name)
        sample = None if check is None else sample_report(check, cfg.in_sample)
        folds = tuple(
            FoldReport(
                **dict(run_report(run, ppy)),
                name=w.name,
                train=_window_of(w.train) if check is None else _window_of(check.trained_on.train),
                in_sample=check is not None and w.name in check.in_sample,
                test=Window(
                    start=iso_dates(w.data.ts[:1])[0], end=iso_dates(w.data.ts[-1:])[0], n_bars=w.data.n_steps
                ),
                bars_stop=bars_stop(w.data),
                halted_at_end=tuple(halt_report(h) for h in w.halted_at_end),
            )
            for w, run in zip(plan.windows, res.folds, strict=True)
        )
        policies[name] = PolicyReport(
            **dict(run_report(main, ppy)),
            ruined_runs=res.ruined_runs,
            sample=sample,
            kind=res.spec.kind,
            stochastic=res.spec.stochastic,
            manifest=res.spec.manifest,
            timestamps=tuple(iso_dates(main.timestamps)),
            returns=_nums(main.returns),
            turnover=_nums(main.turnover),
            costs_per_period=_nums(main.costs.sum(-1)),
            risk_free=() if main.risk_free is None or not main.risk_free.any() else _nums(main.risk_free),
            regimes=regime_metrics(main, ppy),
            seeds=seed_spread(res, ppy),
            folds=folds,
            stress={sc: stress_report(runs, ppy) for sc, runs in res.stress_draws.items()},
            vs_benchmark=Comparison(
                benchmark=cfg.benchmark,
                sharpe_diff=_interval(main.excess, bench, ppy, "sharpe", indices, boot.level),
                sortino_diff=_interval(main.excess, bench, ppy, "sortino", indices, boot.level),
            ),
        )
    data = plan.split_data
    return EvaluationReport(
        replay=ReplaySource(
            root=plan.root,
            fingerprint_sha256=plan.fingerprint,
            n_files=plan.n_files,
            symbols=tuple(data.symbols),
            asset_class=tuple(data.asset_class),
            universe=plan.universe,
            spread_source=plan.spread_source,
        ),
        mode="split" if cfg.walk_forward is None else "walk_forward",
        split=cfg.split,
        periods_per_year=ppy,
        config=cfg,
        cost_model=cfg.simulator.costs,
        stress_scenarios={
            name: StressScenario(
                definition=cfg.scenario_config.get(name), refused=plan.refused_scenarios.get(name)
            )
            for name in cfg.scenarios
        },
        benchmark=cfg.benchmark,
        policies=policies,
        warnings=data_warnings(policies[cfg.benchmark], ppy)
        + kill_switch_warnings(policies, cfg.benchmark, cfg.simulator.kill_switch)
        + edge_warnings(policies[cfg.benchmark].folds, plan.windows)
        + rate_warnings(cfg, bench_series.timestamps, plan.specs, plan.sample_checks),
        large_moves=tuple(
            LargeMoveReport(
                window=w.name,
                symbol=m.symbol,
                date=iso_dates(np.array([m.date]))[0],
                move=m.move,
                bars_missing=m.bars_missing,
            )
            for w in plan.windows
            for m in large_moves(w.data)
        ),
    )


def rate_warnings(
    cfg: EvaluationConfig,
    timestamps: np.ndarray,
    specs: Sequence[PolicySpec],
    checks: Mapping[str, SampleCheck],
) -> tuple[str, ...]:
    """The cash rate's warnings: the evaluated bars run past the file it was read from
    (``envs.cash_rate.stale_rate``), and a registry model that trained with cash earning another rate
    than this replay credits (its decisions assumed a yield this replay does not pay, or the reverse).
    The rates are compared day by day (``envs.cash_rate.rates_agree``) over the model's training and
    validation window when ``checks`` (registry models by name) knows it, else over the evaluated bars,
    from the first day both rates cover: a rate file kept current (rows added since the model trained)
    is the same rate."""
    rate = cfg.simulator.cash_rate
    stale = stale_rate(rate, timestamps[-1]) if len(timestamps) else None
    lines = [] if stale is None else [stale]
    evaluated = [(_day(timestamps[0]), _day(timestamps[-1]))] if len(timestamps) else []
    for spec in specs:
        trained = spec.cash_rate
        if trained is None:
            continue
        seen = checks[spec.name].trained_on if spec.name in checks else None
        spans = list(evaluated)  # the training window first, when known
        if seen is not None and seen.train is not None:
            last = seen.validation or seen.train
            spans.insert(0, (seen.train.start.date(), last.end.date()))
        covered = [c for c in (_covered(trained, rate, *span) for span in spans) if c is not None]
        if covered and rates_agree(trained, rate, *covered[0]):
            continue
        lines.append(
            f"{spec.name} trained with idle cash earning {trained.describe()}, and this evaluation "
            f"credits {rate.describe()}: pass the rate it trained with (--cash-rate / --cash-rates) to "
            "judge it on the terms it learnt"
        )
    return tuple(lines)


def _day(ts: np.datetime64) -> date:
    day: date = ts.astype("datetime64[D]").item()
    return day


def _covered(a: CashRate, b: CashRate, start: date, end: date) -> tuple[date, date] | None:
    """``start..end`` from the first day both rates cover (a schedule: its first date), None when
    nothing of it is left."""
    first = max([start, *(r.schedule[0].start for r in (a, b) if r.schedule)])
    return (first, end) if first <= end else None


def bars_stop(data: MarketData) -> tuple[BarsStop, ...]:
    """The symbols of ``data`` whose last real bar (``market_data.last_listed_bar``) falls before its
    last bar: the simulator closes a position in them there (``envs.simulator``)."""
    last = last_listed_bar(data.listed, data.listed_after)
    stops = np.flatnonzero((last >= 0) & (last < data.n_steps - 1))
    dates = iso_dates(data.ts[last[stops]]) if stops.size else []
    return tuple(
        BarsStop(symbol=data.symbols[j], last_date=d) for j, d in zip(stops.tolist(), dates, strict=True)
    )


def halt_report(halt: HaltAtEnd) -> HaltReport:
    reopen = None if halt.reopen_date is None else iso_dates(np.array([halt.reopen_date]))[0]
    return HaltReport(
        symbol=halt.symbol,
        last_date=iso_dates(np.array([halt.last_date]))[0],
        reopen_date=reopen,
        move=_num(halt.move) if halt.move is not None else None,
    )


def kill_switch_warnings(
    policies: Mapping[str, PolicyReport], benchmark: str, rule: KillSwitchConfig
) -> tuple[str, ...]:
    """One warning naming every policy whose main series (first seed, pooled folds) or stress draws
    decided bars with the drawdown kill switch on: there it could only shrink positions, so a
    baseline is not its plain allocation (an ``equal_weight`` rebalance half done: trimmed winners,
    losers left short of their weight), and a crisis draw's figures are the policy under the switch.
    Every policy runs under the same account rule, the loop's; the warning says where it bit."""
    each = [
        f"{name}{' (the benchmark)' if name == benchmark else ''} "
        f"{p.kill_switch_bars} from {p.kill_switch_from}"
        for name, p in policies.items()
        if p.kill_switch_bars
    ]
    stressed = [line for line in (_stress_hits(name, p) for name, p in policies.items()) if line]
    if not each and not stressed:
        return ()
    release = [
        *(
            [f"its drawdown is back within {_pct(rule.release_drawdown)}"]
            if rule.release_drawdown is not None
            else []
        ),
        *([f"after {rule.release_after_bars} bars"] if rule.release_after_bars is not None else []),
    ]
    where = [
        *([f"for steps of {', '.join(each)}"] if each else []),
        *([f"in stress draws of {'; '.join(stressed)}"] if stressed else []),
    ]
    return (
        f"the drawdown kill switch (config.simulator.kill_switch: on at a {_pct(rule.trigger_drawdown)} "
        f"drawdown, off when {' or '.join(release) or 'never: it is never released'}) was on "
        f"{' and '.join(where)}: there a policy could only shrink positions, so those figures are the "
        "policy under the loop's account rule, not its plain rule (a baseline's rebalance only half done)",
    )


def _stress_hits(name: str, policy: PolicyReport) -> str:
    """``NAME SCENARIO K of N draws (A-B steps), ...`` for the scenarios whose draws the switch bit."""
    parts = []
    for scenario, stress in policy.stress.items():
        bars = [d.kill_switch_bars for d in stress.draws if d.kill_switch_bars]
        if bars:
            parts.append(
                f"{scenario} {len(bars)} of {len(stress.draws)} draws ({min(bars)}-{max(bars)} steps)"
            )
    return f"{name} {', '.join(parts)}" if parts else ""


def _pct(fraction: float) -> str:
    """A fraction as a percent without rounding a stated rule away (0.125: 12.5%)."""
    return f"{fraction * 100:g}%"


def edge_warnings(folds: Sequence[FoldReport], windows: Sequence[EvalWindow]) -> tuple[str, ...]:
    """The report's warnings on what the windows' edges hide (``envs.evaluation.edges``): the symbols
    halted over a window's end whose reopen moved at least ``EDGE_MOVE`` or is unknown, and the moves
    of at least ``EDGE_MOVE`` on the first bar of every fold after the first (pooled folds hold
    nothing over it)."""
    lines = []
    for fold in folds:
        for h in fold.halted_at_end:
            if h.move is not None and abs(h.move) < EDGE_MOVE:
                continue  # listed in halted_at_end; a small reopen changes little
            reopen = (
                "its reopen is after the data loaded"
                if h.reopen_date is None or h.move is None
                else f"it reopens {h.reopen_date} at {h.move:+.1%} from that close, a move in no window"
            )
            lines.append(
                f"{h.symbol} is halted over the end of {fold.name} (last bar {h.last_date}): a position "
                f"still held was valued and closed at that close, which nothing traded at; {reopen}"
            )
    for w in windows[1:]:
        if w.first_bar_moves:
            moves = ", ".join(f"{m.symbol} {m.move:+.1%}" for m in w.first_bar_moves)
            day = iso_dates(w.data.ts[:1])[0]
            lines.append(
                f"{w.name} starts on {day}, a bar the pooled account holds nothing over (each fold starts "
                f"flat and decides at its first close), and {moves} moved then: no policy's figures "
                f"carry it"
            )
    return tuple(lines)


def data_warnings(benchmark: PolicyReport, periods_per_year: int) -> tuple[str, ...]:
    """The report's ``warnings``, from the benchmark's run (every policy runs the same windows): a
    main series or fold with fewer returns than :data:`ANNUALISE_FRACTION` of a year, and the symbols
    whose bars stop inside a window."""
    need = math.ceil(ANNUALISE_FRACTION * periods_per_year)
    lines = []
    n = len(benchmark.returns)
    if n < need:
        lines.append(
            f"the evaluated returns are {n} bars ({benchmark.timestamps[0]}..{benchmark.timestamps[-1]}), "
            f"under a quarter of a year ({need}): annual return, volatility, Sharpe, Sortino and Calmar "
            "extrapolate them to a year; read the total return and drawdown"
        )
    short = [f"{f.name} ({f.test.n_bars - 1})" for f in benchmark.folds if f.test.n_bars - 1 < need]
    if short and len(benchmark.folds) > 1:
        lines.append(
            f"folds under a quarter of a year of returns ({need}): {', '.join(short)}; their annualised "
            "figures extrapolate them to a year"
        )
    stops = [f"{s.symbol} (last bar {s.last_date}, {f.name})" for f in benchmark.folds for s in f.bars_stop]
    if stops:
        lines.append(
            f"bars stop inside the window for {', '.join(stops)}: a position still held there was closed "
            "at that last close, paying the exit's costs; whether it could have been sold there is "
            "not in the data"
        )
    return tuple(lines)


# --------------------------------------------------------------------------- file


def report_json(report: EvaluationReport) -> str:
    """The ``report.json`` text: deterministic, ``null`` for undefined numbers, newline-terminated."""
    return report.model_dump_json(indent=1) + "\n"


def write_report_json(report: EvaluationReport, path: Path) -> Path:
    """Write ``report_json(report)`` to ``path``; returns ``path``."""
    path.write_text(report_json(report))
    return path


def read_report(path: Path) -> EvaluationReport:
    """Read a ``report.json``; a missing or mistyped field raises ``pydantic.ValidationError`` naming it."""
    return EvaluationReport.model_validate_json(path.read_bytes())
