"""``raytrade cluster up|down|status``: a multi-node Ray cluster on this one machine.

For trying multi-node placement (Tune's SPREAD, custom resources, a job submitted over HTTP) before
a real cluster. ``up`` starts a head and N worker nodes with ``ray start --block``, each on free
loopback ports; ``status`` lists the nodes and their resources; ``down`` stops exactly the
processes ``up`` started.

Design decisions
----------------
* Token auth is always on (``RAY_AUTH_MODE=token``). The token is 32 random bytes (hex) in a 0600
  file, ``~/.raytrade/cluster/token`` (in a 0700 folder), made on the first ``up`` and kept, so a
  shell that exported ``RAY_AUTH_TOKEN_PATH`` stays valid across restarts. The nodes read it through
  ``RAY_AUTH_TOKEN_PATH``: the token is never on a command line, in the state file or in the output.
  A token file readable by others is refused, not silently fixed.
* Every port a node opens is chosen free (GCS, dashboard, client server, node and object managers,
  the dashboard agent's HTTP and gRPC ports, the runtime-env agent, metrics): Ray's fixed defaults
  collide with any other Ray on the machine (its dashboard agent's 52365 does, and then jobs cannot
  be submitted).
* Ray's temp folder is a fresh short folder under the system temp dir (Unix socket paths must stay
  under 108 bytes), not ``/tmp/ray``: ``ray.init(address="auto")`` elsewhere on the machine keeps
  finding whatever it found before. Connect with the ``RAY_ADDRESS`` line ``up`` prints.
* Each ``ray start --block`` leads its own process group; ``~/.raytrade/cluster/cluster.json``
  (:class:`ClusterState`) records the leaders. ``down`` sends SIGTERM to the workers' leaders, then
  the head's (a node drains through the GCS, which must still be up), waits, and kills what is left
  of those process groups. It never runs ``ray stop``, which would stop every Ray on the machine.
  ``up`` records each node in the state file as soon as it is up, so an ``up`` killed half-way
  leaves nothing ``down`` cannot find.
* Where Tune put its trials is visible twice: ``status`` prints each node's resources as used/total
  (a trial's placement group holds its CPU on its node while it runs), and ``raytrade tune`` ends
  with :func:`format_placement`, each trial under the node it reported (``node_id``), and for a
  trial with env runners (``raytrade tune --env-runners K``) the node each runner reported. Nodes
  are named by id, never by address: all nodes of this cluster share one.
* Loopback only in part (Ray 2.60): ``ray start`` turns ``--node-ip-address=127.0.0.1`` into the
  machine's routable address (``services.resolve_ip_for_localhost``), so the GCS and the nodes are
  recorded under it, and Ray's gRPC servers (GCS, raylets, object managers) listen on every
  interface. Only the dashboard is bound to 127.0.0.1 (``--dashboard-host``). The one switch that
  keeps 127.0.0.1, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, makes ``ray start`` refuse worker
  nodes. What is reachable there is guarded by token auth only where Ray applies it: on a machine
  others can reach, firewall the ports ``up`` picked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import LocalPath
from raytrade.replay.errors import InputError, first_problem

if TYPE_CHECKING:
    from raytrade.cluster.run_file import LeaderboardRow

logger = logging.getLogger(__name__)

STATE_FILE: Final = "cluster.json"
TOKEN_FILE: Final = "token"
UP_LOCK_FILE: Final = "up.lock"
HOST: Final = "127.0.0.1"
STARTED_MARKER: Final = "Ray runtime started."
NODE_ID_SHOWN: Final = 12  # hex digits of a node id that status and the tune summary print
# ``ray start`` options that take a port; the head alone has the GCS, dashboard and client ports
NODE_PORT_OPTIONS: Final = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)
HEAD_PORT_OPTIONS: Final = ("port", "dashboard-port", "ray-client-server-port")


class LocalClusterError(InputError):
    """The local cluster cannot be started, found or stopped as asked (one line, names the path)."""


class NodeStartError(LocalClusterError):
    """A ``ray start`` that exited while starting (e.g. Ray's fixed 30 s wait for the raylet to
    register ran out on a loaded machine); ``cluster_up`` tries such a node once more."""


def default_state_dir() -> Path:
    """``~/.raytrade/cluster``: the token, the state file and the nodes' logs."""
    return Path.home() / ".raytrade" / "cluster"


