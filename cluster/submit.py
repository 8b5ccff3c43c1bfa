"""``raytrade submit [--address URL] [--follow] -- raytrade tune …``: any raytrade command as a Ray job.

Design decisions
----------------
* The code the job runs is this checkout's, built as a wheel (``pip wheel --no-deps`` of a copy of
  the package folders, so stale ``build/`` trees never leak into it) and shipped in the job's
  ``runtime_env`` as ``py_modules``: the wheel's unpacked ``raytrade`` folder, which Ray uploads and
  puts first on the job's ``PYTHONPATH`` (the driver and every task and actor it starts). A ``.whl``
  in ``py_modules`` would be ``pip install --target``-ed on every node, which reinstalls all of its
  dependencies (torch included); the dependencies are the cluster image's (Dockerfile), the code is
  the submitter's.
* The entrypoint is the command after ``--`` with its leading ``raytrade`` replaced by
  ``python -m raytrade.cluster.cli`` (the console script is not on a node's PATH for shipped code).
  Its arguments (store, registry and storage paths or URIs) are passed exactly as given: they are
  read on the cluster, so they name places the cluster sees (``/data/...`` on KubeRay).
* Token auth: the token is ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH`` names, else
  ``~/.ray/auth_token`` (Ray's own order), sent as ``Authorization: Bearer`` to the job API. A
  missing or refused token ends with one line naming where the token came from.
* No secret enters the runtime env (it is stored in the GCS and shown in the dashboard):
  :func:`build_runtime_env` sets only the code and ``PYTHONUNBUFFERED``, and
  :func:`check_no_secrets` refuses a runtime env holding a secret-named variable or the value of
  any secret variable of this environment. The job reads its secrets from the cluster's own
  environment (KubeRay's ``raytrade-secrets``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import click

from raytrade.cluster.errors import one_line_errors
from raytrade.replay.errors import InputError

DEFAULT_ADDRESS: Final = "http://127.0.0.1:8265"
ADDRESS_ENVS: Final = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
SECRET_WORDS: Final = ("TOKEN", "KEY", "SECRET", "PASSWORD")
CLI_MODULE: Final = "raytrade.cluster.cli"


class SubmitError(InputError):
    """The job cannot be built or submitted as asked (one line, names the value)."""


# ------------------------------------------------------------------------------ token and address


def read_token(environ: Mapping[str, str], home: Path) -> tuple[str, str]:
    """(token, where it came from), in Ray's order: ``RAY_AUTH_TOKEN``, the file named by
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``."""
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    path = Path(named).expanduser() if named else home / ".ray" / "auth_token"
    where = f"RAY_AUTH_TOKEN_PATH={named}" if named else str(path)
    if not path.is_file():
        if named:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH names {named!r}, which is not a file")
        raise SubmitError(f"no Ray token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (no {path} either)")
    token = path.read_text().strip()
    if not token:
        raise SubmitError(f"the token file {str(path)!r} is empty")
    return token, where


def resolve_address(address: str | None, environ: Mapping[str, str]) -> str:
    """The job API URL: ``--address``, else ``RAY_API_SERVER_ADDRESS``, else an ``http(s)://``
    ``RAY_ADDRESS``, else the local default; ``auto`` means the same search."""
    if address in (None, "auto"):
        candidates = [environ.get(name, "") for name in ADDRESS_ENVS]
        address = next((c for c in candidates if c.startswith(("http://", "https://"))), DEFAULT_ADDRESS)
    assert address is not None
    if not address.startswith(("http://", "https://")):
        raise SubmitError(f"--address {address!r} is not the dashboard's http(s):// URL")
    return address.rstrip("/")


def check_token(address: str, token: str, where: str, timeout_s: float = 10.0) -> None:
    """One authenticated request to the job API: a refused token ends here with one line."""
    request = urllib.request.Request(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise SubmitError(
                f"the cluster at {address} refused the token from {where} (HTTP {exc.code})"
            ) from None
        raise SubmitError(f"the job API at {address} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SubmitError(f"cannot reach the job API at {address}: {reason}") from None


# ------------------------------------------------------------------------------ code and runtime env


def project_root() -> Path:
    """The source checkout this package runs from (editable install): the folder holding
    ``pyproject.toml`` next to ``cluster/``."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise SubmitError(f"{root} is not a raytrade checkout (no pyproject.toml): submit ships a checkout")
    return root


