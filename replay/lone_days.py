"""Daily equity bars on a day no other equity has: a stray row that reshapes every equity's calendar.

The simulator steps equities on the union of their daily stamps (``envs.replay_loader``). One stray
row, a Saturday bar in one file or a day past everyone else's last bar, adds a day on which every
other equity has no bar: a hole inside their lives, or, at the end of the data, the end of their
bars, where a position is closed. A reviewer's Saturday row in one of seven stock files moved
``buy_and_hold`` from -12.37 % to -13.02 % and flagged five symbols as delisted, with nothing said at
ingest.

A day is named when one daily equity has a bar on it, no other equity has one, and at least
:data:`NEIGHBOURS` other daily equities have a bar in the :data:`NEAR` before it: they were trading
then, so the missing bars are no listing of theirs (a day before their first bar is not named).
Crypto and intraday bars are not checked (crypto trades every day; intraday stamps differ by
design). Stored as given, with a warning: an exchange holiday one listing keeps (a dual listing
trading on a day the others' exchange is shut) is real, and only the user can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.timeutil import DAY, bar_length

NEIGHBOURS: Final = 2
"""Other daily equities that must have a bar in the :data:`NEAR` before a day for it to be named."""

NEAR: Final = pd.Timedelta(days=7)
"""How close before the day those bars must be: a week spans a weekend and a holiday."""

SHOWN: Final = 3
"""Days a warning lists before ``…``."""


@dataclass(frozen=True)
class LoneEquityDays:
    """The days of ``symbol``'s new bars no other equity has (module docstring)."""

    symbol: str
    days: tuple[pd.Timestamp, ...]

    def message(self) -> str:
        shown = ", ".join(f"{d.date()} ({d.day_name()})" for d in self.days[:SHOWN])
        more = f" and {len(self.days) - SHOWN} more" if len(self.days) > SHOWN else ""
        bars = "a bar" if len(self.days) == 1 else f"{len(self.days)} bars"
        return (
            f"{self.symbol}: {bars} on {shown}{more}, a day no other equity has though they traded the week "
            "before: "
            "the simulator steps on every equity's days together, so there every other equity has no bar "
            "(a halt; past their last bar, the end of their data, where a position is closed); if the "
            "rows are stray, remove them and ingest into a fresh store (a new --out)"
        )


def lone_equity_days(all_bars: pd.DataFrame, new: pd.DataFrame) -> tuple[LoneEquityDays, ...]:
    """The symbols whose bars in ``new`` fall on a lone equity day of ``all_bars`` (the store after
    the ingest: columns ``symbol``, ``ts`` and ``asset_class``), by symbol (module docstring)."""
    if new.empty or all_bars.empty:
        return ()
    equities = all_bars[all_bars["asset_class"].astype(str) == "equity"]
    symbols = equities["symbol"].astype(str)
    daily = [
        s
        for s, ts in equities["ts"].groupby(symbols)
        if (length := bar_length(ts)) is not None and length >= DAY
    ]
    rows = equities[symbols.isin(daily)]
    ts = pd.DatetimeIndex(rows["ts"])
    names = rows["symbol"].astype(str).to_numpy()
    per_stamp = pd.Series(names).groupby(ts).nunique()
    lone = set(per_stamp.index[per_stamp.to_numpy() == 1])
    if not lone:
        return ()
    fresh = new[new["symbol"].astype(str).isin(daily) & pd.DatetimeIndex(new["ts"]).isin(list(lone))]
    nanos = ts.as_unit("ns").asi8
    order = np.argsort(nanos, kind="stable")
    sorted_ts, sorted_names = nanos[order], names[order]
    found: dict[str, list[pd.Timestamp]] = {}
    for symbol, stamp in zip(fresh["symbol"].astype(str), pd.DatetimeIndex(fresh["ts"]), strict=True):
        lo = np.searchsorted(sorted_ts, (stamp - NEAR).value, side="left")
        hi = np.searchsorted(sorted_ts, stamp.value, side="left")
        around = set(sorted_names[lo:hi].tolist()) - {symbol}  # bars before it: not before a listing
        if len(around) >= NEIGHBOURS:
            found.setdefault(symbol, []).append(stamp)
    return tuple(LoneEquityDays(s, tuple(sorted(days))) for s, days in sorted(found.items()))
