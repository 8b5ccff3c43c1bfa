"""What a Tune experiment is: a search space, an ASHA scheduler, a stop rule, an objective, budgets.

A spec file (``tune_specs/ppo.py`` …) builds one :class:`TuneSpec`. ``raytrade tune`` turns it into
a ``Tuner``: ``spec.algo_config(env_config, budget)`` is the param space (RLlib ``AlgorithmConfig``
whose ``training`` / ``model_config`` entries may hold Tune search domains), ``spec.scheduler`` ranks
trials on ``validation/objective`` (``tune_specs.objective``), ``spec.stop`` ends them: at the
budget's iterations, or earlier when ``budget.early_stop`` > 0 and the validation objective has
plateaued (``tune_specs.stopping``).

Budgets are explicit so the tiny ``smoke`` one is the same code path as a real search.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from raytrade.envs.config import PortfolioEnvConfig, ReplayDataConfig
from raytrade.envs.normalization import FeatureNormalizer, fit_normalizer
from raytrade.tune_specs.objective import METRIC, ObjectiveConfig, score_on_train_result
from raytrade.tune_specs.stopping import SearchStopper

log = logging.getLogger("raytrade.tune")

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Budget(BaseModel):
    """How much one search spends."""

    model_config = _FROZEN

    iterations: int = Field(ge=1, description="training iterations per trial (ASHA max_t, stop rule)")
    grace_period: int = Field(1, ge=1, description="iterations before ASHA may stop a trial")
    num_samples: int = Field(ge=1, description="trials sampled from the search space")
    train_batch: int = Field(ge=32, description="env steps per training iteration (per learner)")
    minibatch: int = Field(ge=16, description="SGD minibatch size")
    num_epochs: int = Field(ge=1, description="SGD passes over each batch")
    episode_len: int = Field(ge=2, description="bars per training episode")
    num_envs: int = Field(4, ge=1, description="episodes stepped together per env runner")
    checkpoint_every: int = Field(
        1,
        ge=1,
        description="checkpoint every k iterations (and at the end); a trial's best checkpoint is chosen "
        "among these, so with k > 1 a best iteration between them is lost",
    )
    checkpoints_kept: int = Field(
        3,
        ge=1,
        description="checkpoints a trial keeps: its best by validation objective "
        "(tune_specs.objective.CHECKPOINT_SCORE), and always the latest, which a restart resumes from",
    )
    early_stop: int = Field(
        0,
        ge=0,
        description="stop a trial once validation/objective has not beaten its best by more than "
        "early_stop_tolerance for this many iterations (tune_specs.stopping; 0: off)",
    )
    early_stop_tolerance: float = Field(
        0.0, ge=0, description="improvement (objective units) that counts as one for early_stop"
    )
    overfit_window: int = Field(
        10,
        ge=2,
        description="last k iterations whose train and validation objective slopes the run summary "
        "compares (tune_specs.overfit)",
    )


# The on-policy families (ppo, distrl, gnn, gating) share these; a spec overrides what differs with
# ``model_copy(update=...)``. Early stopping: a trial whose validation objective has not beaten its
# best by more than 0.05 (information-ratio units) for 20 iterations stops; on real daily stocks
# trials peaked around iteration 20 of 60 and then fell (issue 11), and 20 iterations is long enough
# that a noisy but improving trial is not cut. Every iteration is scored and checkpointed, and a trial
# keeps its best three (``Budget.checkpoints_kept``) and its latest.
ON_POLICY_BUDGET = Budget(
    iterations=60,
    grace_period=10,
    num_samples=16,
    train_batch=4000,
    minibatch=500,
    num_epochs=6,
    episode_len=252,
    early_stop=20,
    early_stop_tolerance=0.05,
)
ON_POLICY_SMOKE = Budget(
    iterations=4,
    grace_period=2,
    num_samples=2,
    train_batch=256,
    minibatch=128,
    num_epochs=1,
    episode_len=64,
    overfit_window=4,
)


def add_training(config: AlgorithmConfig, budget: Budget, space: dict[str, Any]) -> AlgorithmConfig:
    """Apply a budget's batch sizes and the search space (``training`` kwargs) to ``config``."""
    return config.training(
        train_batch_size_per_learner=budget.train_batch,
        minibatch_size=budget.minibatch,
        num_epochs=budget.num_epochs,
        **space,
    )


def add_scoring(config: AlgorithmConfig, objective: ObjectiveConfig) -> AlgorithmConfig:
    """Score every trial on its held-out window after each ``train()`` (see ``tune_specs.objective``)."""
    hook = functools.partial(score_on_train_result, objective=objective.model_dump())
    return config.callbacks(on_train_result=hook)


