"""Readers of the replay store: Ray Data for the cluster, Arrow/pandas for small reads.

All readers list only committed files (``year=YYYY/part-*.parquet``), prune ``year`` partitions from
the requested time range, and filter rows on ``symbol`` and ``[start, end]`` (both inclusive). The
files are plain parquet: ``ray.data.read_parquet``, DuckDB and pyarrow read them too.
The ``year`` partition key is dropped from what they return, so every reader yields exactly the
table's schema (``replay.schema``) and Ray Data equals pandas row for row.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from raytrade.replay.errors import InputError
from raytrade.replay.schema import PARTITION_KEY, SCHEMA_VERSION, schema_for
from raytrade.replay.timeutil import as_utc

if TYPE_CHECKING:
    import ray.data

TimeLike: TypeAlias = "str | datetime | pd.Timestamp | None"


class StoreError(InputError):
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
    wanted = _columns(schema, table, columns)
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
    """Rows of ``table`` as a lazy, streaming ``ray.data.Dataset``: one read task per committed file.

    Each task reads its file with exactly the Arrow code of ``read_table`` (column projection and
    row filter pushed into the parquet scan), so Ray Data and pandas return the same rows. The store
    already knows its committed files, so this skips ``read_parquet``'s file listing and size
    sampling, a fixed cost of about 0.7 s per read on a 2-core machine (``benchmarks/read_features``).
    Row order across files is not guaranteed; sort when it matters.
    """
    import ray.data

    schema = schema_for(table)
    files = table_files(root, table, start, end)
    wanted = _columns(schema, table, columns)
    if not files:
        return ray.data.from_arrow(schema.empty_table().select(wanted))
    _check_version(files[0])
    reader = functools.partial(
        _read_files, schema=schema, columns=wanted, row_filter=_row_filter(symbols, start, end)
    )
    paths = ray.data.from_items([{"path": str(f)} for f in files], override_num_blocks=len(files))
    return paths.map_batches(reader, batch_size=1, batch_format="pyarrow")


def _read_files(
    batch: pa.Table, *, schema: pa.Schema, columns: list[str], row_filter: pc.Expression | None
) -> pa.Table:
    """The rows of the files named in ``batch['path']`` (one Ray Data task)."""
    paths = batch.column("path").to_pylist()
    return ds.dataset(paths, schema=schema, format="parquet").to_table(columns=columns, filter=row_filter)


def _columns(schema: pa.Schema, table: str, columns: Sequence[str] | None) -> list[str]:
    wanted = list(columns) if columns is not None else schema.names
    unknown = [c for c in wanted if c not in schema.names]
    if unknown:
        raise ValueError(f"{table} has no column {unknown[0]!r}; columns: {', '.join(schema.names)}")
    return wanted


def _check_version(path: Path) -> None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    version = metadata.get(b"raytrade.schema_version", b"?").decode()
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise StoreError(
            f"{path} was written with schema version {version}; this raytrade reads {SCHEMA_VERSION}"
        )
