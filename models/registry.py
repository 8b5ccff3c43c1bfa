"""The policy registry: ``registry/NAME/VERSION/`` folders written by ``raytrade promote``.

Layout (one version)::

    registry/NAME/1/module/          RLModule checkpoint (RLModule.from_checkpoint), the module only
    registry/NAME/1/connectors/      env-to-module and module-to-env connector state (e.g. an
                                     observation filter's running mean/std; empty for our specs)
    registry/NAME/1/manifest.json    what produced it (see ``build_manifest``)
    registry/NAME/latest             text file holding the newest version number, e.g. ``2``

``latest`` is a one-line text file, not a symlink, so a registry survives object stores, zip files
and Windows. Versions are 1, 2, … and never reused; a version folder is written under a staging name
unique to its writer (pid and a random uuid) and renamed into place, so a reader never sees half a
version; the rename never replaces an existing version (a concurrent promote that lost the race takes
the next number), and ``latest`` is moved under a lock, never backwards. Names are checked whole
against ``envs.registry_ref.NAME_PATTERN`` and a resolved folder must lie under the registry root.

``manifest.json`` is :class:`models.manifest.Manifest` (typed, secrets scrubbed, validated when
written and when read); its ``files`` entry holds the sha256 of every other file of the version,
checked by :func:`verify_files` before anything of the version is unpickled.

The sha256s stop a changed file, not a writer who changes a file *and* its hash, and nothing
protects ``manifest.json`` itself (it holds the hashes): without a key, whoever can write the
registry can change a version's manifest (its symbols, env config, kill switch) unnoticed. With a
registry key (a secret only the promote step and the loaders hold), promote signs the whole manifest
(``signature``: an HMAC-SHA256 of its canonical form, every field but the MAC itself, file hashes
included: :func:`manifest_mac`); a loader holding the key checks it first (:func:`verify_mac`) and
refuses a version whose manifest differs in any field, and one without such a signature: unsigned,
or signed by the first scheme (``files_hmac``: name, number and file hashes only), which
:func:`models.registry_migrate.sign` re-signs. The key itself is never written anywhere in the
registry. The data fingerprint is
``replay.fingerprint.data_fingerprint``, the feature-spec hash a sha256 of the observed feature
columns, the loader's full column list and the observation layout.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.util
import json
import logging
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr, ValidationError

from raytrade.envs.registry_ref import NAME_PATTERN, RegistryRefError, parse_registry_ref
from raytrade.models import regular_file
from raytrade.models.manifest import (
    MAC_SCHEME,
    MANIFEST,
    Manifest,
    ManifestError,
    ManifestSignature,
    first_error,
    manifest_json,
)
from raytrade.replay.errors import InputError
from raytrade.replay.remote import is_remote

MODULE_DIR: Final = "module"
CONNECTORS_DIR: Final = "connectors"
LATEST: Final = "latest"
DEFAULT_REGISTRY: Final = "registry"
CLAIM_ATTEMPTS: Final = 20
"""How often a promote takes the next free version number when concurrent promotes took its pick."""
CODE_PACKAGES: Final = ("replay", "envs", "models", "tune_specs", "serve", "cluster")
"""The ``raytrade`` package folders whose ``.py`` sources :func:`code_fingerprint` hashes."""
log = logging.getLogger(__name__)


class RegistryError(InputError):
    """A name or version that is not in the registry (the message lists what is)."""


def check_name(name: str) -> str:
    """A policy name is a folder name: letters, digits, ``_ . -``, not starting with a symbol."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"policy name {name!r} must match {NAME_PATTERN.pattern}")
    return name


def versions(registry: Path, name: str) -> list[int]:
    """Versions of ``name`` in ascending order (empty when the name is unknown)."""
    folder = Path(registry) / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and _is_number(p.name))


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def migration_backup(version_dir: Path) -> Path:
    """Where ``raytrade registry migrate`` keeps a version's original folder while it swaps the
    migrated copy in (``models.registry_migrate``): ``NAME/.N.pre-migration``."""
    folder = Path(version_dir)
    return folder.with_name(f".{folder.name}.pre-migration")


