"""Bad prints: new bars whose open or close is off by a decimal place (or more) and no real move.

A vendor's decimal error, a print at 0.01, an open that lost a digit: the bar is still coherent
(high >= open, close >= low), so row validation passes it, and the simulator, which sizes and
fills at the open, books it as a profit of thousands of percent (one KGC open at 0.01 turned a
+46 % ``equal_weight`` into +28,628 %). A bar's price is a *bad print* when, with ``F`` =
``BAD_PRINT_FACTOR`` (5: a vendor's decimal error is 10x or more, while a low-float runner opening
3.5x after a halt, a crypto micro-cap's 4x pump and dump, a sub-penny stock's tick from 0.0001 to
0.0004 and back are real prints, refused at 3x by this rule's first version):

* **open rule**: its open is more than ``F`` times off *both* the previous close and its own close,
  the same way (``open > F * max(previous close, close)`` or ``open < min(previous close, close) /
  F``). A real gap moves the open away from the previous close, and the close follows it: a -40 %
  gap, a 5x opening jump that holds, a reverse split opening at ten times the price are all near
  their own close. The previous close is the symbol's last close that is no bad print itself.
* **spike rule**: a run of 1 to ``MAX_SPIKE_RUN`` (5) consecutive closes, each more than ``F`` times
  off both the close just before the run and the close just after it, while those two agree within
  ``REVERT_AGREEMENT`` (1.5x): a move that reverts. A real crash stays down and a real jump stays
  up; a split's signature stays too (``replay.split_signature``): none of them reverts.

What the rules cannot judge: a symbol's first bar has no previous close (open rule) and no close
before it (spike rule); the *newest* bar of what is ingested has no close after it, so a spike on
it is not seen until the next bar arrives (``find_bad_prints`` then reports it as ``stored`` when
it was stored by an earlier ingest: the store is append-only, so the ingest stores the new bars and
warns, naming the stored bar; refusing, as first written, stopped every later nightly for good, a
real spike the rule misjudged included). A bad high or low alone is not judged (the simulator fills
at the open).

``find_bad_prints`` is a pure function of the store's last bars and the new bars; ``replay.ingest``
refuses a batch with a bad print (or drops those bars when asked) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.neighbours import with_stored_tail

BAD_PRINT_FACTOR: Final[float] = 5.0
"""How far (a factor, either way) a price must be from its neighbours to be a bad print (the module
doc says why 5; the serving quote band, ``serve.caps.MAX_QUOTE_MOVE``, holds a symbol at 3x: it costs
a cycle, not a refused ingest)."""

REVERT_AGREEMENT: Final[float] = 1.5
"""The spike rule: the closes before and after a run agree within this factor (the move reverts)."""

MAX_SPIKE_RUN: Final[int] = 5
"""The spike rule: the longest run of bad closes judged (a vendor's error for a week at most)."""


@dataclass(frozen=True)
class BadPrint:
    """One bar of ``symbol`` at ``ts`` whose ``column`` (open or close) holds ``value``, a bad print
    (module docstring) against the close ``before`` (at ``before_ts``) and ``against`` (its own close
    for the open rule; the close after the run, at ``after_ts``, for the spike rule). ``stored``: the
    bar is already in the store, a spike the new bars revert."""

    symbol: str
    ts: pd.Timestamp
    column: Literal["open", "close"]
    value: float
    before: float
    before_ts: pd.Timestamp
    against: float
    after_ts: pd.Timestamp
    stored: bool = False

    def rule(self) -> str:
        """What was found, with the figures, e.g. ``open 0.01 is 0.00066x the previous close 15.07
        (2025-06-02) and 0.00065x its own close 15.46: more than 5x off both, the same way``."""
        before = f"{self.value / self.before:.3g}x"
        against = f"{self.value / self.against:.3g}x"
        if self.column == "open":
            return (
                f"open {self.value:.6g} is {before} the previous close {self.before:.6g} "
                f"({when(self.before_ts)}) and {against} its own close {self.against:.6g}: more than "
                f"{BAD_PRINT_FACTOR:g}x off both, the same way (open rule)"
            )
        return (
            f"close {self.value:.6g} is {before} the close before {self.before:.6g} ({when(self.before_ts)}) "
            f"and {against} the close after {self.against:.6g} ({when(self.after_ts)}), which agree within "
            f"{REVERT_AGREEMENT:g}x: a spike of more than {BAD_PRINT_FACTOR:g}x that reverts (spike rule)"
        )

    def refusal(self) -> str:
        """The line an ingest refuses with (nothing stored)."""
        return (
            f"{self.symbol} {when(self.ts)}: {self.rule()}: a bad print (replay/bad_prints.py); nothing "
            "stored. Fix the source, or pass --drop-bad-prints to store the symbol without such bars"
        )

    def dropped(self) -> str:
        """The warning for a bar ``--drop-bad-prints`` left out."""
        return (
            f"{self.symbol} {when(self.ts)}: bar NOT stored (--drop-bad-prints): {self.rule()}; it is a "
            "hole, and the simulator holds a position through it"
        )

    def stored_warning(self) -> str:
        """The warning of an ingest whose new bars show a stored bar was a spike (the new bars stored)."""
        return (
            f"{self.symbol} {when(self.ts)}: the STORED bar's {self.rule()}: the new bars show it was a "
            "bad print, or a real spike the rule misjudges; the store is append-only and keeps it, so "
            "evaluations and training read it. To leave it out, ingest the whole source into a fresh "
            "store (a new --out) with the bar fixed or with --drop-bad-prints"
        )


def when(ts: pd.Timestamp) -> str:
    """A bar's stamp as a message shows it: the date of a bar stamped at 00:00 UTC, else the time."""
    stamp = pd.Timestamp(ts)
    return str(stamp.date()) if stamp == stamp.normalize() else stamp.isoformat()


def find_bad_prints(stored: pd.DataFrame | None, new: pd.DataFrame) -> tuple[BadPrint, ...]:
    """The bad prints (module docstring) of ``new`` (columns symbol, ts, open, close; prices > 0;
    each symbol's rows after its stored ones), judged against the last bars of their symbol in
    ``stored`` (the store's bars, or None) and each other; and the stored bars that the new bars show
    were spikes (``stored=True``). One per bar (a bar breaking both rules: its close), ordered by
    symbol and ts."""
    if new.empty:
        return ()
    # a run of MAX_SPIKE_RUN stored closes and the close before it are all a new bar can reach
    bars = with_stored_tail(stored, new, ["symbol", "ts", "open", "close"], MAX_SPIKE_RUN + 1)
    symbol = bars["symbol"].to_numpy()
    close = bars["close"].to_numpy(float)
    is_new = bars["_new"].to_numpy(bool)
    n = len(bars)
    before_at = np.full(n, -1)  # per spike bar: the positions of the closes before and after its run
    after_at = np.full(n, -1)
    factor = BAD_PRINT_FACTOR
    for run in range(1, MAX_SPIKE_RUN + 1):
        start = np.arange(1, max(n - run, 1))  # the run's first bar; start - 1 before it, end after it
        end = start + run
        lo = np.minimum(close[start - 1], close[end])
        hi = np.maximum(close[start - 1], close[end])
        inside = np.stack([close[start + k] for k in range(run)])
        ok = (symbol[start - 1] == symbol[end]) & (hi <= REVERT_AGREEMENT * lo)
        ok &= (inside > factor * hi).all(axis=0) | (inside < lo / factor).all(axis=0)
        for first in start[ok]:  # rare: a shorter run found first keeps its neighbours
            found = before_at[first : first + run] < 0
            before_at[first : first + run][found] = first - 1
            after_at[first : first + run][found] = first + run
    spike = before_at >= 0
    good_close = pd.Series(np.where(spike, np.nan, close))
    previous = good_close.groupby(symbol).shift(1)
    previous = previous.groupby(symbol).ffill().to_numpy(float)
    previous_at = pd.Series(np.where(spike, np.nan, np.arange(n, dtype=float))).groupby(symbol).shift(1)
    previous_at = previous_at.groupby(symbol).ffill().to_numpy(float)
    opening = bars["open"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        high = opening > factor * np.fmax(previous, close)
        bad_open = high | (opening < np.fmin(previous, close) / factor)
    bad_open &= ~np.isnan(previous) & is_new & ~spike
    ts = bars["ts"]
    found_prints = []
    for i in np.flatnonzero(spike):
        before, after = int(before_at[i]), int(after_at[i])
        if is_new[i] or is_new[after]:  # a stored run only its own stored bars revert: not this ingest's
            found_prints.append(
                BadPrint(
                    symbol[i],
                    pd.Timestamp(ts.iat[i]),
                    "close",
                    float(close[i]),
                    float(close[before]),
                    pd.Timestamp(ts.iat[before]),
                    float(close[after]),
                    pd.Timestamp(ts.iat[after]),
                    stored=not is_new[i],
                )
            )
    for i in np.flatnonzero(bad_open):
        before = int(previous_at[i])
        found_prints.append(
            BadPrint(
                symbol[i],
                pd.Timestamp(ts.iat[i]),
                "open",
                float(opening[i]),
                float(close[before]),
                pd.Timestamp(ts.iat[before]),
                float(close[i]),
                pd.Timestamp(ts.iat[i]),
            )
        )
    return tuple(sorted(found_prints, key=lambda p: (p.symbol, p.ts)))


def refuse_bad_prints(prints: tuple[BadPrint, ...], origin: str, drop: bool) -> None:
    """Raise ``InputError`` (one line: ``origin``, the first bad print and how many more) for a new bad
    print unless ``drop``; a stored one (``stored``) is the ingest's warning, never a refusal."""
    refused = [] if drop else [p for p in prints if not p.stored]
    if not refused:
        return
    first = refused[0]
    line = first.refusal()
    more = f" (and {len(refused) - 1} more bad prints)" if len(refused) > 1 else ""
    raise InputError(f"{origin}: {line}{more}")


def without_bad_prints(bars: pd.DataFrame, prints: tuple[BadPrint, ...]) -> pd.DataFrame:
    """``bars`` without the bars of ``prints`` (by symbol and ts), index reset."""
    if not prints:
        return bars
    dropped = pd.MultiIndex.from_tuples([(p.symbol, pd.Timestamp(p.ts)) for p in prints])
    keys = pd.MultiIndex.from_arrays([bars["symbol"].astype(str), bars["ts"]])
    return bars[~keys.isin(dropped)].reset_index(drop=True)
