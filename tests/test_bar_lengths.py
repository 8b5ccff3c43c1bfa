"""One bar length per store (``replay.bar_lengths``), and a bar's financing in the store's own bars.

An intraday review (2026-12-05) ingested and evaluated, without a word: a file stitching 60 daily bars
to hourly ones (annualised as hours: 27.9 % a year reported for 168 %), and an hourly equity next to a
daily one (the daily close shown at a 00:00 UTC label before the day's hourly bars: look-ahead)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.envs.replay_loader import load_market_data
from raytrade.replay import read_frame
from raytrade.replay.bar_lengths import (
    MIXED_RUN,
    MixedBarLengthsError,
    refuse_mixed_bar_lengths,
    series_switch,
)
from raytrade.replay.features.config import FeatureConfig
from tests.test_equity_clocks import _csv, ingest, plain, second_ingest_refused

FEATURES = ("vol_20",)
DAYS = pd.bdate_range("2024-01-02", periods=40)


def session_hours(days: pd.DatetimeIndex) -> list[str]:
    """Hourly equity bars on the clock hour, 10:00-16:00 New York (7 a bar day), with offsets."""
    return [
        (d + pd.Timedelta(hours=h)).tz_localize("America/New_York").isoformat()
        for d in days
        for h in range(10, 17)
    ]


def test_a_file_stitching_a_daily_history_to_hourly_bars_is_refused_at_ingest(tmp_path: Path) -> None:
    stamps = [f"{d:%Y-%m-%d}T00:00:00+00:00" for d in DAYS[:20]] + session_hours(DAYS[20:])
    _csv(tmp_path / "src" / "AAA.csv", stamps, 1)
    _csv(tmp_path / "src" / "BBB.csv", session_hours(DAYS), 2)
    code, output = ingest(tmp_path / "src", tmp_path / "store")
    assert code == 2, output
    assert (
        "'AAA' holds bars of two lengths: 20 dates in a row with one daily bar each from 2024-01-02" in output
    )
    assert f"(stamped at 00:00 UTC) and 20 dates with several bars (first {DAYS[20].date()})" in output
    assert not (tmp_path / "store" / "bars").exists()


def test_an_hourly_equity_next_to_a_daily_one_is_refused_and_the_store_kept(tmp_path: Path) -> None:
    output = second_ingest_refused(tmp_path, ("AAA", session_hours(DAYS)), ("BBB", plain(DAYS)))
    assert (
        "daily bars next to intraday ones in one store: 'BBB' daily (stamped at 00:00 UTC), 'AAA' (in"
        in output
    )


def test_the_loader_refuses_a_store_an_older_ingest_wrote_with_two_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _csv(tmp_path / "src" / "AAA.csv", session_hours(DAYS), 1)
    _csv(tmp_path / "src" / "BBB.csv", plain(DAYS), 2)
    monkeypatch.setattr("raytrade.replay.ingest.refuse_mixed_bar_lengths", lambda *a, **k: None)
    store = tmp_path / "store"
    assert ingest(tmp_path / "src", store)[0] == 0  # as the code before the check did
    with pytest.raises(MixedBarLengthsError, match=r"'BBB' daily \(stamped at 00:00 UTC\), 'AAA' intraday"):
        load_market_data(store, "all", feature_columns=FEATURES)
    assert load_market_data(store, "all", symbols=["BBB"], feature_columns=FEATURES).n_steps == len(DAYS)


def test_one_length_with_holidays_half_days_outages_and_daylight_saving_is_accepted() -> None:
    """Hourly bars across the March change, a half-day (4 bars), a holiday and an outage day with
    a single bar (fewer than a run of single-bar days), next to hourly crypto; daily equities next
    to daily crypto: one length each."""
    days = pd.bdate_range("2024-02-26", "2024-03-29").drop(pd.Timestamp("2024-03-15"))  # a holiday
    hours = pd.DatetimeIndex(pd.to_datetime(session_hours(days), utc=True))
    half_day = hours[(hours.normalize() != pd.Timestamp("2024-03-20", tz="UTC")) | (hours.hour < 18)]
    outage = half_day[(half_day.normalize() != pd.Timestamp("2024-03-21", tz="UTC")) | (half_day.hour == 14)]
    crypto = pd.date_range("2024-02-26", "2024-03-30", freq="h", tz="UTC")
    frame = pd.concat(
        [
            pd.DataFrame({"symbol": "AAA", "ts": outage, "asset_class": "equity"}),
            pd.DataFrame({"symbol": "BBB", "ts": hours, "asset_class": "equity"}),
            pd.DataFrame({"symbol": "BTCUSD", "ts": crypto, "asset_class": "crypto"}),
        ]
    )
    refuse_mixed_bar_lengths(frame)
    assert series_switch(pd.DatetimeIndex(outage)) is None
    daily = pd.concat(
        [
            pd.DataFrame({"symbol": "AAA", "ts": pd.DatetimeIndex(DAYS, tz="UTC"), "asset_class": "equity"}),
            pd.DataFrame(
                {
                    "symbol": "BTCUSD",
                    "ts": pd.date_range(DAYS[0], DAYS[-1], freq="D", tz="UTC"),
                    "asset_class": "crypto",
                }
            ),
        ]
    )
    refuse_mixed_bar_lengths(daily)


def test_a_run_shorter_than_the_rule_is_one_length_and_the_run_itself_two() -> None:
    hourly = pd.DatetimeIndex([pd.Timestamp(s) for s in session_hours(DAYS[MIXED_RUN - 1 :])]).tz_convert(
        "UTC"
    )
    short = DAYS[: MIXED_RUN - 1].tz_localize("UTC").append(hourly)
    assert series_switch(short) is None  # four single-bar days: an outage's week, not a daily history
    long = DAYS[:MIXED_RUN].tz_localize("UTC").append(hourly[7:])
    assert series_switch(long) is not None


def test_an_hourly_bar_s_stored_financing_is_an_hour_s_not_a_day_s(tmp_path: Path) -> None:
    """The stored ``financing_bps`` was a day's on every intraday bar (7x an hourly equity bar's);
    the simulator's own financing already followed the bar length."""
    _csv(tmp_path / "hourly" / "AAA.csv", session_hours(DAYS), 1)
    _csv(tmp_path / "daily" / "AAA.csv", plain(DAYS), 1)
    annual = FeatureConfig().financing_annual
    for name, per_year in (("hourly", 252 * 7), ("daily", 252)):
        store = tmp_path / f"{name}_store"
        assert ingest(tmp_path / name, store)[0] == 0
        stored = read_frame(store, "features", columns=["financing_bps"])["financing_bps"].to_numpy()
        np.testing.assert_allclose(stored, annual / per_year * 1e4)


