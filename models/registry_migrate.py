"""Registry versions promoted before the package rename: detect them, and rewrite their pickles.

The project's folders used to install as top-level packages (``models``, ``envs``, …); they are now
``raytrade.models``, ``raytrade.envs``, …. A version promoted before the change holds pickles that
name the old modules: RLlib's ``class_and_ctor_args.pkl`` stores the RLModule class by reference
(``models.ppo_mlp.PPOMLPModule``), and connector ``state.pkl`` files may too. Unpickling those
today fails deep inside RLlib with ``No module named 'models'`` — or, worse, succeeds against a stray
top-level ``models`` folder on ``sys.path`` and builds a second copy of the class.

* :func:`check_current_names` scans a version's pickles *without executing them* (``pickletools``
  opcodes: ``GLOBAL``/``STACK_GLOBAL`` module names and cloudpickle ``subimport`` arguments) and
  refuses an old version with one line naming it and the migration command.
* :func:`migrate_version` rewrites such a version: each affected pickle is loaded with an unpickler
  that maps ``<old>.x`` to ``raytrade.<old>.x`` and dumped again with ``ray.cloudpickle`` (what RLlib
  writes). The version's files are checked against its manifest's sha256s first (a version changed
  since promotion is refused, never re-hashed as migrated). The work happens in a copy of the version
  folder; the manifest's sha256s are recomputed when it records them; then a marker beside the
  folder records the copy's fingerprint, the copy replaces the original by two renames, and the
  original is deleted only after the new folder is in place. Between the renames the number is held
  by the original's backup (``models.registry.migrating_versions``: a promote never takes it). An
  interrupted migration is repaired by the next run (:func:`_recover`): the original is put back, or
  deleted only when the folder in its place is the marker's copy. Loading executes pickles exactly as
  ``models.load`` would, so migrate only versions you would load. A signed version is migrated only
  with the registry key: its signature is checked first and the rewritten manifest signed again
  (without the key it is refused, unchanged).

Versions signed by the first MAC scheme (``files_hmac``: name, number and file hashes, not the rest
of the manifest) are refused by a loader holding the registry key. :func:`sign` re-signs them with
the whole-manifest scheme (``models.registry.sign_manifest``) once their old MAC and their files
check out under the key. It vouches for the rest of the manifest as it stands (the old scheme never
protected it), so check a manifest before re-signing it. Unsigned versions are not signed here:
nothing shows they are what was promoted; promote them again with the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import pickletools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from raytrade.models.manifest import MANIFEST, Manifest, read_manifest
from raytrade.models.registry import (
    DEFAULT_REGISTRY,
    RegistryError,
    file_sha256,
    files_mac,
    migrating_versions,
    migration_backup,
    names,
    resolve,
    sign_manifest,
    verify_files,
    verify_mac,
    version_entries,
    version_file_hashes,
    versions,
    write_manifest,
)
from raytrade.models.regular_file import read_regular

RENAMED_PACKAGES: Final = ("replay", "envs", "models", "tune_specs", "serve", "cluster")
"""Top-level package names of the folders before they moved under ``raytrade``."""
NEW_ROOT: Final = "raytrade"
_STRING_OPS: Final = frozenset(
    {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_PUT_OPS: Final = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS: Final = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NO_PUSH_OPS: Final = frozenset({"PROTO", "FRAME", "MEMOIZE", "STOP", *_PUT_OPS})
_SUBIMPORT: Final = frozenset(
    {("ray.cloudpickle.cloudpickle", "subimport"), ("cloudpickle.cloudpickle", "subimport")}
)


class LegacyVersionError(RegistryError):
    """A registry version whose pickles name modules from before the package rename."""


def is_renamed(module: str) -> bool:
    """True for a module path under one of the old top-level package names (``models.ppo_mlp``)."""
    return module.split(".", 1)[0] in RENAMED_PACKAGES


def renamed(module: str) -> str:
    """``models.ppo_mlp`` -> ``raytrade.models.ppo_mlp``; other modules unchanged."""
    return f"{NEW_ROOT}.{module}" if is_renamed(module) else module


def module_refs(data: bytes) -> set[str]:
    """Module names a pickle imports (``GLOBAL``/``INST``/``STACK_GLOBAL`` and cloudpickle
    ``subimport`` arguments), read from its opcodes without executing anything."""
    refs: set[str] = set()
    pushed: list[Any] = []
    memo: dict[int, Any] = {}
    subimport_next = False
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            module, name = str(arg).split(" ", 1)
            refs.add(module)
            subimport_next = (module, name) in _SUBIMPORT
            pushed.append(None)
        elif op.name == "STACK_GLOBAL":
            mod, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            if isinstance(mod, str):
                refs.add(mod)
            subimport_next = (mod, attr) in _SUBIMPORT
            pushed.append(None)
        elif op.name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            if subimport_next and isinstance(value, str):
                refs.add(value)
                subimport_next = False
            pushed.append(value)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in _PUT_OPS:
            memo[int(str(arg))] = pushed[-1] if pushed else None
        elif op.name in _GET_OPS:
            value = memo.get(int(str(arg)))
            if subimport_next and isinstance(value, str):
                refs.add(value)
                subimport_next = False
            pushed.append(value)
        elif op.name not in _NO_PUSH_OPS:
            pushed.append(None)
    return refs


def pickle_files(version_dir: Path) -> list[Path]:
    """The pickles of a version folder (RLlib's ``*.pkl``: class/ctor args, module and connector
    state). A symbolic link or special file anywhere in the folder is refused (``RegistryError``,
    ``version_entries``): a linked pickle would be read, and rewritten, from outside the version."""
    root = Path(version_dir)
    return [root / rel for rel in version_entries(root) if rel.endswith(".pkl")]


def legacy_refs(version_dir: Path) -> dict[Path, list[str]]:
    """Pickle -> the old-name modules it imports (only pickles that have any)."""
    found = {}
    for path in pickle_files(version_dir):
        old = sorted(m for m in module_refs(path.read_bytes()) if is_renamed(m))
        if old:
            found[path] = old
    return found


def check_current_names(version_dir: Path, registry: str | os.PathLike[str] = DEFAULT_REGISTRY) -> None:
    """Refuse (:class:`LegacyVersionError`, one line) a version written before the package rename."""
    old = legacy_refs(version_dir)
    if old:
        folder = Path(version_dir)
        ref = f"{folder.parent.name}@{folder.name}"
        first = next(iter(old.values()))[0]
        raise LegacyVersionError(
            f"registry version {ref} was promoted before the package rename (its pickles import "
            f"{first!r}); run `raytrade registry migrate --registry {registry} {ref}` or promote it again"
        )


class _RenamingUnpickler(pickle.Unpickler):
    """An unpickler that imports ``raytrade.<old>.x`` wherever a pickle names ``<old>.x``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SUBIMPORT:
            original = super().find_class(module, name)
            return lambda mod_name: original(renamed(mod_name))
        return super().find_class(renamed(module), name)


