"""Opening a registry file for reading: a regular file only, never through a link, never blocking.

A registry folder is written by whoever can write the registry. A file of a version replaced by a
symbolic link would be read from wherever it points (``/dev/zero``: memory exhausted; a file outside
the version: its contents read as the version's); one replaced by a FIFO would block ``open`` for
ever. :func:`open_regular` opens without following a link (``O_NOFOLLOW``) and without blocking
(``O_NONBLOCK``), then checks the descriptor itself (``fstat``), so what is checked is what is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from raytrade.replay.errors import InputError


def open_regular(path: Path, error: type[InputError]) -> int:
    """A blocking read-only descriptor of ``path``; ``error`` (one line naming the file) unless it
    is a regular file and no symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if Path(path).is_symlink():
            raise error(
                f"{str(path)!r} is a symbolic link: a registry version holds regular files only"
            ) from None
        raise error(f"{str(path)!r} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{str(path)!r} is not a regular file: a registry version holds regular files only")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, limit: int, error: type[InputError]) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`); ``error`` when it holds more
    than ``limit`` bytes (checked on the descriptor, then by reading at most ``limit + 1``: a file
    growing meanwhile is refused too)."""
    with os.fdopen(open_regular(path, error), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise error(f"{str(path)!r} holds {max(size, len(data))} bytes, more than the {limit} allowed")
    return data
