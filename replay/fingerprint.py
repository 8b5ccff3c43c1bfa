"""The data fingerprint: which replay bytes a policy was trained, promoted or evaluated on.

One definition for every layer that records it (``raytrade tune``'s run file, the registry
manifest, the evaluation report), so two documents naming the same store state carry the same hex.

The fingerprint is a sha256 over the committed files of the ``bars`` and ``features`` tables (what a
policy reads; ``experience`` is not an input of online training; an offline run fingerprints its
experience store's ``experience`` table apart, with the same function, ``EXPERIENCE_TABLES``;
its ``behaviour/`` records are left out, as no learner reads them and the run file and manifest
hold them whole: ``replay.behaviour``):
the files sorted by their path relative to the store root (POSIX form), then for each its path, a
NUL byte and its bytes. Appending to the
store adds a file and so changes the fingerprint; a half-written file is never seen (the writer
renames committed files into place).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

FINGERPRINT_TABLES: Final = ("bars", "features")
EXPERIENCE_TABLES: Final = ("experience",)
"""What an offline learner reads: its experience store's fingerprint covers this table."""


def fingerprint(files: Iterable[Path], root: str | os.PathLike[str]) -> str:
    """sha256 over ``files`` sorted by their POSIX path relative to ``root``: each path, NUL, its bytes.

    The order of ``files`` does not matter; a file outside ``root`` raises ``ValueError``.
    """
    base = Path(root).resolve()
    rels = sorted(Path(f).resolve().relative_to(base).as_posix() for f in files)
    digest = hashlib.sha256()
    for rel in rels:
        digest.update(rel.encode())
        digest.update(b"\0")
        with open(base / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def data_fingerprint(
    root: str | os.PathLike[str], tables: tuple[str, ...] = FINGERPRINT_TABLES
) -> tuple[str, int]:
    """(sha256, file count) of the replay store at ``root``: its bars and features tables, or the
    ``tables`` named (``EXPERIENCE_TABLES``: what an offline learner reads)."""
    from raytrade.replay.reader import table_files

    files = [f for table in tables for f in table_files(root, table)]
    return fingerprint(files, root), len(files)
