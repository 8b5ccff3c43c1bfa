"""``raytrade summary``'s null shares come from the parquet footers' null counts: the same figures as
reading the whole features table (1.3 GB and 6 s for a 520-symbol, ten-year store), without reading a
value; a file without the counts is read as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import raytrade.replay.summary as summary
from raytrade.replay.reader import read_table


def test_null_shares_come_from_the_footers_and_equal_a_full_read(
    synthetic_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = summary.feature_null_share(read_table(synthetic_store, "features"))
    assert any(share > 0 for share in expected.values())  # some group has nulls to count
    real = summary.read_table

    def keys_only(root: Any, table: str, *args: Any, **kwargs: Any) -> Any:
        if table == "features" and kwargs.get("columns") is None:
            raise AssertionError("the whole features table was read")
        return real(root, table, *args, **kwargs)

    monkeypatch.setattr(summary, "read_table", keys_only)
    assert summary.summarize_store(synthetic_store).feature_null_share == expected


def test_a_store_without_the_counts_is_read_whole(
    synthetic_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = summary.feature_null_share(read_table(synthetic_store, "features"))
    monkeypatch.setattr(summary, "_counted_nulls", lambda root: None)
    assert summary.summarize_store(synthetic_store).feature_null_share == expected
