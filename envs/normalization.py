"""Per-feature normalisation of observations, fitted on the training window only.

Design decisions
----------------
* **Train window only.** :func:`fit_normalizer` sees one ``MarketData`` (the training split); the
  statistics it returns are frozen numbers in :class:`FeatureNormalizer`, which lives in the env
  config (``PortfolioEnvConfig.normalizer``). The env config travels with every checkpoint and
  registry manifest, so training, the Tune objective, evaluation and serving apply the very same
  numbers through the one observation encoder (``envs.gym_envs.batched_observation``). Nothing is
  ever re-fitted on validation, test or live data.
* **Robust by default.** ``robust``: centre = median, scale = interquartile range / 1.349 (the IQR
  of a normal is 1.349 sigma, so the scale reads as a standard deviation); ``standard``: mean and
  standard deviation. A column with no spread in the window (scale <= 1e-12) gets scale 1, so it is
  merely centred. Normalised values are clipped to ``[-clip, clip]`` so a crash bar cannot saturate
  the network far outside what it was trained on.
* **Missing values are explicit.** Statistics use only listed bars whose value is present
  (``MarketData.feature_missing`` is False; the loader's features are finite, NaN filled by 0). In
  the observation a missing value is written as 0 after normalisation (the training-window centre)
  and the encoder appends one extra channel per asset: the fraction of the observed columns missing
  at that bar (0 when all are present). The store's nulls mean "not enough history yet", which is
  known at the bar itself: no look-ahead.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raytrade.envs.market_data import MarketData

NormalizerMethod = Literal["robust", "standard"]
MISSING_CHANNEL = "missing_fraction"
"""Name of the channel the encoder appends after the normalised columns (serving, attributions)."""
_IQR_TO_SIGMA = 1.349
_MIN_SCALE = 1e-12


class FeatureNormalizer(BaseModel):
    """``(x - center) / scale`` per observed column, clipped; fitted by :func:`fit_normalizer`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: tuple[str, ...] = Field(description="observed feature columns, in observation order")
    center: tuple[float, ...] = Field(description="per column: median (robust) or mean (standard)")
    scale: tuple[float, ...] = Field(description="per column: IQR / 1.349 (robust) or std; > 0")
    method: NormalizerMethod = "robust"
    clip: float = Field(10.0, gt=0, description="normalised values are clipped to [-clip, clip]")
    fitted_on: str = Field("", description="the window the statistics come from (e.g. 'replay train')")

    @model_validator(mode="after")
    def _lengths(self) -> FeatureNormalizer:
        n = len(self.columns)
        for name in ("center", "scale"):
            values = getattr(self, name)
            if len(values) != n:
                raise ValueError(f"normalizer.{name} has {len(values)} entries, expected {n} (one a column)")
            if not all(np.isfinite(values)):
                raise ValueError(f"normalizer.{name} must be finite, got {values}")
        if any(s <= 0 for s in self.scale):
            raise ValueError(f"normalizer.scale must be > 0, got {self.scale}")
        return self

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(centre, 1 / scale) as float32 arrays, built once (``apply`` is on the sampling hot path)."""
        return np.asarray(self.center, np.float32), (1.0 / np.asarray(self.scale, np.float64)).astype(
            np.float32
        )

    def apply(self, features: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
        """``features [..., F]`` (columns in ``self.columns`` order) -> ``[..., F + 1]`` float32:
        normalised and clipped values (0 where missing) followed by the fraction missing.

        ``missing`` flags absent values (``MarketData.feature_missing``); without it a non-finite
        value counts as missing."""
        x = np.asarray(features, dtype=np.float32)
        center, inv_scale = self._arrays
        out = np.empty((*x.shape[:-1], x.shape[-1] + 1), dtype=np.float32)
        z = out[..., :-1]
        np.subtract(x, center, out=z)
        np.multiply(z, inv_scale, out=z)
        np.clip(z, -self.clip, self.clip, out=z)
        absent = ~np.isfinite(x) if missing is None else np.asarray(missing, dtype=bool)
        z[absent] = 0.0
        out[..., -1] = np.count_nonzero(absent, axis=-1) / np.float32(x.shape[-1])
        return out


def fit_normalizer(
    data: MarketData,
    columns: Sequence[str],
    method: NormalizerMethod = "robust",
    clip: float = 10.0,
    fitted_on: str = "",
) -> FeatureNormalizer:
    """Statistics of ``columns`` over ``data`` (pass the training window only): listed bars with a
    present value. A column with no such value is an error naming it."""
    center, scale = [], []
    for name in columns:
        if name not in data.feature_names:
            raise ValueError(f"feature column {name!r} is not in the data: {list(data.feature_names)}")
        k = data.feature_names.index(name)
        values = data.features[:, :, k].astype(np.float64)
        ok = data.listed & np.isfinite(values)
        if data.feature_missing is not None:
            ok &= ~data.feature_missing[:, :, k]
        v = values[ok]
        if v.size == 0:
            raise ValueError(f"feature column {name!r} has no present value on a listed bar of the window")
        if method == "robust":
            q25, mid, q75 = np.percentile(v, [25, 50, 75])
            c, s = float(mid), float(q75 - q25) / _IQR_TO_SIGMA
        else:
            c, s = float(v.mean()), float(v.std())
        center.append(c)
        scale.append(s if s > _MIN_SCALE else 1.0)
    return FeatureNormalizer(
        columns=tuple(columns),
        center=tuple(center),
        scale=tuple(scale),
        method=method,
        clip=clip,
        fitted_on=fitted_on,
    )
