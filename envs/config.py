"""Frozen configs of the simulator and its gymnasium wrappers (one per concern, validated once).

RLlib hands an env a plain ``env_config`` dict; :class:`PortfolioEnvConfig` / :class:`GatedEnvConfig`
``model_validate`` it at construction, so an unknown key, a negative cap or a window longer than the
data fails there with the key named, never at step 10,000. Component configs live next to the code
they configure and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raytrade.envs.actions import ActionConfig
from raytrade.envs.cash_rate import CashRate
from raytrade.envs.costs import CostConfig
from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.envs.normalization import FeatureNormalizer
from raytrade.envs.projection import ConstraintConfig
from raytrade.envs.rewards import RewardConfig
from raytrade.replay.loop_rules import LoopRules
from raytrade.replay.splits import EMBARGO_BARS, TRAIN_FRACTION, VALIDATION_FRACTION

__all__ = [
    "ActionConfig",
    "CashRate",
    "ConstraintConfig",
    "CostConfig",
    "DataConfig",
    "FeatureNormalizer",
    "GatedEnvConfig",
    "KillSwitchConfig",
    "PortfolioEnvConfig",
    "ReplayDataConfig",
    "RewardConfig",
    "SimulatorConfig",
    "SyntheticDataConfig",
    "env_config_from_dict",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_LOOP = LoopRules()  # the trading loop's constants are stated once, there


class SimulatorConfig(BaseModel):
    """The vectorised market simulator: episode window, account, costs, constraints, reward, switch."""

    model_config = _FROZEN

    episode_len: int = Field(252, ge=1, description="decisions per episode (bars)")
    initial_equity: float = Field(100_000.0, gt=0, description="starting cash, account currency")
    min_equity_fraction: float = Field(
        0.01, ge=0, lt=1, description="ruin (liquidate, end the episode) at or below this share of the start"
    )
    maintenance_margin: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="ruin (liquidate, end the episode) when equity is at or below this fraction of the "
        "gross position value (25 %: FINRA Rule 4210's minimum maintenance margin); with gross <= "
        "equity it only binds at equity <= 0",
    )
    days_per_bar: float | None = Field(
        None,
        gt=0,
        description="trading days one bar spans, for per-bar carry rates (None: the data's bar length, "
        "MarketData.days_per_bar)",
    )
    costs: CostConfig = CostConfig()
    cash_rate: CashRate = Field(
        CashRate(), description="what idle cash earns (default 0 %; also the Sharpe's risk-free rate)"
    )
    constraints: ConstraintConfig = ConstraintConfig()
    reward: RewardConfig = RewardConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()


class SyntheticDataConfig(BaseModel):
    """Seeded random-walk market built in-process (tests, smoke runs, benchmarks)."""

    model_config = _FROZEN

    kind: Literal["synthetic"] = "synthetic"
    n_assets: int = Field(8, ge=1)
    n_steps: int = Field(1000, ge=2)
    seed: int = 0
    n_crypto: int = Field(0, ge=0, description="how many of the assets are crypto (the last ones)")
    ragged: bool = Field(True, description="stagger listings and delist some assets early")
    periods_per_year: int = Field(252, ge=1)


class ReplayDataConfig(BaseModel):
    """A split of the replay store (loaded by ``envs.replay_loader.load_market_data``)."""

    model_config = _FROZEN

    kind: Literal["replay"] = "replay"
    root: str = Field(description="replay store root (a folder with bars/ and features/)")
    split: Literal["train", "validation", "test", "all"] = Field("train", description="calendar window")
    symbols: tuple[str, ...] | None = Field(None, description="universe (None: every symbol in the store)")
    train_fraction: float = Field(TRAIN_FRACTION, gt=0, lt=1, description="share of the calendar in train")
    validation_fraction: float = Field(
        VALIDATION_FRACTION, gt=0, lt=1, description="share of the calendar in validation"
    )
    embargo_bars: int = Field(EMBARGO_BARS, ge=0, description="bars left out between consecutive splits")
    extra_features: tuple[str, ...] = Field(
        (),
        description="store feature columns loaded beyond the loader's defaults (e.g. a tilt baseline's "
        "inputs, envs.baseline_weights.BASELINE_FEATURES); observed only if feature_columns names them",
    )


DataConfig = Annotated[SyntheticDataConfig | ReplayDataConfig, Field(discriminator="kind")]


class PortfolioEnvConfig(BaseModel):
    """``env_config`` of ``raytrade/PortfolioEnv-v0`` (and its vector form)."""

    model_config = _FROZEN

    data: DataConfig = SyntheticDataConfig()
    sim: SimulatorConfig = SimulatorConfig()
    feature_columns: tuple[str, ...] | None = Field(
        None, description="features observed, in this order (None: all of the data's features)"
    )
    normalizer: FeatureNormalizer | None = Field(
        None,
        description="per-feature statistics of the training window (envs.normalization); when set the "
        "observation holds normalised features plus a fraction-missing channel; None: raw features",
    )
    flat_obs: bool = Field(False, description="one flat Box instead of a Dict observation")
    action: ActionConfig = Field(
        ActionConfig(), description="how actions become orders: absolute or a tilt, the no-trade band"
    )
    num_envs: int = Field(1, ge=1, description="episodes stepped together by the vector env")
    step_info: bool = Field(
        False,
        description="vector env: report each step's costs and equity in info (episode costs are always "
        "reported when an episode ends); off by default because RLlib converts every info key per env",
    )
    seed: int | None = Field(None, description="episode-sampling seed (reset(seed=...) overrides)")

    @model_validator(mode="after")
    def _normalizer_matches_columns(self) -> PortfolioEnvConfig:
        if self.normalizer is not None and self.normalizer.columns != self.feature_columns:
            raise ValueError(
                f"normalizer.columns {list(self.normalizer.columns)} must equal feature_columns "
                f"{None if self.feature_columns is None else list(self.feature_columns)}"
            )
        return self


class GatedEnvConfig(PortfolioEnvConfig):
    """``env_config`` of ``raytrade/GatedSymbolEnv-v0``: per-symbol gate modes, sized by the policy's
    per-mode sizing level as a fraction of the mode's cap (probe: ``probe_weight``; passive and
    aggressive: the contract's kelly_lite, sigma from the last 7 closes, ``envs.gate``)."""

    edge_column: str = Field("fc_mean", description="feature: expected next-bar return (signed)")
    size_levels: int = Field(
        4, ge=1, le=100, description="sizing levels per mode: level k sizes (k + 1) / size_levels of its cap"
    )
    kelly_scale: float = Field(
        _LOOP.kelly_scale, ge=0, description="kelly_lite = min(cap, scale * edge / sigma^2) (the loop's)"
    )
    kelly_cap: float = Field(
        _LOOP.kelly_cap, ge=0, le=1, description="cap of the kelly fraction per symbol (the loop's)"
    )
    probe_weight: float = Field(0.002, ge=0, le=1, description="fixed probe size, fraction of equity")
    passive_fill_prob: float = Field(
        0.6,
        ge=0,
        le=1,
        description="chance a passive order fills on a bar that trades through it (a buy on a bar that "
        "closes below its open, a sell on one that closes above); on any other bar it does not fill",
    )
    passive_spread_mult: float = Field(
        0.0,
        ge=0,
        description="fraction of the spread a passive fill pays; never negative: without a queue model a "
        "rebate would be credited on fills the simulator cannot know happened",
    )
    passive_slippage_mult: float = Field(0.0, ge=0, description="fraction of slippage a passive fill pays")


@overload
def env_config_from_dict(env_config: Mapping[str, Any], gated: Literal[True]) -> GatedEnvConfig: ...
@overload
def env_config_from_dict(env_config: Mapping[str, Any], gated: bool = False) -> PortfolioEnvConfig: ...
def env_config_from_dict(env_config: Mapping[str, Any], gated: bool = False) -> PortfolioEnvConfig:
    """The validated config of an RLlib ``env_config`` dict (a Tune trial's, a checkpoint's, a
    registry manifest's): a :class:`GatedEnvConfig` when ``gated``, else a :class:`PortfolioEnvConfig`.

    ``num_envs`` is dropped: RLlib's vector entry point adds it per env runner, it says nothing about
    the policy. Without ``gated``, a gated env's own keys (its sizing rule) are dropped too, which
    leaves the data, simulator and observation that scoring and serving a weights view need. Any
    other unknown key fails validation, naming the key.
    """
    drop = {"num_envs"}
    if not gated:
        drop |= set(GatedEnvConfig.model_fields) - set(PortfolioEnvConfig.model_fields)
    cls = GatedEnvConfig if gated else PortfolioEnvConfig
    return cls.model_validate({k: v for k, v in env_config.items() if k not in drop})
