"""Row validation for the replay store: conform a batch to its table's schema or say exactly why not.

``conform(table, frame)`` returns the rows that are valid as an Arrow table in the table's schema,
and one ``RowError`` per refused row (the first problem found in that row). Batch-level problems
(a missing required column, an unknown column, a column of the wrong kind) raise
``ReplayValidationError`` at once: no row of such a batch can be trusted.

Checks, in order: types (numbers parse, timestamps are timezone-aware), finiteness (no inf; NaN only
in nullable columns; a float32 list value within float32's range), signs (prices > 0,
sizes/volumes >= 0), sane bounds for bars (prices within [``MIN_PRICE``, ``MAX_PRICE``], sizes at most
``MAX_VOLUME``: ``replay.schema``), OHLC coherence for bars, the experience table's bounds (``|action| <= 1``,
``replay.schema.MAX_ABS_REWARD``, ``MAX_ABS_OBSERVATION``) and its transition rows (a row with an
``episode_id``: every ``TRANSITION_COLUMNS`` value present, NaN counting as missing, and one row per
(``episode_id``, ``step``, ``asset_index``)); an experience reason names the decision id, and on a
transition row its episode and step,
allowed asset classes, duplicates of the table's unique key inside the batch, and per-symbol time order
(each symbol's rows non-decreasing in ``ts``; equal (symbol, ts) is a duplicate where that is
the key). Watermark checks against rows already stored live in the writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from raytrade.replay.errors import InputError
from raytrade.replay.schema import (
    ASSET_CLASSES,
    MAX_ABS_ACTION,
    MAX_ABS_OBSERVATION,
    MAX_ABS_REWARD,
    MAX_PRICE,
    MAX_VOLUME,
    MIN_PRICE,
    NON_NEGATIVE_COLUMNS,
    POSITIVE_COLUMNS,
    TRANSITION_COLUMNS,
    UNIQUE_KEYS,
    schema_for,
)

_OHLC_TOLERANCE: Final[float] = 1e-6
_FLOAT32_MAX: Final[float] = float(np.finfo(np.float32).max)
_EXPERIENCE_LISTS: Final = ("observation", "portfolio_state", "next_observation", "next_portfolio_state")


@dataclass(frozen=True)
class RowError:
    """Why one row was refused: the table, its position in the batch, the column and the value."""

    table: str
    row: int | None
    column: str
    value: Any
    reason: str

    def __str__(self) -> str:
        if self.row is None:
            return f"{self.table}: column {self.column!r}: {self.reason}"
        return f"{self.table}: row {self.row}, column {self.column!r}, value {self.value!r}: {self.reason}"


class ReplayValidationError(InputError):
    """A batch (or rows of it) that the store refuses; ``errors`` lists every refused row."""

    def __init__(self, errors: list[RowError], origin: str | None = None) -> None:
        self.errors = errors
        self.origin = origin
        first = str(errors[0]) if errors else "no detail"
        more = f" (and {len(errors) - 1} more refused rows)" if len(errors) > 1 else ""
        prefix = f"{origin}: " if origin else ""
        super().__init__(f"{prefix}{first}{more}")


def _is_numeric_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t))


class _Collector:
    """Keeps the first error per row, in row order."""

    def __init__(
        self, table: str, n_rows: int, ids: pd.Series | None = None, where: pd.Series | None = None
    ) -> None:
        self.table = table
        self.bad = np.zeros(n_rows, dtype=bool)
        self.errors: dict[int, RowError] = {}
        # the rows' decision ids (experience): every reason names the row's decision as well, and
        # ``where`` (a transition row's "episode E step S", else None) where the row is one
        self.ids = None if ids is None else np.asarray(ids, dtype=object)
        self.where = None if where is None else np.asarray(where, dtype=object)

    def flag(self, mask: np.ndarray, column: str, values: pd.Series | np.ndarray, reason: str) -> None:
        new = mask & ~self.bad
        if not new.any():
            return
        vals = np.asarray(values, dtype=object)
        for i in np.flatnonzero(new):
            why = reason if self.ids is None else f"{reason} (decision {_plain(self.ids[i])!r}"
            if self.ids is not None:
                at = None if self.where is None else self.where[i]
                why += ")" if at is None else f", {at})"
            self.errors[int(i)] = RowError(self.table, int(i), column, _plain(vals[i]), why)
        self.bad |= new


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _batch_error(table: str, column: str, value: Any, reason: str) -> ReplayValidationError:
    return ReplayValidationError([RowError(table, None, column, value, reason)])


def _convert_ts(table: str, raw: pd.Series, out: _Collector) -> pd.Series:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        ts = raw.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        raise _batch_error(table, "ts", str(raw.dtype), "timestamps must be timezone-aware (UTC)")
    else:
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
        unparsable = parsed.isna().to_numpy() & raw.notna().to_numpy()
        out.flag(unparsable, "ts", raw, "unparsable timestamp")
        ts = parsed
    missing = ts.isna().to_numpy()
    out.flag(missing, "ts", raw, "missing timestamp")
    return ts.astype("datetime64[us, UTC]")


def _convert_numeric(column: str, raw: pd.Series, field: pa.Field, out: _Collector) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise _batch_error(out.table, column, str(raw.dtype), "expected a number, got booleans")
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    arr = values.to_numpy()
    unparsable = np.isnan(arr) & raw.notna().to_numpy()
    if not pd.api.types.is_numeric_dtype(raw.dtype):
        # A float NaN or the text "nan" is a missing value, not an unparsable one.
        spelled_nan = raw.map(
            lambda v: (isinstance(v, float) and np.isnan(v)) or str(v).strip().lower() == "nan"
        )
        unparsable &= ~spelled_nan.to_numpy(dtype=bool)
    out.flag(unparsable, column, raw, "not a number")
    out.flag(np.isinf(arr), column, raw, "not finite")
    if not field.nullable:
        out.flag(np.isnan(arr), column, raw, "missing or NaN in a required column")
    if pa.types.is_integer(field.type):
        fractional = ~np.isnan(arr) & (np.floor(arr) != arr)
        out.flag(fractional, column, raw, "expected an integer")
    return values


def _convert_list(column: str, raw: pd.Series, out: _Collector, limit: float = np.inf) -> pd.Series:
    """A list-of-numbers column: each value missing (None / NaN) or a sequence of finite numbers,
    each within ``limit`` (float32's range for a list of float32: beyond it the value is stored as inf)."""

    def ok_numbers(v: Any) -> bool:  # a one-dimensional sequence of numbers
        if v is None or isinstance(v, str | bytes) or not hasattr(v, "__len__"):
            return False
        try:
            return bool(np.asarray(v, dtype="float64").ndim == 1)
        except (TypeError, ValueError):
            return False

    def ok(v: Any) -> bool:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return True
        return ok_numbers(v) and _first_beyond(v, limit) is None

    values = raw.astype(object)
    bad = ~values.map(ok).to_numpy(dtype=bool)
    shown = values.map(lambda v: _first_beyond(v, limit) if ok_numbers(v) else v)  # the offending number
    reason = "expected a list of finite numbers" + (f" within +-{limit:.7g}" if np.isfinite(limit) else "")
    out.flag(bad, column, shown, reason)
    return values.map(lambda v: None if v is None or isinstance(v, float) else v)


def _check_signs(table: str, frame: dict[str, pd.Series], out: _Collector) -> None:
    for column in POSITIVE_COLUMNS[table]:
        if column in frame:
            arr = frame[column].to_numpy(dtype="float64")
            out.flag(~np.isnan(arr) & (arr <= 0), column, arr, "must be > 0")
    for column in NON_NEGATIVE_COLUMNS[table]:
        if column in frame:
            arr = frame[column].to_numpy(dtype="float64")
            out.flag(~np.isnan(arr) & (arr < 0), column, arr, "must be >= 0")


_BAR_PRICES: Final = ("open", "high", "low", "close", "vwap", "bid", "ask")
_BAR_SIZES: Final = ("volume", "trade_count", "bid_size", "ask_size")


def _check_bar_bounds(frame: dict[str, pd.Series], out: _Collector) -> None:
    """Prices within [``MIN_PRICE``, ``MAX_PRICE``] (a zero quote, allowed by the signs, aside) and
    sizes at most ``MAX_VOLUME`` (``replay.schema``): beyond them a value is a unit error or
    corruption, whose returns and dollar volumes overflow."""
    for column in _BAR_PRICES:
        arr = frame[column].to_numpy(dtype="float64")
        above = f"above {MAX_PRICE:g}: not a price (a unit error or corruption)"
        out.flag(arr > MAX_PRICE, column, arr, above)
        out.flag((arr > 0) & (arr < MIN_PRICE), column, arr, f"below {MIN_PRICE:g}: not a price (corruption)")
    for column in _BAR_SIZES:
        arr = frame[column].to_numpy(dtype="float64")
        out.flag(arr > MAX_VOLUME, column, arr, f"above {MAX_VOLUME:g}: not a traded size (corruption)")


def _check_ohlc(frame: dict[str, pd.Series], out: _Collector) -> None:
    o, h, lo, c = (frame[k].to_numpy(dtype="float64") for k in ("open", "high", "low", "close"))
    tol = _OHLC_TOLERANCE * np.abs(h)
    # an infinite price (refused by the finiteness check, with its row) makes inf - inf here: no
    # comparison flags it, and numpy's warning would print a source path above the one-line error
    with np.errstate(invalid="ignore"):
        out.flag(h < lo - tol, "high", h, "high below low")
        out.flag(h < np.maximum(o, c) - tol, "high", h, "high below open or close")
        out.flag(lo > np.minimum(o, c) + tol, "low", lo, "low above open or close")


def _check_experience(frame: dict[str, pd.Series], out: _Collector) -> None:
    """The bounds a transition must keep to feed a learner (``replay.schema``'s ``MAX_ABS_*``)."""
    action = frame["action"].to_numpy(dtype="float64")
    bound = f"outside the action space [-{MAX_ABS_ACTION:g}, {MAX_ABS_ACTION:g}]"
    out.flag(np.abs(action) > MAX_ABS_ACTION, "action", action, bound)
    reward = frame["reward"].to_numpy(dtype="float64")
    out.flag(
        np.abs(reward) > MAX_ABS_REWARD,
        "reward",
        reward,
        f"|reward| above ln 10 = {MAX_ABS_REWARD:.4f}: a stored reward is one bar's net log growth of "
        "equity (x10 or /10 in one bar is a unit error or corruption, not a bar)",
    )
    for column in _EXPERIENCE_LISTS:
        beyond = frame[column].map(lambda v: _first_beyond(v, MAX_ABS_OBSERVATION))
        out.flag(beyond.notna().to_numpy(), column, beyond, f"|value| above {MAX_ABS_OBSERVATION:g}")
    transition = frame["episode_id"].notna().to_numpy()
    for column in TRANSITION_COLUMNS:
        missing = transition & frame[column].map(_missing).to_numpy(dtype=bool)
        out.flag(missing, column, frame[column], "missing (null or NaN) on a transition row")
    # one step has one reward, the portfolio's, on each of its asset rows (the learner reads asset 0's,
    # and the offline read refuses a step whose rows disagree): every row of such a step is refused,
    # so no step is stored with rows missing
    keys = ["episode_id", "step"]
    steps = pd.DataFrame({"episode_id": frame["episode_id"], "step": frame["step"], "reward": reward})
    counted = transition & ~out.bad  # a row refused already (a reward out of bounds) is its own error
    steps = steps[counted].reset_index(drop=True)
    distinct = steps.groupby(keys, sort=False, dropna=False)["reward"].transform("nunique").to_numpy()
    disagree = np.zeros(len(reward), dtype=bool)
    disagree[np.flatnonzero(counted)[distinct > 1]] = True
    shown = np.full(len(reward), None, dtype=object)
    if disagree.any():
        rewards_of = {
            key: ", ".join(f"{v:.6g}" for v in dict.fromkeys(group.tolist()))
            for key, group in steps[distinct > 1].groupby(keys, sort=False)["reward"]
        }
        shown[disagree] = [rewards_of[key] for key in steps[distinct > 1][keys].itertuples(index=False)]
    out.flag(
        disagree,
        "reward",
        shown,
        "the step's asset rows disagree on the reward (the values shown): one step has one reward, the "
        "portfolio's, on every asset's row",
    )
    keys = ["episode_id", "step", "asset_index"]
    twice = transition & pd.DataFrame({k: frame[k] for k in keys}).duplicated(keep="first").to_numpy()
    out.flag(
        twice,
        "asset_index",
        frame["asset_index"],
        "a second row of this (episode_id, step, asset_index) in the batch: a step's asset is logged once",
    )


def _missing(value: Any) -> bool:
    """A value absent from a row: None, or a float NaN (pandas' missing number)."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def _transition_where(frame: pd.DataFrame) -> pd.Series | None:
    """Per row of an experience batch, ``episode E step S`` for a transition row, else None."""
    if "episode_id" not in frame.columns:
        return None
    steps = frame["step"] if "step" in frame.columns else pd.Series([None] * len(frame))

    def where(episode: Any, step: Any) -> str | None:
        if _missing(episode):
            return None
        shown = int(step) if isinstance(step, int | float | np.number) and float(step).is_integer() else step
        return f"episode {_plain(episode)!r} step {_plain(shown)}"

    return pd.Series([where(e, k) for e, k in zip(frame["episode_id"], steps, strict=True)], dtype=object)


def _first_beyond(values: Any, bound: float) -> float | None:
    """The first of the numbers ``values`` (None: missing) whose magnitude exceeds ``bound``, else None."""
    if values is None:
        return None
    try:
        arr = np.asarray(values, dtype="float64").reshape(-1)
    except (TypeError, ValueError):
        return None  # not numbers: refused for its type already
    over = np.flatnonzero(~(np.abs(arr) <= bound))
    return float(arr[over[0]]) if over.size else None


def _check_keys_and_order(table: str, frame: dict[str, pd.Series], out: _Collector) -> None:
    keys = list(UNIQUE_KEYS[table])
    key_frame = pd.DataFrame({k: frame[k] for k in keys})
    dup = key_frame.duplicated(keep="first").to_numpy()
    out.flag(dup, keys[-1], frame[keys[-1]], f"duplicate of an earlier row with the same ({', '.join(keys)})")
    if table == "experience":
        return
    ts_ns = frame["ts"].to_numpy(dtype="datetime64[us]").astype("int64")
    sym = frame["symbol"].to_numpy(dtype=object)
    order = pd.DataFrame({"sym": sym, "ts": ts_ns})
    prev = order.groupby("sym", sort=False)["ts"].shift(1).to_numpy(dtype="float64")
    cur = ts_ns.astype("float64")
    # Equal timestamps are duplicates for the (symbol, ts)-keyed tables, caught above.
    unsorted = ~np.isnan(prev) & (cur < prev)
    out.flag(unsorted, "ts", frame["ts"], "rows are not sorted by time within the symbol")


def conform(table: str, frame: pd.DataFrame) -> tuple[pa.Table, list[RowError], np.ndarray]:
    """Validate ``frame`` for ``table``.

    Returns (valid rows as an Arrow table in schema order, refused rows, the batch positions of the
    valid rows).

    Raises ``ReplayValidationError`` for batch-level problems (missing required or unknown columns).
    """
    schema = schema_for(table)
    names = set(schema.names)
    unknown = [c for c in frame.columns if c not in names]
    if unknown:
        raise _batch_error(table, str(unknown[0]), None, f"unknown column; {table} has {sorted(names)}")
    missing_required = [f.name for f in schema if not f.nullable and f.name not in frame.columns]
    if missing_required:
        raise _batch_error(table, missing_required[0], None, "required column is missing")

    frame = frame.reset_index(drop=True)
    n = len(frame)
    experience = table == "experience"
    out = _Collector(
        table,
        n,
        frame["decision_id"] if experience else None,
        _transition_where(frame) if experience else None,
    )
    converted: dict[str, pd.Series] = {}
    for field in schema:
        if field.name not in frame.columns:
            converted[field.name] = pd.Series([None] * n, dtype=object)
            continue
        raw = frame[field.name]
        if field.name == "ts":
            converted["ts"] = _convert_ts(table, raw, out)
        elif _is_numeric_type(field.type):
            converted[field.name] = _convert_numeric(field.name, raw, field, out)
        elif pa.types.is_list(field.type):
            f32 = pa.types.is_float32(field.type.value_type)
            converted[field.name] = _convert_list(field.name, raw, out, _FLOAT32_MAX if f32 else np.inf)
        elif pa.types.is_boolean(field.type):
            bad = raw.notna().to_numpy() & ~raw.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(bool)
            out.flag(bad, field.name, raw, "expected a boolean")
            converted[field.name] = raw
        else:
            missing = raw.isna().to_numpy()
            if not field.nullable:
                out.flag(missing, field.name, raw, "missing value in a required column")
            empty = raw.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
            if field.name in ("symbol", "source", "decision_id"):
                out.flag(empty, field.name, raw, "empty string")
            converted[field.name] = raw
    _check_signs(table, converted, out)
    if table == "bars":
        _check_bar_bounds(converted, out)
        _check_ohlc(converted, out)
    if table == "experience":
        _check_experience(converted, out)
    if "asset_class" in converted:
        ac = converted["asset_class"]
        out.flag(~ac.isin(ASSET_CLASSES).to_numpy(), "asset_class", ac, f"not one of {sorted(ASSET_CLASSES)}")
    _check_keys_and_order(table, converted, out)

    good = ~out.bad
    columns = []
    for field in schema:
        series = converted[field.name][good]
        if _is_numeric_type(field.type) and pa.types.is_integer(field.type):
            arr = pa.array(series.to_numpy(dtype="float64"), from_pandas=True).cast(field.type)
        else:
            arr = pa.array(series, type=field.type, from_pandas=True)
        columns.append(arr)
    table_out = pa.Table.from_arrays(columns, schema=schema)
    errors = [out.errors[i] for i in sorted(out.errors)]
    return table_out, errors, np.flatnonzero(good)
