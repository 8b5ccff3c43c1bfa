"""The Alpaca source, run with the real alpaca-py clients against ``tests.fake_alpaca`` (no network)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from raytrade.cluster.settings import MissingCredentialsError, Settings, load_settings
from raytrade.replay.errors import InputError
from raytrade.replay.schema import BARS_SCHEMA
from raytrade.replay.sources.alpaca import BAR_COLUMNS, SourceError, fetch_alpaca_bars, is_crypto_symbol
from tests.fake_alpaca import (
    CRYPTO_BARS,
    CRYPTO_BARS_PATH,
    CRYPTO_BOOKS_PATH,
    STOCK_BARS,
    STOCK_BARS_PATH,
    STOCK_QUOTES_PATH,
    TEST_KEYS,
    FakeAlpaca,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 1, 5, tzinfo=UTC)
KEY_ID, SECRET = TEST_KEYS
ENV_VARS = (
    "ALPACA_API_KEY",
    "ALPACA_SECRET_KEY",
    "APCA_API_KEY_ID",
    "APCA_API_SECRET_KEY",
    "ALPACA_DATA_URL",
    "RAYTRADE_SERVE_TOKEN",
    "WANDB_API_KEY",
    "RAYTRADE_SETTINGS_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        yield server


@pytest.fixture
def settings() -> Settings:
    return Settings(alpaca_api_key=KEY_ID, alpaca_secret_key=SECRET)


def fetch(fake: FakeAlpaca, symbols: list[str], settings: Settings, **kwargs: Any) -> pd.DataFrame:
    return fetch_alpaca_bars(
        symbols, START, END, access=settings.alpaca_access(), url_override=fake.url, **kwargs
    )


def expected_rows(raw: dict[str, list[dict[str, Any]]], name: str, asset_class: str) -> pd.DataFrame:
    """The canned JSON of one symbol as the frame the source must produce (quotes left NaN)."""
    bars = raw[name]
    nan = [math.nan] * len(bars)
    return pd.DataFrame(
        {
            "symbol": pd.Series([name.replace("/", "")] * len(bars), dtype="str"),
            "ts": pd.to_datetime([b["t"] for b in bars], utc=True).as_unit("us"),
            "open": [b["o"] for b in bars],
            "high": [b["h"] for b in bars],
            "low": [b["l"] for b in bars],
            "close": [b["c"] for b in bars],
            "volume": [b["v"] for b in bars],
            "vwap": pd.Series([b["vw"] for b in bars], dtype="float64"),
            "trade_count": pd.array([b["n"] for b in bars], dtype="Int64"),
            "bid": nan,
            "ask": nan,
            "bid_size": nan,
            "ask_size": nan,
            "asset_class": pd.Series([asset_class] * len(bars), dtype="str"),
            "source": pd.Series(["alpaca"] * len(bars), dtype="str"),
        }
    )


def with_top(frame: pd.DataFrame, bid: float, ask: float, bid_size: float, ask_size: float) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[-1], ["bid", "ask", "bid_size", "ask_size"]] = [bid, ask, bid_size, ask_size]
    return frame


def concat(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


# -- round trips ----------------------------------------------------------------------------


def test_stock_bars_round_trip_exactly(fake: FakeAlpaca, settings: Settings) -> None:
    got = fetch(fake, ["MSFT", "AAPL"], settings)
    want = concat(
        with_top(expected_rows(STOCK_BARS, "AAPL", "equity"), 181.9, 181.93, 3.0, 5.0),
        with_top(expected_rows(STOCK_BARS, "MSFT", "equity"), 367.9, 368.0, 1.0, 2.0),
    )
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got["ts"].iloc[0] == pd.Timestamp("2024-01-02T05:00:00", tz="UTC")
    assert pd.isna(got.loc[got["symbol"] == "MSFT", "vwap"].iloc[-1])  # null vwap stays null


def test_crypto_bars_round_trip_exactly_and_store_loop_symbols(fake: FakeAlpaca) -> None:
    got = fetch(fake, ["ETH/USD", "BTCUSD"], Settings())
    want = concat(
        # best bid 44189.5, best ask 44190.5; sizes summed over the best 5 levels of each side
        with_top(expected_rows(CRYPTO_BARS, "BTC/USD", "crypto"), 44189.5, 44190.5, 3.875, 6.0),
        with_top(expected_rows(CRYPTO_BARS, "ETH/USD", "crypto"), 2209.5, 2210.0, 10.0, 3.0),
    )
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    bars_request = next(r for r in fake.requests if r.path == CRYPTO_BARS_PATH)
    assert bars_request.query["symbols"] == "ETH/USD,BTC/USD"


def test_mixed_symbols_sorted_by_symbol_then_ts(fake: FakeAlpaca, settings: Settings) -> None:
    got = fetch(fake, ["MSFT", "BTCUSD", "AAPL", "ETH/USD"], settings)
    assert list(got["symbol"].unique()) == ["AAPL", "BTCUSD", "ETHUSD", "MSFT"]
    assert got.equals(got.sort_values(["symbol", "ts"], ignore_index=True))
    assert list(got["asset_class"]) == ["equity"] * 3 + ["crypto"] * 5 + ["equity"] * 3


def test_columns_and_dtypes_match_the_bars_table(fake: FakeAlpaca, settings: Settings) -> None:
    got = fetch(fake, ["AAPL", "BTCUSD"], settings)
    assert tuple(got.columns) == BAR_COLUMNS == tuple(BARS_SCHEMA.names)
    assert {c: str(t) for c, t in got.dtypes.items()} == {
        "symbol": "str",
        "ts": "datetime64[us, UTC]",
        **{c: "float64" for c in ("open", "high", "low", "close", "volume", "vwap")},
        "trade_count": "Int64",
        **{c: "float64" for c in ("bid", "ask", "bid_size", "ask_size")},
        "asset_class": "str",
        "source": "str",
    }


@pytest.mark.parametrize(("timeframe", "alpaca_value"), [("1d", "1Day"), ("1h", "1Hour"), ("1m", "1Min")])
def test_timeframe_and_window_are_sent(
    fake: FakeAlpaca, settings: Settings, timeframe: str, alpaca_value: str
) -> None:
    fake.stock_quotes.clear()  # intraday bars: the canned quote is not inside them anyway
    fetch(fake, ["AAPL"], settings, timeframe=timeframe)
    query = next(r for r in fake.requests if r.path == STOCK_BARS_PATH).query
    assert query["timeframe"] == alpaca_value
    assert query["start"] == "2024-01-01T00:00:00+00:00"
    assert query["end"] == "2024-01-05T00:00:00+00:00"


# -- pagination -----------------------------------------------------------------------------


def test_pagination_follows_next_page_token(settings: Settings) -> None:
    with FakeAlpaca() as whole:
        expected = fetch(whole, ["AAPL", "MSFT"], settings)
    with FakeAlpaca(page_size=3) as paged:  # 6 bars -> exactly 2 pages
        got = fetch(paged, ["AAPL", "MSFT"], settings)
        bar_requests = [r for r in paged.requests if r.path == STOCK_BARS_PATH]
    assert [r.query.get("page_token") for r in bar_requests] == [None, "page-3"]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_crypto_pagination_splits_a_symbol_across_pages() -> None:
    with FakeAlpaca(page_size=2) as paged:  # BTC's 3 bars straddle the page boundary
        got = fetch(paged, ["BTCUSD", "ETHUSD"], Settings())
        tokens = [r.query.get("page_token") for r in paged.requests if r.path == CRYPTO_BARS_PATH]
    assert tokens == [None, "page-2", "page-4"]
    assert got.groupby("symbol").size().to_dict() == {"BTCUSD": 3, "ETHUSD": 2}


# -- top of book ----------------------------------------------------------------------------


def test_latest_quote_lands_only_on_the_last_bar(fake: FakeAlpaca, settings: Settings) -> None:
    got = fetch(fake, ["AAPL"], settings)
    book = got[["bid", "ask", "bid_size", "ask_size"]]
    assert book.iloc[:-1].isna().all().all()
    assert book.iloc[-1].tolist() == [181.9, 181.93, 3.0, 5.0]


def test_quote_after_the_last_bar_is_not_attached(fake: FakeAlpaca, settings: Settings) -> None:
    fake.stock_quotes["AAPL"]["t"] = "2024-01-05T05:00:00Z"  # the next day's bar: from the future
    fake.crypto_orderbooks["BTC/USD"]["t"] = "2024-01-03T23:59:59Z"  # before the last bar opened
    got = fetch(fake, ["AAPL", "BTCUSD"], settings)
    assert got[["bid", "ask", "bid_size", "ask_size"]].isna().all().all()


def test_a_quote_a_local_day_may_have_closed_before_is_not_attached(
    fake: FakeAlpaca, settings: Settings
) -> None:
    """A daily bar stamped at New York midnight may last only 23 h (a spring-forward day): a quote in its
    24th hour may come after its close, so it is not attached; a UTC day's bar keeps its whole day."""
    fake.stock_quotes["AAPL"]["t"] = "2024-01-05T04:30:00Z"  # 23.5 h after the last bar's stamp
    fake.crypto_orderbooks["BTC/USD"]["t"] = "2024-01-04T23:30:00Z"  # 23.5 h into a 00:00 UTC bar
    got = fetch(fake, ["AAPL", "BTCUSD"], settings)
    assert got.loc[got["symbol"] == "AAPL", "bid"].isna().all()
    assert not math.isnan(got.loc[got["symbol"] == "BTCUSD", "bid"].iloc[-1])


