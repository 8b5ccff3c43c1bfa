"""Rank candidate policies by the project objective on one window, with paired bootstrap intervals.

``raytrade select`` replays the best checkpoint of several searches on the same validation window;
this module turns their per-bar net returns (and the ``equal_weight`` benchmark's, on the same bars)
into a ranking. Pure functions of arrays: no Ray, no checkpoints.

Design decisions
----------------
* **Score.** Each candidate's score is ``tune_specs.objective``'s objective of its per-bar excess
  over the benchmark: ``information_ratio(excess) - cvar_penalty * max(0, -cvar_5(excess))``, an
  excess identically 0 scoring exactly 0 and an undefined one (constant but not 0, up to float
  rounding) ``UNDEFINED_SCORE``. :func:`score_of` and :func:`objective_paths` (that formula over
  resampled paths) are ``tune_specs.objective``'s own, so the score here is the score a search
  records for the same returns. The ``equal_weight`` benchmark scores 0 by construction.
* **Winner.** The highest score; a tie goes to the candidate listed first (the order is the
  caller's), so the same inputs always name the same winner.
* **Paired bootstrap.** One set of stationary-bootstrap indices (``envs.evaluation.stats``, seeded)
  resamples every candidate's excess on the *same* bars, so ``score(c) - score(winner)`` is computed
  per resampled path and its interval is for the difference itself (common random numbers: a
  candidate identical to the winner has the interval ``[0, 0]``). The interval against
  ``equal_weight`` is the interval of the candidate's own score, as the benchmark scores 0 on every
  path. A path where either score is undefined is dropped; ``n_valid`` counts the kept ones. A
  candidate whose excess is constant (undefined, ``UNDEFINED_SCORE``) has every path undefined: its
  intervals are NaN with ``n_valid`` 0, and it beats nothing.
* **What "beats" means** (:func:`beats`). The objective is an information ratio, scale-free in the
  excess: a book holding ``a`` x the benchmark (any ``a > 1``, even 1.001) scores the benchmark's own
  Sharpe ratio, with an interval above 0, for no skill at all. So a policy *beats* a baseline only when
  both paired intervals lie above 0: the objective's, and that of the difference of Sharpe ratios of the
  two books' own net returns (``sharpe(policy) - sharpe(baseline)`` on the same resampled bars, over
  what cash earned on them where the simulator pays a cash rate). Leverage leaves the Sharpe ratio
  unchanged (lowers it, net of financing), so it cannot pass the second test. A Sharpe lower bound
  within ``SHARPE_TOLERANCE`` of 0 is rounding, not a difference. The objective a search optimises is
  unchanged.
* **The winner's claim** (:func:`benchmark_claim`). The winner of ``N`` candidates is the maximum of
  ``N`` noisy scores on the window it was picked on; its nominal interval against the benchmark lies
  above 0 far more often than ``1 - level`` when none is better. Its "beats" claim therefore uses
  Bonferroni-adjusted intervals, two-sided level ``1 - (1 - level) / N`` (:func:`claim_level`), on the
  same resampled paths as the ranking while they are enough for that level, else on a larger fresh
  draw from the bootstrap's seed: every end of the interval at least ``CLAIM_TAIL_PATHS`` paths in
  (:func:`claim_samples`; N counts every checkpoint compared, hundreds for one full search, and a
  percentile end in a sample's last path is read too close to the middle). The ranking and the
  per-candidate intervals stay nominal.
* **Against another baseline** (:func:`versus_baseline`): an offline policy is judged first against
  the behaviour policy that recorded its experience (cloning it back is no success). Its interval is
  ``score(policy) - score(baseline)``, both scored against the benchmark, on the ranking's resampled
  paths: the paired interval of ``vs_winner``, with the baseline in the winner's place. The verdict
  "above it" (:func:`adjusted_versus_baseline`) is a claim about a checkpoint chosen as the best of N
  on this window, like the winner's: it takes the claim's adjustment (:func:`claim_level` for the same
  N, on :func:`claim_samples` paths). Read at the nominal level, the best of 16 no-skill checkpoints
  on 100 bars was "above its behaviour policy" in 41 of 60 simulated searches; adjusted, in 15.
* **A cash book** (:func:`holds_cash`): a policy whose mean gross exposure is below
  ``CASH_GROSS_EXPOSURE`` scores what cash scores; a report says so beside its verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, NamedTuple

import numpy as np

from raytrade.envs.evaluation.stats import (
    BootstrapConfig,
    DifferenceCI,
    difference_ci,
    difference_paths,
    percentile_ci,
    ratio_difference,
    stationary_indices,
)
from raytrade.tune_specs.objective import objective_paths, score_of

__all__ = [
    "CASH_GROSS_EXPOSURE",
    "SHARPE_TOLERANCE",
    "BenchmarkClaim",
    "RankedCandidate",
    "adjusted_versus_baseline",
    "beats",
    "benchmark_claim",
    "cash_line",
    "claim_level",
    "holds_cash",
    "objective_paths",
    "rank_candidates",
    "score_of",
    "sharpe_difference",
    "versus_baseline",
]

SHARPE_TOLERANCE: Final = 1e-9
"""An annualised Sharpe difference this close to 0 is floating-point rounding (``a * r`` against
``r``), not evidence: :func:`beats` wants the Sharpe interval's lower bound above it."""
CASH_GROSS_EXPOSURE: Final = 0.05
"""Mean gross exposure (sum |w| of the weights per bar, in units of equity) below which a book is
read as holding cash. Why: the objective is an information ratio over ``equal_weight`` with a CVaR
penalty, so in a falling window a book of (almost) only cash scores well, with a tight interval,
for having held nothing: its score is cash's, not a skill. 0.05 is a twentieth of the benchmark's
fully invested book (gross 1): a policy that trades, even a cautious one, holds more; one that holds
less earns what it earns from cash, to within a few percent of the benchmark's moves."""


