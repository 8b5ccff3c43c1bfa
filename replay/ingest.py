"""Ingest: validated source rows -> bars, macro, forecasts -> features, written to a store.

Design decisions
----------------
* Everything a source returns is validated before anything is written: a bad row aborts the whole
  ingest with a message naming the file/table, row, column and value, and the store is untouched.
* Bars and macro rows are append-only. A source row is either new (after its symbol's last stored
  row, or of a symbol new to the store) and appended, or already stored (same symbol and ts; the
  stored values are kept), or older than its symbol's last stored row and absent from the store (a
  backfill, e.g. of a halt gap): it is not stored, and ``IngestResult.not_stored`` says which symbol,
  how many rows and which dates, so the caller can warn (rebuild: ingest everything into a fresh store).
* A source row already stored is compared with the stored one (``_compare_bars``, ``_compare_macro``).
  Bars: per symbol, the overlapping rows' open, high, low and close agree with the stored ones times
  one ratio ``r`` = the median of the source/stored closes when ``|source - r * stored| <=
  RESTATEMENT_RTOL * max(|source|, |r * stored|)`` (1e-5: float noise, csv rounding to 6 significant
  digits), plus half a cent for a value that is a whole number of cents (a csv rounded to cents; the
  allowance is not given to sub-cent prices, where it would hide any change). Agreement at ``r = 1``:
  already stored (the stored values win). Agreement at one ``r != 1`` on every overlapping bar: the
  source is the same history on a new adjustment basis (Yahoo rescales adjusted prices back in time at
  every split and dividend) and the symbol is *re-based*: its new rows are stored on the store's basis,
  prices (open, high, low, close, vwap, bid, ask) divided by ``r`` and sizes (volume, bid and ask size)
  multiplied by it, so close-to-close returns and dollar volume are the source's (after a 2:1 split on
  the first new bar, ``r = 0.5`` and the new bar's close is doubled: no fake -50 % return), and each is
  reported in ``IngestResult.rebased`` (a warning). The store keeps its basis, so every later ingest
  finds the same ratio (times any later event's) and re-bases again.
* Anything else is a *restatement* (a corrected print, a rescale that is not one ratio): by default
  the whole ingest is refused before anything is written (``InputError`` naming the symbol, the
  differing dates, the stored and source values and their ratio; the fix is a fresh store).
  ``keep_stored_on_restatement=True`` instead keeps the stored rows as they are and appends the
  symbol's new rows on its *basis* -- of 1 and the median ratio, the one more overlapping rows agree
  at (a correction does not change the basis: the new rows as the source gives them) -- reporting
  each in ``IngestResult.restated`` (a warning naming the differing rows). Macro rows (value) are
  never re-based: any difference beyond ``RESTATEMENT_RTOL`` is a restatement.
* Volume is not part of a basis and never refuses an ingest. A bar whose prices agree but whose
  volume is none of the stored one, the stored one divided by ``r``, or the stored one times the
  symbol's median source/stored volume ratio (Yahoo adjusts volume for splits but not for dividends,
  so after both its ratio is not ``1 / r``) -- a vendor revising a day's volume, as Yahoo does the
  next day -- keeps its stored volume and ``IngestResult.volume_revised`` reports it (a warning).
  The comparison reuses the merge on (symbol, ts) that finds the stored rows: no extra read.
* The features table always equals what one ingest of all the stored bars would write, whatever the
  order the bars arrived in. Features are recomputed from the full stored history plus the new bars
  and compared, exactly, with the stored feature rows. If none of those changed (the common daily
  append: every feature at ts depends only on rows <= ts), only the new rows are appended. If some
  did (a new or ragged symbol changes cross-sectional features -- ``vix_level``/``vix_term``
  proxies, ``corr_cluster``, ``sector_momentum`` -- at timestamps already stored), the whole
  features table is rewritten: staged in a hidden folder before any bar is written, then swapped in
  (``_swap.json`` records the swap; ``recover_store`` finishes an interrupted one, and deletes a
  staged folder a hard crash left before its swap began). Stored bars are never touched.
  Re-running an ingest that crashed after the bars commit completes it.
* Daily bars of one asset class stamped at different times of day on the same dates (the store's and
  the source's together: equities dated 00:00 UTC next to equities at New York midnight) are refused
  before anything is written (``replay.timeutil.refuse_mixed_daily_clocks``, the rule the simulator's
  loader applies too): the calendar would hold two labels per session and every symbol a hole at
  every other one.
* Imported forecasts change features already stored, so ``import_forecasts`` rebuilds the features
  table the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from raytrade.replay.errors import InputError
from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.reader import read_frame
from raytrade.replay.sources.forecast_file import forecast_value_errors
from raytrade.replay.timeutil import refuse_mixed_daily_clocks
from raytrade.replay.validation import ReplayValidationError, conform
from raytrade.replay.writer import ReplayWriter, write_file_atomically

Progress = Callable[[str], None]
_KEY = ["symbol", "ts"]

RESTATEMENT_RTOL: Final[float] = 1e-5
"""A stored value and the source's for the same (symbol, ts) differ when ``|a - b| > RESTATEMENT_RTOL *
max(|a|, |b|)``: above float noise and csv rounding to 6 significant digits (<= 5e-6 relative), below
any split, dividend re-adjustment or corrected print. Bar prices also get ``HALF_CENT`` (module
docstring)."""

HALF_CENT: Final[float] = 0.005
"""The rounding allowance of a bar price that is a whole number of cents (a csv rounded to cents)."""

PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
"""The bar columns a basis (``Rebased``) is found in; a difference there is a restatement."""

_DIVIDED: Final[tuple[str, ...]] = (*PRICE_COLUMNS, "vwap", "bid", "ask")
_MULTIPLIED: Final[tuple[str, ...]] = ("volume", "bid_size", "ask_size")
"""A re-based symbol's new bars: the prices divided by the ratio, the sizes (in shares) multiplied."""

