"""``raytrade cluster up|status|down``, ``raytrade submit`` and Tune's placement against it.

The unit tests check the token file, the node command lines, the state file, the status and
placement tables and the stopping of process groups without Ray. The integration tests share one
local cluster (head + 1 worker, 2 CPUs each, token auth, dashboard on) started ONCE by ``raytrade
cluster up`` in a subprocess with HOME in a temp folder, separate from the session's Ray: status
shows both nodes and their resources; a smoke ``raytrade tune`` of one trial with one env runner
(two 1-CPU bundles, which either 2-CPU node could hold alone, so only SPREAD separates them) runs its
learner and its env runner on different nodes, as Ray's actor table (the dashboard's state API)
records them, and its summary says so; a submitted ``raytrade summary``
job finishes with its output readable; a wrong token fails with one line; and ``raytrade cluster
down`` (the last test, and the fixture's teardown whatever happened) leaves no process of the
cluster. The placement test replaces the former ``test_two_nodes.py`` (a ``ray.cluster_utils``
cluster of its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import pytest

from raytrade.cluster.local_cluster import (
    HEAD_PORT_OPTIONS,
    NODE_PORT_OPTIONS,
    ClusterConfig,
    ClusterState,
    ClusterStatus,
    LocalClusterError,
    NodeProcess,
    _proc_stat,
    _stop_nodes,
    ensure_token,
    read_state,
    start_command,
    up_command,
)
from raytrade.cluster.options import option_drift
from raytrade.cluster.run_file import LEADERBOARD_FILE
from raytrade.envs.kernel_cache import kernel_cache_dir

# its own cluster, not the session's Ray: under pytest-xdist it runs beside the Ray tests' worker
pytestmark = pytest.mark.xdist_group("cluster")

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


def _cluster_processes(state: ClusterState) -> list[str]:
    """What still runs of ``state``'s cluster ("pid command line"): live processes in a node's
    process group, or naming the cluster's Ray temp folder on their command line (every Ray daemon
    of the cluster does); zombies count as gone."""
    groups = {n.pid for n in state.nodes}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        proc = _proc_stat(int(entry.name))
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc is not None and proc[0] != "Z" and (proc[1] in groups or str(state.temp_dir) in cmdline):
            found.append(f"{entry.name} {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterState, dict[str, str]]]:
    """A local cluster (head + 1 worker) of ``raytrade cluster up``, and the environment of a shell
    that reaches it. Whatever happened (a failed test, an ``up`` that timed out after recording its
    head), ``raytrade cluster down`` afterwards unless the last test did, checked to leave nothing."""
    home = tmp_path_factory.mktemp("home")
    state_dir = home / ".raytrade" / "cluster"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    # the session's caches, not the temporary HOME's: there every node's workers would compile the
    # simulator's kernels again (~16 s of CPU a process) and every process that plots would build
    # matplotlib's font cache, neither of which these tests are about
    env.setdefault("RAYTRADE_KERNEL_CACHE", str(kernel_cache_dir().parent))
    env.setdefault("MPLCONFIGDIR", matplotlib.get_configdir())
    try:
        # three tries per node: Ray's fixed 30 s start-up wait runs out on this shared, loaded machine
        up = _cli(
            ["cluster", "up", "--workers", "1", "--cpus-per-node", "2", "--start-attempts", "3"],
            env,
            timeout=400,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        state = read_state(state_dir)
        assert state is not None and state.dashboard_url is not None
        yield state, env | state.environment() | {"RAY_API_SERVER_ADDRESS": state.dashboard_url}
    finally:
        left = read_state(state_dir)  # None: nothing was started, or the last test stopped it
        if left is not None:
            down = _cli(["cluster", "down"], env)
            assert down.returncode == 0, down.stdout + down.stderr
            assert _cluster_processes(left) == []


@pytest.fixture(scope="module")
def cluster_status(token_cluster: tuple[ClusterState, dict[str, str]]) -> ClusterStatus:
    """``raytrade cluster status --json`` of the module's cluster, read once."""
    _, shell = token_cluster
    done = _cli(["cluster", "status", "--json"], shell)
    assert done.returncode == 0, done.stderr[-2000:]
    return ClusterStatus.model_validate_json(done.stdout)