class RankedCandidate(NamedTuple):
    """One candidate's score and its paired intervals (against the winner, against the benchmark)."""

    name: str
    objective: float
    vs_winner: DifferenceCI
    vs_benchmark: DifferenceCI


def _indices(n: int, bootstrap: BootstrapConfig) -> np.ndarray:
    """The resampling indices of ``bootstrap`` for ``n`` bars (the same for every call)."""
    return stationary_indices(
        n, bootstrap.samples, bootstrap.block_len, np.random.default_rng(bootstrap.seed)
    )


CLAIM_TAIL_PATHS: Final = 10
"""Resampled paths the claim wants beyond each end of its interval (:func:`claim_samples`)."""
CLAIM_CHUNK_BARS: Final = 2_500_000
"""Path-bars resampled at once for a claim that needs more paths than the bootstrap's own: chunks of
``CLAIM_CHUNK_BARS // bars`` paths (about 20,000 of a 126-bar window), so memory stays bounded
(a few hundred MB) whatever the window's length. The draw depends on the chunk size, which depends
only on the window's length: the same inputs give the same claim."""


def claim_samples(samples: int, level: float) -> int:
    """How many resampled paths an interval at ``level`` needs: ``samples``, or more where
    ``samples`` would leave fewer than ``CLAIM_TAIL_PATHS`` paths beyond an end. A percentile end in
    the last few paths is the sample's extreme, not the quantile asked for, and that extreme is less
    extreme than the quantile: at 1,000 paths the Bonferroni level of 480 checkpoints (an end at the
    0.005 % quantile) would be read at about the 0.1 % one, a narrower interval than the adjustment
    demands, so a claim would clear it too easily."""
    needed = 2 * CLAIM_TAIL_PATHS / (1.0 - level)
    return max(samples, math.ceil(round(needed, 6)))  # 1 - level is rounded: 40000.000001 is 40,000


