"""CSV folder source: one file per symbol, in the layouts of yahoo-style and crypto-style exports.

Columns are matched by name, case-insensitively, whatever their order: a time column (``date``,
``timestamp``, ``time`` or ``datetime``), ``open``, ``high``, ``low``, ``close``, ``volume``, and
optionally ``vwap``, ``trade_count`` and ``symbol``. Other columns (e.g. ``adj close``) are ignored;
two columns for one field (``close`` and ``Close``, or a repeated header) refuse the file.

Calendar rule (explicit, so equities and crypto are never silently aligned):
* a date without a time (``2024-03-18``) is the session date of a daily bar and is labelled
  ``YYYY-MM-DD 00:00 UTC``;
* a timestamp with an offset (``2024-01-01 00:00:00+00:00``, ``…Z``) is converted to UTC, each by
  its own offset (a file stamped at New York midnight has -05:00 in winter and -04:00 in summer);
* one file, one clock: dates without a time next to timestamps off UTC midnight are refused;
* a timestamp with a time but no offset is refused (its zone is unknown), also in a column whose
  other rows have offsets; so is a value that does not parse;
* a crypto file of daily bars (stamps a median of one day apart) must stamp each bar at 00:00 UTC,
  its open: a bar opened at midnight in another zone (``2024-01-01T00:00:00-05:00``) is a different
  bar, which lands between the equity dates and would never be traded next to equities (the
  simulator's loader refuses such a store too). The file is refused, naming the first such row;
  the stamps are never shifted (a bar opened at 05:00 UTC closes after the equity close of its
  date: labelling it with that date would let a decision see the future).

A symbol is crypto when its name ends in USD, USDT or USDC (``BTCUSD``, ``SUIUSDT``), is a pair
quoted in BTC or ETH longer than any listed ticker (``ETHBTC``; ``GBTC`` is an equity), or the file
sits in a folder named ``crypto`` at or below the folder read (``replay.loop_rules.is_crypto_symbol``;
a ``crypto`` folder above it, ``--path /tmp/crypto/yahoo``, says nothing); otherwise it is an
equity.

Every file is validated in full before anything is returned: a bad file raises
``ReplayValidationError`` naming the file, the data row (1-based: row 1 is the line after the
header), the column and the value.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.loop_rules import is_crypto_symbol
from raytrade.replay.timeutil import times_of_day
from raytrade.replay.validation import ReplayValidationError, RowError, conform

log = logging.getLogger(__name__)

TIME_NAMES: Final[tuple[str, ...]] = ("date", "timestamp", "time", "datetime")
REQUIRED: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")
OPTIONAL: Final[tuple[str, ...]] = ("vwap", "trade_count")
_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
_OFFSET = re.compile(r"[Tt ]\S*[Zz+-]")


class SourceFolderError(InputError):
    """The folder itself is unusable (missing, empty); one line, no row detail."""


def _logical(path: Path) -> Path:
    """``path`` made absolute against the shell's working folder as the user named it (``$PWD``, a
    link's name kept) where that is the working folder, else ``os.getcwd()``'s (the link resolved: a
    folder linked as ``crypto`` lost its name)."""
    if path.is_absolute():
        return path
    shell = os.environ.get("PWD")
    if shell and Path(shell).is_absolute() and os.path.samefile(shell, os.getcwd()):
        return Path(shell) / path
    return path.absolute()


def asset_class_of(symbol: str, path: Path, root: Path | None = None) -> str:
    """``crypto`` for a crypto symbol or a file in a folder named ``crypto`` at or below ``root`` (the
    folder ingested, ``--path``, itself included: ``--path data/crypto``; None: any folder of
    ``path``), else ``equity``. Folders above ``root`` are the user's own layout and say nothing of
    the files (``/tmp/crypto/yahoo`` holds equities)."""
    if root is not None:  # absolute, so that --path . in a crypto folder names it (Path('.').parent is '.')
        path, root = _logical(path), _logical(root)
    folders = (path.relative_to(root.parent) if root is not None else path).parts[:-1]
    if "crypto" in (p.lower() for p in folders) or is_crypto_symbol(symbol):
        return "crypto"
    return "equity"


def _parse_times(raw: pd.Series, path: Path, column: str) -> pd.Series:
    """``raw`` as UTC timestamps (module docstring: the calendar rule); refuses naive timestamps with a
    time and unparsable values, naming the 1-based row, ``column`` and the value."""
    text = raw.astype("string").str.strip()
    date_only = text.str.match(_DATE_ONLY.pattern).fillna(False).to_numpy(dtype=bool)
    # an offset (Z, +hh:mm, -hh:mm) can only follow the date/time separator: the date has '-' too
    has_offset = text.str.contains(_OFFSET.pattern, regex=True).fillna(False).to_numpy(dtype=bool)
    present = text.notna().to_numpy()
    aware = present & ~date_only & has_offset
    naive = present & ~date_only & ~has_offset
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if date_only.any():
        days = pd.to_datetime(text[date_only], format="%Y-%m-%d", errors="coerce")
        parsed[date_only] = days.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    if aware.any():
        # utc=True converts each value by its own offset, so daylight-saving changes are fine
        stamps = pd.to_datetime(text[aware], errors="coerce", utc=True, format="ISO8601")
        parsed[aware] = stamps.astype("datetime64[us, UTC]")
    errors: list[RowError] = []
    if date_only.any() and aware.any():  # dates are 00:00 UTC; an offset's midnight elsewhere is not
        stamps = parsed[aware]
        off = stamps.notna() & (stamps != stamps.dt.floor("D"))
        if off.any():
            first = int(np.flatnonzero(aware)[int(np.argmax(off.to_numpy()))])
            errors.append(
                RowError(
                    "bars",
                    first + 1,
                    column,
                    raw.iloc[first],
                    f"a timestamp at {parsed.iloc[first]:%H:%M} UTC among {int(date_only.sum())} dates "
                    "without a time (00:00 UTC): one symbol on two clocks; give every row the same form",
                )
            )
    if naive.any():
        stamps = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
        for position in np.flatnonzero(naive)[stamps.notna().to_numpy()].tolist():
            errors.append(
                RowError(
                    "bars",
                    position + 1,
                    column,
                    raw.iloc[position],
                    "timestamp without a UTC offset (zone unknown)",
                )
            )
    flagged = {e.row for e in errors}
    for position in np.flatnonzero(parsed.isna().to_numpy()).tolist():
        if position + 1 not in flagged:
            errors.append(RowError("bars", position + 1, column, raw.iloc[position], "unparsable date"))
    if errors:
        errors.sort(key=lambda e: e.row or 0)
        raise ReplayValidationError(errors, origin=str(path))
    return parsed


def _refuse_off_midnight_daily(ts: pd.Series, raw: pd.Series, column: str, path: Path) -> None:
    """Refuse a file of daily bars (consecutive stamps a median of one day apart) with a bar not
    stamped at 00:00 UTC, naming the first such row, its value, how many there are and their time."""
    stamps = ts.dropna()
    if len(stamps) < 2 or stamps.sort_values().diff().median() != pd.Timedelta(days=1):
        return
    off = (stamps != stamps.dt.floor("D")).to_numpy()
    if not off.any():
        return
    first = int(stamps.index[np.argmax(off)])
    reason = (
        f"a daily crypto bar must be stamped at 00:00 UTC, its open; {int(off.sum())} of the file's "
        f"{len(stamps)} bars are stamped at {times_of_day(stamps[off])} UTC (a day opened in another "
        "zone, which would never line up with the equity dates): re-stamp the file at 00:00 UTC"
    )
    raise ReplayValidationError([RowError("bars", first + 1, column, raw.iloc[first], reason)], str(path))


def _refuse_ambiguous_columns(columns: pd.Index, path: Path) -> None:
    """Refuse a file with two columns for one field: names equal up to case and spaces (``close`` and
    ``Close``), or a repeated header pandas renamed (``close``, ``close.1``). Which one to read would
    be a guess, and the other may hold other prices."""
    fields = {*TIME_NAMES, *REQUIRED, *OPTIONAL, "symbol"}
    seen: dict[str, list[str]] = {}
    for column in columns:
        name = str(column)
        key = name.strip().lower()
        base, _, suffix = key.rpartition(".")
        if base in fields and suffix.isdigit():
            key = base  # pandas' name for a repeated header
        seen.setdefault(key, []).append(name)
    clashes = {k: v for k, v in seen.items() if k in fields and len(v) > 1}
    if clashes:
        field, names = next(iter(clashes.items()))
        raise ReplayValidationError(
            [
                RowError(
                    "bars", None, field, None, f"two columns for one field ({', '.join(names)}): keep one"
                )
            ],
            str(path),
        )


def read_symbol_file(path: Path, root: Path | None = None) -> pd.DataFrame:
    """One CSV file as validated bars rows (``BARS_SCHEMA`` columns); raises naming file/row/column.
    ``root``: the folder ingested, which ``path`` is under (``asset_class_of``)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReplayValidationError(
            [RowError("bars", None, "*", None, f"unreadable CSV: {exc}")], str(path)
        ) from None
    _refuse_ambiguous_columns(frame.columns, path)
    if frame.empty:  # e.g. yfinance's file for a delisted or empty download: said, not silent
        log.warning("%s has no rows under its header: nothing is stored from it", path)
    by_name = {str(c).strip().lower(): c for c in frame.columns}
    time_col = next((by_name[n] for n in TIME_NAMES if n in by_name), None)
    missing = [n for n in REQUIRED if n not in by_name]
    if time_col is None:
        missing.insert(0, "date|timestamp")
    if missing:
        raise ReplayValidationError(
            [
                RowError(
                    "bars", None, missing[0], None, f"required column is missing (have {list(frame.columns)})"
                )
            ],
            origin=str(path),
        )
    symbol = path.stem.upper()
    if "symbol" in by_name:
        names = frame[by_name["symbol"]].dropna().unique()
        if len(names) > 1:
            raise ReplayValidationError(
                [RowError("bars", None, "symbol", list(names[:3]), "one file must hold one symbol")],
                str(path),
            )
        if len(names) == 1:
            symbol = str(names[0]).strip().upper()
    time_name = next(n for n in TIME_NAMES if n in by_name)
    out = pd.DataFrame({"symbol": symbol, "ts": _parse_times(frame[time_col], path, time_name)})
    for name in REQUIRED + OPTIONAL:
        if name in by_name:
            out[name] = frame[by_name[name]]
    out["asset_class"] = asset_class = asset_class_of(symbol, path, root)
    if asset_class == "crypto":
        _refuse_off_midnight_daily(out["ts"], frame[time_col], str(time_col), path)
    out["source"] = "csv"
    valid, errors, _ = conform("bars", out)
    if errors:
        shifted = [_as_written(e, frame[time_col], time_name) for e in errors]
        raise ReplayValidationError(shifted, origin=str(path))
    return valid.to_pandas()


