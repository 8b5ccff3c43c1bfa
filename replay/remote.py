"""Remote locations: ``s3://…`` (or any pyarrow filesystem URI) as well as local paths, used through
local mirrors.

Design decisions
----------------
* The crash-safe local code paths (the store writer, the registry's version claim, the run files)
  stay as they are: a command given a URI works on a local mirror of it (``cache_dir``) and moves
  files with :func:`download_tree` / :func:`upload_tree`. A location without ``://`` is a local path
  and passes through every function here unchanged (:func:`location` only makes it absolute).
* The filesystem of a URI is ``pyarrow.fs.FileSystem.from_uri``: the endpoint comes from the URI's
  query (``?endpoint_override=HOST:PORT&scheme=http``) or ``AWS_ENDPOINT_URL``, the credentials from
  the environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, or the node's role). A URI that
  carries credentials itself (``s3://KEY:SECRET@bucket``) is refused without echoing them: URIs are
  written into run files and manifests, credentials never are.
* Commit markers go last: :func:`upload_tree` uploads the files named in ``last`` after all others,
  in the order given (a manifest, a ``latest`` pointer, a leaderboard), so a reader that finds the
  marker finds everything it names. Object stores have no rename and no lock: two writers on one
  remote location are not supported (the store and the registry refuse what they can detect).
* Folders exist only where the filesystem has them: before writing a file, its parent folders are
  created on a filesystem that needs them (``file://``: pyarrow's ``LocalFileSystem`` does not
  create them), never on an object store (``s3://``, ``gs://``), where they would be empty marker
  objects.
* Downloads are atomic per file (a hidden temp name renamed into place), so processes on one node
  mirroring the same URI at once never read half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator

from raytrade.replay.credentials import carries_credentials, shown_url
from raytrade.replay.errors import InputError

log = logging.getLogger(__name__)

CACHE_ENV: Final = "RAYTRADE_CACHE_DIR"
"""Where mirrors of remote locations live (default ``~/.cache/raytrade/remote``)."""
_BLOCK: Final = 1 << 20


class RemoteError(InputError):
    """A remote location that cannot be used: a malformed URI, a missing bucket, URI credentials, or
    a second writer detected (the message names the location, never a credential)."""


def _as_location(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


Location = Annotated[str, BeforeValidator(_as_location)]
"""A local path or a ``scheme://`` URI, as a string (``pathlib.Path`` would fold ``s3://`` into
``s3:/``); a ``Path`` given for it is accepted."""


def is_remote(value: str | os.PathLike[str]) -> bool:
    """True for a ``scheme://…`` URI, False for a local path."""
    return isinstance(value, str) and "://" in value


def location(value: str | os.PathLike[str]) -> str:
    """A URI unchanged (checked), a local path made absolute: the form written into run files."""
    if is_remote(value):
        check_uri(str(value))
        return str(value)
    return str(Path(value).resolve())


def redacted(uri: str) -> str:
    """``uri`` as error messages show it: ``replay.credentials.shown_url`` (no user information, query
    or fragment, however malformed the URI: a secret key may hold an unescaped ``/``)."""
    return shown_url(uri)


