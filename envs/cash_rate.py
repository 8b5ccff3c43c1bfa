"""What idle cash earns: a constant annual rate, or a schedule of rates read from a file.

Design decisions
----------------
* Cash is the equity not held long: ``max(equity - long exposure, 0)`` earns the rate for one bar at
  each close, the mirror of the financing on long exposure above equity (``envs.costs.financing_of``).
  Short-sale proceeds earn nothing (a broker keeps them as collateral), so a short book earns only on
  the equity it leaves idle.
* One bar earns ``annual / periods_per_year`` (the data's own bars per year: 252 for daily equities,
  365 for daily crypto), compounded bar by bar: a year in cash at 4 % returns 4.08 %, whatever the
  asset class.
* The same per-bar series is the risk-free return of the evaluation's Sharpe and Sortino ratios (and
  the hit rate's bar), so a policy holding only cash has an excess return of 0 up to rounding (no
  ratio: ``envs.metrics.DISPERSION_ATOL``) and a policy's ratio is no longer flattered by the yield it
  ignores.
* A schedule is a step function: each step's rate holds from its ``start`` date until the next step's.
  A schedule starting after the first bar cash earns over (bar 1: no step ends on bar 0) is refused
  rather than guessed (the rate of 2008 is not the rate of 2010); a rate series file is CSV with a
  header ``date,annual_rate`` (fractions, 0.0525) or ``date,annual_rate_pct`` (percent, 5.25, as
  published). A row whose rate is empty or ``.`` (a holiday in FRED's files) keeps the previous rate.
  The file's last row is the last day it covers (``CashRate.through``): bars more than a week later
  carry its last rate, and the evaluation warns.
* The default is 0 % (no rate given): the figures then state it, and the README names the bias.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
import os

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CashRate",
    "RateStep",
    "cash_return_per_bar",
    "load_cash_rate",
    "rate_on",
    "rates_agree",
    "stale_rate",
]

MAX_ANNUAL_RATE = 0.5
"""A cash rate above 50 %/year is taken for a unit mistake (percent given as a fraction). Below it the
two cannot be told apart (0.14 is 14 % as a fraction, FRED's 2020 T-bill yield in percent): the
resolved range is printed and reported, so read it."""

STALE_AFTER_DAYS = 7
"""A bar more than this many days after a rate file's last row gets a report warning (its last rate
carried forward); a week spans a holiday or a late publication."""

RATE_ATOL = 1e-12
"""Annual rates closer than this are one rate (:func:`rates_agree`): 1e-12 a year is float rounding,
the gap between a percent read from a file times 0.01 and the fraction typed for it."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RateStep(BaseModel):
    """From ``start`` on (until the next step), cash earns ``annual`` a year."""

    model_config = _FROZEN

    start: dt.date = Field(description="first day of this rate (a bar on this date earns it)")
    annual: float = Field(ge=0.0, le=MAX_ANNUAL_RATE, description="annual rate, a fraction (0.05: 5 %)")


class CashRate(BaseModel):
    """The rate idle cash earns: ``annual`` throughout, or ``schedule`` (never both)."""

    model_config = _FROZEN

    annual: float = Field(
        0.0, ge=0.0, le=MAX_ANNUAL_RATE, description="constant annual rate, a fraction (0.04: 4 %)"
    )
    schedule: tuple[RateStep, ...] = Field(
        (), description="rates by date (a step function); empty: the constant ``annual``"
    )
    source: str | None = Field(None, description="where the schedule was read from (a file name)")
    through: dt.date | None = Field(
        None,
        description="the last date the schedule's source covers (a file's last row): bars more than "
        "STALE_AFTER_DAYS later carry its last rate, and the evaluation warns about them",
    )

    @model_validator(mode="after")
    def _check(self) -> CashRate:
        if self.schedule and self.annual != 0.0:
            raise ValueError(f"give cash_rate annual ({self.annual}) or a schedule, not both")
        if self.through is not None and (not self.schedule or self.through < self.schedule[-1].start):
            raise ValueError(
                f"cash_rate through ({self.through}) must be on or after the schedule's last date"
            )
        for before, after in zip(self.schedule, self.schedule[1:], strict=False):
            if after.start <= before.start:
                raise ValueError(
                    f"cash_rate schedule dates must increase: {after.start} follows {before.start}"
                )
        return self

    @property
    def is_zero(self) -> bool:
        """Cash earns nothing anywhere."""
        return self.annual == 0.0 and all(s.annual == 0.0 for s in self.schedule)

    def describe(self) -> str:
        """One line for a report: the rate, or the schedule's range and source."""
        if not self.schedule:
            return f"{self.annual:.2%}/year"
        rates = [s.annual for s in self.schedule]
        where = f" from {self.source}" if self.source else ""
        return (
            f"a schedule of {len(rates)} rates{where} ({min(rates):.2%}-{max(rates):.2%}/year, "
            f"from {self.schedule[0].start}{'' if self.through is None else f' through {self.through}'})"
        )


def stale_rate(rate: CashRate, last_bar: np.datetime64) -> str | None:
    """A warning when ``last_bar`` is more than :data:`STALE_AFTER_DAYS` after the schedule's source
    ends (``CashRate.through``): those bars earn, and are measured over, its last rate. None otherwise."""
    if rate.through is None:
        return None
    last = np.asarray(last_bar).astype("datetime64[D]")
    if last <= np.datetime64(rate.through, "D") + np.timedelta64(STALE_AFTER_DAYS, "D"):
        return None
    where = f" ({rate.source})" if rate.source else ""
    return (
        f"the cash-rate schedule{where} ends {rate.through}, and its last rate "
        f"({rate.schedule[-1].annual:.2%}/year) is carried to the last bar, {last}: give rates through the "
        "window's end"
    )


