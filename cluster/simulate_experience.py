"""``raytrade simulate-experience``: record a policy's episodes in the simulator into an ``experience``
table, the offline specs' input (``raytrade tune --spec bc --experience OUT``).

The policy (``kelly_lite``, ``equal_weight`` or ``registry:NAME[@VERSION]``; ``envs.evaluation.
policies``) replays the replay store's train split through the simulator with the offline specs'
env config (observed features, train-split normaliser; ``tune_specs.offline``), one episode per
``--episodes``; each episode is checked as the table checks its rows and set aside (one in memory at
a time) before any is appended to ``OUT/experience`` (``replay.writer``: validated, atomic, one
commit an episode), so a run with a row the table refuses stores nothing and leaves no recording or
behaviour record; an interrupted write leaves whole episodes, its recording counting them. Rows
follow the live loop's schema (``replay.schema.EXPERIENCE_SCHEMA``) plus the transition columns
(``envs.experience``). A registry policy runs on the universe it trained on
(``envs.evaluation.universe``, as ``raytrade evaluate`` runs it); bars of the recorded window that
look like an unadjusted split are named in warnings (``replay.split_signature``).

A registry policy is asked what its weights saw (``trained_on``, the rule ``raytrade evaluate``
applies, ``models.training_window``) before any episode: offline specs clone it and are then scored
on the validation and test bars, so a version whose training window, or the validation window its
checkpoint was chosen on, ends after the train split the episodes are recorded on is refused
(:func:`behaviour_record`) unless ``--behaviour-in-sample`` is passed. A version whose training
window is unknown is recorded with a warning, as ``raytrade evaluate`` evaluates it with one: its
record says unknown, and so does every offline version trained on it, which evaluate then warns
about in turn (refusing would stop recording with every older version). Each run's behaviour policy
is written to ``OUT/behaviour/`` before its episodes are stored (``replay.behaviour``); an offline search
records those of the transitions it reads, which widen its version's training window.

Episodes are a pure function of the policy, features, noise, replay data and seed: a run that would
store an episode the store already holds (the same arguments again: the default ``--seed 0``) is
refused before it writes one, naming the earlier run (``replay.recordings``: every run's record is
written to ``OUT/recordings/`` before its episodes are stored); so are several episodes of a deterministic
policy without noise, which would be one episode stored several times.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import LocalPath, names_registry_policy, path_option, written_path_option
from raytrade.envs.evaluation.insample import TrainedOn

if TYPE_CHECKING:
    from raytrade.envs.evaluation.policies import PolicySpec, TrainedOnFn
    from raytrade.envs.market_data import MarketData
from raytrade.replay.behaviour import BehaviourPolicy, describe
from raytrade.replay.errors import InputError
from raytrade.replay.recordings import RecordedRun
from raytrade.replay.splits import TimeWindow

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
    behaviour_in_sample: bool = Field(
        False,
        description="record a registry policy whose weights saw bars after the train split anyway "
        "(marked in its behaviour record and every offline manifest that reads it)",
    )


class SimulateOutcome(BaseModel):
    """What a run wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    episodes: int
    rows: int
    policy_version: str
    behaviour: BehaviourPolicy | None = Field(None, description="a registry policy's record")
    warning: str | None = Field(None, description="why the record could not be checked (None: it was)")
    suspected_splits: tuple[str, ...] = Field(
        (), description="bars of the recorded window that look like an unadjusted split (warnings)"
    )


def behaviour_record(
    policy: str, run_id: str, version: str, trained: TrainedOn, recorded: TimeWindow, in_sample: bool
) -> BehaviourPolicy:
    """The record of registry policy ``policy`` (its rows' ``version``) that saw ``trained`` and
    records episodes on ``recorded``
    (the train split); ``InputError`` (one line naming the policy, its windows and the split) when
    the last bar it trained or chose its checkpoint on comes after ``recorded``'s last, unless
    ``in_sample`` (then marked so)."""
    train, validation = trained.train, trained.validation
    # Its checkpoint was chosen on a validation window after its training window; on a store that has
    # changed since, that window cannot be placed: what it saw is then unknown (downstream warns),
    # though its training window still decides the refusal below.
    unplaced = trained.known and train is not None and validation is None
    how = trained.how + (
        "; the validation window its checkpoint was chosen on cannot be placed on this store "
        "(it changed since)"
        if unplaced
        else ""
    )
    record = BehaviourPolicy(
        run_id=run_id,
        policy_version=version,
        known=trained.known and not unplaced,
        how=how,
        train_start=None if train is None else train.start.to_pydatetime(),
        train_end=None if train is None else train.end.to_pydatetime(),
        validation_end=None if validation is None else validation.end.to_pydatetime(),
    )
    seen = record.seen_until
    if seen is None or seen <= recorded.end.to_pydatetime():
        return record
    if in_sample:
        return record.model_copy(update={"in_sample": True})
    raise InputError(
        f"--policy {policy}: {describe(record)} saw bars up to {seen.date()}, after the end of "
        f"the train split the experience is recorded on ({recorded.start.date()} .. {recorded.end.date()}): "
        "offline specs would clone what it learnt from the validation/test bars they are scored on. "
        "Record with a version trained within the train split, or pass --behaviour-in-sample to record "
        f"anyway (marked; offline versions trained on it count {seen.date()} as their last training bar)"
    )


