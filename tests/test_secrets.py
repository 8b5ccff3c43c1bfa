"""Secrets stay where they belong: the wandb key never enters Ray, and ``ray job submit
--working-dir .`` never uploads settings files, the live loop's state or local environments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY = "wandb-key-must-not-reach-ray-0123456789"


def _options(wandb: str) -> Any:
    from raytrade.cluster.tune import TuneOptions

    return TuneOptions(spec="ppo", replay=Path("store"), wandb=wandb, storage=Path("runs"))


def test_an_online_search_logs_offline_with_the_key_out_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from raytrade.cluster.tune import _environment, _wandb_setup

    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    callbacks, env, key = _wandb_setup(_options("online"), tmp_path)
    assert key == KEY and env == {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": None}
    (callback,) = callbacks
    assert callback.kwargs["mode"] == "offline" and KEY not in repr(vars(callback))
    with _environment(env):
        # Ray's WandbLoggerCallback copies os.environ["WANDB_API_KEY"] into its actor's runtime_env
        assert "WANDB_API_KEY" not in os.environ and os.environ["WANDB_MODE"] == "offline"
    assert os.environ["WANDB_API_KEY"] == KEY  # restored after the search


def test_offline_and_disabled_searches_need_no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raytrade.cluster.tune import _wandb_setup

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    assert _wandb_setup(_options("disabled"), tmp_path) == ([], {}, None)
    callbacks, env, key = _wandb_setup(_options("offline"), tmp_path)
    assert len(callbacks) == 1 and key is None and env["WANDB_API_KEY"] is None


def test_the_upload_hands_the_key_only_to_the_wandb_sync_child(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from raytrade.cluster.tune import upload_wandb_runs

    runs = [tmp_path / "wandb" / f"offline-run-2026120{i}_000000-t{i}" for i in (1, 2)]
    for run in runs:
        run.mkdir(parents=True)
    (tmp_path / "wandb" / "latest-run").mkdir()
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(command: list[str], env: dict[str, str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append((command, env))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert upload_wandb_runs(tmp_path, KEY) == runs
    ((command, env),) = calls
    assert command[1:] == ["-m", "wandb", "sync", *map(str, runs)]
    assert env["WANDB_API_KEY"] == KEY and env["WANDB_MODE"] == "online"
    assert "WANDB_API_KEY" not in os.environ


def test_rayignore_keeps_secrets_state_and_environments_out_of_job_uploads() -> None:
    from ray._private.runtime_env.packaging import _get_ignore_file

    ignored = _get_ignore_file(ROOT, ".rayignore")
    assert ignored is not None, "no .rayignore at the project root"
    for path in (
        ".env",
        "prod.env",
        ".env.local",
        ".raytrade/live_state.json",
        ".venv/bin/python",
        "registry/alpha/1/manifest.json",
        "runs/ppo/run.json",
        "wandb/offline-run-1/files/config.yaml",
        ".git/config",
        "store/bars/year=2024/part-0.parquet",
        "data/daily/AAPL.csv",
        "reports/nightly/2026-01-05/report.json",
        "select/select.json",
        "mystore/bars/year=2024/part-0.parquet",
    ):
        assert ignored(ROOT / path), path
    for path in ("serve/app.py", "cluster/configs/rayservice.yaml", "pyproject.toml", "README.md"):
        assert not ignored(ROOT / path), path


SECRET_FILES = (
    ".envrc",
    "settings.toml",
    "cluster/configs/settings.env",
    "secrets.json",
    "credentials",
    "credentials.csv",
    ".aws/credentials",
    ".kube/config",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    "id_ed25519",
    "id_rsa.pub",
    ".ssh/known_hosts",
    "ray_auth_token",
    "auth_token",
    "cluster/configs/ray_auth_token",
    "token.txt",
    "client.p12",
    "server.pfx",
    "tls.key",
    "ca.pem",
    # common names the list missed (each was uploaded by `ray job submit --working-dir .`)
    "api_key.txt",
    "alpaca_keys.json",
    "wandb_api_key.txt",
    "secret.txt",
    "alpaca.secret.json",
    "gcp-key.json",
    "service-account.json",
    "credentials.ini",
    "aws_credentials",
    "db_password.yaml",
    ".boto",
    ".wandb.netrc",
    "tls.crt",
    "cluster/configs/client.crt",
)


def _ray_excludes(root: Path) -> Any:
    from ray._private.runtime_env.packaging import get_excludes_from_ignore_files

    matchers = get_excludes_from_ignore_files(root, include_gitignore=True)
    return lambda path: any(match(root / path) for match in matchers)


def test_job_uploads_and_ray_up_leave_every_common_secret_file_behind(tmp_path: Path) -> None:
    """Ray's own matcher on the project's .rayignore and .gitignore (what `ray job submit
    --working-dir .` and `ray up`'s rsync_filter read), over files named as secrets usually are."""
    for name in (".rayignore", ".gitignore"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    excluded = _ray_excludes(tmp_path)
    for path in SECRET_FILES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
        assert excluded(path), path


def test_the_secret_file_patterns_leave_every_tracked_file_in() -> None:
    """The patterns catch secrets, not the project: no file of the repository matches one (a
    ``credentials.*`` pattern would leave replay/credentials.py behind on the cluster)."""
    from raytrade.cluster.submit import secret_file_name

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    files = tracked.stdout.split()
    assert "replay/credentials.py" in files and "cluster/settings.py" in files
    excluded = _ray_excludes(ROOT)
    assert [f for f in files if secret_file_name(f) or excluded(f)] == []


def test_secret_file_names_are_matched_at_any_depth_and_folders_by_their_name() -> None:
    from raytrade.cluster.submit import secret_file_name

    assert secret_file_name("raytrade/cluster/configs/settings.env") == "*.env"
    assert secret_file_name("raytrade/cluster/configs/ray_auth_token") == "*token"
    assert secret_file_name("home/.aws/config") == ".aws/"
    assert secret_file_name("raytrade/replay/credentials.py") is None
    assert secret_file_name("raytrade/cluster/settings.py") is None


def test_a_storage_uri_carrying_credentials_is_refused_without_echoing_them() -> None:
    from raytrade.replay.remote import RemoteError, location

    with pytest.raises(RemoteError) as refused:
        location(f"s3://AKIDEXAMPLE:{KEY}@bucket/store?region=us-east-1")
    assert str(refused.value).startswith("s3://bucket/store: credentials in the URI are refused")
    assert KEY not in str(refused.value) and "AKIDEXAMPLE" not in str(refused.value)


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://AKIDEXAMPLE:{KEY}@bucket/store",
        "s3://AKIDEXAMPLE:wJal/rXUt+nFEMI@bucket/store",  # AWS secrets hold / and +: the rest is the path
        "s3://AKIDEXAMPLE:wJal#rXUt@bucket/store",
    ],
)
def test_a_uri_with_credentials_is_refused_and_never_shown_however_the_secret_is_spelled(uri: str) -> None:
    from raytrade.replay.remote import RemoteError, check_uri, redacted

    secret = uri.split(":", 2)[2].rpartition("@")[0]
    with pytest.raises(RemoteError) as refused:
        check_uri(uri)
    for shown in (str(refused.value), redacted(uri)):
        assert secret not in shown and "AKIDEXAMPLE" not in shown, shown
        assert "bucket/store" in shown


def test_an_error_line_never_echoes_a_location_with_credentials() -> None:
    """The CLI's last net (cluster.errors prints every error line through it): a library's message,
    or a path type that folded ``s3://`` into ``s3:/``, quoting the URI."""
    from raytrade.replay.credentials import without_credentials

    line = (
        f"registry 's3://AKIDEXAMPLE:{KEY}@bucket/x' does not exist; "
        f"[Errno 2] No such file or directory: 's3:/AKIDEXAMPLE:{KEY}@bucket/store'; "
        "see https://example.test/docs, model alpha@2"
    )
    shown = without_credentials(line)
    assert KEY not in shown and "AKIDEXAMPLE" not in shown
    assert "'s3://bucket/x'" in shown and "https://example.test/docs" in shown and "alpha@2" in shown


def test_the_s3_filesystem_tune_ships_to_its_trials_holds_no_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tune pickles the storage filesystem into every trial actor: credentials read from the
    environment stay out of it (each node reads its own environment or role)."""
    import pickle

    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY)
    fs, _ = pafs.FileSystem.from_uri(
        "s3://bucket/runs?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    )
    shipped = pickle.dumps(fs)
    assert KEY.encode() not in shipped and b"AKIDEXAMPLE" not in shipped