def check_uri(uri: str) -> None:
    """Refuse a URI that carries credentials (``scheme://user:secret@…``; any ``@``, the rule of
    ``replay.credentials.carries_credentials``: an AWS secret key may hold a ``/``, which puts the
    rest of it in the URI's path)."""
    if carries_credentials(uri):
        raise RemoteError(
            f"{redacted(uri)}: credentials in the URI are refused; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or the node's role) instead"
        )


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended to its path, its query kept (``s3://b/p?x=1`` + ``a`` ->
    ``s3://b/p/a?x=1``)."""
    split = urlsplit(uri)
    path = "/".join([split.path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit((split.scheme, split.netloc, path, split.query, split.fragment))


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of ``uri``; a missing S3 bucket is refused, naming it."""
    import pyarrow.fs as pafs

    check_uri(uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with its own wording
        raise RemoteError(f"{redacted(uri)} is not a usable location: {exc}") from None
    if isinstance(fs, pafs.S3FileSystem):
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise RemoteError(f"bucket {bucket!r} of {redacted(uri)} does not exist")
    return fs, path.rstrip("/")


def cache_dir(uri: str) -> Path:
    """The local mirror of ``uri``: ``$RAYTRADE_CACHE_DIR`` (default ``~/.cache/raytrade/remote``)
    / the first 16 hex of the URI's sha256."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "raytrade" / "remote"
    return Path(base) / hashlib.sha256(uri.encode()).hexdigest()[:16]


def list_files(uri: str) -> dict[str, int]:
    """Every file under ``uri``: POSIX path relative to it -> size in bytes (empty when none)."""
    import pyarrow.fs as pafs

    fs, base = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return {
        info.path[len(base) + 1 :]: int(info.size)
        for info in infos
        if info.type == pafs.FileType.File and info.path.startswith(base + "/")
    }


def read_bytes(uri: str, rel: str) -> bytes | None:
    """The bytes of the file ``rel`` under ``uri`` (None when absent)."""
    import pyarrow.fs as pafs

    fs, base = filesystem(uri)
    path = f"{base}/{rel}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return bytes(stream.read())


_OBJECT_STORES: Final = frozenset({"s3", "gcs"})
"""pyarrow filesystem types without real folders (a key's "parents" need not, and should not, exist)."""


def _open_output(fs: Any, path: str) -> Any:
    """``fs.open_output_stream(path)``, its parent folders created first where the filesystem has
    folders (a local one does not create them itself)."""
    if fs.type_name not in _OBJECT_STORES and "/" in path:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    return fs.open_output_stream(path)


def _partial_removed(fs: Any, path: str) -> None:
    """Delete what an interrupted write left at ``path`` (best effort: the write's own error is the
    one to raise). pyarrow closes, and so commits, an output stream whatever ends the ``with``: an
    upload interrupted mid-file left a truncated object under its final name, which the next publish
    took as present and every mirror then downloaded over a good copy."""
    try:
        fs.delete_file(path)
    except Exception:
        log.warning("could not remove the partial upload %s: remove it by hand", path)


def write_bytes(uri: str, rel: str, data: bytes) -> None:
    """Write ``data`` as the file ``rel`` under ``uri`` (one object; replaced if present; removed
    again when the write is interrupted)."""
    fs, base = filesystem(uri)
    try:
        with _open_output(fs, f"{base}/{rel}") as stream:
            stream.write(data)
    except BaseException:
        _partial_removed(fs, f"{base}/{rel}")
        raise


def delete_file(uri: str, rel: str) -> None:
    """Delete the file ``rel`` under ``uri`` (nothing when it is absent)."""
    import pyarrow.fs as pafs

    fs, base = filesystem(uri)
    if fs.get_file_info(f"{base}/{rel}").type == pafs.FileType.File:
        fs.delete_file(f"{base}/{rel}")


def leads_outside(rel: str) -> bool:
    """True for a path that does not name something inside the folder it is relative to: empty (or
    only ``.``), absolute, or holding a ``..`` component (POSIX separators)."""
    path = PurePosixPath(rel)
    return not path.parts or path.is_absolute() or ".." in path.parts


def download_tree(
    uri: str,
    local_dir: Path | None = None,
    *,
    include: Callable[[str], bool] | None = None,
    refresh: bool = False,
    exact: bool = False,
    current: Callable[[str, Path], bool] | None = None,
    within: Path | None = None,
) -> Path:
    """Mirror the files under ``uri`` (those ``include`` accepts) into ``local_dir`` (default
    :func:`cache_dir`); returns the folder.

    A file whose local copy has the remote size is kept unless ``refresh``, or ``current`` (given
    the relative path and the local copy) says the copy is stale (e.g. its sha256 differs from the
    one a manifest records: a remote file replaced by one of the same size). With ``exact``, local
    files that ``include`` accepts and the remote lacks are deleted, so the mirror holds exactly the
    remote's files (hidden and ``_``-prefixed files, e.g. a writer's lock, are left alone).
    ``within``: the mirror root that ``local_dir`` (a subfolder of a mirror, named by a document the
    remote holds) must resolve inside; a ``local_dir`` outside it is refused (``RemoteError``) before
    anything is listed, written or deleted."""
    local = Path(local_dir) if local_dir is not None else cache_dir(uri)
    if within is not None and not local.resolve().is_relative_to(Path(within).resolve()):
        raise RemoteError(
            f"{str(local)!r} (the local copy of {redacted(uri)}) lies outside the mirror {str(within)!r}: "
            "nothing downloaded or deleted"
        )
    fs, base = filesystem(uri)
    local.mkdir(parents=True, exist_ok=True)
    remote = {rel: size for rel, size in list_files(uri).items() if include is None or include(rel)}
    for rel in remote:  # an object store key may hold '..': written as named, it lands outside
        if leads_outside(rel):
            raise RemoteError(
                f"{redacted(uri)} holds an object named {rel!r}, which leads outside the mirror: "
                "nothing downloaded (whoever wrote it could write files anywhere this machine lets us)"
            )
    for rel, size in sorted(remote.items()):
        target = local / rel
        if (
            not refresh
            and target.is_file()
            and target.stat().st_size == size
            and (current is None or current(rel, target))
        ):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".dl-{uuid.uuid4().hex}-{target.name}")
        with fs.open_input_stream(f"{base}/{rel}") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, _BLOCK)
        os.replace(tmp, target)
    if exact:
        for path in local_files(local):
            rel = path.relative_to(local).as_posix()
            if rel not in remote and (include is None or include(rel)):
                path.unlink()
    return local


def local_files(local_dir: Path) -> list[Path]:
    """Files under ``local_dir`` but hidden or ``_``-prefixed ones (temp files, locks, intents)."""
    return [
        p
        for p in sorted(Path(local_dir).rglob("*"))
        if p.is_file() and not any(part[:1] in "._" for part in p.relative_to(local_dir).parts)
    ]


def upload_tree(
    local_dir: Path,
    uri: str,
    *,
    last: Sequence[str] = (),
    files: Iterable[str] | None = None,
    skip_present: bool = False,
) -> list[str]:
    """Upload the files of ``local_dir`` (or only ``files``, POSIX paths relative to it, in their
    order) to ``uri``; those named in ``last`` go after all others, in ``last``'s order (the commit
    markers). With ``skip_present``, files the remote already holds at the same size are skipped.
    Returns the relative paths uploaded, in upload order."""
    fs, base = filesystem(uri)
    local = Path(local_dir)
    rels = list(files) if files is not None else [p.relative_to(local).as_posix() for p in local_files(local)]
    present = list_files(uri) if skip_present else {}
    ordered = [r for r in rels if r not in last] + [r for r in last if r in rels]
    done = []
    for rel in ordered:
        source = local / rel
        if skip_present and present.get(rel) == source.stat().st_size:
            continue
        try:
            with open(source, "rb") as src, _open_output(fs, f"{base}/{rel}") as dst:
                shutil.copyfileobj(src, dst, _BLOCK)
        except BaseException:  # Ctrl-C, a dropped connection: no truncated object left under its name
            _partial_removed(fs, f"{base}/{rel}")
            raise
        done.append(rel)
    return done
