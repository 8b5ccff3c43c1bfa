"""Registry versions pickled before the package rename: refused in one line, then migrated."""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from ray import cloudpickle

from raytrade.cluster.cli import main
from raytrade.envs.registry_ref import RegistryRef
from raytrade.models.manifest import Manifest, read_manifest
from raytrade.models.registry import verify_files, version_file_hashes, write_manifest
from raytrade.models.registry_migrate import (
    LegacyVersionError,
    check_current_names,
    legacy_refs,
    migrate,
    module_refs,
)
from tests.test_registry import KEY, _promote, manifest_record


@contextlib.contextmanager
def old_module_names(*classes: type) -> Iterator[None]:
    """Pickle ``classes`` as the pre-rename install did: under ``models.x`` instead of
    ``raytrade.models.x`` (the old names are registered in ``sys.modules`` meanwhile)."""
    saved = [(cls, cls.__module__) for cls in classes]
    aliases = {}
    for cls, module in saved:
        old = module.removeprefix("raytrade.")
        parts = old.split(".")
        for i in range(1, len(parts) + 1):
            aliases[".".join(parts[:i])] = sys.modules[f"raytrade.{'.'.join(parts[:i])}"]
        cls.__module__ = old
    sys.modules.update(aliases)
    try:
        yield
    finally:
        for cls, module in saved:
            cls.__module__ = module
        for name in aliases:
            sys.modules.pop(name, None)


def legacy_dump(obj: Any, path: Path, *classes: type) -> None:
    with old_module_names(*classes), open(path, "wb") as fh:
        cloudpickle.dump(obj, fh)


def test_module_refs_reads_old_names_without_unpickling() -> None:
    with old_module_names(RegistryRef):
        modern = cloudpickle.dumps(RegistryRef(name="a", version=1))  # STACK_GLOBAL (protocol 5)
        classic = pickle.dumps(RegistryRef, protocol=2)  # GLOBAL
    assert "envs.registry_ref" in module_refs(modern)
    assert module_refs(classic) == {"envs.registry_ref"}
    assert "raytrade.envs.registry_ref" in module_refs(cloudpickle.dumps(RegistryRef(name="a")))


def _legacy_version(registry: Path, with_hashes: bool) -> Path:
    folder = registry / "alpha" / "1"
    (folder / "module").mkdir(parents=True)
    legacy_dump(
        {"class": RegistryRef, "ref": RegistryRef(name="a", version=2)},
        folder / "module" / "x.pkl",
        RegistryRef,
    )
    (folder / "module" / "weights.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    manifest = Manifest.model_validate(manifest_record())
    if with_hashes:
        manifest = manifest.model_copy(update={"files": version_file_hashes(folder)})
    write_manifest(folder, manifest)
    (registry / "alpha" / "latest").write_text("1\n")
    return folder


def test_old_version_is_refused_in_one_line_naming_the_migration(tmp_path: Path) -> None:
    folder = _legacy_version(tmp_path, with_hashes=False)
    with pytest.raises(LegacyVersionError) as info:
        check_current_names(folder, tmp_path)
    assert str(info.value) == (
        "registry version alpha@1 was promoted before the package rename (its pickles import "
        f"'envs.registry_ref'); run `raytrade registry migrate --registry {tmp_path} alpha@1` "
        "or promote it again"
    )


@pytest.mark.parametrize("with_hashes", [True, False])
def test_migrate_rewrites_old_pickles_and_recomputes_hashes(tmp_path: Path, with_hashes: bool) -> None:
    folder = _legacy_version(tmp_path, with_hashes)
    untouched = (folder / "module" / "weights.pkl").read_bytes()
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), "alpha@1"])
    assert result.exit_code == 0, result.output
    assert result.output == "alpha@1: rewrote module/x.pkl\n"

    assert legacy_refs(folder) == {}
    check_current_names(folder, tmp_path)
    with open(folder / "module" / "x.pkl", "rb") as fh:
        back = pickle.load(fh)
    assert back == {"class": RegistryRef, "ref": RegistryRef(name="a", version=2)}
    assert (folder / "module" / "weights.pkl").read_bytes() == untouched
    manifest = read_manifest(folder)
    assert (manifest.files is not None) == with_hashes
    verify_files(folder, manifest)
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == ["1", "latest"]  # no leftovers
    again = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path)])
    assert again.output == "alpha@1: up to date\n"