def rewrite_pickle(src: Path, dst: Path) -> None:
    """Load ``src`` with old module names mapped to ``raytrade.*`` and write it to ``dst`` (fsynced)."""
    from ray import cloudpickle

    with open(src, "rb") as fh:
        obj = _RenamingUnpickler(fh).load()
    with open(dst, "wb") as fh:
        cloudpickle.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


MARKER_MAX_BYTES: Final = 256
"""The largest migration marker read (it holds one sha256 hex)."""


def _migration_paths(version_dir: Path) -> tuple[Path, Path, Path]:
    """(staging copy, backup of the original, marker) of a version's migration, beside its folder.
    The marker holds the :func:`version_fingerprint` of the migrated copy, written before the swap."""
    folder = Path(version_dir)
    staging = folder.with_name(f".{folder.name}.migrating")
    return staging, migration_backup(folder), folder.with_name(f".{folder.name}.migrated")


def version_fingerprint(version_dir: Path) -> str:
    """sha256 (hex) of a version folder's ``manifest.json`` and of every other file's sha256 (regular
    files only: ``version_entries``): equal only for folders holding the same bytes."""
    folder = Path(version_dir)
    record = {"manifest": file_sha256(folder / MANIFEST), "files": version_file_hashes(folder)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _is_migrated_copy(version_dir: Path, marker: Path) -> bool:
    """True when ``version_dir`` is the copy the migration that wrote ``marker`` swapped in."""
    if not os.path.lexists(marker):
        return False
    recorded = read_regular(marker, MARKER_MAX_BYTES, RegistryError).decode("ascii", "replace").strip()
    return hmac.compare_digest(recorded, version_fingerprint(version_dir))


def _recover(version_dir: Path) -> None:
    """Finish or undo an interrupted swap. The original (the backup) is restored when the version
    folder is gone, and deleted only when the folder present is provably its migrated copy (the
    marker's fingerprint); anything else there (a promote that took the number meanwhile) is refused
    (``RegistryError``, one line) with both folders left as they are: the only copy of a version is
    never deleted."""
    folder = Path(version_dir)
    staging, backup, marker = _migration_paths(folder)
    if backup.is_dir():
        if not os.path.lexists(folder):
            backup.rename(folder)  # interrupted between the renames: put the original back
        elif _is_migrated_copy(folder, marker):
            shutil.rmtree(backup)  # the migrated copy is in place; the original only remained
        else:
            raise RegistryError(
                f"{folder.parent.name}@{folder.name}: an interrupted migration left the original in "
                f"{str(backup)!r}, and {str(folder)!r} holds another version (not its migrated copy): "
                "nothing deleted; move one of them to a free number by hand"
            )
    shutil.rmtree(staging, ignore_errors=True)
    marker.unlink(missing_ok=True)


def _write_marker(marker: Path, fingerprint: str) -> None:
    """Write the migration marker (fsynced: it must exist before the swap it vouches for)."""
    with open(marker, "w") as fh:
        fh.write(f"{fingerprint}\n")
        fh.flush()
        os.fsync(fh.fileno())


def migrate_version(version_dir: Path, key: SecretStr | None = None) -> list[str]:
    """Rewrite a version's old-name pickles; returns their paths relative to the version (empty when
    nothing needed it). A manifest that does not validate is refused first (``ManifestError`` naming
    the file and the field), whether or not the pickles need rewriting: a version no loader accepts
    is never reported up to date. Its files are then checked against the manifest's sha256s
    (``verify_files``, ``RegistryError`` naming the file) before any pickle is read, and the copy that
    is unpickled is checked again: a file changed after promotion is never unpickled, nor re-hashed
    into the manifest as if it were the promoted one. The manifest's ``files`` sha256s are recomputed
    when it has them; a signed version needs the registry ``key``: its signature is checked before and
    made again after."""
    folder = Path(version_dir)
    _recover(folder)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    old = legacy_refs(folder)
    if not old:
        return []
    signed = manifest.signature is not None or manifest.files_hmac is not None
    if signed:
        if key is None:
            raise RegistryError(
                f"{folder.parent.name}@{folder.name} is signed: migrate it with the registry key set "
                "(RAYTRADE_REGISTRY_HMAC_KEY) so it is signed again, or promote it again"
            )
        check_signed(folder, manifest, key)
    staging, backup, marker = _migration_paths(folder)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, symlinks=True)
    if manifest.files is not None:
        verify_files(staging, manifest)  # the copy is what is unpickled and re-hashed
    for path in old:
        rel = path.relative_to(folder)
        tmp = staging / rel.with_name(f".{rel.name}.tmp")
        rewrite_pickle(staging / rel, tmp)
        tmp.replace(staging / rel)
    left = legacy_refs(staging)
    if left:
        shutil.rmtree(staging)
        raise LegacyVersionError(
            f"migration of {str(folder)!r} left old module names in {sorted(map(str, left))}"
        )
    if manifest.files is not None:
        rehashed = manifest.model_copy(update={"files": version_file_hashes(staging)})
        write_manifest(staging, sign_manifest(rehashed, key) if signed and key is not None else rehashed)
    _write_marker(marker, version_fingerprint(staging))
    folder.rename(backup)  # from here until the next rename the number is taken by the backup alone
    staging.rename(folder)
    shutil.rmtree(backup)
    marker.unlink()
    return [str(p.relative_to(folder)) for p in old]