def _as_written(error: RowError, raw_times: pd.Series, time_column: str) -> RowError:
    """``error`` (a 0-based row of the parsed frame) as the file has it: its 1-based row, and for the
    time column the file's own column name and text, not the UTC value parsed from it (a duplicate
    across a daylight-saving fall-back is two rows of one UTC time written with two offsets)."""
    row = None if error.row is None else error.row + 1
    if error.column == "ts" and error.row is not None:
        return RowError(error.table, row, time_column, raw_times.iloc[error.row], error.reason)
    return RowError(error.table, row, error.column, error.value, error.reason)


def read_csv_folder(folder: str | Path) -> pd.DataFrame:
    """All ``*.csv`` under ``folder`` (recursively) as one bars frame, sorted by (symbol, ts)."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceFolderError(f"--path {root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".csv" and p.is_file())
    if not files:
        raise SourceFolderError(f"no .csv files under {root}")
    frames = [read_symbol_file(p, root) for p in files]
    seen: dict[str, Path] = {}
    for path, frame in zip(files, frames, strict=True):
        sym = str(frame["symbol"].iloc[0]) if len(frame) else path.stem.upper()
        if sym in seen:
            raise SourceFolderError(f"symbol {sym} appears in both {seen[sym]} and {path}")
        seen[sym] = path
    bars = pd.concat(frames, ignore_index=True)
    return bars.sort_values(["symbol", "ts"], kind="stable", ignore_index=True)
