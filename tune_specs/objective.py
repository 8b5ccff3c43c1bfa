"""The Tune objective: score a trial's policy on a window it never trained on.

Design decisions
----------------
* Every trial is scored the same way: its RLModule's *deterministic* target weights are replayed
  (``envs.rollout.replay_policy``) from the first to the last bar of the validation window, through
  the same simulator and cost model the env trains with (the env config's ``sim``).
* **The book is closed at the window's last bar** (``CLOSE_AT_END``, the one place for the rule):
  every scored replay, the policy's and the benchmark's, Box and gated modules alike, on the
  validation window and on the train tail, is ``replay_policy(..., close_at_end=True)``, so the last
  return is net of what getting out costs (``MarketSimulator.exit_costs``), exactly as the evaluation
  (``envs.evaluation.harness.run_window``) charges it. Why: marked to market, a trial that ends the
  window with a large, levered or illiquid book ranks a few bps better than it will be judged; models
  are selected on the terms they are judged on. Training episodes (the RL env) are not closed. A
  search recorded before this rule scored its window marked to market: its run file's objective says
  so (``models.manifest.SearchObjective.book_end`` absent reads ``"marked"``; ``BOOK_END`` is what a
  search records now): ``select`` and ``promote`` re-score such a search's checkpoint under this rule
  and record which rule each figure used; ``experiment`` searches it again (``cluster.run_reuse``).
* **Excess over the benchmark.** The ``equal_weight`` benchmark (``envs.evaluation.policies``: 1/n
  of equity in each listed asset, rebalanced monthly; the evaluation report's benchmark) is replayed
  through the same simulator, costs and window. Per bar, ``excess = policy net return - benchmark
  net return`` (both after every cost), and
  ``objective = information_ratio(excess) - cvar_penalty * max(0, -cvar_5(excess))``, with the
  information ratio annualised (``mean / std * sqrt(periods_per_year)``) and CVaR 5 % per bar
  (the mean of the worst 5 % of bars' excess; negative when they lag the benchmark).
  Why: a ratio of the policy's own returns rewards a nearly flat book (tiny volatility, tiny
  downside: a ratio of small numbers); its excess over the benchmark has the benchmark's volatility,
  so sitting out a rising market scores negative, and a policy identical to the benchmark scores
  exactly 0 (excess identically 0: the ratio and the tail term are defined as 0). The information
  ratio rather than a Sortino of the excess because it is defined whenever the excess moves (Sortino
  of an excess that is never negative is undefined) and penalises under- and out-performance
  volatility alike, which is what tracking risk against a benchmark is.
* **Only a loss tail is penalised.** The tail term is the loss of the worst 5 % of bars,
  ``max(0, -cvar_5)``: 0 when even those bars beat the benchmark. (``|cvar_5|`` penalised a gain
  tail too, so making the worst bars worse could *lower* the penalty.) Making any bar's excess worse
  never lowers it.
* **Undefined scores ``UNDEFINED_SCORE`` (-10), in a search and in ``select`` alike**
  (:func:`score_of`, the one place). An excess that is constant but not 0, exactly or up to float
  rounding (``bench + 5 bps`` minus ``bench``: ``envs.metrics.no_dispersion``, a relative tolerance of
  ``DISPERSION_RTOL`` = 1e-9, or a std of at most ``DISPERSION_ATOL`` = 1e-12 a bar), has no measured
  risk and so no ratio (over a rounding-noise std it would be ~1e16). It fails closed: a degenerate book
  never wins a search, a checkpoint choice or a ``select``, even one that always earns more than the
  benchmark.
* Reported beside the score: the policy's mean gross exposure (sum |w| of its target weights per
  bar), turnover (mean traded notional / equity per bar) and costs (total costs paid / initial
  equity), so a search's winner can be read for what it actually holds and pays.
* The validation window is the replay store's ``validation`` split of the training config's store.
  A synthetic env (tests, smoke) has no split: it is scored on the same generator with a different
  seed (``seed + HELD_OUT_SEED_OFFSET``), which is held out in the same sense.
* **The same score on the training window**, so overfitting shows: after each ``train()`` the
  module is also scored on the last ``n`` bars of its training window, ``n`` the validation
  window's length (:func:`train_window`): the same deterministic replay, benchmark, costs and
  objective, on bars it trained on, at a cost bounded by the validation scoring's. The most recent
  train bars because they border the validation window (the closest market to compare with); a
  fixed slice so every iteration is scored on the same bars. A synthetic env's train window is its
  generator with the training seed (the same length as the held-out one).
* Scoring runs in the trial process at the end of ``Algorithm.train()`` (an ``on_train_result``
  callback) and writes ``result["validation"]`` and ``result["train"]`` (the same keys,
  ``REPORTED``); Tune flattens them to ``validation/objective``, ``train/objective`` etc.
  The callback runs before Tune checkpoints the iteration, so a checkpoint's recorded metrics are
  the scores of exactly the weights it holds.
* Modules are decoded to decisions by ``models.inference`` (the same helpers serving uses).
* **A broken decision is not scored.** A Box policy's non-finite target fails the simulator's step,
  and a gated policy's non-finite distribution inputs fail its replay (``models.inference.gate_actions``;
  their argmax would read "flat", a cash book): either way the replay raises ``ValueError`` and the
  iteration fails, so no checkpoint of diverged weights carries a score.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.config import (
    PortfolioEnvConfig,
    ReplayDataConfig,
    SimulatorConfig,
    SyntheticDataConfig,
    env_config_from_dict,
)
from raytrade.envs.evaluation.harness import slice_window
from raytrade.envs.evaluation.policies import equal_weight_policy
from raytrade.envs.market_data import MarketData
from raytrade.envs.metrics import cvar_rows, sharpe_rows, summarize, total_return
from raytrade.envs.rollout import Policy, Rollout, replay_policy
from raytrade.models.inference import module_policy, replay_gated, single_threaded
from raytrade.models.manifest import BookEnd
from raytrade.replay.splits import TimeWindow

CLOSE_AT_END: Final = True
"""Every scored replay (policy and benchmark) closes the book at its window's last bar and charges
the exit to the last return, as the evaluation does (module docstring): ``replay_policy``'s
``close_at_end`` for every validation, train-tail, ``select``, ``promote`` and ``experiment`` score."""
BOOK_END: Final[BookEnd] = "closed" if CLOSE_AT_END else "marked"
"""``CLOSE_AT_END`` as a search, a selection and a manifest record it (``models.manifest.BookEnd``)."""

UNDEFINED_SCORE: Final = -10.0
"""Score given when the objective is undefined (nan): an excess over the benchmark that is constant
but not 0, up to float rounding (e.g. a book that holds the benchmark plus cash earning a fixed rate)."""
HELD_OUT_SEED_OFFSET: Final = 10_007
VALIDATION_KEY: Final = "validation"
METRIC: Final = f"{VALIDATION_KEY}/objective"
"""The flattened Tune metric every spec optimises (mode ``max``)."""
TRAIN_KEY: Final = "train"
TRAIN_METRIC: Final = f"{TRAIN_KEY}/objective"
"""The same objective on the tail of the training window (:func:`train_window`), reported beside
``METRIC`` so a search shows when the two part ways; never optimised."""
CHECKPOINT_SCORE: Final = "checkpoint_score"
"""Top-level result key of ``METRIC`` as scored on this very iteration (NaN on an iteration that only
repeats an earlier score, ``ObjectiveConfig.score_every``): the attribute Tune ranks checkpoints by
to keep a trial's best ones (``cluster.tune``). Tune's checkpoint manager looks its score attribute
up only at the result's top level, and keeps the most recent checkpoints, silently, when the key is
nested (``validation/objective``); a checkpoint's score must also be its own iteration's, never a
repeated one."""
REPORTED: Final = (
    "objective",
    "information_ratio",
    "excess_return",
    "sharpe",
    "sortino",
    "cvar_5",
    "total_return",
    "turnover",
    "max_drawdown",
    "gross_exposure",
    "costs",
)
ZERO_EXCESS: Final = 1e-12
"""Per-bar excess returns all within this of 0 count as identical to the benchmark (score 0)."""


class ObjectiveConfig(BaseModel):
    """How a trial is scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cvar_penalty: float = Field(
        1.0,
        ge=0,
        description="weight of the loss of the worst 5% of bars' excess, max(0, -CVaR 5%), subtracted",
    )
    score_every: int = Field(1, ge=1, description="score every k-th training iteration (and the first)")
    split: str = Field("validation", description="replay split scored (never the training split)")


