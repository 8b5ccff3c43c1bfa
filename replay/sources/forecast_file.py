"""External forecast files (CSV or parquet) as rows of the ``forecasts`` table.

A file holds one row per (symbol, ts, source, horizon) and either
* quantile columns ``q05, q25, q50, q75, q95`` (optionally ``mean``, ``std``, ``skew``), or
* sample columns ``sample_0 … sample_K`` (e.g. Toto or Kronos sample paths' end values),
both as simple returns over ``horizon`` bars from ts's close. From samples, mean / std / skew /
quantiles are the sample statistics. From quantiles alone: mean = q50, std = (q75 - q25) / 1.349
(a normal's IQR), skew = Bowley's (q75 + q25 - 2 q50) / (q75 - q25). ``ts`` must carry a UTC offset
or be a plain date (labelled 00:00 UTC, as the csv source does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import skew as sample_skew

from raytrade.replay.schema import FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES
from raytrade.replay.sources.csv_dir import SourceFolderError
from raytrade.replay.validation import ReplayValidationError, RowError

KEYS = ("symbol", "ts", "source", "horizon")


def read_forecast_file(path: str | Path) -> pd.DataFrame:
    """The file at ``path`` as ``FORECASTS_SCHEMA`` rows (unvalidated values, complete columns)."""
    file = Path(path)
    if not file.is_file():
        raise SourceFolderError(f"--path {file} is not a file")
    frame = pd.read_parquet(file) if file.suffix.lower() == ".parquet" else pd.read_csv(file)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [k for k in KEYS if k not in frame.columns]
    if missing:
        raise ReplayValidationError(
            [
                RowError(
                    "forecasts",
                    None,
                    missing[0],
                    None,
                    f"required column is missing (have {list(frame.columns)})",
                )
            ],
            origin=str(file),
        )
    samples = sorted(
        (c for c in frame.columns if c.startswith("sample_")), key=lambda c: int(c.split("_")[1])
    )
    out = frame[list(KEYS)].copy()
    out["symbol"] = out["symbol"].astype(str).str.upper()
    if out["ts"].dtype == object:
        text = out["ts"].astype(str)
        date_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}")
        out["ts"] = pd.to_datetime(
            text.where(~date_only, text + "T00:00:00+00:00"), utc=True, format="ISO8601"
        )
    if samples:
        values = frame[samples].to_numpy(dtype="float64")
        out["mean"] = values.mean(axis=1)
        out["std"] = values.std(axis=1, ddof=1) if values.shape[1] > 1 else 0.0
        out["skew"] = sample_skew(values, axis=1, bias=False) if values.shape[1] > 2 else np.nan
        for name, q in zip(FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES, strict=True):
            out[name] = np.quantile(values, q, axis=1)
        out["n_samples"] = values.shape[1]
        return out
    absent = [c for c in FORECAST_QUANTILE_COLUMNS if c not in frame.columns]
    if absent:
        raise ReplayValidationError(
            [
                RowError(
                    "forecasts", None, absent[0], None, "need quantile columns q05..q95 or sample_0..sample_K"
                )
            ],
            origin=str(file),
        )
    for name in FORECAST_QUANTILE_COLUMNS:
        out[name] = frame[name]
    iqr = frame["q75"] - frame["q25"]
    out["mean"] = frame["mean"] if "mean" in frame.columns else frame["q50"]
    out["std"] = frame["std"] if "std" in frame.columns else iqr / 1.349
    bowley = (frame["q75"] + frame["q25"] - 2 * frame["q50"]) / iqr.where(iqr > 0)
    out["skew"] = frame["skew"] if "skew" in frame.columns else bowley
    out["n_samples"] = None
    return out
