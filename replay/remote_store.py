"""A replay store at a remote location (``replay.remote``), read and written through a local mirror.

* Reading (:func:`local_store`): the committed files (``TABLE/year=YYYY/part-*.parquet``) are
  mirrored exactly into the cache, so every reader, the env loader on any node included, reads the
  remote's state with the local readers; only files the mirror lacks are downloaded (part names are
  unique and never rewritten).
* Writing (:func:`store_mirror`): the command writes the mirror with the existing ``ReplayWriter``
  (validation, atomic commits), then the new part files are uploaded in commit order (bars before
  the features computed from them), as a crashed local ingest would leave them: a reader of the
  remote sees whole commits. Quarantine files are uploaded too.
* One writer: S3 has no lock. Before uploading, the remote is listed again; files added by someone
  else since the download, or stored files the command removed locally (a features rebuild by a
  forecast import rewrites the table), are refused with a one-line error and nothing is uploaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from raytrade.replay.feature_settings import SETTINGS_FILE
from raytrade.replay.remote import (
    RemoteError,
    download_tree,
    is_remote,
    list_files,
    local_files,
    redacted,
    upload_tree,
)

STORE_FILE: Final = re.compile(
    r"[a-z_]+/year=\d+/part-[^/]+\.parquet|_quarantine/[a-z_]+/[^/.][^/]*\.jsonl|feature_settings\.json"
)
"""The files a store's state consists of (relative POSIX paths): committed parts, quarantine and the
feature settings (``replay.feature_settings.SETTINGS_FILE``)."""


def is_store_file(rel: str) -> bool:
    return STORE_FILE.fullmatch(rel) is not None


def local_store(root: str | os.PathLike[str]) -> Path:
    """The local folder to read the store at ``root`` from: ``root`` itself when local, else its
    mirror, brought up to date with the remote (exactly its committed files)."""
    if not is_remote(root):
        return Path(root)
    return download_tree(str(root), include=is_store_file, exact=True)


@contextmanager
def store_mirror(root: str | os.PathLike[str]) -> Iterator[Path]:
    """A local folder to write the store at ``root`` with: ``root`` itself when local; for a URI its
    mirror, whose new files are uploaded when the block ends without an error (see the module
    docstring for the order and the one-writer checks)."""
    if not is_remote(root):
        yield Path(root)
        return
    uri = str(root)
    local = local_store(uri)
    before = {rel for rel in list_files(uri) if is_store_file(rel)}
    settings = _read_bytes(local / SETTINGS_FILE)
    yield local
    rewritten = (SETTINGS_FILE,) if _read_bytes(local / SETTINGS_FILE) not in (None, settings) else ()
    publish_store(local, uri, before, rewritten)


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def publish_store(local: Path, uri: str, before: set[str], rewritten: Sequence[str] = ()) -> list[str]:
    """Upload the store files of ``local`` that ``uri`` lacks, in commit order, and those of
    ``rewritten`` the command changed in place (the feature settings record, rewritten by the first
    features build of a store whose first ingest failed: ``replay.feature_settings``); ``before`` is
    what the remote held when the mirror was taken. Returns the uploaded relative paths."""
    listed = list_files(uri)
    now = {rel for rel in listed if is_store_file(rel)}
    added = sorted(now - before)
    if added:
        raise RemoteError(
            f"{redacted(uri)} gained {len(added)} file(s) from another writer while this command ran "
            f"(first: {added[0]}); two writers on one remote store are not supported: nothing uploaded"
        )
    mine = {p.relative_to(local).as_posix(): p for p in local_files(local)}
    removed = sorted(rel for rel in before if rel not in mine)
    if removed:
        raise RemoteError(
            f"this command removed stored file(s) of {redacted(uri)} locally (first: {removed[0]}); "
            "a remote store is append-only (import forecasts into a local store): nothing uploaded"
        )
    # a file the remote holds at another size is a partial upload (a killed publish): sent again whole
    new = [
        rel
        for rel, path in mine.items()
        if is_store_file(rel) and (rel not in now or rel in rewritten or listed[rel] != path.stat().st_size)
    ]
    new.sort(key=lambda rel: (mine[rel].stat().st_mtime_ns, rel))
    return upload_tree(local, uri, files=new)