def test_a_thin_hourly_name_with_one_bar_on_many_days_is_intraday_not_daily() -> None:
    """Alpaca sends no bar for an hour without trades: a thin stock has weeks of one bar a day, at
    the session's hours (here the opening hour, which its busier weeks trade too), and a very thin
    one never more than one a day; neither is a daily series."""
    busy = pd.DatetimeIndex(pd.to_datetime(session_hours(DAYS), utc=True))
    hour_of = busy.hour
    thin = busy[(busy.normalize() < busy.normalize()[0] + pd.Timedelta(days=14)) | (hour_of == hour_of.min())]
    one_a_day = busy[busy.hour == 18]  # trades in one afternoon hour only, every day
    assert series_switch(thin) is None
    frame = pd.concat(
        [
            pd.DataFrame({"symbol": "BUSY", "ts": busy, "asset_class": "equity"}),
            pd.DataFrame({"symbol": "THIN", "ts": thin, "asset_class": "equity"}),
            pd.DataFrame({"symbol": "RARE", "ts": one_a_day, "asset_class": "equity"}),
        ]
    )
    refuse_mixed_bar_lengths(frame)


def _frame(**series: tuple[pd.DatetimeIndex, str]) -> pd.DataFrame:
    return pd.concat(
        [pd.DataFrame({"symbol": name, "ts": ts, "asset_class": cls}) for name, (ts, cls) in series.items()]
    )


def _new_york_midnights(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([d.tz_localize("America/New_York") for d in days]).tz_convert("UTC")


def _hours(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(session_hours(days), utc=True))


def test_the_reviewer_s_btcusd_a_daily_history_then_hourly_bars_around_the_clock_is_refused() -> None:
    """60 daily bars at 00:00 UTC, then hourly bars around the clock (00:00 included)."""
    stamps = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC").append(
        pd.date_range("2024-03-01", "2024-03-10 23:00", freq="h", tz="UTC")
    )
    why = series_switch(stamps, crypto=True)
    assert why is not None and why.startswith(
        "holds bars of two lengths: 60 dates in a row with one daily bar"
    )
    with pytest.raises(MixedBarLengthsError, match="'BTCUSD' holds bars of two lengths"):
        refuse_mixed_bar_lengths(_frame(BTCUSD=(stamps, "crypto")))


@pytest.mark.parametrize("cls", ["equity", "crypto"])
def test_a_daily_history_at_new_york_midnight_across_daylight_saving_then_hourly_bars_is_refused(
    cls: str,
) -> None:
    """A review: Alpaca stamps daily bars at New York midnight, 05:00 then 04:00 UTC after March; the
    two clocks of one daily history read as a thin name's hours and went through."""
    days = pd.bdate_range("2023-01-02", "2024-06-28")
    if cls == "crypto":
        days = pd.date_range("2023-01-01", "2024-06-30")
    stamps = _new_york_midnights(days).append(_hours(pd.bdate_range("2024-07-01", periods=20)))
    with pytest.raises(MixedBarLengthsError, match="stamped at 05:00/04:00 UTC|stamped at 04:00/05:00 UTC"):
        refuse_mixed_bar_lengths(_frame(AAA=(stamps, cls)))


