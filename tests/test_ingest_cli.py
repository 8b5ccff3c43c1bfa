"""``raytrade ingest``: bad input exits non-zero with file/row/column/value and leaves the store untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.replay import read_frame

GOOD_CSV = """Date,close,high,low,open,volume
2024-01-02,10.5,11.0,10.0,10.2,1000
2024-01-03,10.8,11.2,10.4,10.5,1200
2024-01-04,10.6,10.9,10.1,10.8,900
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def error_line(out: str) -> str:
    """The single ``error: …`` line of a failed command (fails if there is not exactly one)."""
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out
    assert "Traceback" not in out
    return lines[0]


def write_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = write_folder(tmp_path / "good", {"AAA.csv": GOOD_CSV})
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(tmp_path / "store"))
    assert code == 0, out
    return tmp_path / "store"


def test_good_csv_ingests_bars_and_features(store: Path) -> None:
    bars = read_frame(store, "bars")
    assert bars["close"].tolist() == [10.5, 10.8, 10.6]
    assert str(bars["ts"].iloc[0]) == "2024-01-02 00:00:00+00:00"
    assert len(read_frame(store, "features")) == 3


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.replace("Date,close", "Date,closing"), "column 'close': required column is missing"),
        (lambda t: t.replace("10.8,11.2", "nan,11.2"), "row 2, column 'close', value 'nan': missing or NaN"),
        (lambda t: t.replace("10.8,11.2", "-10.8,11.2"), "row 2, column 'close', value -10.8: must be > 0"),
        (lambda t: t.replace(",1200", ",-1200"), "row 2, column 'volume', value -1200.0: must be >= 0"),
        (  # the file's column and text, not the parsed UTC time
            lambda t: t + "2024-01-04,10.6,10.9,10.1,10.8,900\n",
            "row 4, column 'date', value '2024-02-04': duplicate of an earlier row",
        ),
        (
            lambda t: t.replace("2024-01-03", "2024-01-05"),
            "row 3, column 'date', value '2024-02-04': rows are not sorted by time",
        ),
        (
            lambda t: t.replace("2024-01-03", "2024-13-03"),
            "row 2, column 'date', value '2024-13-03': unparsable",
        ),
        (lambda t: t.replace("10.8,11.2", "ten,11.2"), "row 2, column 'close', value 'ten': not a number"),
        (  # the last of two close columns won, silently (2x prices here)
            lambda t: "\n".join(
                line + ("," + ("Close" if i == 0 else str(2 * float(line.split(",")[4]))) if line else "")
                for i, line in enumerate(t.split("\n"))
            ),
            "column 'close': two columns for one field (close, Close): keep one",
        ),
        (
            lambda t: "\n".join(
                line + ("," + ("volume" if i == 0 else "7") if line else "")
                for i, line in enumerate(t.split("\n"))
            ),
            "column 'volume': two columns for one field (volume, volume.1): keep one",
        ),
        (  # was: stored at 00:00 and at 05:00 UTC, one symbol on two clocks
            lambda t: t.replace("2024-01-03,", "2024-01-03T00:00:00-05:00,").replace(
                "2024-01-04,", "2024-01-04T00:00:00-05:00,"
            ),
            "row 2, column 'date', value '2024-02-03T00:00:00-05:00': a timestamp at 05:00 UTC among 1 dates",
        ),
    ],
    ids=[
        "missing-column",
        "nan-price",
        "negative-price",
        "negative-volume",
        "duplicate",
        "unsorted",
        "bad-date",
        "text",
        "close-twice-by-case",
        "volume-header-repeated",
        "dates-then-offsets",
    ],
)
def test_bad_file_is_refused_naming_file_row_column_value(
    tmp_path: Path, store: Path, mutate: object, expected: str
) -> None:
    before = snapshot(store)
    bad = write_folder(
        tmp_path / "bad", {"AAA.csv": mutate(GOOD_CSV).replace("2024-01", "2024-02"), "BBB.csv": GOOD_CSV}
    )  # type: ignore[operator]
    code, out = run("ingest", "--source", "csv", "--path", str(bad), "--out", str(store))
    assert code == 2
    line = error_line(out)
    assert "AAA.csv" in line and expected in line, line
    assert snapshot(store) == before


