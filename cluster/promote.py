"""``raytrade promote``: copy a search's best trial into the registry with its manifest.

The best trial is the first row of the run's ``leaderboard.json`` (written by ``raytrade tune``)
that has a checkpoint: its best checkpoint by validation objective. Promotion re-scores that module
on the validation split (and the test split, which no search ever looked at) with the same objective,
so the manifest's metrics are measured on exactly the weights that are copied, under the current rule
for the book held at a window's end (``metrics_book_end``; ``tune_specs.objective.CLOSE_AT_END``). A
search recorded before the objective closed the book is promoted all the same: its ``search_metrics``
keep the rule it used (the manifest's ``objective.book_end``, copied from the run file), so the two
are never read as one figure. What the policy was
trained with (code version, library versions, data fingerprint) is copied from the run file, which
``raytrade tune`` wrote when the search started: the store may have grown since, and the manifest
must name the data the weights were trained on. ``created_at`` is the promotion time.

An offline run whose behaviour policies saw bars of the validation or test split
(``models.training_window.behaviour_in_sample``, the rule ``raytrade tune`` warns by) learnt what
those policies knew: its metrics there are in sample. The manifest records them
(``metrics_in_sample``, naming each policy and split) and the command warns, naming the run and the
policy; it promotes all the same (the user asked for this run), and ``raytrade evaluate`` refuses
those splits as in sample.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
from pydantic import SecretStr

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import path_option, registry_option
from raytrade.cluster.remote_run import fetch_run, fetch_trial
from raytrade.cluster.run_file import LeaderboardRow, RunFile, read_leaderboard, read_run_file
from raytrade.cluster.settings import registry_hmac_key
from raytrade.models.catalog import flops_per_decision
from raytrade.models.manifest import (
    MANIFEST_SCHEMA_VERSION,
    BehaviourInSample,
    Selection,
    read_manifest,
)
from raytrade.models.registry import feature_spec_hash
from raytrade.models.registry_remote import write_version_at
from raytrade.models.training_window import behaviour_in_sample, in_sample_sentence
from raytrade.replay.errors import InputError
from raytrade.replay.remote import is_remote, join, location
from raytrade.tune_specs.objective import BOOK_END, ObjectiveConfig, held_out_data, score_module

MODULE_ID = "default_policy"


def best_row(run_dir: Path) -> LeaderboardRow:
    """The leaderboard's best trial that has a checkpoint."""
    rows = [r for r in read_leaderboard(run_dir) if r.checkpoint]
    if not rows:
        raise InputError(f"no trial of {str(run_dir)!r} left a checkpoint")
    return rows[0]


def check_compared(row: LeaderboardRow, selection: Selection, run: str | Path) -> None:
    """Refuse (``InputError``, one line) to promote ``row`` under ``selection`` unless it is the
    checkpoint the selection compared (its winner's trial, checkpoint and iteration): the leaderboard
    is read again at promotion, and one rewritten since would promote what no comparison looked at."""
    winner = selection.candidates[0]
    compared = (winner.trial, winner.checkpoint, winner.iteration)
    if (row.trial, row.checkpoint, row.iteration) != compared:
        raise InputError(
            f"the leaderboard of {str(run)!r} changed since the selection: its best checkpoint is now "
            f"{row.checkpoint!r} (trial {row.trial}, iteration {row.iteration}), the selection compared "
            f"{winner.checkpoint!r} (trial {winner.trial}, iteration {winner.iteration}); nothing promoted, "
            "select again"
        )


def cloning_only(run_dir: Path, row: LeaderboardRow) -> str | None:
    """The warning for a ``cql`` checkpoint of the first iteration: its actor's updates were all
    behaviour cloning (``tune_specs.cql``: ``bc_iters`` is one iteration's updates), so what would be
    promoted as CQL is a cloned behaviour policy beside a conservative critic it never followed.
    None for anything else."""
    if read_run_file(run_dir).spec != "cql" or row.iteration > 1:
        return None
    return (
        f"trial {row.trial}'s best checkpoint is from iteration {row.iteration}, whose actor updates were "
        "all behaviour cloning (CQL clones the logged actions for its first iteration's updates): it is "
        "the behaviour policy cloned, not a CQL policy; train longer, or compare it with a bc search"
    )


