"""A registry at a remote location (``s3://…``; ``replay.remote``): versions mirrored locally to be
read, built locally and uploaded to be published.

* Reading (:func:`mirror_registry`, called by ``models.registry.resolve`` for a URI): the remote's
  committed versions of the name (those whose ``manifest.json`` exists: it is uploaded last) and its
  ``latest`` are mirrored into the cache, and the version the reference names is downloaded (files
  the mirror lacks, exactly the remote's set); the local ``resolve`` then picks the folder, and
  ``models.registry_load.load`` verifies every file's sha256 against the manifest before anything
  is unpickled, as for a local registry.
* Publishing (:func:`write_version_at`): the existing ``write_version`` builds the next version in
  the mirror, then its files are uploaded, ``manifest.json`` last, then ``latest`` (never moved
  backwards). No lock exists on an object store: a version number that another writer published
  meanwhile is refused (one line), and two promoters on one remote registry are not supported.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from raytrade.envs.registry_ref import RegistryRefError, parse_registry_ref
from raytrade.models.manifest import MANIFEST
from raytrade.replay.remote import (
    RemoteError,
    cache_dir,
    download_tree,
    is_remote,
    join,
    list_files,
    read_bytes,
    redacted,
    upload_tree,
    write_bytes,
)


def committed_versions(registry: str, name: str) -> list[int]:
    """Versions of ``name`` at the remote ``registry`` whose manifest is uploaded, ascending."""
    found = []
    for rel in list_files(join(registry, name)):
        number, _, rest = rel.partition("/")
        if rest == MANIFEST and number.isascii() and number.isdigit():
            found.append(int(number))
    return sorted(found)


def _mirror_listing(registry: str, name: str, available: list[int]) -> Path:
    """The mirror's ``NAME`` folder holding a folder per remote version (so the local ``versions``
    lists them) and none the remote lacks (a failed upload's leftovers)."""
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
    download_tree(join(registry, name, folder.name), folder, exact=True)
    return root


def write_version_at(
    registry: str | os.PathLike[str],
    name: str,
    checkpoint: Path,
    record: Mapping[str, Any],
    module_id: str = "default_policy",
    hmac_key: SecretStr | None = None,
) -> Path:
    """``models.registry.write_version`` at a local registry or a remote one (see the module
    docstring); returns the new version's local folder."""
    from raytrade.models.registry import LATEST, check_name, write_version

    if not is_remote(registry):
        return write_version(Path(registry), name, checkpoint, record, module_id, hmac_key)
    uri = str(registry)
    check_name(name)
    folder = _mirror_listing(uri, name, committed_versions(uri, name))
    target = write_version(folder.parent, name, checkpoint, record, module_id, hmac_key)
    version_uri = join(uri, name, target.name)
    if list_files(version_uri):
        shutil.rmtree(target)
        raise RemoteError(
            f"version {target.name} of {name!r} appeared in {redacted(uri)} while this promote ran: "
            "two writers on one remote registry are not supported; promote again"
        )
    every = [p.relative_to(target).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
    upload_tree(target, version_uri, files=every, last=(MANIFEST,))
    current = read_bytes(join(uri, name), LATEST)
    if current is None or not current.strip().isdigit() or int(current) < int(target.name):
        write_bytes(join(uri, name), LATEST, f"{target.name}\n".encode())
    return target
