"""The one rule for a baseline's exposure budget when it holds an asset it cannot trade.

An asset with no bar at ``t`` (``listed`` False: a halt or a data hole inside its life) cannot trade
at ``t``: the simulator treats its order as unfilled and keeps its units, and serving locks it (both
take its exposure out of their gross budget: ``envs.simulator.constrained_targets``). A baseline
that ignored it would buy the tradeable assets up to its full budget on top of it and borrow: an
``equal_weight`` book holding a halted stock at 0.256 bought the other three to 1/3 each and ran at
gross 1.26 for a month, paying financing. So every baseline (``envs.baseline_weights``: the
benchmark, evaluation, a tilt's base in training and serving) applies the same rule:

* ``kept = w_now`` on the assets not listed at ``t`` (0 elsewhere): what the baseline holds and
  cannot change;
* the tradeable weights are scaled down proportionally so that ``sum |tradeable| + sum |kept|`` is
  at most the budget (``equal_weight`` / ``inverse_vol``: 1, so the tradeable assets share
  ``1 - sum |kept|`` in their usual proportions; ``kelly_lite``: each of its caps); a kept gross at
  or above the budget leaves the tradeable assets nothing.

Only what is known at ``t`` counts: an asset listed at ``t`` whose next bar is missing is still
traded to its allocation (the simulator then keeps it, as it would any unfilled order).
"""

from __future__ import annotations

import numpy as np


def kept_weights(w_now: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """``[..., N]``: the current weight ``w_now`` of each asset not ``listed`` (it cannot trade and is
    kept), 0 for the listed ones."""
    return np.where(np.asarray(listed, dtype=bool), 0.0, np.asarray(w_now, dtype=np.float64))


def within_budget(weights: np.ndarray, members: np.ndarray, budget: float, kept: np.ndarray) -> np.ndarray:
    """``weights [..., N]`` with its ``members`` columns scaled down proportionally so that their gross
    plus the gross of ``kept`` on the members is at most ``budget`` (never scaled up); other columns
    are returned unchanged. ``kept`` must be 0 where ``weights`` can trade (``kept_weights``)."""
    members = np.asarray(members, dtype=bool)
    room = np.maximum(budget - np.abs(kept * members).sum(-1, keepdims=True), 0.0)
    gross = np.abs(weights * members).sum(-1, keepdims=True)
    factor = np.where(gross > room, room / np.where(gross > 0, gross, 1.0), 1.0)
    return np.where(members, weights * factor, weights)
