"""``raytrade simulate-experience``: record a policy's episodes in the simulator into an ``experience``
table, the offline specs' input (``raytrade tune --spec bc --experience OUT``).

The policy (``kelly_lite``, ``equal_weight`` or ``registry:NAME[@VERSION]``; ``envs.evaluation.
policies``) replays the replay store's train split through the simulator with the offline specs'
env config (observed features, train-split normaliser; ``tune_specs.offline``), one episode per
``--episodes``; every episode is one append to ``OUT/experience`` (``replay.writer``: validated,
atomic), so an interrupted run leaves whole episodes only. Rows follow the live loop's schema
(``replay.schema.EXPERIENCE_SCHEMA``) plus the transition columns (``envs.experience``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import LocalPath
from raytrade.replay.errors import InputError

POLICY_CHOICES = ("kelly_lite", "equal_weight")


class SimulateOptions(BaseModel):
    """One ``raytrade simulate-experience`` invocation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str = Field(description="kelly_lite, equal_weight or registry:NAME[@VERSION]")
    replay: Path = Field(description="replay store root; episodes run on its train split")
    out: Path = Field(description="store root whose experience table receives the episodes")
    episodes: int = Field(1, ge=1, description="episodes to record (each seeded seed + k)")
    seed: int = Field(0, description="first episode's seed")
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise on the targets (weight units)")
    features: str | None = Field(None, description="observed feature groups (None: the offline specs')")
    registry: Path = Field(Path("registry"), description="model registry for registry: policies")


class SimulateOutcome(BaseModel):
    """What a run wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    episodes: int
    rows: int
    policy_version: str


def simulate_experience(opts: SimulateOptions) -> SimulateOutcome:
    """Record ``opts.episodes`` episodes of ``opts.policy`` into ``opts.out``'s experience table."""
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.policies import REGISTRY_PREFIX, resolve_policies
    from raytrade.envs.experience import simulate_episodes
    from raytrade.envs.replay_loader import load_market_data, resolve_feature_groups
    from raytrade.replay.writer import ReplayWriter
    from raytrade.tune_specs.offline import OFFLINE_FEATURES, offline_env_config
    from raytrade.tune_specs.spec import train_normalizer

    if opts.policy not in POLICY_CHOICES and not opts.policy.startswith(REGISTRY_PREFIX):
        raise InputError(
            f"--policy {opts.policy!r}: expected {', '.join(POLICY_CHOICES)} "
            f"or {REGISTRY_PREFIX}NAME[@VERSION]"
        )
    if not opts.replay.is_dir():
        raise InputError(f"replay store {str(opts.replay)!r} does not exist")
    loader: Callable[..., Any] | None = None
    if opts.policy.startswith(REGISTRY_PREFIX):  # under the registry key, when one is set
        from raytrade.cluster.registry_access import registry_loader

        loader = registry_loader()
    (spec,) = resolve_policies([opts.policy], opts.registry, loader=loader)
    try:
        columns = resolve_feature_groups(opts.features) if opts.features else OFFLINE_FEATURES
    except ValueError as exc:
        raise InputError(f"--features: {exc}") from None
    data_cfg = {"kind": "replay", "root": str(opts.replay.resolve()), "split": "train"}
    env_cfg = PortfolioEnvConfig.model_validate(
        offline_env_config(
            {
                "data": data_cfg,
                "feature_columns": list(columns),
                "normalizer": train_normalizer(data_cfg, columns).model_dump(mode="json"),
            }
        )
    )
    data = load_market_data(
        opts.replay, "train", feature_columns=tuple(dict.fromkeys([*columns, *spec.feature_columns]))
    )
    version = (
        spec.name if spec.manifest is None else f"{spec.name.split('@')[0]}@{Path(spec.manifest).parent.name}"
    )
    run_id = f"sim:{opts.policy}:{opts.seed}:{uuid.uuid4().hex[:8]}"
    rows = 0
    with ReplayWriter(opts.out) as writer:
        for frame in simulate_episodes(
            data,
            spec.make,
            env_cfg,
            episodes=opts.episodes,
            policy_version=version,
            run_id=run_id,
            noise=opts.noise,
            seed=opts.seed,
        ):
            rows += writer.append_experience(frame).rows_written
    return SimulateOutcome(run_id=run_id, episodes=opts.episodes, rows=rows, policy_version=version)


@click.command("simulate-experience")
@click.option("--policy", required=True, help="kelly_lite, equal_weight or registry:NAME[@VERSION].")
@click.option("--replay", type=LocalPath(), required=True, help="Replay store root (train split).")
@click.option("--out", type=LocalPath(), required=True, help="Store root receiving the experience.")
@click.option("--episodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--noise",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Std of Gaussian noise added to the policy's target weights (exploration for offline RL).",
)
@click.option("--features", help="Observed feature groups (default: the offline specs', base).")
@click.option(
    "--registry",
    type=LocalPath(),
    default=Path("registry"),
    show_default=True,
    help="Model registry folder for registry: policies.",
)
@one_line_errors
def simulate_experience_command(
    policy: str,
    replay: Path,
    out: Path,
    episodes: int,
    seed: int,
    noise: float,
    features: str | None,
    registry: Path,
) -> None:
    """Record POLICY's episodes on REPLAY's train split into OUT's experience table."""
    outcome = simulate_experience(
        SimulateOptions(
            policy=policy,
            replay=replay,
            out=out,
            episodes=episodes,
            seed=seed,
            noise=noise,
            features=features,
            registry=registry,
        )
    )
    click.echo(
        f"wrote {outcome.rows} experience rows ({outcome.episodes} episodes of {outcome.policy_version}, "
        f"run {outcome.run_id}) to {out}"
    )
