"""Evaluation policies: the baselines, ``kelly_lite``, and an adapter for registry models.

Contract
--------
A policy spec (``PolicySpec``) builds, for one ``MarketData`` window and one seed, a callable
``Observation -> target weights [B, N]`` or ``Decision(weights, hold)``. ``hold [B, N]`` marks assets
that send no order at all: the simulator keeps their units exactly (``MarketSimulator.step``'s
``fill`` mask), so they trade nothing and cost nothing. That is how a "hold" is expressed exactly:
re-sending the current weights would still trade, because the fill happens at the next open.

Every evaluation replay starts all episodes at the window's first bar, so a policy recovers its bar
index from ``Observation.progress`` (``step_index``); it never sees a bar after ``t``.

Baselines (all long-only, gross 1):

* ``cash``: hold nothing.
* ``buy_and_hold``: equal weight over the listed assets on the first bar, then never an order
  (assets listed later are never bought; delisted ones become cash); a book that has held nothing
  yet, its first buy refused, buys at the first bar it can.
* ``equal_weight``: 1/n of equity in each listed asset on the first bar and the first bar of every
  calendar month; otherwise hold.
* ``inverse_vol``: weights proportional to ``1 / vol_20`` over listed assets with a volatility
  estimate, summing to 1, on the same monthly schedule; cash when no asset has an estimate.
* ``kelly_lite``: ``envs.evaluation.kelly_lite`` re-decided on every bar.

Registry models (``registry:NAME`` or ``registry:NAME@VERSION``) are loaded lazily through
``models.registry_load.load`` when the run starts (an unknown name or version fails then). The
adapter uses ``handle.policy(data)`` (an ``Observation -> weights`` callable over ``data``) when the
handle has it, else ``handle.act(observation)``; either way the model sees a ``MarketData`` and
observations holding only its own feature columns, in its own order (``handle_feature_columns``),
whatever other policies of the run requested. Optional handle members: ``lookback_bars`` (default 1),
``stochastic`` (default False: run once), ``reseed(seed)`` (called before each seed's replay) and
``trained_on(root, store_sha256)`` (what its weights saw: ``envs.evaluation.insample``; without it
the training window is unknown and the report warns that out-of-sample cannot be checked).
The universe a model trained on (``handle_universe``: its ``symbols``, else its manifest's
``data.symbols``) is the evaluation's universe (``envs.evaluation.universe``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from raytrade.envs.baseline_weights import (
    BASELINE_FEATURES,
    baseline_context,
    baseline_decision,
    equal_weights,
)
from raytrade.envs.baseline_weights import inverse_vol_weights as inverse_vol_weights  # re-exported
from raytrade.envs.baseline_weights import month_starts as month_starts  # re-exported
from raytrade.envs.cash_rate import CashRate
from raytrade.envs.evaluation.insample import UNKNOWN, TrainedOn
from raytrade.envs.evaluation.kelly_lite import KellyLiteConfig
from raytrade.envs.market_data import MarketData
from raytrade.envs.registry_ref import RegistryRefError, parse_registry_ref
from raytrade.envs.rollout import Decision
from raytrade.envs.simulator import Observation
from raytrade.replay.errors import InputError


class EvaluationInputError(InputError):
    """Bad evaluation input (unknown policy, missing feature, too short a window); names what is wrong."""


PolicyOutput = np.ndarray | Decision
EvalPolicy = Callable[[Observation], PolicyOutput]
PolicyFactory = Callable[[MarketData, int], EvalPolicy]
TrainedOnFn = Callable[[str, str], TrainedOn]


@dataclass(frozen=True)
class PolicySpec:
    """How to build one named policy for a window, and what it needs from the data."""

    name: str
    kind: str  # "baseline" | "registry"
    make: PolicyFactory  # (window data, seed) -> policy
    feature_columns: tuple[str, ...] = ()
    lookback_bars: int = 1  # bars of the window a decision needs before it is fully informed
    stochastic: bool = False
    manifest: str | None = None  # registry models: path of manifest.json
    trained_on: TrainedOnFn | None = None  # registry models: (store root, its sha256) -> what it saw
    universe: tuple[str, ...] | None = None  # registry models: the symbols it trained on (None: any)
    cash_rate: CashRate | None = None  # registry models: what idle cash earned in training (None: unknown)


BASELINES: Final[tuple[str, ...]] = ("cash", "buy_and_hold", "equal_weight", "inverse_vol", "kelly_lite")
REGISTRY_PREFIX: Final = "registry:"


def step_index(obs: Observation, data: MarketData) -> np.ndarray:
    """Bar index ``[B]`` of each episode of a replay that started at bar 0 of ``data``."""
    return np.rint(obs.progress * (data.n_steps - 1)).astype(np.int64)


def _scheduled(obs: Observation, trade_now: np.ndarray, target: np.ndarray) -> Decision:
    """Trade to ``target`` where ``trade_now [B]``, hold every asset elsewhere."""
    hold = np.broadcast_to(~trade_now[:, None], obs.mask.shape).copy()
    return Decision(weights=np.where(hold, obs.weights, target), hold=hold)


def cash_policy(data: MarketData, seed: int) -> EvalPolicy:
    def policy(obs: Observation) -> PolicyOutput:
        return np.zeros(obs.mask.shape)

    return policy


def buy_and_hold_policy(data: MarketData, seed: int) -> EvalPolicy:
    """Equal weights bought on the first bar, then held; a book that has held nothing yet (the buy
    refused: a walk-forward fold that starts under the kill switch the fold before left on) buys at
    the first bar it can. Before, such a fold never bought and sat a whole year in cash. A book that
    held something and is flat again (everything it bought delisted) stays in cash: it bought once."""
    bought: np.ndarray | None = None  # [B]: held something since the replay's first bar

    def policy(obs: Observation) -> PolicyOutput:
        nonlocal bought
        held = np.any(obs.weights != 0.0, axis=1)
        first = step_index(obs, data) == 0  # a replay (a seed, a scenario path) starts again
        bought = held | (~first & (bought if bought is not None and bought.shape == held.shape else held))
        return _scheduled(obs, ~bought, equal_weights(obs.mask))

    return policy


def _column(data: MarketData, name: str) -> int:
    try:
        return data.feature_names.index(name)
    except ValueError:
        raise EvaluationInputError(f"the evaluation data has no feature column {name!r}") from None


def baseline_factory(name: str, kelly: KellyLiteConfig | None = None) -> PolicyFactory:
    """The policy of baseline ``name`` (``equal_weight``, ``inverse_vol``, ``kelly_lite``): the rule of
    ``envs.baseline_weights`` (shared with the env's tilt mode and serving) at each bar of the replay.
    A decision that holds nothing (``kelly_lite``'s, re-decided every bar, where no symbol is trade
    blocked) is sent as plain weights."""

    def make(data: MarketData, seed: int) -> EvalPolicy:
        for column in BASELINE_FEATURES[name]:
            _column(data, column)
        ctx = baseline_context(name, data, kelly)

        def policy(obs: Observation) -> PolicyOutput:
            t = step_index(obs, data)
            decided = baseline_decision(ctx, t, t == 0, obs.mask, obs.weights)
            if ctx.rebalance.all() and not decided.hold.any():
                return decided.allocation
            return Decision(weights=decided.weights(obs.weights), hold=decided.hold)

        return policy

    return make


def equal_weight_policy(data: MarketData, seed: int) -> EvalPolicy:
    return baseline_factory("equal_weight")(data, seed)


def inverse_vol_policy(data: MarketData, seed: int) -> EvalPolicy:
    return baseline_factory("inverse_vol")(data, seed)


def kelly_lite_factory(cfg: KellyLiteConfig) -> PolicyFactory:
    """``kelly_lite`` with ``cfg``: sigma from ``data.close``, spread value from ``data.spread_bps``
    (the one the simulator charges), missing quote from the store's ``spread_bps`` feature (0 = null)."""
    return baseline_factory("kelly_lite", cfg)


def baseline_spec(name: str, kelly: KellyLiteConfig | None = None) -> PolicySpec:
    """The spec of baseline ``name`` (one of ``BASELINES``)."""
    if name == "cash":
        return PolicySpec(name, "baseline", cash_policy)
    if name == "buy_and_hold":
        return PolicySpec(name, "baseline", buy_and_hold_policy)
    if name == "equal_weight":
        return PolicySpec(name, "baseline", equal_weight_policy)
    if name == "inverse_vol":
        return PolicySpec(name, "baseline", inverse_vol_policy, feature_columns=("vol_20",))
    if name == "kelly_lite":
        cfg = kelly or KellyLiteConfig()
        return PolicySpec(
            name,
            "baseline",
            kelly_lite_factory(cfg),
            feature_columns=cfg.feature_columns(),
            lookback_bars=cfg.kelly_sigma_closes,
        )
    raise EvaluationInputError(
        f"unknown policy {name!r}; baselines are {', '.join(BASELINES)}, registry models "
        f"{REGISTRY_PREFIX}NAME[@VERSION]"
    )


# --------------------------------------------------------------------------- registry adapter


class PolicyHandleLike(Protocol):
    """What the adapter needs of ``models.registry_load.PolicyHandle``: ``policy(data)`` (preferred:
    ``Observation -> weights`` over ``data``) or ``act(observation)``."""

    def act(self, observation: Any) -> Any: ...


Loader = Callable[..., PolicyHandleLike]


def handle_feature_columns(handle: Any, default: Sequence[str]) -> tuple[str, ...]:
    """The feature columns a handle observes, in its order: its ``feature_columns``, else its
    manifest's ``features.observed`` (what ``raytrade promote`` records), else its training env
    config's ``feature_columns``, else ``default`` (the replay loader's defaults)."""
    columns = getattr(handle, "feature_columns", None)
    manifest = getattr(handle, "manifest", None)
    if columns is None and manifest is not None:
        columns = manifest.features.observed
    env_config = getattr(handle, "env_config", None)
    if columns is None and callable(env_config):
        columns = env_config().feature_columns
    return tuple(columns or default)


def handle_universe(handle: Any) -> tuple[str, ...] | None:
    """The symbols a handle trained on, in its asset order: its ``symbols``, else its manifest's
    ``data.symbols`` (what ``raytrade promote`` records and serving restricts to); None when it
    declares neither."""
    symbols = getattr(handle, "symbols", None)
    data = getattr(getattr(handle, "manifest", None), "data", None)
    if symbols is None and data is not None:
        symbols = getattr(data, "symbols", None)
    return None if symbols is None else tuple(str(s) for s in symbols)


def handle_cash_rate(handle: Any) -> CashRate | None:
    """What idle cash earned while a handle trained (its training env config's ``sim.cash_rate``);
    None for a handle without a training env config."""
    env_config = getattr(handle, "env_config", None)
    sim = getattr(env_config(), "sim", None) if callable(env_config) else None
    rate = getattr(sim, "cash_rate", None)
    return rate if isinstance(rate, CashRate) else None


def handle_baseline(handle: Any) -> tuple[tuple[str, ...], int]:
    """A tilt policy's baseline needs (``envs.baseline_weights``): the store columns it reads and the
    bars it looks back (``kelly_lite``'s sigma closes); ``((), 1)`` for an absolute policy or a
    handle without a training env config. The columns travel with the handle's own, after them, so
    the baseline is decided on the same values as in training."""
    env_config = getattr(handle, "env_config", None)
    action = getattr(env_config(), "action", None) if callable(env_config) else None
    name = getattr(action, "baseline", None)
    if action is None or name is None:
        return (), 1
    lookback = action.kelly_lite.kelly_sigma_closes if name == "kelly_lite" else 1
    return BASELINE_FEATURES[name], lookback


def handle_gate(handle: Any) -> tuple[tuple[str, ...], int]:
    """A gated policy's gate needs (``envs.gate``): the store columns it reads and the bars of closes
    its sigma looks back; ``((), 1)`` for any other handle. Without them the gate it is evaluated with
    would not be the one it trained with."""
    from raytrade.envs.config import GatedEnvConfig
    from raytrade.envs.gate import gate_columns, gate_lookback

    env_config = getattr(handle, "env_config", None)
    cfg = env_config() if callable(env_config) else None
    if not isinstance(cfg, GatedEnvConfig):
        return (), 1
    return gate_columns(cfg), gate_lookback(cfg)


def registry_spec(
    ref: str, registry: Path, loader: Loader, default_features: Sequence[str] = ()
) -> PolicySpec:
    """Spec of registry model ``ref`` (``NAME[@VERSION]``), loaded now through ``loader``.

    The handle sees a ``MarketData`` and observations restricted to its own feature columns (plus,
    for a tilt policy, its baseline's, and for a gated policy its gate's, after them), so it indexes
    features exactly as in training whatever else the run loaded.
    """
    try:
        parse_registry_ref(ref)
    except RegistryRefError as exc:
        raise EvaluationInputError(str(exc)) from None
    try:
        handle: Any = loader(ref, registry=registry)
    except (ValueError, FileNotFoundError) as exc:
        raise EvaluationInputError(f"policy {REGISTRY_PREFIX}{ref}: {exc}") from None
    columns = handle_feature_columns(handle, default_features)
    baseline_columns, baseline_lookback = handle_baseline(handle)
    gate_cols, gate_back = handle_gate(handle)
    columns += tuple(c for c in (*baseline_columns, *gate_cols) if c not in columns)
    lookback = max(int(getattr(handle, "lookback_bars", 1) or 1), baseline_lookback, gate_back)
    stochastic = bool(getattr(handle, "stochastic", False))
    path = getattr(handle, "path", None)
    declared = getattr(handle, "trained_on", None)
    trained_on: TrainedOnFn = declared if callable(declared) else lambda root, sha256: UNKNOWN

    def make(data: MarketData, seed: int) -> EvalPolicy:
        idx = np.array([_column(data, c) for c in columns], dtype=np.int64)
        missing = None if data.feature_missing is None else data.feature_missing[..., idx]
        own = replace(data, features=data.features[..., idx], feature_names=columns, feature_missing=missing)
        reseed = getattr(handle, "reseed", None)
        if callable(reseed):
            reseed(seed)
        inner = handle.policy(own) if callable(getattr(handle, "policy", None)) else handle.act

        def policy(obs: Observation) -> PolicyOutput:
            absent = None if obs.missing is None else obs.missing[..., idx]
            out = inner(obs._replace(features=obs.features[..., idx], missing=absent))
            if isinstance(out, Decision):
                return out
            return np.asarray(out, dtype=np.float64).reshape(obs.mask.shape)

        return policy

    return PolicySpec(
        name=f"{REGISTRY_PREFIX}{ref}",
        kind="registry",
        make=make,
        feature_columns=columns,
        lookback_bars=lookback,
        stochastic=stochastic,
        manifest=None if path is None else str(Path(path) / "manifest.json"),
        trained_on=trained_on,
        universe=handle_universe(handle),
        cash_rate=handle_cash_rate(handle),
    )


def resolve_policies(
    names: Sequence[str],
    registry: Path | None,
    kelly: KellyLiteConfig | None = None,
    loader: Loader | None = None,
) -> list[PolicySpec]:
    """Specs for ``names`` in order (duplicates refused), every name checked before any is used."""
    from raytrade.envs.replay_loader import DEFAULT_FEATURES

    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise EvaluationInputError(f"policy {seen[0]!r} is listed twice")
    if not names:
        raise EvaluationInputError("no policies given")
    specs = []
    for name in names:
        if name.startswith(REGISTRY_PREFIX):
            if registry is None:
                raise EvaluationInputError(f"policy {name!r} needs --registry DIR")
            if loader is None:  # the entrypoint passes models.registry_load.load (envs sits below models)
                raise EvaluationInputError(f"policy {name!r} needs a registry loader")
            ref = name.removeprefix(REGISTRY_PREFIX)
            specs.append(registry_spec(ref, registry, loader, DEFAULT_FEATURES))
        else:
            specs.append(baseline_spec(name, kelly))
    return specs
