"""Registry: promote a smoke search's best trial, load it back, act exactly like the trained module."""

from __future__ import annotations

import json
import os
import pickle
import time
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


def test_promote_and_select_name_a_run_folder_that_does_not_exist(tmp_path: Path) -> None:
    """The README's `promote --run ray_results/ppo` after a `--smoke` search (which writes
    `ray_results/ppo-smoke`) used to be told "has no leaderboard.json: did `raytrade tune` finish?"."""
    from raytrade.cluster.select import select_command

    missing = tmp_path / "ppo"
    args = ["--run", str(missing), "--name", "x", "--registry", str(tmp_path / "reg")]
    result = CliRunner().invoke(promote_command, args)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {str(missing)!r} does not exist: pass the folder `raytrade tune` printed (--storage/--name)"
    )
    afile = tmp_path / "afile"
    afile.write_text("")
    result = CliRunner().invoke(promote_command, ["--run", str(afile), "--name", "x"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {str(afile)!r} is not a folder: pass the run folder `raytrade tune` printed"
    )
    smoke = tmp_path / "ppo-smoke"
    smoke.mkdir()
    (smoke / "leaderboard.json").write_text("[]")
    for command, argv in (
        (promote_command, args),
        (select_command, [str(missing), "--out", str(tmp_path / "s")]),
    ):
        result = CliRunner().invoke(command, argv)
        assert result.exit_code == 2, result.output
        assert f"{str(missing)!r} does not exist; a --smoke search writes {str(smoke)!r}, which exists" in (
            result.output
        )


@pytest.mark.slow
@pytest.mark.ray
def test_promote_and_load_round_trip(
    run_dir: Path, synthetic_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm

    from raytrade.cluster.run_file import read_run_file
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

    # Manifest: the promoted checkpoint's validation score is re-measured and equals the search's,
    # both with the book closed at the window's end.
    assert manifest.metrics["validation"]["objective"] == pytest.approx(best["objective"], rel=1e-9)
    assert (manifest.objective.book_end, manifest.metrics_book_end) == ("closed", "closed")
    assert "test" in manifest.metrics
    assert manifest.data.symbols == sorted(manifest.data.symbols) and len(manifest.data.symbols) == 14
    assert len(manifest.data.sha256) == 64 and len(manifest.features.sha256) == 64
    assert manifest.flops_per_decision > 0
    assert set(manifest.libraries) >= {"ray", "torch", "numpy", "pandas", "pyarrow"}
    assert manifest.command.startswith("raytrade tune --spec ppo")
    assert manifest.code_version
    recorded_code = read_run_file(run_dir).provenance.code_sha256
    assert recorded_code is not None and manifest.code_sha256 == recorded_code
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


# ------------------------------------------------------------------------------ typed documents


def manifest_record(**update: Any) -> dict[str, Any]:
    """A complete manifest (as ``raytrade promote`` writes it) of a tiny synthetic-data policy."""
    record: dict[str, Any] = {
        "name": "alpha",
        "version": 1,
        "created_at": "2026-01-02T03:04:05Z",
        "trained_at": "2026-01-02T02:00:00Z",
        "source": {
            "run": "/runs/ppo",
            "spec": "ppo",
            "family": "ppo_mlp",
            "trial": "t0",
            "checkpoint": "c",
            "iteration": 2,
        },
        "data": {"kind": "synthetic", "sha256": "0" * 64, "files": 0, "symbols": ["A", "B"]},
        "features": {
            "observed": ["ret_1"],
            "loader_columns": ["ret_1"],
            "flat_obs": True,
            "portfolio_state": 3,
            "sha256": "1" * 64,
        },
        "n_assets": 2,
        "params": {"lr": 0.001},
        "config": {"env": "raytrade/PortfolioEnv-v0", "env_config": {"flat_obs": True, "num_envs": 4}},
        "code_version": "abc",
        "libraries": {"ray": "2.60.0"},
        "flops_per_decision": 10,
        "objective": {"metric": "validation/objective", "mode": "max", "cvar_penalty": 1.0},
        "metrics": {"validation": {"objective": 0.5, "sharpe": None}},
        "search_metrics": {"objective": 0.5},
        "command": "raytrade tune --spec ppo",
        "reproduce": "raytrade tune --spec ppo  # then promote trial t0",
    }
    return {**record, **update}


def test_a_manifest_recorded_before_the_exit_cost_reads_marked_and_signs_as_it_was() -> None:
    """A version promoted before the objective closed the book has no ``book_end`` anywhere: its
    scores read as marked to market, and the signed form leaves the new fields out (at their
    default), so its signature stays valid; a new version's rule is signed."""
    from raytrade.models.manifest import Manifest
    from raytrade.models.registry import canonical_manifest

    old = Manifest.model_validate(manifest_record())
    assert (old.objective.book_end, old.metrics_book_end) == ("marked", "marked")
    signed = json.loads(canonical_manifest(old))["manifest"]
    assert signed["objective"] == manifest_record()["objective"] and "metrics_book_end" not in signed
    objective = {**manifest_record()["objective"], "book_end": "closed"}
    new = Manifest.model_validate(manifest_record(objective=objective, metrics_book_end="closed"))
    signed = json.loads(canonical_manifest(new))["manifest"]
    assert (signed["objective"]["book_end"], signed["metrics_book_end"]) == ("closed", "closed")


def test_a_manifest_names_its_code_fingerprint_and_one_older_than_it_signs_as_it_was() -> None:
    """A version promoted before the code fingerprint was recorded reads None and signs without the
    field (its signature stays valid); a new version's fingerprint is signed."""
    from raytrade.models.manifest import Manifest
    from raytrade.models.registry import canonical_manifest

    old = Manifest.model_validate(manifest_record())
    assert old.code_sha256 is None
    assert "code_sha256" not in json.loads(canonical_manifest(old))["manifest"]
    new = Manifest.model_validate(manifest_record(code_sha256="2" * 64))
    assert json.loads(canonical_manifest(new))["manifest"]["code_sha256"] == "2" * 64


def test_manifest_round_trips_and_drops_secrets_wherever_they_are() -> None:
    from raytrade.models.manifest import Manifest

    config = {"env_config": {"flat_obs": True}, "callbacks": {"wandb": {"api_key": SECRET, "project": "p"}}}
    manifest = Manifest.model_validate(manifest_record(config=config))
    text = manifest.model_dump_json()
    assert SECRET not in text
    assert manifest.config["callbacks"] == {"wandb": {"project": "p"}}
    assert Manifest.model_validate_json(text) == manifest


def test_manifest_env_config_is_the_validated_training_config() -> None:
    from raytrade.envs.config import GatedEnvConfig
    from raytrade.models.manifest import Manifest

    plain = Manifest.model_validate(manifest_record()).env_config()
    assert type(plain).__name__ == "PortfolioEnvConfig" and plain.flat_obs and plain.num_envs == 1
    gated = Manifest.model_validate(
        manifest_record(config={"env": "raytrade/GatedSymbolEnv-v0", "env_config": {"kelly_cap": 0.1}})
    ).env_config()
    assert isinstance(gated, GatedEnvConfig) and gated.kelly_cap == 0.1


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: r.pop("code_version"), "'code_version': Field required"),
        (
            lambda r: r["data"].update(files="many"),
            "'data.files': Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_malformed_manifest_is_refused_naming_file_and_field(tmp_path: Path, edit: Any, field: str) -> None:
    from raytrade.models.manifest import ManifestError, read_manifest

    record = manifest_record()
    edit(record)
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == f"{str(tmp_path / 'manifest.json')!r} is not a valid manifest: field {field}"


def test_a_manifest_a_newer_raytrade_wrote_is_refused_naming_the_writer_and_the_unknown_field(
    tmp_path: Path,
) -> None:
    """A field this checkout does not know means a newer promote step wrote the version: the line
    says so and what to do, not pydantic's "Extra inputs are not permitted"."""
    from raytrade.models.manifest import ManifestError, read_manifest

    record = manifest_record()
    record["data"]["colour"] = "red"
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == (
        f"{str(tmp_path / 'manifest.json')!r} was written by a newer raytrade (code_version "
        f"{record['code_version']!r}): its field 'data.colour' is unknown to this checkout; update the "
        "checkout (git pull, then reinstall) to read it"
    )


def test_manifest_that_is_not_json_is_refused_in_one_line(tmp_path: Path) -> None:
    from raytrade.models.manifest import ManifestError, read_manifest

    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"is not a valid manifest: field '\(document\)': Invalid JSON"):
        read_manifest(tmp_path)


def test_changed_file_of_a_version_is_refused_before_unpickling(tmp_path: Path) -> None:
    from raytrade.models.manifest import Manifest
    from raytrade.models.registry import verify_files, version_file_hashes, write_manifest

    (tmp_path / "module").mkdir()
    (tmp_path / "module" / "state.pkl").write_bytes(b"weights")
    manifest = Manifest.model_validate(manifest_record()).model_copy(
        update={"files": version_file_hashes(tmp_path)}
    )
    write_manifest(tmp_path, manifest)
    verify_files(tmp_path, manifest)  # intact: nothing raised
    (tmp_path / "module" / "state.pkl").write_bytes(b"weightz")
    with pytest.raises(ValueError, match=r"alpha@1 .*: file 'module/state.pkl' does not match its sha256"):
        verify_files(tmp_path, manifest)
    (tmp_path / "module" / "state.pkl").unlink()
    with pytest.raises(ValueError, match=r"file 'module/state.pkl' listed in the manifest is missing"):
        verify_files(tmp_path, manifest)


def test_run_file_of_an_older_raytrade_is_refused_naming_the_field(tmp_path: Path) -> None:
    from raytrade.cluster.run_file import RUN_FILE, RunFileError, read_run_file

    old = {
        "spec": "ppo",
        "family": "ppo_mlp",
        "replay": "/store",
        "budget": {
            "iterations": 2,
            "num_samples": 1,
            "train_batch": 64,
            "minibatch": 32,
            "num_epochs": 1,
            "episode_len": 8,
            "checkpoint_every": 1,
        },
        "objective": {"metric": "validation/objective", "mode": "max", "cvar_penalty": 1.0},
        "searched": [],
        "required_features": ["ret_1"],
        "seed": 0,
        "command": "raytrade tune --spec ppo",
    }
    (tmp_path / RUN_FILE).write_text(json.dumps(old))
    with pytest.raises(RunFileError) as info:
        read_run_file(tmp_path)
    assert str(info.value) == (
        f"{str(tmp_path / RUN_FILE)!r} is not a valid run file: field 'provenance': Field required"
    )


def test_flops_of_a_module_without_feature_count_use_its_observation_space() -> None:
    import gymnasium as gym
    import torch
    from ray.rllib.core.columns import Columns

    from raytrade.models.catalog import flops_per_decision

    class Plain:
        """RLlib's default module shape: a Box observation, no ``n_features``."""

        observation_space = gym.spaces.Box(-1.0, 1.0, (5,))
        layer = torch.nn.Linear(5, 3)

        def forward_inference(self, batch: dict[str, torch.Tensor]) -> Any:
            return self.layer(batch[Columns.OBS])

    assert flops_per_decision(Plain(), n_assets=2) == 5 * 3  # multiply-adds of one 5 -> 3 layer


@pytest.mark.slow
@pytest.mark.ray
def test_manifest_records_the_data_the_search_trained_on_not_the_grown_store(
    run_dir: Path, synthetic_store: Path, tmp_path: Path
) -> None:
    """Tune records the fingerprint when the search starts; data appended afterwards does not change
    what promote writes. The run and its store are copied first: the session's store stays as is."""
    import shutil

    from raytrade.cluster.run_file import read_run_file
    from raytrade.models.manifest import read_manifest
    from raytrade.models.registry import code_version, library_versions
    from raytrade.replay import read_frame
    from raytrade.replay.fingerprint import data_fingerprint
    from raytrade.replay.ingest import ingest_frames

    store, run = tmp_path / "store", tmp_path / "run"
    shutil.copytree(synthetic_store, store)
    shutil.copytree(run_dir, run)
    for path in [run / "raytrade_run.json", *run.glob("*/params.json")]:
        path.write_text(path.read_text().replace(str(synthetic_store.resolve()), str(store.resolve())))
    trained = data_fingerprint(synthetic_store)
    recorded = read_run_file(run).provenance
    assert (recorded.data_sha256, recorded.data_files) == trained
    assert recorded.code_version == code_version() and recorded.libraries == library_versions()

    # grown by a newcomer symbol (a different synthetic path would restate the stored bars, not rescale them)
    bars = read_frame(store, "bars")
    ingest_frames(
        store, bars[bars["symbol"] == bars["symbol"].iloc[0]].assign(symbol="NEWCO"), show_progress=False
    )
    assert data_fingerprint(store) != trained

    _promote(run, tmp_path / "registry")
    manifest = read_manifest(tmp_path / "registry" / "alpha" / "1")
    assert (manifest.data.sha256, manifest.data.files) == trained
    assert manifest.trained_at == recorded.started_at and manifest.created_at > recorded.started_at


# ------------------------------------------------------------------------------ names and concurrent writers


@pytest.mark.parametrize(
    "ref", ["../alpha", "alpha/../../etc", "a/b", "..", ".hidden", "alpha\n", "/etc", "a\\b"]
)
def test_resolve_refuses_references_that_are_not_plain_folder_names(tmp_path: Path, ref: str) -> None:
    from raytrade.models.registry import RegistryError

    (tmp_path / "registry" / "alpha" / "1").mkdir(parents=True)
    with pytest.raises(RegistryError, match="must match"):
        resolve(tmp_path / "registry", ref)


def test_resolve_names_a_registry_folder_that_does_not_exist(tmp_path: Path) -> None:
    """A mistyped or defaulted ``--registry`` (the demo's is ``.demo/registry``) read "no policy 'x'
    in registry 'registry'; available: none", as if the folder were an empty registry."""
    from raytrade.models.registry import RegistryError

    missing = tmp_path / "registry"
    with pytest.raises(RegistryError, match=rf"registry '{missing}' is not a folder \(no such folder"):
        resolve(missing, "alpha")
    (tmp_path / "afile").write_text("")
    with pytest.raises(RegistryError, match=r"is not a folder \(a file, not a folder"):
        resolve(tmp_path / "afile", "alpha")
    missing.mkdir()
    with pytest.raises(RegistryError, match="; available: none$"):
        resolve(missing, "alpha")


def test_resolve_refuses_a_version_that_leads_outside_the_registry(tmp_path: Path) -> None:
    from raytrade.models.registry import RegistryError

    (tmp_path / "outside").mkdir()
    (tmp_path / "registry" / "alpha").mkdir(parents=True)
    (tmp_path / "registry" / "alpha" / "1").symlink_to(tmp_path / "outside")
    with pytest.raises(RegistryError, match=r"alpha@1 .* leads outside the registry"):
        resolve(tmp_path / "registry", "alpha@1")


def test_a_latest_file_that_is_not_a_number_is_refused_naming_it(tmp_path: Path) -> None:
    from raytrade.models.registry import RegistryError

    (tmp_path / "alpha" / "1").mkdir(parents=True)
    (tmp_path / "alpha" / "latest").write_text("../../1\n")
    with pytest.raises(RegistryError, match=r"latest' holds '\.\./\.\./1', not a version number"):
        resolve(tmp_path, "alpha")


def _fake_checkpoint(root: Path) -> Path:
    """The part of an RLlib checkpoint folder ``write_version`` copies (it unpickles nothing)."""
    module = root / "learner_group" / "learner" / "rl_module" / "default_policy"
    module.mkdir(parents=True)
    (module / "module_state.pt").write_bytes(b"weights")
    return root


def test_concurrent_promotes_get_their_own_staging_folders_and_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from raytrade.models import registry as reg
    from raytrade.models.manifest import read_manifest

    writers = 6
    checkpoint = _fake_checkpoint(tmp_path / "ckpt")
    staged = threading.Barrier(writers, timeout=30)
    hashes = reg.version_file_hashes

    def hash_then_wait(folder: Path) -> dict[str, str]:
        out = hashes(folder)
        if not folder.name.isdigit():  # a staging folder (whatever its name)
            staged.wait()  # every writer has staged and picked number 1 before any renames
        return out

    monkeypatch.setattr(reg, "version_file_hashes", hash_then_wait)
    results: list[Path] = []
    errors: list[BaseException] = []

    def promote() -> None:
        try:
            results.append(reg.write_version(tmp_path / "registry", "alpha", checkpoint, manifest_record()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promote) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    folder = tmp_path / "registry" / "alpha"
    assert sorted(int(p.name) for p in results) == list(range(1, writers + 1))
    for version in range(1, writers + 1):
        manifest = read_manifest(folder / str(version))
        assert manifest.version == version
        reg.verify_files(folder / str(version), manifest)
    assert (folder / "latest").read_text() == f"{writers}\n"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".staging-")) == []


