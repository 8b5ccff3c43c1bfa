"""The cluster configs (KubeRay RayCluster / RayService, `ray up`, the image) agree with the code."""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from pydantic import ValidationError

CONFIGS = Path(__file__).resolve().parents[1] / "cluster" / "configs"
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")


def _load(name: str) -> Any:
    return yaml.safe_load((CONFIGS / name).read_text())


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _cluster_specs() -> list[dict[str, Any]]:
    return [_load("raycluster.yaml")["spec"], _load("rayservice.yaml")["spec"]["rayClusterConfig"]]


def test_images_and_ray_versions_match_the_pinned_ray() -> None:
    for spec in _cluster_specs():
        assert spec["rayVersion"] == ray.__version__
        for container in _containers(spec):
            assert container["image"] == f"raytrade:{ray.__version__}"
    dockerfile = (CONFIGS / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-py311", dockerfile, re.M)
    torch_pin = re.search(r'"torch==([\d.]+)"', (CONFIGS.parents[1] / "pyproject.toml").read_text())
    assert torch_pin and f"torch=={torch_pin.group(1)}" in dockerfile


RAY_AUTH_SECRET = "raytrade-ray-auth"
# KubeRay's AuthOptions (ray-operator/apis/ray/v1/raycluster_types.go, v1.6.0): `mode` (v1.5.1) and
# `secretName` (v1.6.0), whose Secret must hold the token under the data key `auth_token`
# (utils.RAY_AUTH_TOKEN_SECRET_KEY); the operator injects RAY_AUTH_MODE / RAY_AUTH_TOKEN into a
# container only when the container does not set them itself (common.SetContainerTokenAuthEnvVars).
AUTH_OPTIONS = {"mode": "token", "secretName": RAY_AUTH_SECRET}
KUBERAY_TOKEN_KEY = "auth_token"


def _all_cluster_specs() -> dict[str, dict[str, Any]]:
    return {
        "raycluster.yaml": _load("raycluster.yaml")["spec"],
        "rayjob.yaml": _rayjob()["rayClusterSpec"],
        "rayservice.yaml": _load("rayservice.yaml")["spec"]["rayClusterConfig"],
    }


def test_token_auth_is_on_through_kuberays_auth_options_with_our_secret() -> None:
    """With RAY_AUTH_* set only in the pods, the operator's own dashboard calls (RayJob status, the
    RayService's Serve deploy) went without the token and were refused: authOptions makes the operator
    send it and set the variables on every Ray container and the RayJob's submitter."""
    job_submitters = _rayjob()["submitterPodTemplate"]["spec"]["containers"]
    for config, spec in _all_cluster_specs().items():
        assert spec["authOptions"] == AUTH_OPTIONS, config
        containers = [*_containers(spec), *(job_submitters if config == "rayjob.yaml" else [])]
        for container in containers:
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, (config, container["name"])


def test_secrets_only_come_from_kubernetes_secrets() -> None:
    for spec in _all_cluster_specs().values():
        for container in _containers(spec):
            env = {e["name"]: e for e in container["env"]}
            for name, entry in env.items():
                if any(word in name for word in SECRET_WORDS):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], name
            assert {"name": "data", "mountPath": "/data"}.items() <= container["volumeMounts"][0].items()


def _settings_env_names(*fields: str) -> set[str]:
    """The environment names ``cluster.settings.Settings`` reads ``fields`` from (its aliases)."""
    from raytrade.cluster.settings import Settings

    names: set[str] = set()
    for field in fields:
        alias = Settings.model_fields[field].validation_alias
        names |= {str(choice).upper() for choice in getattr(alias, "choices", [])}
    return names


def _worker_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]


def _secret_keys(container: dict[str, Any]) -> set[str]:
    return {
        ref["key"] for e in container.get("env", []) if (ref := e.get("valueFrom", {}).get("secretKeyRef"))
    }


def test_no_worker_group_of_a_job_cluster_holds_the_alpaca_keys_the_serve_token_or_the_wandb_key() -> None:
    """Workers run trials, evaluation rollouts and Serve replicas: ingest and live read the Alpaca keys
    in the driver, replicas get the Serve token's digest, trials log to wandb offline (the upload runs in
    the driver). A shared env anchor gave every worker all of them."""
    forbidden = _settings_env_names("alpaca_api_key", "alpaca_secret_key", "serve_token", "wandb_api_key")
    assert {"ALPACA_API_KEY", "APCA_API_KEY_ID", "RAYTRADE_SERVE_TOKEN", "WANDB_API_KEY"} <= forbidden
    forbidden_keys = {"alpaca-api-key", "alpaca-secret-key", "serve-token", "wandb-api-key"}
    for config in ("raycluster.yaml", "rayjob.yaml"):
        for container in _worker_containers(_all_cluster_specs()[config]):
            env = {e["name"]: e for e in container["env"]}
            assert not set(env) & forbidden, (config, sorted(set(env) & forbidden))
            assert not _secret_keys(container) & forbidden_keys, config
            assert set(env) == {"RAYTRADE_REGISTRY_HMAC_KEY"}, config  # what a trial or replica reads


