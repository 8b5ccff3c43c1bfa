"""Rank candidate policies by the project objective on one window, with paired bootstrap intervals.

``raytrade select`` replays the best checkpoint of several searches on the same validation window;
this module turns their per-bar net returns (and the ``equal_weight`` benchmark's, on the same bars)
into a ranking. Pure functions of arrays: no Ray, no checkpoints.

Design decisions
----------------
* **Score.** Each candidate's score is ``tune_specs.objective``'s objective of its per-bar excess
  over the benchmark: ``information_ratio(excess) - cvar_penalty * |cvar_5(excess)|``, an excess
  identically 0 scoring exactly 0 and an undefined one (constant, not 0) ``UNDEFINED_SCORE``.
  :func:`objective_paths` is that formula vectorised over resampled paths (the same formulas as
  ``envs.metrics.sharpe_ratio`` and ``envs.metrics.cvar``), so the score here equals the score a
  search records for the same returns. The ``equal_weight`` benchmark scores 0 by construction.
* **Winner.** The highest score; a tie goes to the candidate listed first (the order is the
  caller's), so the same inputs always name the same winner.
* **Paired bootstrap.** One set of stationary-bootstrap indices (``envs.evaluation.stats``, seeded)
  resamples every candidate's excess on the *same* bars, so ``score(c) - score(winner)`` is computed
  per resampled path and its interval is for the difference itself (common random numbers: a
  candidate identical to the winner has the interval ``[0, 0]``). The interval against
  ``equal_weight`` is the interval of the candidate's own score, as the benchmark scores 0 on every
  path. A path where either score is undefined is dropped; ``n_valid`` counts the kept ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from raytrade.envs.evaluation.stats import BootstrapConfig, DifferenceCI, sharpe_batch, stationary_indices
from raytrade.envs.metrics import CVAR_CUTOFF
from raytrade.tune_specs.objective import UNDEFINED_SCORE, ZERO_EXCESS

__all__ = ["RankedCandidate", "objective_paths", "rank_candidates", "score_of"]


def cvar_batch(r: np.ndarray, cutoff: float = CVAR_CUTOFF) -> np.ndarray:
    """Row-wise ``envs.metrics.cvar`` of ``r [S, T]``: the mean of the ``floor((T - 1) * cutoff) + 1``
    smallest values of each row."""
    k = int((r.shape[1] - 1) * cutoff)
    return np.partition(r, k, axis=1)[:, : k + 1].mean(axis=1)


def objective_paths(excess: np.ndarray, periods_per_year: float, cvar_penalty: float) -> np.ndarray:
    """The objective of each row of ``excess [S, T]`` (per-bar excess returns over the benchmark):
    0 where a row is identically 0 (within ``ZERO_EXCESS``), NaN where it is undefined."""
    e = np.asarray(excess, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] < 2:
        raise ValueError(f"excess must be [paths, bars] with at least 2 bars, got shape {e.shape}")
    value = sharpe_batch(e, periods_per_year) - cvar_penalty * np.abs(cvar_batch(e))
    zero = np.all(np.abs(e) <= ZERO_EXCESS, axis=1)
    return np.where(zero, 0.0, value)


def score_of(excess: np.ndarray, periods_per_year: float, cvar_penalty: float) -> float:
    """The objective of one excess series, ``UNDEFINED_SCORE`` where undefined (as a search scores)."""
    value = float(objective_paths(np.asarray(excess)[None, :], periods_per_year, cvar_penalty)[0])
    return value if math.isfinite(value) else UNDEFINED_SCORE


class RankedCandidate(NamedTuple):
    """One candidate's score and its paired intervals (against the winner, against the benchmark)."""

    name: str
    objective: float
    vs_winner: DifferenceCI
    vs_benchmark: DifferenceCI


def _interval(point: float, paths: np.ndarray, level: float) -> DifferenceCI:
    valid = paths[np.isfinite(paths)]
    if valid.size == 0:
        return DifferenceCI(point, math.nan, math.nan, 0)
    lo, hi = np.quantile(valid, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return DifferenceCI(point, float(lo), float(hi), int(valid.size))


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
    rng = np.random.default_rng(bootstrap.seed)
    idx = stationary_indices(bench.size, bootstrap.samples, bootstrap.block_len, rng)
    paths = {n: objective_paths(e[idx], periods_per_year, cvar_penalty) for n, e in excess.items()}
    return [
        RankedCandidate(
            n,
            scores[n],
            vs_winner=_interval(scores[n] - scores[winner], paths[n] - paths[winner], bootstrap.level),
            vs_benchmark=_interval(scores[n], paths[n], bootstrap.level),
        )
        for n in order
    ]