def test_a_promote_never_replaces_an_existing_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.models import registry as reg

    checkpoint = _fake_checkpoint(tmp_path / "ckpt")
    first = reg.write_version(tmp_path / "registry", "alpha", checkpoint, manifest_record())
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    monkeypatch.setattr(reg, "versions", lambda registry, name: [])  # every attempt picks number 1 again
    with pytest.raises(reg.RegistryError, match=f"in {reg.CLAIM_ATTEMPTS} attempts"):
        reg.write_version(tmp_path / "registry", "alpha", checkpoint, manifest_record(params={"lr": 0.5}))
    assert {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".staging-")]


# ------------------------------------------------------------------------------ registry HMAC

KEY = "registry-key-for-tests-0123456789abcdef"
OTHER_KEY = "another-registry-key-0123456789abcdef"


def _checkpoint(tmp_path: Path) -> Path:
    """An Algorithm checkpoint's layout as ``write_version`` copies it: a module file, a connector state."""
    ckpt = tmp_path / "ckpt"
    module = ckpt / "learner_group" / "learner" / "rl_module" / "default_policy"
    module.mkdir(parents=True)
    (module / "module_state.pt").write_bytes(b"weights")
    (ckpt / "env_runner" / "env_to_module_connector").mkdir(parents=True)
    (ckpt / "env_runner" / "env_to_module_connector" / "state.pkl").write_bytes(pickle.dumps({}))
    return ckpt


