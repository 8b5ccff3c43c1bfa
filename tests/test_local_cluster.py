"""``raytrade cluster up|status|down`` and ``raytrade submit`` against it.

The unit tests check the token file, the node command lines and the stopping of process groups
without Ray. The integration tests share one local cluster (head + 1 worker, token auth, dashboard
on) started by ``raytrade cluster up`` in a subprocess with HOME in a temp folder, separate from the
session's Ray, and stopped by ``raytrade cluster down`` afterwards: status shows both nodes, a
submitted ``raytrade summary`` job finishes with its output readable (a smoke tune does not fit the
60 s this test may take on 2 shared cores), and a wrong token fails with one line.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raytrade.cluster.local_cluster import (
    HEAD_PORT_OPTIONS,
    NODE_PORT_OPTIONS,
    ClusterConfig,
    ClusterState,
    LocalClusterError,
    NodeProcess,
    _stop_nodes,
    ensure_token,
    read_state,
    start_command,
    up_command,
)
from raytrade.cluster.options import option_drift

REPO = Path(__file__).resolve().parents[1]


def test_the_token_file_is_made_private_and_kept(tmp_path: Path) -> None:
    path = ensure_token(tmp_path / "cluster")
    token = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert ensure_token(tmp_path / "cluster").read_text() == token


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = ensure_token(tmp_path)
    path.chmod(0o644)
    with pytest.raises(LocalClusterError, match="has mode 0644; it must be 0600"):
        ensure_token(tmp_path)


def test_every_port_of_a_node_is_given_and_the_token_is_not_on_the_command_line(tmp_path: Path) -> None:
    names = HEAD_PORT_OPTIONS + NODE_PORT_OPTIONS
    ports = {name: 40000 + i for i, name in enumerate(names)}
    head = start_command(ClusterConfig(), tmp_path, ports, None)
    worker = start_command(ClusterConfig(), tmp_path, ports, "127.0.0.1:40000")
    assert {a.split("=")[0][2:] for a in head if a.split("=")[0][2:] in names} == set(names)
    assert "--head" in head and "--include-dashboard=true" in head and "--block" in head
    assert "--address=127.0.0.1:40000" in worker and "--head" not in worker
    assert {a.split("=")[0][2:] for a in worker if a.split("=")[0].endswith("port")} == set(NODE_PORT_OPTIONS)
    token = ensure_token(tmp_path).read_text()
    assert not any(token in a for a in head + worker)


def test_up_flags_agree_with_the_cluster_config() -> None:
    assert option_drift(up_command, ClusterConfig, not_flags={"dashboard"}) == []


def test_stopping_a_node_kills_its_whole_process_group(tmp_path: Path) -> None:
    # the leader dies on SIGTERM; its child ignores SIGTERM, as a busy Ray daemon may
    proc = subprocess.Popen(["sh", "-c", "(trap '' TERM; sleep 60) & exec sleep 61"], start_new_session=True)
    time.sleep(0.3)
    node = NodeProcess(role="head", pid=proc.pid, log=tmp_path / "log")
    killed = _stop_nodes((node,), grace_s=0.5)
    proc.wait(timeout=5)
    assert killed == [proc.pid]  # something was left in the group after the grace period
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process of the group survived")


# ------------------------------------------------------------------------------ integration


def _cli(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raytrade.cluster.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterState, dict[str, str]]]:
    """A local cluster (head + 1 worker) of ``raytrade cluster up``, and the environment of a shell
    that reaches it; ``raytrade cluster down`` afterwards, checked to leave no node process."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    up = _cli(["cluster", "up", "--workers", "1"], env)
    assert up.returncode == 0, up.stdout + up.stderr
    state = read_state(home / ".raytrade" / "cluster")
    assert state is not None and state.dashboard_url is not None
    shell = env | state.environment() | {"RAY_API_SERVER_ADDRESS": state.dashboard_url}
    try:
        yield state, shell
    finally:
        down = _cli(["cluster", "down"], env)
        assert down.returncode == 0, down.stdout + down.stderr
        for node in state.nodes:
            with pytest.raises(ProcessLookupError):
                os.killpg(node.pid, 0)
        assert not state.temp_dir.exists()


