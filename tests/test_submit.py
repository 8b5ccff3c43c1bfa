"""``raytrade submit``: entrypoint, token, address, shipped code and runtime env, without a cluster.

(A job submitted to a real token-auth cluster is tested in ``tests/test_local_cluster.py``, which
starts that cluster once for its tests.)
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raytrade.cluster.submit import (
    SubmitError,
    build_runtime_env,
    build_wheel,
    check_no_secrets,
    check_token,
    entrypoint,
    logs_command,
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
    assert resolve_address("auto", {"RAY_ADDRESS": "10.0.0.1:6379"}) == "http://127.0.0.1:8265"
    with pytest.raises(SubmitError, match="--address '10.0.0.1:6379' is not the dashboard's"):
        resolve_address("10.0.0.1:6379", {})


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
