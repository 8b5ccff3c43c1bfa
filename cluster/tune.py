"""``raytrade tune``: a Ray Tune search over one spec, scored on the validation window.

Design decisions
----------------
* The trainable is the RLlib ``Algorithm`` class itself (a class trainable): Tune then checkpoints
  it every ``budget.checkpoint_every`` iterations (every spec's: 1) and at the end, keeping each
  trial's ``budget.checkpoints_kept`` best by that iteration's own validation objective and its
  latest (:func:`checkpoint_config`), and a trial whose process dies is restarted from its last
  checkpoint (``FailureConfig(max_failures)``).
  Scoring happens inside ``Algorithm.train()`` (``tune_specs.objective.score_on_train_result``).
* Per-trial resources come from ``Algorithm.default_resource_request``: one CPU bundle for the
  algorithm (learning, and sampling too with ``--env-runners 0``) plus optional custom resources,
  and one bundle per env runner (``--env-runners K``: K remote sampling actors, 1 CPU each);
  ``placement_strategy="SPREAD"`` spreads a trial's 1 + K bundles over nodes, best effort (Ray packs
  them onto fewer nodes when that is all there is). Before the search starts, a trial's bundles are
  checked against the nodes' total resources (:func:`check_bundles_fit`): Tune would otherwise wait
  for ever for a placement group no node set can hold. A new local Ray's one node is known before it
  starts (:func:`local_node_resources`), so there the check comes before Ray, as do all the checks
  that need only the options and the stores (the experience's layout, the wandb key, the exploration
  options); a running cluster's nodes are checked once connected. Each env runner reports the node
  it runs on (``tune_specs.objective.env_runner_node_ids``), the leaderboard keeps it, and the
  summary prints it next to the learner's node.
* When every trial failed, the error shows the innermost exception line of a trial's error
  (:func:`trial_error_line`), not the text's last line, which Ray Data fills with its retry hint.
* One run = one folder ``STORAGE/NAME`` (Tune's experiment dir). Next to Tune's files it holds
  ``raytrade_run.json`` (``cluster.run_file.RunFile``: spec, replay, budget, the reproducing
  command, and the code version, library versions and data fingerprint at the start, and for an
  offline spec the experience's fingerprint, the window of it read and its rewards' divisor;
  written first, so an interrupted run is still described), and at the end ``leaderboard.json``
  (``LeaderboardRow`` list: each trial's best checkpoint, its validation and train objectives, and
  the overfitting check of its last iterations, ``tune_specs.overfit``) and
  ``validation_objective.png`` (validation solid, train dashed, per trial). ``raytrade promote
  --run DIR`` reads both and copies the training-time facts into the registry manifest.
* A search stopped part way ends with the exact command that continues it
  (:meth:`TuneOptions.resume_command`: the reproducing command, its wandb mode and ``--resume``): Tune's
  graceful stop on the first SIGINT through the unfinished-trials line, SIGTERM (``ray job stop``)
  through the same graceful stop (:func:`graceful_sigterm`) and the SIGTERM line, and a second SIGINT
  or SIGTERM (or one before Tune's loop runs) through :func:`resume_hint_on_stop`.
* Offline specs learn from logged transitions, so the env settings that would have changed them
  (action mapping, no-trade band, reward, costs) are refused unless at their defaults
  (:func:`check_offline_env`: fail closed, nothing is recomputed), and only the training window's
  transitions are read (:func:`experience_window`).
* Logging: Tune's CSV/JSON/TensorBoard loggers always; wandb through Tune's
  ``WandbLoggerCallback``, offline (files under the run folder) unless ``--wandb`` asks for online
  logging, which needs ``WANDB_API_KEY`` (read by ``cluster.settings.load_settings``). The key never
  enters Ray: Tune's ``WandbLoggerCallback`` copies ``WANDB_API_KEY`` from the driver's environment
  into its logging actor's ``runtime_env`` (visible in the dashboard and the GCS), so the search
  always logs offline with the variable removed from the driver's environment, and an online run is
  uploaded afterwards by ``wandb sync`` in a child process that alone holds the key
  (:func:`upload_wandb_runs`). The key is never put into the callback, the run files or the logs.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import signal
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import click
from pydantic import BaseModel, ConfigDict, Field, computed_field

from raytrade.cluster.errors import one_line_errors
from raytrade.cluster.options import (
    LocalPath,
    action_options,
    cash_rate_of,
    cash_rate_options,
    path_option,
    registry_option,
    spread_fraction_option,
    written_path_option,
)
from raytrade.cluster.remote_run import fetch_run
from raytrade.cluster.run_file import (
    LEADERBOARD_FILE,
    RUN_FILE,
    LeaderboardRow,
    RunFile,
    read_run_file,
    version_checkpoints_compared,
    write_leaderboard,
    write_run_file,
)
from raytrade.envs.actions import ActionConfig, ActionMode
from raytrade.envs.baseline_weights import BASELINE_FEATURES
from raytrade.envs.cash_rate import MAX_ANNUAL_RATE, CashRate, cash_return_per_bar, stale_rate
from raytrade.envs.costs import CostConfig
from raytrade.envs.rewards import RewardConfig
from raytrade.models.manifest import (
    ExperienceWindow,
    InitValidation,
    Provenance,
    SearchObjective,
    TrainWindow,
)
from raytrade.models.registry import DEFAULT_REGISTRY
from raytrade.replay.behaviour import describe, splits_seen
from raytrade.replay.errors import InputError
from raytrade.replay.remote import (
    Location,
    cache_dir,
    filesystem,
    is_remote,
    join,
    location,
    redacted,
    upload_tree,
)
from raytrade.replay.remote_store import local_store
from raytrade.replay.splits import TRAIN_FRACTION, VALIDATION_FRACTION
from raytrade.tune_specs import OFFLINE_SPECS, SPECS, get_spec
from raytrade.tune_specs.exploration import exploration_options, with_exploration
from raytrade.tune_specs.init_weights import (
    InitVersion,
    adopt_env_config,
    check_training_window,
    resolve_init,
    validation_overlap,
    validation_overlap_line,
    with_init_weights,
)
from raytrade.tune_specs.objective import (
    BOOK_END,
    CHECKPOINT_SCORE,
    ENV_RUNNER_NODES,
    METRIC,
    REPORTED,
    TRAIN_METRIC,
    metric_of,
)
from raytrade.tune_specs.overfit import OverfitCheck, check_overfit
from raytrade.tune_specs.spec import Budget, TuneSpec

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

__all__ = [
    "LEADERBOARD_FILE",
    "PLOT_FILE",
    "RUN_FILE",
    "TuneOptions",
    "metric_of",
    "read_run_file",
    "run_tune",
]
PLOT_FILE = "validation_objective.png"
_ACTION, _REWARD = ActionConfig.model_fields, RewardConfig.model_fields  # the flags' defaults, stated once
if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from raytrade.envs.market_data import MarketData

WandbMode = Literal["offline", "online", "disabled"]


class TuneOptions(BaseModel):
    """One ``raytrade tune`` invocation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: str = Field(description="spec name (tune_specs.SPECS)")
    replay: Location = Field(description="replay store (folder or s3://… URI); trains on its train split")
    experience: Path | None = Field(
        None, description="offline specs: store whose experience table they learn from (None: replay's)"
    )
    smoke: bool = Field(False, description="use the spec's tiny smoke budget")
    num_samples: int | None = Field(None, ge=1, description="trials (None: the budget's)")
    iterations: int | None = Field(None, ge=1, description="iterations per trial (None: the budget's)")
    early_stop: int | None = Field(
        None,
        ge=0,
        description="stop a trial after this many iterations without a validation improvement "
        "(tune_specs.stopping; 0: off; None: the budget's)",
    )
    storage: Location = Field("ray_results", description="folder (or s3://… URI) holding experiment folders")
    name: str | None = Field(None, description="experiment folder name (None: SPEC or SPEC-smoke)")
    resume: bool = Field(False, description="continue the interrupted experiment STORAGE/NAME")
    wandb: WandbMode = Field("offline", description="wandb logging mode")
    features: str | None = Field(
        None,
        description="observed feature groups: base, enriched or GROUP,... (envs.replay_loader."
        "FEATURE_GROUPS); None: the spec's (enriched for the online specs, base for the offline ones)",
    )
    cvar_penalty: float = Field(
        1.0,
        ge=0,
        description="objective = information ratio over equal_weight - cvar_penalty * max(0, -cvar_5)",
    )
    action_mode: ActionMode = Field(_ACTION["mode"].default, description="absolute weights or tilt:BASELINE")
    max_tilt: float = Field(
        _ACTION["max_tilt"].default, gt=0, le=1, description="tilt modes: largest tilt per symbol"
    )
    no_trade_band: float = Field(
        _ACTION["no_trade_band"].default, ge=0, le=1, description="no order within this of the weight"
    )
    turnover_penalty: float = Field(
        _REWARD["turnover_penalty"].default, ge=0, description="reward penalty per unit turnover"
    )
    train_fraction: float | None = Field(
        None, gt=0, lt=1, description="share of the calendar trained on (None: replay.splits' default)"
    )
    validation_fraction: float | None = Field(
        None, gt=0, lt=1, description="share of the calendar scored on (None: replay.splits' default)"
    )
    max_failures: int = Field(2, ge=0, description="restarts of a crashed trial from its checkpoint")
    cost_profile: Path | None = Field(
        None, description="cost profile (raytrade calibrate-costs) the simulator trains and scores with"
    )
    spread_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of the stored spread paid per side (None: the cost model's or the profile's; "
        "a sensitivity knob for stores whose spreads are estimates)",
    )
    cash_rate: float | None = Field(
        None,
        ge=0,
        le=MAX_ANNUAL_RATE,
        description="annual rate idle cash earns while training and scoring, a fraction (None: 0 %)",
    )
    cash_rates: Path | None = Field(
        None, description="rate file (envs.cash_rate) idle cash earns by date while training and scoring"
    )
    seed: int = Field(0, description="search and training seed")
    env_runners: int = Field(
        0,
        ge=0,
        description="RLlib env runners per trial: remote sampling actors, one placement bundle each "
        "beside the learner's (0: the learner's process samples)",
    )
    trial_resources: dict[str, float] = Field(
        default_factory=dict, description="extra custom Ray resources each trial requests"
    )
    init: str | None = Field(
        None,
        description="registry:NAME[@VERSION] whose weights, features, normaliser and action mapping "
        "start every trial (tune_specs.init_weights)",
    )
    registry: Location = Field(DEFAULT_REGISTRY, description="registry root --init reads")
    probe_symbols: str | None = Field(
        None, description="A,B: symbols explored with a larger std (models.common.ExplorationConfig)"
    )
    drawdown_std_scale: float | None = Field(
        None, gt=0, le=1, description="exploration std shrinks with drawdown, to its floor at this drawdown"
    )

    def init_version(self) -> InitVersion | None:
        """The ``--init`` version (NAME without a version: its newest now; ``run_tune`` pins it)."""
        return None if self.init is None else resolve_init(self.init, self.registry)

    def budget(self, spec: TuneSpec) -> Budget:
        base = spec.smoke if self.smoke else spec.budget
        update: dict[str, int] = {}
        if self.num_samples is not None:
            update["num_samples"] = self.num_samples
        if self.iterations is not None:
            update["iterations"] = self.iterations
        if self.early_stop is not None:
            update["early_stop"] = self.early_stop
        return base.model_copy(update=update)

    def feature_columns(self, spec: TuneSpec) -> tuple[str, ...]:
        """The columns the policy observes: ``features`` resolved, else the spec's."""
        if self.features is None:
            version = self.init_version()
            if version is not None:
                return tuple(version.env_config().get("feature_columns") or spec.required_features)
            return spec.required_features
        from raytrade.envs.replay_loader import resolve_feature_groups

        try:
            return resolve_feature_groups(self.features)
        except ValueError as exc:
            raise InputError(f"--features: {exc}") from None

    def env_config(self, spec: TuneSpec, budget: Budget) -> dict[str, Any]:
        """The spec's training env config with this search's action mapping and turnover penalty
        (``envs.actions``, ``envs.rewards``) and costs (:meth:`sim_overrides`); a tilt baseline's
        input columns are loaded with the data (``data.extra_features``) so every split, scoring and
        serving see them."""
        env_config = spec.env_config(
            location(self.replay), budget, self.feature_columns(spec), self.split_fractions()
        )
        action = ActionConfig(mode=self.action_mode, max_tilt=self.max_tilt, no_trade_band=self.no_trade_band)
        env_config["action"] = action.model_dump(mode="json", exclude={"kelly_lite"})
        sim = env_config.setdefault("sim", {})
        sim["reward"] = {**sim.get("reward", {}), "turnover_penalty": self.turnover_penalty}
        sim.update(self.sim_overrides())
        if action.baseline is not None:
            env_config["data"]["extra_features"] = list(BASELINE_FEATURES[action.baseline])
        version = self.init_version()
        if version is not None:
            given = action != ActionConfig()  # flags left at their defaults take the version's
            features_given = self.features is not None
            theirs = version.env_config()
            return adopt_env_config(
                env_config, theirs, version.label, features_given=features_given, action_given=given
            )
        return env_config

    def sim_overrides(self) -> dict[str, Any]:
        """Entries of the env config's ``sim`` these options set: ``costs`` from ``cost_profile`` and
        ``spread_fraction``, ``cash_rate`` from ``cash_rate`` / ``cash_rates``."""
        out: dict[str, Any] = {}
        rate = self.cash_rate_config()
        if rate is not None:
            out["cash_rate"] = rate.model_dump(mode="json")
        if self.cost_profile is None and self.spread_fraction is None:
            return out
        from raytrade.envs.cost_profile import cost_config_from_profile, with_spread_fraction

        costs = cost_config_from_profile(self.cost_profile) if self.cost_profile is not None else CostConfig()
        return {**out, "costs": with_spread_fraction(costs, self.spread_fraction).model_dump(mode="json")}

    def cash_rate_config(self) -> CashRate | None:
        """The ``CashRate`` of ``cash_rate`` / ``cash_rates`` (None: neither given, cash earns 0 %); a
        bad rate file is an ``InputError`` naming the flag, the file and the line."""
        return cash_rate_of(self.cash_rate, self.cash_rates)

    def split_fractions(self) -> dict[str, float]:
        """The ``ReplayDataConfig`` split fractions this search sets (empty: the store's defaults)."""
        fractions = {"train_fraction": self.train_fraction, "validation_fraction": self.validation_fraction}
        return {k: v for k, v in fractions.items() if v is not None}

    def search_config(
        self, spec: TuneSpec, config: AlgorithmConfig, env_config: dict[str, Any]
    ) -> AlgorithmConfig:
        """``config`` with this search's exploration options and ``--init`` weights, if any."""
        exploration = exploration_options(env_config, self.probe_symbols, self.drawdown_std_scale)
        config = with_exploration(config, exploration) if exploration else config
        version = self.init_version()
        if version is None:
            return config
        from raytrade.cluster.settings import registry_key_reader  # trials read the key themselves

        return with_init_weights(config, version, spec.name, registry_key=registry_key_reader())

    def run_name(self) -> str:
        return self.name or (f"{self.spec}-smoke" if self.smoke else self.spec)

    def run_location(self) -> str:
        """The run folder: an absolute path, or a URI under a remote ``storage``."""
        if is_remote(self.storage):
            return join(location(self.storage), self.run_name())
        return str(Path(self.storage).resolve() / self.run_name())

    def run_dir(self) -> Path:
        """The local run folder: the run itself, or the staging mirror of a remote run (where the
        project's run files are written before they are uploaded)."""
        where = self.run_location()
        return cache_dir(where) if is_remote(where) else Path(where)

    def command(self) -> str:
        """The ``raytrade tune`` command line that reproduces this search (not ``--resume``)."""
        return shlex.join(self._command_parts())

    def resume_command(self) -> str:
        """The command that continues this search where it stopped: :meth:`command` with ``--resume``
        and the wandb mode it ran with, less ``--env-runners`` (a resumed search keeps the env
        runners it started with and refuses the flag)."""
        return resuming(self._command_parts(), self.wandb)

    def _command_parts(self) -> list[str]:
        parts = ["raytrade", "tune", "--spec", self.spec, "--replay", location(self.replay)]
        parts += ["--experience", str(self.experience.resolve())] if self.experience else []
        parts += ["--smoke"] if self.smoke else []
        parts += ["--num-samples", str(self.num_samples)] if self.num_samples else []
        parts += ["--iterations", str(self.iterations)] if self.iterations else []
        parts += ["--early-stop", str(self.early_stop)] if self.early_stop is not None else []
        parts += ["--features", self.features] if self.features else []
        parts += ["--cost-profile", str(self.cost_profile.resolve())] if self.cost_profile else []
        parts += ["--spread-fraction", repr(self.spread_fraction)] if self.spread_fraction is not None else []
        parts += ["--cash-rate", repr(self.cash_rate)] if self.cash_rate is not None else []
        parts += ["--cash-rates", str(self.cash_rates.resolve())] if self.cash_rates else []
        for key, value in self.split_fractions().items():
            parts += [f"--{key.replace('_', '-')}", repr(value)]
        parts += ["--storage", location(self.storage), "--name", self.run_name()]
        parts += ["--cvar-penalty", repr(self.cvar_penalty), "--seed", str(self.seed)]
        parts += ["--env-runners", str(self.env_runners)] if self.env_runners else []
        parts += ["--action-mode", self.action_mode, "--max-tilt", repr(self.max_tilt)]
        parts += ["--no-trade-band", repr(self.no_trade_band)]
        parts += ["--turnover-penalty", repr(self.turnover_penalty)]
        parts += ["--init", self.init, "--registry", location(self.registry)] if self.init else []
        parts += ["--probe-symbols", self.probe_symbols] if self.probe_symbols else []
        parts += ["--drawdown-std-scale", repr(self.drawdown_std_scale)] if self.drawdown_std_scale else []
        return parts


