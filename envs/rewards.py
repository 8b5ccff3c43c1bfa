"""Reward functions on one step's net log growth, selectable by config.

All rewards start from ``g = log(equity_after / equity_before)``, net of every cost. They are pure:
``compute_reward(cfg, g, dd, state) -> (reward, new_state)`` with per-episode state arrays, so a
batch of episodes is one vectorised call.

* ``log_growth`` (default): ``g``. Summed over an episode it is the log of final over initial equity,
  the Kelly objective.
* ``cvar``: ``g - lam * (z + max(0, -g - z) / (1 - alpha))``, the Rockafellar-Uryasev form of
  CVaR_alpha of the loss ``-g``. ``z`` is the running alpha-quantile (VaR) of the loss, updated by
  stochastic approximation after each step; at the true VaR the penalty's expectation is exactly
  ``lam * CVaR_alpha``, and for any ``z`` it is an upper bound (R-U minimise over ``z``).
* ``drawdown``: ``g - lam * max(0, dd_t - dd_{t-1})``: only a deepening drawdown is penalised, so the
  episode's total penalty is at least ``lam`` times its maximum drawdown.
* ``diff_sharpe``: Moody & Saffell (1998) differential Sharpe ratio with EMA rate ``eta``:
  ``D_t = (B ΔA - A ΔB / 2) / (B - A^2)^{3/2}`` with ``A, B`` the EMAs of ``g`` and ``g^2`` before the
  update; 0 while the EMA variance is not yet positive.

Turnover penalty (any kind, off by default): ``turnover_penalty * turnover`` is subtracted, with
``turnover = sum_i |traded notional_i| / equity before the trade`` (``turnover_of``), so a policy pays
in reward for trading beyond what the cost model already charges (costs are in ``g``). ``scale``
multiplies it like every other term. The traded notional includes a delisting's forced sale (the
simulator's ``traded_notional``), as an evaluation window's closing exit is in its turnover: holding
a name into its last bar is trading it there.

Optional cost-overrun term (any kind; off while ``cost_overrun_lambda`` is 0): the simulator
subtracts ``scale * cost_overrun_lambda * overrun / equity_before``, with ``overrun`` the step's
trade costs above the projected envelope (``envs.costs.cost_overrun``): ``cost_envelope_bps_*`` per
unit traded, by default the loop's expected cost (6 bps stocks, 20 bps crypto) that its edge gate
projects. A trade that cost more than the decision assumed (an illiquid name, a wide spread, a
large participation) is penalised beyond its cost, which the log growth already counts once; a
delisting's forced sale counts as a trade here too.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.replay.loop_rules import LoopRules

RewardKind = Literal["log_growth", "cvar", "drawdown", "diff_sharpe"]
_LOOP = LoopRules()


class RewardConfig(BaseModel):
    """Which reward and its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RewardKind = Field("log_growth", description="reward function")
    cvar_alpha: float = Field(0.95, gt=0, lt=1, description="CVaR confidence level")
    cvar_lambda: float = Field(0.1, ge=0, description="weight of the CVaR penalty")
    cvar_quantile_lr: float = Field(0.01, gt=0, description="step of the running-VaR update")
    drawdown_lambda: float = Field(1.0, ge=0, description="weight of the drawdown-increase penalty")
    sharpe_eta: float = Field(0.01, gt=0, lt=1, description="EMA rate of the differential Sharpe")
    scale: float = Field(1.0, gt=0, description="multiplies the reward (e.g. 100 for percent units)")
    turnover_penalty: float = Field(
        0.0, ge=0, description="reward penalty per unit turnover (traded notional / equity; 0: off)"
    )
    cost_overrun_lambda: float = Field(
        0.0, ge=0, description="weight of the cost-overrun penalty (fraction of equity; 0: off)"
    )
    cost_envelope_bps_equity: float = Field(
        _LOOP.expected_cost_bps_equity, ge=0, description="projected cost per unit traded, bps, stocks"
    )
    cost_envelope_bps_crypto: float = Field(
        _LOOP.expected_cost_bps_crypto, ge=0, description="projected cost per unit traded, bps, crypto"
    )


