"""Source rows that restate stored ones: the comparison ``replay.ingest`` makes of every source row
whose (symbol, ts) is already stored, and what it does with each kind of difference (see
``replay.ingest``'s module docstring for the rules: already stored, re-based, restated, volume
revised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd

RESTATEMENT_RTOL: Final[float] = 1e-5
"""A stored value and the source's for the same (symbol, ts) differ when ``|a - b| > RESTATEMENT_RTOL *
max(|a|, |b|)``: above float noise and csv rounding to 6 significant digits (<= 5e-6 relative), below
any split, dividend re-adjustment or corrected print. Bar prices also get a rounding allowance
(``price_rounding_allowance``)."""

CENT: Final[float] = 0.01
"""The tick of a US price at or above $1 (SEC Rule 612): sources round such prices to cents."""

SUB_DOLLAR_TICK: Final[float] = 0.0001
"""The tick of a US price below $1 (SEC Rule 612): sources round such prices to 4 decimals, never
to cents, so a sub-dollar price one cent from another is another price."""

ROUNDING_RTOL: Final[float] = 0.005
"""The most a price's rounding allowance may be, relative to the price: half a tick is 0.5 % at $1
(a cent) and at $0.01 (0.0001); below $0.01 half a tick would be more (17 % at $0.0003) and the
allowance would hide real changes, so it is capped here."""

PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
"""The bar columns a basis (``Rebased``) is found in; a difference there is a restatement."""

_DIVIDED: Final[tuple[str, ...]] = (*PRICE_COLUMNS, "vwap", "bid", "ask")
_MULTIPLIED: Final[tuple[str, ...]] = ("volume", "bid_size", "ask_size")
"""A re-based symbol's new bars: the prices divided by the ratio, the sizes (in shares) multiplied."""

_NAMED_ROWS: Final[int] = 5
"""How many differing dates a ``Restated`` names."""


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
class Comparison:
    """The source's rows already stored against the stored ones: per symbol, the basis its new rows
    are converted by (only those != 1), and what to report."""

    bases: dict[str, float] = field(default_factory=dict)
    restated: tuple[Restated, ...] = ()
    rebased: tuple[Rebased, ...] = ()
    volume_revised: tuple[VolumeRevised, ...] = ()


def _on_grid(values: np.ndarray, unit: np.ndarray | float) -> np.ndarray:
    """Per value: a whole number of ``unit`` (up to float32 noise: a csv's 115.62000274658203)?"""
    steps = np.abs(values) / unit
    return np.asarray(np.abs(steps - np.round(steps)) <= 1e-6 * steps, dtype=bool)


def price_rounding_allowance(prices: np.ndarray) -> np.ndarray:
    """Per price: how far rounding may have moved it, when it is a whole number of its tick (``CENT``
    at or above $1, ``SUB_DOLLAR_TICK`` below: the grids sources round to): half a tick, at most
    ``ROUNDING_RTOL`` of the price; 0 for a price off its grid (not rounded to it). One cent apart
    is thus the same price at $30 (0.03 %) and another at $0.03 (33 %)."""
    size = np.abs(prices)
    tick = np.where(size >= 1.0, CENT, SUB_DOLLAR_TICK)
    return np.minimum(tick / 2 * _on_grid(prices, tick), ROUNDING_RTOL * size)


def _share_rounding_allowance(volumes: np.ndarray) -> np.ndarray:
    """Per volume: half a share when it is a whole number of shares (a volume rounded to shares)."""
    return 0.5 * _on_grid(volumes, 1.0)


def _agree(
    source: np.ndarray,
    stored: np.ndarray,
    ratio: np.ndarray | float,
    rounding: Callable[[np.ndarray], np.ndarray] | None,
) -> np.ndarray:
    """Per row: is ``source`` ``ratio`` times ``stored``, within ``RESTATEMENT_RTOL`` plus each of
    the two values' ``rounding`` allowance (the stored one's scaled by ``ratio``)?"""
    scaled = ratio * stored
    tolerance = RESTATEMENT_RTOL * np.maximum(np.abs(source), np.abs(scaled))
    if rounding is not None:
        tolerance = tolerance + rounding(source) + np.abs(ratio) * rounding(stored)
    return np.asarray(np.abs(source - scaled) <= tolerance, dtype=bool)


def _values(held: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    return held[column].to_numpy(dtype=float), held[f"{column}_stored"].to_numpy(dtype=float)


def _prices_agree(held: pd.DataFrame, ratio: np.ndarray | float) -> dict[str, np.ndarray]:
    return {c: _agree(*_values(held, c), ratio, price_rounding_allowance) for c in PRICE_COLUMNS}


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


def compare_bars(held: pd.DataFrame, new: pd.DataFrame) -> Comparison:
    """Per symbol of ``held`` (the source's bars already stored merged with the stored ones, suffix
    ``_stored``): already stored, re-based, restated, and revised volumes (module docstring). ``new``:
    the source's new bars, for the re-based symbols' first new date and count."""
    if held.empty:
        return Comparison()
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
        [_agree(volume, volume_stored, k, _share_rounding_allowance) for k in (1.0, 1 / basis, usual)]
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
    return Comparison(bases, tuple(restated), tuple(rebased), tuple(revised))


def compare_macro(held: pd.DataFrame) -> Comparison:
    """Per series of ``held``: any value differing beyond ``RESTATEMENT_RTOL`` is a restatement (a
    macro series is never re-based)."""
    differs = ~_agree(*_values(held, "value"), 1.0, None)
    rows = held[differs]
    return Comparison(
        restated=tuple(
            _restated("macro", str(name), part, {"value": np.ones(len(part), dtype=bool)}, 1.0)
            for name, part in rows.groupby(rows["symbol"].astype(str), sort=True)
        )
    )


def on_stored_basis(new: pd.DataFrame, bases: dict[str, float]) -> pd.DataFrame:
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


COMPARED: Final[dict[str, tuple[str, ...]]] = {"bars": (*PRICE_COLUMNS, "volume"), "macro": ("value",)}
"""The columns a stored row is compared in, per append-only table."""
