"""Under a registry key the HMAC covers the whole manifest: any edited field is refused, an old
files-only signature is refused until re-signed (``raytrade registry sign``), and without a key the
behaviour is the documented one (file sha256s only, the manifest unprotected)."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from raytrade.cluster.cli import main
from raytrade.models.manifest import MAC_SCHEME, read_manifest
from raytrade.models.registry import (
    RegistryError,
    files_mac,
    verify_files,
    verify_mac,
    version_file_hashes,
    write_manifest,
    write_version,
)
from raytrade.models.registry_load import load
from tests.test_registry import KEY, OTHER_KEY, _checkpoint, _Touch, manifest_record

KILL_SWITCH_CONFIG = {
    "env": "raytrade/PortfolioEnv-v0",
    "env_config": {
        "flat_obs": True,
        "num_envs": 4,
        "sim": {"kill_switch": {"enabled": True, "trigger_drawdown": 0.1}},
    },
}


class _Module:
    """What ``RLModule.from_checkpoint`` returns here: a module that only needs ``eval``."""

    def eval(self) -> None:
        pass


@pytest.fixture
def no_rllib(monkeypatch: pytest.MonkeyPatch) -> None:
    """``models.load`` up to RLlib: the module checkpoints here are fakes."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    monkeypatch.setattr(RLModule, "from_checkpoint", staticmethod(lambda path: _Module()))


def _promote(tmp_path: Path, key: str | None, **record: Any) -> Path:
    return write_version(
        tmp_path / "registry",
        "alpha",
        _checkpoint(tmp_path),
        manifest_record(config=KILL_SWITCH_CONFIG, **record),
        hmac_key=None if key is None else SecretStr(key),
    )


def _edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    raw = json.loads((folder / "manifest.json").read_text())
    change(raw)
    (folder / "manifest.json").write_text(json.dumps(raw))


def _old_scheme(folder: Path) -> None:
    """Sign a version as promote did before the whole-manifest MAC: ``files_hmac`` only."""
    manifest = read_manifest(folder)
    assert manifest.files is not None
    mac = files_mac(manifest.name, manifest.version, manifest.files, SecretStr(KEY))
    write_manifest(folder, manifest.model_copy(update={"files_hmac": mac, "signature": None}))


def _sign_cli(registry: Path, monkeypatch: pytest.MonkeyPatch, *ref: str) -> Any:
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", KEY)
    return CliRunner().invoke(main, ["registry", "sign", "--registry", str(registry), *ref])


def test_promote_with_a_key_signs_the_whole_manifest_and_never_writes_the_key(
    tmp_path: Path, no_rllib: None
) -> None:
    folder = _promote(tmp_path, KEY)
    manifest = read_manifest(folder)
    assert manifest.files_hmac is None
    assert manifest.signature is not None and manifest.signature.scheme == MAC_SCHEME
    handle = load("alpha", tmp_path / "registry", SecretStr(KEY))
    assert handle.manifest == manifest
    assert handle.manifest.env_config().sim.kill_switch.enabled
    for path in (tmp_path / "registry").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_manifest_rewritten_without_changing_a_value_still_loads(tmp_path: Path, no_rllib: None) -> None:
    """Key order, indentation and float spelling are not part of what is signed; values are."""
    folder = _promote(tmp_path, KEY, params={"lr": 1e-05, "gamma": 0.99})
    raw = json.loads((folder / "manifest.json").read_text())
    text = json.dumps(raw, sort_keys=True).replace("1e-05", "0.00001")
    (folder / "manifest.json").write_text(text)
    assert load("alpha@1", tmp_path / "registry", SecretStr(KEY)).manifest.params["lr"] == 1e-05


def _kill_switch_off(raw: dict[str, Any]) -> None:
    raw["config"]["env_config"]["sim"]["kill_switch"]["enabled"] = False


def _kill_switch_removed(raw: dict[str, Any]) -> None:
    del raw["config"]["env_config"]["sim"]["kill_switch"]


