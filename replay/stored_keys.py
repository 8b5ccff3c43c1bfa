"""The stored values of a keyed table's unique column (``experience.decision_id``), read incrementally.

Design decisions
----------------
* A committed file of the store is never rewritten by the writer (it writes new files under new
  names, renamed into place whole), so a file read once need not be read again. A :class:`KeyCache`
  remembers each file it read by its name and identity (inode, size, mtime) and, on each
  :meth:`KeyCache.keys`, reads only the files it has not read: a long-lived caller (the live loop,
  which opens a writer every cycle) pays for the files added since its last read, not for the table.
* A file it read that has disappeared or been replaced (another identity under the same name: a
  restore, a hand edit) invalidates the whole cache: the keys are read again from every file, so it
  never keeps a key the table no longer holds nor misses one a replaced file added.
* Read under the table's writer lock (``ReplayWriter`` does when it opens the table) the answer is
  exact: it includes the files another process committed since the last read. Read without it (the
  live loop's pre-filter) it is complete up to the listing; the writer's check under the lock is the
  guarantee.
* Hidden names (``.tmp-…``, ``_txn``) are skipped, as pyarrow's dataset discovery skips them.
* A key is one column's value, or several columns' (:data:`TRANSITION_KEY`: a transition row's
  episode, step and asset), joined by :data:`_SEP` as text (:func:`key_strings`); the rows whose first
  column is null carry no such key. A file written before a column existed reads it as null.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from raytrade.replay.schema import PARTITION_KEY, TABLES, schema_for

KeyColumns = str | tuple[str, ...]
"""One key column, or the columns of a composite key."""

TRANSITION_KEY: tuple[str, ...] = ("episode_id", "step", "asset_index")
"""The experience table's transition key: a step's asset is logged once (``replay.writer``)."""

_SEP = "\x1f"


def key_strings(table: pa.Table, columns: KeyColumns) -> list[str]:
    """The keys of ``table``'s rows as text: a column's values, or (several columns) the values of the
    rows whose first column is not null, joined by ``_SEP``."""
    if isinstance(columns, str):
        return [str(k) for k in table.column(columns).to_pylist()]
    table = table.filter(table.column(columns[0]).is_valid())
    values = zip(*(table.column(c).to_pylist() for c in columns), strict=True)
    return [_SEP.join(str(v) for v in row) for row in values]


_Identity = tuple[int, int, int]
"""(inode, size, mtime_ns) of a file: a file replaced under the same name has another."""


def _identity(path: Path) -> _Identity:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _listing(table_dir: Path) -> dict[str, _Identity]:
    """Each committed parquet file of ``table_dir`` (absolute path) and its identity (``os.scandir``:
    one ``stat`` per file, a few tens of ms at 2,000 files)."""
    listed: dict[str, _Identity] = {}
    for part in table_dir.glob(f"{PARTITION_KEY}=*"):
        if not part.is_dir():
            continue
        with os.scandir(part) as entries:
            for e in entries:
                if e.name.endswith(".parquet") and not e.name.startswith((".", "_")) and e.is_file():
                    st = e.stat()
                    listed[e.path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return listed


@dataclass
class _TableKeys:
    files: dict[str, _Identity] = field(default_factory=dict)
    keys: dict[KeyColumns, set[str]] = field(default_factory=dict)  # per kind of key asked for


class KeyCache:
    """The stored keys of keyed tables, each file read once (one pass for every kind of key asked
    for: :meth:`keys_of`); see the module docstring.

    ``files_read`` counts the parquet files read so far (a diagnostic, and what the tests check).
    """

    def __init__(self) -> None:
        self._tables: dict[Path, _TableKeys] = {}
        self.files_read = 0

    def keys(self, table_dir: Path, column: KeyColumns) -> set[str]:
        """The stored keys of ``column`` in ``table_dir`` (:func:`key_strings`; empty for a new
        table), after reading the files added since the last call; the whole table again if a file
        read before has gone or changed, or ``column`` was not asked for before. The set returned is
        the cache's own, kept up to date in place by later calls and by :meth:`add`: read it, do not
        change it."""
        return self.keys_of(table_dir, (column,))[0]

    def keys_of(self, table_dir: Path, columns: tuple[KeyColumns, ...]) -> list[set[str]]:
        """:meth:`keys` of each of ``columns``, the new files read once for all of them."""
        table_dir = Path(table_dir).absolute()
        entry = self._tables.setdefault(table_dir, _TableKeys())
        listed = _listing(table_dir)
        unasked = [c for c in columns if c not in entry.keys]
        for column in unasked:
            entry.keys[column] = set()
        if unasked or any(listed.get(name) != ident for name, ident in entry.files.items()):
            entry.files.clear()
            for held in entry.keys.values():
                held.clear()  # in place: a holder of the set sees the new state
        new = [name for name in listed if name not in entry.files]
        if new:
            read_columns = {
                c: None for kind in entry.keys for c in ([kind] if isinstance(kind, str) else kind)
            }
            # the table's schema (when known): a file written before a column existed reads it as null
            schema = schema_for(table_dir.name) if table_dir.name in TABLES else None
            read = ds.dataset(new, format="parquet", schema=schema).to_table(columns=list(read_columns))
            for kind, held in entry.keys.items():
                held.update(key_strings(read, kind))
            entry.files.update((name, listed[name]) for name in new)
            self.files_read += len(new)
        return [entry.keys[c] for c in columns]

    def add(self, table_dir: Path, files: Iterable[Path], keys: dict[KeyColumns, list[str]]) -> None:
        """Record files the caller committed itself, holding ``keys`` (per kind: every kind asked
        for), as read: the writer's own appends (under its lock), so the next :meth:`keys` need not
        read them."""
        entry = self._tables.setdefault(Path(table_dir).absolute(), _TableKeys())
        if set(keys) != set(entry.keys):
            raise ValueError(
                f"keys of {sorted(map(str, keys))} added, the cache holds {sorted(map(str, entry.keys))}"
            )
        for kind, held in entry.keys.items():
            held.update(keys[kind])
        entry.files.update((str(Path(p).absolute()), _identity(Path(p))) for p in files)