_NAMED_ROWS: Final[int] = 5
"""How many differing dates a ``Restated`` names."""


@dataclass(frozen=True)
class NotStored:
    """Source rows of one symbol older than its last stored row and absent from the store: not
    written, because the store is append-only."""

    table: str
    symbol: str
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    last_stored: pd.Timestamp

    def message(self) -> str:
        noun = ("bar" if self.table == "bars" else f"{self.table} row") + ("" if self.rows == 1 else "s")
        last = "bar" if self.table == "bars" else "row"
        return (
            f"{self.symbol}: {self.rows:,} {noun} from {self.first.date()} to {self.last.date()} older than "
            f"its last stored {last} ({self.last_stored.date()}) and not in the store were NOT stored (the "
            "store is append-only); to include them, ingest all the data into a fresh store (a new --out)"
        )


@dataclass(frozen=True)
class Rebased:
    """A symbol whose stored bars the source gives on another adjustment basis: the open, high, low
    and close of all ``compared`` bars it repeats are ``ratio`` times the stored ones (module
    docstring). Its ``rows`` new bars, from ``first_new`` (None: none), were stored on the store's
    basis: prices divided by ``ratio``, volume multiplied by it."""

    symbol: str
    ratio: float
    first_new: pd.Timestamp | None
    rows: int
    compared: int

    def message(self) -> str:
        """The warning, e.g. ``AAA: re-based: the source's prices are the stored ones times 0.5 on all
        3 stored bars it repeats (a split or dividend re-adjustment); its 1 new bar from 2024-01-05
        stored on the store's basis ...``."""
        head = (
            f"{self.symbol}: re-based: the source's prices are the stored ones times {self.ratio:.6g} on all "
            f"{self.compared:,} stored bars it repeats (a split or dividend re-adjustment)"
        )
        if self.first_new is None or not self.rows:
            return f"{head}; no new bars"
        noun = "bar" if self.rows == 1 else "bars"
        return (
            f"{head}; its {self.rows:,} new {noun} from {self.first_new.date()} stored on the store's basis "
            f"(prices divided by {self.ratio:.6g}, volume multiplied by it: returns and dollar volume as "
            "the source's)"
        )