def test_a_header_only_file_is_said_and_the_rest_is_ingested(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """yfinance writes a header-only file for a delisted or empty download: the folder still ingests,
    and the file is named in a warning (it was silent)."""
    folder = write_folder(tmp_path / "src", {"AAA.csv": GOOD_CSV, "GONE.csv": GOOD_CSV.split("\n")[0] + "\n"})
    with caplog.at_level("WARNING"):
        code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(tmp_path / "s"))
    assert code == 0, out
    assert "GONE.csv has no rows under its header: nothing is stored from it" in caplog.text


def test_dates_next_to_utc_midnight_timestamps_are_one_clock(tmp_path: Path) -> None:
    """A history of dates with API rows appended at 00:00 UTC (Z or +00:00) is one clock: accepted."""
    text = GOOD_CSV.replace("2024-01-03,", "2024-01-03T00:00:00Z,").replace(
        "2024-01-04,", "2024-01-04T00:00:00+00:00,"
    )
    folder = write_folder(tmp_path / "src", {"AAA.csv": text})
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(tmp_path / "s"))
    assert code == 0, out


def test_empty_folder_unknown_source_and_missing_keys_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    code, out = run(
        "ingest", "--source", "csv", "--path", str(tmp_path / "empty"), "--out", str(tmp_path / "s")
    )
    assert code == 2 and "no .csv files" in error_line(out)
    code, out = run("ingest", "--source", "yahoo", "--out", str(tmp_path / "s"))
    assert code == 2 and "Invalid value for '--source'" in out and "Traceback" not in out
    for var in (
        "ALPACA_API_KEY",
        "ALPACA_SECRET_KEY",
        "APCA_API_KEY_ID",
        "APCA_API_SECRET_KEY",
        "RAYTRADE_SETTINGS_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    code, out = run(
        "ingest", "--source", "alpaca", "--symbols", "AAPL", "--start", "2024-01-01", "--end", "2024-02-01",
        "--out", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 2 and "ALPACA_API_KEY" in error_line(out)


def test_reingest_appends_only_new_bars(tmp_path: Path, store: Path) -> None:
    more = GOOD_CSV + "2024-01-05,10.9,11.1,10.5,10.6,1100\n"
    folder = write_folder(tmp_path / "more", {"AAA.csv": more})
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(store))
    assert code == 0, out
    assert "bars +1" in out and "already stored and skipped: 3" in out
    assert len(read_frame(store, "bars")) == 4 and len(read_frame(store, "features")) == 4


def test_a_batch_of_only_new_symbols_joins_an_existing_store(tmp_path: Path, store: Path) -> None:
    folder = write_folder(tmp_path / "newcomer", {"BBB.csv": GOOD_CSV})
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(store))
    assert code == 0, out
    bars = read_frame(store, "bars")
    assert sorted(bars["symbol"].unique()) == ["AAA", "BBB"] and len(bars) == 6
    assert len(read_frame(store, "features")) == 6


def test_alpaca_ingest_against_fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_alpaca import TEST_KEYS, FakeAlpaca, use_fake_alpaca

    with FakeAlpaca() as fake:
        use_fake_alpaca(monkeypatch, fake.url)
        code, out = run(
            "ingest", "--source", "alpaca", "--symbols", "AAPL,MSFT,BTCUSD", "--start", "2024-01-01",
            "--end", "2024-01-05", "--out", str(tmp_path / "store"),
        )  # fmt: skip
    assert code == 0, out
    assert TEST_KEYS[1] not in out
    bars = read_frame(tmp_path / "store", "bars")
    assert sorted(bars["symbol"].unique()) == ["AAPL", "BTCUSD", "MSFT"]
    assert bars.loc[bars["symbol"] == "BTCUSD", "asset_class"].unique().tolist() == ["crypto"]
    features = read_frame(tmp_path / "store", "features")
    last_aapl = features[features["symbol"] == "AAPL"].iloc[-1]
    assert bool(last_aapl["spread_is_quoted"]) is True
    assert last_aapl["spread_bps"] == pytest.approx((181.93 - 181.9) / 181.915 * 1e4)


def test_summary_command_reports_tables(store: Path) -> None:
    code, out = run("summary", str(store))
    assert code == 0 and "features" in out and "null share" in out
    code, out = run("summary", str(store.parent / "nope"))
    assert code == 2 and "not a replay store" in error_line(out)


