"""``raytrade tune --init registry:NAME[@VERSION]``: every trial starts from a promoted version's weights.

Design decisions
----------------
* **Pinned.** ``registry:NAME`` is resolved to its newest version once, in the driver
  (:func:`resolve_init`); the trials load exactly ``NAME@VERSION``, so a promote during the search
  changes nothing, and the run file's command names the version.
* **The version says what its weights mean.** Its observed feature columns, its normaliser (the
  training-window statistics the weights learned under, carried over rather than refitted on this
  store) and its action mapping (weights or a tilt around a baseline) are adopted
  (:func:`adopt_env_config`); a ``--features`` or action flag that says otherwise is refused, naming
  both. Its module's architecture (``model_config``: widths, depth, projection) is adopted too; the
  exploration options stay this search's.
* **Chosen on this search's validation window: warned and counted, not refused**
  (:func:`validation_overlap`). A version promoted from a search with the same splits had its
  checkpoint chosen as the best of many on the very bars this search is scored on. That is selection
  bias, not look-ahead: its weights never trained on those bars (its training window is checked
  above and refused when it reaches them), so the rule is ``raytrade evaluate``'s for a window that
  overlaps a version's validation window (``envs.evaluation.insample``: marked selection-biased, not
  refused), not ``simulate-experience``'s refusal (there the version's actions become a new
  learner's training data). Refusing would also stop the documented use of ``--init``: fine-tuning a
  promoted version on the store it was searched on. So ``raytrade tune`` prints a ``warning:`` line
  naming the version and the window, and records it in the run file
  (``Provenance.init_validation``, with the checkpoints compared to choose it), and ``raytrade
  select`` adds those to the N of its claim.
* **Compatible or refused, before any trial starts** (:func:`check_compatible`): the version's
  module class must be the spec's (an offline ``bc``/``marwil`` version qualifies when it holds a
  ``ppo_mlp`` module), and its observation and action spaces must equal those of the env the trial
  builds (same number of assets and observed width).
* **Loaded before the first sample.** An ``on_algorithm_init`` callback (:func:`load_init_weights`;
  it runs at the end of ``Algorithm.setup``) loads the version through ``models.registry_load.load``
  (its HMAC under the registry key and the sha256 of every file verified before anything is
  unpickled, in the trial's own process), sets it
  on the learner(s), checks that every parameter of the learner's module now holds the version's
  value (RLlib's ``set_state`` ignores missing keys), and syncs the weights to the env runners. Tune
  restores a trial's checkpoint after ``setup``, so a resumed or restarted trial keeps its trained
  weights. The optimiser starts fresh: the registry holds the module only.
* The registry, like the replay store, must be reachable at the same path from every trial's node.
* **Signed versions.** The entrypoint passes a :data:`RegistryKey` (a function returning the registry
  key, ``cluster.settings.registry_hmac_key``) rather than the key: the function travels with the
  callback, the key never enters the config, the run file or Ray's state, and each trial reads it
  from its own environment. A trial of a search whose driver had a key but that finds none in its
  own environment refuses to load (it would otherwise skip the HMAC check).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.envs.actions import ActionConfig
from raytrade.envs.config import ReplayDataConfig
from raytrade.envs.evaluation.policies import REGISTRY_PREFIX
from raytrade.models.common import RLLIB_AUTO_KEYS
from raytrade.models.manifest import Manifest, read_manifest
from raytrade.models.registry import resolve
from raytrade.models.training_window import (
    TrainingWindowUnknown,
    version_training_window,
    version_validation_window,
)
from raytrade.replay.errors import InputError
from raytrade.replay.remote import location
from raytrade.tune_specs.exploration import module_model_config, module_spec, with_model_config

ADOPTED: tuple[str, ...] = ("feature_columns", "normalizer", "action")
"""The env config entries an ``--init`` search takes from the version."""

RegistryKey = Callable[[], SecretStr | None]
"""Where a process reads the registry's HMAC key (``cluster.settings.registry_hmac_key``)."""


class InitConflictError(InputError):
    """A version whose weights cannot start this search (the message names both sides)."""


class InitVersion(BaseModel):
    """A pinned registry version whose weights start every trial."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str = Field(description="absolute registry root")
    name: str
    version: int = Field(ge=1)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def label(self) -> str:
        """``registry:NAME@VERSION``: the pinned form of the ``--init`` value."""
        return f"{REGISTRY_PREFIX}{self.ref}"

    def folder(self) -> Path:
        return resolve(self.registry, self.ref)

    def manifest(self) -> Manifest:
        """The version's manifest, with a valid ``config.env_config`` (else one line naming it)."""
        manifest = read_manifest(self.folder())
        manifest.env_config()  # one line naming the manifest when it is missing or invalid
        return manifest

    def env_config(self) -> dict[str, Any]:
        """The env config the version was trained with (its manifest's ``config.env_config``)."""
        return dict(self.manifest().config["env_config"])


