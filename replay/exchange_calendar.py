"""The New York Stock Exchange's full-day closures, by rule: the trading days US equities have.

The loop trades US equities through Alpaca, whose daily bars exist only on NYSE trading days. Where a
count of trading days matters (how stale a store's newest bar is at a cycle, :func:`trading_days_between`)
weekdays alone miscount every holiday: the first cycle after Thanksgiving would find Wednesday's bar
two weekdays old when it is the last one the market made.

The rules (NYSE Rule 7.2, as the exchange publishes its holiday schedule): New Year's Day (a Sunday
moves to Monday; a Saturday is not made up on the Friday before, the year-end close stays open),
Martin Luther King Jr. Day, Washington's Birthday, Good Friday, Memorial Day, Juneteenth (from 2022),
Independence Day, Labor Day, Thanksgiving and Christmas (a Saturday moves to the Friday before, a
Sunday to the Monday after), plus the unscheduled closures since 2001 listed in :data:`SPECIAL_CLOSURES`.
Early closes (1 p.m.) are trading days and are not modelled. A closure the exchange announces later
(a national day of mourning) is missing until it is added here: a count then errs by one day on the
side of a trading day, which for a staleness warning means one warning too many, never one too few.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Final

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

SPECIAL_CLOSURES: Final = (
    "2001-09-11",  # September 11 (closed through the 14th)
    "2001-09-12",
    "2001-09-13",
    "2001-09-14",
    "2004-06-11",  # President Reagan's funeral
    "2007-01-02",  # President Ford's funeral
    "2012-10-29",  # Hurricane Sandy
    "2012-10-30",
    "2018-12-05",  # President G. H. W. Bush's funeral
    "2025-01-09",  # President Carter's funeral
)
"""Days the NYSE closed outside its holiday rules (weather, national days of mourning) since 2001."""


class _NyseHolidays(AbstractHolidayCalendar):
    rules = [  # noqa: RUF012 (pandas reads the rules from a class attribute list)
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


FIRST_YEAR: Final = 2001
LAST_YEAR: Final = 2100
"""The years :func:`nyse_holidays` covers (the rules as they stand today, Juneteenth from 2022); a day
outside them counts as a trading day on any weekday."""


@lru_cache(maxsize=1)
def nyse_holidays() -> np.ndarray:
    """Every NYSE full-day closure on a weekday from :data:`FIRST_YEAR` to :data:`LAST_YEAR`, as sorted
    ``datetime64[D]`` (the form ``numpy.busday_count`` takes)."""
    ruled = _NyseHolidays().holidays(start=f"{FIRST_YEAR}-01-01", end=f"{LAST_YEAR}-12-31")
    days = ruled.union(pd.DatetimeIndex(SPECIAL_CLOSURES))
    days = days[days.dayofweek < 5]
    return np.asarray(days.values.astype("datetime64[D]"))


def trading_days_between(start: date, end: date) -> int:
    """NYSE trading days in ``[start, end)`` (``numpy.busday_count`` with :func:`nyse_holidays`):
    how many sessions the market held from ``start``'s on, before ``end``'s. Negative when ``end``
    is before ``start``."""
    return int(np.busday_count(start, end, busdaycal=_nyse_business_days()))


@lru_cache(maxsize=1)
def _nyse_business_days() -> np.busdaycalendar:
    """:func:`nyse_holidays` as numpy's business-day calendar, built once (a count given the holidays
    builds one per call: 30 us)."""
    return np.busdaycalendar(holidays=nyse_holidays())


def daily_bars_between(first: date, then: date, crypto_only: bool) -> int:
    """The daily bars a universe steps on strictly between the days ``first`` and ``then``: NYSE
    trading days when it holds an equity (a store with equities steps on their sessions), calendar
    days for crypto pairs alone (their bars never pause). 0 when ``then`` is not two days after
    ``first``. A store whose newest bar is Friday's, read on the Tuesday after a Monday holiday, has
    missed none; read on Thursday, two (Tuesday's and Wednesday's)."""
    if crypto_only:
        return max((then - first).days - 1, 0)
    return max(trading_days_between(first + timedelta(days=1), then), 0)


def bars_closed_since(bar_day: date, closed: datetime, as_of: datetime, crypto_only: bool) -> int:
    """How many of the universe's daily bars after the bar of ``bar_day`` (closed at ``closed``) have
    closed by ``as_of``: each later bar closes a whole day after the one before it, so the bars of
    the days up to ``bar_day`` + the whole days from ``closed`` to ``as_of`` (:func:`daily_bars_between`).
    Counted from the bar's own close, not the UTC date of ``as_of``: a crypto bar stamped 06:00 UTC is
    open until 06:00 the next day, and a date count called it missed from midnight on."""
    later = math.floor((as_of - closed) / timedelta(days=1))
    if later < 1:  # none closed since: the policy service asks this on every request
        return 0
    return daily_bars_between(bar_day, bar_day + timedelta(days=later + 1), crypto_only)