@pytest.mark.slow
@pytest.mark.ray
def test_status_shows_the_head_and_the_worker(
    token_cluster: tuple[ClusterState, dict[str, str]], cluster_status: ClusterStatus
) -> None:
    state, _ = token_cluster
    status = cluster_status
    assert [(n.head, n.alive) for n in status.nodes] == [(True, True), (False, True)]
    assert status.total["CPU"] == 4.0
    assert [n.resources["CPU"] for n in status.nodes] == [2.0, 2.0]
    assert all(n.available is not None and "CPU" in n.available for n in status.nodes)
    assert status.address == state.address


def _actor_nodes(state: ClusterState) -> list[tuple[str, str]]:
    """(class name, node id) of every actor of the cluster, dead ones included, as Ray's state API
    on the dashboard lists them (the token sent as ``cluster.submit`` sends it)."""
    import urllib.request

    assert state.dashboard_url is not None
    token = state.token_file.read_text().strip()
    request = urllib.request.Request(
        f"{state.dashboard_url}/api/v0/actors?limit=1000&detail=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        listed = json.loads(reply.read())["data"]["result"]["result"]
    return [(actor["class_name"], actor["node_id"]) for actor in listed]


@pytest.mark.slow
@pytest.mark.ray
def test_a_trial_with_an_env_runner_spreads_it_to_the_other_node_and_says_so(
    token_cluster: tuple[ClusterState, dict[str, str]],
    cluster_status: ClusterStatus,
    synthetic_store: Path,
    tmp_path: Path,
) -> None:
    # one trial of 1 + 1 one-CPU bundles (learner, env runner) on two 2-CPU nodes: either node could
    # hold both (PACK would put them together), so two nodes means the SPREAD strategy did it
    state, shell = token_cluster
    assert [n.resources["CPU"] for n in cluster_status.nodes] == [2.0, 2.0]
    args = ["tune", "--spec", "ppo", "--replay", str(synthetic_store), "--smoke", "--num-samples", "1"]
    args += ["--iterations", "1", "--env-runners", "1", "--storage", str(tmp_path), "--no-wandb"]
    done = _cli(args, shell, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "ppo-smoke" / LEADERBOARD_FILE).read_text())
    placed = _actor_nodes(state)
    learner = [node for name, node in placed if name == "PPO"]
    runners = [node for name, node in placed if name == "SingleAgentEnvRunner"]
    head, worker = (n.node_id for n in cluster_status.nodes)
    assert (len(learner), len(runners)) == (1, 1), placed
    assert {learner[0], runners[0]} == {head, worker}  # Ray's own record: two nodes
    assert (row["node_id"], row["env_runner_node_ids"]) == (learner[0], runners)  # what the trial said
    summary = [
        "trials by node (1 node; ids as in raytrade cluster status):",
        f"  {learner[0][:12]}  {row['trial']}",
        "env runners by trial (learner node, then each env runner's node, as they reported):",
        f"  {row['trial']}  learner {learner[0][:12]}  env runners {runners[0][:12]}  (2 nodes)",
    ]
    assert "\n".join(summary) in done.stdout, done.stdout[-3000:]


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


@pytest.mark.slow
@pytest.mark.ray
def test_down_leaves_no_process_of_the_cluster(token_cluster: tuple[ClusterState, dict[str, str]]) -> None:
    # the module's last test of the cluster: it stops it, the fixture then finds nothing to stop
    state, shell = token_cluster
    done = _cli(["cluster", "down"], shell)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"local cluster at {state.address} stopped (2 nodes)\n"
    assert _cluster_processes(state) == []
    assert not state.temp_dir.exists()
    assert read_state(state.token_file.parent) is None