def resolve_init(text: str, registry: str | Path) -> InitVersion:
    """``registry:NAME`` or ``registry:NAME@VERSION`` as a pinned :class:`InitVersion` (NAME: its
    newest version now). Unknown names and versions raise ``RegistryError``, listing what exists."""
    if not text.startswith(REGISTRY_PREFIX):
        raise InputError(f"--init {text!r}: expected {REGISTRY_PREFIX}NAME or {REGISTRY_PREFIX}NAME@VERSION")
    root = location(registry)  # an absolute folder, or a URI the registry mirrors locally
    folder = resolve(root, text.removeprefix(REGISTRY_PREFIX))
    return InitVersion(registry=root, name=folder.parent.name, version=int(folder.name))


def _action(raw: Any) -> ActionConfig:
    return ActionConfig.model_validate(raw or {})


def adopt_env_config(
    env_config: Mapping[str, Any],
    theirs: Mapping[str, Any],
    label: str,
    *,
    features_given: bool,
    action_given: bool,
) -> dict[str, Any]:
    """``env_config`` with the feature columns, normaliser and action mapping (``ADOPTED``) of the
    version ``label`` trained with ``theirs`` (:meth:`InitVersion.env_config`), and the data
    columns its action needs (``data.extra_features``); everything else stays this search's.

    ``features_given``/``action_given``: the search asked for its own features / action mapping;
    when that differs from the version's, :class:`InitConflictError` names both.
    """
    ours_columns, their_columns = list(env_config.get("feature_columns") or []), theirs.get("feature_columns")
    if features_given and ours_columns != list(their_columns or []):
        raise InitConflictError(
            f"--features {ours_columns} differ from {label}'s feature columns {their_columns}"
        )
    if action_given and _action(env_config.get("action")) != _action(theirs.get("action")):
        raise InitConflictError(
            f"action {env_config.get('action')} differs from {label}'s action {theirs.get('action')}"
        )
    out = {k: v for k, v in env_config.items() if k not in ADOPTED}
    out.update({k: theirs[k] for k in ADOPTED if k in theirs})
    data = {k: v for k, v in dict(env_config["data"]).items() if k != "extra_features"}
    extra = dict(theirs.get("data") or {}).get("extra_features")
    out["data"] = data if extra is None else {**data, "extra_features": extra}
    return out


