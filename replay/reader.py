"""Readers of the replay store: Ray Data for the cluster, Arrow/pandas for small reads.

All readers list only committed files (``year=YYYY/part-*.parquet``), prune ``year`` partitions from
the requested time range, and filter rows on ``symbol`` and ``[start, end]`` (both inclusive).
The ``year`` partition key is dropped from what they return, so every reader yields exactly the
table's schema (``replay.schema``) and Ray Data equals pandas row for row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from replay.schema import PARTITION_KEY, SCHEMA_VERSION, schema_for
from replay.timeutil import as_utc

if TYPE_CHECKING:
    import ray.data

TimeLike: TypeAlias = "str | datetime | pd.Timestamp | None"


class StoreError(ValueError):
    """The store (or a table of it) is missing or unreadable; the message names the path."""


def _utc(value: TimeLike, name: str) -> pd.Timestamp | None:
    return None if value is None else as_utc(value, name)


def table_files(
    root: str | os.PathLike[str], table: str, start: TimeLike = None, end: TimeLike = None
) -> list[Path]:
    """Committed parquet files of ``table``, pruned to the years that ``[start, end]`` touches."""
    schema_for(table)
    table_dir = Path(root) / table
    if not table_dir.is_dir():
        raise StoreError(f"no {table!r} table under {Path(root)} (is this a replay store?)")
    lo, hi = _utc(start, "start"), _utc(end, "end")
    files = []
    for part_dir in sorted(table_dir.glob(f"{PARTITION_KEY}=*")):
        year = int(part_dir.name.split("=", 1)[1])
        if (lo is not None and year < lo.year) or (hi is not None and year > hi.year):
            continue
        files.extend(sorted(part_dir.glob("part-*.parquet")))
    return files


def _row_filter(symbols: Sequence[str] | None, start: TimeLike, end: TimeLike) -> pc.Expression | None:
    expr: pc.Expression | None = None

    def both(a: pc.Expression | None, b: pc.Expression) -> pc.Expression:
        return b if a is None else a & b

    if symbols is not None:
        expr = both(expr, pc.field("symbol").isin(list(symbols)))
    lo, hi = _utc(start, "start"), _utc(end, "end")
    if lo is not None:
        expr = both(expr, pc.field("ts") >= pa.scalar(lo.to_pydatetime(), type=pa.timestamp("us", "UTC")))
    if hi is not None:
        expr = both(expr, pc.field("ts") <= pa.scalar(hi.to_pydatetime(), type=pa.timestamp("us", "UTC")))
    return expr


def read_table(
    root: str | os.PathLike[str],
    table: str,
    symbols: Sequence[str] | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Rows of ``table`` as an Arrow table in the table's schema, sorted by (symbol, ts)."""
    schema = schema_for(table)
    files = table_files(root, table, start, end)
    wanted = list(columns) if columns is not None else schema.names
    unknown = [c for c in wanted if c not in schema.names]
    if unknown:
        raise ValueError(f"{table} has no column {unknown[0]!r}; columns: {', '.join(schema.names)}")
    if not files:
        return schema.empty_table().select(wanted)
    _check_version(files[0])
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    result = dataset.to_table(columns=wanted, filter=_row_filter(symbols, start, end))
    sort_keys = [(k, "ascending") for k in ("symbol", "ts") if k in wanted]
    return result.sort_by(sort_keys) if sort_keys else result


def read_frame(
    root: str | os.PathLike[str],
    table: str,
    symbols: Sequence[str] | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The pandas path for small reads: ``read_table(...).to_pandas()`` with UTC timestamps."""
    return read_table(root, table, symbols, start, end, columns).to_pandas()


def read(
    root: str | os.PathLike[str],
    table: str,
    symbols: Sequence[str] | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    columns: Sequence[str] | None = None,
) -> ray.data.Dataset:
    """Rows of ``table`` as a ``ray.data.Dataset`` (lazy; one read task per file)."""
    import ray.data

    schema = schema_for(table)
    files = table_files(root, table, start, end)
    if not files:
        return ray.data.from_arrow(schema.empty_table())
    _check_version(files[0])
    dataset = ray.data.read_parquet([str(f) for f in files], partitioning=None, schema=schema)
    if columns is not None:
        dataset = dataset.select_columns(list(columns))  # pushed down into the parquet read
    predicate = _ray_predicate(symbols, start, end)
    return dataset.filter(expr=predicate) if predicate is not None else dataset


def _ray_predicate(symbols: Sequence[str] | None, start: TimeLike, end: TimeLike) -> Any:
    """The same row filter as ``_row_filter`` in Ray Data's expression language (pushed to Arrow)."""
    from ray.data.expressions import col, lit

    terms = []
    if symbols is not None:
        terms.append(col("symbol").is_in(list(symbols)))
    lo, hi = _utc(start, "start"), _utc(end, "end")
    if lo is not None:
        terms.append(col("ts") >= lit(lo.to_pydatetime()))
    if hi is not None:
        terms.append(col("ts") <= lit(hi.to_pydatetime()))
    if not terms:
        return None
    predicate = terms[0]
    for term in terms[1:]:
        predicate = predicate & term
    return predicate


def _check_version(path: Path) -> None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    version = metadata.get(b"raytrade.schema_version", b"?").decode()
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise StoreError(
            f"{path} was written with schema version {version}; this raytrade reads {SCHEMA_VERSION}"
        )
