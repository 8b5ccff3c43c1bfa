"""Registry: promote a smoke search's best trial, load it back, act exactly like the trained module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from raytrade.cluster.promote import promote_command
from raytrade.models.manifest import scrub_secrets
from raytrade.models.registry import resolve
from raytrade.replay.fingerprint import fingerprint

SECRET = "wandb-key-must-not-leak-1234"


@pytest.fixture(scope="module")
def run_dir(ppo_smoke_run: Path) -> Path:
    """A finished one-trial smoke search of the ``ppo`` spec."""
    return ppo_smoke_run


def _promote(run_dir: Path, registry: Path, name: str = "alpha") -> str:
    result = CliRunner().invoke(
        promote_command, ["--run", str(run_dir), "--name", name, "--registry", str(registry)]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_fingerprint_is_order_independent_and_content_sensitive(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    first = fingerprint([tmp_path / "a", tmp_path / "b"], tmp_path)
    assert first == fingerprint([tmp_path / "b", tmp_path / "a"], tmp_path)
    (tmp_path / "b").write_bytes(b"3")
    assert fingerprint([tmp_path / "a", tmp_path / "b"], tmp_path) != first


def test_scrub_secrets_drops_secret_keys_and_nan() -> None:
    assert scrub_secrets({"wandb_api_key": "x", "a": {"token": 1, "b": float("nan")}, "c": [1.0]}) == {
        "a": {"b": None},
        "c": [1.0],
    }


def test_unknown_name_or_version_lists_available(tmp_path: Path) -> None:
    (tmp_path / "alpha" / "1").mkdir(parents=True)
    with pytest.raises(ValueError, match="no policy 'beta' in registry .*; available: alpha"):
        resolve(tmp_path, "beta")
    with pytest.raises(ValueError, match="no version 3 of 'alpha'; available: 1"):
        resolve(tmp_path, "alpha@3")


def test_promote_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        promote_command, ["--run", str(tmp_path), "--name", "x", "--registry", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {str(tmp_path)!r} has no leaderboard.json: did `raytrade tune` finish?"
    )


@pytest.mark.slow
@pytest.mark.ray
def test_promote_and_load_round_trip(
    run_dir: Path, synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm

    from raytrade.envs.gym_envs import PortfolioVectorEnv
    from raytrade.models.registry_load import load

    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    registry = tmp_path / "registry"
    _promote(run_dir, registry)
    _promote(run_dir, registry)
    assert (registry / "alpha" / "latest").read_text().strip() == "2"

    handle = load("alpha", registry)
    assert handle.version == 2 and load("alpha@1", registry).version == 1
    manifest = handle.manifest
    board = json.loads((run_dir / "leaderboard.json").read_text())
    best = board[0]

    # Manifest: the promoted checkpoint's validation score is re-measured and equals the search's.
    assert manifest.metrics["validation"]["objective"] == pytest.approx(best["objective"], rel=1e-9)
    assert "test" in manifest.metrics
    assert manifest.data.symbols == sorted(manifest.data.symbols) and len(manifest.data.symbols) == 14
    assert len(manifest.data.sha256) == 64 and len(manifest.features.sha256) == 64
    assert manifest.flops_per_decision > 0
    assert set(manifest.libraries) >= {"ray", "torch", "numpy", "pandas", "pyarrow"}
    assert manifest.command.startswith("raytrade tune --spec ppo")
    assert manifest.code_version
    assert (handle.path / "module").is_dir() and (handle.path / "connectors").is_dir()
    for path in registry.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    # Actions: exactly the trained algorithm's module on the same observations.
    algo = Algorithm.from_checkpoint(str(run_dir / best["checkpoint"]))
    try:
        trained: Any = algo.get_module()
        env = PortfolioVectorEnv(manifest.config["env_config"], num_envs=16)
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(5):
            with torch.no_grad():
                expected = trained.weights(torch.as_tensor(obs)).numpy()
                expected_one = trained.weights(torch.as_tensor(obs[:1])).numpy()[0]
            np.testing.assert_array_equal(handle.act(obs), expected)
            np.testing.assert_array_equal(handle.act(obs[0]), expected_one)
            obs, *_ = env.step(rng.uniform(-1, 1, (16, manifest.n_assets)).astype(np.float32))
    finally:
        algo.stop()


def test_promoted_model_is_evaluated_against_the_baselines(
    run_dir: Path, synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.evaluate import run_evaluation
    from raytrade.envs.metrics import summarize

    registry = tmp_path / "registry"
    _promote(run_dir, registry, name="beta")
    report = run_evaluation(
        synthetic_store,
        ["registry:beta", "kelly_lite"],
        tmp_path / "report",
        seeds=1,
        scenarios=["flash_crash"],
        registry=registry,
        bootstrap_samples=50,
        plots=False,
    )
    model = report.policies["registry:beta"]
    baseline = report.policies["equal_weight"]
    assert model.timestamps == baseline.timestamps and len(model.returns) > 50
    recomputed = summarize(np.asarray(model.returns), report.periods_per_year)
    assert model.metrics.sharpe == pytest.approx(recomputed["sharpe"], rel=1e-12)
    assert (tmp_path / "report" / "report.md").read_text().count("registry:beta") >= 2