@dataclass(frozen=True)
class Restated:
    """A symbol (macro: series) whose stored rows the source restates: ``rows`` stored rows differ
    from the source's on the symbol's ``basis`` (module docstring), at ``dates`` (the first
    ``_NAMED_ROWS``); the first in ``column`` (the close when it differs there) from ``stored`` to
    ``source``. ``appended``: the symbol's new rows, appended on ``basis`` when the stored ones were
    kept (``keep_stored_on_restatement``; otherwise the ingest is refused)."""

    table: str
    symbol: str
    rows: int
    dates: tuple[pd.Timestamp, ...]
    column: str
    stored: float
    source: float
    basis: float = 1.0
    appended: int = 0

    @property
    def first(self) -> pd.Timestamp:
        return self.dates[0]

    @property
    def ratio(self) -> float:
        """Source over stored value at ``first``."""
        return self.source / self.stored if self.stored else float("inf")

    def describe(self) -> str:
        """What differs, e.g. ``AAA: 1 stored bar differs from the source (first 2024-01-02: stored
        close 10.5, source close 10.6, ratio 1.0095: looks like a corrected print; differing:
        2024-01-02)``."""
        bars = self.table == "bars"
        noun = ("bar" if bars else f"{self.table} row") + (" differs" if self.rows == 1 else "s differ")
        if self.rows == 1:
            guess = "a corrected print" if bars else "a corrected value"
        else:
            guess = "corrected prints or a rescale that is not one ratio" if bars else "a revised series"
        named = ", ".join(str(d.date()) for d in self.dates[:_NAMED_ROWS])
        more = f" and {self.rows - _NAMED_ROWS:,} more" if self.rows > _NAMED_ROWS else ""
        basis = f", on the basis {self.basis:.6g} the other stored rows agree at" if self.basis != 1 else ""
        return (
            f"{self.symbol}: {self.rows:,} stored {noun} from the source{basis} (first {self.first.date()}: "
            f"stored {self.column} {self.stored:.6g}, source {self.column} {self.source:.6g}, "
            f"ratio {self.ratio:.4f}: looks like {guess}; differing: {named}{more})"
        )

    def message(self) -> str:
        """The warning when the stored rows were kept and the symbol's new rows appended."""
        noun = ("bar" if self.table == "bars" else f"{self.table} row") + ("" if self.appended == 1 else "s")
        how = "as the source gives them" if self.basis == 1 else f"divided by {self.basis:.6g}"
        return (
            f"{self.describe()}; the stored rows were kept as they are and its {self.appended:,} new {noun} "
            f"appended {how} (--keep-stored-on-restatement); to take the source's history, ingest all the "
            "data into a fresh store (a new --out)"
        )


@dataclass(frozen=True)
class VolumeRevised:
    """A symbol whose ``rows`` stored bars the source repeats with the same prices (on its basis) but
    another volume -- neither the stored one nor the stored one on the source's basis -- the first
    at ``first``, from ``stored`` to ``source``: never refused, the stored volume is kept."""

    symbol: str
    rows: int
    first: pd.Timestamp
    stored: float
    source: float

    def message(self) -> str:
        noun = "bar's volume differs" if self.rows == 1 else "bars' volumes differ"
        return (
            f"{self.symbol}: {self.rows:,} stored {noun} from the source's, prices agreeing (first "
            f"{self.first.date()}: stored {self.stored:.6g}, source {self.source:.6g}: looks like a revised "
            "volume); the stored volume was kept"
        )


