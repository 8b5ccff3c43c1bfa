"""Forecast recalibration: a small residual MLP per volatility regime, fitted walk-forward on the past.

The forecast group's quantiles (``fc_q05 .. fc_q95``, a forecast of the next bar's simple return made
at bar ``t``'s close) are often too narrow or shifted. This module learns a correction and writes the
recalibrated quantiles as ``fc_recal_q05 .. fc_recal_q95``.

Model (per asset class and per ``vol_regime_code`` 0 / 1 / 2):

* each row is standardised by its own forecast: centre ``m = q50``, scale ``s = q95 - q05``,
  offsets ``u_k = (q_k - m) / s`` (five numbers: the forecast's shape), target
  ``y = (realised_{t+1} - m) / s``;
* the MLP ``u -> u + f(u)`` (one hidden layer of ``hidden`` tanh units, output layer initialised at
  zero, so an unfitted model is the identity) is trained full-batch with Adam on the pinball loss of
  the five quantile levels; its outputs are sorted (rearrangement), so quantiles never cross;
* recalibrated ``q'_k = m + s * sorted(u + f(u))_k``.

Walk-forward, past data only. Models are refitted every ``refit_every`` bars, at bar positions
``refit_every, 2 refit_every, ...`` counted from the calendar's first bar (so the schedule never
depends on where the data ends). The fit at position ``p`` trains on the rows ``s <= p - 1`` whose
outcome (the return of bar ``s + 1 <= p``) is known at ``p`` (expanding, or the last
``max_train_bars`` bars; at most the latest ``max_train_rows`` rows), and recalibrates rows
``p .. p + refit_every - 1``. A regime with fewer than ``min_train`` resolved rows at ``p`` has no
model: its rows stay null, like every row before the first refit (the store's null means "not
enough history yet"). Training is seeded and runs on one CPU thread, so a truncated history gives
exactly the same values (tests truncate and compare).

Diagnostics (:func:`calibration_summary`): coverage of the 90 % (q05..q95) and 50 % (q25..q75)
intervals, and the PIT histogram at the forecast's resolution: the share of outcomes below q05,
between consecutive quantiles and above q95 (ideal: 5, 20, 25, 25, 20, 5 %).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from raytrade.replay.schema import FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES

RECAL_COLUMNS: tuple[str, ...] = tuple(f"fc_recal_{q}" for q in FORECAST_QUANTILE_COLUMNS)
SOURCE_COLUMNS: tuple[str, ...] = tuple(f"fc_{q}" for q in FORECAST_QUANTILE_COLUMNS)
PIT_IDEAL: tuple[float, ...] = tuple(
    float(x) for x in np.diff(np.concatenate([[0.0], FORECAST_QUANTILES, [1.0]]))
)
"""Share of outcomes each PIT bin holds under a calibrated forecast (below q05, q05..q25, ...)."""


class RecalibrationConfig(BaseModel):
    """Walk-forward schedule and the residual MLP's size and training (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refit_every: int = Field(63, ge=1, description="bars between refits (a quarter of daily bars)")
    min_train: int = Field(200, ge=20, description="resolved rows a regime needs before it gets a model")
    max_train_bars: int | None = Field(None, ge=2, description="rolling window in bars (None: expanding)")
    max_train_rows: int = Field(2000, ge=20, description="most recent resolved rows one fit trains on")
    hidden: int = Field(16, ge=1, description="hidden tanh units of the residual MLP")
    steps: int = Field(100, ge=1, description="full-batch Adam steps per fit")
    learning_rate: float = Field(0.02, gt=0, description="Adam learning rate")
    seed: int = Field(0, description="seed of every fit's initialisation")


class CalibrationSummary(NamedTuple):
    """Calibration of quantile forecasts against outcomes (``n`` resolved rows)."""

    n: int
    coverage_90: float  # share of outcomes inside q05..q95 (ideal 0.90)
    coverage_50: float  # share inside q25..q75 (ideal 0.50)
    pit_bins: tuple[float, ...]  # share in each bin of PIT_IDEAL's order

    @property
    def pit_error(self) -> float:
        """Largest absolute gap between a PIT bin's share and its ideal share."""
        return max(abs(a - b) for a, b in zip(self.pit_bins, PIT_IDEAL, strict=True))


