"""How a weights action becomes orders: absolute target weights, or a bounded tilt around a baseline
allocation; and the optional no-trade band. Pure functions, shared by the env, validation scoring,
evaluation and serving.

Modes (``ActionConfig.mode``):

* ``absolute`` (default): the action ``a in [-1, 1]^N`` is the target weight vector.
* ``tilt:BASELINE`` (``equal_weight``, ``inverse_vol``, ``kelly_lite``; ``envs.baseline_weights``):
  ``target = allocation + max_tilt * a``, so ``|target_i - allocation_i| <= max_tilt`` before the
  constraints, and an asset whose tilt is exactly 0 where the baseline holds sends no order. A zero
  action is therefore the baseline itself, holds included (tested against the evaluation harness's
  run of the baseline); learning is judged by what it adds. A nonzero tilt trades to
  ``allocation + tilt`` on every bar, so a policy that only wants to hold between the baseline's
  rebalances should use the no-trade band. For the gated env the tilt is the gate's signed size
  (``flat`` = 0 = the baseline), clipped to ``max_tilt``.

No-trade band (``no_trade_band``, 0 = off): an asset whose target is within the band of its current
weight sends no order (kept exactly: no trade, no cost), so small rebalances and drift never pay the
spread. It compares the target before the constraints' projection.

Every target, whatever the mode, then goes through the same projection and caps as any action
(the simulator's ``constrained_targets``; serving adds its hard caps).
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.baseline_weights import BaselineDecision, BaselineName
from raytrade.envs.evaluation.kelly_lite import KellyLiteConfig

ActionMode = Literal["absolute", "tilt:equal_weight", "tilt:inverse_vol", "tilt:kelly_lite"]
ACTION_MODES: Final[tuple[str, ...]] = get_args(ActionMode)
TILT_PREFIX: Final = "tilt:"


class ActionConfig(BaseModel):
    """How the env maps a weights action to orders (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: ActionMode = Field("absolute", description="absolute target weights, or tilt:BASELINE")
    max_tilt: float = Field(
        0.1,
        gt=0,
        le=1,
        description="tilt modes: |target - baseline| per symbol at |action| = 1, fraction of equity",
    )
    no_trade_band: float = Field(
        0.0,
        ge=0,
        le=1,
        description="no order where |target - current weight| <= this, fraction of equity (0: off)",
    )
    kelly_lite: KellyLiteConfig = Field(KellyLiteConfig(), description="tilt:kelly_lite's rules (the loop's)")

    @property
    def baseline(self) -> BaselineName | None:
        """The tilt's baseline (None: absolute mode)."""
        if not self.mode.startswith(TILT_PREFIX):
            return None
        return self.mode.removeprefix(TILT_PREFIX)  # type: ignore[return-value]


class Orders(NamedTuple):
    """Target weights ``[B, N]`` before the constraints, and ``hold [B, N]`` (no order: kept exactly)."""

    target: np.ndarray
    hold: np.ndarray


def band_hold(target: np.ndarray, w_now: np.ndarray, band: float) -> np.ndarray:
    """``[B, N]`` True where ``|target - w_now| <= band`` (never with ``band`` 0: the band is off)."""
    if band <= 0:
        return np.zeros(np.shape(target), dtype=bool)
    return np.abs(np.asarray(target, dtype=np.float64) - w_now) <= band


def tilt_orders(cfg: ActionConfig, tilt: np.ndarray, w_now: np.ndarray, baseline: BaselineDecision) -> Orders:
    """Orders of a tilt ``[B, N]`` in weight units (clipped to ``±max_tilt``) around ``baseline``:
    ``allocation + tilt``; held where the baseline holds and the tilt is 0, inside the band, and
    wherever the baseline's symbol is locked (trade blocked), whatever the tilt."""
    bounded = np.clip(np.asarray(tilt, dtype=np.float64), -cfg.max_tilt, cfg.max_tilt)
    target = baseline.allocation + bounded
    hold = (baseline.hold & (bounded == 0)) | band_hold(target, w_now, cfg.no_trade_band)
    if baseline.locked is not None:
        hold = hold | baseline.locked
    return Orders(target, hold)


def weight_orders(
    cfg: ActionConfig, action: np.ndarray, w_now: np.ndarray, baseline: BaselineDecision | None
) -> Orders:
    """Orders of a Box action ``[B, N]`` (clipped to ``[-1, 1]``): the target itself (absolute), or
    ``max_tilt * action`` around ``baseline`` (tilt modes; ``baseline`` is required there)."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    if cfg.baseline is None:
        return Orders(a, band_hold(a, w_now, cfg.no_trade_band))
    if baseline is None:
        raise ValueError(f"action mode {cfg.mode!r} needs the baseline's decision")
    return tilt_orders(cfg, cfg.max_tilt * a, w_now, baseline)