def migrating_versions(registry: Path, name: str) -> list[int]:
    """Numbers of ``name`` whose original sits in a :func:`migration_backup` folder (a migration in
    its swap, or one interrupted there): taken, though ``versions`` does not list them."""
    folder = Path(registry) / name
    found = folder.glob(".*.pre-migration") if folder.is_dir() else []
    numbers = (p.name.removeprefix(".").removesuffix(".pre-migration") for p in found if p.is_dir())
    return sorted(int(n) for n in numbers if _is_number(n))


def names(registry: Path) -> list[str]:
    """Policy names that hold at least one version."""
    root = Path(registry)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and versions(root, p.name))


def resolve(registry: str | os.PathLike[str], ref: str) -> Path:
    """The folder of ``NAME`` (its ``latest``) or ``NAME@VERSION``; ``RegistryError`` lists what exists.

    A remote ``registry`` (``s3://…``) is read from a local mirror holding the version
    (``models.registry_remote.mirror_registry``); the folder returned is the mirror's."""
    if is_remote(registry):
        from raytrade.models.registry_remote import mirror_registry

        registry = mirror_registry(str(registry), ref)
    root = Path(registry)
    try:
        parsed = parse_registry_ref(ref)
    except RegistryRefError as exc:
        raise RegistryError(str(exc)) from None
    name = parsed.name
    available = versions(root, name)
    migrating = migrating_versions(root, name)
    if not available and not root.is_dir():
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise RegistryError(
            f"no policy {name!r}: registry {str(root)!r} is not a folder ({what}; name the registry "
            "with --registry)"
        )
    if not available and not migrating:
        known = names(root)
        raise RegistryError(
            f"no policy {name!r} in registry {str(root)!r}; available: {', '.join(known) or 'none'}"
        )
    if parsed.version is None:
        latest = root / name / LATEST
        number = _read_latest(latest) if latest.is_file() else max([*available, *migrating])
    else:
        number = parsed.version
    if number not in available and number in migrating:
        raise RegistryError(
            f"{name}@{number} is being migrated, or its migration was interrupted (the original is in "
            f"{str(migration_backup(root / name / str(number)))!r}): run `raytrade registry migrate "
            f"--registry {root}` to restore it"
        )
    if number not in available:
        raise RegistryError(f"no version {number} of {name!r}; available: {', '.join(map(str, available))}")
    folder = root / name / str(number)
    real = folder.resolve()
    if not real.is_relative_to(root.resolve()):  # a version folder linked out of the registry
        raise RegistryError(f"{name}@{number} ({str(folder)!r}) leads outside the registry {str(root)!r}")
    if real != root.resolve() / name / str(number):  # linked to another version: its signature passes
        raise RegistryError(
            f"{name}@{number} ({str(folder)!r}) is a symbolic link (to {str(real)!r}): a version is a "
            "folder of its own"
        )
    return folder


def _read_latest(path: Path) -> int:
    text = path.read_text().strip()
    if not _is_number(text):
        raise RegistryError(f"{str(path)!r} holds {text[:40]!r}, not a version number")
    return int(text)


# ------------------------------------------------------------------------------ manifest parts


