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
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds

from raytrade.replay.schema import PARTITION_KEY

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
    keys: set[str] = field(default_factory=set)


class KeyCache:
    """The stored keys of keyed tables, each file read once; see the module docstring.

    ``files_read`` counts the parquet files read so far (a diagnostic, and what the tests check).
    """

    def __init__(self) -> None:
        self._tables: dict[tuple[Path, str], _TableKeys] = {}
        self.files_read = 0

    def keys(self, table_dir: Path, column: str) -> set[str]:
        """The stored values of ``column`` in ``table_dir`` (empty for a new table), after reading the
        files added since the last call; the whole table again if a file read before has gone or
        changed. The set returned is the cache's own, kept up to date in place by later calls and by
        :meth:`add`: read it, do not change it."""
        table_dir = Path(table_dir).absolute()
        entry = self._tables.setdefault((table_dir, column), _TableKeys())
        listed = _listing(table_dir)
        if any(listed.get(name) != ident for name, ident in entry.files.items()):
            entry.files.clear()
            entry.keys.clear()  # in place: a holder of the set sees the new state
        new = [name for name in listed if name not in entry.files]
        if new:
            column_values = ds.dataset(new, format="parquet").to_table(columns=[column])[column]
            entry.keys.update(str(k) for k in column_values.to_pylist())
            entry.files.update((name, listed[name]) for name in new)
            self.files_read += len(new)
        return entry.keys

    def add(self, table_dir: Path, column: str, files: Iterable[Path], keys: Iterable[str]) -> None:
        """Record files the caller committed itself, holding ``keys``, as read: the writer's own
        appends (under its lock), so the next :meth:`keys` need not read them."""
        entry = self._tables.setdefault((Path(table_dir).absolute(), column), _TableKeys())
        entry.keys.update(keys)
        entry.files.update((str(Path(p).absolute()), _identity(Path(p))) for p in files)