def test_symbol_without_a_quote_keeps_nan(fake: FakeAlpaca, settings: Settings) -> None:
    del fake.stock_quotes["MSFT"]
    got = fetch(fake, ["AAPL", "MSFT"], settings)
    assert got.loc[got["symbol"] == "MSFT", "bid"].isna().all()
    assert got.loc[got["symbol"] == "AAPL", "bid"].iloc[-1] == 181.9


# -- credentials and secrets ----------------------------------------------------------------


def test_keys_are_sent_in_headers(fake: FakeAlpaca, settings: Settings) -> None:
    fetch(fake, ["AAPL", "BTCUSD"], settings)
    assert {r.path for r in fake.requests} == {
        STOCK_BARS_PATH,
        STOCK_QUOTES_PATH,
        CRYPTO_BARS_PATH,
        CRYPTO_BOOKS_PATH,
    }
    for request in fake.requests:
        assert request.headers["APCA-API-KEY-ID"] == KEY_ID
        assert request.headers["APCA-API-SECRET-KEY"] == SECRET


def test_crypto_only_fetch_works_without_keys(fake: FakeAlpaca) -> None:
    got = fetch(fake, ["BTCUSD"], Settings())
    assert len(got) == 3
    assert all("APCA-API-KEY-ID" not in r.headers for r in fake.requests)


