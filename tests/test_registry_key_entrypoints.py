"""Every command that loads a registry version does so under the registry key (``cluster.registry_access``):
with ``RAYTRADE_REGISTRY_HMAC_KEY`` set, a signed version whose manifest was edited after signing (a
booby-trapped pickle, its sha256 rewritten in the manifest by someone who cannot re-sign) is refused
with the HMAC error, and nothing of it is unpickled (the pickle would create a marker file)."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from raytrade.cluster.errors import EXIT_BAD_INPUT
from raytrade.models.manifest import read_manifest
from raytrade.models.registry import RegistryError, version_file_hashes, write_manifest, write_version
from raytrade.replay.errors import InputError
from tests.test_registry import KEY, _checkpoint, _Touch, manifest_record

HMAC_REFUSAL = "manifest.json does not match its HMAC under the registry key"


@pytest.fixture
def tampered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(registry, marker): ``alpha@1`` signed under ``KEY``, then its connector state replaced by a
    pickle that creates ``marker`` and its hash rewritten in the manifest; the key set for the
    process, as an operator's environment holds it."""
    registry = tmp_path / "registry"
    folder = write_version(
        registry, "alpha", _checkpoint(tmp_path), manifest_record(), hmac_key=SecretStr(KEY)
    )
    marker = tmp_path / "UNPICKLED"
    (folder / "connectors" / "env_to_module_connector" / "state.pkl").write_bytes(
        pickle.dumps(_Touch(marker))
    )
    write_manifest(folder, read_manifest(folder).model_copy(update={"files": version_file_hashes(folder)}))
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", KEY)
    return registry, marker


def _refused(result: Any, marker: Path) -> None:
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert HMAC_REFUSAL in result.output
    assert not marker.exists()