def build_wheel(root: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of a fresh copy of ``root``'s pyproject, README and package folders
    (those of ``[tool.setuptools.package-dir]``) into ``out``; returns the wheel."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    folders = sorted(set(pyproject["tool"]["setuptools"]["package-dir"].values()))
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, src / name)
    for folder in folders:
        shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = out / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*command, "--wheel-dir", str(wheels), str(src)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SubmitError(f"building the wheel failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    (wheel,) = wheels.glob("raytrade-*.whl")
    return wheel


def unpack_wheel(wheel: Path, out: Path) -> Path:
    """The wheel's ``raytrade`` package folder, unpacked under ``out``: the ``py_modules`` entry."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(out)
    package = out / "raytrade"
    if not (package / "cluster" / "cli.py").is_file():
        raise SubmitError(f"{wheel.name} has no raytrade/cluster/cli.py")
    return package


def entrypoint(command: Sequence[str]) -> str:
    """The shell entrypoint of a ``raytrade …`` command: ``python -m raytrade.cluster.cli …``."""
    if not command or command[0] != "raytrade":
        got = command[0] if command else "nothing"
        raise SubmitError(f"submit runs raytrade commands: expected `-- raytrade ...`, got {got!r}")
    if len(command) > 1 and command[1] == "submit":
        raise SubmitError("`raytrade submit` cannot submit itself")
    return shlex.join(["python", "-m", CLI_MODULE, *command[1:]])


def build_runtime_env(package: Path) -> dict[str, Any]:
    """The job's runtime env: the shipped code and unbuffered output; nothing else."""
    return {"py_modules": [str(package)], "env_vars": {"PYTHONUNBUFFERED": "1"}}


def check_no_secrets(runtime_env: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Refuse a runtime env holding a secret: a variable named like one (TOKEN, KEY, SECRET,
    PASSWORD), or anywhere, the value of such a variable of ``environ``."""
    env_vars = runtime_env.get("env_vars", {})
    named = sorted(k for k in env_vars if any(w in k.upper() for w in SECRET_WORDS))
    if named:
        raise SubmitError(f"the job's runtime env would carry secret variables {named}")
    text = json.dumps(runtime_env)
    leaked = sorted(
        k
        for k, v in environ.items()
        if any(w in k.upper() for w in SECRET_WORDS) and len(v) >= 8 and v in text
    )
    if leaked:
        raise SubmitError(f"the job's runtime env would carry the value of {leaked}")


# ------------------------------------------------------------------------------ submit


def logs_command(address: str, job_id: str) -> str:
    """The ``ray job logs -f`` command line for the job (token auth on, token as ``submit`` found it)."""
    return "RAY_AUTH_MODE=token " + shlex.join(["ray", "job", "logs", "-f", "--address", address, job_id])


def submit(command: Sequence[str], address: str, token: str, say: Any = click.echo) -> tuple[Any, str]:
    """Build and ship the code, submit ``command``; returns (the job client, the job id)."""
    from ray.job_submission import JobSubmissionClient

    job_entry = entrypoint(command)
    with tempfile.TemporaryDirectory(prefix="raytrade-submit-") as tmp:
        wheel = build_wheel(project_root(), Path(tmp) / "build")
        package = unpack_wheel(wheel, Path(tmp) / "site")
        runtime_env = build_runtime_env(package)
        check_no_secrets(runtime_env, os.environ)
        say(f"shipping {wheel.name} ({wheel.stat().st_size / 1024:.0f} KiB) as py_modules")
        client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
        job_id = client.submit_job(entrypoint=job_entry, runtime_env=runtime_env)
    return client, job_id


async def _stream(client: Any, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        click.echo(lines, nl=False)


@click.command("submit", context_settings={"ignore_unknown_options": True})
@click.option(
    "--address", help=f"Job API URL (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS, {DEFAULT_ADDRESS})."
)
@click.option("--follow", is_flag=True, help="Stream the job's logs until it ends; exit 1 if it failed.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@one_line_errors
def submit_command(address: str | None, follow: bool, command: tuple[str, ...]) -> None:
    """Run a raytrade command as a Ray job: raytrade submit -- raytrade tune --spec ppo ...

    The command's paths and URIs are read on the cluster, as given."""
    url = resolve_address(address, os.environ)
    token, where = read_token(os.environ, Path.home())
    check_token(url, token, where)
    client, job_id = submit(list(command), url, token)
    click.echo(f"job: {job_id}")
    click.echo(f"dashboard: {url}/#/jobs/{job_id}")
    click.echo(f"logs: {logs_command(url, job_id)}")
    if not follow:
        return
    asyncio.run(_stream(client, job_id))
    status = client.get_job_status(job_id)
    click.echo(f"job {job_id}: {status}")
    if str(status) != "SUCCEEDED":
        sys.exit(1)