def calibration_summary(quantiles: np.ndarray, outcome: np.ndarray) -> CalibrationSummary:
    """Summary of ``quantiles`` ``[n, 5]`` (q05..q95) against ``outcome`` ``[n]``; rows with a NaN
    are left out."""
    ok = np.isfinite(quantiles).all(axis=1) & np.isfinite(outcome)
    q, y = quantiles[ok], outcome[ok]
    n = len(y)
    if n == 0:
        return CalibrationSummary(0, float("nan"), float("nan"), tuple(float("nan") for _ in PIT_IDEAL))
    below = (y[:, None] < q).sum(axis=1)  # 0: below q05 ... 5: above q95 (PIT bin index, reversed)
    bins = np.bincount(len(FORECAST_QUANTILES) - below, minlength=len(PIT_IDEAL)) / n
    inside_90 = (y >= q[:, 0]) & (y <= q[:, -1])
    inside_50 = (y >= q[:, 1]) & (y <= q[:, 3])
    return CalibrationSummary(
        n, float(inside_90.mean()), float(inside_50.mean()), tuple(float(b) for b in bins)
    )


def _standardise(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre ``q50``, scale ``q95 - q05``, offsets ``u``) of quantile rows ``[n, 5]``."""
    centre = q[:, 2]
    scale = q[:, -1] - q[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero scale: the row is not usable
        return centre, scale, (q - centre[:, None]) / scale[:, None]


def _fit(u: np.ndarray, y: np.ndarray, cfg: RecalibrationConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The residual MLP fitted on offsets ``u`` ``[n, 5]`` and standardised outcomes ``y`` ``[n]``,
    as a function from offsets to sorted recalibrated offsets."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order, so fits are reproducible
    try:
        torch.manual_seed(cfg.seed)
        k = u.shape[1]
        head = torch.nn.Linear(cfg.hidden, k)
        torch.nn.init.zeros_(head.weight)  # an unfitted model is the identity
        torch.nn.init.zeros_(head.bias)
        net = torch.nn.Sequential(torch.nn.Linear(k, cfg.hidden), torch.nn.Tanh(), head)
        levels = torch.tensor(FORECAST_QUANTILES, dtype=torch.float32)
        x = torch.from_numpy(u.astype(np.float32))
        target = torch.from_numpy(y.astype(np.float32))[:, None]
        params = list(net.parameters())
        first = [torch.zeros_like(w) for w in params]
        second = [torch.zeros_like(w) for w in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(1, cfg.steps + 1):
            err = target - (x + net(x))
            loss = torch.maximum(levels * err, (levels - 1.0) * err).mean()
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():  # Adam, written out: torch.optim's first use imports the compiler stack
                for w, g, m1, m2 in zip(params, grads, first, second, strict=True):
                    m1.mul_(beta1).add_(g, alpha=1 - beta1)
                    m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    denom = (m2 / (1 - beta2**step)).sqrt_().add_(eps)
                    w.sub_(cfg.learning_rate * (m1 / (1 - beta1**step)) / denom)
    finally:
        torch.set_num_threads(threads)

    def apply(offsets: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = torch.from_numpy(offsets.astype(np.float32))
            return np.sort((z + net(z)).numpy().astype(np.float64), axis=1)  # rearrangement: no crossing

    return apply


def recalibrate_quantiles(
    quantiles: dict[str, pd.DataFrame],
    regime: pd.DataFrame,
    realised: pd.DataFrame,
    cfg: RecalibrationConfig,
) -> dict[str, pd.DataFrame]:
    """Recalibrated ``fc_recal_q*`` frames (index: calendar, columns: symbols) from the forecast's
    ``fc_q*`` frames, ``vol_regime_code`` and the realised simple return of each bar (``realised`` at
    ``t`` is the outcome of the forecast made at ``t - 1``). Null where no model exists yet."""
    index, columns = regime.index, regime.columns
    q = np.stack(
        [quantiles[c].reindex(index=index, columns=columns).to_numpy(np.float64) for c in SOURCE_COLUMNS], -1
    )
    t_total, n_sym, k = q.shape
    outcome = np.full((t_total, n_sym), np.nan)
    outcome[:-1] = realised.reindex(index=index, columns=columns).to_numpy(np.float64)[1:]
    codes = regime.reindex(index=index, columns=columns).to_numpy(np.float64)
    centre, scale, u = _standardise(q.reshape(-1, k))
    centre, scale, u = (
        centre.reshape(t_total, n_sym),
        scale.reshape(t_total, n_sym),
        u.reshape(t_total, n_sym, k),
    )
    usable = np.isfinite(u).all(-1) & (scale > 0) & np.isfinite(codes)
    y = (outcome - centre) / np.where(scale > 0, scale, 1.0)
    out = np.full(q.shape, np.nan)
    bar = np.arange(t_total)[:, None].repeat(n_sym, axis=1)
    for p in range(cfg.refit_every, t_total, cfg.refit_every):
        train_rows = usable & np.isfinite(y) & (bar <= p - 1)
        if cfg.max_train_bars is not None:
            train_rows &= bar >= p - cfg.max_train_bars
        block = usable & (bar >= p) & (bar < p + cfg.refit_every)
        for code in np.unique(codes[block]):
            train = train_rows & (codes == code)
            if train.sum() < cfg.min_train:
                continue
            latest = np.flatnonzero(train.ravel())[-cfg.max_train_rows :]  # bar-major order
            model = _fit(u.reshape(-1, k)[latest], y.ravel()[latest], cfg)
            rows = block & (codes == code)
            out[rows] = centre[rows][:, None] + scale[rows][:, None] * model(u[rows])
    return {
        name: pd.DataFrame(out[:, :, j], index=index, columns=columns) for j, name in enumerate(RECAL_COLUMNS)
    }


REPORT_COLUMNS: tuple[str, ...] = ("symbol", "ts", "asset_class", "ret_1", "vol_regime_code", *SOURCE_COLUMNS)
"""Features-table columns :func:`recalibration_report` reads."""


def recalibration_report(
    features: pd.DataFrame, cfg: RecalibrationConfig
) -> dict[str, tuple[CalibrationSummary, CalibrationSummary]]:
    """(before, after) calibration of the forecast quantiles of a long features frame
    (:data:`REPORT_COLUMNS`), recalibrated walk-forward per asset class as the feature build does;
    keyed ``all`` and ``regime N``. Both are scored on the same rows: those a model fitted on the
    past recalibrated and whose next-bar outcome is known."""
    before: list[np.ndarray] = []
    after: list[np.ndarray] = []
    outcomes: list[np.ndarray] = []
    regimes: list[np.ndarray] = []
    for _, rows in features.groupby("asset_class", sort=True):
        wide = {
            c: rows.pivot(index="ts", columns="symbol", values=c).astype("float64").sort_index()
            for c in REPORT_COLUMNS[3:]
        }
        realised = np.expm1(wide["ret_1"])
        recal = recalibrate_quantiles(
            {c: wide[c] for c in SOURCE_COLUMNS}, wide["vol_regime_code"], realised, cfg
        )
        before.append(
            np.stack([wide[c].to_numpy() for c in SOURCE_COLUMNS], -1).reshape(-1, len(SOURCE_COLUMNS))
        )
        after.append(
            np.stack([recal[c].to_numpy() for c in RECAL_COLUMNS], -1).reshape(-1, len(RECAL_COLUMNS))
        )
        outcomes.append(realised.shift(-1).to_numpy().reshape(-1))
        regimes.append(wide["vol_regime_code"].to_numpy().reshape(-1))
    if not outcomes:
        return {}
    q0, q1, y, code = (np.concatenate(a) for a in (before, after, outcomes, regimes))
    scored = np.isfinite(q1).all(axis=1) & np.isfinite(y)
    report = {"all": (calibration_summary(q0[scored], y[scored]), calibration_summary(q1[scored], y[scored]))}
    for value in np.unique(code[scored]):
        rows = scored & (code == value)
        report[f"regime {int(value)}"] = (
            calibration_summary(q0[rows], y[rows]),
            calibration_summary(q1[rows], y[rows]),
        )
    return report