def restatement_refusal(restated: tuple[Restated, ...], origin: str) -> str:
    """The one-line refusal of an ingest whose source restates stored rows (module docstring)."""
    shown = "; ".join(r.describe() for r in restated[:3])
    more = (
        f"; and {len(restated) - 3} more: {', '.join(r.symbol for r in restated[3:])}"
        if len(restated) > 3
        else ""
    )
    return (
        f"{origin}: refused, nothing written: the source restates stored history, not by one ratio on "
        f"every stored bar (a uniform rescale, a split or dividend re-adjustment, would be re-based) -- "
        f"{shown}{more}. The store is append-only: ingest all the data into a fresh store (a new --out), "
        "or pass --keep-stored-on-restatement to keep the stored rows as they are and append these "
        "symbols' new ones with a warning"
    )


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did (module docstring: new, already stored, not stored, re-based, restated;
    features rewrite).

    ``appended``: rows appended per table. ``skipped_bars``: source bars already in the store (same
    symbol and ts). ``not_stored``: older rows absent from the store, per table and symbol.
    ``rebased``: symbols whose new bars were stored converted to the store's basis. ``restated``:
    symbols whose stored rows the source restates, kept as stored, their new rows appended (only with
    ``keep_stored_on_restatement``; otherwise the ingest is refused). ``volume_revised``: symbols
    whose stored volumes the source revises, kept as stored. ``features_changed``: stored feature
    rows whose values the new bars changed. ``features_rewritten``: rows of the rewritten features
    table; 0 when new rows were only appended."""

    appended: dict[str, int]
    skipped_bars: int
    not_stored: tuple[NotStored, ...] = ()
    features_changed: int = 0
    features_rewritten: int = 0
    restated: tuple[Restated, ...] = ()
    rebased: tuple[Rebased, ...] = ()
    volume_revised: tuple[VolumeRevised, ...] = ()

    @property
    def not_stored_bars(self) -> int:
        return sum(n.rows for n in self.not_stored if n.table == "bars")

    def summary_line(self) -> str:
        appended = ", ".join(f"{k} +{v:,}" for k, v in self.appended.items()) or "nothing new"
        parts = [f"appended: {appended}", f"bars already stored and skipped: {self.skipped_bars:,}"]
        if self.not_stored_bars:
            parts.append(f"older bars NOT stored (append-only): {self.not_stored_bars:,}")
        if self.rebased:
            parts.append(
                f"re-based symbols (new bars on the store's basis): {len(self.rebased):,} "
                f"({sum(r.rows for r in self.rebased):,} bars)"
            )
        if self.restated:
            parts.append(f"restated symbols kept as stored, new rows appended: {len(self.restated):,}")
        if self.volume_revised:
            parts.append(f"symbols with revised volumes kept as stored: {len(self.volume_revised):,}")
        if self.features_rewritten:
            parts.append(
                f"features table rewritten ({self.features_rewritten:,} rows; {self.features_changed:,} "
                "stored rows changed by the new bars)"
            )
        return "; ".join(parts)

    def warnings(self) -> list[str]:
        return [
            *(n.message() for n in self.not_stored),
            *(r.message() for r in self.rebased),
            *(r.message() for r in self.restated),
            *(v.message() for v in self.volume_revised),
        ]


@dataclass(frozen=True)
class _Split:
    """Source rows of one table against the store; ``new`` already on the store's basis."""

    new: pd.DataFrame
    already_stored: int
    not_stored: tuple[NotStored, ...]
    restated: tuple[Restated, ...] = ()
    rebased: tuple[Rebased, ...] = ()
    volume_revised: tuple[VolumeRevised, ...] = ()


@dataclass(frozen=True)
class _Comparison:
    """The source's rows already stored against the stored ones: per symbol, the basis its new rows
    are converted by (only those != 1), and what to report."""

    bases: dict[str, float] = field(default_factory=dict)
    restated: tuple[Restated, ...] = ()
    rebased: tuple[Rebased, ...] = ()
    volume_revised: tuple[VolumeRevised, ...] = ()


def _stored(root: Path, table: str) -> pd.DataFrame | None:
    if not (root / table).is_dir():
        return None
    frame = read_frame(root, table)
    return frame if len(frame) else None


def _on_grid(values: np.ndarray, unit: float) -> np.ndarray:
    """Per value: a whole number of ``unit`` (up to float32 noise: a csv's 115.62000274658203)?"""
    steps = np.abs(values) / unit
    return np.asarray(np.abs(steps - np.round(steps)) <= 1e-6 * steps, dtype=bool)


def _agree(
    source: np.ndarray, stored: np.ndarray, ratio: np.ndarray | float, unit: float | None
) -> np.ndarray:
    """Per row: is ``source`` ``ratio`` times ``stored``, within ``RESTATEMENT_RTOL`` plus half a
    ``unit`` for each of the two values that is a whole number of units (rounded to it)?"""
    scaled = ratio * stored
    tolerance = RESTATEMENT_RTOL * np.maximum(np.abs(source), np.abs(scaled))
    if unit is not None:
        tolerance = tolerance + unit / 2 * (_on_grid(source, unit) + np.abs(ratio) * _on_grid(stored, unit))
    return np.asarray(np.abs(source - scaled) <= tolerance, dtype=bool)


