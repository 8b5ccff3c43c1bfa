"""Cost profiles: slippage parameters fitted from logged fills, and their one mapping onto ``CostConfig``.

A profile is the typed document ``raytrade calibrate-costs`` writes (``envs.cost_calibration`` fits
it). The simulator, ``raytrade evaluate`` and ``raytrade tune`` take it through
:func:`apply_cost_profile` only, so what a profile changes is stated once, here:

* ``spread_fraction`` -> ``CostConfig.spread_fraction``;
* ``tier_base_bps[k]`` -> ``CostConfig.tier_base_bps[k]`` for every tier that had fills; a tier without
  fills keeps the config's value (nothing was measured there);
* ``impact_coef_bps`` -> ``CostConfig.impact_coef_bps``.

The volatility coefficient is a diagnostic only: the simulator's cost model has no volatility term,
so a profile whose ``volatility_coef`` is significant says the model misprices volatile bars; it is
never applied. A profile fitted with other tier thresholds or another participation cap measured
other quantities and is refused, naming the field. The parameters describe market orders only (the
simulator costs passive fills with its own multipliers); a version 1 profile, fitted before passive
(limit) fills were left out, is refused when loaded.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raytrade.envs.costs import CostConfig
from raytrade.replay.errors import InputError, first_problem

__all__ = [
    "PROFILE_VERSION",
    "CostProfile",
    "CostProfileError",
    "FittedParameter",
    "OutlierFill",
    "apply_cost_profile",
    "cost_config_from_profile",
    "load_cost_profile",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
PROFILE_VERSION: Literal[2] = 2
"""Version 1 profiles fitted passive (limit) fills as market orders: refused by :func:`load_cost_profile`."""


class CostProfileError(InputError):
    """A cost profile that cannot be read or applied; the message names the field and the value."""


class FittedParameter(BaseModel):
    """One fitted coefficient with its heteroskedasticity-robust (HC1) standard error."""

    model_config = _FROZEN

    value: float = Field(description="least-squares estimate, in the parameter's units")
    std_error: float = Field(ge=0, description="HC1 standard error of the estimate")

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95 % interval ``value +- 1.96 std_error``."""
        return (self.value - 1.96 * self.std_error, self.value + 1.96 * self.std_error)


class OutlierFill(BaseModel):
    """A logged fill the calibration capped: its residual from the robust fit was too large."""

    model_config = _FROZEN

    decision_id: str = Field(description="the fill row's decision_id (``<decision>:fill``)")
    slippage_bps: float = Field(
        description="its cost against the arrival price (the decision-time mid, or the open it waited "
        "for), bps"
    )
    residual_bps: float = Field(description="its residual from the robust (Huber) fit, bps")


class CostProfile(BaseModel):
    """Slippage parameters of ``envs.costs`` fitted from the ``experience`` table's market-order fills.

    The fitted model, per fill, in bps of the fill's notional against its arrival price (the
    decision-time mid, or the open a fill decided while the market was closed waited for):
    ``spread_fraction * spread_bps + tier_base_bps[tier] + impact_coef_bps * sqrt(participation)``.
    """

    model_config = _FROZEN

    kind: Literal["raytrade.cost_profile"] = "raytrade.cost_profile"
    version: Literal[2] = Field(
        PROFILE_VERSION, description="2: passive fills left out of the fit (version 1 fitted them in)"
    )
    n_fills: int = Field(ge=1, description="fills the fit used")
    n_dropped: int = Field(ge=0, description="logged fills left out (missing inputs; reasons printed)")
    n_passive: int = Field(
        ge=0,
        description="passive (limit) fills left out of the fit: the parameters describe market orders "
        "(envs.gate_modes)",
    )
    passive_mean_slippage_bps: float | None = Field(
        description="the passive fills' mean logged cost against the decision-time mid, bps (negative: "
        "better than the mid); None: no passive fills"
    )
    n_rereferenced: int | None = Field(
        None,
        ge=0,
        description="fills used that were decided while the market was closed and waited for the open: "
        "their cost is measured from that open (the arrival price), not the decision-time mid "
        "(envs.cost_calibration); None: a profile of an earlier raytrade, which measured every fill "
        "from the mid",
    )
    fills_from: datetime = Field(description="decision time of the first fill used (UTC)")
    fills_to: datetime = Field(description="decision time of the last fill used (UTC)")
    spread_fraction: FittedParameter = Field(description="share of the full quoted spread paid per fill")
    tier_base_bps: tuple[FittedParameter | None, FittedParameter | None, FittedParameter | None] = Field(
        description="base slippage per liquidity tier, bps; None: no fills in that tier"
    )
    tier_fills: tuple[int, int, int] = Field(description="fills per liquidity tier")
    impact_coef_bps: FittedParameter = Field(description="bps per square root of participation")
    volatility_coef: FittedParameter | None = Field(
        description="diagnostic, never applied: extra bps per bp of per-bar volatility (vol_20) when "
        "added to the model; None when the fills cannot separate it"
    )
    residual_std_bps: float = Field(ge=0, description="standard deviation of the fit's residuals, bps")
    n_outliers: int = Field(
        0, ge=0, description="usable fills capped by the residual screen (envs.cost_calibration)"
    )
    outliers: tuple[OutlierFill, ...] = Field(
        (), description="the worst of the fills capped, largest residual first (at most 5)"
    )
    outlier_threshold_bps: float | None = Field(
        None, ge=0, description="residual at which a fill was capped, bps (None: not screened)"
    )
    tier_thresholds_usd: tuple[float, float] = Field(description="tier thresholds the fills were sorted by")
    max_participation: float = Field(gt=0, le=1, description="participation cap the fit clipped at")