def test_secrets_never_appear_in_reprs_or_logs(
    fake: FakeAlpaca, settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    full = Settings(
        alpaca_api_key=KEY_ID,
        alpaca_secret_key=SECRET,
        serve_token="serve-tok-xyz",
        wandb_api_key="wandb-xyz",
    )
    creds = full.alpaca_credentials()
    shown = " ".join([repr(full), str(full), full.model_dump_json(), repr(full.model_dump()), repr(creds)])
    for secret in (KEY_ID, SECRET, "serve-tok-xyz", "wandb-xyz"):
        assert secret not in shown
    assert "**********" in repr(full)
    assert creds.api_key.get_secret_value() == KEY_ID

    with caplog.at_level(logging.DEBUG):
        fetch(fake, ["AAPL", "BTCUSD"], full)
        fake.fail(500)
        with pytest.raises(SourceError) as info:
            fetch(fake, ["AAPL"], full)
    logged = caplog.text + capsys.readouterr().err + str(info.value)
    assert "fetched" in caplog.text  # logging did run at DEBUG
    assert KEY_ID not in logged
    assert SECRET not in logged


def test_missing_keys_name_both_env_vars(fake: FakeAlpaca) -> None:
    with pytest.raises(MissingCredentialsError) as info:
        fetch(fake, ["AAPL"], Settings())
    message = str(info.value)
    assert "ALPACA_API_KEY" in message and "ALPACA_SECRET_KEY" in message
    assert "\n" not in message
    assert fake.requests == []  # refused before any request


def test_missing_secret_names_only_the_secret_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", KEY_ID)
    with pytest.raises(MissingCredentialsError, match="ALPACA_SECRET_KEY") as info:
        load_settings().alpaca_credentials()
    assert "ALPACA_API_KEY" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_empty_key_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", "")
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    with pytest.raises(MissingCredentialsError, match="ALPACA_API_KEY"):
        load_settings().alpaca_credentials()


def test_one_key_only_refuses_crypto_too(fake: FakeAlpaca) -> None:
    with pytest.raises(MissingCredentialsError, match="ALPACA_SECRET_KEY"):
        fetch(fake, ["BTCUSD"], Settings(alpaca_api_key=KEY_ID))


# -- settings -------------------------------------------------------------------------------


def test_load_settings_reads_our_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", "k1")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "s1")
    monkeypatch.setenv("ALPACA_DATA_URL", "https://data.example.test/")
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "tok")
    monkeypatch.setenv("WANDB_API_KEY", "wb")
    s = load_settings()
    assert s.alpaca_api_key is not None and s.alpaca_api_key.get_secret_value() == "k1"
    assert s.alpaca_secret_key is not None and s.alpaca_secret_key.get_secret_value() == "s1"
    assert s.alpaca_data_url == "https://data.example.test"
    assert s.serve_token is not None and s.serve_token.get_secret_value() == "tok"
    assert s.wandb_api_key is not None and s.wandb_api_key.get_secret_value() == "wb"