# ------------------------------------------------------------------------------ the objective


def tail_loss(cvar_5: np.ndarray) -> np.ndarray:
    """The tail term's loss, ``max(0, -cvar_5)``: 0 for a tail of gains (module docstring)."""
    out: np.ndarray = np.maximum(0.0, -np.asarray(cvar_5, dtype=np.float64))
    return out


def objective_paths(excess: np.ndarray, periods_per_year: float, cvar_penalty: float) -> np.ndarray:
    """The objective of each row of ``excess [S, T]`` (per-bar excess returns over the benchmark):
    ``information_ratio - cvar_penalty * max(0, -cvar_5)``, 0 where a row is identically 0 (within
    ``ZERO_EXCESS``), NaN where it is undefined (a row without dispersion, constant up to float
    rounding: ``envs.metrics.no_dispersion``). A resampled path where it is NaN is dropped from an
    interval (``tune_specs.selection``)."""
    e = np.asarray(excess, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] < 2:
        raise ValueError(f"excess must be [paths, bars] with at least 2 bars, got shape {e.shape}")
    bad = ~np.isfinite(e)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"excess[{row}, {col}] = {float(e[row, col])!r} is not finite")
    value = sharpe_rows(e, periods_per_year) - cvar_penalty * tail_loss(cvar_rows(e))
    zero = np.all(np.abs(e) <= ZERO_EXCESS, axis=1)
    out: np.ndarray = np.where(zero, 0.0, value)
    return out