def _symbols_reversed(raw: dict[str, Any]) -> None:
    raw["data"]["symbols"].reverse()


def _env_config_changed(raw: dict[str, Any]) -> None:
    raw["config"]["env_config"]["num_envs"] = 8


def _env_id_changed(raw: dict[str, Any]) -> None:
    raw["config"]["env"] = "raytrade/GatedPortfolioEnv-v0"


def _data_root_set(raw: dict[str, Any]) -> None:
    raw["data"]["root"] = "/elsewhere"


def _field_at_default_added(raw: dict[str, Any]) -> None:
    raw["files_hmac"] = "0" * 64  # a field the signer left at its default (None)


TAMPERS = [
    _kill_switch_off,
    _kill_switch_removed,
    _symbols_reversed,
    _env_config_changed,
    _env_id_changed,
    _data_root_set,
    _field_at_default_added,
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda f: f.__name__.strip("_"))
def test_any_edited_manifest_field_is_refused_under_the_key(
    tmp_path: Path, tamper: Callable[[dict[str, Any]], None]
) -> None:
    folder = _promote(tmp_path, KEY)
    _edit(folder, tamper)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)  # the files themselves are intact: only the manifest changed
    with pytest.raises(RegistryError) as info:
        load("alpha@1", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"alpha@1 ({str(folder)!r}): manifest.json does not match its HMAC under the registry key "
        "(the manifest edited, or signed with another key)"
    )


def test_the_untampered_control_loads(tmp_path: Path, no_rllib: None) -> None:
    folder = _promote(tmp_path, KEY)
    _edit(folder, lambda raw: None)  # read and written back (compact JSON), nothing changed
    load("alpha@1", tmp_path / "registry", SecretStr(KEY))


def test_a_changed_file_with_its_hash_updated_is_refused_before_unpickling(tmp_path: Path) -> None:
    folder = _promote(tmp_path, KEY)
    marker = tmp_path / "unpickled"
    (folder / "connectors" / "env_to_module_connector" / "state.pkl").write_bytes(
        pickle.dumps(_Touch(marker))
    )
    _edit(folder, lambda raw: raw.update(files=version_file_hashes(folder)))
    with pytest.raises(RegistryError, match=r"^alpha@1 .*: manifest.json does not match its HMAC"):
        load("alpha@1", tmp_path / "registry", SecretStr(KEY))
    assert not marker.exists()


def test_an_old_scheme_signature_is_refused_under_the_key_naming_the_sign_command(tmp_path: Path) -> None:
    folder = _promote(tmp_path, None)
    _old_scheme(folder)
    verify_mac(folder, read_manifest(folder), None)  # no key: nothing to check
    with pytest.raises(RegistryError) as info:
        load("alpha@1", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"alpha@1 ({str(folder)!r}) is signed by the old scheme (file hashes only, not the manifest) "
        "and a registry key is set: check its manifest, then run `raytrade registry sign --registry "
        f"{tmp_path / 'registry'} alpha@1`, or promote it again"
    )


def test_registry_sign_re_signs_an_old_scheme_version_which_then_loads_and_is_protected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_rllib: None
) -> None:
    folder = _promote(tmp_path, None)
    _old_scheme(folder)
    result = _sign_cli(tmp_path / "registry", monkeypatch, "alpha")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "alpha@1: re-signed (old MAC and files verified; check its manifest, which the old MAC did not "
        "cover)\n"
    )
    manifest = read_manifest(folder)
    assert manifest.files_hmac is None and manifest.signature is not None
    load("alpha@1", tmp_path / "registry", SecretStr(KEY))
    again = _sign_cli(tmp_path / "registry", monkeypatch)
    assert (again.exit_code, again.output) == (0, "alpha@1: up to date\n")
    _edit(folder, _kill_switch_off)
    with pytest.raises(RegistryError, match="manifest.json does not match its HMAC"):
        load("alpha@1", tmp_path / "registry", SecretStr(KEY))


