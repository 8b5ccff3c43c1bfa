"""When a trial stops: its budget of iterations, or earlier on a validation plateau.

Design decisions
----------------
* **The plateau rule** (:func:`plateaued`), for a trial's validation objectives ``v_1 … v_t`` by
  training iteration, patience ``N`` and tolerance ``tol`` (mode ``max``): the trial has plateaued
  at ``t`` when ``t > N`` and ``max(v_{t-N+1} … v_t) <= max(v_1 … v_{t-N}) + tol``, i.e. none of
  its last ``N`` iterations beat the best score before them by more than ``tol``. Mode ``min``
  negates the values. A non-finite score is never a best and never an improvement.
  Why the best so far rather than the previous value: a noisy objective that drifts back up to an
  earlier level has not learned anything new, and a single lucky iteration resets the count, so a
  trial still improving is never stopped.
* **One stopper** (:class:`SearchStopper`) holds both rules: Tune's ``RunConfig.stop`` takes either
  a dict or a ``Stopper``, not both, so the budget's ``training_iteration`` bound lives here too.
  The budget's checkpoints are untouched: Tune checkpoints a stopped trial at its end, and the
  leaderboard still picks each trial's best checkpoint by validation objective.
* The stopper keeps each trial's scores by iteration, so a trial restarted from a checkpoint
  (which reports the iterations after it again) overwrites the rewound ones instead of appending
  duplicates. A resumed search (``--resume``) starts the count afresh from the iterations it sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from ray.tune.stopper import Stopper

from raytrade.tune_specs.objective import METRIC, metric_of


def plateaued(
    values: Sequence[float], patience: int, tolerance: float, mode: Literal["max", "min"] = "max"
) -> bool:
    """Whether the last ``patience`` of ``values`` (one per iteration, oldest first) failed to beat
    the best value before them by more than ``tolerance`` (see the module docstring)."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1 iteration, got {patience}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if len(values) <= patience:
        return False
    sign = 1.0 if mode == "max" else -1.0
    signed = [sign * v if math.isfinite(v) else -math.inf for v in values]
    best_before = max(signed[:-patience])
    return max(signed[-patience:]) <= best_before + tolerance


class SearchStopper(Stopper):
    """Tune stop rule: ``training_iteration >= iterations``, or (``patience`` > 0) a plateau of
    ``metric`` (:func:`plateaued`). Never stops the whole experiment."""

    def __init__(
        self,
        iterations: int,
        patience: int = 0,
        tolerance: float = 0.0,
        metric: str = METRIC,
        mode: Literal["max", "min"] = "max",
    ) -> None:
        if iterations < 1 or patience < 0:
            raise ValueError(f"iterations must be >= 1 and patience >= 0, got {iterations} and {patience}")
        self.iterations, self.patience, self.tolerance = iterations, patience, tolerance
        self.metric, self.mode = metric, mode
        self._scores: dict[str, dict[int, float]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        iteration = int(result["training_iteration"])
        if iteration >= self.iterations:
            return True
        if not self.patience:
            return False
        scores = self._scores.setdefault(trial_id, {})
        for rewound in [i for i in scores if i > iteration]:
            del scores[rewound]
        scores[iteration] = metric_of(result, self.metric)
        return plateaued([scores[i] for i in sorted(scores)], self.patience, self.tolerance, self.mode)

    def stop_all(self) -> bool:
        return False