def score_of(excess: np.ndarray, periods_per_year: float, cvar_penalty: float) -> float:
    """The objective of one excess series, ``UNDEFINED_SCORE`` where undefined: the score every
    search, checkpoint choice and ``select`` records (module docstring)."""
    e = np.asarray(excess, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"excess must be 1-D [bars], got shape {e.shape}")
    value = float(objective_paths(e[None, :], periods_per_year, cvar_penalty)[0])
    return value if math.isfinite(value) else UNDEFINED_SCORE


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


def train_window(env_config: Mapping[str, Any], n_bars: int) -> MarketData:
    """The last ``n_bars`` bars of the training window of ``env_config`` (all of it when shorter):
    the bars the train-side objective is scored on (see the module docstring)."""
    if n_bars < 2:
        raise ValueError(f"n_bars must be >= 2 (one return), got {n_bars}")
    cfg = env_config_from_dict(env_config)
    data = _load_data(json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True))
    if data.n_steps <= n_bars:
        return data
    start, end = (pd.Timestamp(t).tz_localize("UTC") for t in (data.ts[-n_bars], data.ts[-1]))
    return slice_window(data, TimeWindow(TRAIN_KEY, start, end, n_bars))


def score_excess(
    policy: Rollout, benchmark: Rollout, data: MarketData, sim: SimulatorConfig, cvar_penalty: float
) -> dict[str, float]:
    """Scores of the first episode of ``policy`` against the same window's ``benchmark`` replay
    (both through ``sim``):
    ``envs.metrics.summarize`` of the policy's own returns plus ``information_ratio``,
    ``excess_return`` (total return minus the benchmark's), ``gross_exposure``, ``costs`` (fraction
    of initial equity) and ``objective`` (see the module docstring).

    Undefined metrics (``information_ratio`` of a constant excess) stay ``nan``; ``objective`` is
    :func:`score_of` of the excess, ``UNDEFINED_SCORE`` where undefined.
    """
    returns, bench = policy.returns[0], benchmark.returns[0]
    if returns.shape != bench.shape:
        raise ValueError(f"policy returns {returns.shape} and benchmark returns {bench.shape} differ")
    costs = policy.costs[0].sum(axis=-1)
    rf = 0.0 if policy.risk_free is None else policy.risk_free  # the Sharpe's, what cash earned
    metrics = summarize(
        returns, data.periods_per_year, turnover=policy.turnover[0], costs=costs, risk_free=rf
    )
    excess = returns - bench
    objective = score_of(excess, data.periods_per_year, cvar_penalty)
    zero = bool(np.all(np.abs(excess) <= ZERO_EXCESS))
    ratio = 0.0 if zero else float(sharpe_rows(excess[None, :], data.periods_per_year)[0])
    metrics["information_ratio"] = ratio
    metrics["excess_return"] = total_return(returns) - total_return(bench)
    metrics["gross_exposure"] = float(np.abs(policy.weights[0]).sum(axis=-1).mean())
    metrics["costs"] = float(costs.sum()) / sim.initial_equity
    metrics["objective"] = objective
    return {k: float(v) for k, v in metrics.items()}