def check_signed(version_dir: Path, manifest: Manifest, key: SecretStr) -> None:
    """Refuse (``RegistryError``, one line) a version that is not signed under ``key`` by either
    scheme, or whose files do not match its sha256s: the current scheme as a loader checks it
    (``verify_mac``); the first (``files_hmac``) over name, number and file hashes, in its folder."""
    folder = Path(version_dir)
    where = f"{manifest.name}@{manifest.version} ({str(folder)!r})"
    if manifest.signature is not None or manifest.files_hmac is None or manifest.files is None:
        verify_mac(folder, manifest, key)  # the current scheme, or the one-line refusal of no MAC
    elif not hmac.compare_digest(
        files_mac(manifest.name, manifest.version, manifest.files, key), manifest.files_hmac
    ):
        raise RegistryError(
            f"{where}: its old-scheme HMAC does not match the registry key (file hashes edited, or "
            "promoted with another key): promote it again"
        )
    if (folder.parent.name, folder.name) != (manifest.name, str(manifest.version)):
        raise RegistryError(f"{where}: the manifest sits in the folder of {folder.parent.name}@{folder.name}")
    verify_files(folder, manifest)


def sign_version(version_dir: Path, key: SecretStr) -> str:
    """Re-sign a version signed by the first MAC scheme with the whole-manifest scheme, after
    checking its old MAC and its files under ``key`` (:func:`check_signed`); returns what was done.
    A version already signed (and valid) is left alone; an unsigned one, one without file sha256s or
    one that does not check out is refused (``RegistryError``, one line)."""
    folder = Path(version_dir)
    manifest = read_manifest(folder)
    if manifest.signature is None and manifest.files_hmac is None:
        raise RegistryError(
            f"{manifest.name}@{manifest.version} ({str(folder)!r}) carries no HMAC: nothing shows its "
            "manifest is the one promoted; promote it again with the key"
        )
    check_signed(folder, manifest, key)
    if manifest.signature is not None:
        return "up to date"
    write_manifest(folder, sign_manifest(manifest, key))
    return "re-signed (old MAC and files verified; check its manifest, which the old MAC did not cover)"


