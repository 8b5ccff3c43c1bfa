"""Daily crypto bars on the stocks' clock, built from Alpaca's hourly crypto bars.

Alpaca stamps daily stock bars at midnight New York and daily crypto bars at its own day start
(midnight US Central in the real API): the two never share a stamp, so a store holding both could not
be stepped (``envs.replay_loader.refuse_off_calendar_crypto``), and moving a bar onto another stamp
would leak the future (a bar stamped later closes later). When one daily fetch asks for stocks and
crypto, the crypto's daily bars are instead aggregated from its hourly bars, per New York calendar
day (:func:`new_york_daily`):

* stamp: that day's New York midnight in UTC (04:00 or 05:00), exactly the stocks' stamp;
* open: the first hour's open; high / low: the max / min of the hours'; close: the last hour's close;
  volume: the hours' sum; trade_count: the sum (null when an hour has none); vwap: the
  volume-weighted mean of the hours' vwaps (null when an hour with volume has none, or with no volume);
* a day has 24 hours, 23 on the spring-forward Sunday and 25 on the fall-back one. Alpaca sends no
  bar for an hour without trades, so a day with hours missing is still one bar, made of the hours it
  has (logged); a day with no hourly bar at all is no bar (a hole, as a halted stock's day).

The caller keeps only days that have surely ended (``replay.timeutil.bar_closed_at``: a bar stamped at
a local midnight counts as closed 25 h later), so a day in progress is never stored.

A store's daily crypto stays on one clock (:func:`refuse_second_crypto_clock`): crypto Alpaca stamped
at its own day start (or a csv at 00:00 UTC) next to crypto built on New York midnight is refused at
ingest, naming the fix (re-ingest into a new store).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, NamedTuple

import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.timeutil import DAY, NEW_YORK, bar_length, times_of_day

logger = logging.getLogger(__name__)

HOUR: Final = timedelta(hours=1)


class BarRow(NamedTuple):
    """One bar as the source stores it (Alpaca's ``Bar`` fields); ``timestamp`` is the bar's open, UTC."""

    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: float | None
    vwap: float | None


def new_york_midnight(day: date) -> datetime:
    """Midnight of New York ``day``, in UTC (05:00 in winter, 04:00 in summer)."""
    return datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)


def new_york_hours(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The hourly window (both ends inclusive, as Alpaca's) whose hours make the New York days stamped
    in ``[start, end]``: those whose New York midnight lies in the window, as a daily stock bar does.
    From the first such midnight to the last hour of the last such day; ``None`` when there is none."""
    first = start.astimezone(NEW_YORK).date()
    if new_york_midnight(first) < start:
        first += timedelta(days=1)
    last = end.astimezone(NEW_YORK).date()
    if first > last:
        return None
    return new_york_midnight(first), new_york_midnight(last + timedelta(days=1)) - HOUR


def new_york_daily(hourly: Sequence[BarRow], symbol: str = "") -> list[BarRow]:
    """One daily bar per New York calendar day with hourly bars, stamped at its New York midnight
    (module docstring for each field). ``hourly`` may come in any order; duplicates are not expected
    (Alpaca sends one bar per hour). Logs the days with hours missing."""
    by_day: dict[date, list[BarRow]] = {}
    for bar in sorted(hourly, key=lambda b: b.timestamp):
        by_day.setdefault(bar.timestamp.astimezone(NEW_YORK).date(), []).append(bar)
    daily = [_aggregate(day, hours) for day, hours in sorted(by_day.items())]
    short = [
        f"{day} ({len(hours)} of {_hours_in(day)} h)"
        for day, hours in by_day.items()
        if len(hours) < _hours_in(day)
    ]
    if short:
        logger.info("%s: New York days built from fewer hourly bars than hours: %s", symbol, ", ".join(short))
    return daily


def _hours_in(day: date) -> int:
    return round((new_york_midnight(day + timedelta(days=1)) - new_york_midnight(day)) / HOUR)


def _aggregate(day: date, hours: Sequence[BarRow]) -> BarRow:
    volume = math.fsum(h.volume for h in hours)
    counts = [h.trade_count for h in hours]
    traded = [h for h in hours if h.volume > 0]
    vwap_known = volume > 0 and all(h.vwap is not None for h in traded)
    return BarRow(
        timestamp=new_york_midnight(day),
        open=hours[0].open,
        high=max(h.high for h in hours),
        low=min(h.low for h in hours),
        close=hours[-1].close,
        volume=volume,
        trade_count=None if any(c is None for c in counts) else math.fsum(c for c in counts if c is not None),
        vwap=math.fsum(h.vwap * h.volume for h in traded if h.vwap is not None) / volume
        if vwap_known
        else None,
    )


class SecondCryptoClockError(InputError):
    """Daily crypto off New York midnight next to daily bars at New York midnight in one store."""


def refuse_second_crypto_clock(
    stored: pd.DataFrame | None, new: pd.DataFrame, origin: str = "alpaca"
) -> None:
    """Refuse new daily bars (``new``: columns ``symbol``, ``ts``, ``asset_class``, from one daily fetch)
    that would leave the store (``stored``, the same columns; ``None`` when empty) with daily crypto on
    two clocks: some daily bars at New York midnight (Alpaca's stocks, and crypto built from hourly bars
    next to them) and daily crypto stamped otherwise (Alpaca's own day start from a crypto-only fetch,
    or 00:00 UTC from a csv). Appended, one symbol's series would hold two clocks whose bars overlap in
    time, or the loader would refuse the crypto next to the stocks (``envs.replay_loader``). Stored
    symbols count when their bars are daily (``replay.timeutil.bar_length``). Raises
    :class:`SecondCryptoClockError` naming the symbols on each clock and the fix (re-ingest everything
    into a new store); nothing is written."""
    parts = [new[["symbol", "ts", "asset_class"]].assign(held=False)]
    if stored is not None:
        daily = [s for s, ts in stored.groupby(stored["symbol"].astype(str))["ts"] if _is_daily(ts)]
        held = stored[stored["symbol"].astype(str).isin(daily)]
        parts.append(held[["symbol", "ts", "asset_class"]].assign(held=True))
    rows = pd.concat(parts, ignore_index=True)
    stamps = pd.DatetimeIndex(rows["ts"]).tz_convert("UTC")
    at_ny = stamps == stamps.tz_convert(NEW_YORK).normalize().tz_convert("UTC")
    crypto = (rows["asset_class"] == "crypto").to_numpy()
    ny, other = rows[at_ny], rows[crypto & ~at_ny]
    if ny.empty or other.empty:
        return
    raise SecondCryptoClockError(
        f"{origin}: refused, nothing written: daily crypto {_listed(other)} stamped at "
        f"{times_of_day(other['ts'])} UTC (Alpaca's own day start, or a date label) next to daily bars at "
        f"New York midnight ({times_of_day(ny['ts'])} UTC) of {_listed(ny)}: one store would hold two "
        "daily clocks, and the simulator cannot step crypto that is not on the stocks' stamps. Re-ingest "
        "into a new store (a new --out), fetching the stocks and the crypto together: Alpaca's daily "
        "crypto is then built from its hourly bars at New York midnight (a crypto-only fetch keeps "
        "Alpaca's day start)"
    )


def _is_daily(stamps: pd.Series) -> bool:
    length = bar_length(stamps)
    return length is not None and length >= DAY


def _listed(rows: pd.DataFrame) -> str:
    """``'BTCUSD' (in the store), 'ETHUSD'``: each symbol once, at most five, marked when stored."""
    held = rows.groupby(rows["symbol"].astype(str), sort=True)["held"].any()
    shown = [f"{s!r}" + (" (in the store)" if h else "") for s, h in list(held.items())[:5]]
    more = f" (+{len(held) - 5} more)" if len(held) > 5 else ""
    return ", ".join(shown) + more