class TuneOutcome(BaseModel):
    """What a finished search left behind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_dir: Path
    leaderboard: list[LeaderboardRow]
    plot: Path | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def overfit_warnings(self) -> list[str]:
        """One line per trial whose validation objective fell while its train objective rose over
        its last iterations (``LeaderboardRow.overfit``, ``tune_specs.overfit``), best trial first."""
        return [r.overfit.warning(r.trial) for r in self.leaderboard if r.overfit and r.overfit.overfitting]


# ------------------------------------------------------------------------------ input checks


def check_replay(
    root: Path,
    spec: TuneSpec,
    features: tuple[str, ...] | None = None,
    split_fractions: Mapping[str, float] | None = None,
) -> None:
    """Fail (``InputError``, one line) when ``root`` cannot feed ``spec``
    observing ``features`` (None: the spec's): no store, no bars/features table, observed features
    that are all null or unknown, or an empty train/validation split (at ``split_fractions``)."""
    from raytrade.envs.replay_loader import DEFAULT_FEATURES
    from raytrade.replay.reader import read_frame, table_files

    columns = features or spec.required_features

    if not root.is_dir():
        raise InputError(f"replay store {str(root)!r} does not exist")
    for table in ("bars", "features"):
        if not table_files(root, table):
            raise InputError(f"replay store {str(root)!r} has no {table!r} data; run `raytrade ingest` first")
    unknown = [c for c in columns if c not in DEFAULT_FEATURES]
    if unknown:
        raise InputError(f"spec {spec.name!r} needs features the env cannot load: {unknown}")
    frame = read_frame(root, "features", columns=list(columns))
    missing = [c for c in columns if frame[c].isna().all()]
    if missing:
        present = [c for c in columns if c not in missing]
        raise InputError(
            f"replay store {str(root)!r} lacks features spec {spec.name!r} needs: {missing} "
            f"(present: {present})"
        )
    from raytrade.envs.replay_loader import load_market_data

    for split in ("train", "validation"):
        fractions = {"train_fraction": TRAIN_FRACTION, "validation_fraction": VALIDATION_FRACTION}
        fractions.update(split_fractions or {})
        load_market_data(
            root,
            split,
            feature_columns=columns,
            train_fraction=fractions["train_fraction"],
            validation_fraction=fractions["validation_fraction"],
        )


# ------------------------------------------------------------------------------ tuner


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a value) or unset (None) environment variables for the duration of a search, restoring
    them afterwards."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, prev in old.items():
            if prev is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = prev


@contextlib.contextmanager
def resume_hint_on_stop(command: str, run_dir: Path) -> Iterator[None]:
    """Say how to continue the search when a signal ends it inside the block, then let it end.

    SIGTERM (``ray job stop``, a pod's termination): the Python handler ``ray.init`` installs in the
    driver raises ``SystemExit(SIGTERM)``, after Ray's C++ failure handler has printed its ``*** SIGTERM
    received ... PC: @ 0x...`` dump; no handler of ours replaces theirs (it would drop Ray's own
    reaction). SIGINT: Tune's handler stops the search gracefully the first time (``fit`` returns and
    the unfinished-trials line says the same); a second one, or one before Tune's handler is in place,
    raises ``KeyboardInterrupt``. Either way the line goes to stderr and the exception goes on, so the
    exit status is the one it would have been. Trials resume from their last checkpoints."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(stopped_line("SIGINT", command, run_dir), err=True)
        raise
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
        click.echo(stopped_line("SIGTERM", command, run_dir), err=True)
        raise


@contextlib.contextmanager
def graceful_sigterm() -> Iterator[list[int]]:
    """Inside the block, a first SIGTERM stops the search as Tune's first SIGINT does: Tune's loop
    saves the experiment's state and ``fit`` returns; the list yielded records the signal, so the
    caller ends with the SIGTERM line (:func:`stopped_line`).

    The command then prints the SIGTERM line and exits 143 (128 + SIGTERM), unless every trial had
    finished (a SIGTERM after Tune's last result): then it writes the leaderboard as usual.

    Ray's own driver handler raises ``SystemExit`` wherever the main thread is. Tune's loop spends its
    time inside ``ray.wait``, and an exception raised there killed the driver: exit 134 (SIGABRT) after
    Ray's C++ dump, no line and no saved state (reproduced with a smoke search stopped 3 s into its
    loop). Tune installs its stop for SIGUSR1 when its loop starts; a SIGTERM before that, a second
    one, or one where Tune installed nothing goes to the handler that was there (Ray's). Only on the
    main thread (elsewhere a handler cannot be set; nothing changes)."""
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.getsignal(signal.SIGTERM)
    usr1_before = signal.getsignal(signal.SIGUSR1)

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if len(received) == 1 and callable(tune_stop) and tune_stop is not usr1_before:
            tune_stop(signal.SIGUSR1, frame)  # Tune's graceful stop: fit returns
            return
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_line(signal_name: str, command: str, run_dir: Path) -> str:
    """The line a search stopped by ``signal_name`` ends with: ``command`` continues it."""
    return f"search stopped by {signal_name}; continue it with: {command} (run folder {run_dir})"


WANDB_KEY_ENV = "WANDB_API_KEY"


def online_wandb_key(opts: TuneOptions) -> str | None:
    """The wandb key :func:`upload_wandb_runs` uploads an online search's runs with (None: not
    online); refused (one line) when ``--wandb`` is given without ``WANDB_API_KEY``, before Ray
    starts."""
    if opts.wandb != "online":
        return None
    from raytrade.cluster.settings import MissingCredentialsError, load_settings

    secret = load_settings().wandb_api_key
    if secret is None:
        raise MissingCredentialsError("--wandb needs a wandb key: set WANDB_API_KEY")
    return secret.get_secret_value()


def _wandb_setup(opts: TuneOptions, run_dir: Path) -> tuple[list[Any], dict[str, str | None], str | None]:
    """(Tune callbacks, environment of the search, key for the upload after it) for the wandb mode.

    The search always logs offline with ``WANDB_API_KEY`` unset (see the module docstring); online
    mode only returns the key (:func:`online_wandb_key`), for :func:`upload_wandb_runs` once the
    search is over.
    """
    if opts.wandb == "disabled":
        return [], {}, None
    from ray.air.integrations.wandb import WandbLoggerCallback

    key = online_wandb_key(opts)
    env: dict[str, str | None] = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", WANDB_KEY_ENV: None}
    callback = WandbLoggerCallback(
        project="raytrade", group=opts.run_name(), log_config=False, mode="offline", dir=str(run_dir)
    )
    return [callback], env, key


def upload_wandb_runs(run_dir: Path, key: str) -> list[Path]:
    """Upload the search's offline wandb runs (``run_dir/wandb/offline-run-*``) with ``wandb sync`` in
    a child process whose environment alone holds the key. A failed upload is reported, not raised:
    the search's results are on disk and the same command uploads them later."""
    import subprocess
    import sys

    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    if not runs:
        return []
    command = [sys.executable, "-m", "wandb", "sync", *map(str, runs)]
    child_env = {**os.environ, WANDB_KEY_ENV: key, "WANDB_MODE": "online", "WANDB_SILENT": "true"}
    done = subprocess.run(command, env=child_env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        later = shlex.join(["wandb", "sync", *map(str, runs)])
        click.echo(
            f"warning: the wandb upload failed (exit {done.returncode}); upload later with: {later}", err=True
        )
    return runs


def _searched_keys(param_space: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Paths (``a/b`` for nested dicts) of the search domains in a param space."""
    from ray.tune.search.sample import Domain

    keys = []
    for k, v in param_space.items():
        if isinstance(v, Domain):
            keys.append(f"{prefix}{k}")
        elif isinstance(v, Mapping):
            keys += _searched_keys(v, f"{prefix}{k}/")
    return sorted(keys)


def _param(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def search_algo_config(
    opts: TuneOptions, spec: TuneSpec, window: ExperienceWindow | None = None
) -> AlgorithmConfig:
    """The search's param space before trial resources: the spec's config for this search's env,
    budget and objective, with its exploration options, ``--init`` weights and experience store, and
    an offline spec's reward divisor from its experience ``window`` (``window.reward_scale``, what the
    run file records; without one the trials compute the same)."""
    budget = opts.budget(spec)
    env_config = opts.env_config(spec, budget)
    objective = spec.objective.model_copy(update={"cvar_penalty": opts.cvar_penalty})
    config = _with_experience(
        opts, opts.search_config(spec, spec.algo_config(env_config, budget, objective), env_config)
    )
    if window is None or window.reward_scale is None:
        return config
    from raytrade.tune_specs.offline import with_reward_scale

    return with_reward_scale(config, window.reward_scale)


def build_tuner(opts: TuneOptions, spec: TuneSpec, config: AlgorithmConfig, callbacks: list[Any]) -> Any:
    """A fresh ``Tuner`` of the param space ``config`` (:func:`search_algo_config` with
    :func:`with_trial_resources`), or with ``opts.resume`` the restored one, for ``spec`` on
    ``opts.replay``."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    budget = opts.budget(spec)
    trainable: Any = config.algo_class
    run_dir = opts.run_location()
    if opts.resume:
        if not tune.Tuner.can_restore(run_dir):
            raise InputError(f"no experiment to resume at {redacted(run_dir)!r}")
        return tune.Tuner.restore(run_dir, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=config,  # type: ignore[arg-type]  # Tuner takes any object with to_dict()
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=spec.scheduler(budget),
            num_samples=budget.num_samples,
            search_alg=BasicVariantGenerator(random_state=opts.seed),
        ),
        run_config=tune.RunConfig(
            name=opts.run_name(),
            storage_path=location(opts.storage),
            stop=spec.stop(budget),
            checkpoint_config=checkpoint_config(budget, spec.objective.score_every),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            callbacks=callbacks,
            verbose=1,
            progress_reporter=_reporter(spec, config),
        ),
    )


def checkpoint_config(budget: Budget, score_every: int) -> Any:
    """Tune's ``CheckpointConfig`` of a search: a checkpoint every ``budget.checkpoint_every``
    iterations and at the end, of which each trial keeps its ``budget.checkpoints_kept`` best by the
    iteration's own validation objective (``CHECKPOINT_SCORE``, a top-level key: Tune ranks only by
    those) and its latest. Refused when both ``score_every`` (the objective's) and
    ``checkpoint_every`` exceed 1: the scored iterations (1, 1 + k, ...) would miss the checkpointed
    ones (multiples of the other), leaving no checkpoint with a score of its own."""
    from ray import tune

    if score_every > 1 and budget.checkpoint_every > 1:
        raise InputError(
            f"score_every={score_every} with checkpoint_every={budget.checkpoint_every}: the scored "
            "iterations would miss the checkpointed ones; checkpoint every iteration (checkpoint_every=1)"
        )

    return tune.CheckpointConfig(
        checkpoint_frequency=budget.checkpoint_every,
        checkpoint_at_end=True,
        num_to_keep=budget.checkpoints_kept,
        checkpoint_score_attribute=CHECKPOINT_SCORE,
        checkpoint_score_order="max",
    )


def with_trial_resources(opts: TuneOptions, config: AlgorithmConfig) -> AlgorithmConfig:
    """``config`` with what each trial runs and requests: ``opts.env_runners`` remote env runners,
    the custom ``opts.trial_resources`` on the learner's bundle, the SPREAD placement strategy for
    the trial's bundles, and the search seed."""
    return (
        config.env_runners(num_env_runners=opts.env_runners)
        .resources(placement_strategy="SPREAD", custom_resources_for_main_process=dict(opts.trial_resources))
        .debugging(seed=opts.seed)
    )


def trial_bundles(config: AlgorithmConfig) -> Any:
    """The ``PlacementGroupFactory`` a trial of ``config`` asks Tune for (bundles and strategy), as
    RLlib's ``Algorithm.default_resource_request`` computes it for the first resolved variant of the
    param space (search domains drawn once: they never change a trial's resources)."""
    from ray.tune.search.variant_generator import generate_variants

    _, resolved = next(generate_variants(config.to_dict()))
    return config.algo_class.default_resource_request(resolved)  # type: ignore[union-attr]


FIT_SEARCH_STEPS: Final = 50_000
"""Placements the bundle check tries before it gives up undecided (the search is exact, and exponential
in the worst case: many nodes of different sizes and a request that barely does not fit)."""


class _Undecided(Exception):
    """The exact placement search ran out of its steps."""


def _fits(
    bundles: list[dict[str, float]], free: list[dict[str, float]], steps: list[int], start: int = 0
) -> bool:
    """Whether every bundle can take a node of ``free`` (several bundles may share one), by an exact
    search. Nodes with the same free resources are tried once per bundle, and a bundle equal to the
    one before it takes a node at or after that one's (``start``): reordering equal bundles finds
    no new placement. Each placement tried spends one of ``steps`` (a one-item list); none left:
    :class:`_Undecided`."""
    if not bundles:
        return True
    first, rest = bundles[0], bundles[1:]
    tried: list[dict[str, float]] = []
    for i in range(start, len(free)):
        node = free[i]
        if node in tried or any(node.get(k, 0.0) < v for k, v in first.items()):
            continue
        steps[0] -= 1
        if steps[0] < 0:
            raise _Undecided
        tried.append(node)
        left = {k: node.get(k, 0.0) - first.get(k, 0.0) for k in node}
        if _fits(rest, [*free[:i], left, *free[i + 1 :]], steps, i if rest and rest[0] == first else 0):
            return True
    return False


def check_bundles_fit(
    bundles: list[dict[str, float]], nodes: list[dict[str, float]], env_runners: int
) -> bool:
    """Fail (one line) when no placement of ``bundles`` (a trial's: the learner's, then one per env
    runner) onto ``nodes`` (each alive node's total resources) exists: such a trial would wait for
    ever. Totals, not what is free now: other trials and jobs release what they hold. True when a
    placement was found; False when the search gave up undecided after ``FIT_SEARCH_STEPS`` (the
    caller says so and lets Ray place the trial)."""
    asked = [{k: float(v) for k, v in b.items() if v} for b in bundles]
    kinds = sorted({k for b in asked for k in b})  # nodes seen only through what is asked
    free = [{k: float(n.get(k, 0.0)) for k in kinds} for n in nodes]
    need = {k: sum(b.get(k, 0.0) for b in asked) for k in kinds}
    enough = all(need[k] <= sum(n[k] for n in free) for k in kinds)  # cheap refusal first
    ordered = sorted(asked, key=lambda b: [-b.get(k, 0.0) for k in kinds])  # equal bundles adjacent
    try:
        if enough and _fits(ordered, free, [FIT_SEARCH_STEPS]):
            return True
    except _Undecided:
        return False
    held = " + ".join(f"{n.get('CPU', 0.0):g}" for n in nodes) or "0"
    raise InputError(
        f"--env-runners {env_runners}: a trial needs {len(asked)} bundles (1 learner + {env_runners} env "
        f"runners: {asked}, {need.get('CPU', 0.0):g} CPUs in all) but the cluster's {len(nodes)} "
        f"node(s) cannot hold them (CPUs per node: {held}); lower --env-runners or add nodes"
    )


def cluster_node_resources() -> list[dict[str, float]]:
    """The total resources of each alive node of the connected Ray cluster."""
    import ray

    return [{k: float(v) for k, v in node["Resources"].items()} for node in ray.nodes() if node.get("Alive")]


def local_node_resources() -> list[dict[str, float]] | None:
    """The one node of the local Ray a search would start (its CPUs, counted as ``ray.init`` counts
    them), or None when it would use a running Ray (``RAY_ADDRESS``, or this process is connected):
    that cluster's nodes are known only once connected (:func:`cluster_node_resources`)."""
    import ray

    if os.environ.get("RAY_ADDRESS") is not None or ray.is_initialized():
        return None
    from ray._private.utils import get_num_cpus

    return [{"CPU": float(get_num_cpus())}]


def check_env_runners(opts: TuneOptions, spec: TuneSpec) -> None:
    """Fail (one line) when ``--env-runners`` is given to an offline spec: it learns from the stored
    experience table and samples no environment, so remote env runners would only hold CPUs."""
    if opts.env_runners and spec.name in OFFLINE_SPECS:
        raise InputError(
            f"--env-runners {opts.env_runners}: spec {spec.name!r} is offline (learns from the experience "
            f"table, samples no environment); env runners apply to the online specs "
            f"({', '.join(sorted(set(SPECS) - OFFLINE_SPECS))})"
        )


def _with_experience(opts: TuneOptions, config: AlgorithmConfig) -> AlgorithmConfig:
    """An offline spec's config reading ``opts.experience`` when given (else the replay store's)."""
    if opts.experience is None:
        return config
    from raytrade.tune_specs.offline import with_experience

    return with_experience(config, str(opts.experience.resolve()))


def check_experience(opts: TuneOptions, spec: TuneSpec) -> ExperienceWindow | None:
    """Fail (one line) when ``--experience`` is given to an online spec, or an offline spec's
    experience store has no transitions (checked on its first file only), none in its training
    window (:func:`experience_window`), or some there logged on another universe or observation
    encoding than the learner's (``tune_specs.offline.check_experience_layout``: the column, the
    episode and both values named; with ``--train-fraction``, which moves the training window its
    normaliser is fitted on, an encoding mismatch names the flag, its value and what works instead).
    Returns that window (None: an online spec)."""
    if spec.name not in OFFLINE_SPECS:
        if opts.experience is not None:
            raise InputError(
                f"--experience applies to the offline specs ({', '.join(sorted(OFFLINE_SPECS))})"
            )
        return None
    from raytrade.replay.experience import check_experience_store

    root = opts.experience or local_store(opts.replay)
    check_experience_store(root)
    window = experience_window(opts, spec)
    from raytrade.replay.experience import EncodingError
    from raytrade.tune_specs.offline import check_experience_layout

    try:
        check_experience_layout(root, opts.env_config(spec, opts.budget(spec)))
    except EncodingError as exc:
        if opts.train_fraction is None or not encoded_at_default_split(root, opts, spec):
            raise
        raise InputError(
            f"--train-fraction {opts.train_fraction!r}: {exc}: the learner's normaliser is fitted on "
            f"its training window ({window.train_start.date()} .. {window.train_end.date()}), which "
            f"this fraction moves, and the experience was encoded at the default split ({TRAIN_FRACTION}, "
            "where `raytrade simulate-experience` records); leave --train-fraction out to learn from it"
        ) from None
    return window


def encoded_at_default_split(root: str | Path, opts: TuneOptions, spec: TuneSpec) -> bool:
    """Whether every transition of the experience at ``root`` in this search's training window
    (:func:`experience_window`) was encoded as the learner at the default split encodes (its
    normaliser fitted on the default training window; ``tune_specs.offline.env_layout``): then a
    ``--train-fraction`` is what the learner's encoding differs by."""
    from raytrade.replay.experience import ExperienceError, check_layout
    from raytrade.tune_specs.offline import env_layout, offline_env_config
    from raytrade.tune_specs.offline import experience_window as decision_window

    default = opts.model_copy(update={"train_fraction": None, "validation_fraction": None})
    layout = env_layout(offline_env_config(default.env_config(spec, default.budget(spec))))
    _, decisions = decision_window(opts.env_config(spec, opts.budget(spec)))
    try:
        check_layout(root, decisions.start, decisions.end, layout.symbols, layout.observation_spec)
    except ExperienceError:
        return False
    return True


def experience_window(opts: TuneOptions, spec: TuneSpec) -> ExperienceWindow:
    """The transitions offline ``spec`` reads (``tune_specs.offline.experience_window``: decided in
    the training window of this search's splits, less its last bar) and how many lie outside;
    refused (one line naming the window and the experience's dates) when none lies inside."""
    from raytrade.tune_specs.offline import counted_window, reward_scale

    root = opts.experience or local_store(opts.replay)
    try:
        train, decisions, count = counted_window(root, opts.env_config(spec, opts.budget(spec)))
    except InputError:
        raise
    except ValueError as exc:  # a store without bars, a training window of one bar
        raise InputError(f"--replay {location(opts.replay)}: {exc}") from None
    return ExperienceWindow(
        train_start=train.start.to_pydatetime(),
        train_end=train.end.to_pydatetime(),
        start=decisions.start.to_pydatetime(),
        end=decisions.end.to_pydatetime(),
        transitions=count.inside,
        left_out=count.left_out,
        reward_scale=reward_scale(count.reward_std),
        reward_outlier=None if count.outlier is None else count.outlier.message(),
    )


def experience_window_line(window: ExperienceWindow) -> str:
    """The progress line saying which transitions an offline search learns from, and the divisor of
    their rewards."""
    scale = "" if window.reward_scale is None else f"; rewards divided by {window.reward_scale:.4g}"
    return (
        f"offline experience: {window.transitions} transitions decided {window.start.date()} .. "
        f"{window.end.date()} (training window {window.train_start.date()} .. {window.train_end.date()}); "
        f"{window.left_out} outside it left out{scale}"
    )


def behaviour_lines(provenance: Provenance) -> list[str]:
    """Warnings for the behaviour policies of an offline search's experience that saw bars after its
    training window, or whose training window is unknown: its versions inherit them
    (``models.training_window``)."""
    experience = provenance.experience
    window = None if experience is None else experience.window
    if experience is None or window is None:
        return []
    lines = []
    for b in experience.behaviour or []:
        if not b.known:
            lines.append(
                f"warning: offline experience recorded by {describe(b)}: the training window of this "
                "search's versions is unknown (raytrade evaluate cannot check them out of sample)"
            )
        elif splits_seen(b, window.train_end, None):
            assert b.seen_until is not None  # a known record that saw bars after the window
            lines.append(
                f"warning: offline experience recorded by {describe(b)}, which saw bars after this "
                f"search's training window ({window.train_end.date()}): its validation scores are in "
                f"sample, and its versions count {b.seen_until.date()} as their last training bar"
            )
    return lines


def check_init_window(opts: TuneOptions, spec: TuneSpec) -> None:
    """Fail (one line naming both windows) when the ``--init`` version's weights may have seen this
    search's validation or test bars (``tune_specs.init_weights.check_training_window``: its
    training window must end one embargo before this search's validation window, on a store with its
    fingerprint or as its manifest records it)."""
    version = opts.init_version()
    if version is None:
        return
    from raytrade.replay.fingerprint import data_fingerprint

    data = opts.env_config(spec, opts.budget(spec))["data"]
    sha, _ = data_fingerprint(local_store(opts.replay))
    try:
        check_training_window(data, version.manifest(), sha, version.label)
    except InputError:
        raise
    except ValueError as exc:  # a store without bars, a version's symbols it does not hold
        raise InputError(f"--init {version.label} on --replay {location(opts.replay)}: {exc}") from None


def init_validation(opts: TuneOptions, spec: TuneSpec) -> InitValidation | None:
    """The ``--init`` version, when its checkpoint was chosen on a window overlapping this search's
    validation window (``tune_specs.init_weights.validation_overlap``: warned, recorded in the run
    file, counted by ``raytrade select``), with how many checkpoints were compared to choose it
    (``cluster.run_file.version_checkpoints_compared``); None otherwise."""
    from raytrade.replay.fingerprint import data_fingerprint

    version = opts.init_version()
    if version is None:
        return None
    manifest = version.manifest()
    data = opts.env_config(spec, opts.budget(spec))["data"]
    window = validation_overlap(data, manifest, data_fingerprint(local_store(opts.replay))[0])
    if window is None:
        return None
    return InitValidation(
        version=version.label,
        validation_window=TrainWindow(start=window[0].to_pydatetime(), end=window[1].to_pydatetime()),
        checkpoints_compared=version_checkpoints_compared(manifest),
    )


def init_validation_warning(init: InitValidation) -> str:
    """The ``warning:`` line of :func:`init_validation`."""
    window = init.validation_window
    line = validation_overlap_line(init.version, window.start, window.end, init.checkpoints_compared)
    return f"warning: {line}"


OFFLINE_FIXED: Final[dict[str, str]] = {
    "action_mode": "the experience logs absolute target weights, which a tilt would read as tilts "
    "around its baseline",
    "no_trade_band": "the experience's next observations and rewards were recorded without a band",
    "turnover_penalty": "the experience's rewards were recorded without a turnover penalty",
    "cost_profile": "the experience's rewards were recorded under the costs where it was logged",
    "spread_fraction": "the experience's rewards were recorded under the costs where it was logged",
    "cash_rate": "the experience's rewards were recorded without interest on cash",
    "cash_rates": "the experience's rewards were recorded without interest on cash",
}
"""Options an offline spec must leave at their defaults, and why: the transitions it learns from were
recorded under the default action mapping, reward and costs (``envs.experience``, ``serve.live``);
another value would not change what it learns, only mislabel it (fail closed, not recomputed)."""


def check_offline_env(opts: TuneOptions, spec: TuneSpec) -> None:
    """Fail (one line naming the option and its value) when an offline spec is asked for an env the
    experience was not recorded under (:data:`OFFLINE_FIXED`), through a flag or an ``--init``
    version's adopted action mapping."""
    if spec.name not in OFFLINE_SPECS:
        return
    for field, why in OFFLINE_FIXED.items():
        value, default = getattr(opts, field), TuneOptions.model_fields[field].default
        if value != default:
            raise InputError(
                f"--{field.replace('_', '-')} {value}: spec {spec.name!r} is offline and {why}; "
                + ("leave the option out" if default is None else f"offline specs take {default}")
            )
    if opts.init is not None:
        action = ActionConfig.model_validate(opts.env_config(spec, opts.budget(spec))["action"])
        if action.mode != ActionConfig().mode or action.no_trade_band != ActionConfig().no_trade_band:
            raise InputError(
                f"--init {opts.init}: its action mapping (mode {action.mode}, no-trade band "
                f"{action.no_trade_band}) is not the absolute weights spec {spec.name!r}'s experience logs"
            )


def _reporter(spec: TuneSpec, config: Any) -> Any:
    """Tune's table reporter showing only the searched parameters and the scores.

    Ray's newer reporter prints the whole algorithm config as the best trial's "params" (hundreds of
    keys); ``run_tune`` selects this one with ``RAY_AIR_NEW_OUTPUT=0``.
    """
    from ray.tune import CLIReporter

    searched = _searched_keys(config.to_dict()) if hasattr(config, "to_dict") else []
    return CLIReporter(
        parameter_columns=searched,
        metric_columns={"training_iteration": "iter", spec.metric: "objective", TRAIN_METRIC: "train"},
        max_report_frequency=15,
    )


def provenance(
    replay: Path,
    experience: Path | None = None,
    window: ExperienceWindow | None = None,
    train_window: TrainWindow | None = None,
    validation_window: TrainWindow | None = None,
) -> Provenance:
    """Code version and fingerprint (``models.registry.code_fingerprint``), library versions and the
    data fingerprint of ``replay``, as of now; with ``experience`` (an offline spec's experience
    store), its experience table's fingerprint too, and the ``window`` of it read and the behaviour
    policies of the transitions in it (``replay.behaviour.behaviour_in_window``); ``train_window`` and
    ``validation_window``: the search's training and validation windows on ``replay``."""
    from raytrade.models.manifest import ExperienceFingerprint
    from raytrade.models.registry import code_fingerprint, code_version, library_versions
    from raytrade.replay.behaviour import behaviour_in_window
    from raytrade.replay.fingerprint import EXPERIENCE_TABLES, data_fingerprint

    sha, n_files = data_fingerprint(replay)
    seen = None
    if experience is not None:
        exp_sha, exp_files = data_fingerprint(experience, EXPERIENCE_TABLES)
        behaviour = None if window is None else behaviour_in_window(experience, window.start, window.end)
        seen = ExperienceFingerprint(
            root=str(experience.resolve()),
            sha256=exp_sha,
            files=exp_files,
            window=window,
            behaviour=None if behaviour is None else list(behaviour),
        )
    return Provenance(
        started_at=datetime.now(UTC),
        code_version=code_version(),
        code_sha256=code_fingerprint(),
        libraries=library_versions(),
        data_sha256=sha,
        data_files=n_files,
        experience=seen,
        train_window=train_window,
        validation_window=validation_window,
    )


def training_window(env_config: dict[str, Any], split: str = "train") -> TrainWindow | None:
    """The first and last bar of ``env_config``'s ``split`` (None: synthetic data). The train split
    covers the ``--init`` version's lineage too: :func:`check_init_window` accepts only a version whose
    training window ends at least the embargo before this search's validation window, i.e. no later
    than this search's own training window ends."""
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.envs.replay_loader import split_calendar

    if env_config["data"].get("kind") != "replay":
        return None
    data = ReplayDataConfig.model_validate({**env_config["data"], "split": split})
    bars = split_calendar(data)
    return TrainWindow(start=bars[0].to_pydatetime(), end=bars[-1].to_pydatetime())


def run_record(
    opts: TuneOptions,
    spec: TuneSpec,
    window: ExperienceWindow | None = None,
    init: InitValidation | None = None,
) -> RunFile:
    """The run file of a new search: what it searches and what it depends on at this moment (an
    offline spec: its experience's ``window``, computed here when not given; ``init``: its ``--init``
    version chosen on its validation window, :func:`init_validation`)."""
    offline = spec.name in OFFLINE_SPECS
    if offline and window is None:
        window = experience_window(opts, spec)
    budget = opts.budget(spec)
    columns = opts.feature_columns(spec)
    env_config = opts.env_config(spec, budget)  # --init conflicts are refused here, before any file
    config = _with_experience(
        opts, opts.search_config(spec, spec.algo_config(env_config, budget), env_config)
    ).to_dict()
    return RunFile(
        spec=spec.name,
        family=spec.family,
        replay=location(opts.replay),
        budget=budget,
        objective=SearchObjective(
            metric=spec.metric, mode=spec.mode, cvar_penalty=opts.cvar_penalty, book_end=BOOK_END
        ),
        searched=_searched_keys(config),
        required_features=list(columns),
        seed=opts.seed,
        command=opts.command(),
        provenance=provenance(
            local_store(opts.replay),
            (opts.experience or local_store(opts.replay)) if offline else None,
            window if offline else None,
            training_window(env_config),
            training_window(env_config, "validation"),
        ).model_copy(update={"init_validation": init}),
    )


def check_cash_rate(opts: TuneOptions) -> str | None:
    """Refuse (``InputError`` naming ``--cash-rates``, before Ray starts) a rate schedule that starts
    after the first bar the training window's cash earns over: every trial's simulator would refuse
    it, each after its worker had started. Returns the warning when the schedule's file ends more
    than a week before the validation window's last bar (``envs.cash_rate.stale_rate``: the bars after
    it train and score on its last rate), else None."""
    rate = opts.cash_rate_config()
    if rate is None or not rate.schedule:
        return None
    from raytrade.envs.replay_loader import load_market_data

    def window(split: str) -> MarketData:
        return load_market_data(
            local_store(opts.replay),
            split,
            train_fraction=opts.train_fraction or TRAIN_FRACTION,
            validation_fraction=opts.validation_fraction or VALIDATION_FRACTION,
            feature_columns=(),
        )

    data = window("train")
    try:
        cash_return_per_bar(data.ts, rate, data.periods_per_year)
    except ValueError as exc:
        raise InputError(f"--cash-rates: {exc}") from None
    return stale_rate(rate, window("validation").ts[-1])


def refuse_other_inputs(opts: TuneOptions, run_dir: Path, recorded: RunFile) -> None:
    """Refuse (``InputError``, before Ray starts) to resume the search ``recorded`` at ``run_dir`` by
    other code or on other data than it started with (``cluster.run_reuse.why_inputs_differ``: the
    code fingerprint, the store's and, for an offline spec, the experience store's): its trials so
    far and the ones a resume adds would be ranked in one leaderboard as if one search had made them.
    The experience store is compared when the search read one (an offline spec's run file records
    its fingerprint)."""
    from raytrade.cluster.run_reuse import store_state, why_inputs_differ
    from raytrade.models.registry import code_fingerprint

    offline = recorded.provenance.experience is not None
    experience = (opts.experience or local_store(opts.replay)) if offline else None
    store = store_state(local_store(opts.replay), experience)
    reason = why_inputs_differ(recorded, store, code_fingerprint())
    if reason is not None:
        raise InputError(
            f"{str(run_dir)!r} cannot be resumed: {reason}; resuming would rank checkpoints of two "
            "searches in one leaderboard; start a new search (--name)"
        )


RESUME_IGNORES: Final = frozenset({"--env-runners", "--storage"})
"""Flags of a search's recorded command a resume may give otherwise: ``--env-runners`` (``--resume``
refuses it) and ``--storage`` (a runs folder moved elsewhere resumes from its new place)."""


def resuming(parts: list[str], wandb: WandbMode, storage: str | None = None) -> str:
    """The command line that continues the search started by ``parts`` (a ``raytrade tune`` command's
    words): less ``--env-runners`` (a resumed search keeps its env runners and refuses the flag), with
    ``--storage`` set to ``storage`` when given (where the runs folder is now), the ``wandb`` mode
    and ``--resume``."""
    parts = list(parts)
    if "--env-runners" in parts:
        at = parts.index("--env-runners")
        del parts[at : at + 2]
    if storage is not None and "--storage" in parts:
        parts[parts.index("--storage") + 1] = storage
    flag = {"online": ["--wandb"], "disabled": ["--no-wandb"], "offline": []}[wandb]
    return shlex.join([*parts, *flag, "--resume"])


def command_flags(command: str) -> dict[str, str]:
    """The flags of a ``raytrade tune`` command line (:meth:`TuneOptions.command`) and their values
    (``""`` for a switch such as ``--smoke``)."""
    parts = shlex.split(command)[2:]  # past "raytrade tune"
    flags: dict[str, str] = {}
    for at, part in enumerate(parts):
        if part.startswith("--"):
            following = parts[at + 1] if at + 1 < len(parts) else "--"
            flags[part] = "" if following.startswith("--") else following
    return flags


def refuse_other_options(opts: TuneOptions, run_dir: Path, recorded: RunFile) -> None:
    """Refuse (``InputError``, before Ray starts) to resume the search ``recorded`` at ``run_dir`` with
    options other than it started with (its run file's command): Tune restores a search's trials with
    the configs they began with, so another ``--cash-rate``, cost profile, budget or seed would do
    nothing while the command line said otherwise. ``RESUME_IGNORES`` aside."""
    started, now = command_flags(recorded.command), command_flags(opts.command())

    def said(flags: dict[str, str], flag: str) -> str:
        return "not given" if flag not in flags else (flags[flag] or "given")

    changed = [
        f"{flag} now {said(now, flag)}, started {said(started, flag)}"
        for flag in sorted((started.keys() | now.keys()) - RESUME_IGNORES)
        if started.get(flag) != now.get(flag)
    ]
    if changed:
        hint = resuming(shlex.split(recorded.command), opts.wandb, location(opts.storage))
        raise InputError(
            f"{str(run_dir)!r} cannot be resumed with other options than it started with: "
            f"{'; '.join(changed)}. A resumed search keeps its trials' configs, so they would do "
            f"nothing; resume it with its own command: {hint} (or start a new search: --name)"
        )


# ------------------------------------------------------------------------------ results


def _trial_name(result: Any) -> str:
    return str(result.metrics.get("trial_id", Path(result.path).name))


def _history(result: Any) -> Any:
    """A trial's reported iterations (one row each, the last report of a repeated iteration, in
    iteration order) with the validation objective; None when it reported none."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty or METRIC not in frame:
        return None
    ordered = frame.sort_values("training_iteration", kind="stable")  # a re-run's rows stay after
    return ordered.drop_duplicates("training_iteration", keep="last")


def overfit_of(result: Any, window: int) -> OverfitCheck | None:
    """The overfitting check (``tune_specs.overfit.check_overfit``) over a trial's last ``window``
    reported iterations; None when it reported fewer or no train objective (an older run)."""
    frame = _history(result)
    if frame is None or TRAIN_METRIC not in frame:
        return None
    return check_overfit(
        frame["training_iteration"].tolist(), frame[TRAIN_METRIC].tolist(), frame[METRIC].tolist(), window
    )


def checkpoints_scored(result: Any, checkpoint_every: int) -> int | None:
    """How many checkpoints a trial's search compared by validation objective: its iterations that
    were checkpointed (every ``checkpoint_every``-th, and the last) with a finite score of their own
    (``CHECKPOINT_SCORE``). Tune keeps only the best few of them on disk, chosen by that same score,
    so the trial's best checkpoint is the best of all these. The last iteration of a trial that
    failed may not have been saved: counted all the same (one too many errs on the cautious side of a
    claim adjusted for it). None when the trial's history does not report the score."""
    frame = _history(result)
    if frame is None or CHECKPOINT_SCORE not in frame:
        return None
    iterations = frame["training_iteration"].astype(int)
    saved = (iterations % checkpoint_every == 0) | (iterations == iterations.max())
    finite = frame[CHECKPOINT_SCORE].astype(float).abs() < math.inf  # NaN compares False
    return int((saved & finite).sum())


def _saved(checkpoint: Any, trial: str) -> bool:
    """Whether a checkpoint Tune lists for a trial is still on its storage; a warning names one that is
    gone. A trial deletes the checkpoints it does not keep as it goes, and Tune snapshots the
    experiment state (each trial's list) every few seconds (``TUNE_GLOBAL_CHECKPOINT_S``, and once per
    ``checkpoints_kept`` checkpoints of a trial), so a search resumed after its driver was killed
    outright, not stopped, can list a checkpoint deleted after the last snapshot. Snapshotting at every
    step would close that window at the cost of rewriting a state file of megabytes several times a
    second, so it is left to the user (``TUNE_GLOBAL_CHECKPOINT_S=0``)."""
    from pyarrow.fs import FileType

    if checkpoint.filesystem.get_file_info(checkpoint.path).type == FileType.Directory:
        return True
    gone = Path(checkpoint.path).name
    click.echo(f"warning: trial {trial}: {gone} is listed but gone; left out of the leaderboard", err=True)
    return False


def leaderboard(
    results: Any, run_dir: Path, searched: list[str], *, overfit_window: int, checkpoint_every: int
) -> list[LeaderboardRow]:
    """One row per trial, best first: its best checkpoint (by its own iteration's validation
    objective, among those Tune kept), its validation scores and train objective there, the
    checkpoints compared (:func:`checkpoints_scored`), and the overfitting check of its last
    ``overfit_window`` iterations."""
    rows = []
    for result in results:
        if not result.metrics or "training_iteration" not in result.metrics:
            continue
        kept = [(c, m) for c, m in result.best_checkpoints or [] if _saved(c, _trial_name(result))]
        best = [(c, m) for c, m in kept if math.isfinite(metric_of(m, CHECKPOINT_SCORE))]
        if best:
            checkpoint, metrics = max(best, key=lambda cm: metric_of(cm[1], CHECKPOINT_SCORE))
            ckpt: str | None = os.path.relpath(checkpoint.path, run_dir)
        else:
            checkpoint, metrics, ckpt = None, result.metrics, None
        scores = {k: metric_of(metrics, f"validation/{k}") for k in REPORTED}
        rows.append(
            LeaderboardRow(
                trial=_trial_name(result),
                trial_dir=os.path.relpath(result.path, run_dir),
                params={k: _param(result.config or {}, k) for k in searched},
                iteration=int(metrics.get("training_iteration", 0)),
                checkpoint=ckpt,
                checkpoints_compared=checkpoints_scored(result, checkpoint_every) if best else 0,
                node_id=metrics.get("node_id"),
                env_runner_node_ids=[n for n in str(metrics.get(ENV_RUNNER_NODES) or "").split(",") if n],
                error=None if result.error is None else trial_error_line(str(result.error))[:200],
                train_objective=metric_of(metrics, TRAIN_METRIC),
                overfit=overfit_of(result, overfit_window),
                **scores,
            )
        )
    return sorted(rows, key=lambda r: -r.objective if math.isfinite(r.objective) else math.inf)


_RAISED: Final = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception))(?:\([\w.]*\))?: (.+)$")
"""A traceback's exception line: ``[module.]Class[(Cause)]: message``, the class an error or exception."""