@pytest.mark.slow
@pytest.mark.ray
def test_status_shows_the_head_and_the_worker(token_cluster: tuple[ClusterState, dict[str, str]]) -> None:
    from raytrade.cluster.local_cluster import ClusterStatus

    state, shell = token_cluster
    done = _cli(["cluster", "status", "--json"], shell)
    assert done.returncode == 0, done.stderr[-2000:]
    status = ClusterStatus.model_validate_json(done.stdout)
    assert [(n.head, n.alive) for n in status.nodes] == [(True, True), (False, True)]
    assert status.total["CPU"] == 2.0
    assert status.address == state.address


@pytest.mark.slow
@pytest.mark.ray
def test_a_submitted_command_finishes_and_its_output_is_readable(
    token_cluster: tuple[ClusterState, dict[str, str]], synthetic_store: Path
) -> None:
    _, shell = token_cluster
    done = _cli(["submit", "--follow", "--", "raytrade", "summary", str(synthetic_store), "--json"], shell)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"^job: (raysubmit_\w+)$", done.stdout, re.M)
    assert job_id is not None, done.stdout
    assert f"ray job logs -f --address {shell['RAY_API_SERVER_ADDRESS']} {job_id.group(1)}" in done.stdout
    assert f"dashboard: {shell['RAY_API_SERVER_ADDRESS']}/#/jobs/{job_id.group(1)}" in done.stdout
    assert re.search(r'"symbols": 14', done.stdout), done.stdout[-3000:]  # 12 equities + 2 crypto
    assert done.stdout.rstrip().endswith(f"job {job_id.group(1)}: SUCCEEDED")


@pytest.mark.slow
@pytest.mark.ray
def test_a_wrong_token_fails_with_one_line(token_cluster: tuple[ClusterState, dict[str, str]]) -> None:
    _, shell = token_cluster
    wrong = shell | {"RAY_AUTH_TOKEN": "0" * 64}
    done = _cli(["submit", "--", "raytrade", "summary", "/data/store"], wrong)
    assert done.returncode == 2
    address = shell["RAY_API_SERVER_ADDRESS"]
    assert done.stderr.strip().splitlines() == [
        f"error: the cluster at {address} refused the token from RAY_AUTH_TOKEN (HTTP 403)"
    ]
    assert done.stdout == ""


def test_a_local_ray_starts_with_its_dashboard_unless_asked_not_to(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from raytrade.cluster.local_cluster import init_ray

    calls: list[dict[str, object]] = []

    class Context:
        dashboard_url = "127.0.0.1:8265"

    def fake_init(**kwargs: object) -> Context:
        calls.append(kwargs)
        return Context()

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    assert init_ray(None, dashboard=True, num_cpus=2)
    assert "Ray dashboard: http://127.0.0.1:8265" in capsys.readouterr().out
    init_ray(None, dashboard=False)
    init_ray("auto", dashboard=True)
    assert calls == [
        {"num_cpus": 2, "include_dashboard": True, "log_to_driver": False},
        {"num_cpus": None, "include_dashboard": False, "log_to_driver": False},
        {"address": "auto", "log_to_driver": False},
    ]


def test_up_refuses_while_the_recorded_head_runs(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from raytrade.cluster.local_cluster import STATE_FILE, cluster_up

    alive = NodeProcess(role="head", pid=os.getpid(), log=tmp_path / "head.log")
    state = ClusterState(
        address="127.0.0.1:1",
        dashboard_url=None,
        token_file=tmp_path / "token",
        temp_dir=tmp_path / "ray",
        nodes=(alive,),
        started_at=datetime.now(UTC),
    )
    (tmp_path / STATE_FILE).write_text(state.model_dump_json())
    with pytest.raises(LocalClusterError, match=r"already up at 127.0.0.1:1 .*raytrade cluster down"):
        cluster_up(ClusterConfig(), tmp_path)


def test_a_node_that_exits_while_starting_is_tried_once_more(tmp_path: Path) -> None:
    from raytrade.cluster.local_cluster import STARTED_MARKER, _start_node_retrying

    flag, log = tmp_path / "tried", tmp_path / "worker.log"
    script = f"if [ -e {flag} ]; then echo '{STARTED_MARKER}'; exec sleep 30; else touch {flag}; exit 1; fi"
    node = _start_node_retrying(["sh", "-c", script], "worker", log, dict(os.environ), timeout_s=20)
    try:
        assert (tmp_path / "worker.log.1").exists() and STARTED_MARKER in log.read_text()
    finally:
        _stop_nodes((node,), grace_s=0.5)
