"""Alpaca daily stocks and daily crypto in one store: the crypto's daily bars are built from Alpaca's
hourly bars per New York day and stamped at New York midnight like the stocks', so the loader steps
both. Run with the real alpaca-py clients against ``tests.fake_alpaca`` on 127.0.0.1 (no network).

Before, the crypto kept Alpaca's daily stamps (its day start), which never equal the stocks', and the
loader refused every such store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.cluster.settings import Settings
from raytrade.envs.replay_loader import OffCalendarBarsError, load_market_data
from raytrade.replay import read_frame
from raytrade.replay.sources.alpaca import fetch_alpaca_bars
from raytrade.replay.sources.alpaca_daily import SecondCryptoClockError
from tests.fake_alpaca import CRYPTO_BARS_PATH, CRYPTO_HOURLY_BARS, TEST_KEYS, FakeAlpaca, hourly_bars

NEW_YORK = "America/New_York"
FEATURES = ("ret_1",)
PRICE_COLUMNS = ["open", "high", "low", "close", "volume", "vwap", "trade_count"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        yield server


def independent_daily(hourly: list[dict[str, Any]]) -> pd.DataFrame:
    """The hourly JSON bars aggregated per New York calendar day with pandas (the rule, stated once
    more): stamp = that day's New York midnight in UTC, first open, max high, min low, last close,
    summed volume and trade count, volume-weighted vwap."""
    frame = pd.DataFrame(hourly).rename(
        columns={"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "n": "trade_count"}
    )
    frame["t"] = pd.to_datetime(frame["t"], utc=True)
    frame = frame.sort_values("t")
    frame["day"] = frame["t"].dt.tz_convert(NEW_YORK).dt.date
    frame["pv"] = frame["vw"] * frame["volume"]
    days = frame.groupby("day").agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        pv=("pv", "sum"),
        trade_count=("trade_count", "sum"),
    )
    days["vwap"] = days.pop("pv") / days["volume"]
    days.index = pd.DatetimeIndex(
        [pd.Timestamp(d).tz_localize(NEW_YORK).tz_convert("UTC") for d in days.index], name="ts"
    ).as_unit("us")
    days["trade_count"] = days["trade_count"].astype("Int64")
    return days[PRICE_COLUMNS]


def stored_crypto(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """``symbol``'s bars, as :func:`independent_daily` shows them (the store reads counts as int64)."""
    return frame[frame["symbol"] == symbol].set_index("ts")[PRICE_COLUMNS].astype({"trade_count": "Int64"})


def fetch(fake: FakeAlpaca, symbols: list[str], start: str, end: str, **kwargs: Any) -> pd.DataFrame:
    settings = Settings(alpaca_api_key=TEST_KEYS[0], alpaca_secret_key=TEST_KEYS[1])
    return fetch_alpaca_bars(
        symbols,
        pd.Timestamp(start, tz="UTC").to_pydatetime(),
        pd.Timestamp(end, tz="UTC").to_pydatetime(),
        access=settings.alpaca_access(),
        url_override=fake.url,
        **kwargs,
    )


def stock_bar(day: str, close: float) -> dict[str, Any]:
    t = pd.Timestamp(day).tz_localize(NEW_YORK).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "t": t,
        "o": close,
        "h": close * 1.01,
        "l": close * 0.99,
        "c": close,
        "v": 1e6,
        "n": 1000,
        "vw": close,
    }


# A week around each daylight-saving change of 2024: the spring-forward Sunday (Mar 10) has 23 New York
# hours, the fall-back one (Nov 3) 25. Stocks trade Friday and Monday to Wednesday; the crypto pair
# has every hour, except the Saturday (5 hours missing: still one bar) and the Tuesday (none: a hole).
WEEKS = {
    "spring": ("2024-03-08", ["2024-03-08", "2024-03-11", "2024-03-12", "2024-03-13"], 23),
    "fall": ("2024-11-01", ["2024-11-01", "2024-11-04", "2024-11-05", "2024-11-06"], 25),
}