def _dates(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{start.date()} .. {end.date()}"


def check_training_window(data: Mapping[str, Any], manifest: Manifest, store_sha256: str, label: str) -> None:
    """:class:`InitConflictError` (one line naming both windows) unless the version ``label``
    (``manifest``) trained on bars that end at least this search's embargo before this search's
    validation window begins, counted on this search's calendar (``data``: this search's replay data
    config; ``store_sha256``: its store's fingerprint now). See the module docstring."""
    from raytrade.envs.replay_loader import split_calendar

    if data.get("kind") != "replay":
        raise InitConflictError(f"{label}: this search's data kind {data.get('kind')!r} has no calendar")
    ours = ReplayDataConfig.model_validate(data)
    try:
        theirs = version_training_window(manifest, ours.root, store_sha256, label)
    except TrainingWindowUnknown as exc:
        raise InitConflictError(
            f"{exc}: cannot show its weights did not see this search's validation or test bars; search "
            "the store it trained on, start from a version trained since, or start from scratch"
        ) from None
    if theirs is None:
        return
    start, end, how = theirs
    calendar = split_calendar(ours.model_copy(update={"split": "all"}))
    validation = split_calendar(ours.model_copy(update={"split": "validation"}))
    between = int(((calendar > end) & (calendar < validation[0])).sum())
    if end < validation[0] and between >= ours.embargo_bars:
        return
    window = _dates(validation[0], validation[-1])
    where = (
        f"reaches into this search's validation/test bars (validation window {window})"
        if end >= validation[0]
        else f"ends {between} bar(s) before this search's validation window {window}, less than its "
        f"embargo of {ours.embargo_bars}"
    )
    raise InitConflictError(
        f"{label}'s training window {_dates(start, end)} ({how}) {where}: its weights and normaliser saw "
        "bars this search scores on; start from a version trained on earlier bars (or from scratch), "
        f"or move this search's validation window later (its train_fraction is {ours.train_fraction})"
    )


def validation_overlap(
    data: Mapping[str, Any], manifest: Manifest, store_sha256: str
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """(first bar, last bar) of the validation window the version (``manifest``) chose its checkpoint
    on when it overlaps this search's validation window (``data``: this search's replay data config,
    ``store_sha256``: its store's fingerprint now); None when it does not, or when it cannot be placed
    (synthetic data, an older version on a changed store). See the module docstring."""
    from raytrade.envs.replay_loader import split_calendar

    if data.get("kind") != "replay":
        return None
    ours = ReplayDataConfig.model_validate(data)
    theirs = version_validation_window(manifest, ours.root, store_sha256)
    if theirs is None:
        return None
    validation = split_calendar(ours.model_copy(update={"split": "validation"}))
    if theirs.end < validation[0] or theirs.start > validation[-1]:
        return None
    return theirs.start, theirs.end


def validation_overlap_line(label: str, start: datetime, end: datetime, compared: int | None) -> str:
    """The ``warning:`` text of :func:`validation_overlap` for the version ``label`` (its validation
    window ``start`` .. ``end``, chosen among ``compared`` checkpoints, None: unknown)."""
    counted = (
        f"select counts its {compared} checkpoints compared there in the N of its claim"
        if compared is not None
        else "how many checkpoints were compared to choose it is not recorded, so select makes no claim "
        "about this search's winner"
    )
    return (
        f"--init {label}: its checkpoint was chosen on {start.date()} .. {end.date()}, which overlaps "
        "this search's validation window: this search's validation scores start from the best of that "
        f"choice on the same bars (selection-biased, not out of sample); {counted}"
    )


def _env_spaces(config: AlgorithmConfig) -> tuple[Any, Any]:
    """Observation and action spaces of the env a trial of ``config`` builds (one episode)."""
    from raytrade.envs.gym_envs import GATED_ENV_ID, make_gated_env, make_portfolio_env

    make = make_gated_env if config.env == GATED_ENV_ID else make_portfolio_env
    env = make(dict(config.env_config))
    return env.observation_space, env.action_space


def check_compatible(module: Any, config: AlgorithmConfig, version: InitVersion, spec_name: str) -> None:
    """:class:`InitConflictError` (one line naming the version and the spec) unless ``module`` (the
    version's) has the spec's module class and the spaces of the env ``config`` builds."""
    cls = module_spec(config).module_class
    assert cls is not None  # module_spec checks it
    if type(module) is not cls:
        raise InitConflictError(
            f"{version.label} holds a {type(module).__name__} module; "
            f"spec {spec_name!r} trains {cls.__name__}"
        )
    observation_space, action_space = _env_spaces(config)
    for what, mine, spec_space in (
        ("observation", module.observation_space, observation_space),
        ("action", module.action_space, action_space),
    ):
        if mine != spec_space:
            raise InitConflictError(
                f"{version.label}'s {what} space {mine} differs from spec {spec_name!r}'s env {spec_space}"
            )


def with_init_weights(
    config: AlgorithmConfig, version: InitVersion, spec_name: str, registry_key: RegistryKey | None = None
) -> AlgorithmConfig:
    """``config`` (whose env config already adopted the version's, :func:`adopt_env_config`) with the
    version's architecture and an ``on_algorithm_init`` callback loading its weights
    (:func:`load_init_weights`), after :func:`check_compatible`. With ``registry_key``, the version
    is loaded here and in every trial only if its HMAC matches under the key (module docstring)."""
    handle = _load(version, registry_key)
    check_compatible(handle.module, config, version, spec_name)
    theirs = handle.module.model_config
    ours = module_model_config(config)
    model = {k: v for k, v in dict(theirs or {}).items() if k not in RLLIB_AUTO_KEYS and k != "exploration"}
    if "exploration" in ours:
        model["exploration"] = ours["exploration"]
    hook = functools.partial(load_init_weights, init=version.model_dump(), registry_key=registry_key)
    return with_model_config(config, model).callbacks(on_algorithm_init=hook)


def _load(version: InitVersion, registry_key: RegistryKey | None) -> Any:
    """``models.registry_load.load`` of ``version`` under the key ``registry_key`` returns; a reader
    that returns no key (this process's environment lacks it) is refused rather than loading the
    version unchecked."""
    from raytrade.models.registry_load import load

    key = None if registry_key is None else registry_key()
    if registry_key is not None and key is None:
        raise InputError(
            f"{version.label}: the search was started with a registry key but this trial's process has "
            "none (it would load the version unsigned): set RAYTRADE_REGISTRY_HMAC_KEY on every node"
        )
    return load(version.ref, version.registry, key)


def load_init_weights(
    *, algorithm: Any, init: dict[str, Any], registry_key: RegistryKey | None = None, **_: Any
) -> None:
    """``on_algorithm_init`` callback: the version ``init`` (an :class:`InitVersion` dump) on the
    learner(s) and every env runner, before the first sample (see the module docstring); with
    ``registry_key``, only if its HMAC matches under the key this process reads."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    version = InitVersion.model_validate(init)
    state = _load(version, registry_key).module.get_state()
    algorithm.learner_group.set_weights({DEFAULT_MODULE_ID: state})
    loaded = algorithm.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
    differ = sorted(set(loaded) ^ set(state)) or [k for k in state if not np.array_equal(loaded[k], state[k])]
    if differ:
        raise InitConflictError(f"{version.label}: learner parameters {differ[:5]} did not take its values")
    algorithm.env_runner_group.sync_weights(
        from_worker_or_learner_group=algorithm.learner_group, inference_only=True
    )
