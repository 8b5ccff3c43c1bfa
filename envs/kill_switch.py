"""Drawdown kill switch: force unwind-only trading after a drawdown until a recovery rule lifts it.

Contract
--------
* State per episode: running equity ``peak``, ``active`` flag, ``bars_active`` (bars since it tripped).
* It trips at a bar's close when ``1 - equity / peak >= trigger_drawdown`` (within
  :data:`TRIGGER_TOLERANCE`: a drawdown of exactly the trigger, 60,000 after a 75,000 peak against
  20 %, computes as 0.19999999999999996 and trips).
* While active, every asset's position may only shrink toward zero: ``|w_i|`` never grows and never
  changes sign (:func:`unwind_bounds` states the box the projection enforces, which the compiled step
  ``envs.step_kernel`` applies; the simulator also clips the resulting units so a price gap between
  close and the next open cannot grow a position).
* It is lifted at a close when the drawdown is back within ``release_drawdown`` of the peak, or after
  ``release_after_bars`` bars, whichever comes first (either rule can be disabled with ``None``). On a
  time-based release the peak is reset to the current equity (``reset_peak_on_release``), otherwise
  the switch would trip again at the very next bar.

The state is part of the observation, so a policy can learn what the switch does.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.kernel_cache import use_kernel_cache

use_kernel_cache()  # before any kernel compiles: the cache is keyed on every kernel module

TRIGGER_TOLERANCE = 1e-9
"""A drawdown this close below the trigger trips the switch (:func:`tripped`): float rounding of
``1 - equity / peak`` must not keep it off at exactly the threshold."""


def tripped(drawdown: np.ndarray | float, trigger: float) -> np.ndarray | bool:
    """Whether ``drawdown`` (a fraction of the peak, >= 0) reaches ``trigger``, float rounding aside."""
    return np.asarray(drawdown) >= trigger - TRIGGER_TOLERANCE


class KillSwitchConfig(BaseModel):
    """Drawdown kill-switch rule; drawdowns are fractions of peak equity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="turn the switch off entirely")
    trigger_drawdown: float = Field(0.20, gt=0, le=1, description="drawdown that trips it")
    release_drawdown: float | None = Field(
        0.05, ge=0, le=1, description="lift when the drawdown is back to at most this (None: never)"
    )
    release_after_bars: int | None = Field(20, ge=1, description="lift after this many bars (None: never)")
    reset_peak_on_release: bool = Field(True, description="restart the peak at equity on a timed release")


class KillSwitchState(NamedTuple):
    """Per-episode arrays (shape ``[B]``)."""

    peak: np.ndarray
    active: np.ndarray
    bars_active: np.ndarray


def init_kill_switch(equity: np.ndarray) -> KillSwitchState:
    """Fresh state: peak at the starting equity, switch off."""
    b = equity.shape[0]
    return KillSwitchState(
        peak=equity.astype(np.float64).copy(),
        active=np.zeros(b, dtype=bool),
        bars_active=np.zeros(b, dtype=np.int64),
    )


def drawdown(equity: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """``1 - equity / peak`` in [0, ...); 0 at a new high."""
    return np.maximum(1.0 - equity / peak, 0.0)


def update_kill_switch(state: KillSwitchState, equity: np.ndarray, cfg: KillSwitchConfig) -> KillSwitchState:
    """Advance the switch one bar given the bar's closing equity (pure; returns a new state)."""
    if not cfg.enabled:
        peak = np.maximum(state.peak, equity)
        return KillSwitchState(peak, np.zeros_like(state.active), np.zeros_like(state.bars_active))
    peak, active, bars = _advance(
        np.ascontiguousarray(state.peak, dtype=np.float64),
        np.ascontiguousarray(state.active, dtype=np.bool_),
        np.ascontiguousarray(state.bars_active, dtype=np.int64),
        np.ascontiguousarray(equity, dtype=np.float64),
        cfg.trigger_drawdown,
        cfg.release_drawdown is not None,
        cfg.release_drawdown if cfg.release_drawdown is not None else 0.0,
        cfg.release_after_bars if cfg.release_after_bars is not None else 0,
        cfg.reset_peak_on_release,
    )
    return KillSwitchState(peak=peak, active=active, bars_active=bars)


@numba.njit(cache=True, nogil=True)
def _advance(  # pragma: no cover (compiled; covered through update_kill_switch)
    peak: np.ndarray,
    active: np.ndarray,
    bars: np.ndarray,
    equity: np.ndarray,
    trigger: float,
    has_release_drawdown: bool,
    release_drawdown: float,
    release_after_bars: int,
    reset_peak_on_release: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One bar of the rule per episode (``release_after_bars`` 0: never by time). A switch released
    this bar stays off until the next; a newly tripped one starts counting at 0."""
    b = peak.shape[0]
    peak_out, active_out, bars_out = np.empty(b), np.empty(b, dtype=np.bool_), np.zeros(b, dtype=np.int64)
    for i in range(b):
        p = max(peak[i], equity[i])
        dd = max(1.0 - equity[i] / p, 0.0) if p > 0.0 else 1.0  # ruined, peak reset to 0: all lost
        if active[i]:
            counted = bars[i] + 1
            by_time = release_after_bars > 0 and counted >= release_after_bars
            released = by_time or (has_release_drawdown and dd <= release_drawdown)
            active_out[i] = not released
            bars_out[i] = 0 if released else counted
            if released and by_time and reset_peak_on_release:
                p = equity[i]
        else:
            active_out[i] = dd >= trigger - TRIGGER_TOLERANCE
        peak_out[i] = p
    return peak_out, active_out, bars_out


def unwind_bounds(
    weights_now: np.ndarray, lower: np.ndarray, upper: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tighten the box ``[lower, upper]`` to unwind-only for episodes where the switch is ``active``."""
    act = active[:, None]
    lo = np.where(act, np.maximum(lower, np.minimum(weights_now, 0.0)), lower)
    hi = np.where(act, np.minimum(upper, np.maximum(weights_now, 0.0)), upper)
    return lo, hi