class TuneSpec(BaseModel):
    """One family's search: ``build(env_config, budget) -> AlgorithmConfig`` plus everything Tune needs."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(description="spec name (``raytrade tune --spec NAME``)")
    family: str = Field(description="models.catalog family, or 'tqc'")
    description: str
    build: Callable[[dict[str, Any], Budget], AlgorithmConfig] = Field(
        description="the AlgorithmConfig (search domains included) for an env_config and budget"
    )
    required_features: tuple[str, ...] = Field(description="feature columns the env observes")
    budget: Budget
    smoke: Budget
    objective: ObjectiveConfig = ObjectiveConfig()
    reduction_factor: float = Field(2.0, gt=1, description="ASHA keeps 1/reduction_factor per rung")
    metric: str = METRIC
    mode: Literal["max", "min"] = "max"

    def algo_config(
        self, env_config: dict[str, Any], budget: Budget, objective: ObjectiveConfig | None = None
    ) -> AlgorithmConfig:
        """The param space of one search: the family's config with validation scoring attached."""
        return add_scoring(self.build(env_config, budget), objective or self.objective)

    def scheduler(self, budget: Budget) -> Any:
        """ASHA on ``validation/objective`` over ``training_iteration``."""
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=budget.iterations,
            grace_period=min(budget.grace_period, budget.iterations),
            reduction_factor=self.reduction_factor,
        )

    def stop(self, budget: Budget) -> SearchStopper:
        """Stop rule: the budget's iterations, or a plateau of ``metric`` for ``budget.early_stop``
        iterations when that is > 0 (ASHA may stop a trial earlier still)."""
        return SearchStopper(
            budget.iterations,
            patience=budget.early_stop,
            tolerance=budget.early_stop_tolerance,
            metric=self.metric,
            mode=self.mode,
        )

    def env_config(
        self,
        replay_root: str,
        budget: Budget,
        features: tuple[str, ...] | None = None,
        split_fractions: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """The training env config: the store's ``train`` split, the observed features (``features``,
        else the spec's ``required_features``) with their normaliser fitted on that train split
        (:func:`train_normalizer`), the budget's episode length. ``split_fractions``
        (``train_fraction`` / ``validation_fraction`` of ``ReplayDataConfig``) move the split
        boundaries; None: the store's defaults."""
        columns = tuple(features or self.required_features)
        data = {"kind": "replay", "root": replay_root, "split": "train", **(split_fractions or {})}
        return {
            "data": data,
            "feature_columns": list(columns),
            "normalizer": train_normalizer(data, columns).model_dump(mode="json"),
            "sim": {"episode_len": budget.episode_len},
        }


def train_normalizer(data: Mapping[str, Any], columns: tuple[str, ...]) -> FeatureNormalizer:
    """The observation normaliser of ``columns`` fitted on the training window ``data`` (an
    ``env_config["data"]`` entry; a replay one must be the ``train`` split): the statistics every
    later window (validation, test, live) is encoded with, never refitted on them."""
    from raytrade.envs.synthetic_market import market_data_from_config

    cfg = PortfolioEnvConfig.model_validate({"data": dict(data)}).data
    if isinstance(cfg, ReplayDataConfig) and cfg.split != "train":
        raise ValueError(f"the normaliser is fitted on the train split only, got split {cfg.split!r}")
    if isinstance(cfg, ReplayDataConfig):
        fitted_on = f"replay {cfg.root} train"
    else:
        fitted_on = f"synthetic seed {cfg.seed}"
    key = _normalizer_key(cfg, columns)
    if key is not None and key in _FITTED:
        return _FITTED[key]
    if isinstance(cfg, ReplayDataConfig):
        log.info("fitting the observation normaliser on the train split of %s", cfg.root)
    fitted = fit_normalizer(market_data_from_config(cfg), columns, fitted_on=fitted_on)
    if key is not None:
        while len(_FITTED) >= _FITTED_KEPT:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[key] = fitted
    return fitted


_FITTED: dict[tuple[Any, ...], FeatureNormalizer] = {}
"""Normalisers already fitted in this process, by window, columns and the store's files: a search's
driver builds its env config several times before Ray starts, and each fit loaded the train split
again (a 520-symbol, ten-year store: 12-15 s each)."""
_FITTED_KEPT = 4


def _normalizer_key(cfg: Any, columns: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The cache key of a fit: the window's config, the columns and, for a local replay store, each
    committed file of its bars and features tables with its size and modification time (an append
    or a rewrite changes it). None (no cache) for a remote store, whose files are its mirror's."""
    if not isinstance(cfg, ReplayDataConfig) or "://" in str(cfg.root):
        return None
    from raytrade.replay.fingerprint import FINGERPRINT_TABLES
    from raytrade.replay.reader import table_files

    try:
        files = [f for table in FINGERPRINT_TABLES for f in table_files(cfg.root, table)]
        stamp = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))
    except (OSError, ValueError):
        return None  # the load itself says what is wrong with the store
    return (cfg.model_dump_json(), columns, stamp)