def test_evaluate_refuses_a_tampered_version_unpickled(
    tampered: tuple[Path, Path], synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.evaluate import evaluate_command

    registry, marker = tampered
    args = [
        "--replay",
        str(synthetic_store),
        "--policies",
        "cash,registry:alpha",
        "--registry",
        str(registry),
    ]
    args += ["--out", str(tmp_path / "out"), "--seeds", "1", "--scenarios", "", "--no-plots"]
    _refused(CliRunner().invoke(evaluate_command, args), marker)
    assert not (tmp_path / "out" / "report.json").exists()


def test_nightly_refuses_a_tampered_version_unpickled(
    tampered: tuple[Path, Path], synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.nightly import nightly_command

    registry, marker = tampered
    results = tmp_path / "results.md"
    args = ["--replay", str(synthetic_store), "--registry", str(registry), "--baselines", "cash"]
    args += ["--scenarios", "", "--seeds", "1", "--bootstrap-samples", "10", "--no-plots"]
    args += ["--reports", str(tmp_path / "reports"), "--results", str(results), "--date", "2026-01-05"]
    _refused(CliRunner().invoke(nightly_command, args), marker)
    assert not results.exists()


def test_simulate_experience_refuses_a_tampered_version_unpickled(
    tampered: tuple[Path, Path], synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.simulate_experience import simulate_experience_command

    registry, marker = tampered
    args = ["--policy", "registry:alpha", "--replay", str(synthetic_store), "--registry", str(registry)]
    _refused(CliRunner().invoke(simulate_experience_command, [*args, "--out", str(tmp_path / "x")]), marker)
    assert not (tmp_path / "x").exists()


def test_tune_init_refuses_a_tampered_version_before_ray_starts(
    tampered: tuple[Path, Path], synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster import local_cluster
    from raytrade.cluster.tune import tune_command

    def no_ray(*_: Any, **__: Any) -> None:
        raise AssertionError("Ray started")

    monkeypatch.setattr(local_cluster, "init_ray", no_ray)
    registry, marker = tampered
    storage = tmp_path / "runs"
    args = [
        "--spec",
        "ppo",
        "--replay",
        str(synthetic_store),
        "--smoke",
        "--no-wandb",
        "--storage",
        str(storage),
    ]
    _refused(
        CliRunner().invoke(tune_command, [*args, "--init", "registry:alpha", "--registry", str(registry)]),
        marker,
    )
    assert not storage.exists()


def test_tune_search_config_loads_the_init_version_under_the_key(
    tampered: tuple[Path, Path], synthetic_store: Path
) -> None:
    """The driver's own load (``with_init_weights``, reached from ``TuneOptions.search_config``)."""
    from raytrade.cluster.tune import TuneOptions
    from raytrade.tune_specs import get_spec

    registry, marker = tampered
    opts = TuneOptions(
        spec="ppo", replay=synthetic_store, smoke=True, init="registry:alpha", registry=registry
    )
    with pytest.raises(RegistryError, match=HMAC_REFUSAL):
        opts.search_config(get_spec("ppo"), None, {})  # type: ignore[arg-type]
    assert not marker.exists()


def test_init_weights_load_under_the_key_and_a_trial_without_it_refuses(tampered: tuple[Path, Path]) -> None:
    """``tune_specs.init_weights``: the driver's load and every trial's callback check the HMAC under
    the key the reader returns; a trial whose reader finds no key (its node lacks the secret) refuses
    instead of loading the version unchecked."""
    from raytrade.tune_specs.init_weights import InitVersion, load_init_weights, with_init_weights

    registry, marker = tampered
    version = InitVersion(registry=str(registry), name="alpha", version=1)
    with pytest.raises(RegistryError, match=HMAC_REFUSAL):
        with_init_weights(None, version, "ppo", registry_key=lambda: SecretStr(KEY))  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=HMAC_REFUSAL):
        load_init_weights(algorithm=None, init=version.model_dump(), registry_key=lambda: SecretStr(KEY))
    with pytest.raises(InputError, match=r"registry:alpha@1: the search was started with a registry key"):
        load_init_weights(algorithm=None, init=version.model_dump(), registry_key=lambda: None)
    assert not marker.exists()


def _unkeyed_loads(path: Path) -> list[int]:
    """Lines of ``path`` that use ``models.registry_load.load`` (imported by name, from ``models``, or
    as ``registry_load.load``) without a key: a call with neither a third argument nor ``hmac_key``,
    or the function handed on bare (``loader = load``) instead of bound by
    ``functools.partial(load, hmac_key=…)``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in (
            "raytrade.models.registry_load",
            "raytrade.models",
        ):
            names |= {a.asname or a.name for a in node.names if a.name == "load"}
            modules |= {a.asname or a.name for a in node.names if a.name == "registry_load"}

    def is_load(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "load"
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        )

    keyed: set[int] = set()  # the load references used with a key
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            has_key = "hmac_key" in {k.arg for k in node.keywords}
            if is_load(node.func) and (has_key or len(node.args) >= 3):
                keyed.add(id(node.func))
            if has_key and node.args and is_load(node.args[0]):
                keyed.add(id(node.args[0]))
    return sorted(
        getattr(node, "lineno", 0) for node in ast.walk(tree) if is_load(node) and id(node) not in keyed
    )


def test_the_load_guard_finds_unkeyed_uses(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "from raytrade.models.registry_load import load\n"
        "from raytrade.models import registry_load as rl\n"
        "load('a', 'r')\n"
        "x = load\n"
        "rl.load('a', 'r')\n"
        "functools.partial(load, hmac_key=k)\n"
        "load('a', 'r', k)\n"
        "rl.load('a', 'r', hmac_key=None)\n"
    )
    assert _unkeyed_loads(source) == [3, 4, 5]


def test_every_registry_load_above_models_passes_a_key() -> None:
    """A guard for the next entrypoint: whoever loads a version in the layers above ``models`` passes
    a key (None only where that is the caller's explicit choice) on to ``models.registry_load.load``."""
    root = Path(__file__).resolve().parents[1]
    layers = ("envs", "tune_specs", "serve", "cluster")
    files = [p for layer in layers for p in sorted((root / layer).rglob("*.py"))]
    found = [f"{p.relative_to(root)}:{line}" for p in files for line in _unkeyed_loads(p)]
    assert found == []
