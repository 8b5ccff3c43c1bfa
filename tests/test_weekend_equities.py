"""``replay.weekend_bars``: an equity that trades on weekends is a 24/7 series under an equity's name,
refused at ingest before anything is written. A reviewer's ``SUIEUR`` (crypto under a name the loop
does not read as a pair) was stored as an equity: stepped on weekdays, annualised at 252 bars a year
on its 365, financed per bar about 1.45x a year's worth, charged an equity's fee, shortable."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.replay.weekend_bars import WeekendEquityError, refuse_weekend_equities, weekend_days

DAYS = pd.date_range("2026-01-01", "2026-03-31", tz="UTC")  # every day: 24/7 daily bars at 00:00 UTC


def _frame(symbol: str, ts: pd.DatetimeIndex, asset_class: str = "equity") -> pd.DataFrame:
    return pd.DataFrame({"symbol": symbol, "ts": ts, "asset_class": asset_class})


def test_weekend_days_are_read_by_utc_date() -> None:
    stamps = pd.Series(
        pd.DatetimeIndex(["2026-03-07 00:00", "2026-03-08 23:00", "2026-03-09 00:00"], tz="UTC")
    )
    assert weekend_days(stamps).tolist() == [5, 6, -1]


def test_a_daily_247_series_stored_as_an_equity_is_refused_naming_it() -> None:
    with pytest.raises(WeekendEquityError) as refused:
        refuse_weekend_equities(_frame("SUIEUR", DAYS), origin="csv")
    said = str(refused.value)
    assert said.startswith(
        "csv: refused, nothing written: 'SUIEUR': 13 of its 90 bars fall on a Saturday and 13 on a Sunday"
    )
    assert "the first 2026-01-03T00:00:00+00:00" in said  # the first Saturday
    assert "name it so (e.g. SUIUSD)" in said


def test_an_hourly_247_series_is_refused_and_equities_and_crypto_on_their_days_pass() -> None:
    hours = pd.date_range("2026-03-02", "2026-03-16", freq="h", tz="UTC")
    with pytest.raises(
        WeekendEquityError, match="'SOL': 48 of its 337 bars fall on a Saturday and 48 on a Sunday"
    ):
        refuse_weekend_equities(_frame("SOL", hours))
    weekdays = pd.bdate_range("2026-01-01", "2026-03-31", tz="UTC")
    regular = pd.concat([_frame("AAA", weekdays), _frame("SUIUSDT", DAYS, "crypto")], ignore_index=True)
    refuse_weekend_equities(regular)  # an equity's weekdays and a crypto pair's every day
    stray = weekdays.append(pd.DatetimeIndex(DAYS[DAYS.dayofweek >= 5][:7])).sort_values()
    refuse_weekend_equities(_frame("AAA", stray))  # 7 stray weekend rows: lone_days' warning, not this
    few = pd.concat([_frame("AAA", weekdays), _frame("BBB", DAYS[-10:])], ignore_index=True)
    refuse_weekend_equities(few)  # a weekend in a nightly batch: under the count


@pytest.mark.parametrize(
    ("tz", "days"),
    [
        ("Asia/Tokyo", pd.bdate_range("2026-01-05", "2026-03-31")),  # Monday's session: a UTC Sunday
        ("Australia/Sydney", pd.bdate_range("2026-01-05", "2026-03-31")),
        ("Europe/Berlin", pd.bdate_range("2026-01-05", "2026-03-31")),  # yfinance's local-midnight stamps
        ("UTC", DAYS.tz_localize(None)[DAYS.dayofweek.isin([6, 0, 1, 2, 3])]),  # Tadawul: Sunday to Thursday
    ],
)
def test_an_exchange_east_of_utc_or_trading_on_sundays_is_not_refused(
    tz: str, days: pd.DatetimeIndex
) -> None:
    """Stamped at local midnight, a weekday exchange east of UTC puts Monday on a UTC Sunday; a
    Sunday-to-Thursday exchange trades on Sundays. Neither has Saturdays: not a 24/7 series (the first
    rule, a weekend in both UTC and New York, refused all four)."""
    stamps = pd.DatetimeIndex([pd.Timestamp(d.date(), tz=tz) for d in days]).tz_convert("UTC")
    assert (stamps.dayofweek == 6).sum() >= 8  # they do fall on Sundays
    refuse_weekend_equities(_frame("7203", stamps))
    friday_late = pd.DatetimeIndex(
        [
            d + pd.Timedelta(hours=24)
            for d in pd.bdate_range("2026-01-02", "2026-03-27", freq="W-FRI", tz="UTC")
        ]
    )
    refuse_weekend_equities(_frame("AAA", friday_late))  # Friday after-hours bars stamped Saturday 00:00 UTC


def test_ingest_refuses_a_weekend_equity_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for k, (symbol, days) in enumerate(
        (("AAA", pd.bdate_range("2026-01-01", "2026-03-31")), ("SUIEUR", DAYS.tz_localize(None)))
    ):
        lines = [f"{d:%Y-%m-%d},{10 + k:.2f},{11 + k:.2f},{9 + k:.2f},{10 + k:.2f},1000" for d in days]
        (src / f"{symbol}.csv").write_text("Date,close,high,low,open,volume\n" + "\n".join(lines) + "\n")
    out = tmp_path / "store"
    result = CliRunner().invoke(main, ["ingest", "--source", "csv", "--path", str(src), "--out", str(out)])
    assert result.exit_code != 0
    assert "'SUIEUR': 13 of its 90 bars fall on a Saturday and 13 on a Sunday" in result.output
    assert not (out / "bars").exists() or not any((out / "bars").rglob("*.parquet"))


def _bars(symbol: str, ts: pd.DatetimeIndex, asset_class: str, volume: float = 1000.0) -> pd.DataFrame:
    return _frame(symbol, ts, asset_class).assign(volume=volume)


def test_crypto_bars_a_store_with_equities_never_steps_are_named() -> None:
    """A store with equities steps on their sessions: crypto bars over a week before the first or
    after the last are never stepped (a reviewer's 781 SUI bars next to 7 months of PDD: 147 stepped,
    its Sharpe 2.00 on them against 0.58 over the coin's history, nothing said)."""
    from raytrade.replay.unstepped import unstepped_crypto

    coin = pd.date_range("2024-01-01", "2025-12-31", tz="UTC")
    stock = pd.bdate_range("2024-06-03", "2024-12-31", tz="UTC")
    store = pd.concat([_bars("SUIUSDT", coin, "crypto"), _bars("PDD", stock, "equity")], ignore_index=True)
    (named,) = unstepped_crypto(store, store)
    assert (named.symbol, named.before) == ("SUIUSDT", 147)  # 2024-01-01 .. 2024-05-26
    assert named.bars == 147 + 358  # and 2025-01-08 .. 2025-12-31
    said = named.message()
    assert said.startswith("SUIUSDT: 505 new bars lie over a week outside the equities' sessions 2024-06-03")
    assert "147 before it, the rest after" in said and "never stepped" in said
    weekend = coin[(coin >= stock[0]) & (coin <= stock[-1] + pd.Timedelta(days=2))]
    quiet = pd.concat([_bars("SUIUSDT", weekend, "crypto"), _bars("PDD", stock, "equity")], ignore_index=True)
    assert unstepped_crypto(quiet, quiet) == ()  # Saturday and Sunday after Friday's session: stepped Monday
    no_trades = pd.concat([_bars("SUIUSDT", coin, "crypto"), _bars("PDD", stock, "equity", 0.0)])
    assert unstepped_crypto(no_trades, no_trades) == ()  # no equity traded: no equity calendar
    old = store[store["symbol"] == "PDD"]
    assert unstepped_crypto(store, old) == ()  # only the new crypto bars are named


def test_ingest_warns_of_unstepped_crypto(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "crypto").mkdir(parents=True)
    frames = {
        src / "AAA.csv": pd.bdate_range("2026-02-02", "2026-03-31"),
        src / "crypto" / "SUIUSDT.csv": pd.date_range("2026-01-01", "2026-03-31"),
    }
    for path, days in frames.items():
        lines = [f"{d:%Y-%m-%d},10.00,11.00,9.00,10.00,1000" for d in days]
        path.write_text("Date,close,high,low,open,volume\n" + "\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main, ["ingest", "--source", "csv", "--path", str(src), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert "warning: SUIUSDT: 25 new bars lie over a week outside the equities' sessions" in result.output