def _values(held: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    return held[column].to_numpy(dtype=float), held[f"{column}_stored"].to_numpy(dtype=float)


def _prices_agree(held: pd.DataFrame, ratio: np.ndarray | float) -> dict[str, np.ndarray]:
    return {c: _agree(*_values(held, c), ratio, unit=2 * HALF_CENT) for c in PRICE_COLUMNS}


def _restated(
    table: str, symbol: str, rows: pd.DataFrame, differs: dict[str, np.ndarray], basis: float
) -> Restated:
    """The ``Restated`` of ``symbol`` from its differing ``rows`` (``differs``: per column, per row)."""
    order = np.argsort(rows["ts"].to_numpy(), kind="stable")
    first = order[0]
    quoted = (
        "close"
        if "close" in differs and differs["close"][first]
        else next(c for c in differs if differs[c][first])
    )
    return Restated(
        table,
        symbol,
        len(rows),
        tuple(pd.Timestamp(t) for t in rows["ts"].to_numpy()[order[:_NAMED_ROWS]]),
        quoted,
        float(rows[f"{quoted}_stored"].iloc[first]),
        float(rows[quoted].iloc[first]),
        basis,
    )


def _compare_bars(held: pd.DataFrame, new: pd.DataFrame) -> _Comparison:
    """Per symbol of ``held`` (the source's bars already stored merged with the stored ones, suffix
    ``_stored``): already stored, re-based, restated, and revised volumes (module docstring). ``new``:
    the source's new bars, for the re-based symbols' first new date and count."""
    if held.empty:
        return _Comparison()
    symbol = held["symbol"].astype(str).to_numpy()
    median = (held["close"] / held["close_stored"]).groupby(symbol).transform("median").to_numpy(float)
    at_one, at_median = _prices_agree(held, 1.0), _prices_agree(held, median)
    one = np.logical_and.reduce(list(at_one.values()))
    at_r = np.logical_and.reduce(list(at_median.values()))
    per = pd.DataFrame({"one": one, "r": at_r, "ratio": median}).groupby(symbol, sort=True)
    totals = per.agg(one=("one", "sum"), r=("r", "sum"), ratio=("ratio", "first"), rows=("one", "size"))
    new_symbols = new["symbol"].astype(str)
    bases: dict[str, float] = {}
    restated, rebased = [], []
    for name, row in totals[totals["one"] < totals["rows"]].iterrows():
        ratio = float(row["ratio"])
        if row["r"] == row["rows"]:
            ours = new["ts"][new_symbols == name]
            first_new = pd.Timestamp(ours.min()) if len(ours) else None
            rebased.append(Rebased(str(name), ratio, first_new, len(ours), int(row["rows"])))
            bases[str(name)] = ratio
            continue
        use_ratio = row["r"] > row["one"]
        agrees = at_median if use_ratio else at_one
        mine = symbol == name
        differs = mine & ~(at_r if use_ratio else one)
        if use_ratio:
            bases[str(name)] = ratio
        restated.append(
            _restated(
                "bars",
                str(name),
                held[differs],
                {c: ~a[differs] for c, a in agrees.items()},
                ratio if use_ratio else 1.0,
            )
        )
    basis = pd.Series(symbol).map(bases).fillna(1.0).to_numpy(float)
    prices_agree = np.where(basis == 1.0, one, at_r)
    volume, volume_stored = _values(held, "volume")
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_ratio = pd.Series(np.where(volume_stored > 0, volume / volume_stored, np.nan))
    usual = volume_ratio.groupby(symbol).transform("median").fillna(1.0).to_numpy(float)
    same_volume = np.logical_or.reduce(
        [_agree(volume, volume_stored, k, unit=1.0) for k in (1.0, 1 / basis, usual)]
    )
    revised_rows = held[prices_agree & ~same_volume]
    revised = []
    for name, rows in revised_rows.groupby(revised_rows["symbol"].astype(str), sort=True):
        first = rows.loc[rows["ts"].idxmin()]
        revised.append(
            VolumeRevised(
                str(name),
                len(rows),
                pd.Timestamp(first["ts"]),
                float(first["volume_stored"]),
                float(first["volume"]),
            )
        )
    return _Comparison(bases, tuple(restated), tuple(rebased), tuple(revised))


def _compare_macro(held: pd.DataFrame) -> _Comparison:
    """Per series of ``held``: any value differing beyond ``RESTATEMENT_RTOL`` is a restatement (a
    macro series is never re-based)."""
    differs = ~_agree(*_values(held, "value"), 1.0, unit=None)
    rows = held[differs]
    return _Comparison(
        restated=tuple(
            _restated("macro", str(name), part, {"value": np.ones(len(part), dtype=bool)}, 1.0)
            for name, part in rows.groupby(rows["symbol"].astype(str), sort=True)
        )
    )


def _on_stored_basis(new: pd.DataFrame, bases: dict[str, float]) -> pd.DataFrame:
    """``new`` with each symbol of ``bases`` converted to the store's basis: prices divided by its
    ratio, sizes multiplied (returns and dollar volume unchanged)."""
    if not bases:
        return new
    out = new.copy()
    ratio = out["symbol"].astype(str).map(bases).fillna(1.0).to_numpy(float)
    for column in _DIVIDED:
        if column in out:
            out[column] = out[column].to_numpy(dtype=float) / ratio
    for column in _MULTIPLIED:
        if column in out:
            out[column] = out[column].to_numpy(dtype=float) * ratio
    return out


_COMPARED: Final[dict[str, tuple[str, ...]]] = {"bars": (*PRICE_COLUMNS, "volume"), "macro": ("value",)}
"""The columns a stored row is compared in, per append-only table."""


def _split_against_store(table: str, frame: pd.DataFrame, stored: pd.DataFrame | None) -> _Split:
    """New rows (after the symbol's last stored ts, or of a new symbol) on the store's basis, a count
    of rows already stored (same symbol and ts), the older rows that are not stored, summarised per
    symbol, and the re-based, restated and volume-revised symbols (module docstring)."""
    if stored is None or frame.empty:
        return _Split(frame, 0, ())
    last = stored.groupby("symbol", observed=True)["ts"].max()
    floor = frame["symbol"].map(last)
    new = (floor.isna() | (frame["ts"] > floor)).to_numpy()
    older = frame[~new]
    compared = [*_KEY, *_COMPARED[table]]
    held = older[compared].merge(
        stored[compared].drop_duplicates(_KEY), on=_KEY, how="left", indicator=True, suffixes=("", "_stored")
    )
    found = (held["_merge"] == "both").to_numpy()
    missing = older[~found]
    not_stored = tuple(
        NotStored(
            table,
            str(symbol),
            len(rows),
            pd.Timestamp(rows["ts"].min()),
            pd.Timestamp(rows["ts"].max()),
            pd.Timestamp(last[symbol]),
        )
        for symbol, rows in missing.groupby("symbol", sort=True)
    )
    fresh = frame[new].reset_index(drop=True)
    found_rows = held[found].reset_index(drop=True)
    comparison = _compare_bars(found_rows, fresh) if table == "bars" else _compare_macro(found_rows)
    counts = fresh["symbol"].astype(str).value_counts()
    restated = tuple(replace(r, appended=int(counts.get(r.symbol, 0))) for r in comparison.restated)
    return _Split(
        _on_stored_basis(fresh, comparison.bases),
        len(older) - len(missing),
        not_stored,
        restated,
        comparison.rebased,
        comparison.volume_revised,
    )


def _validated(table: str, frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    valid, errors, _ = conform(table, frame)
    if errors:
        raise ReplayValidationError(errors, origin=origin)
    return valid.to_pandas()


def _changed_rows(stored: pd.DataFrame, fresh: pd.DataFrame) -> np.ndarray:
    """Per stored feature row: does ``fresh`` (same representation) hold other values, or no row?"""
    old, keyed = stored.set_index(_KEY), fresh.set_index(_KEY)
    changed = ~old.index.isin(keyed.index)
    new = keyed.reindex(old.index)
    for column in old.columns:
        a, b = old[column], new[column]
        same = (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna() & b.isna()).to_numpy(dtype=bool)
        changed |= ~same
    return np.asarray(changed, dtype=bool)


@dataclass(frozen=True)
class _FeaturePlan:
    """How the features table follows the bars: append ``new`` rows, or rewrite with ``full``."""

    new: pd.DataFrame
    changed: int = 0
    full: pd.DataFrame | None = field(default=None, repr=False)


def _plan_features(stored: pd.DataFrame | None, fresh: pd.DataFrame) -> _FeaturePlan:
    if stored is None:
        return _FeaturePlan(fresh)
    changed = _changed_rows(stored, fresh)
    is_new = ~fresh.set_index(_KEY).index.isin(stored.set_index(_KEY).index)
    new = fresh[is_new].reset_index(drop=True)
    last = stored.groupby("symbol", observed=True)["ts"].max()
    floor = new["symbol"].map(last)
    in_order = bool((floor.isna() | (new["ts"] > floor)).all())
    if changed.any() or not in_order:
        return _FeaturePlan(new, int(changed.sum()), fresh)
    return _FeaturePlan(new)


def ingest_frames(
    root: str | os.PathLike[str],
    bars: pd.DataFrame,
    macro: pd.DataFrame | None = None,
    origin: str = "source",
    config: FeatureConfig | None = None,
    show_progress: bool = True,
    keep_stored_on_restatement: bool = False,
) -> IngestResult:
    """Validate ``bars`` (and ``macro``), append what is new, bring the features table up to date
    (module docstring: appended, or rewritten when stored rows changed).

    A symbol whose stored bars the source repeats times one ratio (a split or dividend re-adjustment)
    is re-based: its new bars are stored on the store's basis and reported in ``IngestResult.rebased``.
    A source that restates stored rows otherwise is refused with an ``InputError`` before anything is
    written; ``keep_stored_on_restatement``: keep the stored rows as they are, append the restated
    symbols' new rows on their basis and report them in ``IngestResult.restated`` instead (module
    docstring)."""
    path = Path(root)
    # closed on an error too, so the progress line does not swallow the error's line
    with tqdm(total=4, desc="ingest", unit="stage", disable=not show_progress, leave=False) as stages:
        bars = _validated("bars", bars, origin)
        macro = _validated("macro", macro, origin) if macro is not None and len(macro) else None
        stages.update(1)
        stages.set_description("ingest: merge with store")
        path.mkdir(parents=True, exist_ok=True)
        with ReplayWriter(path) as writer:
            # lock and recover first, so the store read below is its committed state until the end
            existing = [t for t in ("bars", "macro", "features") if (path / t).is_dir()]
            writer.open(*existing)
            recover_store(path, abandoned="bars" in existing)
            stored_bars, stored_macro = _stored(path, "bars"), _stored(path, "macro")
            bar_split = _split_against_store("bars", bars, stored_bars)
            macro_split = _split_against_store("macro", macro, stored_macro) if macro is not None else None
            restated = bar_split.restated + (macro_split.restated if macro_split else ())
            if restated and not keep_stored_on_restatement:
                raise InputError(restatement_refusal(restated, origin))
            all_bars = pd.concat(
                [f for f in (stored_bars, bar_split.new) if f is not None], ignore_index=True
            )
            held = set(stored_bars["symbol"].astype(str)) if stored_bars is not None else set()
            refuse_mixed_daily_clocks(all_bars, origin, stored=held)
            new_macro = macro_split.new if macro_split is not None else None
            macro_parts = [f for f in (stored_macro, new_macro) if f is not None and len(f)]
            all_macro = pd.concat(macro_parts, ignore_index=True) if macro_parts else None
            stages.update(1)
            stages.set_description("ingest: features")
            plan: _FeaturePlan | None = None
            if len(all_bars):
                features = build_features(all_bars, all_macro, _stored(path, "forecasts"), config)
                plan = _plan_features(_stored(path, "features"), _validated("features", features, "features"))
            stages.update(1)
            stages.set_description("ingest: write")
            appended: dict[str, int] = {}
            # a rewrite is staged before any bar is written: a failure there leaves the store as it was
            staged = _stage_features(path, plan.full) if plan is not None and plan.full is not None else None
            try:
                if len(bar_split.new):
                    appended["bars"] = writer.append_bars(bar_split.new).rows_written
                if new_macro is not None and len(new_macro):
                    appended["macro"] = writer.append("macro", new_macro).rows_written
                if staged is not None:
                    _swap_features(path, staged)
                if plan is not None and len(plan.new):
                    if staged is None:
                        writer.append_features(plan.new)
                    appended["features"] = len(plan.new)
            finally:
                if staged is not None:
                    _discard_staged(path, staged)
        stages.update(1)
    return IngestResult(
        appended,
        skipped_bars=bar_split.already_stored,
        not_stored=bar_split.not_stored + (macro_split.not_stored if macro_split else ()),
        features_changed=plan.changed if plan is not None else 0,
        features_rewritten=len(plan.full) if plan is not None and plan.full is not None else 0,
        restated=restated,
        rebased=bar_split.rebased,
        volume_revised=bar_split.volume_revised,
    )


_SWAP = "_swap.json"


_STAGING_PREFIXES = (".rebuild-", ".features-old-")
"""Hidden folders of a features rewrite (``_stage_features``, ``_swap_features``)."""


def recover_store(root: Path, abandoned: bool = False) -> None:
    """Finish a features swap that a crash interrupted (see ``_swap_features``). ``abandoned``: also
    delete the hidden staging folders no swap refers to, left by a hard crash before its swap began;
    only a caller holding the store's ``bars`` lock may ask (every rewrite stages under it, so none
    of those folders is still being written)."""
    _finish_swap(root)
    if abandoned:
        for folder in root.iterdir():
            if folder.is_dir() and folder.name.startswith(_STAGING_PREFIXES):
                shutil.rmtree(folder, ignore_errors=True)


def _finish_swap(root: Path) -> None:
    intent = root / _SWAP
    (root / f".tmp-{_SWAP}").unlink(missing_ok=True)  # an intent never renamed into place: no swap began
    if not intent.exists():
        return
    try:
        plan = json.loads(intent.read_text())
        staged, old, live = root / plan["staged"], root / plan["old"], root / "features"
    except (ValueError, TypeError, KeyError) as exc:  # written atomically: only an outside edit gets here
        raise InputError(
            f"{str(intent)!r} is not a features swap this code wrote ({type(exc).__name__}: {exc}): the "
            "store's features table may be mid-swap; check which of 'features' and the hidden "
            "'.rebuild-*' / '.features-old-*' folders is complete, keep that one as 'features', then "
            "delete the file"
        ) from None
    if staged.exists():
        if live.exists():
            os.replace(live, old)
        os.replace(staged, live)
    shutil.rmtree(old, ignore_errors=True)
    if staged.parent != root:  # the hidden folder the table was staged in
        shutil.rmtree(staged.parent, ignore_errors=True)
    intent.unlink()


def _stage_features(root: Path, features: pd.DataFrame) -> str:
    """Write ``features`` as a complete features table under a hidden folder of ``root``; its name."""
    staged = f".rebuild-{uuid.uuid4().hex[:8]}"
    try:
        with ReplayWriter(root / staged) as writer:
            writer.append_features(features)
    except BaseException:
        shutil.rmtree(root / staged, ignore_errors=True)
        raise
    return staged


def _swap_features(root: Path, staged: str) -> None:
    """Replace ``root/features`` by the staged table: the intent is written first, so a crash (or an
    error) at any later point is finished by the next ``recover_store``. Readers see the old table or
    the new one, except in the instant between the two renames, when there is no features table."""
    token = staged.removeprefix(".rebuild-")
    plan = {"staged": f"{staged}/features", "old": f".features-old-{token}"}
    write_file_atomically(root / _SWAP, json.dumps(plan).encode())  # a crash leaves it whole or absent
    _finish_swap(root)


def _discard_staged(root: Path, staged: str) -> None:
    """Remove what is left of a staged table, unless a swap of it was started and not finished:
    that one ``recover_store`` completes."""
    if not (root / _SWAP).exists():
        shutil.rmtree(root / staged, ignore_errors=True)


def import_forecasts(
    root: str | os.PathLike[str],
    forecasts: pd.DataFrame,
    origin: str = "forecasts",
    config: FeatureConfig | None = None,
) -> IngestResult:
    """Append external forecasts (validated) and rebuild the features table with them.

    Impossible values (``replay.sources.forecast_file.forecast_value_errors``: crossed quantiles, a
    return <= -1 or > 10, a negative std, a horizon < 1) are refused before anything is written."""
    path = Path(root)
    if not (path / "bars").is_dir():
        raise ReplayValidationError([], origin=f"{path} has no bars: ingest prices before forecasts")
    impossible = forecast_value_errors(forecasts)
    if impossible:
        raise ReplayValidationError(impossible, origin=origin)
    forecasts = _validated("forecasts", forecasts, origin)
    with ReplayWriter(path) as writer:
        writer.open(*(t for t in ("bars", "features") if (path / t).is_dir()))
        recover_store(path, abandoned=True)  # under the locks: another ingest may be mid-swap
        bars = read_frame(path, "bars")
        unknown = sorted(set(forecasts["symbol"].astype(str)) - set(bars["symbol"].astype(str)))
        if unknown:
            raise ValueError(f"{origin}: forecasts for symbols not in the store: {unknown[:5]}")
        result = writer.append("forecasts", forecasts)
        features = build_features(bars, _stored(path, "macro"), read_frame(path, "forecasts"), config)
        staged = _stage_features(path, features)
        try:
            _swap_features(path, staged)
        finally:
            _discard_staged(path, staged)
    return IngestResult(
        {"forecasts": result.rows_written, "features": len(features)},
        skipped_bars=0,
    )
