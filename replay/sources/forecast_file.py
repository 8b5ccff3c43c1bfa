"""External forecast files (CSV or parquet) as rows of the ``forecasts`` table.

A file holds one row per (symbol, ts, source, horizon) and either
* quantile columns ``q05, q25, q50, q75, q95`` (optionally ``mean``, ``std``, ``skew``), or
* sample columns ``sample_0 … sample_K`` (e.g. Toto or Kronos sample paths' end values),
both as simple returns over ``horizon`` bars from ts's close. From samples, mean / std / skew /
quantiles are the sample statistics. From quantiles alone: mean = q50, std = (q75 - q25) / 1.349
(a normal's IQR), skew = Bowley's (q75 + q25 - 2 q50) / (q75 - q25). ``ts`` must carry a UTC offset
or be a plain date (labelled 00:00 UTC, as the csv source does).

Impossible values are refused (:func:`forecast_value_errors`), since they reach the features
policies observe (``fc_q05``, ``fc_edge_bps``, the kelly gate): ``horizon`` must be a whole number
of bars >= 1; every return (``q05…q95``, ``mean``, each ``sample_k``) must lie in ``(-1, 10]``: a
simple return cannot be at or below -100 %, and one above +1000 % is taken as percent units
(``-3.0`` meant -3 %); ``std`` must lie in ``[0, 10]``; a given ``skew`` in ``[-100, 100]``;
quantiles must not decrease with their level (``q05 <= q25 <= … <= q95``); a ``ts`` with a time of
day must carry its offset. A refusal names the file, the row (1 = the first line after the header),
the column and the value, and nothing is written. Percent units small enough to be plausible returns
(``0.5`` for 0.5 %) cannot be told apart and are not caught.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from scipy.stats import skew as sample_skew

from raytrade.replay.schema import FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES
from raytrade.replay.sources.csv_dir import SourceFolderError
from raytrade.replay.validation import ReplayValidationError, RowError, conform

KEYS = ("symbol", "ts", "source", "horizon")
RETURN_FLOOR: Final[float] = -1.0
"""A forecast return must be above this (exclusive): a simple return cannot lose more than 100 %."""
RETURN_CEILING: Final[float] = 10.0
"""A forecast return (and ``std``) must be at most this (+1000 %): above it, surely percent units."""
SKEW_BOUND: Final[float] = 100.0
"""A given ``skew`` must lie within +- this: a sample of n values has a skewness within about sqrt(n),
and a larger figure (1e300 reached the features whole) is a broken file, not a forecast."""
TIME_OF_DAY: Final = r"\d{4}-?\d{2}-?\d{2}[Tt ]\d|\d{1,2}:\d{2}"
"""A ``ts`` that carries a time of day: a date followed by one (``2024-01-02T16``), or ``HH:MM``."""
OFFSET_AT_END: Final = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
"""How a ``ts`` with a time of day ends when it says its clock: ``Z``, ``+HH``, ``+HH:MM``, ``-HHMM``.
Anything else with a time of day is refused, whatever its form (``2024-01-02 16:00``, the basic
``20240102T160000``, an hour alone ``2024-01-02T16``): it was read as UTC, a 16:00 New York stamp as
12:00 New York."""


def read_forecast_file(path: str | Path) -> pd.DataFrame:
    """The file at ``path`` as validated ``FORECASTS_SCHEMA`` rows. Raises ``ReplayValidationError``
    naming the file, row (1 = the first line after the header), column and value of a refused row
    (module docstring)."""
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
    if not samples:
        absent = [c for c in FORECAST_QUANTILE_COLUMNS if c not in frame.columns]
        if absent:
            raise ReplayValidationError(
                [
                    RowError(
                        "forecasts",
                        None,
                        absent[0],
                        None,
                        "need quantile columns q05..q95 or sample_0..sample_K",
                    )
                ],
                origin=str(file),
            )
    errors = forecast_value_errors(frame, samples, first_row=1)
    if errors:
        raise ReplayValidationError(errors, origin=str(file))
    return _validated(_summarised(frame, samples), file)


def _validated(out: pd.DataFrame, file: Path) -> pd.DataFrame:
    """``out`` conformed to the forecasts table; a refused row is named by its line in ``file``."""
    valid, errors, _ = conform("forecasts", out)
    if errors:
        shifted = [
            RowError(e.table, None if e.row is None else e.row + 1, e.column, e.value, e.reason)
            for e in errors
        ]
        raise ReplayValidationError(shifted, origin=str(file))
    return valid.to_pandas()


def _summarised(frame: pd.DataFrame, samples: list[str]) -> pd.DataFrame:
    """The file's rows with the forecasts table's columns (module docstring: statistics from the
    samples, or from the quantiles)."""
    out = frame[list(KEYS)].copy()
    out["symbol"] = out["symbol"].astype(str).str.upper()
    if out["ts"].dtype == object:
        text = out["ts"].astype(str)
        date_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}")
        out["ts"] = pd.to_datetime(
            text.where(~date_only, text + "T00:00:00+00:00"), utc=True, format="ISO8601"
        )
    if samples:
        values = frame[samples].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        out["mean"] = values.mean(axis=1)
        out["std"] = values.std(axis=1, ddof=1) if values.shape[1] > 1 else 0.0
        out["skew"] = sample_skew(values, axis=1, bias=False) if values.shape[1] > 2 else np.nan
        for name, q in zip(FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES, strict=True):
            out[name] = np.quantile(values, q, axis=1)
        out["n_samples"] = values.shape[1]
        return out
    for name in FORECAST_QUANTILE_COLUMNS:
        out[name] = frame[name]
    iqr = frame["q75"] - frame["q25"]
    out["mean"] = frame["mean"] if "mean" in frame.columns else frame["q50"]
    out["std"] = frame["std"] if "std" in frame.columns else iqr / 1.349
    bowley = (frame["q75"] + frame["q25"] - 2 * frame["q50"]) / iqr.where(iqr > 0)
    out["skew"] = frame["skew"] if "skew" in frame.columns else bowley
    out["n_samples"] = None
    return out


def forecast_value_errors(
    frame: pd.DataFrame, samples: Sequence[str] = (), first_row: int = 0
) -> list[RowError]:
    """The first impossible value of each row of ``frame``, in row order (module docstring: horizon,
    returns in ``(-1, 10]``, ``std`` in ``[0, 10]``, quantiles non-decreasing; a checked value that is
    missing or not a number is refused too). Row ``i`` of ``frame`` is reported as ``first_row + i``.
    With ``samples`` (the sample columns) those are the returns checked: a samples file's other
    columns are computed from them."""
    bad = np.zeros(len(frame), dtype=bool)
    found: dict[int, RowError] = {}

    def flag(mask: np.ndarray, column: str, reason: str) -> None:
        nonlocal bad
        for i in np.flatnonzero(mask & ~bad):
            value = frame[column].iloc[i]
            plain = value.item() if isinstance(value, np.generic) else value
            found[int(i)] = RowError("forecasts", first_row + int(i), column, plain, reason)
        bad |= mask

    def number(column: str) -> np.ndarray:
        return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64")

    horizon = number("horizon")
    whole = np.isfinite(horizon) & (horizon >= 1) & (np.floor(horizon) == horizon)
    flag(~whole, "horizon", "must be a whole number of bars >= 1")
    if "ts" in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame["ts"]):  # text
        text = frame["ts"].astype(str).str.strip()
        flag(
            (text.str.contains(TIME_OF_DAY) & ~text.str.contains(OFFSET_AT_END)).to_numpy(dtype=bool),
            "ts",
            "a time of day without a UTC offset (which clock?): write it with Z or +HH:MM, or give a "
            "plain date",
        )
    if "skew" in frame.columns and not samples:
        skew = number("skew")  # missing: unknown (NaN), as a file without the column
        flag(
            np.isinf(skew) | (np.abs(skew) > SKEW_BOUND),
            "skew",
            f"must lie in [-{SKEW_BOUND:g}, {SKEW_BOUND:g}]",
        )
    given = [c for c in ("mean",) if c in frame.columns]
    for column in list(samples) or [*given, *FORECAST_QUANTILE_COLUMNS]:
        values = number(column)
        flag(~np.isfinite(values), column, "not a finite number")
        flag(
            values <= RETURN_FLOOR,
            column,
            f"a simple return must be > {RETURN_FLOOR:g} (a loss cannot exceed 100 %); percent units? "
            "give fractions (-0.03 for -3 %)",
        )
        flag(
            values > RETURN_CEILING,
            column,
            f"a return above {RETURN_CEILING:g} (+{RETURN_CEILING * 100:.0f} %) is taken as percent "
            "units; give fractions (0.03 for 3 %)",
        )
    if samples:
        return [found[i] for i in sorted(found)]
    if "std" in frame.columns:
        std = number("std")
        flag(~np.isfinite(std), "std", "not a finite number")
        flag(
            (std < 0) | (std > RETURN_CEILING),
            "std",
            f"must lie in [0, {RETURN_CEILING:g}] (a fraction, not percent)",
        )
    for lower, upper in itertools.pairwise(FORECAST_QUANTILE_COLUMNS):
        flag(
            number(upper) < number(lower),
            upper,
            f"below {lower}: quantiles must not decrease with the level (q05 <= q25 <= q50 <= q75 <= q95)",
        )
    return [found[i] for i in sorted(found)]
