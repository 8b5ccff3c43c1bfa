"""The gated policy's execution modes and the order type each places, stated once.

The simulator (``envs.gym_envs``), the live loop's order planning (``serve.orders``) and the cost
calibration (``envs.cost_calibration``) read it from here:

* ``flat``, ``probe``, ``aggressive``: a **market** order; it pays the spread, the tier base and the
  impact of ``envs.costs``, and is what a cost profile's parameters describe;
* ``passive``: a **limit** order at the near touch (a buy at the bid, a sell at the ask); it fills
  only when the market trades through it and, filled, is about half a spread *better* than the mid.
  The simulator costs it with ``GatedEnvConfig.passive_spread_mult`` / ``passive_slippage_mult``.

Serving adds ``hold`` (``serve.schemas.GateMode``), which places no order.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GATE_MODES", "LIMIT_GATE_MODES", "MARKET_GATE_MODES"]

GATE_MODES: Final[tuple[str, ...]] = ("flat", "probe", "passive", "aggressive")
"""The gated env's modes, in the order of the action's mode index (0 flat .. 3 aggressive)."""
LIMIT_GATE_MODES: Final[frozenset[str]] = frozenset({"passive"})
"""Modes that place a limit order at the near touch."""
MARKET_GATE_MODES: Final[frozenset[str]] = frozenset(GATE_MODES) - LIMIT_GATE_MODES
"""Modes that place a market order: every other mode of :data:`GATE_MODES`."""
