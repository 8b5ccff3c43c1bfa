"""Remote storage (``replay.remote``): s3:// locations against a local S3 server (moto) on 127.0.0.1.

The unit tests cover the file moves every remote path uses; the end-to-end test runs
ingest -> tune smoke -> promote -> the service's model loading with the store, the Tune storage and
the registry all on the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raytrade.replay.remote import (
    RemoteError,
    download_tree,
    filesystem,
    is_remote,
    join,
    list_files,
    location,
    upload_tree,
    write_bytes,
)
from raytrade.replay.remote_store import local_store, publish_store, store_mirror
from tests.s3_server import LocalS3, local_s3, use_credentials


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with local_s3() as server:
        yield server


@pytest.fixture
def bucket(
    s3: LocalS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> str:
    """A fresh bucket named after the test, credentials set, mirrors under tmp_path."""
    use_credentials(monkeypatch, tmp_path / "cache")
    name = request.node.name.replace("_", "-")[:50].strip("-").lower()
    s3.create_bucket(name)
    return name


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_upload_puts_the_commit_markers_last_in_their_order(s3: LocalS3, bucket: str, tmp_path: Path) -> None:
    local = _tree(
        tmp_path / "v", {"latest": b"1\n", "manifest.json": b"{}", "module/a.pt": b"A", "b.txt": b"B"}
    )
    done = upload_tree(local, s3.uri(bucket, "reg/x"), last=("manifest.json", "latest"))
    assert done == ["b.txt", "module/a.pt", "manifest.json", "latest"]
    assert s3.keys(bucket) == ["reg/x/b.txt", "reg/x/latest", "reg/x/manifest.json", "reg/x/module/a.pt"]
    assert s3.body(bucket, "reg/x/module/a.pt") == b"A"


def test_upload_with_skip_present_sends_only_what_the_remote_lacks(
    s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    local = _tree(tmp_path / "t", {"p1": b"one", "p2": b"two"})
    uri = s3.uri(bucket, "t")
    assert upload_tree(local, uri) == ["p1", "p2"]
    (local / "p3").write_bytes(b"three")
    assert upload_tree(local, uri, skip_present=True) == ["p3"]


def test_download_mirrors_the_remote_and_exact_drops_what_it_lacks(
    s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    uri = s3.uri(bucket, "store")
    upload_tree(_tree(tmp_path / "src", {"bars/p.parquet": b"12345", "f.json": b"{}"}), uri)
    mirror = _tree(tmp_path / "mirror", {"stale.parquet": b"x", "_lock": b""})
    download_tree(uri, mirror, exact=True)
    files = sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file())
    assert files == ["_lock", "bars/p.parquet", "f.json"]  # a writer's lock is not the remote's to drop
    assert (mirror / "bars/p.parquet").read_bytes() == b"12345"
    assert list_files(uri) == {"bars/p.parquet": 5, "f.json": 2}


def test_a_file_uri_gets_the_folders_its_files_need(tmp_path: Path) -> None:
    """pyarrow's local filesystem creates no parent folders: the upload creates them."""
    uri = f"file://{tmp_path}/bucket/store"
    local = _tree(tmp_path / "src", {"bars/year=2024/part-1.parquet": b"12345", "f.json": b"{}"})
    assert upload_tree(local, uri) == ["bars/year=2024/part-1.parquet", "f.json"]
    write_bytes(join(uri, "deep"), "er/latest", b"1\n")
    assert list_files(uri) == {"bars/year=2024/part-1.parquet": 5, "deep/er/latest": 2, "f.json": 2}
    mirror = download_tree(uri, tmp_path / "mirror")
    assert (mirror / "bars/year=2024/part-1.parquet").read_bytes() == b"12345"


def test_a_missing_bucket_is_refused_naming_it(s3: LocalS3, bucket: str) -> None:
    with pytest.raises(RemoteError, match=r"bucket 'no-such-bucket' of s3://no-such-bucket/x does not exist"):
        filesystem(s3.uri("no-such-bucket", "x"))