def _promote_fake(tmp_path: Path, key: str | None) -> Path:
    from pydantic import SecretStr

    from raytrade.models.registry import write_version

    secret = None if key is None else SecretStr(key)
    return write_version(
        tmp_path / "registry", "alpha", _checkpoint(tmp_path), manifest_record(), hmac_key=secret
    )


class _Touch:
    """Unpickling this creates ``path``: the proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_edited_files_and_hashes_are_refused_under_the_key_before_anything_is_unpickled(
    tmp_path: Path,
) -> None:
    from pydantic import SecretStr

    from raytrade.models.manifest import read_manifest
    from raytrade.models.registry import RegistryError, verify_files, version_file_hashes, write_manifest
    from raytrade.models.registry_load import load

    folder = _promote_fake(tmp_path, KEY)
    marker = tmp_path / "unpickled"
    (folder / "connectors" / "env_to_module_connector" / "state.pkl").write_bytes(
        pickle.dumps(_Touch(marker))
    )
    tampered = read_manifest(folder).model_copy(update={"files": version_file_hashes(folder)})
    write_manifest(folder, tampered)
    verify_files(folder, tampered)  # the sha256s alone cannot tell: the writer updated them too
    with pytest.raises(RegistryError) as info:
        load("alpha", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"alpha@1 ({str(folder)!r}): manifest.json does not match its HMAC under the registry key "
        "(the manifest edited, or signed with another key)"
    )
    assert not marker.exists()


def test_a_version_promoted_with_another_key_is_refused(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from raytrade.models.registry import RegistryError
    from raytrade.models.registry_load import load

    _promote_fake(tmp_path, OTHER_KEY)
    with pytest.raises(
        RegistryError, match=r"^alpha@1 .*: manifest.json does not match its HMAC under the registry key"
    ):
        load("alpha", tmp_path / "registry", SecretStr(KEY))


def test_a_version_without_an_hmac_is_refused_in_one_line_when_a_key_is_set(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from raytrade.models.manifest import read_manifest
    from raytrade.models.registry import RegistryError, verify_mac
    from raytrade.models.registry_load import load

    folder = _promote_fake(tmp_path, None)
    assert read_manifest(folder).files_hmac is None
    verify_mac(folder, read_manifest(folder), None)  # no key: nothing to check
    with pytest.raises(RegistryError) as info:
        load("alpha@1", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"alpha@1 ({str(folder)!r}) carries no HMAC and a registry key is set: promote it again with the key"
    )


def test_a_version_copied_with_its_hmac_to_another_number_is_refused(tmp_path: Path) -> None:
    import shutil

    from pydantic import SecretStr

    from raytrade.models.registry import RegistryError
    from raytrade.models.registry_load import load

    folder = _promote_fake(tmp_path, KEY)
    shutil.copytree(folder, folder.parent / "2")
    with pytest.raises(
        RegistryError,
        match=r"^alpha@1 .*: the manifest sits in the folder of alpha@2 \(a version copied under another",
    ):
        load("alpha@2", tmp_path / "registry", SecretStr(KEY))


def test_the_registry_key_is_a_secret_setting_and_a_short_one_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from raytrade.cluster.settings import load_settings, registry_hmac_key
    from raytrade.replay.errors import InputError

    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("RAYTRADE_REGISTRY_HMAC_KEY", raising=False)
    assert registry_hmac_key() is None
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", KEY)
    key = registry_hmac_key()
    assert key is not None and key.get_secret_value() == KEY
    assert KEY not in repr(load_settings()) and KEY not in load_settings().model_dump_json()
    monkeypatch.setenv("RAYTRADE_REGISTRY_HMAC_KEY", "short-registry-key")
    with pytest.raises(InputError) as info:
        registry_hmac_key()
    assert str(info.value) == (
        "RAYTRADE_REGISTRY_HMAC_KEY has 18 characters, fewer than 32: use a random one, "
        "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )


# ----------------------------------------------------- links, FIFOs and files swapped after their check


def test_a_linked_folder_added_to_a_version_is_refused_before_its_pickle_is_read(tmp_path: Path) -> None:
    """A folder link was not listed (so not hashed), while the loader's glob followed it into a pickle:
    code ran under the registry key."""
    from pydantic import SecretStr

    from raytrade.models.registry import RegistryError
    from raytrade.models.registry_load import load

    folder = _promote_fake(tmp_path, KEY)
    outside, marker = tmp_path / "outside" / "evil", tmp_path / "unpickled"
    outside.mkdir(parents=True)
    (outside / "state.pkl").write_bytes(pickle.dumps(_Touch(marker)))
    (folder / "connectors" / "zz").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError) as info:
        load("alpha", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"{str(folder / 'connectors' / 'zz')!r} is a symbolic link: a registry version holds regular "
        "files only"
    )
    assert not marker.exists()


def test_a_fifo_in_a_version_is_refused_instead_of_hanging_the_load(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from raytrade.models.registry import RegistryError
    from raytrade.models.registry_load import verify_version

    folder = _promote_fake(tmp_path, KEY)
    (folder / "connectors" / "zz").mkdir()
    os.mkfifo(folder / "connectors" / "zz" / "state.pkl")
    with pytest.raises(RegistryError, match="state.pkl' is not a regular file: a registry version holds"):
        verify_version("alpha", tmp_path / "registry", SecretStr(KEY))


def test_a_version_folder_linked_to_another_signed_version_is_refused(tmp_path: Path) -> None:
    """alpha/3 -> 1 passed as alpha@1 under the key (the manifest's name and number are the target's),
    and alpha/4 -> ../beta/1 served beta's policy as alpha@4."""
    from raytrade.models.registry import RegistryError, resolve

    folder = _promote_fake(tmp_path, KEY)
    (folder.parent / "3").symlink_to(folder.name, target_is_directory=True)
    with pytest.raises(RegistryError) as info:
        resolve(tmp_path / "registry", "alpha@3")
    assert str(info.value) == (
        f"alpha@3 ({str(folder.parent / '3')!r}) is a symbolic link (to {str(folder.resolve())!r}): a "
        "version is a folder of its own"
    )


