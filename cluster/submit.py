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
* No secret enters what Ray stores in the GCS and shows in the dashboard: the runtime env, the
  shipped code, the entrypoint. The secrets known here (:func:`known_secrets`) are the values of
  this environment's secret-named variables and of the settings (``RAYTRADE_SETTINGS_FILE``
  included). :func:`build_runtime_env` sets only the code and ``PYTHONUNBUFFERED``, and
  :func:`check_no_secrets` refuses a runtime env holding a secret-named variable or a known secret;
  :func:`check_entrypoint` refuses a command carrying a known secret or a URI with credentials
  (``s3://KEY:SECRET@…``); :func:`check_wheel` refuses a wheel holding anything but the package's
  modules and the config files pyproject names (package-data), a file named like a secret
  (:data:`SECRET_FILE_PATTERNS`, the patterns ``.rayignore`` and ``.dockerignore`` exclude too) or a
  known secret in any file; :func:`check_settings_file` refuses to ship a package folder holding the
  settings file. The job reads its secrets from the cluster's own environment (KubeRay's
  ``raytrade-secrets``).
"""

from __future__ import annotations

import asyncio
import fnmatch
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
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import click
from pydantic import SecretStr

from raytrade.cluster.errors import one_line_errors
from raytrade.replay.credentials import carries_credentials, shown_url
from raytrade.replay.errors import InputError

if TYPE_CHECKING:
    from raytrade.cluster.settings import Settings

DEFAULT_ADDRESS: Final = "http://127.0.0.1:8265"
ADDRESS_ENVS: Final = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
SECRET_WORDS: Final = ("TOKEN", "KEY", "SECRET", "PASSWORD")
MIN_SECRET_CHARS: Final = 8
"""Shorter values of secret variables are not looked for (``KEY=1`` would match everywhere)."""
LOCATION_SUFFIXES: Final = ("_PATH", "_FILE", "_DIR")
"""A secret-named variable ending so names where a secret is kept (:func:`known_secrets`)."""
CLI_MODULE: Final = "raytrade.cluster.cli"
SECRET_FILE_PATTERNS: Final = (
    # settings and environment files
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    "settings.toml",
    "settings.json",
    "settings.ini",
    "settings.y*ml",
    "secrets.*",
    "*.secret",
    "*.secrets",
    # cloud, cluster and tool credentials
    "credentials",
    "credentials.json",
    "credentials.csv",
    ".aws/",
    ".kube/",
    "kubeconfig",
    ".docker/",
    ".git-credentials",
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    # tokens (Ray's auth_token, ray_auth_token, token.txt)
    "*token",
    "*.token",
    "*token.txt",
    "*token.json",
    # keys and certificates
    ".ssh/",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.crt",
    "*.cer",
    # files named for what they hold (api_key.txt, alpaca_keys.json, gcp-key.json, secret.txt,
    # credentials.ini, db_password.yaml): a config extension and a secret word; never a module
    "*key*.json",
    "*key*.txt",
    "*key*.ini",
    "*key*.toml",
    "*key*.y*ml",
    "*key*.csv",
    "*key*.cfg",
    "*key*.conf",
    "*secret*.json",
    "*secret*.txt",
    "*secret*.ini",
    "*secret*.toml",
    "*secret*.y*ml",
    "*secret*.csv",
    "*secret*.cfg",
    "*secret*.conf",
    "*credential*.json",
    "*credential*.txt",
    "*credential*.ini",
    "*credential*.toml",
    "*credential*.y*ml",
    "*credential*.csv",
    "*credential*.cfg",
    "*credential*.conf",
    "*password*.json",
    "*password*.txt",
    "*password*.ini",
    "*password*.toml",
    "*password*.y*ml",
    "*password*.csv",
    "*password*.cfg",
    "*password*.conf",
    "*secret",
    "*credentials",
    "service-account*.json",
    "service_account*.json",
    ".boto",
    "*.netrc",
)
"""File names that hold secrets, in ``.gitignore`` syntax (a trailing ``/``: a folder; no ``/``
otherwise: the name at any depth). ``.rayignore`` (``ray job submit --working-dir``, ``ray up``'s
rsync), ``.gitignore`` and ``.dockerignore`` (as ``**/PATTERN``) list every one, and
:func:`check_wheel` refuses a shipped file named like one. ``tests/test_secrets.py`` and
``tests/test_cluster_configs.py`` check the three files, and that no tracked file matches."""
WHEEL_METADATA: Final = frozenset({"METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt"})


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
    """The job API URL: ``--address``, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``, else
    (neither set) the local default; ``auto`` means the same search.

    The first of those that is set must be the dashboard's ``http(s)://host:port`` URL: a GCS address
    (``RAY_ADDRESS=127.0.0.1:6379``, the first line ``raytrade cluster up`` prints) is refused, never
    replaced by the default, which would send the cluster token to whatever listens on 8265."""
    shown = f"--address={address!r}"
    if address in (None, "auto"):
        named = [(name, environ.get(name, "").strip()) for name in ADDRESS_ENVS]
        source, address = next(((n, v) for n, v in named if v), ("default", DEFAULT_ADDRESS))
        shown = f"{source}={address!r}"
        if not address.startswith(("http://", "https://")):
            raise SubmitError(
                f"{shown} is not the dashboard's http(s):// URL that submit sends the "
                "token to: set RAY_API_SERVER_ADDRESS to the dashboard URL (the `export "
                "RAY_API_SERVER_ADDRESS=...` line `raytrade cluster up` prints) or pass --address"
            )
    assert address is not None
    if not address.startswith(("http://", "https://")):
        raise SubmitError(f"--address {address!r} is not the dashboard's http(s):// URL")
    parts = urlsplit(address)
    try:
        _ = parts.port  # urllib raises ValueError for a port that is no number in 0-65535
    except ValueError:
        raise SubmitError(f"{shown} has no valid port (a number, 1-65535)") from None
    if not parts.hostname:
        raise SubmitError(f"{shown} names no host")
    return address.rstrip("/")


def check_token_transport(url: str, allow_plain_http: bool) -> None:
    """Refuse (``SubmitError``) to send the cluster token in clear: plain ``http://`` is for a
    loopback address (a local cluster, an SSH tunnel, ``kubectl port-forward``) unless
    ``allow_plain_http`` says the network between here and the head is trusted."""
    from raytrade.replay.credentials import UnsafeURLError, check_secure_url

    if allow_plain_http:
        return
    try:
        check_secure_url(url, field="--address")
    except UnsafeURLError as exc:
        host = urlsplit(url).hostname or "HEAD"
        port = urlsplit(url).port or 8265
        raise SubmitError(
            f"{exc}: the cluster token would cross the network in clear. Tunnel it (`ssh -N -L "
            f"{port}:127.0.0.1:{port} {host}` or `kubectl port-forward svc/<cluster>-head-svc {port}`, "
            f"then --address http://127.0.0.1:{port}), put the dashboard behind https, or pass "
            "--allow-plain-http on a network you trust"
        ) from None


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


def _setuptools(root: Path) -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config


def package_folders(root: Path) -> list[str]:
    """The checkout's package folders (``[tool.setuptools.package-dir]``): what a wheel ships."""
    return sorted(set(_setuptools(root)["package-dir"].values()))