def dst_week(fake: FakeAlpaca, week: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Load ``week`` into the fake; returns the stocks' days and the pair's hourly bars."""
    friday, stock_days, sunday_hours = WEEKS[week]
    first = pd.Timestamp(friday).tz_localize(NEW_YORK).tz_convert("UTC")
    hours = 6 * 24 - (24 - sunday_hours)  # Friday to Wednesday; the clock skips or repeats an hour
    every_hour = hourly_bars(first.strftime("%Y-%m-%dT%H:%M:%SZ"), hours, 60000.0, seed=7)
    day_of = [pd.Timestamp(b["t"]).tz_convert(NEW_YORK).date() for b in every_hour]
    saturday, sunday, tuesday = (pd.Timestamp(friday).date() + pd.Timedelta(days=k) for k in (1, 2, 4))
    assert day_of.count(sunday) == sunday_hours  # the fake's week really has the short or long day
    assert day_of[-1] == pd.Timestamp(stock_days[-1]).date() and day_of.count(day_of[-1]) == 24
    hourly = [
        bar
        for i, (bar, day) in enumerate(zip(every_hour, day_of, strict=True))
        if day != tuesday and not (day == saturday and i % 5 == 0)
    ]
    assert (
        0
        < sum(d == saturday for d in day_of)
        - sum(pd.Timestamp(b["t"]).tz_convert(NEW_YORK).date() == saturday for b in hourly)
        < 24
    )
    fake.stock_bars = {"AAPL": [stock_bar(d, 100.0 + i) for i, d in enumerate(stock_days)]}
    fake.crypto_hourly_bars = {"BTC/USD": hourly}
    fake.crypto_bars = {}  # a daily crypto request would find nothing
    fake.stock_quotes, fake.crypto_orderbooks = {}, {}
    return stock_days, hourly


def test_daily_crypto_next_to_stocks_is_the_hourly_bars_per_new_york_day(fake: FakeAlpaca) -> None:
    got = fetch(fake, ["AAPL", "BTCUSD", "ETHUSD"], "2024-01-01", "2024-01-05")
    for pair, symbol in (("BTC/USD", "BTCUSD"), ("ETH/USD", "ETHUSD")):
        want = independent_daily(CRYPTO_HOURLY_BARS[pair])
        pd.testing.assert_frame_equal(stored_crypto(got, symbol), want, check_exact=False, rtol=1e-12)
    aapl = got.loc[got["symbol"] == "AAPL", "ts"].tolist()
    assert got.loc[got["symbol"] == "BTCUSD", "ts"].tolist() == aapl  # the stocks' stamps
    (hourly,) = [r.query for r in fake.requests if r.path == CRYPTO_BARS_PATH]
    assert hourly["timeframe"] == "1Hour"
    # the New York days stamped in the window: Jan 1 (05:00 UTC) to Jan 4, whose last hour is 04:00 UTC
    assert (hourly["start"], hourly["end"]) == ("2024-01-01T05:00:00+00:00", "2024-01-05T04:00:00+00:00")


def test_crypto_fetched_alone_keeps_alpacas_daily_bars(fake: FakeAlpaca) -> None:
    got = fetch(fake, ["BTCUSD"], "2024-01-01", "2024-01-05")
    assert got["ts"].dt.strftime("%H:%M").unique().tolist() == ["00:00"]  # the fake's daily stamps
    assert [r.query["timeframe"] for r in fake.requests if r.path == CRYPTO_BARS_PATH] == ["1Day"]


@pytest.mark.parametrize("week", sorted(WEEKS))
def test_a_daylight_saving_week_with_a_day_in_progress(fake: FakeAlpaca, week: str) -> None:
    """The short or long Sunday is one bar of its 23 or 25 hours; the Saturday with hours missing is one
    bar of those it has; the Tuesday without hours is a hole; the Wednesday, fetched at 15:00 New
    York, is still in progress and left out (a day counts as closed 25 h after its stamp)."""
    stock_days, hourly = dst_week(fake, week)
    wednesday = pd.Timestamp(stock_days[-1]).tz_localize(NEW_YORK)
    now = (wednesday + pd.Timedelta(hours=15)).tz_convert("UTC").to_pydatetime()
    got = fetch(fake, ["AAPL", "BTCUSD"], stock_days[0], stock_days[-1] + "T23:00", now=now)
    want = independent_daily(hourly)
    want = want[want.index < wednesday.tz_convert("UTC")]  # the New York days over by 15:00 Wednesday
    assert len(want) == 4  # Friday to Monday; Tuesday has no hour
    pd.testing.assert_frame_equal(stored_crypto(got, "BTCUSD"), want, check_exact=False, rtol=1e-12)
    assert got.loc[got["symbol"] == "AAPL", "ts"].max() < wednesday  # Wednesday's stock bar too


def alpaca_ingest(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, symbols: str, start: str, end: str, out: Path
) -> tuple[int, str]:
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("ALPACA_DATA_URL", fake.url)
    args = ["ingest", "--source", "alpaca", "--symbols", symbols, "--start", start, "--end", end]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    return result.exit_code, result.output


@pytest.mark.parametrize("week", sorted(WEEKS))
def test_an_ingest_of_stocks_and_crypto_writes_a_store_the_loader_steps(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, week: str
) -> None:
    stock_days, hourly = dst_week(fake, week)
    store = tmp_path / "store"
    thursday = (pd.Timestamp(stock_days[-1]) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    code, output = alpaca_ingest(fake, monkeypatch, "AAPL,BTCUSD", stock_days[0], thursday, store)
    assert code == 0, output
    bars = read_frame(store, "bars")
    want = independent_daily(hourly)
    pd.testing.assert_frame_equal(stored_crypto(bars, "BTCUSD"), want, check_exact=False, rtol=1e-12)

    data = load_market_data(store, "all", feature_columns=FEATURES)
    labels = pd.DatetimeIndex(data.ts).tz_localize("UTC")
    assert [d.tz_convert(NEW_YORK).strftime("%Y-%m-%d") for d in labels] == stock_days
    btc = data.symbols.index("BTCUSD")
    crypto_close = want["close"].reindex(labels)  # its own bar at each label; the Tuesday is a hole
    assert data.listed[:, btc].tolist() == crypto_close.notna().tolist() == [True, True, False, True]
    assert np.array_equal(data.close[data.listed[:, btc], btc], crypto_close.dropna().to_numpy())


def central_daily(first_day: str, days: int) -> list[dict[str, Any]]:
    """Daily crypto bars stamped as the real API stamps them: midnight US Central (06:00 UTC in January)."""
    stamps = pd.date_range(first_day, periods=days, freq="D", tz="America/Chicago").tz_convert("UTC")
    return [{**stock_bar("2024-01-02", 44000.0), "t": t.strftime("%Y-%m-%dT%H:%M:%SZ")} for t in stamps]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("held", ["BTCUSD", "ETHUSD"])
def test_a_store_with_alpaca_stamped_daily_crypto_refuses_crypto_on_the_stocks_clock(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, held: str
) -> None:
    """A store an earlier (crypto-only) ingest filled with Alpaca's day-start crypto does not silently
    get a second clock from a fetch of stocks and crypto: refused, nothing written, the fix named."""
    fake.crypto_bars = {
        "BTC/USD": central_daily("2023-12-20", 10),
        "ETH/USD": central_daily("2023-12-20", 10),
    }
    store = tmp_path / "store"
    assert alpaca_ingest(fake, monkeypatch, held, "2023-12-20", "2023-12-30", store)[0] == 0
    assert set(read_frame(store, "bars")["ts"].dt.strftime("%H:%M")) == {"06:00"}
    before = snapshot(store)
    code, output = alpaca_ingest(fake, monkeypatch, "AAPL,BTCUSD", "2024-01-01", "2024-01-05", store)
    assert code == 2, output
    assert f"'{held}' (in the store) stamped at 06:00 UTC" in output, output
    assert "'AAPL'" in output
    assert "two daily clocks" in output and "Re-ingest into a new store" in output
    assert snapshot(store) == before


def test_crypto_fetched_alone_into_a_store_on_the_stocks_clock_is_refused(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert alpaca_ingest(fake, monkeypatch, "AAPL,BTCUSD", "2024-01-01", "2024-01-05", store)[0] == 0
    before = snapshot(store)
    fake.crypto_bars = {"BTC/USD": central_daily("2024-01-05", 3)}
    code, output = alpaca_ingest(fake, monkeypatch, "BTCUSD", "2024-01-05", "2024-01-08", store)
    assert code == 2, output
    assert "'BTCUSD' stamped at 06:00 UTC" in output and "'AAPL' (in the store)" in output
    assert snapshot(store) == before


def test_the_check_refuses_directly_too() -> None:
    from raytrade.replay.sources.alpaca_daily import refuse_second_crypto_clock

    stored = pd.DataFrame(
        {
            "symbol": "BTCUSD",
            "ts": pd.date_range("2024-01-01 06:00", periods=3, tz="UTC"),
            "asset_class": "crypto",
        }
    )
    new = pd.DataFrame(
        {"symbol": ["AAPL", "BTCUSD"], "ts": pd.DatetimeIndex(["2024-01-04 05:00"] * 2, tz="UTC"),
         "asset_class": ["equity", "crypto"]}
    )  # fmt: skip
    with pytest.raises(SecondCryptoClockError, match=r"'BTCUSD' \(in the store\) stamped at 06:00 UTC"):
        refuse_second_crypto_clock(stored, new)
    refuse_second_crypto_clock(None, new)  # an empty store: one clock
    refuse_second_crypto_clock(
        stored, new[new["symbol"] == "BTCUSD"].assign(ts=stored["ts"].iloc[-1] + pd.Timedelta(days=1))
    )


def test_the_loader_names_the_fix_for_an_old_store_of_alpaca_stocks_and_day_start_crypto(
    fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store an earlier version wrote (stocks at New York midnight, crypto at Alpaca's day start) is
    still refused by the loader, which now names the fix: re-ingest both from Alpaca together."""
    from raytrade.replay.ingest import ingest_frames

    fake.crypto_bars = {"BTC/USD": central_daily("2024-01-02", 3)}
    day_start = fetch(fake, ["BTCUSD"], "2024-01-01", "2024-01-05")
    stocks = fetch(fake, ["AAPL"], "2024-01-01", "2024-01-05")
    ingest_frames(tmp_path / "old", pd.concat([stocks, day_start], ignore_index=True), show_progress=False)
    with pytest.raises(OffCalendarBarsError, match="fetching the stocks and the crypto together"):
        load_market_data(tmp_path / "old", "all", feature_columns=FEATURES)