def benchmark_rollout(data: MarketData, sim: SimulatorConfig) -> Rollout:
    """The ``equal_weight`` benchmark replayed over all of ``data`` through ``sim``, its book closed
    at the last bar (``CLOSE_AT_END``)."""
    return replay_policy(data, equal_weight_policy(data, seed=0), sim, close_at_end=CLOSE_AT_END)


def score_policy(
    policy: Policy, data: MarketData, sim: SimulatorConfig, objective: ObjectiveConfig
) -> dict[str, float]:
    """Replay ``policy`` over all of ``data`` (one episode, its book closed at the last bar:
    ``CLOSE_AT_END``) and score it against the benchmark."""
    rollout = replay_policy(data, policy, sim, close_at_end=CLOSE_AT_END)
    return score_excess(rollout, benchmark_rollout(data, sim), data, sim, objective.cvar_penalty)


def module_rollout(
    module: Any, env_config: Mapping[str, Any], data: MarketData, gated: bool = False
) -> tuple[Rollout, SimulatorConfig]:
    """(deterministic replay of ``module`` over all of ``data``, its book closed at the last bar
    (``CLOSE_AT_END``), the simulator it ran through) for a module trained with ``env_config``
    (``gated``: on ``GatedSymbolEnv``, its gate actions decoded by the gated env). On one torch
    thread: a replay is one small forward per bar (``select`` and ``promote`` replay here in a
    process whose torch may have more)."""
    with single_threaded():
        if gated:
            gated_cfg = env_config_from_dict(env_config, gated=True)
            return replay_gated(module, data, gated_cfg, close_at_end=CLOSE_AT_END), gated_cfg.sim
        cfg = env_config_from_dict(env_config)
        policy = module_policy(module, data, cfg)
        return replay_policy(data, policy, cfg.sim, close_at_end=CLOSE_AT_END), cfg.sim


def score_module_on(
    module: Any,
    data: MarketData,
    env_config: Mapping[str, Any],
    objective: ObjectiveConfig,
    gated: bool = False,
) -> dict[str, float]:
    """Score ``module`` (trained with ``env_config``; ``gated``: on ``GatedSymbolEnv``) on ``data``."""
    rollout, sim = module_rollout(module, env_config, data, gated)
    return score_excess(rollout, benchmark_rollout(data, sim), data, sim, objective.cvar_penalty)


def score_module(
    module: Any,
    env_config: Mapping[str, Any],
    objective: ObjectiveConfig | None = None,
    gated: bool = False,
) -> dict[str, float]:
    """Score ``module`` (trained with ``env_config``; ``gated``: on ``GatedSymbolEnv``) on its
    held-out window."""
    obj = objective or ObjectiveConfig()
    return score_module_on(module, held_out_data(env_config, obj.split), env_config, obj, gated)