def sign(registry: Path, key: SecretStr, ref: str | None = None) -> dict[str, str | RegistryError]:
    """Re-sign the versions ``ref`` names (see :func:`versions_to_migrate`) with :func:`sign_version`:
    ``NAME@VERSION`` -> what was done, or the error that refused that version (the others go on)."""
    done: dict[str, str | RegistryError] = {}
    for folder in list(versions_to_migrate(registry, ref)):
        try:
            done[f"{folder.parent.name}@{folder.name}"] = sign_version(folder, key)
        except RegistryError as exc:
            done[f"{folder.parent.name}@{folder.name}"] = exc
    return done


def versions_to_migrate(registry: Path, ref: str | None) -> Iterator[Path]:
    """Version folders named by ``ref``: ``NAME@VERSION`` one, ``NAME`` every version of the name,
    None every version of the registry."""
    from raytrade.envs.registry_ref import parse_registry_ref

    if ref is None:
        for name in names(registry):
            yield from (Path(registry) / name / str(v) for v in versions(registry, name))
        return
    parsed = parse_registry_ref(ref)
    if parsed.version is not None:
        yield resolve(registry, ref)
        return
    resolve(registry, ref)  # an unknown name: RegistryError listing what exists
    yield from (Path(registry) / parsed.name / str(v) for v in versions(registry, parsed.name))


def recover_interrupted(registry: Path) -> None:
    """Repair every version folder an interrupted migration left renamed away (see :func:`_recover`)."""
    root = Path(registry)
    for name in sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for number in migrating_versions(root, name):
            _recover(root / name / str(number))


def migrate(registry: Path, ref: str | None = None, key: SecretStr | None = None) -> dict[str, list[str]]:
    """Migrate the versions ``ref`` names (see :func:`versions_to_migrate`): ``NAME@VERSION`` ->
    the pickles rewritten (empty for a version that needed nothing); ``key``: the registry key,
    needed for signed versions (:func:`migrate_version`). Every named version's manifest is validated
    before any is migrated: one that does not validate refuses the whole run (``ManifestError``
    naming the file and the field) with nothing rewritten."""
    recover_interrupted(registry)
    folders = list(versions_to_migrate(registry, ref))
    for folder in folders:
        read_manifest(folder)
    return {f"{v.parent.name}@{v.name}": migrate_version(v, key) for v in folders}