def test_load_settings_accepts_alpacas_own_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", "k2")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s2")
    creds = load_settings().alpaca_credentials()
    assert (creds.api_key.get_secret_value(), creds.secret_key.get_secret_value()) == ("k2", "s2")


def test_settings_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "raytrade.env"
    env_file.write_text("APCA_API_KEY_ID=file-key\nALPACA_SECRET_KEY=file-secret\nUNRELATED=1\n")
    monkeypatch.setenv("RAYTRADE_SETTINGS_FILE", str(env_file))
    monkeypatch.setenv("ALPACA_SECRET_KEY", "env-secret")
    creds = load_settings().alpaca_credentials()
    assert creds.api_key.get_secret_value() == "file-key"
    assert creds.secret_key.get_secret_value() == "env-secret"


def test_missing_settings_file_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAYTRADE_SETTINGS_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(InputError, match=r"nope\.env"):
        load_settings()


def test_settings_are_frozen(settings: Settings) -> None:
    with pytest.raises(ValueError):
        settings.alpaca_data_url = "https://elsewhere.test"  # type: ignore[misc]


def _data_url_via(build: str, url: str) -> None:
    """Give ``url`` as the data URL through the check itself, the settings, or ``AlpacaAccess``."""
    from raytrade.replay.credentials import AlpacaAccess, check_secure_url

    if build == "check":
        check_secure_url(url, field="alpaca_data_url")
    elif build == "settings":
        Settings(alpaca_data_url=url)
    else:
        AlpacaAccess(data_url=url)


@pytest.mark.parametrize("build", ["check", "settings", "access"])
def test_a_refused_data_url_never_shows_its_credentials_or_query(build: str) -> None:
    url = "http://KEYID:SECRETPW@data.example.test/v2?token=TOKENVALUE"
    with pytest.raises(ValueError) as info:
        _data_url_via(build, url)
    shown = str(info.value)
    assert "http://data.example.test/v2" in shown and "must use https://" in shown
    for secret in ("KEYID", "SECRETPW", "TOKENVALUE"):
        assert secret not in shown


