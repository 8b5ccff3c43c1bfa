"""Daily equities stamped on two clocks are refused at ingest and by the loader, never stepped.

A csv folder with APP dated by plain session dates (00:00 UTC) and KGC stamped at New York midnight
with an offset (05:00 UTC in winter) made a calendar of two labels per session: each stock had a hole
at every other label, nothing filled, and ``raytrade evaluate`` showed every policy at 0 % with exit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.envs.replay_loader import load_market_data
from raytrade.replay import read_frame
from raytrade.replay.timeutil import (
    DAY,
    MixedDailyClocksError,
    bar_closed_at,
    bar_length,
    refuse_mixed_daily_clocks,
)

FEATURES = ("vol_20",)
DAYS = pd.bdate_range("2024-01-02", periods=40)


def _csv(path: Path, stamps: list[str], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    close = 20.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(stamps))))
    prices = zip(stamps, close, strict=True)
    rows = [f"{s},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},1000" for s, c in prices]
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")


def plain(days: pd.DatetimeIndex) -> list[str]:
    return [f"{d:%Y-%m-%d}" for d in days]


def new_york_midnight(days: pd.DatetimeIndex) -> list[str]:
    return [d.tz_localize("America/New_York").isoformat() for d in days]  # -05:00 / -04:00 after March


def ingest(folder: Path, store: Path) -> tuple[int, str]:
    args = ["ingest", "--source", "csv", "--path", str(folder), "--out", str(store)]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ingest_refuses_a_folder_of_equities_on_two_clocks(tmp_path: Path) -> None:
    _csv(tmp_path / "src" / "APP.csv", plain(DAYS), 1)
    _csv(tmp_path / "src" / "KGC.csv", new_york_midnight(DAYS), 2)
    code, output = ingest(tmp_path / "src", tmp_path / "store")
    assert code == 2, output
    assert "daily equity bars are stamped at different times of day on the same dates" in output
    assert "(40 dates, first 2024-01-02)" in output
    assert "'APP' at 00:00 UTC" in output and "'KGC' at 05:00 UTC" in output
    assert "one convention" in output
    assert not (tmp_path / "store" / "bars").exists()


def second_ingest_refused(tmp_path: Path, first: tuple[str, list[str]], second: tuple[str, list[str]]) -> str:
    """Ingest the symbol ``first`` (name, stamps) into a new store, then ``second`` into it: the
    second is refused (exit 2) and the store left byte for byte as it was; returns the output."""
    _csv(tmp_path / "first" / f"{first[0]}.csv", first[1], 1)
    store = tmp_path / "store"
    assert ingest(tmp_path / "first", store)[0] == 0
    before = snapshot(store)
    _csv(tmp_path / "second" / f"{second[0]}.csv", second[1], 2)
    code, output = ingest(tmp_path / "second", store)
    assert code == 2, output
    assert snapshot(store) == before
    return output


def test_ingest_refuses_equities_on_another_clock_than_the_stores_and_writes_nothing(tmp_path: Path) -> None:
    output = second_ingest_refused(tmp_path, ("APP", plain(DAYS)), ("KGC", new_york_midnight(DAYS)))
    assert "'APP' (in the store) at 00:00 UTC" in output and "'KGC' at 05:00 UTC" in output


def test_loader_refuses_a_store_an_older_ingest_wrote_with_equities_on_two_clocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _csv(tmp_path / "src" / "APP.csv", plain(DAYS), 1)
    _csv(tmp_path / "src" / "KGC.csv", new_york_midnight(DAYS), 2)
    monkeypatch.setattr("raytrade.replay.ingest.refuse_mixed_daily_clocks", lambda *a, **k: None)
    store = tmp_path / "store"
    assert ingest(tmp_path / "src", store)[0] == 0  # as the code before the ingest check did
    with pytest.raises(MixedDailyClocksError) as caught:
        load_market_data(store, "all", feature_columns=FEATURES)
    message = str(caught.value)
    assert "'APP' at 00:00 UTC" in message and "'KGC' at 05:00 UTC" in message
    one = load_market_data(store, "all", symbols=["KGC"], feature_columns=FEATURES)
    assert one.listed.all() and one.n_steps == len(DAYS)


def test_one_clock_across_daylight_saving_and_plain_dates_next_to_utc_crypto_load(tmp_path: Path) -> None:
    spring = pd.bdate_range("2024-02-20", periods=40)  # New York midnight is 05:00, then 04:00 UTC
    _csv(tmp_path / "ny" / "APP.csv", new_york_midnight(spring), 1)
    _csv(tmp_path / "ny" / "KGC.csv", new_york_midnight(spring), 2)
    assert ingest(tmp_path / "ny", tmp_path / "ny_store")[0] == 0
    assert load_market_data(tmp_path / "ny_store", "all", feature_columns=FEATURES).listed.all()

    _csv(tmp_path / "mixed" / "APP.csv", plain(DAYS), 1)
    _csv(tmp_path / "mixed" / "KGC.csv", plain(DAYS), 2)
    all_days = pd.date_range(DAYS[0], DAYS[-1], freq="D")
    _csv(tmp_path / "mixed" / "crypto" / "BTCUSD.csv", [f"{d:%Y-%m-%d}T00:00:00+00:00" for d in all_days], 3)
    assert ingest(tmp_path / "mixed", tmp_path / "mixed_store")[0] == 0
    data = load_market_data(tmp_path / "mixed_store", "all", feature_columns=FEATURES)
    assert data.n_steps == len(DAYS) and data.listed.all()


def test_intraday_store_still_ingests_and_loads(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["--n-symbols", "3", "--years", "0.1", "--freq", "1h", "--out", str(store)]
    result = CliRunner().invoke(main, ["ingest", "--source", "synthetic", *args])
    assert result.exit_code == 0, result.output
    data = load_market_data(store, "all", feature_columns=FEATURES)
    assert data.periods_per_year > 252 and data.listed.all()


def test_a_synthetic_hourly_store_with_crypto_ingests_and_loads_on_the_clock_hour(tmp_path: Path) -> None:
    """Hourly equities stamped at the half hour (14:30 UTC) next to hourly crypto on the hour were
    refused by the loader (every crypto bar between labels); both are stamped on the hour now, as
    Alpaca stamps them, and crypto is observed at the equity labels with its own bar of that hour."""
    store = tmp_path / "store"
    args = ["--n-symbols", "2", "--n-crypto", "1", "--years", "0.05", "--freq", "1h", "--out", str(store)]
    result = CliRunner().invoke(main, ["ingest", "--source", "synthetic", *args])
    assert result.exit_code == 0, result.output
    data = load_market_data(store, "all", feature_columns=FEATURES)
    stamps = pd.DatetimeIndex(data.ts)
    assert sorted(set(stamps.strftime("%H:%M"))) == [f"{h}:00" for h in range(14, 21)]
    assert data.days_per_bar == pytest.approx(1 / 7) and data.listed.all()
    crypto = read_frame(store, "bars", symbols=["SYC00USD"]).set_index("ts")["close"]
    k = data.symbols.index("SYC00USD")
    # the bar stamped at each label, the one that closes with the equities' bar (no later bar's close)
    assert np.array_equal(data.close[:, k], crypto.reindex(stamps.tz_localize("UTC")).to_numpy())


def central_midnight(start: str, end: str) -> pd.DatetimeIndex:
    """Daily stamps at midnight US Central as UTC (Alpaca's daily crypto): 06:00, then 05:00 UTC from
    the spring-forward Sunday (2024-03-10), whose bar is 23 h long."""
    return pd.date_range(start, end, freq="D", tz="America/Chicago").tz_convert("UTC")


def two_crypto_clocks(start: str, end: str) -> pd.DataFrame:
    central = pd.DataFrame({"symbol": "BTCUSD", "ts": central_midnight(start, end), "asset_class": "crypto"})
    utc = pd.DataFrame(
        {"symbol": "ETHUSD", "ts": pd.date_range(start, end, tz="UTC"), "asset_class": "crypto"}
    )
    return pd.concat([central, utc], ignore_index=True)


def test_daily_bars_across_a_daylight_saving_change_are_one_day_long() -> None:
    march = central_midnight("2024-03-01", "2024-03-20")
    assert (march[1:] - march[:-1]).min() == pd.Timedelta(hours=23)  # the spring-forward day
    assert bar_length(march) == DAY
    hourly = pd.date_range("2024-03-09", "2024-03-11", freq="h", tz="America/Chicago").tz_convert("UTC")
    assert bar_length(hourly) == pd.Timedelta(hours=1)


@pytest.mark.parametrize(("start", "end"), [("2024-04-01", "2024-04-20"), ("2024-03-01", "2024-03-20")])
def test_crypto_on_two_daily_clocks_is_refused_across_a_daylight_saving_change_too(
    start: str, end: str
) -> None:
    with pytest.raises(MixedDailyClocksError, match=r"'BTCUSD' at 0[56]:00\S* UTC; 'ETHUSD' at 00:00 UTC"):
        refuse_mixed_daily_clocks(two_crypto_clocks(start, end))


def test_a_daily_bar_counts_as_closed_at_the_latest_local_midnight_it_can_end_at() -> None:
    """A date label (00:00 UTC) closes a day later; a bar stamped at a local midnight closes at the next
    local midnight, 23 to 25 h later, so it counts as closed 25 h later, never before it closed."""
    stamps = pd.DatetimeIndex(["2024-03-09", "2024-03-09 06:00", "2024-11-03 05:00"], tz="UTC")
    assert list(bar_closed_at(stamps, DAY)) == list(
        pd.DatetimeIndex(["2024-03-10", "2024-03-10 07:00", "2024-11-04 06:00"], tz="UTC")
    )
    opened, real_close = (
        central_midnight("2024-03-01", "2024-11-29"),
        central_midnight("2024-03-02", "2024-11-30"),
    )
    late = bar_closed_at(opened, DAY) - real_close  # across both changes of 2024
    assert late.min() == pd.Timedelta(0) and late.max() == pd.Timedelta(hours=2)
    hourly = pd.DatetimeIndex(["2024-03-10 07:00"], tz="UTC")
    assert list(bar_closed_at(hourly, pd.Timedelta(hours=1))) == [pd.Timestamp("2024-03-10 08:00", tz="UTC")]
