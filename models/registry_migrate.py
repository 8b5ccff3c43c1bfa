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
  writes). The work happens in a copy of the version folder; the manifest's sha256s are recomputed
  when it records them; then the copy replaces the original by two renames, and the original is
  deleted only after the new folder is in place. An interrupted migration is repaired by the next
  run (:func:`_recover`). Loading executes pickles exactly as ``models.load`` would, so migrate only
  versions you would load.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from raytrade.models.manifest import read_manifest
from raytrade.models.registry import (
    DEFAULT_REGISTRY,
    RegistryError,
    names,
    resolve,
    version_file_hashes,
    versions,
    write_manifest,
)

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
    """The pickles of a version folder (RLlib's ``*.pkl``: class/ctor args, module and connector state)."""
    return sorted(p for p in Path(version_dir).rglob("*.pkl") if p.is_file())


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


def _staging(version_dir: Path) -> tuple[Path, Path]:
    folder = Path(version_dir)
    return folder.with_name(f".{folder.name}.migrating"), folder.with_name(f".{folder.name}.pre-migration")


def _recover(version_dir: Path) -> None:
    """Finish or undo an interrupted swap: the original is restored if the version folder is gone."""
    staging, backup = _staging(version_dir)
    if backup.is_dir():
        if Path(version_dir).is_dir():
            shutil.rmtree(backup)  # the new folder is in place; the original only remained
        else:
            backup.rename(version_dir)  # interrupted between the renames: put the original back
    shutil.rmtree(staging, ignore_errors=True)


def migrate_version(version_dir: Path) -> list[str]:
    """Rewrite a version's old-name pickles; returns their paths relative to the version (empty when
    nothing needed it). The manifest's ``files`` sha256s are recomputed when it has them."""
    folder = Path(version_dir)
    _recover(folder)
    old = legacy_refs(folder)
    if not old:
        return []
    manifest = read_manifest(folder)
    staging, backup = _staging(folder)
    shutil.copytree(folder, staging)
    for path in old:
        rel = path.relative_to(folder)
        tmp = staging / rel.with_name(f".{rel.name}.tmp")
        rewrite_pickle(path, tmp)
        tmp.replace(staging / rel)
    left = legacy_refs(staging)
    if left:
        shutil.rmtree(staging)
        raise LegacyVersionError(
            f"migration of {str(folder)!r} left old module names in {sorted(map(str, left))}"
        )
    if manifest.files is not None:
        write_manifest(staging, manifest.model_copy(update={"files": version_file_hashes(staging)}))
    folder.rename(backup)
    staging.rename(folder)
    shutil.rmtree(backup)
    return [str(p.relative_to(folder)) for p in old]


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
    for backup in sorted(root.glob("*/.*.pre-migration")) if root.is_dir() else []:
        number = backup.name.removeprefix(".").removesuffix(".pre-migration")
        if number.isdigit():
            _recover(backup.parent / number)


def migrate(registry: Path, ref: str | None = None) -> dict[str, list[str]]:
    """Migrate the versions ``ref`` names (see :func:`versions_to_migrate`): ``NAME@VERSION`` ->
    the pickles rewritten (empty for a version that needed nothing)."""
    recover_interrupted(registry)
    return {f"{v.parent.name}@{v.name}": migrate_version(v) for v in list(versions_to_migrate(registry, ref))}