def score_windows(
    module: Any, env_config: Mapping[str, Any], objective: ObjectiveConfig, gated: bool = False
) -> dict[str, dict[str, float]]:
    """``{"validation": scores, "train": scores}``: ``module`` scored on its held-out window and on
    the same number of bars at the end of its training window (:func:`train_window`)."""
    held_out = held_out_data(env_config, objective.split)
    train = train_window(env_config, held_out.n_steps)
    return {
        VALIDATION_KEY: score_module_on(module, held_out, env_config, objective, gated),
        TRAIN_KEY: score_module_on(module, train, env_config, objective, gated),
    }


# ------------------------------------------------------------------------------ RLlib hook


def trained_module(algorithm: Any) -> Any:
    """The algorithm's current RLModule: its env runner's copy (synced after every update), or for an
    offline algorithm its learner's: an offline algorithm may hold a local env runner whose module
    it never syncs (CQL), and scoring that one would score the untrained initial weights."""
    if not algorithm.config.is_offline:
        return algorithm.get_module()
    from ray.rllib.core import DEFAULT_MODULE_ID

    group = algorithm.learner_group
    if not group.is_remote:
        return group._learner.module[DEFAULT_MODULE_ID]
    results = group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID])
    return next(iter(results)).get()


def metric_of(metrics: Mapping[str, Any], key: str) -> float:
    """``metrics[key]`` for a flattened (``a/b``) or nested result dict; nan when absent."""
    if key in metrics:
        return float(metrics[key])
    node: Any = metrics
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return math.nan
        node = node[part]
    return float(node)


def score_on_train_result(
    *, algorithm: Any, result: dict[str, Any], objective: dict[str, Any] | None = None, **_: Any
) -> None:
    """``on_train_result`` callback: add ``result["validation"]`` and ``result["train"]`` (objective,
    sharpe, sortino, …; :func:`score_windows`).

    Use as ``config.callbacks(on_train_result=functools.partial(score_on_train_result,
    objective=ObjectiveConfig(...).model_dump()))``. Between scoring iterations the last score is
    repeated, so schedulers always see the metric; ``CHECKPOINT_SCORE`` is the validation objective
    of a scored iteration and NaN on the others. ``node_id`` (the algorithm's, where its learner
    runs) and ``env_runner_node_ids`` (:func:`env_runner_node_ids`) are added for placement checks.
    """
    import ray

    from raytrade.envs.gym_envs import GATED_ENV_ID

    obj = ObjectiveConfig.model_validate(objective or {})
    iteration = int(result.get("training_iteration", 0) or algorithm.iteration)
    cached: dict[str, dict[str, float]] | None = getattr(algorithm, "_raytrade_last_score", None)
    fresh = cached is None or (iteration - 1) % obj.score_every == 0
    if fresh:
        gated = algorithm.config.env == GATED_ENV_ID
        cached = score_windows(trained_module(algorithm), algorithm.config.env_config, obj, gated=gated)
        algorithm._raytrade_last_score = cached
    assert cached is not None
    for window, scores in cached.items():
        result[window] = {k: scores[k] for k in REPORTED}
    result[CHECKPOINT_SCORE] = cached[VALIDATION_KEY]["objective"] if fresh else math.nan
    result["node_id"] = ray.get_runtime_context().get_node_id()
    result[ENV_RUNNER_NODES] = ",".join(env_runner_node_ids(algorithm))


ENV_RUNNER_NODES = "env_runner_node_ids"
"""Result key of the node ids the algorithm's remote env runners run on, comma-separated in runner
order ("": none): a string, since Tune's TensorBoard logger would try to draw a list as a histogram."""


def _this_node(_: Any) -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def env_runner_node_ids(algorithm: Any) -> list[str]:
    """The node id of each of ``algorithm``'s remote env runners, asked of the runner actor itself
    (in runner order; healthy runners only; empty without remote runners). Where Ray put them, not
    where the placement strategy asked for them."""
    group = getattr(algorithm, "env_runner_group", None)
    if group is None or group.num_remote_env_runners() == 0:
        return []
    return [str(node) for node in group.foreach_env_runner(_this_node, local_env_runner=False)]