def simulate_experience(opts: SimulateOptions) -> SimulateOutcome:
    """Record ``opts.episodes`` episodes of ``opts.policy`` into ``opts.out``'s experience table."""
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.policies import REGISTRY_PREFIX, resolve_policies
    from raytrade.envs.experience import simulate_episodes
    from raytrade.envs.replay_loader import load_market_data, resolve_feature_groups
    from raytrade.replay.fingerprint import data_fingerprint
    from raytrade.replay.recordings import refuse_repeat
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
    universe = model_universe(spec, opts.replay)
    data_cfg: dict[str, Any] = {"kind": "replay", "root": str(opts.replay.resolve()), "split": "train"}
    if universe is not None:
        data_cfg["symbols"] = list(universe)
    version = (
        spec.name if spec.manifest is None else f"{spec.name.split('@')[0]}@{Path(spec.manifest).parent.name}"
    )
    run_id = f"sim:{opts.policy}:{opts.seed}:{uuid.uuid4().hex[:8]}"
    recording = RecordedRun(
        run_id=run_id,
        policy=opts.policy,
        policy_version=version,
        stochastic=spec.stochastic,
        features=tuple(columns),
        noise=opts.noise,
        seed=opts.seed,
        episodes=opts.episodes,
        replay_sha256=data_fingerprint(opts.replay)[0],
    )
    refuse_identical_episodes(recording)
    refuse_repeat(opts.out, recording)
    behaviour = None
    if spec.kind == "registry":
        behaviour = registry_behaviour(opts, spec.trained_on, run_id, version)
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
        opts.replay,
        "train",
        symbols=universe,
        feature_columns=tuple(dict.fromkeys([*columns, *spec.feature_columns])),
    )
    with tempfile.TemporaryDirectory(prefix="raytrade-episodes-") as staging:
        staged = _staged_episodes(
            simulate_episodes(
                data,
                spec.make,
                env_cfg,
                episodes=opts.episodes,
                policy_version=version,
                run_id=run_id,
                noise=opts.noise,
                seed=opts.seed,
            ),
            Path(staging),
        )
        rows = _store_episodes(opts.out, staged, recording, behaviour)
    return SimulateOutcome(
        run_id=run_id,
        episodes=opts.episodes,
        rows=rows,
        policy_version=version,
        behaviour=behaviour,
        warning=None if behaviour is None else behaviour_warning(opts.policy, behaviour),
        suspected_splits=window_splits(opts.replay, data),
    )


def _staged_episodes(frames: Iterable[pd.DataFrame], staging: Path) -> list[Path]:
    """Each episode of ``frames`` checked as the experience table checks a row
    (``replay.validation.conform``) and set aside in ``staging``, one at a time: a row the table
    would refuse (a reward beyond ln 10, an action outside [-1, 1]) stops the run before any episode
    is stored, and memory holds one episode, not the run."""
    from raytrade.replay.validation import ReplayValidationError, conform

    staged = []
    for k, frame in enumerate(frames):
        _, errors, _ = conform("experience", frame)
        if errors:
            raise ReplayValidationError(errors, origin=f"episode {k}")
        path = staging / f"{k}.pkl"  # this process's own frames, read back by it below
        frame.to_pickle(path)
        staged.append(path)
    return staged


def _store_episodes(
    out: Path, staged: Sequence[Path], recording: RecordedRun, behaviour: BehaviourPolicy | None
) -> int:
    """Append the ``staged`` episodes to ``out``'s experience (one commit each) after the run's
    recording and behaviour record; the rows written. A failure before any episode is stored removes
    both records; one after some (an interrupted write) leaves those whole episodes, the recording
    rewritten to count them."""
    from raytrade.replay.behaviour import write_behaviour
    from raytrade.replay.recordings import write_recording
    from raytrade.replay.writer import ReplayWriter

    written: list[Path] = []
    rows = episodes = 0
    try:
        written.append(write_recording(out, recording))
        if behaviour is not None:  # before the episodes: none is stored without it
            written.append(write_behaviour(out, behaviour))
        with ReplayWriter(out) as writer:
            for path in staged:
                rows += writer.append_experience(pd.read_pickle(path)).rows_written
                episodes += 1
    except BaseException:
        if episodes == 0:  # a run that stored nothing is not recorded either
            for path in written:
                path.unlink(missing_ok=True)
        else:
            write_recording(out, recording.model_copy(update={"episodes": episodes}))
        raise
    return rows


