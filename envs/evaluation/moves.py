"""The large moves of an evaluated window: the bars every policy lived through that can decide a verdict.

A −40 % day, a +20 % gap or a reopen after a halt is real data, the same for every policy, and no
warning: the report lists them (``EvaluationReport.large_moves``) so a reader can see which events a
result rests on, and spot a move that is an error of the data (an unadjusted split reads as one).
A move is a listed bar's close over the symbol's last real close before it (``envs.scenarios.
simple_returns``): after a halt or a hole, the whole move at the reopen, as a holder lives it. A
window's first bar is not listed here (nothing is held over it; ``envs.evaluation.edges`` names a
large one), nor is a listing bar (no close before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from raytrade.envs.market_data import MarketData
from raytrade.envs.scenarios import simple_returns

LARGE_MOVE: Final = 0.20
"""A move at least this large, up or down, is listed: a fifth of a position's value in one bar, rare
for a large stock, a few times a year for a thin one or a coin."""


@dataclass(frozen=True)
class LargeMove:
    """One listed move of one symbol."""

    symbol: str
    date: np.datetime64  # the bar of the move
    move: float  # its close over the symbol's last real close before it, minus 1
    bars_missing: int  # bars between the two without a real bar of the symbol (0: consecutive bars)


def _bars_since_listed_before(window: MarketData) -> np.ndarray:
    """``[N]``: bars each symbol went without a real bar at the end of ``listed_before`` (the bars
    just before the window, at most ``market_data.BARS_BEFORE``): a halt that began before it, a lower
    bound when it had no bar there at all."""
    if window.listed_before is None:
        return np.zeros(window.n_assets, dtype=np.int64)
    listed = np.asarray(window.listed_before, dtype=bool)
    k = listed.shape[0]
    if k == 0:
        return np.zeros(window.n_assets, dtype=np.int64)
    last = np.where(listed.any(axis=0), k - 1 - np.argmax(listed[::-1], axis=0), -1)
    return np.asarray(k - 1 - last, dtype=np.int64)


def large_moves(window: MarketData, threshold: float = LARGE_MOVE) -> tuple[LargeMove, ...]:
    """Every move of ``window`` at least ``threshold`` in size after its first bar, in bar order
    (symbols in their column order within a bar)."""
    returns = simple_returns(window)
    returns[:1] = np.nan  # a window's first bar: nothing is held over it
    big = np.isfinite(returns) & (np.abs(np.nan_to_num(returns)) >= threshold)
    listed = np.asarray(window.listed, dtype=bool)
    rows = np.where(listed, np.arange(listed.shape[0])[:, None], -1)
    last_before = np.vstack([np.full((1, listed.shape[1]), -1), np.maximum.accumulate(rows, axis=0)[:-1]])
    before = _bars_since_listed_before(window)
    out = []
    for t, n in zip(*np.nonzero(big), strict=True):
        prev = int(last_before[t, n])  # -1: the last real bar is before the window (its close_before)
        out.append(
            LargeMove(
                symbol=window.symbols[n],
                date=window.ts[t],
                move=float(returns[t, n]),
                bars_missing=int(t) - prev - 1 if prev >= 0 else int(t) + int(before[n]),
            )
        )
    return tuple(out)