class ClusterConfig(BaseModel):
    """One ``raytrade cluster up``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(1, ge=0, description="worker nodes besides the head")
    cpus_per_node: int = Field(1, ge=1, description="CPUs each node advertises (head and workers)")
    dashboard: bool = Field(True, description="start the Ray dashboard (and the job API) on the head")
    start_timeout_s: float = Field(120.0, gt=0, description="seconds a node may take to start")
    start_attempts: int = Field(
        2,
        ge=1,
        description="tries per node when `ray start` exits while starting (its fixed 30 s wait for the "
        "raylet runs out on a loaded machine)",
    )


class NodeProcess(BaseModel):
    """One ``ray start --block`` leader: its pid (also its process group id) and its log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["head", "worker"]
    pid: int
    log: Path
    started: int | None = Field(
        None,
        description="the process's start time (clock ticks since boot, /proc/<pid>/stat), which tells "
        "it from a later process given the same pid; None in records written before it was kept",
    )


class ClusterState(BaseModel):
    """``cluster.json``: where the running local cluster is and which processes are its nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(description="GCS address, host:port")
    dashboard_url: str | None = Field(description="http://host:port, None without a dashboard")
    token_file: Path
    temp_dir: Path = Field(description="Ray's temp folder for this cluster (removed by down)")
    nodes: tuple[NodeProcess, ...] = Field(min_length=1, description="the head first, then the workers")
    started_at: datetime

    def environment(self) -> dict[str, str]:
        """What a shell (or a driver) needs to reach this cluster: address and token auth."""
        return {"RAY_ADDRESS": self.address, **auth_environment(self.token_file)}


def auth_environment(token_file: Path) -> dict[str, str]:
    """Token auth on, the token read from ``token_file`` (its path, never its value)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def no_cluster_message(address: str) -> str:
    """The one line for ``address`` (``auto``, ``host:port``) naming no running Ray cluster: how to
    start one (``raytrade cluster up``) or point at one (``RAY_ADDRESS``)."""
    where = "none was found" if address == "auto" else f"none answered at {address!r}"
    return (
        f"no Ray cluster is running ({where}): start one with `raytrade cluster up` and export the "
        "RAY_ADDRESS line it prints, or set RAY_ADDRESS to a running cluster's host:port"
    )


CONNECT_TIMEOUT_S: Final = 5.0
"""How long :func:`answers` waits for a Ray address to accept a connection."""