def test_a_pickle_swapped_in_after_its_check_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader hashed the registry's files and opened them again to unpickle: a writer racing it got
    its pickle run under the key (in nine tries). The loader reads a private copy, checked as copied."""
    from pydantic import SecretStr

    from raytrade.models import registry_load
    from raytrade.models.registry import RegistryError

    folder = _promote_fake(tmp_path, KEY)
    marker = tmp_path / "unpickled"
    checked = registry_load.verify_version

    def swapped_after_the_check(*args: Any, **kwargs: Any) -> Any:
        version = checked(*args, **kwargs)
        state = folder / "connectors" / "env_to_module_connector" / "state.pkl"
        state.write_bytes(pickle.dumps(_Touch(marker)))
        return version

    monkeypatch.setattr(registry_load, "verify_version", swapped_after_the_check)
    with pytest.raises(RegistryError) as info:
        registry_load.load("alpha", tmp_path / "registry", SecretStr(KEY))
    assert str(info.value) == (
        f"alpha@1 ({str(folder)!r}): file 'connectors/env_to_module_connector/state.pkl' does not match "
        "its sha256 in the manifest"
    )
    assert not marker.exists()


def test_a_killed_promotes_staging_folder_is_removed_by_a_later_promote(tmp_path: Path) -> None:
    """SIGKILL during a promote's copy left `.staging-<pid>-<uuid>` (46 MB in a review) for good: its
    own clean-up never ran. A promote removes staging folders untouched for a day, and no younger one
    (a promote running now, here or on another machine of a shared registry)."""
    from raytrade.models.registry import STALE_STAGING_S

    folder = _promote_fake(tmp_path, None).parent
    stale, running = folder / ".staging-999999-dead", folder / ".staging-999998-live"
    for staging in (stale, running):
        (staging / "module").mkdir(parents=True)
        (staging / "module" / "module_state.pt").write_bytes(b"half")
    old = time.time() - STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    _promote_fake(tmp_path / "again", None)  # another registry: nothing removed there
    assert stale.exists()
    from raytrade.models.registry import write_version

    write_version(tmp_path / "registry", "alpha", _checkpoint(tmp_path / "second"), manifest_record())
    assert not stale.exists() and running.exists()


@pytest.mark.parametrize("kind", ["fifo", "link outside the version"])
def test_a_manifest_that_is_no_regular_file_is_refused_without_reading_it(tmp_path: Path, kind: str) -> None:
    """``manifest.json`` was read first, following links and blocking on a FIFO: a FIFO hung the
    load (and the service's health check), /dev/zero exhausted memory, a file outside the version was
    read as its manifest."""
    import signal

    from pydantic import SecretStr

    from raytrade.models.manifest import ManifestError
    from raytrade.models.registry_load import verify_version

    folder = _promote_fake(tmp_path, KEY)
    manifest = folder / "manifest.json"
    outside = tmp_path / "outside.json"
    outside.write_text(manifest.read_text())
    manifest.unlink()
    if kind == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.symlink_to(outside)  # or /dev/zero: memory exhausted (not run here, for the old code's sake)
    what = "is not a regular file" if kind == "fifo" else "is a symbolic link"

    def hung(*_: Any) -> None:
        raise TimeoutError("reading manifest.json blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(ManifestError) as info:
            verify_version("alpha", tmp_path / "registry", SecretStr(KEY))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert str(info.value) == f"{str(manifest)!r} {what}: a registry version holds regular files only"


def test_a_manifest_larger_than_the_bound_is_refused_unread(tmp_path: Path) -> None:
    from raytrade.models.manifest import MANIFEST_MAX_BYTES, ManifestError, read_manifest

    (tmp_path / "manifest.json").write_bytes(b" " * (MANIFEST_MAX_BYTES + 1))
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == (
        f"{str(tmp_path / 'manifest.json')!r} holds {MANIFEST_MAX_BYTES + 1} bytes, more than the "
        f"{MANIFEST_MAX_BYTES} allowed"
    )