def test_a_signed_version_is_migrated_only_with_the_key_and_signed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    from raytrade.models.registry import sign_manifest, verify_mac

    folder = _legacy_version(tmp_path, with_hashes=True)
    write_manifest(folder, sign_manifest(read_manifest(folder), SecretStr(KEY)))
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("RAYTRADE_REGISTRY_HMAC_KEY", raising=False)
    refused = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), "alpha@1"])
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        "error: alpha@1 is signed: migrate it with the registry key set (RAYTRADE_REGISTRY_HMAC_KEY) so "
        "it is signed again, or promote it again"
    )
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", KEY)
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), "alpha@1"])
    assert result.output == "alpha@1: rewrote module/x.pkl\n"
    manifest = read_manifest(folder)
    verify_mac(folder, manifest, SecretStr(KEY))
    verify_files(folder, manifest)


def test_migration_interrupted_between_the_renames_restores_the_original(tmp_path: Path) -> None:
    folder = _legacy_version(tmp_path, with_hashes=True)
    folder.rename(folder.with_name(".1.pre-migration"))  # crashed after moving the original away
    (folder.with_name(".1.migrating")).mkdir()  # and a half-written copy
    assert migrate(tmp_path) == {"alpha@1": ["module/x.pkl"]}
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == ["1", "latest"]
    verify_files(folder, read_manifest(folder))


def test_migrate_refuses_an_invalid_manifest_naming_the_field_and_rewrites_nothing(tmp_path: Path) -> None:
    folder = _legacy_version(tmp_path, with_hashes=True)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    junk = tmp_path / "beta" / "1"
    junk.mkdir(parents=True)
    (junk / "manifest.json").write_text("{}")  # no pickles to rewrite: it used to be "up to date"
    refusal = f"error: {str(junk / 'manifest.json')!r} is not a valid manifest: field 'name': Field required"
    for ref in (["beta@1"], []):  # the version itself, or every version of the registry
        result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), *ref])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [refusal]
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_migrate_of_an_unknown_name_lists_what_exists(tmp_path: Path) -> None:
    _legacy_version(tmp_path, with_hashes=False)
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), "beta"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: no policy 'beta' in registry {str(tmp_path)!r}; available: alpha"


@pytest.mark.slow
@pytest.mark.ray
def test_promoted_version_with_old_names_loads_after_migration(ppo_smoke_run: Path, tmp_path: Path) -> None:
    from raytrade.models.ppo_mlp import PPOMLPModule
    from raytrade.models.registry_load import load

    registry = tmp_path / "registry"
    _promote(ppo_smoke_run, registry)
    fresh = load("alpha", registry)
    folder = registry / "alpha" / "1"
    ctor = folder / "module" / "class_and_ctor_args.pkl"
    with open(ctor, "rb") as fh:
        info = pickle.load(fh)
    legacy_dump(info, ctor, PPOMLPModule)
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={"files": version_file_hashes(folder)}))
    assert b"models.ppo_mlp" in ctor.read_bytes() and b"raytrade.models" not in ctor.read_bytes()

    with pytest.raises(LegacyVersionError, match=r"^registry version alpha@1 was promoted before"):
        load("alpha", registry)
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(registry), "alpha"])
    assert result.output == "alpha@1: rewrote module/class_and_ctor_args.pkl\n", result.output

    migrated = load("alpha", registry)
    assert type(migrated.module) is PPOMLPModule
    obs = np.random.default_rng(0).normal(size=(4, *fresh.module.observation_space.shape)).astype(np.float32)
    np.testing.assert_array_equal(migrated.act(obs), fresh.act(obs))


# ------------------------------------------- what migrate must never do: bless, follow, reuse, delete


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_migrate_refuses_a_version_whose_files_changed_since_promotion(tmp_path: Path) -> None:
    """Migrate re-hashed the version's files into its manifest without checking them first: a file
    changed after promotion (refused by every loader) loaded after the migration."""
    folder = _legacy_version(tmp_path, with_hashes=True)
    (folder / "module" / "weights.pkl").write_bytes(pickle.dumps({"w": [9.0, 9.0]}))  # tampered
    before = _files(folder)
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), "alpha@1"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: alpha@1 ({str(folder)!r}): file 'module/weights.pkl' does not match its sha256 in the "
        "manifest"
    ]
    assert _files(folder) == before
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == ["1", "latest"]


