"""Frozen configs of the simulator and its gymnasium wrappers (one per concern, validated once).

RLlib hands an env a plain ``env_config`` dict; :class:`PortfolioEnvConfig` / :class:`GatedEnvConfig`
``model_validate`` it at construction, so an unknown key, a negative cap or a window longer than the
data fails there with the key named, never at step 10,000. Component configs live next to the code
they configure and are re-exported here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.costs import CostConfig
from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.envs.projection import ConstraintConfig
from raytrade.envs.rewards import RewardConfig

__all__ = [
    "ConstraintConfig",
    "CostConfig",
    "DataConfig",
    "GatedEnvConfig",
    "KillSwitchConfig",
    "PortfolioEnvConfig",
    "ReplayDataConfig",
    "RewardConfig",
    "SimulatorConfig",
    "SyntheticDataConfig",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SimulatorConfig(BaseModel):
    """The vectorised market simulator: episode window, account, costs, constraints, reward, switch."""

    model_config = _FROZEN

    episode_len: int = Field(252, ge=1, description="decisions per episode (bars)")
    initial_equity: float = Field(100_000.0, gt=0, description="starting cash, account currency")
    min_equity_fraction: float = Field(
        0.01, ge=0, lt=1, description="terminate (ruin) when equity falls to this fraction of the start"
    )
    days_per_bar: float = Field(1.0, gt=0, description="financing days one bar spans (1 for daily bars)")
    costs: CostConfig = CostConfig()
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
    train_fraction: float = Field(0.6, gt=0, lt=1, description="share of the calendar in train")
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="share of the calendar in validation")
    embargo_bars: int = Field(5, ge=0, description="bars left out between consecutive splits")


DataConfig = Annotated[SyntheticDataConfig | ReplayDataConfig, Field(discriminator="kind")]


class PortfolioEnvConfig(BaseModel):
    """``env_config`` of ``raytrade/PortfolioEnv-v0`` (and its vector form)."""

    model_config = _FROZEN

    data: DataConfig = SyntheticDataConfig()
    sim: SimulatorConfig = SimulatorConfig()
    feature_columns: tuple[str, ...] | None = Field(
        None, description="features observed, in this order (None: all of the data's features)"
    )
    flat_obs: bool = Field(False, description="one flat Box instead of a Dict observation")
    num_envs: int = Field(1, ge=1, description="episodes stepped together by the vector env")
    step_info: bool = Field(
        False,
        description="vector env: report each step's costs and equity in info (episode costs are always "
        "reported when an episode ends); off by default because RLlib converts every info key per env",
    )
    seed: int | None = Field(None, description="episode-sampling seed (reset(seed=...) overrides)")


class GatedEnvConfig(PortfolioEnvConfig):
    """``env_config`` of ``raytrade/GatedSymbolEnv-v0``: per-symbol gate modes and kelly sizing."""

    edge_column: str = Field("fc_mean", description="feature: expected next-bar return (signed)")
    sigma_column: str = Field("vol_20", description="feature: per-bar return volatility")
    kelly_scale: float = Field(0.2, ge=0, description="kelly_lite = min(cap, scale * edge / sigma^2)")
    kelly_cap: float = Field(0.15, ge=0, le=1, description="cap of the kelly fraction per symbol")
    probe_weight: float = Field(0.002, ge=0, le=1, description="fixed probe size, fraction of equity")
    passive_fill_prob: float = Field(0.6, ge=0, le=1, description="chance a passive order fills")
    passive_spread_mult: float = Field(
        -0.5, description="fraction of the half-spread a passive fill pays (negative: earned)"
    )
    passive_slippage_mult: float = Field(0.0, ge=0, description="fraction of slippage a passive fill pays")