def module_checkpoint(checkpoint: Path) -> Path:
    """The RLModule folder inside an Algorithm checkpoint."""
    return checkpoint / "learner_group" / "learner" / "rl_module" / MODULE_ID


def trial_config(run_dir: Path, row: LeaderboardRow) -> dict[str, Any]:
    """RLlib's algorithm config (JSON) of the trial of ``row``: its ``env_config`` is what the policy
    trained with. One that is not a JSON object holding an ``env_config`` object is refused
    (``InputError`` naming the file)."""
    path = run_dir / row.trial_dir / "params.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{str(path)!r} cannot be read as the trial's config: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("env_config"), dict):
        raise InputError(f"{str(path)!r} is not an RLlib trial config: it holds no 'env_config' object")
    return config


def load_module(checkpoint: Path) -> Any:
    """The RLModule of an Algorithm checkpoint, in eval mode."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    module: Any = RLModule.from_checkpoint(module_checkpoint(checkpoint))
    module.eval()
    return module


def _data_section(env_config: dict[str, Any], run: RunFile) -> dict[str, Any]:
    """The manifest's ``data`` (less ``symbols``): the training-time fingerprint of a replay store."""
    data = env_config["data"]
    if data.get("kind") == "replay":
        if location(data["root"]) != run.replay:
            raise InputError(f"the trial trained on {data['root']!r}, the run file names {run.replay!r}")
        prov = run.provenance
        experience = None if prov.experience is None else prov.experience.model_dump()
        return {
            "kind": "replay",
            "root": data["root"],
            "sha256": prov.data_sha256,
            "files": prov.data_files,
            "experience": experience,
            "train_window": None if prov.train_window is None else prov.train_window.model_dump(),
            "validation_window": None
            if prov.validation_window is None
            else prov.validation_window.model_dump(),
        }
    return {"kind": data.get("kind"), "sha256": feature_spec_hash(data), "files": 0}


def build_manifest(run_dir: Path, row: LeaderboardRow) -> tuple[dict[str, Any], Path]:
    """(manifest record for ``models.registry.write_version``, checkpoint folder) of the leaderboard
    row ``row`` of the run at ``run_dir``."""
    from raytrade.envs.gym_envs import GATED_ENV_ID, N_PORTFOLIO_STATE
    from raytrade.envs.replay_loader import DEFAULT_FEATURES

    run = read_run_file(run_dir)
    assert row.checkpoint is not None  # best_row keeps rows with a checkpoint
    checkpoint = run_dir / row.checkpoint
    config = trial_config(run_dir, row)
    env_config: dict[str, Any] = config["env_config"]
    module = load_module(checkpoint)
    objective = ObjectiveConfig(cvar_penalty=run.objective.cvar_penalty)
    validation = held_out_data(env_config, "validation")
    gated = config.get("env") == GATED_ENV_ID
    metrics = {"validation": score_module(module, env_config, objective, gated=gated)}
    seen = behaviour_in_sample(run.provenance.experience, utc_time(validation.ts[-1]))
    if env_config["data"].get("kind") == "replay":
        test = objective.model_copy(update={"split": "test"})
        metrics["test"] = score_module(module, env_config, test, gated=gated)
    observed = env_config.get("feature_columns") or list(validation.feature_names)
    feature_spec = {
        "observed": list(observed),
        "loader_columns": list(DEFAULT_FEATURES),
        "flat_obs": bool(env_config.get("flat_obs", False)),
        "portfolio_state": N_PORTFOLIO_STATE,
    }
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).replace(microsecond=0),
        "trained_at": run.provenance.started_at,
        "source": {
            "run": str(run_dir),
            "spec": run.spec,
            "family": run.family,
            "trial": row.trial,
            "checkpoint": row.checkpoint,
            "iteration": row.iteration,
        },
        "data": {**_data_section(env_config, run), "symbols": list(validation.symbols)},
        "features": {**feature_spec, "sha256": feature_spec_hash(feature_spec)},
        "n_assets": validation.n_assets,
        "params": row.params,
        "config": config,
        "code_version": run.provenance.code_version,
        "code_sha256": run.provenance.code_sha256,
        "libraries": run.provenance.libraries,
        "flops_per_decision": flops_per_decision(module, validation.n_assets),
        "objective": run.objective.model_dump(),
        "metrics": metrics,
        "metrics_book_end": BOOK_END,
        "search_metrics": row.model_dump(include={"objective", "sharpe", "sortino", "cvar_5"}),
        "metrics_in_sample": [b.model_dump(mode="json") for b in seen] or None,
        "command": run.command,
        "reproduce": f"{run.command}  # then promote trial {row.trial}",
    }
    return manifest, checkpoint