def apply_cost_profile(cfg: CostConfig, profile: CostProfile) -> CostConfig:
    """``cfg`` with the profile's fitted slippage parameters (module docstring: the mapping).

    Refused (:class:`CostProfileError`, naming the field): a profile classified with other tier
    thresholds or clipped at another participation cap than ``cfg``'s, and a fitted value the cost
    model cannot take (a negative spread fraction, base or impact: the fills contradict the model).
    """
    if tuple(profile.tier_thresholds_usd) != tuple(cfg.tier_thresholds_usd):
        raise CostProfileError(
            f"cost profile tier_thresholds_usd={profile.tier_thresholds_usd} differs from the cost "
            f"config's {cfg.tier_thresholds_usd}: its tier bases measure other tiers"
        )
    if profile.max_participation != cfg.max_participation:
        raise CostProfileError(
            f"cost profile max_participation={profile.max_participation} differs from the cost "
            f"config's {cfg.max_participation}"
        )
    fitted = {
        "spread_fraction": profile.spread_fraction.value,
        "impact_coef_bps": profile.impact_coef_bps.value,
        **{f"tier_base_bps[{k}]": p.value for k, p in enumerate(profile.tier_base_bps) if p is not None},
    }
    for name, value in fitted.items():
        if value < 0:
            raise CostProfileError(
                f"cost profile {name}={value:.4g} is negative: the fills contradict the cost model; "
                "not applied"
            )
    bases = tuple(cfg.tier_base_bps[k] if p is None else p.value for k, p in enumerate(profile.tier_base_bps))
    return cfg.model_copy(
        update={
            "spread_fraction": profile.spread_fraction.value,
            "impact_coef_bps": profile.impact_coef_bps.value,
            "tier_base_bps": bases,
        }
    )


def load_cost_profile(path: str | os.PathLike[str]) -> CostProfile:
    """The profile at ``path``; a missing or invalid file, or one of version 1 (fitted with passive
    fills), is a :class:`CostProfileError` naming it."""
    file = Path(path)
    if not file.is_file():
        raise CostProfileError(f"cost profile {str(file)!r} does not exist")
    text = file.read_text()
    try:
        version = json.loads(text).get("version")
    except (ValueError, AttributeError):
        version = None  # pydantic names what is wrong below
    if version == 1:
        raise CostProfileError(
            f"cost profile {str(file)!r} has version=1: it fitted passive (limit) fills as market orders, "
            "which understates costs; run raytrade calibrate-costs again"
        )
    try:
        return CostProfile.model_validate_json(text)
    except ValidationError as exc:  # the first problem and a count, never the file's content
        raise CostProfileError(
            f"cost profile {str(file)!r} is not a raytrade cost profile: {first_problem(exc)}"
        ) from None


def cost_config_from_profile(path: str | os.PathLike[str], base: CostConfig | None = None) -> CostConfig:
    """``base`` (default: the loop's ``CostConfig()``) with the profile at ``path`` applied: what a
    ``--cost-profile PATH`` option means for the simulator, evaluation and tuning."""
    return apply_cost_profile(base or CostConfig(), load_cost_profile(path))


def with_spread_fraction(cfg: CostConfig, spread_fraction: float | None) -> CostConfig:
    """``cfg`` paying ``spread_fraction`` of the stored spread per side (None: ``cfg`` as it is): what a
    ``--spread-fraction`` option means. A sensitivity knob: on a store without quotes every spread is
    the high/low estimate, which on daily bars reads mostly volatility (README: the experiment)."""
    if spread_fraction is None:
        return cfg
    return CostConfig.model_validate(cfg.model_dump() | {"spread_fraction": spread_fraction})
