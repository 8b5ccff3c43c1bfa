"""A registry at a remote location (``s3://…``, ``file://…``; ``replay.remote``): versions mirrored
locally to be read, built locally and uploaded to be published.

* Reading (:func:`mirror_registry`, called by ``models.registry.resolve`` for a URI): the remote's
  committed versions of the name (those whose ``manifest.json`` exists: it is uploaded last) and its
  ``latest`` are mirrored into the cache, and the version the reference names is downloaded (exactly
  the remote's set of files; a local copy is kept only when its sha256 is the one the remote's
  manifest records, so a version deleted and promoted again under its number is not served from a
  stale copy); the local ``resolve`` then picks the folder, and ``models.registry_load.load``
  verifies every file's sha256 against the manifest before anything is unpickled, as for a local
  registry.
* Publishing (:func:`write_version_at`): the existing ``write_version`` builds the version in a
  folder private to this promote, numbered past every number the remote holds any object under
  (:func:`used_numbers`: a promote that died mid-upload leaves files without a manifest, and its
  number is skipped, never reused or deleted). The promote then claims the number: it writes a
  marker object of its own (``.claim-…``) into the version and lists the version; only a listing
  holding nothing but its marker lets it go on, so of two writers that picked one number at most
  one proceeds (the one that lists last sees both markers); one that backs off deletes its marker
  and takes the next number (at most ``CLAIM_ATTEMPTS`` times).
  Then the files are uploaded, ``manifest.json`` last, the marker deleted (readers ignore markers),
  ``latest`` moved (never backwards by one writer; it is read, then written, so two promotes at once
  may leave it on the lower version: one writer per remote registry), and the version moved into
  the mirror.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from raytrade.envs.registry_ref import RegistryRefError, parse_registry_ref
from raytrade.models.manifest import MANIFEST
from raytrade.replay.remote import (
    RemoteError,
    cache_dir,
    delete_file,
    download_tree,
    is_remote,
    join,
    list_files,
    read_bytes,
    redacted,
    upload_tree,
    write_bytes,
)

CLAIM_PREFIX: Final = ".claim-"
"""Name prefix of the marker a promote writes into a version to claim its number (not a version file)."""


def committed_versions(registry: str, name: str) -> list[int]:
    """Versions of ``name`` at the remote ``registry`` whose manifest is uploaded, ascending."""
    return sorted(number for number, rest in _version_objects(registry, name) if rest == MANIFEST)


def used_numbers(registry: str, name: str) -> list[int]:
    """Version numbers of ``name`` at the remote ``registry`` holding any object, committed or not
    (a claim marker, a dead promote's partial upload), ascending: a promote numbers past them all."""
    return sorted({number for number, _ in _version_objects(registry, name)})


def _version_objects(registry: str, name: str) -> list[tuple[int, str]]:
    """(version number, path inside the version) of every object under ``NAME/<number>/``."""
    found = []
    for rel in list_files(join(registry, name)):
        number, _, rest = rel.partition("/")
        if rest and number.isascii() and number.isdigit():
            found.append((int(number), rest))
    return found


def _is_version_file(rel: str) -> bool:
    return not rel.startswith(CLAIM_PREFIX)


def _mirror_listing(registry: str, name: str, available: list[int]) -> Path:
    """The mirror's ``NAME`` folder holding a folder per committed remote version (so the local
    ``versions`` lists them) and none the remote lacks committed (a version deleted there, or the
    leftovers of a promote built in the mirror by earlier code; promotes now build elsewhere)."""
    from raytrade.models.registry import LATEST

    folder = cache_dir(registry) / name
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_dir() and path.name.isdigit() and int(path.name) not in available:
            shutil.rmtree(path)
    for number in available:
        (folder / str(number)).mkdir(exist_ok=True)
    latest = read_bytes(join(registry, name), LATEST)
    if latest is None:
        (folder / LATEST).unlink(missing_ok=True)
    else:
        (folder / LATEST).write_bytes(latest)
    return folder


def mirror_registry(registry: str, ref: str) -> Path:
    """The local mirror root of the remote ``registry`` holding the version ``ref`` names (and its
    name's ``latest``); ``RegistryError`` when the remote holds no version of the name."""
    from raytrade.models.registry import RegistryError, resolve

    try:
        name = parse_registry_ref(ref).name
    except RegistryRefError as exc:
        raise RegistryError(str(exc)) from None
    available = committed_versions(registry, name)
    if not available:
        known = sorted({rel.split("/", 1)[0] for rel in list_files(registry) if rel.endswith("/" + MANIFEST)})
        raise RegistryError(
            f"no policy {name!r} in registry {redacted(registry)!r}; available: {', '.join(known) or 'none'}"
        )
    root = _mirror_listing(registry, name, available).parent
    folder = resolve(root, ref)  # the local rules pick the version (latest, or the pinned one)
    _download_version(join(registry, name, folder.name), folder)
    return root


def _download_version(version_uri: str, folder: Path) -> None:
    """Mirror the remote version's files (not claim markers) exactly into ``folder``, keeping a
    local copy only when it matches the remote's manifest (its bytes; another file, its sha256)."""
    from raytrade.models.registry import file_sha256

    manifest = read_bytes(version_uri, MANIFEST)
    recorded = _recorded_hashes(manifest)

    def current(rel: str, path: Path) -> bool:
        if rel == MANIFEST:
            return path.read_bytes() == manifest
        return rel in recorded and recorded[rel] == file_sha256(path)

    download_tree(version_uri, folder, include=_is_version_file, exact=True, current=current)


def _recorded_hashes(manifest: bytes | None) -> dict[str, str]:
    """The ``files`` sha256s of a manifest's bytes; empty when there are none to trust (no manifest,
    not JSON, none recorded), so every file is downloaded again and the loader judges the version."""
    try:
        files = json.loads(manifest)["files"] if manifest is not None else None
    except (ValueError, KeyError, TypeError):
        return {}
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def write_version_at(
    registry: str | os.PathLike[str],
    name: str,
    checkpoint: Path,
    record: Mapping[str, Any],
    module_id: str = "default_policy",
    hmac_key: SecretStr | None = None,
) -> Path:
    """``models.registry.write_version`` at a local registry or a remote one (see the module
    docstring); returns the new version's local folder (for a remote one, the mirror's). A remote
    version number whose upload died (objects without ``manifest.json``) is skipped, never reused;
    ``RemoteError`` when other writers took ``CLAIM_ATTEMPTS`` numbers in a row."""
    from raytrade.models.registry import CLAIM_ATTEMPTS, check_name, write_version

    if not is_remote(registry):
        return write_version(Path(registry), name, checkpoint, record, module_id, hmac_key)
    uri = str(registry)
    check_name(name)
    after = max(used_numbers(uri, name), default=0)
    for _ in range(CLAIM_ATTEMPTS):
        build = cache_dir(uri) / f".promote-{os.getpid()}-{uuid.uuid4().hex}"  # never a reader's
        try:
            target = write_version(build, name, checkpoint, record, module_id, hmac_key, after=after)
            number = int(target.name)
            version_uri = join(uri, name, target.name)
            marker = _claim(version_uri)
            if marker is not None:
                _publish(target, uri, name, marker)
                return _into_mirror(target, uri, name)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        after = max([number, *used_numbers(uri, name)])
    raise RemoteError(
        f"could not claim a version number of {name!r} in {redacted(uri)} in {CLAIM_ATTEMPTS} attempts: "
        "other promotes keep taking them; two writers on one remote registry are not supported"
    )


def _claim(version_uri: str) -> str | None:
    """Write a marker of this promote into the version and list it: the marker's name when nothing
    else is there (the number is ours), else None (the marker deleted again)."""
    marker = f"{CLAIM_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    write_bytes(version_uri, marker, b"")
    if set(list_files(version_uri)) == {marker}:
        return marker
    delete_file(version_uri, marker)
    return None


def _publish(target: Path, uri: str, name: str, marker: str) -> None:
    """Upload the built version (``manifest.json`` last), drop the claim marker, move ``latest``."""
    from raytrade.models.registry import LATEST

    version_uri = join(uri, name, target.name)
    every = [p.relative_to(target).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
    upload_tree(target, version_uri, files=every, last=(MANIFEST,))
    delete_file(version_uri, marker)
    current = read_bytes(join(uri, name), LATEST)
    if current is None or not current.strip().isdigit() or int(current) < int(target.name):
        write_bytes(join(uri, name), LATEST, f"{target.name}\n".encode())


def _into_mirror(target: Path, uri: str, name: str) -> Path:
    """Move the published version into the mirror (or, when a reader mirrored it first, bring that
    copy up to date) and return the mirror's folder."""
    folder = cache_dir(uri) / name / target.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.rename(folder)  # replaces an empty folder a reader's listing made
    except OSError:
        if not folder.is_dir():
            raise
        _download_version(join(uri, name, target.name), folder)
    return folder
