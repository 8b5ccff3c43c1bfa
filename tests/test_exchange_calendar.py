"""The NYSE calendar: observed holidays by rule, and the unscheduled closures."""

from __future__ import annotations

from datetime import date, timedelta

from raytrade.replay.exchange_calendar import trading_days_between


def test_the_nyse_calendar_closes_on_its_observed_holidays_only() -> None:
    # 2027: Independence Day on a Sunday -> Monday 5th; Christmas on a Saturday -> Friday 24th
    assert trading_days_between(date(2027, 7, 2), date(2027, 7, 6)) == 1
    assert trading_days_between(date(2027, 12, 23), date(2027, 12, 27)) == 1
    # New Year's Day 2022 on a Saturday: not made up, Friday 2021-12-31 is a session
    assert trading_days_between(date(2021, 12, 30), date(2022, 1, 3)) == 2
    # Juneteenth from 2022 only; Good Friday 2026 is April 3rd
    assert trading_days_between(date(2021, 6, 18), date(2021, 6, 19)) == 1
    assert trading_days_between(date(2022, 6, 17), date(2022, 6, 21)) == 1
    assert trading_days_between(date(2026, 4, 2), date(2026, 4, 6)) == 1
    # a whole year: 2026 has 251 sessions
    assert trading_days_between(date(2026, 1, 1), date(2027, 1, 1)) == 251


def test_daily_bars_between_counts_the_universes_bars_strictly_between() -> None:
    from raytrade.replay.exchange_calendar import daily_bars_between

    friday, tuesday = date(2025, 1, 17), date(2025, 1, 21)  # Martin Luther King Day between
    assert daily_bars_between(friday, tuesday, crypto_only=False) == 0  # nothing missed
    assert daily_bars_between(friday, tuesday + timedelta(days=2), crypto_only=False) == 2  # Tue, Wed
    assert daily_bars_between(friday, tuesday, crypto_only=True) == 3  # Sat, Sun, Mon
    assert daily_bars_between(friday, friday, crypto_only=True) == 0
    assert daily_bars_between(tuesday, friday, crypto_only=False) == 0  # backwards: none


def test_bars_closed_since_counts_from_the_bars_own_close() -> None:
    """A crypto bar stamped 06:00 UTC (Alpaca's US Central midnight) closes at 06:00 the next day: at
    03:00 UTC on Dec 5 one later bar (Dec 3's) has closed, not two (a count by the UTC date said two
    and held a store that was one bar behind)."""
    from datetime import UTC, datetime

    from raytrade.replay.exchange_calendar import bars_closed_since

    stamp = datetime(2025, 12, 2, 6, tzinfo=UTC)
    closed = stamp + timedelta(days=1)
    assert (
        bars_closed_since(stamp.date(), closed, datetime(2025, 12, 5, 3, tzinfo=UTC), crypto_only=True) == 1
    )
    assert (
        bars_closed_since(stamp.date(), closed, datetime(2025, 12, 5, 6, tzinfo=UTC), crypto_only=True) == 2
    )
    # a date label (closed at the next midnight) read on Friday night: Tue, Wed, Thu closed (Jul 4 not)
    label, at = date(2025, 6, 30), datetime(2025, 7, 4, 23, 30, tzinfo=UTC)
    assert bars_closed_since(label, datetime(2025, 7, 1, tzinfo=UTC), at, crypto_only=False) == 3
