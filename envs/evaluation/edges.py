"""What an evaluated window's edges hide: a halt that outlasts its end, a large move on its first bar.

A window is replayed as one account that starts flat, decides at its first close and closes its book
at its last (``envs.evaluation.harness.run_window``). Two moves of real data then fall in no window:

* **A halt over the window's end.** A symbol with no bar over the window's last bars that trades
  again after it (``MarketData.listed_after``) is held at its last close to the end, then valued and
  closed at that close, which nothing traded at. The move at its reopen (the first price a book could
  have sold at) belongs to no window: a walk-forward fold ending inside a halt that reopens 40 % lower
  reports the book as if it had sold before the halt. :func:`halts_at_end` lists them, with the
  reopen's date and move where the data holds it; the report warns of those that moved at least
  :data:`EDGE_MOVE`, or whose reopen is unknown.
* **A window's first bar.** Nothing is held over it (the book is flat until the first decision fills
  at the second bar's open), so walk-forward folds pooled into one account skip the bar where each
  fold starts, and its overnight gap. :func:`first_bar_moves` names the symbols that moved at least
  :data:`EDGE_MOVE` there.

Both are facts of the data, the same for every policy; the report states them (its ``warnings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from raytrade.envs.market_data import MarketData, last_listed_bar
from raytrade.envs.scenarios import last_real_close

EDGE_MOVE: Final = 0.10
"""A move at a window's edge at least this large, up or down, is named in the report's warnings: a
listed symbol's close on a window's first bar over its last real close (the pooled account of
walk-forward folds holds nothing over that bar), and a halted symbol's reopen over its last close in
the window (a halt whose reopen moved less, a bar missing on a thin name's last minute, is listed in
``halted_at_end`` only; one whose reopen the data does not hold is named too)."""


@dataclass(frozen=True)
class HaltAtEnd:
    """A symbol halted over a window's end: its last real bar in the window, and its reopen after it
    (None: after the data the evaluation loaded, or unknown)."""

    symbol: str
    last_date: np.datetime64
    reopen_date: np.datetime64 | None
    move: float | None  # the reopen's open over the last real close, minus 1


@dataclass(frozen=True)
class FirstBarMove:
    """A symbol that moved at least :data:`EDGE_MOVE` on a window's first bar."""

    symbol: str
    date: np.datetime64
    move: float  # its close over its last real close before the window, minus 1


def halts_at_end(window: MarketData, source: MarketData | None = None) -> tuple[HaltAtEnd, ...]:
    """The symbols of ``window`` that have a real bar in it, none on its last bar, and one after it
    (``window.listed_after``). ``source`` (the data ``window`` was cut from, holding bars after it)
    gives each one's reopen: its first real bar after the window, and the move from the last real
    close in the window to that bar's open."""
    if window.listed_after is None or window.n_steps == 0:
        return ()
    listed = np.asarray(window.listed, dtype=bool)
    last_row = last_listed_bar(listed)  # each symbol's last real bar in the window (-1: none)
    halted = np.flatnonzero((last_row >= 0) & ~listed[-1] & np.asarray(window.listed_after, dtype=bool))
    if halted.size == 0:
        return ()
    after = None
    if source is not None and source.symbols == window.symbols:
        start = int(np.searchsorted(source.ts, window.ts[-1], side="right"))
        after = (source.ts[start:], np.asarray(source.listed[start:], dtype=bool), source.open[start:])
    out = []
    for j in halted.tolist():
        last = int(last_row[j])
        reopen_date, move = None, None
        if after is not None and after[1][:, j].any():
            k = int(np.argmax(after[1][:, j]))
            reopen_date = after[0][k]
            move = float(after[2][k, j] / window.close[last, j] - 1.0)
        out.append(HaltAtEnd(window.symbols[j], window.ts[last], reopen_date, move))
    return tuple(out)


def first_bar_moves(window: MarketData, threshold: float = EDGE_MOVE) -> tuple[FirstBarMove, ...]:
    """The symbols listed on ``window``'s first bar whose close there is at least ``threshold`` away
    from their last real close before the window (``window.close_before``; a symbol without one, a
    listing, moved from nothing and is not named)."""
    if window.n_steps == 0:
        return ()
    before = last_real_close(window)[0]
    listed = np.asarray(window.listed[0], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        move = window.close[0] / before - 1.0
    named = np.flatnonzero(listed & np.isfinite(move) & (np.abs(move) >= threshold))
    return tuple(FirstBarMove(window.symbols[j], window.ts[0], float(move[j])) for j in named.tolist())