def test_a_few_hourly_days_appended_to_a_daily_history_are_refused() -> None:
    """Once a series is daily, one date of several bars is wrong: a review appended four hourly days
    (fewer than a run) and the loader read the store as daily."""
    stamps = pd.DatetimeIndex(DAYS, tz="UTC").append(_hours(pd.bdate_range("2024-03-01", periods=4)))
    with pytest.raises(MixedBarLengthsError, match="and 4 dates with several bars"):
        refuse_mixed_bar_lengths(_frame(AAA=(stamps, "equity")))


def test_a_daily_coin_next_to_an_hourly_coin_is_refused_though_every_hour_is_on_the_clock() -> None:
    hourly = pd.date_range("2024-01-01", "2024-02-29 23:00", freq="h", tz="UTC")
    days = pd.date_range("2024-01-01", "2024-02-29")
    for daily in (days.tz_localize("UTC"), _new_york_midnights(days)):
        with pytest.raises(MixedBarLengthsError, match="'ETHUSD' daily .* 'BTCUSD' intraday"):
            refuse_mixed_bar_lengths(_frame(BTCUSD=(hourly, "crypto"), ETHUSD=(daily, "crypto")))


def test_a_thin_equity_and_a_thin_coin_at_their_session_s_hours_are_accepted() -> None:
    """A review: a stock busy in summer, then one bar a day at 15:00 New York (20:00 UTC in winter, an
    hour a liquid name of the store trades), and a coin with six quiet days at 15:00 UTC, were refused
    as daily histories."""
    summer, winter = (
        _hours(pd.bdate_range("2024-06-03", periods=30)),
        _hours(pd.bdate_range("2024-12-02", periods=30)),
    )
    coin = pd.date_range("2024-01-01", "2024-01-20 23:00", freq="h", tz="UTC")
    quiet_days = (coin >= pd.Timestamp("2024-01-08", tz="UTC")) & (
        coin < pd.Timestamp("2024-01-14", tz="UTC")
    )
    refuse_mixed_bar_lengths(
        _frame(
            THIN=(summer.append(winter[winter.hour == 20]), "equity"),
            LIQUID=(summer.append(winter), "equity"),
            ALTUSD=(coin[~quiet_days | (coin.hour == 15)], "crypto"),
        )
    )


def test_the_rule_is_quick_on_a_large_hourly_store() -> None:
    import time

    hours = _hours(pd.bdate_range("2023-01-02", periods=500))
    frame = _frame(**{f"S{k:02d}": (hours, "equity") for k in range(50)})  # 175,000 bars
    start = time.process_time()
    refuse_mixed_bar_lengths(frame)
    assert time.process_time() - start < 10.0  # about a second here


def _central_midnights(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([d.tz_localize("America/Chicago") for d in days]).tz_convert("UTC")


def test_alpaca_s_own_daily_crypto_at_us_central_midnight_is_daily() -> None:
    """A review: Alpaca stamps a crypto-only fetch's daily bars at US Central midnight (05:00/06:00
    UTC), which is 01:00 in New York: no daily stamp, read as a thin coin, so its daily history
    before hourly bars, and a daily coin next to an hourly one, went through."""
    days = pd.date_range("2024-01-01", "2024-04-30")
    hourly = pd.date_range("2024-05-01", "2024-05-10 23:00", freq="h", tz="UTC")
    with pytest.raises(MixedBarLengthsError, match="'BTCUSD' holds bars of two lengths: 121 dates in a row"):
        refuse_mixed_bar_lengths(_frame(BTCUSD=(_central_midnights(days).append(hourly), "crypto")))
    with pytest.raises(MixedBarLengthsError, match="'ETHUSD' daily"):
        refuse_mixed_bar_lengths(
            _frame(BTCUSD=(hourly, "crypto"), ETHUSD=(_central_midnights(days), "crypto"))
        )


def test_a_daily_coin_next_to_hourly_equities_is_refused() -> None:
    """A review: daily BTC at 00:00 UTC next to hourly stocks passed this rule (the stocks' clock was
    the only one, and a coin's is another class's) and the loader's off-label check alike."""
    days = pd.bdate_range("2024-01-02", periods=30)
    coin = pd.date_range(days[0], days[-1], freq="D", tz="UTC")
    with pytest.raises(MixedBarLengthsError, match="'BTCUSD' daily .* 'AAA' intraday"):
        refuse_mixed_bar_lengths(_frame(AAA=(_hours(days), "equity"), BTCUSD=(coin, "crypto")))


def test_a_daily_series_with_two_daily_stamps_on_one_date_is_named_as_two_clocks() -> None:
    """A csv history at 00:00 UTC overlapping an Alpaca one at New York midnight on one date: two daily
    clocks, not "intraday bars" to resample."""
    days = pd.bdate_range("2024-01-02", periods=30)
    stamps = days.tz_localize("UTC").append(_new_york_midnights(days[-1:])).sort_values()
    with pytest.raises(MixedBarLengthsError) as caught:
        refuse_mixed_bar_lengths(_frame(AAPL=(stamps, "equity")))
    message = str(caught.value)
    assert "1 date with two daily stamps (first 2024-02-12, at 00:00/05:00 UTC) in a daily series" in message
    assert "two daily clocks" in message and "resample" not in message