def promote(
    run: str | Path,
    name: str,
    registry: str | Path,
    selection: Selection | None = None,
    hmac_key: SecretStr | None = None,
) -> Path:
    """Promote the best trial of the run ``run`` to ``registry/name/<next version>``; returns that
    folder (a remote run or registry, ``s3://…``, through a local mirror: ``cluster.remote_run``,
    ``models.registry_remote``).

    ``selection``: the comparison across searches that chose this run (``raytrade select``),
    recorded in the manifest; the run's best row must still be the checkpoint it compared
    (:func:`check_compared`). ``hmac_key``: the registry key (``models.registry.sign_manifest``)."""
    run_dir = fetch_run(run)
    row = best_row(run_dir)
    if selection is not None:
        check_compared(row, selection, run)
    cloned = cloning_only(run_dir, row)
    if cloned is not None:  # promoted all the same: the user asked for this run's best
        click.echo(f"warning: {cloned}", err=True)
    fetch_trial(run, run_dir, row)
    manifest, checkpoint = build_manifest(run_dir, row)
    for seen in manifest["metrics_in_sample"] or []:  # promoted all the same, as above
        sentence = in_sample_sentence(BehaviourInSample.model_validate(seen))
        click.echo(
            f"warning: {location(run)} trial {row.trial}: IN-SAMPLE: {sentence}; the manifest records it "
            "(metrics_in_sample)",
            err=True,
        )
    manifest["source"]["run"] = location(run)
    if selection is not None:
        manifest["selection"] = selection.model_dump(mode="json")
    return write_version_at(registry, name, checkpoint, manifest, MODULE_ID, hmac_key)


@click.command("promote")
@path_option("--run", "run_dir", required=True, help="A tune run folder (or its s3://… URI).")
@click.option("--name", required=True, help="Registry name of the policy.")
@registry_option(written=True)
@one_line_errors
def promote_command(run_dir: str, name: str, registry: str) -> None:
    """Copy the best trial of RUN (module, connector state, manifest) to REGISTRY/NAME/VERSION; the
    manifest records every file's SHA-256 and, when RAYTRADE_REGISTRY_HMAC_KEY is set, is signed
    whole (an HMAC over the manifest with those hashes)."""
    target = promote(run_dir, name, registry, hmac_key=registry_hmac_key())
    manifest = read_manifest(target)
    val = manifest.metrics["validation"]
    shown = join(registry, name, target.name) if is_remote(registry) else target
    click.echo(
        f"promoted {manifest.source.trial} -> {shown} "
        f"(validation objective {_score(val.get('objective'))}, sharpe {_score(val.get('sharpe'))})"
    )


def _score(value: float | None) -> str:
    return "undefined" if value is None or not math.isfinite(value) else f"{value:.3f}"


def utc_time(ts: np.datetime64) -> datetime:
    """A bar's stamp (``MarketData.ts``) as an aware UTC datetime."""
    seconds = ts.astype("datetime64[us]").astype(np.int64) / 1e6
    return datetime.fromtimestamp(seconds, tz=UTC)
