"""Drawdown kill switch: force unwind-only trading after a drawdown until a recovery rule lifts it.

Contract
--------
* State per episode: running equity ``peak``, ``active`` flag, ``bars_active`` (bars since it tripped).
* It trips at a bar's close when ``1 - equity / peak >= trigger_drawdown``.
* While active, every asset's position may only shrink toward zero: ``|w_i|`` never grows and never
  changes sign (:func:`unwind_bounds` gives the box the projection enforces; the simulator also clips
  the resulting units so a price gap between close and the next open cannot grow a position).
* It is lifted at a close when the drawdown is back within ``release_drawdown`` of the peak, or after
  ``release_after_bars`` bars, whichever comes first (either rule can be disabled with ``None``). On a
  time-based release the peak is reset to the current equity (``reset_peak_on_release``), otherwise
  the switch would trip again at the very next bar.

The state is part of the observation, so a policy can learn what the switch does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


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
    peak = np.maximum(state.peak, equity)
    if not cfg.enabled:
        return KillSwitchState(peak, np.zeros_like(state.active), np.zeros_like(state.bars_active))
    dd = drawdown(equity, peak)
    was = state.active
    trips = dd >= cfg.trigger_drawdown
    if not was.any() and not trips.any():
        return KillSwitchState(peak=peak, active=was, bars_active=state.bars_active)  # all off
    bars = (state.bars_active + 1) * was  # bars since tripping, counting this one (0 where off)
    after = cfg.release_after_bars
    by_time = bars >= after if after is not None else np.zeros_like(was)
    release = by_time | (dd <= cfg.release_drawdown) if cfg.release_drawdown is not None else by_time
    release &= was
    if cfg.reset_peak_on_release:
        peak = np.where(release & by_time, equity, peak)
    # a released switch stays off this bar; a newly tripped one starts counting at 0
    active = np.where(was, ~release, trips)
    return KillSwitchState(peak=peak, active=active, bars_active=bars * (active & was))


def unwind_bounds(
    weights_now: np.ndarray, lower: np.ndarray, upper: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tighten the box ``[lower, upper]`` to unwind-only for episodes where the switch is ``active``."""
    act = active[:, None]
    lo = np.where(act, np.maximum(lower, np.minimum(weights_now, 0.0)), lower)
    hi = np.where(act, np.minimum(upper, np.maximum(weights_now, 0.0)), upper)
    return lo, hi