class RewardState(NamedTuple):
    """Per-episode reward state (shape ``[B]``)."""

    var_z: np.ndarray  # running VaR of the loss -g (cvar)
    prev_dd: np.ndarray  # drawdown after the previous step (drawdown)
    ema_a: np.ndarray  # EMA of g (diff_sharpe)
    ema_b: np.ndarray  # EMA of g^2 (diff_sharpe)


def init_reward_state(n: int) -> RewardState:
    """All-zero state for ``n`` episodes."""
    z = np.zeros(n)
    return RewardState(z.copy(), z.copy(), z.copy(), z.copy())


def turnover_of(traded_notional: np.ndarray, equity_before: np.ndarray) -> np.ndarray:
    """``[B]`` traded notional ``[B, N]`` summed in absolute value over the equity before the trade
    (0 where that equity is not positive: a ruined account trades nothing)."""
    live = equity_before > 0
    return np.where(live, np.abs(traded_notional).sum(-1) / np.where(live, equity_before, 1.0), 0.0)


def turnover_penalty(coefficient: float, turnover: np.ndarray) -> np.ndarray:
    """``coefficient * turnover``: what a step's trading costs in reward (before ``scale``)."""
    return coefficient * np.asarray(turnover, dtype=np.float64)


def compute_reward(
    cfg: RewardConfig,
    log_growth: np.ndarray,
    dd: np.ndarray,
    state: RewardState,
    turnover: np.ndarray | None = None,
    cash_log_growth: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, RewardState]:
    """Reward for one step of every episode and the updated state; ``turnover [B]`` (``turnover_of``)
    is required when ``cfg.turnover_penalty`` is set. ``cash_log_growth`` (``[B]`` or a scalar) is the
    log growth cash earned over the step (``envs.cash_rate``): the differential Sharpe ratio is of the
    growth over it, as a Sharpe ratio is (a book in cash at a positive rate would otherwise have a
    steady growth whose Sharpe, and reward, grow without bound)."""
    reward, new_state = _base_reward(cfg, log_growth, dd, state, cash_log_growth)
    if cfg.turnover_penalty == 0:
        return reward, new_state
    if turnover is None:
        raise ValueError(f"reward.turnover_penalty={cfg.turnover_penalty} needs the step's turnover")
    return reward - cfg.scale * turnover_penalty(cfg.turnover_penalty, turnover), new_state


def _base_reward(
    cfg: RewardConfig,
    log_growth: np.ndarray,
    dd: np.ndarray,
    state: RewardState,
    cash_log_growth: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, RewardState]:
    g = log_growth
    if cfg.kind == "log_growth":
        return cfg.scale * g, state._replace(prev_dd=dd)
    if cfg.kind == "cvar":
        loss = -g
        z = state.var_z
        penalty = z + np.maximum(loss - z, 0.0) / (1.0 - cfg.cvar_alpha)
        new_z = z + cfg.cvar_quantile_lr * ((loss > z).astype(np.float64) - (1.0 - cfg.cvar_alpha))
        return cfg.scale * (g - cfg.cvar_lambda * penalty), state._replace(var_z=new_z, prev_dd=dd)
    if cfg.kind == "drawdown":
        penalty = np.maximum(dd - state.prev_dd, 0.0)
        return cfg.scale * (g - cfg.drawdown_lambda * penalty), state._replace(prev_dd=dd)
    g = g - cash_log_growth  # the differential Sharpe ratio is of the growth over cash's
    a, b = state.ema_a, state.ema_b
    da, db = g - a, g * g - b
    var = b - a * a
    pos = var > 1e-18
    d = np.where(pos, (b * da - 0.5 * a * db) / np.where(pos, var, 1.0) ** 1.5, 0.0)
    eta = cfg.sharpe_eta
    new = state._replace(ema_a=a + eta * da, ema_b=b + eta * db, prev_dd=dd)
    return cfg.scale * d, new