def test_the_serving_pods_hold_the_tokens_digest_and_no_token_alpaca_or_wandb_key() -> None:
    """The RayService's pods keep the Serve token's digest (Serve's builder task runs on any node, and
    binds only a digest) and the registry key, nothing a policy service does not read: not the token,
    which only its clients need."""
    forbidden = _settings_env_names("alpaca_api_key", "alpaca_secret_key", "wandb_api_key", "serve_token")
    assert "RAYTRADE_SERVE_TOKEN" in forbidden
    for container in _containers(_all_cluster_specs()["rayservice.yaml"]):
        names = {e["name"] for e in container["env"]}
        assert names == {"RAYTRADE_SERVE_TOKEN_SHA256", "RAYTRADE_REGISTRY_HMAC_KEY"}
        assert not names & forbidden
        assert "serve-token" not in _secret_keys(container)


def test_the_rayservice_application_builds_from_its_args(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.test_registry import _promote_fake

    serve_config = yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module_name, _, attribute = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    token = "token-for-the-builder-test-0123456789"
    digest = hashlib.sha256(token.encode()).hexdigest()
    monkeypatch.delenv("RAYTRADE_SERVE_TOKEN", raising=False)  # as in its pods: the digest only
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN_SHA256", f"sha256:{digest}")
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("RAYTRADE_REGISTRY_HMAC_KEY", raising=False)
    assert app["args"]["model"] == "alpha@1"
    _promote_fake(tmp_path, None)  # the builder checks the version: alpha@1 of a registry here
    application = builder({**app["args"], "registry": str(tmp_path / "registry")})
    assert type(application).__name__ == "Application"
    assert application._bound_deployment.init_args[0] == digest


def test_the_builder_refuses_a_missing_token_and_bad_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from raytrade.cluster.serve_app import app_builder
    from raytrade.cluster.settings import MissingCredentialsError

    monkeypatch.delenv("RAYTRADE_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("RAYTRADE_SERVE_TOKEN_SHA256", raising=False)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    with pytest.raises(MissingCredentialsError, match="RAYTRADE_SERVE_TOKEN"):
        app_builder({"model": "alpha", "registry": "/data/registry"})
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "t")
    with pytest.raises(ValidationError, match="replicas"):
        app_builder({"model": "alpha", "registry": "/data/registry", "replicas": "0"})
    with pytest.raises(ValidationError, match="modle"):
        app_builder({"modle": "alpha", "registry": "/data/registry"})


def test_the_launcher_starts_every_node_with_token_auth_and_no_secret_in_the_file() -> None:
    launcher = _load("cluster-launcher.yaml")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(launcher[key])
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start
    assert any(
        "pip install --constraint" in c and c.endswith("-e /home/ray/raytrade")
        for c in launcher["setup_commands"]
    )
    text = (CONFIGS / "cluster-launcher.yaml").read_text()
    assert not re.search(r"RAY_AUTH_TOKEN=\S{8,}", text)


def test_the_launcher_syncs_no_file_that_rayignore_keeps_off_the_cluster() -> None:
    """`ray up` rsyncs the checkout to every node; without the filter it copied .env files, keys and
    the live loop's state that `ray job submit` (which reads .rayignore) leaves behind."""
    from raytrade.cluster.submit import SECRET_FILE_PATTERNS

    launcher = _load("cluster-launcher.yaml")
    assert {".rayignore", ".gitignore"} <= set(launcher["rsync_filter"])
    root = CONFIGS.parents[1]
    secret_patterns = {*SECRET_FILE_PATTERNS, ".raytrade/"}
    for name in (".rayignore", ".gitignore"):
        patterns = {line.strip() for line in (root / name).read_text().splitlines()}
        assert secret_patterns <= patterns, (name, sorted(secret_patterns - patterns))


def _docker_excluded(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule for ``path`` (relative, POSIX): the last matching pattern wins, a
    ``!`` pattern re-includes; ``**`` spans any folders, ``*`` and ``?`` stay within one; a pattern
    that matches a folder excludes everything under it."""

    def part(text: str) -> str:
        if text == "**":
            return "(?:[^/]+/)*"
        glob = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in text)
        return glob + "/"

    def regex(pattern: str) -> re.Pattern[str]:
        body = "".join(part(p) for p in pattern.strip("/").split("/")).removesuffix("/")
        return re.compile(f"^{body}(?:/.*)?$")

    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if regex(pattern.lstrip("!")).match(path):
            excluded = not negated
    return excluded


def test_the_image_build_context_holds_no_secret_environment_or_data() -> None:
    """`COPY cluster ./cluster` takes the whole folder: without a .dockerignore a settings.env or a token
    kept next to the configs was baked into the image every pod runs."""
    from raytrade.cluster.submit import SECRET_FILE_PATTERNS
    from tests.test_secrets import SECRET_FILES

    root = CONFIGS.parents[1]
    lines = (root / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {f"**/{p.rstrip('/')}" for p in SECRET_FILE_PATTERNS} <= set(patterns)
    for path in [
        *SECRET_FILES,
        ".venv/bin/python",
        "cluster/.venv/lib/x.py",
        ".git/config",
        "registry/a/1/x",
        "store/bars/year=2024/part-0.parquet",
        "data/daily/AAPL.csv",
        "select/select.json",
        "mystore/bars/year=2024/part-0.parquet",
    ]:
        assert _docker_excluded(patterns, path), path
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", (CONFIGS / "Dockerfile").read_text(), re.M)
    needed = [name for sources in copied for name in sources.split()]
    for path in [*needed, "cluster/submit.py", "cluster/settings.py", "replay/credentials.py"]:
        assert (root / path).exists() and not _docker_excluded(patterns, path), path


def test_the_image_installs_the_locked_versions_as_make_does() -> None:
    """The image used to resolve everything but ray and torch from pyproject's open ranges at build
    time: the cluster ran versions CI never tested."""
    root = CONFIGS.parents[1]
    dockerfile = (CONFIGS / "Dockerfile").read_text().replace("\\\n", " ")
    copied = " ".join(re.findall(r"^COPY (.+)$", dockerfile, re.M)).split()
    assert "requirements.lock" in copied
    installs = [c.strip() for run in re.findall(r"^RUN (.+)$", dockerfile, re.M) for c in run.split("&&")]
    (project,) = [c for c in installs if c.startswith("pip install") and c.endswith(" -e .")]
    assert "--constraint requirements.lock" in project, project
    make_pip = re.search(r"^PIP_VERSION := (\S+)$", (root / "Makefile").read_text(), re.M)
    assert make_pip and f"pip install --no-cache-dir pip=={make_pip.group(1)}" in installs
    assert installs.index(f"pip install --no-cache-dir pip=={make_pip.group(1)}") < installs.index(project)
    lock = dict(
        line.split("==", 1) for line in (root / "requirements.lock").read_text().splitlines() if "==" in line
    )
    (torch,) = [c for c in installs if " torch==" in c]
    assert f"torch=={lock['torch']} " in torch and "--no-deps" in torch


def test_ray_up_installs_the_locked_versions_as_the_image_does() -> None:
    """`ray up`'s nodes ran `pip install -e`, resolving every dependency from open ranges."""
    root = CONFIGS.parents[1]
    installs = [" ".join(c.split()) for c in _load("cluster-launcher.yaml")["setup_commands"]]
    (project,) = [c for c in installs if c.endswith("-e /home/ray/raytrade")]
    assert "--constraint /home/ray/raytrade/requirements.lock" in project, project
    make_pip = re.search(r"^PIP_VERSION := (\S+)$", (root / "Makefile").read_text(), re.M)
    assert make_pip and f"/home/ray/venv/bin/pip install pip=={make_pip.group(1)}" in installs
    lock = dict(
        line.split("==", 1) for line in (root / "requirements.lock").read_text().splitlines() if "==" in line
    )
    (torch,) = [c for c in installs if " torch==" in c]
    assert f"torch=={lock['torch']} " in torch and "--no-deps" in torch
    assert installs.index(torch) < installs.index(project)


REGISTRY_KEY = {"secretKeyRef": {"name": "raytrade-secrets", "key": "registry-hmac-key"}}


def _config_pods() -> dict[str, list[dict[str, Any]]]:
    """The containers that promote or load registry versions, per config: every Ray pod (job
    drivers, trials and evaluation rollouts, Serve replicas); the RayJob's submitter only submits."""
    return {
        "raycluster.yaml": _containers(_load("raycluster.yaml")["spec"]),
        "rayjob.yaml": _containers(_rayjob()["rayClusterSpec"]),
        "rayservice.yaml": _containers(_load("rayservice.yaml")["spec"]["rayClusterConfig"]),
    }


def test_every_pod_that_promotes_or_loads_a_version_has_the_registry_key_from_the_secret() -> None:
    """Without it, promote on KubeRay never signed and the replicas checked sha256s only."""
    for config, containers in _config_pods().items():
        for container in containers:
            env = {e["name"]: e for e in container["env"]}
            assert env.get("RAYTRADE_REGISTRY_HMAC_KEY", {}).get("valueFrom") == REGISTRY_KEY, (
                config,
                container["name"],
            )


def _documented_secrets(text: str) -> dict[str, set[str]]:
    """Secret name -> the data keys the ``kubectl create secret generic NAME --from-literal=KEY=...``
    commands of ``text`` create (a command continues over lines starting with ``--from-literal``)."""
    created: dict[str, set[str]] = {}
    for match in re.finditer(r"kubectl create secret generic ([\w-]+)", text):
        command = re.split(r"\n(?!#?\s*--from-literal)", text[match.start() :])[0]
        created.setdefault(match.group(1), set()).update(re.findall(r"--from-literal=([\w-]+)=", command))
    return created


def test_the_documented_secrets_create_every_key_the_configs_require() -> None:
    """A required secretKeyRef, or authOptions' Secret, whose key the documented `kubectl create
    secret` commands do not create keeps the pods from starting; the README's and raycluster.yaml's."""
    required = {
        (ref["name"], ref["key"])
        for containers in _config_pods().values()
        for c in containers
        for e in c["env"]
        if (ref := e.get("valueFrom", {}).get("secretKeyRef")) and not ref.get("optional")
    }
    required |= {
        (spec["authOptions"]["secretName"], KUBERAY_TOKEN_KEY) for spec in _all_cluster_specs().values()
    }
    assert {("raytrade-secrets", "registry-hmac-key"), (RAY_AUTH_SECRET, KUBERAY_TOKEN_KEY)} <= required
    readme = (CONFIGS.parents[1] / "README.md").read_text()
    for name, text in (("README.md", readme), ("raycluster.yaml", (CONFIGS / "raycluster.yaml").read_text())):
        documented = _documented_secrets(text)
        created = {(secret, key) for secret, keys in documented.items() for key in keys}
        assert required <= created, (name, sorted(required - created))
        assert documented[RAY_AUTH_SECRET] == {KUBERAY_TOKEN_KEY}, (
            name
        )  # the operator reads it: the token only


def _registry_mounts(container: dict[str, Any], registry: Path) -> list[dict[str, Any]]:
    """The mounts that cover ``registry``, innermost (longest path) first: the one that applies."""
    covering = [m for m in container["volumeMounts"] if registry.is_relative_to(m["mountPath"])]
    return sorted(covering, key=lambda m: -len(m["mountPath"]))


def test_only_the_clusters_head_may_write_the_registry_and_a_search_job_never_does() -> None:
    registry = Path("/data/registry")
    cluster = _load("raycluster.yaml")["spec"]
    (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert not _registry_mounts(head, registry)[0].get("readOnly"), "promote runs as a job driver"
    workers = [c for g in cluster["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    job = _rayjob()["rayClusterSpec"]
    job_pods = [*job["headGroupSpec"]["template"]["spec"]["containers"]] + [
        c for g in job["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]
    ]
    for container in [*workers, *job_pods]:
        inner = _registry_mounts(container, registry)[0]
        assert inner["mountPath"] == str(registry) and inner.get("readOnly") is True, container["name"]
        assert inner.get("subPath") == "registry"  # the same volume's registry folder, read-only


def test_the_rayservice_pins_a_version_and_mounts_the_registry_read_only() -> None:
    from raytrade.envs.registry_ref import parse_registry_ref

    spec = _load("rayservice.yaml")["spec"]
    (app,) = yaml.safe_load(spec["serveConfigV2"])["applications"]
    assert parse_registry_ref(app["args"]["model"]).version is not None, "production follows latest"
    registry = Path(app["args"]["registry"])
    for container in _containers(spec["rayClusterConfig"]):
        mounts = [m for m in container["volumeMounts"] if registry.is_relative_to(m["mountPath"])]
        assert mounts and all(m.get("readOnly") is True for m in mounts), container["name"]


def _rayjob() -> dict[str, Any]:
    return _load("rayjob.yaml")["spec"]


def _rayjob_containers() -> list[dict[str, Any]]:
    spec = _rayjob()
    return [*_containers(spec["rayClusterSpec"]), *spec["submitterPodTemplate"]["spec"]["containers"]]


def test_the_rayjob_runs_the_pinned_image_with_secrets_from_kubernetes() -> None:
    assert _rayjob()["rayClusterSpec"]["rayVersion"] == ray.__version__
    for container in _rayjob_containers():
        assert container["image"] == f"raytrade:{ray.__version__}"
        env = {e["name"]: e for e in container.get("env", [])}
        for name, entry in env.items():
            if any(word in name for word in SECRET_WORDS):
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], name
    for container in _containers(_rayjob()["rayClusterSpec"]):
        assert {"name": "data", "mountPath": "/data"}.items() <= container["volumeMounts"][0].items()


def _shell_words(command: str) -> list[str]:
    """``command``'s words as a POSIX shell passes them on (substitutions expanded): KubeRay's
    submitter runs the entrypoint inside ``bash -c``, Ray's job supervisor in ``sh -c``."""
    import subprocess

    printed = subprocess.run(
        ["sh", "-c", f'set -- {command}; printf "%s\\0" "$@"'], capture_output=True, text=True, check=True
    ).stdout
    return printed.split("\0")[:-1]


def test_the_rayjob_entrypoint_is_a_tune_command_the_cli_accepts_on_the_shared_volume() -> None:
    from raytrade.cluster.tune import tune_command
    from raytrade.tune_specs import SPECS

    python, dash_m, module, command, *args = _shell_words(_rayjob()["entrypoint"])
    assert [python, dash_m, module, command] == ["python", "-m", "raytrade.cluster.cli", "tune"]
    params = tune_command.make_context("tune", list(args)).params
    assert params["spec"] in SPECS
    for name in ("replay", "storage"):
        assert Path(params[name]).is_relative_to("/data"), name


def test_the_rayjob_names_its_run_by_the_utc_day_so_the_next_nights_run_starts() -> None:
    """A fixed --name made the second run fail ("experiment ... exists: pass --resume, or --name")."""
    from datetime import UTC, datetime

    from raytrade.cluster.tune import tune_command

    before = datetime.now(UTC).strftime("%Y%m%d")
    args = _shell_words(_rayjob()["entrypoint"])[4:]  # after `python -m raytrade.cluster.cli tune`
    after = datetime.now(UTC).strftime("%Y%m%d")
    name = tune_command.make_context("tune", list(args)).params["name"]
    assert name in {f"ppo-nightly-{before}", f"ppo-nightly-{after}"}
    assert "--name ppo-nightly-$(date -u +%Y%m%d)" in _rayjob()["entrypoint"]


def test_the_kuberay_walk_through_reads_only_runs_it_makes() -> None:
    """It selected /data/runs/distrl-nightly, which no config or step produced."""
    readme = (CONFIGS.parents[1] / "README.md").read_text()
    start = readme.index("### From `kubectl apply` to a served model (KubeRay)")
    block = readme[start:].split("```bash", 1)[1].split("```", 1)[0]
    job_name = re.search(r"--name (\S+\$\(date -u \+%Y%m%d\))", _rayjob()["entrypoint"])
    assert job_name
    made = {job_name.group(1).replace("$(date -u +%Y%m%d)", "$DAY"), *re.findall(r"--name (\S+)", block)}
    assert "DAY=$(date -u +%Y%m%d)" in block
    read = set(re.findall(r"/data/runs/([\w$-]+)", block))
    assert read and read <= made, sorted(read - made)


def test_the_kuberay_walk_through_sets_every_variable_it_expands() -> None:
    """Its curl sent `Bearer $SERVE_TOKEN`, a variable nothing sets (the service reads
    RAYTRADE_SERVE_TOKEN): a user copying the steps sent an empty bearer and got 401."""
    readme = (CONFIGS.parents[1] / "README.md").read_text()
    start = readme.index("### From `kubectl apply` to a served model (KubeRay)")
    block = readme[start:].split("```bash", 1)[1].split("```", 1)[0]
    code = "\n".join(line.split("#", 1)[0] for line in block.splitlines())  # not the comments
    unset = [
        (name, line)
        for line in code.splitlines()
        for use in re.finditer(r"\$\{?(\w+)", line)
        if not re.search(rf"^(export )?{(name := use.group(1))}=", code[: code.index(line)], re.M)
    ]
    assert unset == []
    (bearer,) = re.findall(r"Authorization: Bearer \$(\w+)", code)
    assert bearer == "RAYTRADE_SERVE_TOKEN"  # cluster.settings' serve_token variable