def _claim_indices(n: int, bootstrap: BootstrapConfig, level: float) -> Iterator[np.ndarray]:
    """The resampling indices of a claim at ``level``, in chunks: ``bootstrap``'s own (the ranking's
    paths) when they are enough (:func:`claim_samples`), else a fresh draw of ``claim_samples`` paths
    from the bootstrap's seed, ``CLAIM_CHUNK_BARS`` path-bars at a time."""
    samples = claim_samples(bootstrap.samples, level)
    if samples == bootstrap.samples:
        yield _indices(n, bootstrap)
        return
    rng = np.random.default_rng(bootstrap.seed)
    chunk = max(1, CLAIM_CHUNK_BARS // n)
    for start in range(0, samples, chunk):
        yield stationary_indices(n, min(chunk, samples - start), bootstrap.block_len, rng)


def _low_above(low: float | None, threshold: float) -> bool:
    return low is not None and math.isfinite(low) and low > threshold


def beats(objective_low: float | None, sharpe_low: float | None) -> bool:
    """Whether a policy beats a baseline: the lower bounds of its paired objective interval and of its
    paired Sharpe-difference interval both lie above 0 (None or NaN: undefined, does not beat)."""
    return _low_above(objective_low, 0.0) and _low_above(sharpe_low, SHARPE_TOLERANCE)


def sharpe_difference(
    returns: np.ndarray,
    baseline: np.ndarray,
    periods_per_year: float,
    indices: np.ndarray,
    level: float,
    risk_free: np.ndarray | None = None,
) -> DifferenceCI:
    """``sharpe(returns) - sharpe(baseline)`` (each book's own net returns, same bars, over the
    per-bar ``risk_free`` return cash earned on them: None, 0) with its paired percentile interval over
    ``indices`` (``envs.evaluation.stats.difference_ci``)."""
    rf = 0.0 if risk_free is None else np.asarray(risk_free, dtype=np.float64)
    return difference_ci(
        np.asarray(returns, dtype=np.float64) - rf,
        np.asarray(baseline, dtype=np.float64) - rf,
        periods_per_year,
        "sharpe",
        indices,
        level,
    )


def holds_cash(gross_exposure: float | None) -> bool:
    """Whether a book of mean gross exposure ``gross_exposure`` (equity units) holds cash: below
    ``CASH_GROSS_EXPOSURE``. None or NaN (not measured) is not read as cash."""
    return (
        gross_exposure is not None and math.isfinite(gross_exposure) and gross_exposure < CASH_GROSS_EXPOSURE
    )


def cash_line(gross_exposure: float | None) -> str | None:
    """The report's line beside the verdict of a book that :func:`holds_cash`; None for any other."""
    if not holds_cash(gross_exposure):
        return None
    return f"holds cash: mean gross exposure {gross_exposure:.2f}; its score is cash's"


def claim_level(level: float, n_candidates: int) -> float:
    """The Bonferroni-adjusted two-sided level for a claim about the best of ``n_candidates`` picked on
    the same window: ``1 - (1 - level) / n_candidates``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    return 1.0 - (1.0 - level) / n_candidates


class BenchmarkClaim(NamedTuple):
    """Whether the winner beats the benchmark, at the level adjusted for the candidates it beat."""

    level: float
    n_candidates: int
    objective: DifferenceCI
    sharpe: DifferenceCI
    beats: bool


def benchmark_claim(
    returns: np.ndarray,
    benchmark: np.ndarray,
    periods_per_year: float,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
    n_candidates: int,
    risk_free: np.ndarray | None = None,
) -> BenchmarkClaim:
    """The claim about ``returns`` (the winner of ``n_candidates`` picked on this window) against the
    benchmark: objective and Sharpe-difference intervals at :func:`claim_level`, and :func:`beats` of
    the two. The paths are :func:`rank_candidates`' where they resolve that level, else a fresh draw
    of :func:`claim_samples` paths from the bootstrap's seed (each interval's ``n_valid`` says how
    many were finite: the 10-path margin counts all paths, so a ratio undefined on some of them
    leaves a thinner tail). The Sharpe ratios are over ``risk_free`` (per bar, what cash earned; None:
    0); the objective, of the excess over the benchmark, does not depend on it."""
    r = np.asarray(returns, dtype=np.float64)
    bench = np.asarray(benchmark, dtype=np.float64)
    if r.shape != bench.shape or r.ndim != 1:
        raise ValueError(f"returns {r.shape} differ from the benchmark's {bench.shape}")
    level = claim_level(bootstrap.level, n_candidates)
    excess = r - bench
    rf = 0.0 if risk_free is None else np.asarray(risk_free, dtype=np.float64)
    r_over, bench_over = r - rf, bench - rf
    objective, sharpe = [], []
    for idx in _claim_indices(bench.size, bootstrap, level):
        objective.append(objective_paths(excess[idx], periods_per_year, cvar_penalty))
        sharpe.append(difference_paths(r_over, bench_over, periods_per_year, "sharpe", idx))
    objective_ci = percentile_ci(
        score_of(excess, periods_per_year, cvar_penalty), np.concatenate(objective), level
    )
    sharpe_ci = percentile_ci(
        ratio_difference(r_over, bench_over, periods_per_year, "sharpe"), np.concatenate(sharpe), level
    )
    claim = beats(objective_ci.low, sharpe_ci.low)
    return BenchmarkClaim(level, n_candidates, objective_ci, sharpe_ci, claim)


def rank_candidates(
    returns: Mapping[str, np.ndarray],
    benchmark: np.ndarray,
    periods_per_year: float,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
) -> list[RankedCandidate]:
    """The candidates (name -> per-bar net returns, each on the bars of ``benchmark``) best first,
    each with its score and paired bootstrap intervals (see the module docstring)."""
    if not returns:
        raise ValueError("rank_candidates needs at least one candidate")
    bench = np.asarray(benchmark, dtype=np.float64)
    excess: dict[str, np.ndarray] = {}
    for name, series in returns.items():
        r = np.asarray(series, dtype=np.float64)
        if r.shape != bench.shape or r.ndim != 1:
            raise ValueError(
                f"candidate {name!r}: returns {r.shape} differ from the benchmark's {bench.shape}"
            )
        excess[name] = r - bench
    scores = {n: score_of(e, periods_per_year, cvar_penalty) for n, e in excess.items()}
    order = sorted(excess, key=lambda n: -scores[n])  # stable: a tie keeps the caller's order
    winner = order[0]
    idx = _indices(bench.size, bootstrap)
    paths = {n: objective_paths(e[idx], periods_per_year, cvar_penalty) for n, e in excess.items()}
    return [
        RankedCandidate(
            n,
            scores[n],
            vs_winner=percentile_ci(scores[n] - scores[winner], paths[n] - paths[winner], bootstrap.level),
            vs_benchmark=percentile_ci(scores[n], paths[n], bootstrap.level),
        )
        for n in order
    ]


def _excess_pair(
    returns: np.ndarray, baseline: np.ndarray, benchmark: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(benchmark, {"returns": excess, "baseline": excess}) over the benchmark, on the same bars."""
    bench = np.asarray(benchmark, dtype=np.float64)
    series = {
        "returns": np.asarray(returns, dtype=np.float64),
        "baseline": np.asarray(baseline, dtype=np.float64),
    }
    for name, r in series.items():
        if r.shape != bench.shape or r.ndim != 1:
            raise ValueError(f"{name} {r.shape} differ from the benchmark's {bench.shape}")
    return bench, {name: r - bench for name, r in series.items()}