def test_migrate_refuses_a_pickle_linked_out_of_the_version(tmp_path: Path) -> None:
    """A version without file hashes: a ``*.pkl`` link was followed, its target unpickled and
    rewritten into the version."""
    folder = _legacy_version(tmp_path, with_hashes=False)
    outside = tmp_path / "outside.pkl"
    legacy_dump({"class": RegistryRef}, outside, RegistryRef)
    (folder / "module" / "linked.pkl").symlink_to(outside)
    before = outside.read_bytes()
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path), "alpha@1"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: {str(folder / 'module' / 'linked.pkl')!r} is a symbolic link: a registry version holds "
        "regular files only"
    ]
    assert (folder / "module" / "linked.pkl").is_symlink() and outside.read_bytes() == before
    assert b"envs.registry_ref" in (folder / "module" / "x.pkl").read_bytes()


def test_a_migration_killed_between_its_renames_keeps_its_number_and_the_original(tmp_path: Path) -> None:
    """Killed with the original moved aside: the number looked free, a promote took it, and the next
    migrate took the promoted folder for the migrated copy and deleted the original."""
    from raytrade.models.registry import resolve, write_version
    from tests.test_registry import _checkpoint

    registry = tmp_path / "registry"
    folder = _legacy_version(registry, with_hashes=True)
    original = read_manifest(folder).params
    folder.rename(folder.with_name(".1.pre-migration"))  # SIGKILL between the two renames
    with pytest.raises(ValueError) as info:
        resolve(registry, "alpha")
    assert str(info.value) == (
        f"alpha@1 is being migrated, or its migration was interrupted (the original is in "
        f"{str(registry / 'alpha' / '.1.pre-migration')!r}): run `raytrade registry migrate --registry "
        f"{registry}` to restore it"
    )
    promoted = write_version(registry, "alpha", _checkpoint(tmp_path), manifest_record(params={"p": 2}))
    assert promoted.name == "2"
    assert migrate(registry) == {"alpha@1": ["module/x.pkl"], "alpha@2": []}
    assert read_manifest(registry / "alpha" / "1").params == original
    assert read_manifest(registry / "alpha" / "2").params == {"p": 2}
    assert resolve(registry, "alpha") == registry / "alpha" / "2"


def test_recovery_never_deletes_an_original_beside_a_folder_that_is_not_its_migrated_copy(
    tmp_path: Path,
) -> None:
    """A registry an older raytrade left: the backup of version 1 and, in its place, another
    promote's version 1. Neither is deleted."""
    folder = _legacy_version(tmp_path, with_hashes=True)
    backup = folder.with_name(".1.pre-migration")
    folder.rename(backup)
    folder.mkdir()
    (folder / "module").mkdir()
    (folder / "module" / "weights.pkl").write_bytes(pickle.dumps({"w": [3.0]}))
    write_manifest(
        folder,
        Manifest.model_validate(manifest_record(params={"p": 2})).model_copy(
            update={"files": version_file_hashes(folder)}
        ),
    )
    before = _files(tmp_path / "alpha")
    result = CliRunner().invoke(main, ["registry", "migrate", "--registry", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: alpha@1: an interrupted migration left the original in {str(backup)!r}, and "
        f"{str(folder)!r} holds another version (not its migrated copy): nothing deleted; move one of "
        "them to a free number by hand"
    ]
    assert _files(tmp_path / "alpha") == before


def test_a_migration_killed_after_its_swap_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from raytrade.models import registry_migrate

    folder = _legacy_version(tmp_path, with_hashes=True)
    rmtree = shutil.rmtree

    def killed(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(".pre-migration"):
            raise KeyboardInterrupt  # SIGKILL after the swap, before the original was deleted
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(registry_migrate.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        migrate(tmp_path)
    monkeypatch.setattr(registry_migrate.shutil, "rmtree", rmtree)
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == [
        ".1.migrated",
        ".1.pre-migration",
        "1",
        "latest",
    ]
    assert migrate(tmp_path) == {"alpha@1": []}
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == ["1", "latest"]
    verify_files(folder, read_manifest(folder))
