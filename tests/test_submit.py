"""``raytrade submit``: entrypoint, token, address, shipped code and runtime env, without a cluster.

(A job submitted to a real token-auth cluster is tested in ``tests/test_local_cluster.py``, which
starts that cluster once for its tests.)
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raytrade.cluster.submit import (
    SubmitError,
    build_runtime_env,
    build_wheel,
    check_entrypoint,
    check_no_secrets,
    check_settings_file,
    check_token,
    check_wheel,
    entrypoint,
    known_secrets,
    logs_command,
    package_data,
    package_folders,
    project_root,
    read_token,
    resolve_address,
    unpack_wheel,
)

SECRETS = {
    "RAY_AUTH_TOKEN": "ray-token-0123456789abcdef",
    "RAYTRADE_SERVE_TOKEN": "serve-token-0123456789abcdef",
    "WANDB_API_KEY": "wandb-key-0123456789abcdef",
    "ALPACA_SECRET_KEY": "alpaca-secret-0123456789",
}


def test_the_entrypoint_runs_the_cli_module_with_the_arguments_as_given() -> None:
    command = [
        "raytrade",
        "tune",
        "--spec",
        "ppo",
        "--replay",
        "s3://bucket/store",
        "--storage",
        "/data/runs",
    ]
    assert entrypoint(command) == (
        "python -m raytrade.cluster.cli tune --spec ppo --replay s3://bucket/store --storage /data/runs"
    )
    assert (
        entrypoint(["raytrade", "summary", "my store"]) == "python -m raytrade.cluster.cli summary 'my store'"
    )


def test_only_raytrade_commands_are_submitted() -> None:
    with pytest.raises(SubmitError, match="expected `-- raytrade ...`, got 'python'"):
        entrypoint(["python", "-c", "print(1)"])
    with pytest.raises(SubmitError, match="cannot submit itself"):
        entrypoint(["raytrade", "submit", "--", "raytrade", "summary", "x"])


def test_the_token_comes_from_the_variable_then_the_named_file_then_rays_default(tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.write_text("from-named-file\n")
    default = tmp_path / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("from-default-file")
    env = {"RAY_AUTH_TOKEN": "from-variable", "RAY_AUTH_TOKEN_PATH": str(named)}
    assert read_token(env, tmp_path) == ("from-variable", "RAY_AUTH_TOKEN")
    assert read_token({"RAY_AUTH_TOKEN_PATH": str(named)}, tmp_path) == (
        "from-named-file",
        f"RAY_AUTH_TOKEN_PATH={named}",
    )
    assert read_token({}, tmp_path) == ("from-default-file", str(default))


def test_a_missing_token_names_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"):
        read_token({}, tmp_path)
    with pytest.raises(SubmitError, match="RAY_AUTH_TOKEN_PATH names '/nope', which is not a file"):
        read_token({"RAY_AUTH_TOKEN_PATH": "/nope"}, tmp_path)


def test_the_address_is_the_flag_then_the_environment_then_the_local_default() -> None:
    env = {"RAY_API_SERVER_ADDRESS": "http://head:8265/", "RAY_ADDRESS": "http://other:8265"}
    assert resolve_address("https://ray.example:443", env) == "https://ray.example:443"
    assert resolve_address(None, env) == "http://head:8265"
    assert resolve_address(None, {"RAY_ADDRESS": "http://other:8265"}) == "http://other:8265"
    assert resolve_address("auto", {}) == "http://127.0.0.1:8265"
    with pytest.raises(SubmitError, match="--address '10.0.0.1:6379' is not the dashboard's"):
        resolve_address("10.0.0.1:6379", {})


@pytest.mark.parametrize("value", ["127.0.0.1:48283", "auto", "ray://head:10001"])
def test_a_ray_address_that_is_no_dashboard_url_is_refused_not_replaced_by_the_default(value: str) -> None:
    """RAY_ADDRESS=127.0.0.1:GCS_PORT (the first line `raytrade cluster up` prints) was silently
    replaced by http://127.0.0.1:8265, and the token went to whatever listened there."""
    for address in (None, "auto"):
        with pytest.raises(SubmitError) as refused:
            resolve_address(address, {"RAY_ADDRESS": value})
        assert str(refused.value) == (
            f"RAY_ADDRESS={value!r} is not the dashboard's http(s):// URL that submit sends the token to: "
            "set RAY_API_SERVER_ADDRESS to the dashboard URL (the `export RAY_API_SERVER_ADDRESS=...` "
            "line `raytrade cluster up` prints) or pass --address"
        )
    both = {"RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9000", "RAY_ADDRESS": value}
    assert resolve_address(None, both) == "http://127.0.0.1:9000"