@pytest.mark.parametrize("case", ["unsigned", "old_mac_of_other_key", "file_changed", "no_file_hashes"])
def test_registry_sign_refuses_what_it_cannot_vouch_for_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    folder = _promote(tmp_path, None)
    manifest = read_manifest(folder)
    assert manifest.files is not None
    if case == "old_mac_of_other_key":
        mac = files_mac("alpha", 1, manifest.files, SecretStr(OTHER_KEY))
        write_manifest(folder, manifest.model_copy(update={"files_hmac": mac}))
    elif case == "file_changed":
        _old_scheme(folder)
        (folder / "module" / "module_state.pt").write_bytes(b"other weights")
    elif case == "no_file_hashes":
        write_manifest(folder, manifest.model_copy(update={"files": None}))
    before = (folder / "manifest.json").read_bytes()
    result = _sign_cli(tmp_path / "registry", monkeypatch, "alpha@1")
    assert result.exit_code == 1
    expected = {
        "unsigned": "carries no HMAC: nothing shows its manifest is the one promoted; promote it again "
        "with the key",
        "old_mac_of_other_key": ": its old-scheme HMAC does not match the registry key",
        "file_changed": ": file 'module/module_state.pt' does not match its sha256 in the manifest",
        "no_file_hashes": "carries no HMAC: nothing shows",
    }[case]
    assert result.output.startswith("alpha@1: refused: alpha@1 (") and expected in result.output
    assert result.output.count("\n") == 1
    assert (folder / "manifest.json").read_bytes() == before


def test_registry_sign_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _promote(tmp_path, None)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("RAYTRADE_REGISTRY_HMAC_KEY", raising=False)
    result = CliRunner().invoke(main, ["registry", "sign", "--registry", str(tmp_path / "registry")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: set RAYTRADE_REGISTRY_HMAC_KEY to the registry key to sign with"


def test_registry_sign_refuses_a_remote_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _sign_cli(Path("unused"), monkeypatch, "--registry", "s3://bucket/registry")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: `raytrade registry sign` works on a local registry folder, not s3://bucket/registry: "
        "promote the versions again with the key"
    )


def test_a_manifest_without_file_hashes_is_refused_under_a_key_and_warned_about_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_rllib: None
) -> None:
    folder = _promote(tmp_path, KEY)
    _edit(folder, lambda raw: raw.update(files=None))
    with pytest.raises(RegistryError) as info:
        load("alpha@1", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"alpha@1 ({str(folder)!r}) records no file sha256s (promoted before they were) and a registry "
        "key is set: promote it again with the key"
    )
    with caplog.at_level(logging.WARNING, logger="raytrade.models.registry"):
        load("alpha@1", tmp_path / "registry")  # documented: without a key, nothing to check against
    assert "alpha@1" in caplog.text and "its files are NOT checked" in caplog.text


def test_without_a_key_file_changes_are_refused_but_the_manifest_is_not_protected(
    tmp_path: Path, no_rllib: None
) -> None:
    """The documented limit: the sha256s live in the manifest, so only the key protects it."""
    folder = _promote(tmp_path, None)
    _edit(folder, _kill_switch_off)
    assert not load("alpha@1", tmp_path / "registry").env_config().sim.kill_switch.enabled
    (folder / "module" / "module_state.pt").write_bytes(b"other weights")
    with pytest.raises(RegistryError, match="file 'module/module_state.pt' does not match its sha256"):
        load("alpha@1", tmp_path / "registry")


def test_a_signature_of_an_unknown_scheme_is_refused_when_read(tmp_path: Path) -> None:
    folder = _promote(tmp_path, KEY)
    _edit(folder, lambda raw: raw["signature"].update(scheme=MAC_SCHEME + 1))
    with pytest.raises(ValueError, match=r"not a valid manifest: field 'signature.scheme'"):
        read_manifest(folder)