def test_a_local_ray_starts_with_its_dashboard_unless_asked_not_to(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from raytrade.cluster import local_cluster
    from raytrade.cluster.local_cluster import init_ray

    calls: list[dict[str, object]] = []

    class Context:
        dashboard_url = "127.0.0.1:8265"

    def fake_init(**kwargs: object) -> Context:
        calls.append(kwargs)
        return Context()

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(local_cluster, "answers", lambda address: True)  # what ray.init is asked, here
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert init_ray(None, dashboard=True, num_cpus=2)
    assert "Ray dashboard: http://127.0.0.1:8265" in capsys.readouterr().out
    init_ray(None, dashboard=False)
    init_ray("auto", dashboard=True)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a Ray job's entrypoint
    init_ray(None, dashboard=True, num_cpus=2)
    # "local": a fresh Ray, never the cluster a `ray start` elsewhere on the machine last recorded
    # (Ray's own default for no address)
    assert calls == [
        {"address": "local", "num_cpus": 2, "include_dashboard": True, "log_to_driver": False},
        {"address": "local", "num_cpus": None, "include_dashboard": False, "log_to_driver": False},
        {"address": "auto", "log_to_driver": False},
        {"address": "10.0.0.5:6379", "log_to_driver": False},
    ]


@pytest.mark.timeout(30)
def test_an_address_where_nothing_answers_fails_in_one_line_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RAY_ADDRESS of a cluster since stopped: ray.init retried it for minutes, printing only
    "Failed to connect to GCS"; now one line, without asking Ray."""
    import socket

    import ray

    from raytrade.cluster.local_cluster import answers, init_ray

    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail(f"ray.init asked: {kw}"))
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(LocalClusterError, match=f"none answered at '127.0.0.1:{port}'.*raytrade cluster up"):
        init_ray(None, dashboard=False)
    assert time.monotonic() - started < 10
    with pytest.raises(LocalClusterError, match=f"none answered at 'ray://127.0.0.1:{port}'"):
        init_ray(f"ray://127.0.0.1:{port}", dashboard=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert answers(f"127.0.0.1:{listening.getsockname()[1]}")
    assert answers("auto")  # Ray finds that one itself


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


def test_a_node_is_tried_as_many_times_as_asked(tmp_path: Path) -> None:
    from raytrade.cluster.local_cluster import NodeStartError, _start_node_retrying

    tries, log = tmp_path / "tries", tmp_path / "head.log"
    script = f"echo x >> {tries}; exit 1"
    with pytest.raises(NodeStartError, match="the head node exited with status 1 while starting"):
        _start_node_retrying(["sh", "-c", script], "head", log, dict(os.environ), timeout_s=20, attempts=3)
    assert tries.read_text() == "x\nx\nx\n"
    assert sorted(p.name for p in tmp_path.glob("head.log*")) == ["head.log", "head.log.1", "head.log.2"]


def test_up_records_each_node_as_soon_as_it_is_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an `up` killed while a worker starts must leave the head recorded, for `down` to stop it
    from raytrade.cluster import local_cluster

    recorded_while_starting: list[ClusterState | None] = []

    def start(
        argv: list[str], role: str, log: Path, env: dict[str, str], timeout_s: float, attempts: int
    ) -> NodeProcess:
        recorded_while_starting.append(read_state(tmp_path))
        proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        return NodeProcess(role=role, pid=proc.pid, log=log)  # type: ignore[arg-type]

    monkeypatch.setattr(local_cluster, "_start_node_retrying", start)
    state = local_cluster.cluster_up(ClusterConfig(workers=2), tmp_path)
    try:
        before_head, before_worker_1, before_worker_2 = recorded_while_starting
        assert before_head is None
        assert before_worker_1 is not None and before_worker_1.nodes == state.nodes[:1]
        assert before_worker_2 is not None and before_worker_2.nodes == state.nodes[:2]
        assert read_state(tmp_path) == state and [n.role for n in state.nodes] == ["head", "worker", "worker"]
    finally:
        _stop_nodes(state.nodes, grace_s=0.5)
        shutil.rmtree(state.temp_dir, ignore_errors=True)


def test_up_that_fails_at_a_worker_stops_the_head_and_leaves_no_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster import local_cluster

    heads: list[NodeProcess] = []

    def start(
        argv: list[str], role: str, log: Path, env: dict[str, str], timeout_s: float, attempts: int
    ) -> NodeProcess:
        if role == "worker":
            raise LocalClusterError("the worker node did not start")
        proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        heads.append(NodeProcess(role="head", pid=proc.pid, log=log))
        return heads[-1]

    monkeypatch.setattr(local_cluster, "_start_node_retrying", start)
    with pytest.raises(LocalClusterError, match="the worker node did not start"):
        local_cluster.cluster_up(ClusterConfig(workers=1), tmp_path)
    assert read_state(tmp_path) is None
    assert not local_cluster._group_alive(heads[0].pid)


def test_status_shows_each_nodes_used_and_total_resources() -> None:
    from raytrade.cluster.local_cluster import NodeRow

    gib = 2.0**30
    head = NodeRow(
        node_id="aaaaaaaaaaaa0123",
        head=True,
        alive=True,
        address="127.0.0.1:1234",
        # a trial's placement group holds the head's CPU; its CPU_group_* copy is not shown twice
        resources={"CPU": 1.0, "memory": 2 * gib, "node:127.0.0.1": 1.0, "CPU_group_9f": 1.0},
        available={"CPU": 0.0, "memory": 1.5 * gib, "node:127.0.0.1": 1.0, "CPU_group_9f": 0.0},
    )
    dead = NodeRow(
        node_id="bbbbbbbbbbbb4567",
        head=False,
        alive=False,
        address="127.0.0.1:5678",
        resources={"CPU": 1.0, "memory": gib},
        available=None,
    )
    status = ClusterStatus(
        address="127.0.0.1:6379",
        dashboard_url="http://127.0.0.1:8265",
        nodes=[head, dead],
        total={"CPU": 1.0, "memory": 2 * gib, "CPU_group_9f": 1.0},
        available={"CPU": 0.0, "memory": 1.5 * gib},
    )
    assert status.render().splitlines() == [
        "cluster 127.0.0.1:6379: 1 of 2 nodes alive",
        "dashboard: http://127.0.0.1:8265",
        "node          role    alive  address               resources used/total",
        "aaaaaaaaaaaa  head    yes    127.0.0.1:1234        CPU=1/1 memory=0.5/2",
        "bbbbbbbbbbbb  worker  no     127.0.0.1:5678        CPU=-/1 memory=-/1",
        "resources used/total: CPU=1/1 memory=0.5/2",
    ]


def test_the_placement_summary_names_each_nodes_trials() -> None:
    from raytrade.cluster.local_cluster import format_placement
    from raytrade.cluster.run_file import LeaderboardRow

    def row(trial: str, node_id: str | None) -> LeaderboardRow:
        scores = dict.fromkeys(("objective", "sharpe", "sortino", "cvar_5", "total_return"), 0.1)
        return LeaderboardRow(
            trial=trial, trial_dir=trial, params={}, iteration=1, checkpoint=None, node_id=node_id,
            error=None, turnover=0.0, max_drawdown=0.0, **scores,
        )  # fmt: skip

    rows = [row("t_00002", "ffff00001111aaaa"), row("t_00000", None), row("t_00001", "0000ffff2222bbbb")]
    rows.append(row("t_00003", "ffff00001111aaaa"))
    assert format_placement(rows).splitlines() == [
        "trials by node (2 nodes; ids as in raytrade cluster status):",
        "  0000ffff2222  t_00001",
        "  ffff00001111  t_00002 t_00003",
        "  unknown       t_00000",
    ]
    one = "trials by node (1 node; ids as in raytrade cluster status):"
    assert format_placement(rows[:1]).splitlines()[0] == one


def test_the_placement_summary_names_the_node_of_each_env_runner() -> None:
    from raytrade.cluster.local_cluster import format_placement
    from raytrade.cluster.run_file import LeaderboardRow

    def row(trial: str, node_id: str, runners: list[str]) -> LeaderboardRow:
        scores = dict.fromkeys(("objective", "sharpe", "sortino", "cvar_5", "total_return"), 0.1)
        return LeaderboardRow(
            trial=trial, trial_dir=trial, params={}, iteration=1, checkpoint=None, node_id=node_id,
            env_runner_node_ids=runners, error=None, turnover=0.0, max_drawdown=0.0, **scores,
        )  # fmt: skip

    a, b = "aaaa00001111ffff", "bbbb00002222eeee"
    rows = [row("t_00000", a, [b, a]), row("t_00001", b, []), row("t_00002", a, [a])]
    assert format_placement(rows).splitlines() == [
        "trials by node (2 nodes; ids as in raytrade cluster status):",
        "  aaaa00001111  t_00000 t_00002",
        "  bbbb00002222  t_00001",
        "env runners by trial (learner node, then each env runner's node, as they reported):",
        "  t_00000  learner aaaa00001111  env runners bbbb00002222 aaaa00001111  (2 nodes)",
        "  t_00002  learner aaaa00001111  env runners aaaa00001111  (1 node)",
    ]


def test_an_exited_unreaped_node_counts_as_stopped() -> None:
    # a node this process started and stopped stays a zombie until reaped: stopping must not wait on it
    from raytrade.cluster.local_cluster import _alive, _group_alive

    proc = subprocess.Popen(["true"], start_new_session=True)
    deadline = time.monotonic() + 5
    while (_proc_stat(proc.pid) or ("", 0, 0))[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert (_proc_stat(proc.pid) or ())[:2] == ("Z", proc.pid)
        assert not _alive(proc.pid) and not _group_alive(proc.pid)
    finally:
        proc.wait(timeout=5)


def test_a_recorded_pid_now_anothers_process_is_left_alone(tmp_path: Path) -> None:
    """A cluster.json left by a cluster whose nodes died: its worker's pid now belonged to an unrelated
    program, which `raytrade cluster down` (that `status` advises) SIGKILLed with its whole group."""
    from raytrade.cluster.local_cluster import _proc_stat

    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        time.sleep(0.2)
        stat = _proc_stat(proc.pid)
        assert stat is not None
        stranger = NodeProcess(role="worker", pid=proc.pid, log=tmp_path / "log", started=stat[2] - 1)
        assert _stop_nodes((stranger,), grace_s=0.2) == []
        assert proc.poll() is None, "another program's process was stopped"
        ours = stranger.model_copy(update={"started": stat[2]})
        _stop_nodes((ours,), grace_s=2.0)
        assert proc.wait(timeout=5) is not None
    finally:
        proc.kill()
        proc.wait()


def test_a_node_starting_when_up_is_interrupted_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a node started left it running in its own session, unrecorded: nothing stopped it."""
    from raytrade.cluster import local_cluster

    started: list[int] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc.pid)
        return proc

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(local_cluster.subprocess, "Popen", popen)
    monkeypatch.setattr(local_cluster.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        local_cluster._start_node(["sleep", "60"], "head", tmp_path / "log", dict(os.environ), timeout_s=30)
    monkeypatch.undo()
    (pid,) = started
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and local_cluster._alive(pid):
        time.sleep(0.05)
    assert not local_cluster._alive(pid), "the node being started was left running"


def _fake_start(
    argv: list[str], role: str, log: Path, env: dict[str, str], timeout_s: float, attempts: int
) -> NodeProcess:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    return NodeProcess(role=role, pid=proc.pid, log=log)  # type: ignore[arg-type]


def test_a_relative_state_dir_gives_the_nodes_and_the_export_line_an_absolute_token_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up --state-dir rel` handed the nodes RAY_AUTH_TOKEN_PATH=rel/token and printed it."""
    from click.testing import CliRunner

    from raytrade.cluster import local_cluster

    envs: list[dict[str, str]] = []

    def start(argv: list[str], role: str, log: Path, env: dict[str, str], *rest: Any) -> NodeProcess:
        envs.append(env)
        return _fake_start(argv, role, log, env, *rest)

    monkeypatch.setattr(local_cluster, "_start_node_retrying", start)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(local_cluster.cluster_group, ["up", "--workers", "0", "--state-dir", "rel"])
    state = read_state(tmp_path / "rel")
    assert state is not None
    try:
        assert result.exit_code == 0, result.output
        token = tmp_path.resolve() / "rel" / "token"
        assert [env["RAY_AUTH_TOKEN_PATH"] for env in envs] == [str(token)]
        assert state.token_file == token and f"RAY_AUTH_TOKEN_PATH={token}\n" in result.output
    finally:
        _stop_nodes(state.nodes, grace_s=0.5)
        shutil.rmtree(state.temp_dir, ignore_errors=True)


def test_a_second_up_on_a_state_dir_an_up_holds_refuses_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `up` at once both found no cluster and both started one; the first was orphaned."""
    import fcntl

    from raytrade.cluster import local_cluster

    started: list[str] = []
    monkeypatch.setattr(local_cluster, "_start_node_retrying", lambda *a: started.append("node"))
    with open(tmp_path / local_cluster.UP_LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first `up`, still starting its nodes
        with pytest.raises(LocalClusterError) as refused:
            local_cluster.cluster_up(ClusterConfig(workers=0), tmp_path)
    assert str(refused.value) == (
        f"another `raytrade cluster up` is starting a cluster in {tmp_path.resolve()} (lock "
        f"{tmp_path.resolve() / 'up.lock'}): nothing done; `raytrade cluster status` once it has finished"
    )
    assert started == [] and read_state(tmp_path) is None


def test_a_state_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raytrade.cluster.local_cluster import cluster_group

    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(cluster_group, ["up", "--state-dir", str(tmp_path / "afile")])
    assert result.exit_code == 2
    assert result.output == f"error: --state-dir {str(tmp_path / 'afile')!r} is a file, not a folder\n"


def test_a_malformed_state_file_says_which_file_and_how_to_clear_it(tmp_path: Path) -> None:
    from raytrade.cluster.local_cluster import STATE_FILE

    (tmp_path / STATE_FILE).write_text('{"address": 1}')
    with pytest.raises(LocalClusterError) as refused:
        read_state(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{str(tmp_path / STATE_FILE)!r} is not a local cluster state file (")
    assert message.endswith("stop any Ray node it names, then delete it") and "\n" not in message