def test_submit_with_a_gcs_ray_address_sends_the_token_nowhere(
    monkeypatch: pytest.MonkeyPatch, recording_api: tuple[str, list[str | None]]
) -> None:
    from click.testing import CliRunner

    from raytrade.cluster import submit as submit_module
    from raytrade.cluster.cli import main

    url, seen = recording_api
    monkeypatch.setattr(submit_module, "DEFAULT_ADDRESS", url)  # stands in for whatever holds 8265
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:48283")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 64)
    result = CliRunner().invoke(main, ["submit", "--", "raytrade", "demo"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: RAY_ADDRESS='127.0.0.1:48283'")
    assert seen == []


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("http://127.0.0.1:notaport", "error: --address='http://127.0.0.1:notaport' has no valid port"),
        ("http://127.0.0.1:99999", "error: --address='http://127.0.0.1:99999' has no valid port"),
        ("http://:8265", "error: --address='http://:8265' names no host"),
    ],
)
def test_a_malformed_address_is_one_line_naming_the_option(address: str, message: str) -> None:
    """A non-numeric port ended in http.client.InvalidURL's traceback."""
    from click.testing import CliRunner

    from raytrade.cluster.cli import main

    result = CliRunner().invoke(main, ["submit", "--address", address, "--", "raytrade", "demo"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(message)


def test_the_logs_command_follows_the_job_with_token_auth() -> None:
    assert logs_command("http://h:8265", "raysubmit_X") == (
        "RAY_AUTH_MODE=token ray job logs -f --address http://h:8265 raysubmit_X"
    )


def test_the_runtime_env_carries_the_code_and_no_secret(tmp_path: Path) -> None:
    runtime_env = build_runtime_env(tmp_path / "raytrade")
    assert runtime_env == {"py_modules": [str(tmp_path / "raytrade")], "env_vars": {"PYTHONUNBUFFERED": "1"}}
    check_no_secrets(runtime_env, SECRETS)  # passes
    assert not any(v in json.dumps(runtime_env) for v in SECRETS.values())


def test_a_runtime_env_with_a_secret_is_refused() -> None:
    with pytest.raises(SubmitError, match=r"secret variables \['WANDB_API_KEY'\]"):
        check_no_secrets({"env_vars": {"WANDB_API_KEY": "x"}}, {})
    leaked = {"env_vars": {"OPTS": f"--key {SECRETS['RAYTRADE_SERVE_TOKEN']}"}}
    with pytest.raises(SubmitError, match=r"the value of \['RAYTRADE_SERVE_TOKEN'\]"):
        check_no_secrets(leaked, SECRETS)


def test_the_shipped_wheel_holds_exactly_the_checkouts_modules(tmp_path: Path) -> None:
    root = project_root()
    package = unpack_wheel(build_wheel(root, tmp_path / "build"), tmp_path / "site")
    for folder in ("cluster", "envs", "replay", "serve"):
        shipped = {p.relative_to(package / folder) for p in (package / folder).rglob("*.py")}
        source = {p.relative_to(root / folder) for p in (root / folder).rglob("*.py")}
        assert shipped == source, folder
    assert not (package / "__init__.py").exists()  # raytrade stays a namespace package


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def _checkout_copy(dest: Path) -> Path:
    """A copy of this checkout's pyproject, README and package folders (the worktree stays untouched)."""
    root = project_root()
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, dest / name)
    for folder in package_folders(root):
        shutil.copytree(root / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_files_kept_next_to_the_configs_are_not_shipped_and_the_wheel_passes_its_check(
    tmp_path: Path,
) -> None:
    """An untracked settings file or token in cluster/configs/ used to ride along (package-data
    ``configs/*``) into the wheel submit uploads to the cluster's GCS."""
    copy = _checkout_copy(tmp_path / "checkout")
    (copy / "cluster" / "configs" / "settings.env").write_text("ALPACA_SECRET_KEY=live-secret-0123456789\n")
    (copy / "cluster" / "configs" / "ray_auth_token").write_text("deadbeef" * 8)
    wheel = build_wheel(copy, tmp_path / "build")
    configs = sorted(n for n in zipfile.ZipFile(wheel).namelist() if "/configs/" in n)
    assert configs == package_data(copy)
    assert [n.rsplit("/", 1)[1] for n in configs] == [
        "Dockerfile",
        "cluster-launcher.yaml",
        "raycluster.yaml",
        "rayjob.yaml",
        "rayservice.yaml",
    ]
    check_wheel(wheel, package_data(copy), SECRETS)  # passes


def _wheel(tmp_path: Path, files: dict[str, str]) -> Path:
    wheel = tmp_path / "raytrade-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {
            "raytrade/cluster/cli.py": "",
            "raytrade-0.1.0.dist-info/RECORD": "",
            **files,
        }.items():
            archive.writestr(name, text)
    return wheel


@pytest.mark.parametrize(
    "name",
    [
        "raytrade/cluster/configs/settings.env",  # not a module nor a named config
        "raytrade/cluster/configs/prod.yaml",
        "raytrade/cluster/configs/ray_auth_token",
        "raytrade/cluster/.aws/credentials.py",  # a module, but in a credentials folder
        "raytrade/serve/secrets.py",
    ],
)
def test_a_wheel_with_a_file_that_is_not_code_or_is_named_like_a_secret_is_refused(
    tmp_path: Path, name: str
) -> None:
    data = ["raytrade/cluster/configs/rayjob.yaml"]
    check_wheel(_wheel(tmp_path, {data[0]: "kind: RayJob"}), data, SECRETS)  # passes
    with pytest.raises(SubmitError, match=f"would ship .*{name}.*only modules and the config files"):
        check_wheel(_wheel(tmp_path, {name: "x = 1"}), data, SECRETS)


def test_a_wheel_holding_a_known_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {"raytrade/serve/app.py": f"TOKEN = {SECRETS['RAYTRADE_SERVE_TOKEN']!r}"})
    with pytest.raises(SubmitError) as refused:
        check_wheel(wheel, [], SECRETS)
    assert str(refused.value) == (
        f"{wheel.name}'s raytrade/serve/app.py holds the value of ['RAYTRADE_SERVE_TOKEN']"
    )