def test_store_untouched_when_second_file_of_folder_is_bad(tmp_path: Path, store: Path) -> None:
    before = snapshot(store)
    folder = write_folder(
        tmp_path / "mixed", {"ZZZ.csv": GOOD_CSV, "AAB.csv": GOOD_CSV.replace("10.5,11.0", "-1,11.0")}
    )
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(store))
    assert code == 2 and "AAB.csv" in error_line(out)
    assert snapshot(store) == before
    shutil.rmtree(folder)


def test_same_seed_gives_a_store_with_identical_rows(tmp_path: Path) -> None:
    from raytrade.replay.schema import TABLES

    args = [
        "ingest",
        "--source",
        "synthetic",
        "--n-symbols",
        "4",
        "--n-crypto",
        "1",
        "--years",
        "1",
        "--seed",
        "9",
    ]
    for name in ("a", "b"):
        code, out = run(*args, "--out", str(tmp_path / name))
        assert code == 0, out
    for table in TABLES:
        if (tmp_path / "a" / table).is_dir():
            left, right = read_frame(tmp_path / "a", table), read_frame(tmp_path / "b", table)
            assert len(left) > 0
            pd.testing.assert_frame_equal(left, right)


DST_CSV = """timestamp,open,high,low,close,volume
2024-03-08T00:00:00-05:00,10.2,11.0,10.0,10.5,1000
2024-03-11T00:00:00-04:00,10.5,11.2,10.4,10.8,1200
2024-03-12T00:00:00Z,10.8,10.9,10.1,10.6,900
"""


def test_offsets_that_change_with_daylight_saving_are_each_converted_to_utc(tmp_path: Path) -> None:
    # New York midnight: -05:00 before the 2024-03-10 change, -04:00 after it
    folder = write_folder(tmp_path / "dst" / "crypto", {"SUIUSDT.csv": DST_CSV})
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(tmp_path / "s"))
    assert code == 0, out
    ts = read_frame(tmp_path / "s", "bars")["ts"].astype(str).tolist()
    assert ts == ["2024-03-08 05:00:00+00:00", "2024-03-11 04:00:00+00:00", "2024-03-12 00:00:00+00:00"]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("2024-03-11T00:00:00", "row 2, column 'timestamp', value '2024-03-11T00:00:00': timestamp without"),
        (
            "2024-03-41T00:00:00-04:00",
            "row 2, column 'timestamp', value '2024-03-41T00:00:00-04:00': unparsable",
        ),
        ("yesterday", "row 2, column 'timestamp', value 'yesterday': unparsable"),
    ],
    ids=["naive-among-aware", "bad-day-with-offset", "text"],
)
def test_a_bad_timestamp_among_offsets_is_refused_naming_file_row_column_value(
    tmp_path: Path, store: Path, bad: str, expected: str
) -> None:
    before = snapshot(store)
    folder = write_folder(
        tmp_path / "bad", {"SUIUSDT.csv": DST_CSV.replace("2024-03-11T00:00:00-04:00", bad)}
    )
    code, out = run("ingest", "--source", "csv", "--path", str(folder), "--out", str(store))
    assert code == 2
    line = error_line(out)
    assert "SUIUSDT.csv" in line and expected in line, line
    assert snapshot(store) == before


def test_a_backfill_into_a_gap_is_reported_as_not_stored_with_a_warning(tmp_path: Path) -> None:
    gap = write_folder(
        tmp_path / "gap", {"AAA.csv": GOOD_CSV.replace("2024-01-03,10.8,11.2,10.4,10.5,1200\n", "")}
    )
    assert run("ingest", "--source", "csv", "--path", str(gap), "--out", str(tmp_path / "s"))[0] == 0
    full = write_folder(tmp_path / "full", {"AAA.csv": GOOD_CSV})
    code, out = run("ingest", "--source", "csv", "--path", str(full), "--out", str(tmp_path / "s"))
    assert code == 0, out
    assert "bars already stored and skipped: 2; older bars NOT stored (append-only): 1" in out
    assert (
        "warning: AAA: 1 bar from 2024-01-03 to 2024-01-03 older than its last stored bar (2024-01-04) "
        "and not in the store were NOT stored (the store is append-only); to include them, ingest all "
        "the data into a fresh store"
    ) in out
    assert len(read_frame(tmp_path / "s", "bars")) == 2
