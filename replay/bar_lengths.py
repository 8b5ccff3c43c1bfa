"""One bar length per store: the rule, checked at ingest and by the simulator's loader.

The simulator steps one calendar, the union of the stamps of the class that makes it, with one bar
length (``periods_per_year`` and a bar's financing follow from it). Two bar lengths break both:

* **Two in one series.** A file that stitches a daily history to recent hourly bars (a common
  vendor export) read as hourly: the median bars per date set the year, so the daily stretch was
  annualised as hours (a reviewer's BTCUSD: 27.9 % a year reported for 168 %) and every hourly bar
  paid a day's financing. A series is two lengths when it holds a run of :data:`MIXED_RUN`
  consecutive dates with one bar each and another of dates with several: an hourly series misses
  bars on an outage's day, not for a week, and a daily one never has several on a date.
* **Two across symbols.** An hourly equity next to a daily one put a 00:00 UTC label before each
  day's hourly labels, at which the daily equity's close of that evening was already shown: a
  decision there saw a price of the future, and each symbol had a hole at every label of the other.

Refused with one line naming the symbols, their lengths and where a series changes length; nothing
is guessed (resampling is the user's call)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.timeutil import DAY, bar_length, named_symbols

MIXED_RUN: Final = 5
"""Consecutive dates of one bar each, and consecutive dates of several, that make one series two bar
lengths (:func:`series_switch`): a week of a daily history, a week of intraday bars."""


class MixedBarLengthsError(InputError):
    """Bars of more than one bar length in one store (the message names them)."""


def length_text(length: pd.Timedelta) -> str:
    """``daily``, ``1h``, ``30min``: how messages name a bar length."""
    if length >= DAY:
        return "daily"
    minutes = int(length.total_seconds() // 60)
    if minutes == 0:
        return str(length)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}min"


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(length, start index) of the longest run of True in ``flags`` (0, -1 when none)."""
    best, start, run = 0, -1, 0
    for i, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run > best:
            best, start = run, i - run + 1
    return best, start


def series_switch(stamps: pd.DatetimeIndex) -> str | None:
    """Why one symbol's stamps (UTC) are two bar lengths (module docstring), None when they are one."""
    dates = stamps.normalize()
    per_date = pd.Series(1, index=stamps).groupby(dates).size()
    single = per_date.to_numpy() == 1
    singles, first_single = _longest_run(single)
    several, first_several = _longest_run(~single)
    if singles < MIXED_RUN or several < MIXED_RUN:
        return None
    day = per_date.index
    return (
        f"{int(single.sum())} dates with one bar each ({singles} in a row from {day[first_single].date()}) "
        f"and {int((~single).sum())} with several ({several} in a row from {day[first_several].date()}): "
        "a daily history and intraday bars in one series"
    )


def refuse_mixed_bar_lengths(
    bars: pd.DataFrame, origin: str | None = None, stored: Collection[str] = ()
) -> None:
    """Refuse ``bars`` (``symbol``, ``ts`` UTC) of more than one bar length: one series of two, or
    symbols of different lengths (module docstring). ``stored`` names symbols already in the store
    (marked in the message), ``origin`` prefixes it. Raises :class:`MixedBarLengthsError`."""
    prefix = f"{origin}: refused, nothing written: " if origin else ""
    by_length: dict[pd.Timedelta, list[str]] = {}
    for symbol, ts in bars.groupby(bars["symbol"].astype(str), sort=True)["ts"]:
        stamps = pd.DatetimeIndex(ts).sort_values()
        why = series_switch(stamps)
        if why is not None:
            mark = " (in the store)" if symbol in stored else ""
            raise MixedBarLengthsError(
                f"{prefix}{symbol!r}{mark} holds bars of two lengths: {why}. The simulator steps one bar "
                "length (its year and a bar's financing follow from it): store the series at one "
                "timeframe (resample it, or drop the stretch at the other)"
            )
        length = bar_length(stamps)
        if length is not None:
            by_length.setdefault(length, []).append(symbol)
    if len(by_length) < 2:
        return
    groups = "; ".join(
        f"{length_text(length)}: {named_symbols(symbols, stored)}"
        for length, symbols in sorted(by_length.items(), key=lambda item: -len(item[1]))
    )
    raise MixedBarLengthsError(
        f"{prefix}bars of {len(by_length)} lengths in one store ({groups}). The simulator steps one "
        "calendar of one bar length: a daily bar next to hourly ones is shown at a label hours before "
        "its close, and each symbol misses every label of the others. Keep one timeframe per store "
        "(resample the finer bars, or ingest them into their own store)"
    )
