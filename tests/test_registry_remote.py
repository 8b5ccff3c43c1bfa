"""A registry at a remote location (``models.registry_remote``): promotes against moto's S3 server on
127.0.0.1 (and a ``file://`` URI), reads through a node's mirror."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import raytrade.models.registry as local_registry
import raytrade.models.registry_remote as registry_remote
from raytrade.models.registry import RegistryError
from raytrade.models.registry_load import verify_version
from raytrade.models.registry_remote import CLAIM_PREFIX, write_version_at
from raytrade.replay.remote import join, list_files, write_bytes
from tests.s3_server import LocalS3, local_s3, use_credentials
from tests.test_registry import _checkpoint, manifest_record


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with local_s3() as server:
        yield server


@pytest.fixture
def registry(
    s3: LocalS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> str:
    """A registry URI in a fresh bucket named after the test; credentials set, mirrors under tmp_path."""
    use_credentials(monkeypatch, tmp_path / "cache")
    bucket = request.node.name.replace("_", "-")[:50].strip("-").lower()
    s3.create_bucket(bucket)
    return s3.uri(bucket, "registry")


def _weights(tmp_path: Path, data: bytes) -> Path:
    """A checkpoint whose module file holds ``data``."""
    ckpt = _checkpoint(tmp_path / data.decode())
    (ckpt / "learner_group/learner/rl_module/default_policy/module_state.pt").write_bytes(data)
    return ckpt


def test_a_promote_that_died_mid_upload_does_not_block_the_next(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = registry_remote.upload_tree

    def dies_after_one_file(local: Path, uri: str, *, files: Sequence[str], last: Sequence[str] = ()) -> Any:
        real(local, uri, files=[f for f in files if f not in last][:1])
        raise ConnectionResetError("network dropped mid-upload")

    ckpt = _checkpoint(tmp_path)
    monkeypatch.setattr(registry_remote, "upload_tree", dies_after_one_file)
    with pytest.raises(ConnectionResetError):
        write_version_at(registry, "alpha", ckpt, manifest_record())
    monkeypatch.setattr(registry_remote, "upload_tree", real)
    dead = {rel for rel in list_files(registry) if rel.startswith("alpha/1/")}
    assert dead and "alpha/1/manifest.json" not in dead  # half a version, no manifest

    assert write_version_at(registry, "alpha", ckpt, manifest_record()).name == "2"
    assert write_version_at(registry, "alpha", ckpt, manifest_record()).name == "3"
    assert {rel for rel in list_files(registry) if rel.startswith("alpha/1/")} == dead  # never deleted
    assert verify_version("alpha", registry).manifest.version == 3
    with pytest.raises(RegistryError, match=r"no version 1 of 'alpha'; available: 2, 3"):
        verify_version("alpha@1", registry)  # a reader never sees the half-written version


def test_a_number_another_promote_claimed_meanwhile_is_left_to_it(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer's object appears in the number this promote picked, after it listed the remote
    and before it claimed: this promote takes the next number and leaves the other's untouched."""
    real = local_registry.write_version
    rival = f"{CLAIM_PREFIX}rival"

    def rival_claims_first(*args: Any, **kwargs: Any) -> Path:
        built = real(*args, **kwargs)
        if built.name == "1":
            write_bytes(registry, f"alpha/1/{rival}", b"")
        return built

    monkeypatch.setattr(local_registry, "write_version", rival_claims_first)
    assert write_version_at(registry, "alpha", _checkpoint(tmp_path), manifest_record()).name == "2"
    files = list_files(registry)
    assert [rel for rel in files if rel.startswith("alpha/1/")] == [f"alpha/1/{rival}"]
    assert not [rel for rel in files if rel.startswith("alpha/2/.")]  # this promote's marker is gone
    assert verify_version("alpha", registry).manifest.version == 2


def test_of_two_claims_on_one_number_only_the_first_holds_it(registry: str) -> None:
    version = join(registry, "alpha", "1")
    first = registry_remote._claim(version)
    assert first is not None and first.startswith(CLAIM_PREFIX)
    assert registry_remote._claim(version) is None
    assert list(list_files(version)) == [first]  # the loser's marker deleted, the winner's kept


def test_a_claim_marker_left_in_a_committed_version_is_not_read_as_its_file(
    registry: str, tmp_path: Path
) -> None:
    """A promote that died after its manifest, before dropping its marker (or a loser's marker not
    yet deleted): readers mirror and verify the version without it."""
    write_version_at(registry, "alpha", _checkpoint(tmp_path), manifest_record())
    write_bytes(registry, f"alpha/1/{CLAIM_PREFIX}dead", b"")
    folder = verify_version("alpha", registry).path  # verify_files refuses any file not in the manifest
    assert not list(folder.glob(f"{CLAIM_PREFIX}*"))


def test_a_version_promoted_again_under_its_number_is_not_read_from_a_stale_mirror(
    s3: LocalS3, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node mirrored alpha@1; the remote version is deleted and a new one promoted as 1 (same file
    sizes, same manifest size): the node reads the new files, not its copy of the old ones."""
    write_version_at(registry, "alpha", _weights(tmp_path, b"weights"), manifest_record())
    node = verify_version("alpha", registry).path
    assert (node / "module/module_state.pt").read_bytes() == b"weights"

    bucket = registry.split("/")[2].split("?")[0]
    s3.client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in s3.keys(bucket)]})
    monkeypatch.setenv("RAYTRADE_CACHE_DIR", str(tmp_path / "promoting-node"))
    assert write_version_at(registry, "alpha", _weights(tmp_path, b"WEIGHTS"), manifest_record()).name == "1"

    monkeypatch.setenv("RAYTRADE_CACHE_DIR", str(tmp_path / "cache"))
    again = verify_version("alpha", registry)  # checks every file against the fresh manifest
    assert again.path == node
    assert (node / "module/module_state.pt").read_bytes() == b"WEIGHTS"


def test_a_file_uri_registry_is_promoted_to_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYTRADE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "bucket").mkdir()
    uri = f"file://{tmp_path}/bucket/registry"
    assert write_version_at(uri, "alpha", _checkpoint(tmp_path), manifest_record()).name == "1"
    stored = tmp_path / "bucket" / "registry" / "alpha"
    assert (stored / "latest").read_text() == "1\n"
    assert sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file()) == [
        "1/connectors/env_to_module_connector/state.pkl",
        "1/manifest.json",
        "1/module/module_state.pt",
        "latest",
    ]
    assert verify_version("alpha", uri).manifest.version == 1
