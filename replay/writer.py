"""Append-only, crash-safe writer of the replay store: the API a trading loop calls.

Design decisions
----------------
* A batch is all-or-nothing. Its rows are validated first (``replay.validation``); then one parquet
  file per ``year=`` partition is written under a hidden name (``.tmp-…``; pyarrow, Ray Data and
  DuckDB skip names starting with ``.`` or ``_``), flushed and fsynced; an intent record listing
  the renames is fsynced in ``_txn/``; the files are renamed into place; the intent is removed.
  A crash before the intent exists leaves only hidden temp files (removed on the next open); a
  crash after it is rolled forward on the next open. A reader never sees a half-written file.
* Append-only per symbol: a row whose ``ts`` is not after the last stored ``ts`` of its symbol is
  refused (it is a duplicate or out of order). The watermarks are read once when the writer opens.
* The ``experience`` table is keyed by ``decision_id`` instead (a decision, its fill and its
  transition rows each have their own id: ``ID``, ``ID:fill``, ``CYCLE:SYMBOL:transition``; several
  rows share a ``ts``): a row whose id is already stored is refused (quarantined by a live loop), so
  a fill or an episode appended twice is never counted twice. The stored ids are read when the
  writer opens the table (under its lock) and kept up to date by its own appends; a caller that opens
  a writer again and again (the live loop, every cycle) passes the same ``replay.stored_keys.KeyCache``
  so each open reads only the files committed since the last (by any process), not the whole table.
* A forecast is keyed by its (symbol, ts, source, horizon) (forecasts of several sources and horizons
  share a ts, so no watermark tells a repeat): one already stored is refused, naming the key.
* A transition row (one with an ``episode_id``) is keyed by (``episode_id``, ``step``, ``asset_index``)
  as well (``replay.stored_keys.TRANSITION_KEY``, kept like the ids): a step's asset stored already,
  under any decision id, is refused, so an episode appended again under new ids is not counted twice
  nor read as a step of twice the assets. A step is written whole or not at all: when one of its rows
  in a batch is refused, so are the others (a live loop's quarantine never stores a step that lacks
  an asset).
* One writer per table at a time: the writer holds an exclusive ``flock`` on ``_lock`` for its life.
* ``on_error="raise"`` (ingest): any refused row raises ``ReplayValidationError`` and nothing of the
  batch is written. ``on_error="quarantine"`` (live loops): never raises into the caller; refused
  rows (or the whole batch when the write itself fails) go to ``ROOT/_quarantine/<table>/*.jsonl``
  with their reasons, valid rows are written.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from raytrade.replay.schema import PARTITION_KEY, SCHEMA_VERSION, TABLES, UNIQUE_KEYS, schema_for
from raytrade.replay.stored_keys import TRANSITION_KEY, KeyCache, KeyColumns, key_strings
from raytrade.replay.validation import ReplayValidationError, RowError, conform

log = logging.getLogger(__name__)

OnError = Literal["raise", "quarantine"]
_WATERMARK_TABLES = frozenset({"bars", "features", "macro"})
_KEYED_TABLES = frozenset({"experience"})
"""Tables whose ``UNIQUE_KEYS`` column is checked against the stored rows (not by time)."""
_COMPOSITE_KEYED_TABLES = frozenset({"forecasts"})
"""Tables whose whole ``UNIQUE_KEYS`` (several columns) is checked against the stored rows: a
forecast's (symbol, ts, source, horizon); forecasts of other sources and horizons share a ts, so
no watermark can tell a repeat."""


class StoreBusyError(RuntimeError):
    """Another writer holds the table's lock."""