def test_a_local_path_passes_through_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_remote("store") and not is_remote(Path("store"))
    assert location("store") == str(tmp_path / "store")
    assert local_store("store") == Path("store")
    with store_mirror(tmp_path / "store") as root:
        assert root == tmp_path / "store"


def test_a_store_that_another_writer_appended_to_is_not_uploaded(
    s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    uri = s3.uri(bucket, "store")
    local = _tree(tmp_path / "mine", {"bars/year=2024/part-2.parquet": b"mine"})
    upload_tree(_tree(tmp_path / "theirs", {"bars/year=2024/part-1.parquet": b"theirs"}), uri)
    with pytest.raises(RemoteError, match=r"another writer .*first: bars/year=2024/part-1.parquet"):
        publish_store(local, uri, before=set())
    assert s3.keys(bucket) == ["store/bars/year=2024/part-1.parquet"]


def test_a_store_file_removed_locally_refuses_the_upload(s3: LocalS3, bucket: str, tmp_path: Path) -> None:
    uri = s3.uri(bucket, "store")
    upload_tree(_tree(tmp_path / "src", {"features/year=2024/part-1.parquet": b"old"}), uri)
    local = _tree(tmp_path / "mine", {"features/year=2024/part-2.parquet": b"rebuilt"})
    with pytest.raises(RemoteError, match="append-only"):
        publish_store(local, uri, before={"features/year=2024/part-1.parquet"})
    assert s3.keys(bucket) == ["store/features/year=2024/part-1.parquet"]


def test_a_remote_stores_stated_spread_record_left_by_a_failed_first_upload_is_replaced(
    s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """An upload interrupted after the record and before the features left a remote store with a
    record of 5 bps and no features. The next ingest without the flag builds estimates and rewrites
    the record (it used to delete it locally, which the append-only upload refuses: a store stuck);
    the upload replaces the remote's record, so the two agree; and a later ingest follows it."""
    from raytrade.replay.feature_settings import SETTINGS_FILE, read_feature_settings
    from raytrade.replay.ingest import ingest_frames
    from tests.test_feature_settings import _bars

    uri = s3.uri(bucket, "store")
    upload_tree(_tree(tmp_path / "src", {SETTINGS_FILE: b'{"unquoted_spread_bps": 5.0}'}), uri)
    bars = _bars(60)
    days = bars["ts"].unique()
    with store_mirror(uri) as root:
        ingest_frames(root, bars[bars["ts"] < days[40]], show_progress=False)
    fs, base = filesystem(uri)
    with fs.open_input_stream(f"{base}/{SETTINGS_FILE}") as stream:
        assert stream.read() == b'{\n  "unquoted_spread_bps": null\n}'
    with store_mirror(uri) as root:
        ingest_frames(root, bars[bars["ts"] >= days[40]], show_progress=False)
        assert read_feature_settings(root).unquoted_spread_bps is None


def test_ingest_tune_promote_and_serve_read_and_write_s3(
    ray_session: None, s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """The store, the Tune storage and the registry all on the S3 server: every stage finds what the
    previous one left there, and no object carries the S3 secret."""
    from click.testing import CliRunner

    from raytrade.cluster.cli import main
    from raytrade.serve.app import load_service
    from raytrade.serve.decide import ServeConfig
    from tests.s3_server import ACCESS_KEY, SECRET_KEY

    store, registry, run = s3.uri(bucket, "store"), s3.uri(bucket, "registry"), s3.uri(bucket, "runs/r1")
    cli = CliRunner()
    synthetic = ["--source", "synthetic", "--n-symbols", "4", "--years", "1.5", "--seed", "3"]
    ingested = cli.invoke(main, ["ingest", *synthetic, "--out", store])
    assert ingested.exit_code == 0, ingested.output
    stored = s3.keys(bucket)
    assert {k.split("/")[1] for k in stored} == {"bars", "features", "macro"}
    assert all(k.startswith("store/") and "/year=" in k and "/part-" in k for k in stored)

    search = ["--spec", "ppo", "--replay", store, "--smoke", "--num-samples", "1", "--iterations", "1"]
    tuned = cli.invoke(
        main, ["tune", *search, "--no-wandb", "--storage", s3.uri(bucket, "runs"), "--name", "r1"]
    )
    assert tuned.exit_code == 0, tuned.output
    runs = [k for k in s3.keys(bucket) if k.startswith("runs/r1/")]
    assert {"runs/r1/raytrade_run.json", "runs/r1/leaderboard.json"} <= set(runs)
    assert "runs/r1/validation_objective.png" in runs  # and the plot line names it there, not the cache
    assert f"plot: s3://{bucket}/runs/r1/validation_objective.png\n" in tuned.output  # without the query
    assert any("/checkpoint_" in k and k.endswith("/rl_module/default_policy/metadata.json") for k in runs)

    promoted = cli.invoke(main, ["promote", "--run", run, "--name", "alpha", "--registry", registry])
    assert promoted.exit_code == 0, promoted.output
    assert s3.body(bucket, "registry/alpha/latest") == b"1\n"

    service = load_service("alpha", registry, ServeConfig(max_feature_age_hours=None))
    manifest = service.handle.manifest
    assert (service.handle.version, manifest.source.run, manifest.data.root) == (1, run, store)
    for key in s3.keys(bucket):
        body = s3.body(bucket, key)
        assert SECRET_KEY.encode() not in body and ACCESS_KEY.encode() not in body, key


def test_an_upload_interrupted_mid_file_leaves_no_object_under_its_name(
    s3: LocalS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow commits an S3 object when its stream closes, whatever closed it: Ctrl-C halfway through a
    file left a truncated object under its final name, which the next publish took as present and
    every mirror then downloaded over the writer's good copy."""
    import shutil as real_shutil
    import types

    from raytrade.replay import remote

    uri = s3.uri(bucket, "store")
    local = _tree(tmp_path / "src", {"bars/year=2024/part-1.parquet": b"1" * 64, "f.json": b"{}" * 32})

    def interrupted(src: Any, dst: Any, length: int = 0) -> None:
        dst.write(src.read()[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(remote, "shutil", types.SimpleNamespace(copyfileobj=interrupted))
    with pytest.raises(KeyboardInterrupt):
        upload_tree(local, uri)
    monkeypatch.setattr(remote, "shutil", real_shutil)
    assert list_files(uri) == {}


def test_a_store_file_the_remote_holds_at_another_size_is_sent_again(tmp_path: Path) -> None:
    """A publish killed mid-file (no clean-up can run) leaves a short object: the next publish sends
    the file again whole instead of taking it as present."""
    uri = f"file://{tmp_path}/bucket/store"
    rel = "bars/year=2024/part-1.parquet"
    local = _tree(tmp_path / "src", {rel: b"1" * 64})
    upload_tree(_tree(tmp_path / "killed", {rel: b"1" * 10}), uri)
    assert publish_store(local, uri, before={rel}) == [rel]
    assert list_files(uri) == {rel: 64}


def test_a_remote_key_leading_outside_the_mirror_is_refused_before_anything_is_written(
    s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """An object store key may hold '..': a mirror wrote `store/../../escape` as named, outside itself
    (whoever can write the bucket could write any file the reader can)."""
    from raytrade.replay.remote import RemoteError

    s3.client().put_object(Bucket=bucket, Key="store/bars/p.parquet", Body=b"1")
    s3.client().put_object(Bucket=bucket, Key="store/../../escape", Body=b"owned")
    mirror = tmp_path / "deep" / "mirror"
    with pytest.raises(RemoteError, match=r"holds an object named '\.\./\.\./escape', which leads outside"):
        download_tree(s3.uri(bucket, "store"), mirror)
    assert not (tmp_path / "escape").exists() and not (mirror / "bars" / "p.parquet").exists()