@pytest.mark.parametrize("build", ["check", "settings", "access"])
def test_an_https_data_url_with_credentials_in_it_is_refused(build: str) -> None:
    url = "https://KEYID:SECRETPW@data.example.test/v2"
    with pytest.raises(ValueError, match="must not carry credentials") as info:
        _data_url_via(build, url)
    assert "alpaca_data_url='https://data.example.test/v2'" in str(info.value)
    assert "KEYID" not in str(info.value) and "SECRETPW" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "KEYID:SECRETPW@data.example.test:8000",  # no scheme: urlsplit puts the secret in the path
        "http://KEYID:SECRET/PW@data.example.test",  # an unescaped / in the password
        "https://KEYID:SECRET#PW@data.example.test/?token=TOKENVALUE",  # an unescaped # in the password
    ],
)
def test_shown_url_hides_credentials_however_the_url_is_malformed(url: str) -> None:
    from raytrade.replay.credentials import shown_url

    shown = shown_url(url)
    assert "data.example.test" in shown
    for secret in ("KEYID", "SECRET", "PW", "TOKENVALUE"):
        assert secret not in shown, shown


def test_plain_http_data_url_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="alpaca_data_url"):
        Settings(alpaca_data_url="http://data.example.test")
    assert Settings(alpaca_data_url="http://127.0.0.1:9/").alpaca_data_url == "http://127.0.0.1:9"


def test_data_url_from_settings_is_used(fake: FakeAlpaca) -> None:
    s = Settings(alpaca_api_key=KEY_ID, alpaca_secret_key=SECRET, alpaca_data_url=fake.url)
    got = fetch_alpaca_bars(["AAPL"], START, END, access=s.alpaca_access())
    assert len(got) == 3 and fake.paths()[0] == STOCK_BARS_PATH


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "path", "symbols"),
    [
        (500, STOCK_BARS_PATH, ["AAPL"]),
        (403, STOCK_QUOTES_PATH, ["AAPL"]),
        (500, CRYPTO_BARS_PATH, ["BTCUSD"]),
        (403, CRYPTO_BOOKS_PATH, ["BTCUSD"]),
    ],
)
def test_http_errors_become_one_line_source_errors(
    fake: FakeAlpaca, settings: Settings, status: int, path: str, symbols: list[str]
) -> None:
    fake.fail(status, path_contains=path, message="boom\nsecond line")
    with pytest.raises(SourceError) as info:
        fetch(fake, symbols, settings)
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert ("BTC/USD" if symbols == ["BTCUSD"] else "AAPL") in message
    assert "\n" not in message and "boom second line" in message


def test_wrong_keys_become_source_error(fake: FakeAlpaca) -> None:
    with pytest.raises(SourceError, match=r"HTTP 403 .*forbidden"):
        fetch(fake, ["AAPL"], Settings(alpaca_api_key="wrong", alpaca_secret_key="wrong"))


def test_unreachable_server_becomes_source_error(settings: Settings) -> None:
    with FakeAlpaca() as server:
        url = server.url
    with pytest.raises(SourceError, match="ConnectionError"):
        fetch_alpaca_bars(["AAPL"], START, END, access=settings.alpaca_access(), url_override=url)


@pytest.mark.parametrize("symbols", [[], ()])
def test_empty_symbol_list_raises(fake: FakeAlpaca, settings: Settings, symbols: list[str]) -> None:
    with pytest.raises(ValueError, match="symbols"):
        fetch(fake, symbols, settings)


def test_unknown_symbol_is_named(fake: FakeAlpaca, settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"\['ZZZZ'\]"):
        fetch(fake, ["AAPL", "ZZZZ"], settings)


@pytest.mark.parametrize("bad", ["aapl", "", "BTC/", "A B"])
def test_malformed_symbol_is_named(fake: FakeAlpaca, settings: Settings, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"symbol={bad!r}")):
        fetch(fake, ["AAPL", bad], settings)
    assert fake.requests == []


def test_duplicate_symbol_after_normalisation_raises(fake: FakeAlpaca, settings: Settings) -> None:
    with pytest.raises(ValueError, match="BTCUSD"):
        fetch(fake, ["BTCUSD", "BTC/USD"], settings)


def test_bad_window_and_timeframe_raise(fake: FakeAlpaca, settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"start=.* is naive"):
        fetch_alpaca_bars(
            ["AAPL"], datetime(2024, 1, 1), END, access=settings.alpaca_access(), url_override=fake.url
        )
    with pytest.raises(ValueError, match="before end"):
        fetch_alpaca_bars(["AAPL"], END, START, access=settings.alpaca_access(), url_override=fake.url)
    with pytest.raises(ValueError, match="timeframe='5m'"):
        fetch(fake, ["AAPL"], settings, timeframe="5m")
    with pytest.raises(ValueError, match="url_override"):
        fetch_alpaca_bars(
            ["AAPL"], START, END, access=settings.alpaca_access(), url_override="http://example.test"
        )
    assert fake.requests == []