@dataclass(frozen=True)
class AppendResult:
    """What one append did: rows written, rows refused (and where they were kept), files created."""

    table: str
    rows_written: int
    rows_refused: int = 0
    files: tuple[str, ...] = ()
    quarantine_file: str | None = None
    errors: tuple[RowError, ...] = field(default=(), repr=False)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write: Any) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def write_file_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never part of it, after a crash at any point:
    written to a hidden temporary beside it, fsynced, renamed over it, and the folder fsynced."""
    tmp = path.with_name(f".tmp-{path.name}")
    _write_durably(tmp, lambda handle: handle.write(data))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def recover_table(table_dir: Path) -> None:
    """Finish or discard what a crashed writer left: roll intents forward, delete orphan temp files.

    Call only while holding the table's lock (``ReplayWriter`` does on open).
    """
    txn_dir = table_dir / "_txn"
    if txn_dir.is_dir():
        for intent in sorted(txn_dir.glob("*.json")):
            try:
                renames = json.loads(intent.read_text())["renames"]
            except (json.JSONDecodeError, KeyError):
                # The intent itself was torn: the batch never reached the commit point.
                intent.unlink()
                continue
            for tmp, final in renames:
                tmp_path, final_path = table_dir / tmp, table_dir / final
                if tmp_path.exists():
                    os.replace(tmp_path, final_path)
                    _fsync_dir(final_path.parent)
            intent.unlink()
        _fsync_dir(txn_dir)
    for orphan in table_dir.glob(f"{PARTITION_KEY}=*/.tmp-*"):
        orphan.unlink()


def read_watermarks(table_dir: Path) -> dict[str, np.datetime64]:
    """The last stored ``ts`` per symbol of one table (empty for a new table)."""
    if not any(table_dir.glob(f"{PARTITION_KEY}=*/*.parquet")):
        return {}
    dataset = ds.dataset(table_dir, format="parquet", partitioning="hive")
    keys = dataset.to_table(columns=["symbol", "ts"])
    grouped = keys.group_by("symbol").aggregate([("ts", "max")])
    return {
        str(s): np.datetime64(t, "us")
        for s, t in zip(
            grouped["symbol"].to_pylist(),
            grouped["ts_max"].cast(pa.int64()).to_pylist(),
            strict=True,
        )
    }


def _key_kinds(table: str) -> tuple[KeyColumns, ...]:
    """The kinds of stored keys the writer checks ``table``'s rows against (``KeyCache.keys_of``)."""
    if table in _COMPOSITE_KEYED_TABLES:
        return (UNIQUE_KEYS[table],)
    return (UNIQUE_KEYS[table][0], TRANSITION_KEY)


def _drop_stored_composite(
    table: str, valid: pa.Table, positions: np.ndarray, keys: set[str]
) -> tuple[pa.Table, list[RowError]]:
    """``valid`` less its rows whose whole ``UNIQUE_KEYS`` is stored already: refused, naming it. Such a
    row used to be appended beside the stored one, and every later features build of the store failed
    on the repeated key (the store is append-only: nothing could remove it)."""
    columns = UNIQUE_KEYS[table]
    stored = np.array([k in keys for k in key_strings(valid, columns)], dtype=bool)
    if not stored.any():
        return valid, []
    values = {c: valid[c].to_pylist() for c in columns}
    errors = []
    for i in np.flatnonzero(stored):
        key = ", ".join(f"{c}={_shown(values[c][i])}" for c in columns)
        errors.append(
            RowError(
                table,
                int(positions[i]),
                columns[-1],
                values[columns[-1]][i],
                f"already stored: {table} holds a row of ({key}); the store is append-only (a revised "
                "forecast needs another source name)",
            )
        )
    return valid.filter(pa.array(~stored)), errors