def versus_baseline(
    returns: np.ndarray,
    baseline: np.ndarray,
    benchmark: np.ndarray,
    periods_per_year: float,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
) -> DifferenceCI:
    """``score(returns) - score(baseline)``, each the objective of its excess over ``benchmark`` (all
    per-bar net returns on the same bars), with its paired interval on the resampled paths of
    :func:`rank_candidates` (the same indices for the same ``bootstrap``): the interval of ``vs_winner``
    with ``baseline`` in the winner's place. A path where either score is undefined is dropped; a
    baseline identical to ``benchmark`` scores 0 on every path, so the interval is then ``vs_benchmark``."""
    bench, excess = _excess_pair(returns, baseline, benchmark)
    chunks = [_indices(bench.size, bootstrap)]
    return _difference_ci(excess, chunks, bootstrap.level, periods_per_year, cvar_penalty)


def adjusted_versus_baseline(
    returns: np.ndarray,
    baseline: np.ndarray,
    benchmark: np.ndarray,
    periods_per_year: float,
    cvar_penalty: float,
    bootstrap: BootstrapConfig,
    n_candidates: int,
) -> tuple[float, DifferenceCI]:
    """(level, interval): :func:`versus_baseline`'s difference for ``returns`` picked as the best of
    ``n_candidates`` on these bars, its interval at the winner's claim's level (:func:`claim_level`)
    on the claim's paths (the ranking's where they resolve that level, else a fresh draw of
    :func:`claim_samples` paths from the bootstrap's seed), as :func:`benchmark_claim` reads its own."""
    bench, excess = _excess_pair(returns, baseline, benchmark)
    level = claim_level(bootstrap.level, n_candidates)
    chunks = _claim_indices(bench.size, bootstrap, level)
    return level, _difference_ci(excess, chunks, level, periods_per_year, cvar_penalty)


def _difference_ci(
    excess: dict[str, np.ndarray],
    chunks: Iterable[np.ndarray],
    level: float,
    periods_per_year: float,
    cvar_penalty: float,
) -> DifferenceCI:
    """The objective of ``excess['returns']`` minus that of ``excess['baseline']``, with its paired
    percentile interval at ``level`` over the resampling indices in ``chunks``."""
    score = {n: score_of(e, periods_per_year, cvar_penalty) for n, e in excess.items()}
    paths = [
        objective_paths(excess["returns"][idx], periods_per_year, cvar_penalty)
        - objective_paths(excess["baseline"][idx], periods_per_year, cvar_penalty)
        for idx in chunks
    ]
    return percentile_ci(score["returns"] - score["baseline"], np.concatenate(paths), level)