def rate_on(rate: CashRate, day: dt.date) -> float | None:
    """The annual rate ``rate`` credits on ``day`` (None: before its schedule's first date)."""
    if not rate.schedule:
        return rate.annual
    at = bisect.bisect_right([s.start for s in rate.schedule], day) - 1
    return None if at < 0 else rate.schedule[at].annual


def rates_agree(a: CashRate, b: CashRate, start: dt.date, end: dt.date) -> bool:
    """Whether ``a`` and ``b`` credit the same rate on every day from ``start`` through ``end``: the
    step functions compared at ``start`` and wherever either changes up to ``end``. A constant and a
    schedule of that one rate agree, and so do a rate file and the same file with rows added after
    ``end`` (kept current, as its stale warning asks); where they are read from does not matter."""
    changes = sorted({s.start for s in (*a.schedule, *b.schedule) if start < s.start <= end})
    return all(_same(rate_on(a, day), rate_on(b, day)) for day in (start, *changes))


def _same(x: float | None, y: float | None) -> bool:
    """Two annual rates are one up to :data:`RATE_ATOL` (a file's 0.07 % reads 0.0007000000000000001)."""
    if x is None or y is None:
        return x is y
    return math.isclose(x, y, rel_tol=0.0, abs_tol=RATE_ATOL)


def cash_return_per_bar(ts: np.ndarray, rate: CashRate, periods_per_year: float) -> np.ndarray:
    """``[T]`` float64: the return idle cash earns over bar ``t`` (accrued at its close), the rate in
    effect on bar ``t``'s date over ``periods_per_year``. Bar 0 ends no step (a step from ``t`` earns
    bar ``t + 1``'s), so its value is never used: it takes the first step's rate. Raises
    ``ValueError`` naming the bar when the schedule starts after bar 1, the first that earns."""
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    n = len(ts)
    if not rate.schedule:
        return np.full(n, rate.annual / periods_per_year)
    days = np.asarray(ts).astype("datetime64[D]")
    starts = np.array([s.start for s in rate.schedule], dtype="datetime64[D]")
    which = np.searchsorted(starts, days, side="right") - 1
    first = min(1, n - 1)  # the first bar a step earns over
    if n and which[first] < 0:
        where = f" ({rate.source})" if rate.source else ""
        raise ValueError(
            f"the cash_rate schedule{where} starts {starts[0]}, after {days[first]}, the first bar cash "
            "earns over (the first return's date): give rates from that bar on"
        )
    which = np.maximum(which, 0)  # bar 0 (never earned over) before the schedule
    annual = np.array([s.annual for s in rate.schedule], dtype=np.float64)
    out: np.ndarray = annual[which] / periods_per_year
    return out


_COLUMNS = {"annual_rate": 1.0, "annual_rate_pct": 0.01}


def load_cash_rate(path: str | os.PathLike[str]) -> CashRate:
    """A :class:`CashRate` schedule from a CSV file (see the module docstring for the format).

    Refused with the file, line and value named: a header other than ``date`` and one of
    ``annual_rate`` / ``annual_rate_pct``, a date that is not ``YYYY-MM-DD``, dates out of order or
    repeated, a rate that is not a number, negative, or above 50 %/year, and a file with no rate."""
    name = os.fspath(path)
    try:
        with open(name, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's byte-order mark
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text (byte {exc.start}): save it as UTF-8 CSV") from None
    if not rows:
        raise ValueError(f"{name}: empty file; expected a header date,annual_rate (or annual_rate_pct)")
    header = [h.strip().lower() for h in rows[0]]
    if len(header) != 2 or header[0] != "date" or header[1] not in _COLUMNS:
        raise ValueError(
            f"{name}: header {rows[0]!r}; expected date,annual_rate (fractions) or date,annual_rate_pct "
            "(percent)"
        )
    scale = _COLUMNS[header[1]]
    steps: list[RateStep] = []
    last_day: dt.date | None = None
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise ValueError(f"{name}, line {line}: {len(row)} fields {row!r}; expected date,rate")
        day_text, rate_text = row[0].strip(), row[1].strip()
        try:
            day = dt.date.fromisoformat(day_text)
        except ValueError:
            raise ValueError(f"{name}, line {line}: date {day_text!r} is not YYYY-MM-DD") from None
        if last_day is not None and day <= last_day:
            raise ValueError(f"{name}, line {line}: date {day} does not follow {last_day}")
        last_day = day
        if rate_text in ("", "."):
            continue  # no rate published that day: the previous one holds
        try:
            if "_" in rate_text:  # float() reads 0_05 as 5.0
                raise ValueError(rate_text)
            value = float(rate_text) * scale
        except ValueError:
            raise ValueError(f"{name}, line {line}: {header[1]} {rate_text!r} is not a number") from None
        if not (math.isfinite(value) and 0.0 <= value <= MAX_ANNUAL_RATE):
            raise ValueError(
                f"{name}, line {line}: {header[1]} {rate_text!r} is outside 0..{MAX_ANNUAL_RATE / scale:g}"
            )
        if not steps or steps[-1].annual != value:
            steps.append(RateStep(start=day, annual=value))
    if not steps:
        raise ValueError(f"{name}: no rate in the file")
    return CashRate(schedule=tuple(steps), source=os.path.basename(name), through=last_day)