def feature_spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a feature spec (columns observed, loader columns, layout)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def code_version(repo: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the code (``+dirty`` with uncommitted changes), ``unknown`` outside git."""
    where = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha or "unknown"


def sources_sha256(folders: Mapping[str, Path]) -> str:
    """SHA-256 (hex) of the ``.py`` files under each of ``folders`` (name -> folder): for every file,
    in the order of its path ``NAME/sub/file.py`` (POSIX, relative to its folder, prefixed with the
    folder's name), that path, a NUL, its length in bytes, a NUL and its bytes. The path and length
    keep two different trees from hashing alike (a file renamed or moved, bytes shifted between
    files); nothing but the sources is read (no ``__pycache__``, no config files, no git)."""
    files = sorted(
        (f"{name}/{path.relative_to(folder).as_posix()}", path)
        for name, folder in folders.items()
        for path in folder.rglob("*.py")
        if path.is_file()
    )
    digest = hashlib.sha256()
    for rel, path in files:
        data = path.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """:func:`sources_sha256` of the ``raytrade`` package folders (:data:`CODE_PACKAGES`) where Python
    imports them from (``importlib.util.find_spec``, which runs none of them: no upward import), once
    per process.

    Why next to :func:`code_version`: that one names a commit, not the content: every dirty tree of a
    commit shares one ``+dirty`` string and an installed wheel says ``unknown``, so it cannot tell two
    searches' code apart; this one can (``cluster.run_reuse`` reuses a search only under equal ones).
    Hashed once per process, at the first call: every search and the document of one experiment name
    one value (sources edited while a process runs are not seen by it)."""
    folders = {}
    for name in CODE_PACKAGES:
        spec = importlib.util.find_spec(f"raytrade.{name}")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"raytrade.{name} is not an importable package")
        folders[name] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return sources_sha256(folders)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a policy's behaviour depends on."""
    import platform

    import numpy
    import pandas
    import pyarrow
    import ray
    import torch

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
    }


# ------------------------------------------------------------------------------ file hashes


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, refused (``RegistryError``) unless it is a regular file
    and no symbolic link: a registry version holds regular files only
    (:func:`models.regular_file.open_regular`: no link followed, a FIFO never blocks)."""
    return regular_file.open_regular(path, RegistryError)


def copy_regular(path: Path, target: Path) -> str:
    """Copy the regular file ``path`` (:func:`open_regular`) to ``target``, read once, in blocks;
    returns the sha256 hex of the bytes copied."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 hex of one file's bytes (a regular file, no link: :func:`open_regular`)."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def version_entries(version_dir: Path) -> list[str]:
    """Every regular file of a version folder but ``manifest.json`` (POSIX paths relative to it,
    sorted). A symbolic link anywhere inside (to a file or a folder) and anything that is neither a
    folder nor a regular file (a FIFO, a socket, a device) is refused (``RegistryError``, naming it):
    a link is not hashed for what it will read later, and a folder link was not even listed, while
    the loader followed it into a pickle."""
    root = Path(version_dir)
    files = []
    for here, dirs, names in os.walk(root, followlinks=False):
        for entry in [*dirs, *names]:
            path = Path(here) / entry
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise RegistryError(
                    f"{str(path)!r} is a symbolic link: a registry version holds regular files only"
                )
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise RegistryError(
                    f"{str(path)!r} is not a regular file: a registry version holds regular files only"
                )
        files += [(Path(here) / n).relative_to(root).as_posix() for n in names]
    return sorted(f for f in files if f != MANIFEST)


def version_file_hashes(version_dir: Path) -> dict[str, str]:
    """sha256 of every file of a version folder but ``manifest.json`` (POSIX paths relative to it;
    :func:`version_entries`' refusals first)."""
    root = Path(version_dir)
    return {rel: file_sha256(root / rel) for rel in version_entries(root)}


def verify_files(version_dir: Path, manifest: Manifest) -> None:
    """Refuse (``RegistryError``, naming the file) a version whose files differ from the sha256s its
    manifest recorded: a missing, added or changed file. Versions promoted before the manifest held
    hashes (``files`` None) have nothing to check against: a warning says so (under a registry key
    :func:`verify_mac` refuses them first)."""
    where = f"{manifest.name}@{manifest.version} ({str(version_dir)!r})"
    if manifest.files is None:
        log.warning(
            "%s records no file sha256s (promoted before they were): its files are NOT checked", where
        )
        return
    actual = version_file_hashes(version_dir)
    for rel in sorted(set(manifest.files) | set(actual)):
        if rel not in actual:
            raise RegistryError(f"{where}: file {rel!r} listed in the manifest is missing")
        if rel not in manifest.files:
            raise RegistryError(f"{where}: file {rel!r} is not listed in the manifest")
        if actual[rel] != manifest.files[rel]:
            raise RegistryError(f"{where}: file {rel!r} does not match its sha256 in the manifest")


def canonical_manifest(manifest: Manifest) -> bytes:
    """The bytes :func:`manifest_mac` signs: the MAC scheme and the manifest without ``signature``,
    as JSON with sorted keys, no spaces, ASCII only and no NaN. Fields at their default are left out
    (a field added to :class:`Manifest` later, with a default, does not void earlier signatures; a
    field at its default reads back the same). Floats are written as Python's shortest round-trip
    repr, so the form of a manifest read back from ``manifest.json`` is the form that was signed."""
    body = manifest.model_dump(mode="json", exclude={"signature"}, exclude_defaults=True)
    return json.dumps(
        {"scheme": MAC_SCHEME, "manifest": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode()


def manifest_mac(manifest: Manifest, key: SecretStr) -> str:
    """HMAC-SHA256 (hex) under ``key`` of :func:`canonical_manifest`: every field of the manifest
    (name, version, file hashes, data symbols, env config, …) but its signature."""
    return hmac.new(key.get_secret_value().encode(), canonical_manifest(manifest), hashlib.sha256).hexdigest()


def sign_manifest(manifest: Manifest, key: SecretStr) -> Manifest:
    """``manifest`` signed under ``key`` (:class:`ManifestSignature`, a first-scheme ``files_hmac``
    dropped). The MAC is computed on the manifest as it reads back from its JSON, so what a loader
    parses is exactly what was signed. ``RegistryError`` for a manifest without file hashes."""
    if manifest.files is None:
        raise RegistryError(
            f"{manifest.name}@{manifest.version}: a manifest without file sha256s cannot be signed"
        )
    unsigned = Manifest.model_validate_json(manifest_json(manifest.model_copy(update={"files_hmac": None})))
    signature = ManifestSignature(scheme=MAC_SCHEME, hmac=manifest_mac(unsigned, key))
    return unsigned.model_copy(update={"signature": signature})


def files_mac(name: str, version: int, files: Mapping[str, str], key: SecretStr) -> str:
    """The first scheme's HMAC (``files_hmac``, no longer written): name, number and file sha256s
    only (canonical JSON: sorted keys, no spaces). Used to check an old version before re-signing it
    (``models.registry_migrate.sign``)."""
    message = json.dumps(
        {"name": name, "version": version, "files": dict(files)}, sort_keys=True, separators=(",", ":")
    )
    return hmac.new(key.get_secret_value().encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_mac(
    version_dir: Path,
    manifest: Manifest,
    key: SecretStr | None,
    registry: str | os.PathLike[str] | None = None,
) -> None:
    """With a registry ``key``: refuse (``RegistryError``, one line naming the version) a version
    whose manifest records no file hashes, carries no signature or only the first scheme's
    ``files_hmac`` (the message names ``raytrade registry sign``), whose signature does not match
    the manifest under the key (any field edited, or signed with another key), or whose manifest
    names another folder. Without a key there is nothing to check (the sha256s alone do not protect
    the manifest). Run it before :func:`verify_files` and before any unpickling; ``registry`` only
    goes into the message."""
    if key is None:
        return
    folder = Path(version_dir)
    where = f"{manifest.name}@{manifest.version} ({str(folder)!r})"
    if manifest.files is None:
        raise RegistryError(
            f"{where} records no file sha256s (promoted before they were) and a registry key is set: "
            "promote it again with the key"
        )
    if manifest.signature is None and manifest.files_hmac is not None:
        ref = f"{folder.parent.name}@{folder.name}"
        raise RegistryError(
            f"{where} is signed by the old scheme (file hashes only, not the manifest) and a registry key "
            f"is set: check its manifest, then run `raytrade registry sign --registry "
            f"{registry if registry is not None else folder.parent.parent} {ref}`, or promote it again"
        )
    if manifest.signature is None:
        raise RegistryError(
            f"{where} carries no HMAC and a registry key is set: promote it again with the key"
        )
    if not hmac.compare_digest(manifest_mac(manifest, key), manifest.signature.hmac):
        raise RegistryError(
            f"{where}: manifest.json does not match its HMAC under the registry key (the manifest edited, "
            "or signed with another key)"
        )
    if (folder.parent.name, folder.name) != (manifest.name, str(manifest.version)):
        raise RegistryError(
            f"{where}: the manifest sits in the folder of {folder.parent.name}@{folder.name} (a version "
            "copied under another name or number)"
        )


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (temp file, fsync, rename)."""
    path = Path(version_dir) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    with open(tmp, "w") as fh:
        fh.write(manifest_json(manifest))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


# ------------------------------------------------------------------------------ writing


def write_version(
    registry: Path,
    name: str,
    checkpoint: Path,
    record: Mapping[str, Any],
    module_id: str = "default_policy",
    hmac_key: SecretStr | None = None,
    *,
    after: int = 0,
) -> Path:
    """Copy the module and connector state out of an Algorithm checkpoint as the next version.

    ``checkpoint`` is an RLlib ``Algorithm.save_to_path`` folder (what Tune keeps per trial).
    ``record`` is every :class:`Manifest` field but ``name``, ``version``, ``files`` and
    ``signature``, which are set here (the signature only with ``hmac_key``: :func:`sign_manifest`); it is
    validated (secrets scrubbed) before anything is copied, so a bad record leaves the registry
    untouched. Returns the new version folder; ``latest`` is updated last. The number taken is past
    the registry's versions and past ``after`` (a remote registry's highest number in use:
    ``models.registry_remote``).
    """
    check_name(name)
    module_src = checkpoint / "learner_group" / "learner" / "rl_module" / module_id
    if not module_src.is_dir():
        raise FileNotFoundError(
            f"{str(checkpoint)!r} holds no RLModule {module_id!r} (not an RLlib checkpoint?)"
        )
    folder = Path(registry) / name
    number = _next_number(registry, name, after)
    try:
        manifest = Manifest.model_validate({**record, "name": name, "version": number})
    except ValidationError as exc:
        raise ManifestError(f"manifest of {name}@{number}: {first_error(exc)}") from None
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(folder)
    # one staging folder per writer: concurrent promotes never share (or delete) each other's files
    staging = folder / f".staging-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        shutil.copytree(module_src, staging / MODULE_DIR)
        (staging / CONNECTORS_DIR).mkdir()
        for connector in ("env_to_module_connector", "module_to_env_connector"):
            src = checkpoint / "env_runner" / connector
            if src.is_dir():
                shutil.copytree(src, staging / CONNECTORS_DIR / connector)
        files = version_file_hashes(staging)
        for _ in range(CLAIM_ATTEMPTS):
            number = _next_number(registry, name, after)
            numbered = manifest.model_copy(update={"version": number, "files": files, "files_hmac": None})
            write_manifest(staging, numbered if hmac_key is None else sign_manifest(numbered, hmac_key))
            target = folder / str(number)
            if _claim(staging, target):
                _update_latest(folder)
                return target
        raise RegistryError(
            f"could not claim a version number of {name!r} in {CLAIM_ATTEMPTS} attempts: other promotes "
            "keep taking them; promote again"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone when claimed; a failed write leaves nothing


STALE_STAGING_S: Final = 24 * 3600
"""A staging folder untouched this long is a promote that was killed (SIGKILL, a lost node: its own
clean-up never ran); the next promote of the name removes it. A promote takes minutes, and a pid
cannot tell a writer on another machine of a shared registry from a dead one, so age decides."""


def _remove_stale_staging(folder: Path, now: float | None = None) -> None:
    """Remove the staging folders of ``folder`` (one model's) older than :data:`STALE_STAGING_S`."""
    now = time.time() if now is None else now
    for staging in folder.glob(".staging-*"):
        try:
            age = now - staging.lstat().st_mtime
        except FileNotFoundError:  # claimed or removed meanwhile
            continue
        if age > STALE_STAGING_S and staging.is_dir() and not staging.is_symlink():
            log.warning("removing %s, a promote's staging folder untouched for %.0f h", staging, age / 3600)
            shutil.rmtree(staging, ignore_errors=True)


def _next_number(registry: Path, name: str, after: int) -> int:
    """The number a new version of ``name`` takes: past every version, every version a migration has
    moved aside (:func:`migrating_versions`: its number is still its own) and ``after``."""
    return max([after, *versions(registry, name), *migrating_versions(registry, name)]) + 1


def _claim(staging: Path, target: Path) -> bool:
    """Rename ``staging`` to ``target`` unless ``target`` exists (another writer took the number):
    a version folder is never replaced."""
    if target.exists():
        return False
    try:
        staging.rename(target)  # POSIX: fails on an existing non-empty folder, which a version is
    except OSError:
        if target.exists():
            return False
        raise
    return True


def _update_latest(folder: Path) -> None:
    """Point ``latest`` at the newest version, under a lock: concurrent writers never move it back."""
    import fcntl

    with open(folder / f".{LATEST}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        number = versions(folder.parent, folder.name)[-1]
        tmp = folder / f".{LATEST}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(f"{number}\n")
        tmp.replace(folder / LATEST)