def answers(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether something accepts a TCP connection at ``address`` (``host:port``, or ``ray://host:port``)
    within ``timeout_s``; True for any other form (``auto``: Ray finds the address itself). A stopped
    cluster's address (the ``RAY_ADDRESS`` exported before ``raytrade cluster down``) made ``ray.init``
    retry for minutes, printing only "Failed to connect to GCS", instead of failing in one line."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def init_ray(address: str | None, *, dashboard: bool, num_cpus: int | None = None) -> bool:
    """Connect an entrypoint to Ray, unless this process already is: to the cluster at ``address``
    (``auto``, ``host:port``), else to ``$RAY_ADDRESS`` when set (a Ray job's entrypoint has it), else
    to a new local Ray with the dashboard unless ``dashboard`` is False. Never, without being asked,
    to the cluster a ``ray start`` elsewhere on this machine last recorded (``ray.init()`` with no
    address attaches there: its CPUs, its code, its jobs are not this command's). Prints the dashboard
    URL when there is one; returns whether it connected (so the caller knows it owns the
    ``ray.shutdown``). No cluster at ``address`` is a :class:`LocalClusterError` (an input error:
    :func:`no_cluster_message`), not Ray's ``ConnectionError``."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        if not answers(address):  # Ray retries a dead address for minutes, printing only its retries
            raise LocalClusterError(no_cluster_message(address))
        try:
            context = ray.init(address=address, log_to_driver=False)
        except ConnectionError:
            # Ray's text asks for an `--address` flag our commands may not have: say it our way
            raise LocalClusterError(no_cluster_message(address)) from None
    else:
        context = ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=False
        )
    if context.dashboard_url:
        click.echo(
            f"Ray dashboard: http://{context.dashboard_url} (token: $RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        )
    return True


# ------------------------------------------------------------------------------ token and state


def ensure_token(state_dir: Path) -> Path:
    """The cluster token file under ``state_dir``, created (0600, random) when missing.

    Refuses an existing file that group or others can read or write, naming its mode."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _check_token_file(path)
        return path
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path


def _check_token_file(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise LocalClusterError(
            f"token file {str(path)!r} has mode {mode:04o}; it must be 0600 (chmod 600 it)"
        )
    if not path.read_text().strip():
        raise LocalClusterError(f"token file {str(path)!r} is empty; delete it to make a new one")


def read_state(state_dir: Path) -> ClusterState | None:
    """The recorded cluster, or None when there is none; a malformed file is refused."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return ClusterState.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise LocalClusterError(
            f"{str(path)!r} is not a local cluster state file ({first_problem(exc)}): `raytrade "
            "cluster down` cannot read it either; stop any Ray node it names, then delete it"
        ) from None


def _write_state(state_dir: Path, state: ClusterState) -> None:
    tmp = state_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, state_dir / STATE_FILE)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (exited, not yet reaped: a node this very process started and
    stopped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, process group, start time in clock ticks)`` of ``pid`` from ``/proc/<pid>/stat``;
    None where there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp ... starttime (20th)
    return fields[0], int(fields[2]), int(fields[19])


def _is_node(node: NodeProcess) -> bool:
    """Whether ``node.pid`` is still the process this cluster started, not a later one given the same
    pid (a record left by a cluster whose nodes died, then a reboot or many processes later): its start
    time is the recorded one. A record written before start times were kept cannot tell: True (as
    before), and so without ``/proc``."""
    stat = _proc_stat(node.pid)
    return node.started is None or stat is None or stat[2] == node.started


# ------------------------------------------------------------------------------ start and stop


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on the loopback interface right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket())
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def start_command(
    config: ClusterConfig, temp_dir: Path, ports: dict[str, int], head_address: str | None
) -> list[str]:
    """The ``ray start --block`` argv of one node: the head when ``head_address`` is None, else a
    worker joining it. ``ports`` maps each option of ``NODE_PORT_OPTIONS`` (and for the head,
    ``HEAD_PORT_OPTIONS``) to its port."""
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats"]
    argv += [f"--node-ip-address={HOST}", f"--num-cpus={config.cpus_per_node}", f"--temp-dir={temp_dir}"]
    if head_address is None:
        argv += ["--head", f"--dashboard-host={HOST}", f"--include-dashboard={str(config.dashboard).lower()}"]
        options: tuple[str, ...] = HEAD_PORT_OPTIONS + NODE_PORT_OPTIONS
    else:
        argv += [f"--address={head_address}"]
        options = NODE_PORT_OPTIONS
    return argv + [f"--{name}={ports[name]}" for name in options]


def _node_environment(token_file: Path) -> dict[str, str]:
    """This environment with token auth on, and this interpreter's folder first on ``PATH``: a job's
    ``python`` is then the one raytrade's dependencies are installed in."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return {**env, **auth_environment(token_file), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "PATH": path}


def _start_node(
    argv: list[str], role: Literal["head", "worker"], log: Path, env: dict[str, str], timeout_s: float
) -> NodeProcess:
    """Start one node in its own process group and wait until ``ray start`` says it is up."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    stat = _proc_stat(proc.pid)
    node = NodeProcess(role=role, pid=proc.pid, log=log, started=None if stat is None else stat[2])
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if STARTED_MARKER in log.read_text(errors="replace"):
                return node
            if proc.poll() is not None:
                _stop_nodes((node,), grace_s=2.0)  # what it started before giving up
                raise NodeStartError(
                    f"the {role} node exited with status {proc.returncode} while starting; see {log}"
                )
            time.sleep(0.5)
        _stop_nodes((node,), grace_s=5.0)
        raise LocalClusterError(f"the {role} node did not start within {timeout_s:.0f} s; see {log}")
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C (or SIGTERM, see up_command) while it starts: its own session never gets the signal,
        # and it is not recorded yet, so nothing else would ever stop it
        _stop_nodes((node,), grace_s=5.0)
        raise


def _start_node_retrying(
    argv: list[str],
    role: Literal["head", "worker"],
    log: Path,
    env: dict[str, str],
    timeout_s: float,
    attempts: int = 2,
) -> NodeProcess:
    """:func:`_start_node`, up to ``attempts`` times while ``ray start`` exits while starting (the
    log of the n-th failed try is kept as ``<log>.<n>``)."""
    for attempt in range(1, attempts):
        try:
            return _start_node(argv, role, log, env, timeout_s)
        except NodeStartError:
            os.replace(log, log.with_suffix(f"{log.suffix}.{attempt}"))
    return _start_node(argv, role, log, env, timeout_s)


def cluster_up(config: ClusterConfig, state_dir: Path) -> ClusterState:
    """Start a head and ``config.workers`` workers; record and return the cluster's state.

    Each node is recorded in the state file as soon as it is up. Refuses when the state file names a
    cluster whose head is still running (and stops the rest of one whose head died). A node that
    fails to start stops the nodes already started and removes the state file."""
    state_dir = _state_folder(state_dir)
    with _up_lock(state_dir):
        return _cluster_up_locked(config, state_dir)


def _state_folder(state_dir: Path) -> Path:
    """``state_dir`` absolute (the nodes get the token by its path, and the printed export line must
    hold wherever it is pasted), made (0700) when missing; a file there is refused in one line."""
    state_dir = state_dir.expanduser().resolve()
    if state_dir.exists() and not state_dir.is_dir():
        raise LocalClusterError(f"--state-dir {str(state_dir)!r} is a file, not a folder")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return state_dir


@contextlib.contextmanager
def _up_lock(state_dir: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``STATE_DIR/up.lock`` for a whole ``up``, from reading the state to
    its last write: two ``up`` on one state dir both found no cluster, both started one, and the
    second's state file orphaned the first's nodes. The second is refused at once; the kernel drops
    the lock when the process ends, so none is ever stale."""
    path = state_dir / UP_LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalClusterError(
                f"another `raytrade cluster up` is starting a cluster in {state_dir} (lock {path}): "
                "nothing done; `raytrade cluster status` once it has finished"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cluster_up_locked(config: ClusterConfig, state_dir: Path) -> ClusterState:
    previous = read_state(state_dir)
    if previous is not None and _alive(previous.nodes[0].pid) and _is_node(previous.nodes[0]):
        raise LocalClusterError(
            f"a local cluster is already up at {previous.address} "
            f"({state_dir / STATE_FILE}); run `raytrade cluster down` first"
        )
    if previous is not None:  # its head died: stop what is left of it before starting anew
        _stop_nodes(previous.nodes, grace_s=5.0)
        shutil.rmtree(previous.temp_dir, ignore_errors=True)
    token_file = ensure_token(state_dir)
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="rtc-"))
    env = _node_environment(token_file)
    head_ports = dict(zip(HEAD_PORT_OPTIONS + NODE_PORT_OPTIONS, free_ports(9), strict=True))
    head_argv = start_command(config, temp_dir, head_ports, None)
    try:
        head = _start_node_retrying(
            head_argv, "head", logs / "head.log", env, config.start_timeout_s, config.start_attempts
        )
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    state = ClusterState(
        address=f"{HOST}:{head_ports['port']}",
        dashboard_url=f"http://{HOST}:{head_ports['dashboard-port']}" if config.dashboard else None,
        token_file=token_file,
        temp_dir=temp_dir,
        nodes=(head,),
        started_at=datetime.now(UTC),
    )
    try:
        _write_state(state_dir, state)
        for i in range(config.workers):
            ports = dict(zip(NODE_PORT_OPTIONS, free_ports(len(NODE_PORT_OPTIONS)), strict=True))
            argv = start_command(config, temp_dir, ports, state.address)
            log = logs / f"worker-{i + 1}.log"
            worker = _start_node_retrying(
                argv, "worker", log, env, config.start_timeout_s, config.start_attempts
            )
            state = _recorded(state_dir, state, worker)
    except BaseException:
        _stop_nodes(state.nodes, grace_s=10.0)
        shutil.rmtree(temp_dir, ignore_errors=True)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    return state


def _recorded(state_dir: Path, state: ClusterState, node: NodeProcess) -> ClusterState:
    """``state`` with ``node`` added, written to the state file at once: an ``up`` killed before it
    could clean up (SIGKILL, a timeout) leaves the nodes it started recorded, for ``down`` to stop."""
    state = state.model_copy(update={"nodes": (*state.nodes, node)})
    _write_state(state_dir, state)
    return state


def _stop_nodes(nodes: tuple[NodeProcess, ...], grace_s: float) -> list[int]:
    """SIGTERM each node's leader (workers first), wait up to ``grace_s``, then SIGKILL whatever is
    left in their process groups. Returns the pids that needed SIGKILL."""
    order = [n for n in nodes if n.role == "worker"] + [n for n in nodes if n.role == "head"]
    others = [n for n in order if _alive(n.pid) and not _is_node(n)]
    for node in others:  # its pid now belongs to another process: it and its group are left alone
        logger.warning(
            "the recorded %s node's pid %d is now another process's: not signalled", node.role, node.pid
        )
    order = [n for n in order if n not in others]
    for node in order:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(n.pid) for n in order):
        time.sleep(0.25)
    killed = []
    for node in order:
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(node.pid)
    # A signal is delivered, and a process reaped, after kill() returns: wait until every group is
    # gone, so that "down" means no node process is left when it returns.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(_group_alive(n.pid) for n in order):
        time.sleep(0.05)
    return killed


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs; zombies count as gone (see :func:`_alive`), so
    stopping the nodes this process started does not wait for its own reaping."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    members = (_proc_stat(int(p.name)) for p in proc.iterdir() if p.name.isdigit())
    return any(m is not None and m[1] == pgid and m[0] != "Z" for m in members)


def cluster_down(state_dir: Path, grace_s: float = 20.0) -> ClusterState:
    """Stop the recorded cluster's nodes, remove its Ray temp folder and its state file."""
    state = read_state(state_dir)
    if state is None:
        raise LocalClusterError(f"no local cluster recorded in {state_dir}")
    _stop_nodes(state.nodes, grace_s)
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    (state_dir / STATE_FILE).unlink()
    return state


# ------------------------------------------------------------------------------ status


class NodeRow(BaseModel):
    """One node as the GCS reports it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    head: bool
    alive: bool
    address: str
    resources: dict[str, float] = Field(description="the node's total resources")
    available: dict[str, float] | None = Field(
        description="its resources not held by tasks, actors or Tune trials' placement groups "
        "(None: not reported, a dead node)"
    )

    def used(self) -> dict[str, float] | None:
        """Resource -> amount in use on this node (total minus available, memory in GiB); None when
        the node reports no availability. This is what shows where Tune placed its trials."""
        if self.available is None:
            return None
        total, free = _shown(self.resources), _shown(self.available)
        return {k: round(v - free.get(k, 0.0), 2) for k, v in total.items()}


class ClusterStatus(BaseModel):
    """``raytrade cluster status``: the nodes, and the cluster's total and available resources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    dashboard_url: str | None
    nodes: list[NodeRow]
    total: dict[str, float]
    available: dict[str, float]

    def render(self) -> str:
        alive = sum(n.alive for n in self.nodes)
        lines = [f"cluster {self.address}: {alive} of {len(self.nodes)} nodes alive"]
        if self.dashboard_url:
            lines.append(f"dashboard: {self.dashboard_url}")
        lines.append(f"{'node':<14}{'role':<8}{'alive':<7}{'address':<22}resources used/total")
        for n in self.nodes:
            used = n.used()
            res = " ".join(
                f"{k}={'-' if used is None else f'{used[k]:g}'}/{v:g}"
                for k, v in sorted(_shown(n.resources).items())
            )
            role = "head" if n.head else "worker"
            up = "yes" if n.alive else "no"
            lines.append(f"{n.node_id[:NODE_ID_SHOWN]:<14}{role:<8}{up:<7}{n.address:<22}{res}")
        total, available = _shown(self.total), _shown(self.available)
        lines.append(
            "resources used/total: "
            + " ".join(f"{k}={v - available.get(k, 0.0):g}/{v:g}" for k, v in sorted(total.items()))
        )
        return "\n".join(lines)


def _shown(resources: dict[str, float]) -> dict[str, float]:
    """Resources worth showing: not Ray's per-node ``node:<ip>`` markers nor the per-placement-group
    copies (``CPU_group_<id>``, ``bundle_group_<id>``: each Tune trial's reservation, already counted
    in the plain resource), memory in GiB."""
    out = {}
    for k, v in resources.items():
        if k.startswith("node:") or "_group_" in k:
            continue
        out[k] = round(v / 2**30, 2) if k in ("memory", "object_store_memory") else v
    return out


def format_placement(rows: Sequence[LeaderboardRow]) -> str:
    """Which node each trial of a search ran on: a heading with the number of nodes, then one line
    per node (its id's first ``NODE_ID_SHOWN`` hex digits, as ``raytrade cluster status``'s node
    column prints it, in id order) naming its trials in leaderboard order. A trial that reported no
    node id (it failed before its first result) is listed under ``unknown``, last.

    Trials with remote env runners get a second block, one line each: the learner's node, each env
    runner's node (in runner order), and how many distinct nodes the trial ran on, all as the
    processes themselves reported them (``LeaderboardRow.env_runner_node_ids``).

    The node id, not the IP: every node of a local cluster has the same address, 127.0.0.1."""
    by_node: dict[str, list[str]] = {}
    for row in rows:
        by_node.setdefault(row.node_id[:NODE_ID_SHOWN] if row.node_id else "", []).append(row.trial)
    nodes = sorted(k for k in by_node if k)
    plural = "s" if len(nodes) != 1 else ""
    lines = [f"trials by node ({len(nodes)} node{plural}; ids as in raytrade cluster status):"]
    lines += [f"  {node:<{NODE_ID_SHOWN + 2}}{' '.join(by_node[node])}" for node in nodes]
    if "" in by_node:
        lines.append(f"  {'unknown':<{NODE_ID_SHOWN + 2}}{' '.join(by_node[''])}")
    spread = [row for row in rows if row.env_runner_node_ids]
    if spread:
        lines.append("env runners by trial (learner node, then each env runner's node, as they reported):")
    for row in spread:
        learner = row.node_id[:NODE_ID_SHOWN] if row.node_id else "unknown"
        runners = " ".join(node[:NODE_ID_SHOWN] for node in row.env_runner_node_ids)
        seen = {row.node_id, *row.env_runner_node_ids} - {None}
        plural = "s" if len(seen) != 1 else ""
        lines.append(f"  {row.trial}  learner {learner}  env runners {runners}  ({len(seen)} node{plural})")
    return "\n".join(lines)


# Run in a child process: token mode is process-wide and read when Ray first loads, so a process that
# already runs a Ray of its own (a test session, a notebook) cannot also connect here with a token.
# ``available_resources_per_node`` is a Ray DeveloperAPI (the GCS's own per-node view); the public
# ``ray.available_resources`` only sums it.
_PROBE = """
import json, ray
from ray._private.state import available_resources_per_node
ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
print(json.dumps({"nodes": ray.nodes(), "total": ray.cluster_resources(),
                  "available": ray.available_resources(),
                  "available_per_node": available_resources_per_node()}, default=str))
"""


def cluster_status(state: ClusterState, timeout_s: float = 120.0) -> ClusterStatus:
    """The nodes and resources of the running cluster ``state`` describes, as its GCS reports them
    to a driver connected with the cluster's token."""
    env = {**_node_environment(state.token_file), "RAY_ADDRESS": state.address}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LocalClusterError(f"cannot reach the local cluster at {state.address}: {last}")
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    per_node: dict[str, dict[str, float]] = probe["available_per_node"]
    rows = [
        NodeRow(
            node_id=str(n["NodeID"]),
            head=bool(n.get("Resources", {}).get("node:__internal_head__", False)),
            alive=bool(n["Alive"]),
            address=f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}",
            resources={k: float(v) for k, v in n.get("Resources", {}).items()},
            available=(
                {k: float(v) for k, v in per_node[n["NodeID"]].items()}
                if n["Alive"] and n["NodeID"] in per_node
                else None
            ),
        )
        for n in probe["nodes"]
    ]
    rows.sort(key=lambda r: (not r.head, r.node_id))
    return ClusterStatus(
        address=state.address,
        dashboard_url=state.dashboard_url,
        nodes=rows,
        total={k: float(v) for k, v in probe["total"].items()},
        available={k: float(v) for k, v in probe["available"].items()},
    )


