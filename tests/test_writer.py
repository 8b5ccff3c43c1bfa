"""ReplayWriter: validation messages, all-or-nothing batches, append-only, quarantine, locking, and
the stored decision ids a long-lived caller reads once per file."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from raytrade.replay import ReplayValidationError, ReplayWriter, read_frame, stored_keys
from raytrade.replay.stored_keys import KeyCache
from raytrade.replay.writer import StoreBusyError


def bars(symbols: tuple[str, ...] = ("AAA", "BBB"), days: int = 3, start: str = "2024-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=days, freq="D", tz="UTC")
    rows = []
    for k, sym in enumerate(symbols):
        for i, t in enumerate(ts):
            price = 10.0 + k + i
            rows.append(
                {"symbol": sym, "ts": t, "open": price, "high": price + 1, "low": price - 1, "close": price,
                 "volume": 1000.0, "asset_class": "equity", "source": "test"}
            )  # fmt: skip
    return pd.DataFrame(rows)


def store_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_append_then_read_back_exactly(tmp_path: Path) -> None:
    frame = bars()
    with ReplayWriter(tmp_path) as writer:
        result = writer.append_bars(frame)
    assert result.rows_written == 6
    back = read_frame(tmp_path, "bars")
    pd.testing.assert_series_equal(back["close"], frame["close"], check_names=False)
    assert list(back["symbol"]) == list(frame["symbol"])
    assert (back["ts"] == frame["ts"]).all()


def test_hive_layout_is_readable_by_plain_pyarrow(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path) as writer:
        writer.append_bars(bars(days=3, start="2023-12-30"))
    table = ds.dataset(tmp_path / "bars", partitioning="hive").to_table()
    assert table.num_rows == 6
    assert sorted(set(table["year"].to_pylist())) == [2023, 2024]
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("close", -3.0, "must be > 0"),
        ("close", float("nan"), "missing or NaN"),
        ("volume", -1.0, "must be >= 0"),
        ("open", float("inf"), "not finite"),
        ("asset_class", "bond", "not one of"),
    ],
)
def test_bad_row_names_table_row_column_value_and_writes_nothing(
    tmp_path: Path, column: str, value: object, reason: str
) -> None:
    frame = bars()
    frame.loc[4, column] = value
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as caught:
        writer.append_bars(frame)
    message = str(caught.value)
    assert f"bars: row 4, column '{column}'" in message
    assert reason in message
    assert store_files(tmp_path) == {}


def test_an_infinite_high_is_refused_without_a_numpy_warning(tmp_path: Path) -> None:
    # inf - inf in the OHLC comparisons printed numpy's RuntimeWarning, with a source path, above the
    # one-line error
    frame = bars()
    frame.loc[4, ["high", "close"]] = float("inf")
    with (
        warnings.catch_warnings(),
        ReplayWriter(tmp_path) as writer,
        pytest.raises(ReplayValidationError, match="row 4, column 'high'.*not finite"),
    ):
        warnings.simplefilter("error")
        writer.append_bars(frame)
    assert store_files(tmp_path) == {}


def test_duplicate_and_unsorted_rows_are_refused(tmp_path: Path) -> None:
    dup = pd.concat([bars(), bars().iloc[[1]]], ignore_index=True)
    with (
        ReplayWriter(tmp_path) as writer,
        pytest.raises(ReplayValidationError, match="row 6, column 'ts'.*duplicate"),
    ):
        writer.append_bars(dup)
    swapped = bars().iloc[[1, 0, 2, 3, 4, 5]].reset_index(drop=True)
    with (
        ReplayWriter(tmp_path) as writer,
        pytest.raises(ReplayValidationError, match="row 1, column 'ts'.*not sorted"),
    ):
        writer.append_bars(swapped)


def test_missing_required_column_and_naive_timestamps_refuse_the_batch(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path) as writer:
        with pytest.raises(ReplayValidationError, match="column 'close'.*required column is missing"):
            writer.append_bars(bars().drop(columns=["close"]))
        naive = bars()
        naive["ts"] = naive["ts"].dt.tz_localize(None)
        with pytest.raises(ReplayValidationError, match="timezone-aware"):
            writer.append_bars(naive)
        with pytest.raises(ReplayValidationError, match="unknown column"):
            writer.append_bars(bars().assign(colour="red"))


def test_store_is_append_only_per_symbol(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path) as writer:
        writer.append_bars(bars(days=3))
        before = store_files(tmp_path)
        with pytest.raises(ReplayValidationError, match="not after the last stored ts of AAA"):
            writer.append_bars(bars(days=4))
        assert store_files(tmp_path) == before
        writer.append_bars(bars(days=2, start="2024-01-04"))
    assert len(read_frame(tmp_path, "bars")) == 10


def test_watermarks_survive_reopening(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path) as writer:
        writer.append_bars(bars())
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError, match="append-only"):
        writer.append_bars(bars())


def test_quarantine_keeps_refused_rows_with_reasons_and_writes_the_rest(tmp_path: Path) -> None:
    frame = bars()
    frame.loc[2, "close"] = -1.0
    frame.loc[5, "volume"] = -5.0
    with ReplayWriter(tmp_path, on_error="quarantine") as writer:
        result = writer.append_bars(frame)
    assert (result.rows_written, result.rows_refused) == (4, 2)
    assert result.quarantine_file is not None
    lines = [json.loads(x) for x in Path(result.quarantine_file).read_text().splitlines()]
    assert [(x["row"], x["column"], x["value"]) for x in lines] == [(2, "close", -1.0), (5, "volume", -5.0)]
    assert lines[0]["record"]["symbol"] == "AAA" and "must be > 0" in lines[0]["reason"]
    assert len(read_frame(tmp_path, "bars")) == 4


def test_quarantine_never_raises_even_for_a_broken_batch(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path, on_error="quarantine") as writer:
        result = writer.append_bars(bars().drop(columns=["close"]))
    assert result.rows_written == 0 and result.rows_refused == 6
    assert result.quarantine_file and Path(result.quarantine_file).exists()


def test_second_writer_on_the_same_table_is_refused(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path) as first:
        first.append_bars(bars())
        with ReplayWriter(tmp_path) as second, pytest.raises(StoreBusyError):
            second.append_bars(bars(start="2025-01-01"))


def test_experience_rows_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "symbol": ["AAA", "AAA"],
            "ts": pd.to_datetime(["2024-01-02T15:00Z", "2024-01-02T15:00Z"]),
            "decision_id": ["d1", "d2"],
            "policy_version": ["ppo@3", "ppo@3"],
            "side": ["buy", "flat"],
            "target_weight": [0.1, 0.0],
            "filled": [True, False],
            "fill_price": [10.02, np.nan],
            "slippage_bps": [2.0, np.nan],
        }
    )
    with ReplayWriter(tmp_path) as writer:
        writer.append_experience(frame)
        with pytest.raises(ReplayValidationError, match="decision_id.*duplicate"):
            writer.append_experience(frame.iloc[[0, 0]].assign(decision_id="d3"))
    back = read_frame(tmp_path, "experience")
    assert back["decision_id"].tolist() == ["d1", "d2"]
    assert back["fill_price"].isna().tolist() == [False, True]


# ------------------------------------------------------------------ a long-lived caller's stored ids


def decisions(*ids: str) -> pd.DataFrame:
    """One live-loop decision row per id."""
    return pd.DataFrame(
        {"symbol": "AAA", "ts": pd.Timestamp("2024-01-02T15:00Z"), "decision_id": list(ids),
         "policy_version": "p@1", "side": "buy"}
    )  # fmt: skip


def spy_on_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The parquet files the key cache reads from now on (a spy on its ``pyarrow.dataset`` calls)."""
    read: list[str] = []
    real = stored_keys.ds.dataset

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        read.extend(Path(p).name for p in source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(stored_keys.ds, "dataset", spy)
    return read


def experience_files(root: Path) -> set[str]:
    return {p.name for p in (root / "experience").glob("year=*/*.parquet")}


def test_a_shared_key_cache_reads_only_the_files_committed_since_its_last_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = spy_on_reads(monkeypatch)
    cache = KeyCache()
    with ReplayWriter(tmp_path) as other:  # an earlier run: two files stored
        other.append_experience(decisions("a"))
        other.append_experience(decisions("b"))
    before = experience_files(tmp_path)
    with ReplayWriter(tmp_path, key_cache=cache) as writer:  # the loop's first cycle reads them once
        writer.append_experience(decisions("c"))
    own = experience_files(tmp_path) - before
    assert sorted(read) == sorted(before) and cache.files_read == 2
    with ReplayWriter(tmp_path) as other:  # another process appends between two cycles
        other.append_experience(decisions("d"))
    foreign = experience_files(tmp_path) - before - own
    read.clear()
    with ReplayWriter(tmp_path, key_cache=cache) as writer:  # the next cycle: only d's file
        writer.open("experience")
    assert read == sorted(foreign) and cache.files_read == 3  # not the loop's own file either


def test_a_cached_writer_refuses_the_ids_another_writer_stored_since(tmp_path: Path) -> None:
    cache = KeyCache()
    with ReplayWriter(tmp_path, key_cache=cache) as writer:
        writer.append_experience(decisions("a"))
    with ReplayWriter(tmp_path) as other:
        other.append_experience(decisions("b"))
    with ReplayWriter(tmp_path, on_error="quarantine", key_cache=cache) as writer:
        result = writer.append_experience(decisions("a", "b", "c"))
        again = writer.append_experience(decisions("c"))  # its own append of a moment ago
    assert (result.rows_written, result.rows_refused, again.rows_refused) == (1, 2, 1)
    assert [e.value for e in result.errors] == ["a", "b"]
    assert sorted(read_frame(tmp_path, "experience")["decision_id"]) == ["a", "b", "c"]


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_a_file_changed_since_the_last_read_makes_the_cache_read_the_table_again(
    tmp_path: Path, change: str
) -> None:
    cache = KeyCache()
    with ReplayWriter(tmp_path, key_cache=cache) as writer:
        a_file = Path(writer.append_experience(decisions("a")).files[0])
        writer.append_experience(decisions("b"))
    if change == "replaced":  # another copy restored under the same name: it holds "x", not "a"
        table = pq.read_table(a_file)
        table = table.set_column(table.schema.get_field_index("decision_id"), "decision_id", pa.array(["x"]))
        pq.write_table(table, a_file.with_name(".restore.parquet"))
        os.replace(a_file.with_name(".restore.parquet"), a_file)
    else:
        a_file.unlink()
    with ReplayWriter(tmp_path, on_error="quarantine", key_cache=cache) as writer:
        result = writer.append_experience(decisions("a", "b", "x"))
    refused = {"replaced": ["b", "x"], "removed": ["b"]}[change]
    assert [e.value for e in result.errors] == refused
    assert cache.files_read == {"replaced": 2, "removed": 1}[change]  # every file left, read again