@pytest.mark.parametrize(
    ("symbol", "crypto"),
    [("BTCUSD", True), ("BTC/USD", True), ("ETH/BTC", True), ("USD", False), ("AAPL", False), ("SPY", False)],
)
def test_crypto_classification(symbol: str, crypto: bool) -> None:
    assert is_crypto_symbol(symbol) is crypto


def test_non_utc_window_is_converted(fake: FakeAlpaca, settings: Settings) -> None:
    new_york = timezone(timedelta(hours=-5))
    fetch_alpaca_bars(
        ["AAPL"],
        datetime(2023, 12, 31, 19, tzinfo=new_york),
        END,
        access=settings.alpaca_access(),
        url_override=fake.url,
    )
    assert fake.requests[0].query["start"] == "2024-01-01T00:00:00+00:00"


def test_a_bar_still_in_progress_is_left_out(fake: FakeAlpaca, settings: Settings) -> None:
    """A daily stock bar is stored only after its period (New York midnight to midnight) ended: during
    the session its close and volume are partial and would be restated once it closes."""
    during = datetime(2024, 1, 4, 20, 0, tzinfo=UTC)  # 15:00 in New York, Jan 4's session still open
    got = fetch(fake, ["AAPL"], settings, now=during)
    assert got["ts"].max() == pd.Timestamp("2024-01-03T05:00:00Z")  # Jan 4's bar left out
    midnight = datetime(2024, 1, 5, 5, 0, tzinfo=UTC)  # its end; a 25 h local day would end at 06:00
    assert fetch(fake, ["AAPL"], settings, now=midnight)["ts"].max() == pd.Timestamp("2024-01-03T05:00:00Z")
    after = fetch(fake, ["AAPL"], settings, now=midnight + timedelta(hours=1))
    assert after["ts"].max() == pd.Timestamp("2024-01-04T05:00:00Z")
    assert len(after) == len(got) + 1


def test_a_daily_bar_on_the_fall_back_day_is_left_out_until_its_25_hours_ended(fake: FakeAlpaca) -> None:
    """Alpaca stamps daily crypto at midnight US Central. Sunday 2024-11-03's bar opens 05:00 UTC and,
    as the clocks fall back that night, closes at Monday's midnight, 06:00 UTC, 25 h later: fetched at
    05:30 it is still in progress (a partial bar the next ingest would refuse as a restatement)."""
    bar = CRYPTO_BARS["BTC/USD"][0]
    fake.crypto_bars["BTC/USD"] = [{**bar, "t": "2024-11-02T05:00:00Z"}, {**bar, "t": "2024-11-03T05:00:00Z"}]

    def fetched_at(now: datetime) -> list[pd.Timestamp]:
        start, end = datetime(2024, 11, 1, tzinfo=UTC), datetime(2024, 11, 4, 12, tzinfo=UTC)
        frame = fetch_alpaca_bars(
            ["BTCUSD"], start, end, access=Settings().alpaca_access(), url_override=fake.url, now=now
        )
        return frame["ts"].tolist()

    saturday, sunday = pd.Timestamp("2024-11-02T05:00:00Z"), pd.Timestamp("2024-11-03T05:00:00Z")
    assert fetched_at(datetime(2024, 11, 4, 5, 30, tzinfo=UTC)) == [saturday]
    assert fetched_at(datetime(2024, 11, 4, 6, 0, tzinfo=UTC)) == [saturday, sunday]


def test_a_symbol_with_only_a_bar_in_progress_is_refused_naming_it(
    fake: FakeAlpaca, settings: Settings
) -> None:
    early = datetime(2024, 1, 2, 20, 0, tzinfo=UTC)  # the first canned bar's session is still open
    with pytest.raises(ValueError, match=r"no completed 1d bars for symbols=\['AAPL'\].*still in progress"):
        fetch(fake, ["AAPL"], settings, now=early)