def _shown(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class ReplayWriter:
    """Appends validated batches to ``root/<table>/year=YYYY/*.parquet``; see the module docstring.

    Use as a context manager (or call ``close()``) so the per-table locks are released.
    ``key_cache``: the stored keys of keyed tables read by earlier writers of a long-lived caller
    (updated by this one); without it the whole keyed table is read when it is opened.
    """

    def __init__(
        self, root: str | os.PathLike[str], on_error: OnError = "raise", key_cache: KeyCache | None = None
    ) -> None:
        if on_error not in ("raise", "quarantine"):
            raise ValueError(f"on_error must be 'raise' or 'quarantine', got {on_error!r}")
        self.root = Path(root)
        self.on_error: OnError = on_error
        self._locks: dict[str, IO[bytes]] = {}
        self._watermarks: dict[str, dict[str, np.datetime64]] = {}
        self._key_cache = key_cache if key_cache is not None else KeyCache()
        self._keys: dict[str, set[str]] = {}  # stored keys of _KEYED_TABLES (the cache's own sets)
        self._steps: dict[str, set[str]] = {}  # their stored TRANSITION_KEYs (experience)

    # -- public API -----------------------------------------------------------------------------
    def open(self, *tables: str) -> None:
        """Lock and recover ``tables`` now instead of at their first append: what the caller reads
        next is the committed state, and no other writer changes it before ``close``."""
        for table in tables:
            self._open_table(table)

    def append_bars(self, frame: pd.DataFrame) -> AppendResult:
        """Append OHLCV bars (``replay.schema.BARS_SCHEMA``)."""
        return self.append("bars", frame)

    def append_features(self, frame: pd.DataFrame) -> AppendResult:
        """Append feature rows (``replay.schema.FEATURES_SCHEMA``)."""
        return self.append("features", frame)

    def append_experience(self, frame: pd.DataFrame) -> AppendResult:
        """Append decisions and fills of the live loop (``replay.schema.EXPERIENCE_SCHEMA``)."""
        return self.append("experience", frame)

    def append(self, table: str, frame: pd.DataFrame) -> AppendResult:
        """Validate and append one batch to ``table``; all-or-nothing unless quarantining."""
        if self.on_error == "raise":
            return self._append(table, frame)
        try:
            return self._append(table, frame)
        except Exception as exc:  # quarantine mode never raises into the trading loop
            log.error("replay append to %s failed, batch quarantined: %s", table, exc)
            errors = [RowError(table, None, "*", None, f"batch not written: {exc}")]
            qfile = self._quarantine(table, frame, errors, whole_batch=True)
            return AppendResult(table, 0, len(frame), (), qfile, tuple(errors))

    def close(self) -> None:
        for handle in self._locks.values():
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._locks.clear()

    def __enter__(self) -> ReplayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------
    def _open_table(self, table: str) -> Path:
        schema_for(table)
        table_dir = self.root / table
        if table in self._locks:
            return table_dir
        (table_dir / "_txn").mkdir(parents=True, exist_ok=True)
        handle = open(table_dir / "_lock", "ab")  # noqa: SIM115 - held for the writer's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreBusyError(f"replay table {table_dir} is open by another writer") from None
        self._locks[table] = handle
        recover_table(table_dir)
        self._watermarks[table] = read_watermarks(table_dir) if table in _WATERMARK_TABLES else {}
        if table in _KEYED_TABLES:
            ids, steps = self._key_cache.keys_of(table_dir, _key_kinds(table))
            self._keys[table], self._steps[table] = ids, steps
        elif table in _COMPOSITE_KEYED_TABLES:
            (self._keys[table],) = self._key_cache.keys_of(table_dir, _key_kinds(table))
        return table_dir

    def _append(self, table: str, frame: pd.DataFrame) -> AppendResult:
        table_dir = self._open_table(table)
        valid, errors, positions = conform(table, frame)
        valid, stale = self._drop_stale(table, valid, positions)
        # the batch positions of the rows left in valid
        kept = positions[~np.isin(positions, [e.row for e in stale if e.row is not None])]
        valid, stored = self._drop_stored(table, valid, kept)
        errors = sorted(errors + stale + stored, key=lambda e: e.row if e.row is not None else -1)
        if errors and self.on_error == "quarantine":  # raising writes nothing of the batch anyway
            kept = kept[~np.isin(kept, [e.row for e in stored if e.row is not None])]
            valid, split = self._drop_split_steps(table, frame, valid, kept, errors)
            errors = sorted(errors + split, key=lambda e: e.row if e.row is not None else -1)
        if errors and self.on_error == "raise":
            raise ReplayValidationError(errors)
        qfile = self._quarantine(table, frame, errors) if errors else None
        files = self._commit(table, table_dir, valid) if valid.num_rows else ()
        return AppendResult(table, valid.num_rows, len(errors), files, qfile, tuple(errors))

    def _drop_stale(
        self, table: str, valid: pa.Table, positions: np.ndarray
    ) -> tuple[pa.Table, list[RowError]]:
        marks = self._watermarks.get(table)
        if not marks or valid.num_rows == 0:
            return valid, []
        symbols = valid["symbol"].to_numpy(zero_copy_only=False)
        ts = valid["ts"].cast(pa.int64()).to_numpy()
        floor = np.array([marks.get(s, np.datetime64("NaT")) for s in symbols], dtype="datetime64[us]")
        floor_int = floor.astype("int64")
        stale = ~np.isnat(floor) & (ts <= floor_int)
        if not stale.any():
            return valid, []
        errors = [
            RowError(
                table,
                int(positions[i]),
                "ts",
                pd.Timestamp(int(ts[i]), unit="us", tz="UTC").isoformat(),
                f"not after the last stored ts of {symbols[i]} "
                f"({pd.Timestamp(int(floor_int[i]), unit='us', tz='UTC').isoformat()}): "
                "the store is append-only",
            )
            for i in np.flatnonzero(stale)
        ]
        return valid.filter(pa.array(~stale)), errors

    def _drop_stored(
        self, table: str, valid: pa.Table, positions: np.ndarray
    ) -> tuple[pa.Table, list[RowError]]:
        """``valid`` less its rows whose key (``decision_id``), or whose transition key (a step's
        asset, under another id), is already stored: refused, naming it."""
        keys = self._keys.get(table)
        if keys is None or valid.num_rows == 0:
            return valid, []
        if table in _COMPOSITE_KEYED_TABLES:
            return _drop_stored_composite(table, valid, positions, keys)
        column = UNIQUE_KEYS[table][0]
        values = valid[column].to_pylist()
        stored = np.array([v in keys for v in values], dtype=bool)
        errors = [
            RowError(
                table,
                int(positions[i]),
                column,
                values[i],
                f"already stored: {table} holds a row with this {column} (a row is logged once)",
            )
            for i in np.flatnonzero(stored)
        ]
        steps = self._steps.get(table, set())
        episodes, step, asset = (valid[c].to_pylist() for c in TRANSITION_KEY)
        transition = np.flatnonzero(valid["episode_id"].is_valid().to_numpy(zero_copy_only=False))
        step_keys = key_strings(valid, TRANSITION_KEY)  # one per transition row, in order
        for i, key in zip(transition.tolist(), step_keys, strict=True):
            if not stored[i] and key in steps:
                stored[i] = True
                errors.append(
                    RowError(
                        table,
                        int(positions[i]),
                        "step",
                        step[i],
                        f"step {step[i]} of episode {episodes[i]!r} (asset_index {asset[i]}) is already "
                        f"stored under another decision id (decision {values[i]!r}): a step is logged once; "
                        "recording the same episode again would count its transitions twice",
                    )
                )
        if not stored.any():
            return valid, []
        return valid.filter(pa.array(~stored)), sorted(errors, key=lambda e: e.row or 0)

    @staticmethod
    def _drop_split_steps(
        table: str, frame: pd.DataFrame, valid: pa.Table, positions: np.ndarray, refused: list[RowError]
    ) -> tuple[pa.Table, list[RowError]]:
        """``valid`` less the transition rows of a step another row of which (in the batch) was
        refused: a step is written whole or not at all (a learner refuses a step that lacks an asset,
        and the store is append-only)."""
        if table != "experience" or valid.num_rows == 0 or "episode_id" not in frame.columns:
            return valid, []
        frame = frame.reset_index(drop=True)
        step_of = frame["step"] if "step" in frame.columns else pd.Series([None] * len(frame))
        refused_steps: dict[tuple[str, float], int] = {}
        for err in refused:
            if err.row is None:
                continue
            episode, step = frame["episode_id"].iloc[err.row], pd.to_numeric(step_of.iloc[err.row], "coerce")
            if isinstance(episode, str) and not np.isnan(step):
                refused_steps.setdefault((episode, float(step)), err.row)
        if not refused_steps:
            return valid, []
        episodes, steps = valid["episode_id"].to_pylist(), valid["step"].to_pylist()
        errors = []
        split = np.zeros(valid.num_rows, dtype=bool)
        for i, (episode, step) in enumerate(zip(episodes, steps, strict=True)):
            row = None if episode is None else refused_steps.get((episode, float(step)))
            if row is not None:
                split[i] = True
                errors.append(
                    RowError(
                        table,
                        int(positions[i]),
                        "step",
                        step,
                        f"step {step} of episode {episode!r} is written whole or not at all: its row "
                        f"{row} was refused",
                    )
                )
        return valid.filter(pa.array(~split)), errors

    def _commit(self, table: str, table_dir: Path, valid: pa.Table) -> tuple[str, ...]:
        batch_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        years = pc.year(valid["ts"]).to_numpy()
        metadata = {b"raytrade.schema_version": SCHEMA_VERSION.encode(), b"raytrade.table": table.encode()}
        valid = valid.replace_schema_metadata(metadata)
        renames: list[tuple[str, str]] = []
        for year in np.unique(years):
            part = valid.filter(pa.array(years == year))
            part_dir = table_dir / f"{PARTITION_KEY}={int(year)}"
            part_dir.mkdir(exist_ok=True)
            tmp = part_dir / f".tmp-{batch_id}.parquet"
            _write_durably(tmp, lambda h, p=part: pq.write_table(p, h, compression="zstd"))
            renames.append((str(tmp.relative_to(table_dir)), f"{part_dir.name}/part-{batch_id}.parquet"))
        intent = table_dir / "_txn" / f"{batch_id}.json"
        _write_durably(intent, lambda h: h.write(json.dumps({"renames": renames}).encode()))
        _fsync_dir(intent.parent)
        for tmp_rel, final_rel in renames:
            os.replace(table_dir / tmp_rel, table_dir / final_rel)
        for part_dir in {(table_dir / f).parent for _, f in renames}:
            _fsync_dir(part_dir)
        intent.unlink()
        self._advance_watermarks(table, valid)
        if table in self._keys:
            kinds = _key_kinds(table)
            files = [table_dir / f for _, f in renames]
            self._key_cache.add(table_dir, files, {kind: key_strings(valid, kind) for kind in kinds})
        return tuple(str(table_dir / f) for _, f in renames)

    def _advance_watermarks(self, table: str, valid: pa.Table) -> None:
        if table not in _WATERMARK_TABLES:
            return
        grouped = valid.group_by("symbol").aggregate([("ts", "max")])
        marks = self._watermarks.setdefault(table, {})
        for s, t in zip(
            grouped["symbol"].to_pylist(), grouped["ts_max"].cast(pa.int64()).to_pylist(), strict=True
        ):
            marks[str(s)] = np.datetime64(t, "us")

    def _quarantine(
        self, table: str, frame: pd.DataFrame, errors: Iterable[RowError], whole_batch: bool = False
    ) -> str:
        qdir = self.root / "_quarantine" / table
        qdir.mkdir(parents=True, exist_ok=True)
        path = qdir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        frame = frame.reset_index(drop=True)
        lines = []
        for err in errors:
            rows = range(len(frame)) if whole_batch or err.row is None else [err.row]
            for row in rows:
                record = frame.iloc[row].to_dict() if row < len(frame) else {}
                lines.append(
                    json.dumps(
                        {
                            "table": table,
                            "row": row,
                            "column": err.column,
                            "value": err.value,
                            "reason": err.reason,
                            "record": record,
                        },
                        default=str,
                    )
                )
        tmp = qdir / f".tmp-{path.name}"
        _write_durably(tmp, lambda h: h.write(("\n".join(lines) + "\n").encode()))
        os.replace(tmp, path)
        return str(path)


def known_tables() -> tuple[str, ...]:
    return TABLES
