"""gymnasium environments over the vectorised simulator, buildable from a plain ``env_config`` dict.

* ``raytrade/PortfolioEnv-v0`` (:class:`PortfolioEnv`, vector form :class:`PortfolioVectorEnv`):
  action ``Box(-1, 1, (N,))`` target weights, projected onto the constraints by the simulator; or,
  with ``action.mode`` ``tilt:BASELINE``, a tilt of at most ``action.max_tilt`` per symbol around
  that baseline's allocation (zero action = the baseline; ``envs.actions``). ``action.no_trade_band``
  leaves targets within the band of the current weight untraded (both envs).
* ``raytrade/GatedSymbolEnv-v0`` (:class:`GatedSymbolEnv`, :class:`GatedSymbolVectorEnv`): per symbol
  a gate mode (0 flat, 1 probe, 2 passive, 3 aggressive), a side (0 long, 1 short) and a sizing
  level ``k`` (the chosen mode's sizing head's), as ``MultiDiscrete([4, 2, K] * N)``, ``K =
  size_levels``. Flat targets 0; the other modes ``(k + 1) / K`` of their cap: probe of
  ``probe_weight``, passive and aggressive of the contract's ``kelly_lite = min(kelly_cap, max(0,
  kelly_scale * |edge| / sigma^2))`` with sigma from the last 7 closes (``envs.gate``). A passive
  order fills with probability ``passive_fill_prob`` (else the position is left as it was) and pays
  ``passive_spread_mult`` of the half spread (negative: earned) and ``passive_slippage_mult`` of
  slippage; aggressive pays full cost. The gated observation appends one raw channel to the
  features: 1 where the contract's gate is open at that bar, else 0 (``envs.gate``), which the
  gating policy uses to make passive and aggressive impossible where it is closed.

Observation (both): ``Dict(features Box(N, F), weights Box(N), mask Box(N) in {0, 1}, portfolio
Box(5) = [cash fraction, drawdown, kill-switch active, kill-switch bars / release bars, 0])``,
or the same concatenated into one flat ``Box`` when ``flat_obs``. The fifth value was the episode's
progress; it is encoded as 0 everywhere (:data:`PROGRESS_SLOT`): a live account has no episode, so
serving could only ever show 0, and a policy that learned from it was scored on a signal it never has
when it trades (a replay or a recorded episode from a window's first bar made it a calendar index).
With ``normalizer`` set, ``features`` holds the normalised columns plus one fraction-missing channel
(``Box(N, F + 1)``).

The vector forms step all episodes in one simulator call and use gymnasium's next-step autoreset
(what RLlib's env runners expect). RLlib: ``tune.register_env(name, make_portfolio_env)``; the creator
returns the vector form when RLlib adds ``num_envs`` (``gym_env_vectorize_mode="vector_entry_point"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from raytrade.envs.actions import Orders, band_hold, tilt_orders, weight_orders
from raytrade.envs.baseline_weights import BaselineDecision, baseline_context, baseline_decision
from raytrade.envs.config import GatedEnvConfig, PortfolioEnvConfig
from raytrade.envs.costs import COST_COMPONENTS
from raytrade.envs.gate import GateState, contract_gate
from raytrade.envs.gate_modes import GATE_MODES, LIMIT_GATE_MODES
from raytrade.envs.market_data import MarketData
from raytrade.envs.normalization import FeatureNormalizer
from raytrade.envs.simulator import MarketSimulator, Observation
from raytrade.envs.synthetic_market import market_data_from_config

PORTFOLIO_ENV_ID = "raytrade/PortfolioEnv-v0"
GATED_ENV_ID = "raytrade/GatedSymbolEnv-v0"
N_PORTFOLIO_STATE = 5
PROGRESS_SLOT = 4
"""The portfolio state's index that held the episode's progress, encoded as 0 for training, scoring,
evaluation, recorded experience and serving alike (module doc); the slot stays, so every stored
observation and registry version keeps its layout. ``replay.experience.read_transitions``' reader
zeroes it in experience recorded before (``zeroed_state``)."""
_LIMIT_MODE_INDEX = sorted(GATE_MODES.index(m) for m in LIMIT_GATE_MODES)  # modes placed as limit orders
GATE_ACTION_FIELDS = 3  # per symbol: mode, side, sizing level
_BIG = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------------------ shared pieces


def feature_index(data: MarketData, columns: tuple[str, ...] | None) -> np.ndarray:
    """Indices of the requested feature columns; a missing one is an error that names it."""
    if columns is None:
        return np.arange(len(data.feature_names))
    missing = [c for c in columns if c not in data.feature_names]
    if missing:
        raise ValueError(
            f"feature column(s) {missing} missing from the data; available: {list(data.feature_names)}"
        )
    return np.array([data.feature_names.index(c) for c in columns], dtype=np.int64)


def observed_width(n_columns: int, normalizer: FeatureNormalizer | None, gated: bool = False) -> int:
    """Feature channels per asset in the observation: the columns, plus the fraction-missing channel
    when a normalizer is set (``envs.normalization``), plus the gate channel of the gated env."""
    return n_columns + (1 if normalizer is not None else 0) + (1 if gated else 0)


def _observation_space(n: int, f: int, flat: bool) -> spaces.Space[Any]:
    """Unbounded in effect (features are raw; weights drift), but finite so checkers accept it."""
    feats = spaces.Box(-_BIG, _BIG, (n, f), np.float32)
    weights = spaces.Box(-_BIG, _BIG, (n,), np.float32)
    mask = spaces.Box(0.0, 1.0, (n,), np.float32)
    port = spaces.Box(-_BIG, _BIG, (N_PORTFOLIO_STATE,), np.float32)
    if flat:
        return spaces.Box(-_BIG, _BIG, (n * f + 2 * n + N_PORTFOLIO_STATE,), np.float32)
    return spaces.Dict({"features": feats, "weights": weights, "mask": mask, "portfolio": port})


def batched_observation(
    ob: Observation,
    feat_idx: np.ndarray | None,
    release_bars: int | None,
    flat: bool,
    normalizer: FeatureNormalizer | None = None,
    gate: np.ndarray | None = None,
) -> Any:
    """Observation arrays with a leading batch dimension ``[B, ...]`` (float32).

    ``feat_idx`` selects feature columns (:func:`feature_index`); None takes them all, in order.
    ``normalizer`` (the env config's, fitted on the training window) normalises them and appends the
    fraction-missing channel (``envs.normalization``); ``gate [B, N]`` (the gated env's, 1 open / 0
    closed, ``envs.gate``) is appended raw after them as the last channel. This is the one place
    observations are encoded, for training, scoring, evaluation and serving alike. The flat form is
    written into one preallocated array (features, weights, mask, portfolio state, in that order);
    it is the hot path of RLlib sampling.
    """
    feats = encoded_features(ob.features, ob.missing, feat_idx, normalizer, gate)
    return observation_with(feats, ob, release_bars, flat)


def encoded_features(
    features: np.ndarray,
    missing: np.ndarray | None,
    feat_idx: np.ndarray | None,
    normalizer: FeatureNormalizer | None = None,
    gate: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`batched_observation`'s per-asset channels ``[B, N, F']`` from ``features [B, N, F]``
    (and ``missing``, ``gate [B, N]``): the columns selected, normalised, the gate appended. Each row
    is a function of its own inputs alone (a bar's rows are the same in any batch), so a service can
    encode a bar once and reuse it (``serve.decide``)."""
    feats = features if feat_idx is None else features[:, :, feat_idx]
    if normalizer is not None:
        missing = missing if missing is None or feat_idx is None else missing[:, :, feat_idx]
        feats = normalizer.apply(feats, missing)
    if gate is not None:
        feats = np.concatenate([feats, np.asarray(gate, dtype=feats.dtype)[..., None]], axis=-1)
    return feats


def observation_with(feats: np.ndarray, ob: Observation, release_bars: int | None, flat: bool) -> Any:
    """:func:`batched_observation` with its per-asset channels ``feats`` already encoded
    (:func:`encoded_features` of ``ob``'s features)."""
    b, n = feats.shape[:2]
    denom = float(release_bars) if release_bars else 1.0
    if flat:
        nf = n * feats.shape[-1]
        out = np.empty((b, nf + 2 * n + N_PORTFOLIO_STATE), dtype=np.float32)
        out[:, :nf] = feats.reshape(b, -1)
        out[:, nf : nf + n] = ob.weights
        out[:, nf + n : nf + 2 * n] = ob.mask
        tail = out[:, nf + 2 * n :]
        tail[:, 0], tail[:, 1], tail[:, 2] = ob.cash_fraction, ob.drawdown, ob.kill_active
        tail[:, 3], tail[:, PROGRESS_SLOT] = ob.kill_bars / denom, 0.0
        return out
    zero = np.zeros_like(ob.cash_fraction)
    port = np.stack([ob.cash_fraction, ob.drawdown, ob.kill_active, ob.kill_bars / denom, zero], axis=-1)
    port = port.astype(np.float32)
    return {
        "features": np.ascontiguousarray(feats, dtype=np.float32),
        "weights": ob.weights.astype(np.float32),
        "mask": ob.mask.astype(np.float32),
        "portfolio": port,
    }


def _unbatch(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: v[0] for k, v in obs.items()}
    return obs[0]


class GateOrders(NamedTuple):
    """Gate actions decoded per symbol: ``mode`` (index into ``GATE_MODES``), ``side`` (0 long, 1
    short), sizing ``level`` and the signed ``target`` weight before the constraints, all ``[B, N]``."""

    mode: np.ndarray
    side: np.ndarray
    level: np.ndarray
    target: np.ndarray


def gate_action_space(n_assets: int, size_levels: int) -> spaces.MultiDiscrete:
    """``MultiDiscrete([4, 2, size_levels] * N)``: mode, side, sizing level per symbol."""
    return spaces.MultiDiscrete(np.tile(np.array([len(GATE_MODES), 2, size_levels]), n_assets))


def gate_orders(actions: np.ndarray, kelly: np.ndarray, cfg: GatedEnvConfig) -> GateOrders:
    """Decode ``MultiDiscrete([4, 2, K] * N)`` actions ``[B, 3N]`` with the contract's kelly fraction
    ``kelly [B, N]`` at the bar the decision sees (``GateState.kelly``): flat 0, probe ``(k + 1) / K``
    of ``probe_weight``, passive / aggressive ``(k + 1) / K`` of ``kelly``."""
    b, n = actions.shape[0], kelly.shape[-1]
    fields = np.asarray(actions).reshape(b, n, GATE_ACTION_FIELDS)
    mode, side, level = fields[..., 0], fields[..., 1], fields[..., 2]
    fraction = (np.clip(level, 0, cfg.size_levels - 1) + 1.0) / cfg.size_levels
    cap = np.select([mode == 1, mode >= 2], [np.full(kelly.shape, cfg.probe_weight), kelly], 0.0)
    size = fraction * cap
    return GateOrders(mode=mode, side=side, level=level, target=np.where(side == 1, -size, size))


class ActionDecoder:
    """Turns a batch of actions into simulator orders (target weights + execution parameters).

    ``cfg.action`` (``envs.actions``) says how: absolute weights or a tilt around a baseline
    (``envs.baseline_weights``, decided at the simulator's bar with an episode's first step always
    trading), and the no-trade band; a held asset is an unfilled order (kept exactly, no cost).
    """

    def __init__(self, cfg: PortfolioEnvConfig, data: MarketData, sim: MarketSimulator):
        self.n = data.n_assets
        self.gated = isinstance(cfg, GatedEnvConfig)
        self.gate: GateState | None = None
        if isinstance(cfg, GatedEnvConfig):
            self.gate = contract_gate(data, cfg)
            self.gcfg = cfg
            self.bars = (data.open, data.close)  # where resting passive orders fill (passive_fills)
        self.action = cfg.action
        name = cfg.action.baseline
        self.baseline = None if name is None else baseline_context(name, data, cfg.action.kelly_lite)
        self.plain = name is None and cfg.action.no_trade_band == 0  # absolute, no band: no holds
        self.sim = sim

    def _baseline(self) -> BaselineDecision | None:
        if self.baseline is None:
            return None
        sim = self.sim
        return baseline_decision(self.baseline, sim.t, sim.steps == 0, sim.data.listed[sim.t], sim.weights())

    def _tilted(self, target: np.ndarray) -> Orders:
        """Orders of a gate's signed sizes: a tilt around the baseline, or absolute (band only)."""
        w_now, base = self.sim.weights(), self._baseline()
        if base is None:
            return Orders(target, band_hold(target, w_now, self.action.no_trade_band))
        return tilt_orders(self.action, target, w_now, base)

    def action_space(self) -> spaces.Space[Any]:
        if self.gated:
            return gate_action_space(self.n, self.gcfg.size_levels)
        return spaces.Box(-1.0, 1.0, (self.n,), np.float32)

    def gate_channel(self) -> np.ndarray | None:
        """The gated observation's gate channel ``[B, N]`` at each episode's bar (None: not gated)."""
        return None if self.gate is None else self.gate.open[self.sim.t]

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Any:
        a = np.asarray(actions)
        if not self.gated:
            if self.plain:
                return self.sim.step(np.clip(a.astype(np.float64), -1.0, 1.0), active=active)
            out = weight_orders(self.action, a, self.sim.weights(), self._baseline())
            return self.sim.step(out.target, fill=~out.hold, active=active)
        assert self.gate is not None
        orders = gate_orders(a, self.gate.kelly[self.sim.t], self.gcfg)
        cfg, b, mode, target = self.gcfg, a.shape[0], orders.mode, orders.target
        passive = np.isin(mode, _LIMIT_MODE_INDEX)
        if not self.plain:
            out = self._tilted(target)
            target, hold = out.target, out.hold
        else:
            hold = np.zeros((b, self.n), dtype=bool)
        through = passive_fills(target > self.sim.weights(), *self.bars, self.sim.t + 1)
        fill = (~passive | (through & (self.sim.rng.random((b, self.n)) < cfg.passive_fill_prob))) & ~hold
        spread_mult = np.where(passive, cfg.passive_spread_mult, 1.0)
        slip_mult = np.where(passive, cfg.passive_slippage_mult, 1.0)
        return self.sim.step(
            target, fill=fill, spread_mult=spread_mult, slippage_mult=slip_mult, active=active
        )


def passive_fills(buy: np.ndarray, open_: np.ndarray, close: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """``[B, N]``: where a passive order resting through bar ``t1`` (one per episode) can fill: a buy
    on a bar that closes below its open, a sell on one that closes above (the price came to the
    resting order). Why: a passive order fills when the market moves against it, so a fill chance
    independent of the next bar's move would credit the policy with fills it would not get on the
    bars that moved its way (no adverse selection). ``buy``: the order raises the weight."""
    move = close[t1] - open_[t1]
    return np.where(buy, move < 0, move > 0)


def _build(
    env_config: Mapping[str, Any] | None,
    data: MarketData | None,
    config_cls: type[PortfolioEnvConfig],
    n_envs: int | None,
) -> tuple[PortfolioEnvConfig, MarketData, MarketSimulator, ActionDecoder, np.ndarray | None, int]:
    """Validate the config and build data, simulator and decoder (all errors raised here).

    Also returns the observed feature columns (None: all of them, in order) and their count.
    """
    cfg = config_cls.model_validate(dict(env_config or {}))
    market = data if data is not None else market_data_from_config(cfg.data)
    feat_idx = feature_index(market, cfg.feature_columns)
    every = np.array_equal(feat_idx, np.arange(len(market.feature_names)))
    sim = MarketSimulator(market, cfg.sim, n_envs=n_envs or cfg.num_envs, seed=cfg.seed)
    f = observed_width(feat_idx.size, cfg.normalizer, gated=isinstance(cfg, GatedEnvConfig))
    return cfg, market, sim, ActionDecoder(cfg, market, sim), None if every else feat_idx, f


def _costs_info(costs: np.ndarray) -> dict[str, float]:
    return {name: float(costs[i]) for i, name in enumerate(COST_COMPONENTS)}


# ------------------------------------------------------------------------------------ single envs


class PortfolioEnv(gym.Env[Any, np.ndarray]):
    """One episode at a time over the simulator (B = 1, the live path)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)
    config_cls: type[PortfolioEnvConfig] = PortfolioEnvConfig

    def __init__(self, env_config: Mapping[str, Any] | None = None, data: MarketData | None = None):
        self.cfg, self.data, self.sim, self._decoder, self._feat_idx, f = _build(
            env_config, data, self.config_cls, n_envs=1
        )
        n = self.data.n_assets
        self.observation_space = _observation_space(n, f, self.cfg.flat_obs)
        self.action_space = self._decoder.action_space()
        self._seeded = False

    def _obs(self) -> Any:
        rb = self.cfg.sim.kill_switch.release_after_bars
        ob = self.sim.observe()
        gate = self._decoder.gate_channel()
        return _unbatch(
            batched_observation(ob, self._feat_idx, rb, self.cfg.flat_obs, self.cfg.normalizer, gate)
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.sim.reset(seed=seed)
        else:
            self.sim.reset_envs(np.ones(1, dtype=bool))
        return self._obs(), {"equity": float(self.sim.equity[0])}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        res = self._decoder.step(np.asarray(action)[None])
        done = bool(res.terminated[0] or res.truncated[0])
        info: dict[str, Any] = {
            "equity": float(res.equity[0]),
            "log_growth": float(res.log_growth[0]),
            "costs": _costs_info(res.costs[0]),
            "target_weights": res.target_weights[0],
        }
        if done:
            info["episode_costs"] = _costs_info(self.sim.episode_costs[0])
        return self._obs(), float(res.reward[0]), bool(res.terminated[0]), bool(res.truncated[0]), info


class GatedSymbolEnv(PortfolioEnv):
    """Per-symbol gate modes (flat / probe / passive / aggressive) and side, kelly-sized."""

    config_cls = GatedEnvConfig


# ------------------------------------------------------------------------------------ vector envs


class PortfolioVectorEnv(VectorEnv[Any, np.ndarray, np.ndarray]):
    """``num_envs`` episodes stepped by one simulator call; next-step autoreset."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012
    config_cls: type[PortfolioEnvConfig] = PortfolioEnvConfig

    def __init__(
        self,
        env_config: Mapping[str, Any] | None = None,
        num_envs: int | None = None,
        data: MarketData | None = None,
    ):
        cfg_dict = dict(env_config or {})
        n_envs = num_envs if num_envs is not None else cfg_dict.pop("num_envs", None)
        cfg_dict.pop("num_envs", None)
        self.cfg, self.data, self.sim, self._decoder, self._feat_idx, f = _build(
            cfg_dict, data, self.config_cls, n_envs=n_envs
        )
        self.num_envs = self.sim.n_envs
        n = self.data.n_assets
        self.single_observation_space = _observation_space(n, f, self.cfg.flat_obs)
        self.single_action_space = self._decoder.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def _obs(self) -> Any:
        rb = self.cfg.sim.kill_switch.release_after_bars
        ob = self.sim.observe()
        gate = self._decoder.gate_channel()
        return batched_observation(ob, self._feat_idx, rb, self.cfg.flat_obs, self.cfg.normalizer, gate)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.sim.reset(seed=seed)
        else:
            self.sim.reset_envs(np.ones(self.num_envs, dtype=bool))
        self._autoreset[:] = False
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        ar = self._autoreset
        if ar.any():
            self.sim.reset_envs(ar)
            res = self._decoder.step(actions, active=~ar)
        else:
            res = self._decoder.step(actions)
        reward = np.where(ar, 0.0, res.reward)
        terminated = res.terminated & ~ar
        truncated = res.truncated & ~ar
        self._autoreset = terminated | truncated
        return self._obs(), reward, terminated, truncated, self._info(res.costs, ~ar, self._autoreset)

    def _info(self, costs: np.ndarray, stepped: np.ndarray, done: np.ndarray) -> dict[str, Any]:
        """Gymnasium vector info: episode costs where an episode ended, step costs if asked.

        Keys appear only when they carry something: RLlib splits every key per sub-env on every
        step, which costs more than the simulator step itself at small batch sizes.
        """
        info: dict[str, Any] = {}
        if self.cfg.step_info:
            info["equity"], info["_equity"] = self.sim.equity.copy(), np.ones(self.num_envs, bool)
            for i, name in enumerate(COST_COMPONENTS):
                info[f"cost_{name}"] = np.where(stepped, costs[:, i], 0.0)
                info[f"_cost_{name}"] = stepped
        if done.any():
            for i, name in enumerate(COST_COMPONENTS):
                info[f"episode_cost_{name}"] = np.where(done, self.sim.episode_costs[:, i], 0.0)
                info[f"_episode_cost_{name}"] = done
        return info


class GatedSymbolVectorEnv(PortfolioVectorEnv):
    """Vector form of :class:`GatedSymbolEnv`."""

    config_cls = GatedEnvConfig


# ------------------------------------------------------------------------------------ registration


def make_portfolio_env(env_config: Mapping[str, Any] | None = None) -> PortfolioEnv | PortfolioVectorEnv:
    """RLlib env creator: the vector form when RLlib passes ``num_envs`` (vector entry point)."""
    if env_config is not None and "num_envs" in env_config:
        return PortfolioVectorEnv(env_config)
    return PortfolioEnv(env_config)


def make_gated_env(env_config: Mapping[str, Any] | None = None) -> PortfolioEnv | PortfolioVectorEnv:
    """RLlib env creator for the gated env (vector form when ``num_envs`` is passed)."""
    if env_config is not None and "num_envs" in env_config:
        return GatedSymbolVectorEnv(env_config)
    return GatedSymbolEnv(env_config)


def register_envs() -> None:
    """Register both envs with gymnasium (idempotent)."""
    for env_id, single, vector in (
        (
            PORTFOLIO_ENV_ID,
            "raytrade.envs.gym_envs:PortfolioEnv",
            "raytrade.envs.gym_envs:PortfolioVectorEnv",
        ),
        (
            GATED_ENV_ID,
            "raytrade.envs.gym_envs:GatedSymbolEnv",
            "raytrade.envs.gym_envs:GatedSymbolVectorEnv",
        ),
    ):
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=single, vector_entry_point=vector)


register_envs()