def model_universe(spec: PolicySpec, replay: Path) -> tuple[str, ...] | None:
    """The symbols a registry version trained on (``manifest data.symbols``), checked against the
    store as ``raytrade evaluate`` checks them (``envs.evaluation.universe``: a symbol the store lacks
    is an ``InputError`` naming it); None for a baseline, which runs on every symbol."""
    if spec.universe is None:
        return None
    from raytrade.envs.evaluation.universe import evaluation_universe
    from raytrade.replay.reader import read_frame

    stored = set(read_frame(replay, "bars", columns=["symbol"])["symbol"].astype(str))
    return evaluation_universe([spec], None, stored, str(replay)).symbols


def window_splits(replay: Path, data: MarketData) -> tuple[str, ...]:
    """The warnings of the recorded window's bars (``data``'s symbols and dates) that look like a split
    left unadjusted (``replay.split_signature``): ingest warned once, and an offline learner would
    clone the fake move's reward (tens of standard deviations of the others) with no other word."""
    from raytrade.replay.reader import read_frame
    from raytrade.replay.split_signature import suspected_splits

    bars = read_frame(
        replay, "bars", symbols=list(data.symbols), columns=["symbol", "ts", "open", "close", "volume"]
    )
    stamps = pd.DatetimeIndex(bars["ts"]).tz_convert(None).as_unit("us")
    window = (stamps >= pd.Timestamp(data.ts[0])) & (stamps <= pd.Timestamp(data.ts[-1]))
    bars = bars[np.asarray(window) & (bars["volume"].to_numpy() > 0)]
    return tuple(
        f"{s.message()}; the experience recorded over it carries that move as a reward"
        for s in suspected_splits(None, bars)
    )


def refuse_identical_episodes(run: RecordedRun) -> None:
    """``InputError`` when ``run`` asks for several episodes of a deterministic policy without noise:
    each would be the same episode (the seed changes nothing), stored and counted once per copy."""
    if run.episodes > 1 and run.noise == 0 and not run.stochastic:
        raise InputError(
            f"--episodes {run.episodes} without --noise: {run.policy} decides the same in every "
            f"episode, so the {run.episodes} episodes would be one episode stored {run.episodes} times "
            "(counted so by offline learners); pass --noise > 0 for distinct episodes, or --episodes 1"
        )


def registry_behaviour(
    opts: SimulateOptions, trained_on: TrainedOnFn | None, run_id: str, version: str
) -> BehaviourPolicy:
    """The behaviour record of ``opts.policy``, a registry version (:func:`behaviour_record` on the
    train split of ``opts.replay``), asked through its handle's ``trained_on`` on that store."""
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.envs.evaluation.insample import UNKNOWN
    from raytrade.envs.replay_loader import split_calendar
    from raytrade.replay.fingerprint import data_fingerprint

    sha, _ = data_fingerprint(opts.replay)
    trained = UNKNOWN if trained_on is None else trained_on(str(opts.replay), sha)
    data = ReplayDataConfig.model_validate({"kind": "replay", "root": str(opts.replay), "split": "train"})
    bars = split_calendar(data)
    recorded = TimeWindow("train", bars[0], bars[-1], len(bars))
    return behaviour_record(opts.policy, run_id, version, trained, recorded, opts.behaviour_in_sample)


def behaviour_warning(policy: str, record: BehaviourPolicy) -> str | None:
    """The warning for a behaviour policy recorded unchecked (its training window unknown) or in
    sample (``--behaviour-in-sample``); None for one checked and within the train split."""
    if not record.known:
        return (
            f"--policy {policy}: whether its weights saw bars after the train split cannot be checked "
            f"({record.how}); recorded as unknown, and offline versions trained on this experience have "
            "an unknown training window (raytrade evaluate warns that out-of-sample cannot be checked)"
        )
    if record.in_sample:
        return (
            f"--policy {policy}: recorded although {describe(record)} saw bars after the train split "
            "(--behaviour-in-sample); marked in the store's behaviour record, and offline versions "
            "trained on this experience count those bars as training bars"
        )
    return None


@click.command("simulate-experience")
@click.option("--policy", required=True, help="kelly_lite, equal_weight or registry:NAME[@VERSION].")
@path_option("--replay", type=LocalPath(), required=True, help="Replay store root (train split).")
@written_path_option("--out", type=LocalPath(), required=True, help="Store root receiving the experience.")
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
    "--behaviour-in-sample",
    is_flag=True,
    help="Record a registry policy whose weights saw bars after the train split anyway; marked, and "
    "offline versions trained on it count those bars as training bars.",
)
@path_option(
    "--registry",
    type=LocalPath(),
    default=Path("registry"),
    show_default=True,
    help="Model registry folder for registry: policies.",
    used_when=names_registry_policy("policy"),
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
    behaviour_in_sample: bool,
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
            behaviour_in_sample=behaviour_in_sample,
        )
    )
    for warning in (outcome.warning, *outcome.suspected_splits):
        if warning is not None:
            click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"wrote {outcome.rows} experience rows ({outcome.episodes} episodes of {outcome.policy_version}, "
        f"run {outcome.run_id}) to {out}"
    )