def _running_state(state_dir: Path) -> ClusterState:
    state = read_state(state_dir)
    if state is None:
        raise LocalClusterError(f"no local cluster recorded in {state_dir}; run `raytrade cluster up`")
    if not _alive(state.nodes[0].pid):
        raise LocalClusterError(
            f"the local cluster recorded in {state_dir / STATE_FILE} is not running (head pid "
            f"{state.nodes[0].pid} is gone); run `raytrade cluster down` to clear it"
        )
    return state


# ------------------------------------------------------------------------------ commands


@click.group("cluster")
def cluster_group() -> None:
    """A local multi-node Ray cluster on this machine (token auth on)."""


@cluster_group.command("up")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True, help="Worker nodes.")
@click.option("--cpus-per-node", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--no-dashboard", is_flag=True, help="Do not start the Ray dashboard (no job API).")
@click.option(
    "--start-timeout-s", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True
)
@click.option(
    "--start-attempts",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Tries per node when `ray start` gives up while starting (a loaded machine).",
)
@click.option("--state-dir", type=LocalPath(), help="Default: ~/.raytrade/cluster.")
@one_line_errors
def up_command(
    workers: int,
    cpus_per_node: int,
    no_dashboard: bool,
    start_timeout_s: float,
    start_attempts: int,
    state_dir: Path | None,
) -> None:
    """Start a head and WORKERS worker nodes with `ray start`, token auth on."""
    config = ClusterConfig(
        workers=workers,
        cpus_per_node=cpus_per_node,
        dashboard=not no_dashboard,
        start_timeout_s=start_timeout_s,
        start_attempts=start_attempts,
    )
    # SIGTERM (a killed terminal, a supervisor) stops `up` as Ctrl-C does: the node starting is stopped
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        state = cluster_up(config, state_dir or default_state_dir())
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"local cluster up: head + {workers} worker(s) at {state.address}")
    if state.dashboard_url:
        click.echo(f"dashboard: {state.dashboard_url} (it asks for the token in {state.token_file})")
    click.echo("connect (drivers, raytrade submit/tune/demo --address auto):")
    click.echo("  export " + " ".join(f"{k}={v}" for k, v in state.environment().items()))
    if state.dashboard_url:
        click.echo(f"  export RAY_API_SERVER_ADDRESS={state.dashboard_url}")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@cluster_group.command("down")
@click.option("--state-dir", type=LocalPath(), help="Default: ~/.raytrade/cluster.")
@one_line_errors
def down_command(state_dir: Path | None) -> None:
    """Stop the nodes `raytrade cluster up` started (only those)."""
    state = cluster_down(state_dir or default_state_dir())
    click.echo(f"local cluster at {state.address} stopped ({len(state.nodes)} nodes)")


@cluster_group.command("status")
@click.option("--state-dir", type=LocalPath(), help="Default: ~/.raytrade/cluster.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@one_line_errors
def status_command(state_dir: Path | None, as_json: bool) -> None:
    """Show the local cluster's nodes and resources."""
    status = cluster_status(_running_state(state_dir or default_state_dir()))
    click.echo(status.model_dump_json(indent=2) if as_json else status.render())