def package_data(root: Path) -> list[str]:
    """The data files pyproject ships (``[tool.setuptools.package-data]``) as wheel paths
    (``raytrade/cluster/configs/rayjob.yaml``)."""
    dirs = _setuptools(root)["package-dir"]
    return sorted(
        f"raytrade/{dirs[package]}/{name}"
        for package, names in _setuptools(root).get("package-data", {}).items()
        for name in names
    )


def build_wheel(root: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of a fresh copy of ``root``'s pyproject, README and package folders
    (those of ``[tool.setuptools.package-dir]``) into ``out``; returns the wheel."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, src / name)
    for folder in package_folders(root):
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


def secret_file_name(path: str) -> str | None:
    """The pattern of :data:`SECRET_FILE_PATTERNS` that the POSIX ``path`` (relative) matches, or None:
    a name pattern against every part, a folder pattern (``.aws/``) against every folder."""
    *folders, name = path.split("/")
    for pattern in SECRET_FILE_PATTERNS:
        if pattern.endswith("/"):
            if any(fnmatch.fnmatchcase(f, pattern[:-1]) for f in folders):
                return pattern
        elif any(fnmatch.fnmatchcase(part, pattern) for part in [*folders, name]):
            return pattern
    return None


def known_secrets(environ: Mapping[str, str], settings: Settings | None) -> dict[str, str]:
    """Secret values this process knows, by name: the environment's secret-named variables (TOKEN,
    KEY, SECRET, PASSWORD) and the settings' secrets (``RAYTRADE_SETTINGS_FILE`` included), at least
    :data:`MIN_SECRET_CHARS` long. A secret-named variable that names a file (``*_PATH``, ``*_FILE``,
    ``*_DIR``: ``RAY_AUTH_TOKEN_PATH``) holds a location, not a secret (the shipped configs name
    those paths): what the file holds is the secret, read when it is a small readable file."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not any(w in name.upper() for w in SECRET_WORDS):
            continue
        if name.upper().endswith(LOCATION_SUFFIXES) and _looks_like_a_path(value):
            held = _small_file_text(value)
            if held:
                found[f"{name} (its file)"] = held
            continue
        found[name] = value  # a value that is no path (STRIPE_KEY_PATH=sk_live_…) is looked for itself
    if settings is not None:
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr):
                found.setdefault(f"settings.{name}", value.get_secret_value())
    return {k: v for k, v in found.items() if len(v) >= MIN_SECRET_CHARS}


def _looks_like_a_path(value: str) -> bool:
    """A location (``/etc/raytrade/ray_auth_token``, ``~/.ssh/key``, ``./token``, ``C:\\keys``), not a
    secret's own text."""
    return value.startswith(("/", "~", ".")) or "/" in value or "\\" in value


def _small_file_text(path: str, limit: int = 64 << 10) -> str | None:
    """The stripped text of the file at ``path`` when it is a readable file of at most ``limit`` bytes."""
    try:
        file = Path(path).expanduser()
        if not file.is_file() or file.stat().st_size > limit:
            return None
        return file.read_text(errors="replace").strip() or None
    except OSError:
        return None


def _carried(text: str, secrets: Mapping[str, str]) -> list[str]:
    return sorted(k for k, v in secrets.items() if len(v) >= MIN_SECRET_CHARS and v in text)


def check_entrypoint(command: Sequence[str], secrets: Mapping[str, str]) -> None:
    """Refuse a command whose arguments carry a URI with credentials (``s3://KEY:SECRET@…``, shown
    without them) or the value of a known secret (named, never shown): the entrypoint is stored in
    the GCS and shown in the dashboard and ``ray job list``."""
    for arg in command:
        if "://" in arg and carries_credentials(arg):
            raise SubmitError(
                f"the command's argument {shown_url(arg)!r} carries credentials (user:password@, not "
                "shown here), which the job's entrypoint would store in the cluster: give the cluster "
                "its own credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the node's role)"
            )
    # each argument as given (a quote inside a secret is rewritten by the shell quoting of the
    # joined line), then the joined line (a secret split over two arguments)
    leaked = sorted(
        {k for text in [*command, shlex.join(command), " ".join(command)] for k in _carried(text, secrets)}
    )
    if leaked:
        raise SubmitError(
            f"the command carries the value of {leaked}, which the job's entrypoint would store"
        )


def check_settings_file(environ: Mapping[str, str], root: Path) -> None:
    """Refuse to ship a package folder that holds the settings file ``RAYTRADE_SETTINGS_FILE`` names
    (whatever its name: :func:`check_wheel` knows secret files only by their names and contents)."""
    from raytrade.cluster.settings import SETTINGS_FILE_ENV

    named = environ.get(SETTINGS_FILE_ENV, "").strip()
    if not named:
        return
    settings_file = Path(named).expanduser().resolve()
    for folder in package_folders(root):
        if settings_file.is_relative_to((root / folder).resolve()):
            raise SubmitError(
                f"the settings file {SETTINGS_FILE_ENV}={named} lies in {folder}/, which submit ships "
                "to the cluster: keep it outside the checkout's package folders"
            )


def check_wheel(wheel: Path, data_files: Collection[str], secrets: Mapping[str, str]) -> None:
    """Refuse a wheel that would ship more than code: a file that is neither a module (``.py``) nor
    one of ``data_files`` (:func:`package_data`) nor the wheel's metadata, a file named like a secret
    (:func:`secret_file_name`), or a file holding a known secret's value."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        unknown = [
            n
            for n in names
            if not (
                (n.startswith("raytrade/") and n.endswith(".py"))
                or n in data_files
                or (n.split("/")[0].endswith(".dist-info") and n.split("/")[-1] in WHEEL_METADATA)
            )
        ]
        named = [n for n in names if secret_file_name(n)]
        if unknown or named:
            raise SubmitError(
                f"{wheel.name} would ship {sorted({*unknown, *named})[:5]}: only modules and the config "
                "files of pyproject's package-data go to the cluster (move the others out of the "
                "package folders)"
            )
        for name in names:
            leaked = _carried(archive.read(name).decode("utf-8", "replace"), secrets)
            if leaked:
                raise SubmitError(f"{wheel.name}'s {name} holds the value of {leaked}")


def build_runtime_env(package: Path) -> dict[str, Any]:
    """The job's runtime env: the shipped code and unbuffered output; nothing else."""
    return {"py_modules": [str(package)], "env_vars": {"PYTHONUNBUFFERED": "1"}}


def check_no_secrets(runtime_env: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Refuse a runtime env holding a secret: a variable named like one (TOKEN, KEY, SECRET,
    PASSWORD), or anywhere, the value of a secret named like one in ``secrets`` (an environment,
    or :func:`known_secrets`)."""
    env_vars = runtime_env.get("env_vars", {})
    named = sorted(k for k in env_vars if any(w in k.upper() for w in SECRET_WORDS))
    if named:
        raise SubmitError(f"the job's runtime env would carry secret variables {named}")
    leaked = _carried(json.dumps(runtime_env), known_secrets(secrets, None))
    if leaked:
        raise SubmitError(f"the job's runtime env would carry the value of {leaked}")


# ------------------------------------------------------------------------------ submit


def logs_command(address: str, job_id: str) -> str:
    """The ``ray job logs -f`` command line for the job (token auth on, token as ``submit`` found it)."""
    return "RAY_AUTH_MODE=token " + shlex.join(["ray", "job", "logs", "-f", "--address", address, job_id])


def submit(command: Sequence[str], address: str, token: str, say: Any = click.echo) -> tuple[Any, str]:
    """Build and ship the code, submit ``command``; returns (the job client, the job id)."""
    from ray.job_submission import JobSubmissionClient

    from raytrade.cluster.settings import load_settings

    job_entry = entrypoint(command)
    secrets = known_secrets(os.environ, load_settings())
    check_entrypoint(command, secrets)
    root = project_root()
    check_settings_file(os.environ, root)
    with tempfile.TemporaryDirectory(prefix="raytrade-submit-") as tmp:
        wheel = build_wheel(root, Path(tmp) / "build")
        check_wheel(wheel, package_data(root), secrets)
        package = unpack_wheel(wheel, Path(tmp) / "site")
        runtime_env = build_runtime_env(package)
        check_no_secrets(runtime_env, secrets)
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
@click.option(
    "--allow-plain-http",
    is_flag=True,
    help="Send the cluster token over plain http:// to a host other than 127.0.0.1/localhost (refused "
    "by default: tunnel it, or use https://).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@one_line_errors
def submit_command(
    address: str | None, follow: bool, allow_plain_http: bool, command: tuple[str, ...]
) -> None:
    """Run a raytrade command as a Ray job: raytrade submit -- raytrade tune --spec ppo ...

    The command's paths and URIs are read on the cluster, as given."""
    url = resolve_address(address, os.environ)
    check_token_transport(url, allow_plain_http)
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
