"""The Tune objective: score a trial's policy on a window it never trained on.

Design decisions
----------------
* Every trial is scored the same way: its RLModule's *deterministic* target weights are replayed
  (``envs.rollout.replay_policy``) from the first to the last bar of the validation window, through
  the same simulator and cost model the env trains with (the env config's ``sim``).
* ``objective = sortino - cvar_penalty * |cvar_5|`` on the replay's net simple returns (after every
  cost). Undefined ratios (``nan``: a flat policy has no downside) score as ``UNDEFINED_SCORE`` so a
  do-nothing policy never wins a search by default.
* The validation window is the replay store's ``validation`` split of the training config's store.
  A synthetic env (tests, smoke) has no split: it is scored on the same generator with a different
  seed (``seed + HELD_OUT_SEED_OFFSET``), which is held out in the same sense.
* Scoring runs in the trial process at the end of ``Algorithm.train()`` (an ``on_train_result``
  callback) and writes ``result["validation"]``; Tune flattens it to ``validation/objective`` etc.
  The callback runs before Tune checkpoints the iteration, so a checkpoint's recorded metrics are
  the scores of exactly the weights it holds.
* Modules are decoded to decisions by ``models.inference`` (the same helpers serving uses).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.config import (
    PortfolioEnvConfig,
    ReplayDataConfig,
    SimulatorConfig,
    SyntheticDataConfig,
    env_config_from_dict,
)
from raytrade.envs.market_data import MarketData
from raytrade.envs.metrics import summarize
from raytrade.envs.rollout import Policy, replay_policy
from raytrade.models.inference import module_policy, replay_gated

UNDEFINED_SCORE: Final = -10.0
"""Score given when the objective is undefined (nan), e.g. a policy that never trades."""
HELD_OUT_SEED_OFFSET: Final = 10_007
VALIDATION_KEY: Final = "validation"
METRIC: Final = f"{VALIDATION_KEY}/objective"
"""The flattened Tune metric every spec optimises (mode ``max``)."""
REPORTED: Final = ("objective", "sharpe", "sortino", "cvar_5", "total_return", "turnover", "max_drawdown")


class ObjectiveConfig(BaseModel):
    """How a trial is scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cvar_penalty: float = Field(1.0, ge=0, description="weight of |CVaR 5%| (per-bar return) subtracted")
    score_every: int = Field(1, ge=1, description="score every k-th training iteration (and the first)")
    split: str = Field("validation", description="replay split scored (never the training split)")


# ------------------------------------------------------------------------------ data and scores


def held_out_data_config(env_cfg: PortfolioEnvConfig, split: str = "validation") -> dict[str, Any]:
    """The ``data`` entry of the window a trial is scored on (see module docstring)."""
    data = env_cfg.data
    if isinstance(data, ReplayDataConfig):
        if split == data.split:
            raise ValueError(f"the scored split {split!r} is the training split")
        return data.model_copy(update={"split": split}).model_dump()
    assert isinstance(data, SyntheticDataConfig)
    return data.model_copy(update={"seed": data.seed + HELD_OUT_SEED_OFFSET}).model_dump()


@functools.lru_cache(maxsize=8)
def _load_data(data_json: str) -> MarketData:
    from raytrade.envs.synthetic_market import market_data_from_config

    cfg = PortfolioEnvConfig.model_validate({"data": json.loads(data_json)})
    return market_data_from_config(cfg.data)


def held_out_data(env_config: Mapping[str, Any], split: str = "validation") -> MarketData:
    """The held-out ``MarketData`` of a training env config (cached per process)."""
    cfg = env_config_from_dict(env_config)
    return _load_data(json.dumps(held_out_data_config(cfg, split), sort_keys=True))


def score_returns(
    returns: np.ndarray,
    periods_per_year: float,
    turnover: np.ndarray,
    costs: np.ndarray,
    cvar_penalty: float,
) -> dict[str, float]:
    """``envs.metrics.summarize`` of one replay (``costs`` in currency per bar) plus ``objective``.

    Undefined metrics stay ``nan``; only ``objective`` is made finite (``UNDEFINED_SCORE``).
    """
    metrics = summarize(returns, periods_per_year, turnover=turnover, costs=costs)
    sortino, cvar5 = metrics["sortino"], metrics["cvar_5"]
    objective = sortino - cvar_penalty * abs(cvar5)
    metrics["objective"] = objective if math.isfinite(objective) else UNDEFINED_SCORE
    return {k: float(v) for k, v in metrics.items()}


def score_policy(
    policy: Policy, data: MarketData, sim: SimulatorConfig, objective: ObjectiveConfig
) -> dict[str, float]:
    """Replay ``policy`` over all of ``data`` (one episode) and score it."""
    rollout = replay_policy(data, policy, sim)
    return score_returns(
        rollout.returns[0],
        data.periods_per_year,
        rollout.turnover[0],
        rollout.costs[0].sum(axis=-1),
        objective.cvar_penalty,
    )


def score_module(
    module: Any,
    env_config: Mapping[str, Any],
    objective: ObjectiveConfig | None = None,
    gated: bool = False,
) -> dict[str, float]:
    """Score ``module`` (trained with ``env_config``; ``gated``: on ``GatedSymbolEnv``) on its
    held-out window."""
    obj = objective or ObjectiveConfig()
    data = held_out_data(env_config, obj.split)
    if gated:
        gated_cfg = env_config_from_dict(env_config, gated=True)
        returns, turnover, costs = replay_gated(module, data, gated_cfg)
        return score_returns(returns, data.periods_per_year, turnover, costs, obj.cvar_penalty)
    cfg = env_config_from_dict(env_config)
    return score_policy(module_policy(module, data, cfg), data, cfg.sim, obj)


# ------------------------------------------------------------------------------ RLlib hook


def score_on_train_result(
    *, algorithm: Any, result: dict[str, Any], objective: dict[str, Any] | None = None, **_: Any
) -> None:
    """``on_train_result`` callback: add ``result["validation"]`` (objective, sharpe, sortino, …).

    Use as ``config.callbacks(on_train_result=functools.partial(score_on_train_result,
    objective=ObjectiveConfig(...).model_dump()))``. Between scoring iterations the last score is
    repeated, so schedulers always see the metric. ``node_id`` is added for placement checks.
    """
    import ray

    from raytrade.envs.gym_envs import GATED_ENV_ID

    obj = ObjectiveConfig.model_validate(objective or {})
    iteration = int(result.get("training_iteration", 0) or algorithm.iteration)
    cached: dict[str, float] | None = getattr(algorithm, "_raytrade_last_score", None)
    if cached is None or (iteration - 1) % obj.score_every == 0:
        gated = algorithm.config.env == GATED_ENV_ID
        cached = score_module(algorithm.get_module(), algorithm.config.env_config, obj, gated=gated)
        algorithm._raytrade_last_score = cached
    result[VALIDATION_KEY] = {k: cached[k] for k in REPORTED}
    result["node_id"] = ray.get_runtime_context().get_node_id()