def trial_error_line(text: str) -> str:
    """The line of a failed trial's error text (Tune's, a traceback, possibly of chained and remote
    errors) that says why it failed: the last exception line whose message is not Ray's remote-task
    header (``ray::...``), as ``Class: message`` (the class without its module), which is the
    innermost raised error; the lines Ray appends to a message (Ray Data's retry hint) never are.
    Without such a line: the text's last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _RAISED.match(line)
        if match and not match.group(2).startswith("ray::"):
            return f"{match.group(1)}: {match.group(2)}"
    return lines[-1] if lines else text


def format_leaderboard(rows: list[LeaderboardRow]) -> str:
    """The leaderboard as a fixed-width table: trial, iteration, objective (validation), the train
    objective at the same checkpoint (a ``train`` column, left out when no row has one: a run older
    than the train score), excess return over equal_weight, sharpe, cvar, and what the policy held
    and paid (mean gross exposure, turnover per bar, costs / initial equity) beside its score, then
    the params."""
    with_train = any(math.isfinite(r.train_objective) for r in rows)
    train_head = f"{'train':>9}" if with_train else ""
    lines = [
        f"{'trial':<14}{'iter':>5}{'objective':>11}{train_head}{'excess':>9}{'sharpe':>9}{'cvar_5':>9}"
        f"{'gross':>8}{'turnover':>10}{'costs':>9}  params"
    ]
    for r in rows:
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        train = f"{r.train_objective:>9.3f}" if with_train else ""
        lines.append(
            f"{r.trial:<14}{r.iteration:>5}{r.objective:>11.3f}{train}{r.excess_return:>9.4f}{r.sharpe:>9.3f}"
            f"{r.cvar_5:>9.4f}{r.gross_exposure:>8.3f}{r.turnover:>10.4f}{r.costs:>9.5f}  {params}"
        )
    return "\n".join(lines)


def best_cash_line(rows: list[LeaderboardRow]) -> str | None:
    """The line beside the leaderboard when its best trial with a checkpoint (the one ``raytrade
    promote`` copies) held (almost) only cash on the validation window
    (``tune_specs.selection.cash_line``); None otherwise."""
    from raytrade.tune_specs.selection import cash_line

    best = next((r for r in rows if r.checkpoint), None)
    line = None if best is None else cash_line(best.gross_exposure)
    return None if best is None or line is None else f"best trial {best.trial} {line}"


def behaviour_hint(run: RunFile, run_location: str) -> str | None:
    """For an offline search, the line under its leaderboard naming the behaviour policies of the
    experience it read and the command that judges its best trial against them
    (``cluster.select_behaviour``: the leaderboard's scores are against ``equal_weight`` only, and a
    clone of its behaviour policy is no success); None for an online search."""
    from raytrade.cluster.select_behaviour import behaviour_policies

    if run.provenance.experience is None:
        return None
    policies, unknown = behaviour_policies(run)
    judge = f"raytrade select {shlex.quote(run_location)} --out DIR"
    if policies is None:
        return f"offline search: its behaviour policies cannot be named ({unknown}); judge it with {judge}"
    named = ", ".join(f"{name} ({n} run{'s' if n > 1 else ''})" for name, n in policies.items())
    return (
        f"offline search: its experience was recorded by {named}; judge its best trial against them: {judge}"
    )


def draw_objective(ax: Any, results: Any) -> int:
    """Draw each trial's validation objective (solid, round markers) and train objective (dashed,
    square markers, the same colour) over training iterations on ``ax``; returns the number of trials
    drawn."""
    plotted = 0
    for result in results:
        frame = _history(result)
        if frame is None:
            continue
        trial = _trial_name(result)
        (line,) = ax.plot(frame["training_iteration"], frame[METRIC], marker="o", ms=3, label=trial)
        if TRAIN_METRIC in frame:
            ax.plot(  # a marker too: after one iteration a dashed line alone is a single invisible point
                frame["training_iteration"],
                frame[TRAIN_METRIC],
                linestyle="--",
                marker="s",
                ms=3,
                color=line.get_color(),
            )
        plotted += 1
    return plotted


def plot_objective(results: Any, path: Path) -> Path | None:
    """PNG of each trial's validation (solid) and train (dashed) objective over training iterations
    (None: nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = draw_objective(ax, results)
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel("training iteration")
    ax.set_ylabel("objective")
    ax.set_title(
        "information ratio over equal_weight - CVaR penalty\nvalidation (solid), train tail (dashed)"
    )
    ax.grid(alpha=0.3)
    if plotted <= 12:
        ax.legend(fontsize=7, title="trial", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ entrypoint


def log_locations(opts: TuneOptions) -> list[str]:
    """Where the search's TensorBoard logs and wandb offline runs go, and the commands that open
    and upload them."""
    run_dir = opts.run_dir()
    lines = [f"TensorBoard logs: {run_dir} (open: tensorboard --logdir {shlex.quote(str(run_dir))})"]
    if opts.wandb != "disabled":
        runs = shlex.quote(str(run_dir / "wandb")) + "/offline-run-*"
        lines.append(f"wandb offline runs: {run_dir / 'wandb'} (upload: wandb sync {runs})")
    return lines


def run_tune(opts: TuneOptions, dashboard: bool = True) -> TuneOutcome:
    """Run (or resume) the search, then write the leaderboard and the objective plot.

    Uses the Ray this process is connected to, else ``RAY_ADDRESS``'s cluster, else a new local Ray
    (with its dashboard unless ``dashboard`` is False). Prints where the TensorBoard and wandb logs
    go once the inputs are checked."""
    spec = get_spec(opts.spec)
    version = opts.init_version()
    if version is not None:  # the trials load exactly the version resolved now
        from raytrade.cluster.registry_access import verify_under_key

        verify_under_key(version.ref, version.registry)  # its signature, before Ray starts
        opts = opts.model_copy(update={"init": version.label})
    check_env_runners(opts, spec)
    check_offline_env(opts, spec)
    check_replay(local_store(opts.replay), spec, opts.feature_columns(spec), opts.split_fractions())
    window = check_experience(opts, spec)
    check_init_window(opts, spec)  # resumed too: the trials would keep scoring on the seen bars
    init = init_validation(opts, spec)
    if init is not None:  # warned, recorded and counted by select, not refused (tune_specs.init_weights)
        click.echo(init_validation_warning(init))
    opts.sim_overrides()  # a bad cost profile is refused before Ray starts
    stale = check_cash_rate(opts)  # as is a rate file the training window starts before
    if not opts.resume:  # --init conflicts (features, action mapping) too, before anything is printed
        opts.env_config(spec, opts.budget(spec))
    run_dir, remote = opts.run_dir(), opts.run_location() if is_remote(opts.storage) else None
    if remote is not None:  # the project's run files are staged locally and uploaded (remote_run)
        fetch_run(remote)
    if opts.resume:
        if opts.env_runners:  # Tune restores the trials' stored resources; the flag would do nothing
            raise InputError(
                f"--env-runners {opts.env_runners} with --resume: a resumed search keeps the env runners it "
                "started with; drop the flag"
            )
        recorded = read_run_file(run_dir)
        if recorded.spec != spec.name or recorded.replay != location(opts.replay):
            raise InputError(
                f"{str(run_dir)!r} was a search of spec {recorded.spec!r} on {recorded.replay!r}"
            )
        if recorded.objective.book_end != BOOK_END:  # its leaderboard would mix two rules
            raise InputError(
                f"{str(run_dir)!r} was scored with objective.book_end {recorded.objective.book_end!r} "
                f"and the objective now scores {BOOK_END!r} (the book closed at the validation window's "
                "end): resuming would rank its checkpoints under two rules; start a new search (--name)"
            )
        refuse_other_inputs(opts, run_dir, recorded)
        refuse_other_options(opts, run_dir, recorded)
    elif (run_dir / RUN_FILE).exists():
        raise InputError(f"experiment {str(run_dir)!r} exists: pass --resume, or --name for a new one")
    online_wandb_key(opts)  # refused before Ray starts; _wandb_setup reads it for the upload
    # the search's param space: --probe-symbols and --drawdown-std-scale are refused here (no Ray yet)
    config = with_trial_resources(opts, search_algo_config(opts, spec, window))
    bundles = trial_bundles(config).bundles if opts.env_runners else []  # (refused with --resume above)
    nodes = local_node_resources()  # a new local Ray's one node: the bundles are checked before it starts
    fits = not bundles or nodes is None or check_bundles_fit(bundles, nodes, opts.env_runners)
    from raytrade.cluster.local_cluster import init_ray

    init_ray(os.environ.get("RAY_ADDRESS"), dashboard=dashboard)
    if bundles and nodes is None:
        fits = check_bundles_fit(bundles, cluster_node_resources(), opts.env_runners)
    if not fits:
        click.echo(
            f"warning: could not decide within {FIT_SEARCH_STEPS:,} placements whether the nodes can "
            "hold one trial's bundles; if the trials stay PENDING, lower --env-runners"
        )
    callbacks, env, wandb_key = _wandb_setup(opts, run_dir)
    for line in log_locations(opts):
        click.echo(line)
    if window is not None:
        click.echo(experience_window_line(window))
        if window.reward_outlier is not None:
            click.echo(f"warning: offline experience: {window.reward_outlier}")
    if stale is not None:  # the trials train and score on the file's last rate past its end
        click.echo(f"warning: {stale}")
    env = {**env, "RAY_AIR_NEW_OUTPUT": "0"}  # the table reporter of ``_reporter``
    if not opts.resume:
        record = run_record(opts, spec, window, init)
        write_run_file(run_dir, record)
        for line in behaviour_lines(record.provenance):
            click.echo(line)
        if remote is not None:
            upload_tree(run_dir, remote, files=[RUN_FILE])
    with resume_hint_on_stop(opts.resume_command(), run_dir), _environment(env), graceful_sigterm() as term:
        tuner = build_tuner(opts, spec, config, callbacks)
        results = tuner.fit()
    # A trial is finished when its last result says done (the stop rule or the scheduler ended it) or
    # it failed. Tune's graceful stop (a first SIGINT, or SIGTERM through graceful_sigterm) stops the
    # running trials too and counts them as terminated, so the trial status alone would take an
    # interrupted search for a finished one. A SIGTERM after the last trial finished stops nothing.
    unfinished = sum(1 for r in results if r.error is None and not (r.metrics or {}).get("done"))
    if term and unfinished:  # Tune stopped gracefully on it: its state saved, the trials resume from it
        click.echo(stopped_line("SIGTERM", opts.resume_command(), run_dir), err=True)
        raise SystemExit(128 + signal.SIGTERM)  # a supervisor reads a SIGTERM's end: 143
    if wandb_key is not None:
        upload_wandb_runs(run_dir, wandb_key)
    if unfinished:
        raise click.ClickException(
            f"search interrupted with {unfinished} of {len(results)} trials unfinished; "
            f"continue it with: {opts.resume_command()} (run folder {run_dir})"
        )
    recorded = read_run_file(run_dir)
    tune_dir = Path(filesystem(remote)[1]) if remote is not None else run_dir  # where Tune's paths lie
    budget = recorded.budget
    rows = leaderboard(
        results,
        tune_dir,
        recorded.searched,
        overfit_window=budget.overfit_window,
        checkpoint_every=budget.checkpoint_every,
    )
    if not any(r.checkpoint for r in rows):
        errors = [trial_error_line(str(r.error)) for r in results if r.error is not None]
        raise click.ClickException(f"all trials of {run_dir} failed: {errors[0] if errors else 'no results'}")
    write_leaderboard(run_dir, rows)
    plot = plot_objective(results, run_dir / PLOT_FILE)
    if remote is not None:
        upload_tree(run_dir, remote, last=(LEADERBOARD_FILE,))
    return TuneOutcome(run_dir=run_dir, leaderboard=rows, plot=plot)


@click.command("tune")
@click.option("--spec", "spec", required=True, help=f"Experiment spec: {', '.join(sorted(SPECS))}.")
@path_option("--replay", required=True, help="Replay store root (a folder or an s3://… URI).")
@path_option(
    "--experience",
    type=LocalPath(),
    help="Offline specs: store whose experience table they learn from (default: --replay's).",
)
@click.option("--smoke", is_flag=True, help="Tiny budget (about a minute on 2 CPUs).")
@click.option("--num-samples", type=click.IntRange(min=1), help="Trials to sample (default: the budget's).")
@click.option(
    "--iterations", type=click.IntRange(min=1), help="Iterations per trial (default: the budget's)."
)
@click.option(
    "--early-stop",
    type=click.IntRange(min=0),
    help="Stop a trial after N iterations without a validation-objective improvement "
    "(0: off; default: the budget's, 20 for the on-policy specs, off with --smoke).",
)
@written_path_option(
    "--storage",
    default="ray_results",
    show_default=True,
    help="Folder (or s3://… URI) of experiment folders.",
)
@click.option("--name", help="Experiment folder name (default: SPEC, or SPEC-smoke with --smoke).")
@click.option("--resume", is_flag=True, help="Continue the interrupted experiment STORAGE/NAME.")
@click.option("--wandb", "wandb_online", is_flag=True, help="Log to wandb online (needs WANDB_API_KEY).")
@click.option("--no-wandb", "no_wandb", is_flag=True, help="No wandb logging at all (default: offline).")
@click.option(
    "--features",
    help="Observed feature groups: base, enriched, or a comma list of "
    "returns, microstructure, regime, forecast, risk, macro (default: the spec's: enriched for the "
    "online specs, base for the offline specs bc, marwil, cql, iql).",
)
@click.option("--cvar-penalty", type=click.FloatRange(min=0), default=1.0, show_default=True)
@action_options()
@click.option(
    "--turnover-penalty",
    type=click.FloatRange(min=0),
    default=_REWARD["turnover_penalty"].default,
    show_default=True,
    help="Reward penalty per unit turnover (traded notional / equity; 0: off).",
)
@path_option(
    "--cost-profile",
    type=LocalPath(),
    help="Cost profile from raytrade calibrate-costs (default: the loop's cost model).",
)
@spread_fraction_option()
@cash_rate_options()
@click.option(
    "--train-fraction",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    help="Share of the calendar trained on (default: 0.6).",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    help="Share of the calendar scored on, after the train share and the embargo (default: 0.2).",
)
@click.option("--max-failures", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--env-runners",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="RLlib env runners per trial (1 CPU each, a placement bundle each beside the learner's, "
    "spread over nodes; 0: the learner samples; online specs only).",
)
@click.option(
    "--init",
    help="registry:NAME[@VERSION]: start every trial from that version's weights; its features, "
    "normaliser and action mapping are adopted (conflicting flags are refused).",
)
@registry_option("Registry root --init reads.", used_when="init")
@click.option("--probe-symbols", help="A,B: symbols explored with a larger std (the contract's probes).")
@click.option(
    "--drawdown-std-scale",
    type=click.FloatRange(min=0, max=1, min_open=True),
    help="Exploration std shrinks as the drawdown grows, to its floor at this drawdown (default: off).",
)
@click.option("--no-dashboard", is_flag=True, help="Start a local Ray without its dashboard.")
@one_line_errors
def tune_command(
    spec: str,
    replay: str,
    experience: Path | None,
    smoke: bool,
    num_samples: int | None,
    iterations: int | None,
    early_stop: int | None,
    storage: str,
    name: str | None,
    resume: bool,
    wandb_online: bool,
    no_wandb: bool,
    features: str | None,
    cvar_penalty: float,
    action_mode: ActionMode,
    max_tilt: float,
    no_trade_band: float,
    turnover_penalty: float,
    cost_profile: Path | None,
    spread_fraction: float | None,
    cash_rate: float | None,
    cash_rates: Path | None,
    train_fraction: float | None,
    validation_fraction: float | None,
    max_failures: int,
    seed: int,
    env_runners: int,
    init: str | None,
    registry: str,
    probe_symbols: str | None,
    drawdown_std_scale: float | None,
    no_dashboard: bool,
) -> None:
    """Search SPEC's hyperparameters on REPLAY's train split, scored on its validation split."""
    shares = (train_fraction or TRAIN_FRACTION, validation_fraction or VALIDATION_FRACTION)
    if sum(shares) >= 1:  # refused by its flags, before anything (fractional_splits says it by its fields)
        raise InputError(
            f"--train-fraction {shares[0]:g} and --validation-fraction {shares[1]:g} leave no test window: "
            f"their sum must be below 1 (defaults {TRAIN_FRACTION:g} and {VALIDATION_FRACTION:g})"
        )
    if wandb_online and no_wandb:
        raise InputError("--wandb and --no-wandb exclude each other")
    opts = TuneOptions(
        spec=spec,
        replay=replay,
        experience=experience,
        smoke=smoke,
        num_samples=num_samples,
        iterations=iterations,
        early_stop=early_stop,
        storage=storage,
        name=name,
        resume=resume,
        wandb="online" if wandb_online else "disabled" if no_wandb else "offline",
        features=features,
        cvar_penalty=cvar_penalty,
        action_mode=action_mode,
        max_tilt=max_tilt,
        no_trade_band=no_trade_band,
        turnover_penalty=turnover_penalty,
        cost_profile=cost_profile,
        spread_fraction=spread_fraction,
        cash_rate=cash_rate,
        cash_rates=cash_rates,
        train_fraction=train_fraction,
        validation_fraction=validation_fraction,
        max_failures=max_failures,
        seed=seed,
        env_runners=env_runners,
        init=init,
        registry=registry,
        probe_symbols=probe_symbols,
        drawdown_std_scale=drawdown_std_scale,
    )
    outcome = run_tune(opts, dashboard=not no_dashboard)
    shown = redacted(opts.run_location()) if is_remote(opts.storage) else outcome.run_dir
    click.echo(f"\nleaderboard ({shown}):")
    click.echo(format_leaderboard(outcome.leaderboard))
    cash = best_cash_line(outcome.leaderboard)
    if cash is not None:
        click.echo(f"warning: {cash}", err=True)
    from raytrade.cluster.local_cluster import format_placement

    click.echo(format_placement(outcome.leaderboard))
    for warning in outcome.overfit_warnings:
        click.echo(warning, err=True)
    if outcome.plot is not None:  # a remote search's plot is in its run folder there, not in the cache
        plot = (
            redacted(join(opts.run_location(), outcome.plot.name))
            if is_remote(opts.storage)
            else outcome.plot
        )
        click.echo(f"plot: {plot}")
    # offline searches only; select reads local run folders only: a remote search is judged once fetched
    judged = spec in OFFLINE_SPECS and not is_remote(opts.storage)
    hint = behaviour_hint(read_run_file(outcome.run_dir), str(outcome.run_dir)) if judged else None
    if hint is not None:
        click.echo(hint)
    click.echo(f"promote the best trial: raytrade promote --run {opts.run_location()} --name NAME")