@pytest.mark.parametrize(
    "arg",
    [
        f"s3://AKIAEXAMPLE:{AWS_SECRET}@bucket/store",
        f"--out=s3://AKIAEXAMPLE:{AWS_SECRET}@bucket/store",
        f"s3://AKIAEXAMPLE:{AWS_SECRET.replace('/', '@')}@bucket/store",
    ],
)
def test_a_command_with_uri_credentials_is_refused_without_showing_them(arg: str) -> None:
    command = ["raytrade", "ingest", "--source", "synthetic", "--out", arg]
    with pytest.raises(SubmitError, match="carries credentials") as refused:
        check_entrypoint(command, {})
    assert "AKIAEXAMPLE" not in str(refused.value) and "K7MDENG" not in str(refused.value)
    assert "bucket/store" in str(refused.value)


def test_a_command_with_the_value_of_a_known_secret_is_refused_naming_only_the_variable() -> None:
    secrets = known_secrets({"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "HOME": "/home/someone"}, None)
    assert secrets == {"AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    command = ["raytrade", "ingest", "--source", "alpaca", "--symbols", f"AAPL,{AWS_SECRET}"]
    with pytest.raises(SubmitError) as refused:
        check_entrypoint(command, secrets)
    assert str(refused.value) == (
        "the command carries the value of ['AWS_SECRET_ACCESS_KEY'], which the job's entrypoint would store"
    )
    plain = ["raytrade", "serve", "--model", "alpha@2", "--registry", "s3://bucket/reg?region=us-east-1"]
    check_entrypoint(plain, secrets)  # passes: NAME@VERSION is not a credential


@pytest.mark.parametrize(
    "secret", ["it's-a-long-serve-token-0123", 'say "hi" token 0123456789', "a b\\c$d`e"]
)
def test_a_known_secret_with_shell_quoting_characters_is_found_in_the_command(secret: str) -> None:
    """The secret was looked for in shlex.join(command) only, where a ' becomes '"'"'."""
    secrets = known_secrets({"RAYTRADE_SERVE_TOKEN": secret}, None)
    with pytest.raises(SubmitError, match=r"\['RAYTRADE_SERVE_TOKEN'\]") as refused:
        check_entrypoint(["raytrade", "tune", "--name", secret], secrets)
    assert secret not in str(refused.value)
    with pytest.raises(SubmitError, match=r"\['RAYTRADE_SERVE_TOKEN'\]"):
        check_entrypoint(["raytrade", "tune", "--name", f"x{secret}y"], secrets)


def test_a_variable_that_names_where_a_secret_is_kept_is_not_itself_a_secret(tmp_path: Path) -> None:
    """RAY_AUTH_TOKEN_PATH=/etc/raytrade/ray_auth_token is the path the shipped launcher config names:
    its value counted as a secret, so submit refused its own wheel. The file's content is the secret."""
    launcher_path = "/etc/raytrade/ray_auth_token"
    assert launcher_path in (project_root() / "cluster" / "configs" / "cluster-launcher.yaml").read_text()
    assert known_secrets({"RAY_AUTH_TOKEN_PATH": launcher_path, "SSH_KEY_FILE": "/nowhere/id"}, None) == {}
    # a value that is no path is a secret after all, whatever the variable's name
    assert known_secrets({"STRIPE_KEY_PATH": "sk_live_0123456789abcdef"}, None) == {
        "STRIPE_KEY_PATH": "sk_live_0123456789abcdef"
    }
    token_file = tmp_path / "ray_auth_token"
    token_file.write_text("token-held-in-the-file-0123456789\n")
    secrets = known_secrets({"RAY_AUTH_TOKEN_PATH": str(token_file)}, None)
    assert secrets == {"RAY_AUTH_TOKEN_PATH (its file)": "token-held-in-the-file-0123456789"}
    data = ["raytrade/cluster/configs/cluster-launcher.yaml"]
    launcher = (project_root() / "cluster" / "configs" / "cluster-launcher.yaml").read_text()
    check_wheel(_wheel(tmp_path, {data[0]: launcher}), data, {**SECRETS, **secrets})  # passes
    with pytest.raises(SubmitError, match=r"RAY_AUTH_TOKEN_PATH \(its file\)"):
        check_entrypoint(["raytrade", "summary", "token-held-in-the-file-0123456789"], secrets)


def test_the_settings_files_secrets_are_known_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raytrade.cluster.settings import load_settings

    settings_file = tmp_path / "prod.conf"  # any name: RAYTRADE_SETTINGS_FILE names it
    settings_file.write_text("ALPACA_SECRET_KEY=alpaca-from-the-file-0123456789\n")
    for name in ("ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY", "RAYTRADE_REGISTRY_HMAC_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAYTRADE_SETTINGS_FILE", str(settings_file))
    secrets = known_secrets({}, load_settings())
    assert secrets == {"settings.alpaca_secret_key": "alpaca-from-the-file-0123456789"}
    with pytest.raises(SubmitError, match=r"\['settings.alpaca_secret_key'\]"):
        check_entrypoint(["raytrade", "summary", "alpaca-from-the-file-0123456789"], secrets)


def test_a_settings_file_inside_a_shipped_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy2(project_root() / "pyproject.toml", root / "pyproject.toml")
    inside = root / "cluster" / "configs" / "prod.conf"
    with pytest.raises(
        SubmitError, match=r"RAYTRADE_SETTINGS_FILE=.*prod.conf lies in cluster/, which submit"
    ):
        check_settings_file({"RAYTRADE_SETTINGS_FILE": str(inside)}, root)
    check_settings_file({"RAYTRADE_SETTINGS_FILE": str(root / "prod.conf")}, root)  # the root is not shipped
    check_settings_file({"RAYTRADE_SETTINGS_FILE": str(tmp_path / "prod.conf")}, root)
    check_settings_file({}, root)


def test_submit_refuses_a_credential_in_the_command_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray.job_submission

    from raytrade.cluster import submit as submit_module

    sent: list[dict[str, Any]] = []

    class _Client:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def submit_job(self, **kwargs: Any) -> str:
            sent.append(kwargs)
            return "raysubmit_fake"

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    for out in (f"s3://AKIAEXAMPLE:{AWS_SECRET}@bucket/store", f"/data/{AWS_SECRET}"):
        command = ["raytrade", "ingest", "--source", "synthetic", "--out", out]
        with pytest.raises(SubmitError):
            submit_module.submit(command, "http://127.0.0.1:1", "token", say=lambda _: None)
    assert sent == []


class _Record(http.server.BaseHTTPRequestHandler):
    seen: list[str | None]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_api() -> Iterator[tuple[str, list[str | None]]]:
    """A job API stand-in that records the Authorization header of every request."""
    seen: list[str | None] = []
    handler = type("_Recording", (_Record,), {"seen": seen})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(403 if self.headers.get("Authorization") != "Bearer right" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def job_api() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_refused_token_is_one_line_naming_its_source(job_api: str) -> None:
    check_token(job_api, "right", "RAY_AUTH_TOKEN")
    with pytest.raises(SubmitError) as refused:
        check_token(job_api, "wrong", "RAY_AUTH_TOKEN_PATH=/t")
    assert (
        str(refused.value)
        == f"the cluster at {job_api} refused the token from RAY_AUTH_TOKEN_PATH=/t (HTTP 403)"
    )


def test_the_token_goes_in_clear_only_to_a_loopback_address_unless_allowed() -> None:
    """`raytrade submit` sent `Authorization: Bearer <token>` over plain http to any host."""
    from raytrade.cluster.submit import check_token_transport

    for url in ("https://ray.example:443", "http://127.0.0.1:8265", "http://localhost:8265"):
        check_token_transport(url, allow_plain_http=False)
    with pytest.raises(SubmitError) as refused:
        check_token_transport("http://10.0.0.10:8265", allow_plain_http=False)
    assert str(refused.value).startswith(
        "--address='http://10.0.0.10:8265' must use https:// (plain http:// is allowed only for "
        "127.0.0.1/localhost): the cluster token would cross the network in clear. Tunnel it (`ssh -N -L "
        "8265:127.0.0.1:8265 10.0.0.10`"
    )
    check_token_transport("http://10.0.0.10:8265", allow_plain_http=True)


def test_submit_refuses_a_plain_http_head_before_reading_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from raytrade.cluster.cli import main

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    result = CliRunner().invoke(
        main, ["submit", "--address", "http://10.0.0.10:8265", "--", "raytrade", "demo"]
    )
    assert result.exit_code == 2 and "the cluster token would cross the network in clear" in result.output
