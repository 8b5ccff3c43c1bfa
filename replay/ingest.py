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
* A source row already stored is compared with the stored one (``compare_bars``, ``compare_macro``).
  Bars: per symbol, the overlapping rows' open, high, low and close agree with the stored ones times
  one ratio ``r`` = the median of the source/stored closes when ``|source - r * stored| <=
  RESTATEMENT_RTOL * max(|source|, |r * stored|)`` (1e-5: float noise, csv rounding to 6 significant
  digits), plus a rounding allowance for a price that is a whole number of its tick (half a cent at
  or above $1, half of 0.0001 below, where sources round to 4 decimals; at most 0.5 % of the price:
  ``price_rounding_allowance``), so a penny stock's cent is a change, not rounding. Agreement at ``r = 1``:
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
* Every new bar is compared with the previous bar of its symbol (stored or new) for the signature of
  a split left unadjusted in raw prices -- close and open near ``1 / k`` times the previous close,
  volume near ``k`` times (``replay.split_signature``) -- and each one found is reported in
  ``IngestResult.suspected_splits`` (a warning). The bar is stored as given: a true crash of that
  size exists, and the rule cannot be sure.
* Every new bar is checked for a *bad print* (``replay.bad_prints``): an open more than 5x off both
  the previous close and its own close, or a run of up to 5 closes more than 5x off both the closes
  around it while those agree (a spike that reverts). The ingest is refused before anything is
  written, naming the symbol, the date, the column, the value and the rule; with
  ``drop_bad_prints`` those bars are left out (holes) and reported instead. New bars that show the
  store's last bar was such a spike are stored with a warning naming it: a stored bar cannot be
  dropped, and refusing stopped every later ingest for good.
* A new bar after a gap of more than a year of bars in its symbol (a halt, or a ticker reused) and
  one whose close moved more than 5x not as a split (a unit change?) are stored with a warning
  (``replay.odd_moves``).
* Daily bars of one asset class stamped at different times of day on the same dates (the store's and
  the source's together: equities dated 00:00 UTC next to equities at New York midnight) are refused
  before anything is written (``replay.timeutil.refuse_mixed_daily_clocks``, the rule the simulator's
  loader applies too): the calendar would hold two labels per session and every symbol a hole at
  every other one.
* An equity whose new bars trade on Saturdays and Sundays (4 of each at least, 5 %: a 24/7 series under a name
  that is no crypto pair the loop knows, ``SUIEUR``) is refused before anything is written
  (``replay.weekend_bars``): as an equity it would be stepped, annualised, charged and allowed to be
  shorted as one.
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

from raytrade.replay.bad_prints import BadPrint, find_bad_prints, refuse_bad_prints, without_bad_prints
from raytrade.replay.bar_lengths import refuse_mixed_bar_lengths
from raytrade.replay.errors import InputError
from raytrade.replay.feature_settings import store_feature_config
from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.lone_days import LoneEquityDays, lone_equity_days
from raytrade.replay.loop_rules import coin_quote
from raytrade.replay.odd_moves import BigMove, LongGap, TwinSymbols, big_moves, long_gaps, twin_symbols
from raytrade.replay.reader import read_frame
from raytrade.replay.restatement import (
    COMPARED,
    Rebased,
    Restated,
    VolumeRevised,
    compare_bars,
    compare_macro,
    on_stored_basis,
    restatement_refusal,
)
from raytrade.replay.sources.forecast_file import forecast_value_errors
from raytrade.replay.split_signature import SuspectedSplit, suspected_splits
from raytrade.replay.timeutil import refuse_mixed_daily_clocks
from raytrade.replay.unstepped import UnsteppedCrypto, unstepped_crypto
from raytrade.replay.validation import ReplayValidationError, RowError, conform
from raytrade.replay.weekend_bars import refuse_weekend_equities
from raytrade.replay.writer import ReplayWriter, write_file_atomically

Progress = Callable[[str], None]
StoreCheck = Callable[[pd.DataFrame | None, pd.DataFrame], None]
"""A source's own refusal of its rows against the store's bars (``None``: an empty store), raising an
``InputError`` before anything is written (``replay.sources.alpaca_daily.refuse_second_crypto_clock``)."""
_KEY = ["symbol", "ts"]


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
class IngestResult:
    """What an ingest did (module docstring: new, already stored, not stored, re-based, restated;
    features rewrite).

    ``appended``: rows appended per table. ``skipped_bars``: source bars already in the store (same
    symbol and ts). ``not_stored``: older rows absent from the store, per table and symbol.
    ``rebased``: symbols whose new bars were stored converted to the store's basis. ``restated``:
    symbols whose stored rows the source restates, kept as stored, their new rows appended (only with
    ``keep_stored_on_restatement``; otherwise the ingest is refused). ``volume_revised``: symbols
    whose stored volumes the source revises, kept as stored. ``suspected_splits``: new bars that look
    like a split left unadjusted, stored as given. ``features_changed``: stored feature
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
    suspected_splits: tuple[SuspectedSplit, ...] = ()
    priced_in_coin: tuple[str, ...] = ()  # the bars' pairs quoted in a coin (replay.loop_rules.coin_quote)
    lone_equity_days: tuple[LoneEquityDays, ...] = ()  # new equity bars on days no other equity has
    unstepped_crypto: tuple[UnsteppedCrypto, ...] = ()  # new crypto bars outside the equities' sessions
    unused_forecasts: tuple[str, ...] = ()  # imported forecast rows no feature reads (a horizon other than 1)
    dropped_bad_prints: tuple[BadPrint, ...] = ()  # new bars left out as bad prints (drop_bad_prints)
    stored_bad_prints: tuple[BadPrint, ...] = ()  # stored bars the new ones show were spikes (kept)
    long_gaps: tuple[LongGap, ...] = ()  # new bars after a gap of over a year of bars in their symbol
    big_moves: tuple[BigMove, ...] = ()  # new bars whose close moved over 5x, not as a split
    twins: tuple[TwinSymbols, ...] = ()  # pairs of symbols closing alike (one instrument, two names?)

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
        if self.suspected_splits:
            parts.append(
                f"bars that look like an unadjusted split, stored as given: {len(self.suspected_splits):,}"
            )
        if self.dropped_bad_prints:
            parts.append(f"bad prints NOT stored (--drop-bad-prints): {len(self.dropped_bad_prints):,}")
        if self.features_rewritten:
            parts.append(
                f"features table rewritten ({self.features_rewritten:,} rows; {self.features_changed:,} "
                "stored rows changed by the new data)"
            )
        return "; ".join(parts)

    def warnings(self) -> list[str]:
        return [
            *(n.message() for n in self.not_stored),
            *(r.message() for r in self.rebased),
            *(r.message() for r in self.restated),
            *(v.message() for v in self.volume_revised),
            *(s.message() for s in self.suspected_splits),
            *(p.dropped() for p in self.dropped_bad_prints),
            *(p.stored_warning() for p in self.stored_bad_prints),
            *(g.message() for g in self.long_gaps),
            *(m.message() for m in self.big_moves),
            *(t.message() for t in self.twins),
            *(coin_priced_message(symbol) for symbol in self.priced_in_coin),
            *(d.message() for d in self.lone_equity_days),
            *(u.message() for u in self.unstepped_crypto),
            *self.unused_forecasts,
        ]


def coin_priced_message(symbol: str) -> str:
    """The warning for a pair quoted in a coin: its bars are priced in that coin, not in dollars."""
    coin = coin_quote(symbol)
    return (
        f"{symbol} is a pair quoted in {coin}: its prices and returns are in {coin}, and the simulator "
        f"and the evaluations take them as dollars (its P&L misses {coin}'s own moves); serving gives it "
        "no target_qty and `raytrade live` refuses to trade it. For research in dollars, ingest the "
        "pair against USD"
    )


@dataclass(frozen=True)
class _Split:
    """Source rows of one table against the store; ``new`` already on the store's basis."""

    new: pd.DataFrame
    already_stored: int
    not_stored: tuple[NotStored, ...]
    restated: tuple[Restated, ...] = ()
    rebased: tuple[Rebased, ...] = ()
    volume_revised: tuple[VolumeRevised, ...] = ()


def _stored(root: Path, table: str) -> pd.DataFrame | None:
    if not (root / table).is_dir():
        return None
    frame = read_frame(root, table)
    return frame if len(frame) else None


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
    compared = [*_KEY, *COMPARED[table]]
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
    comparison = compare_bars(found_rows, fresh) if table == "bars" else compare_macro(found_rows)
    counts = fresh["symbol"].astype(str).value_counts()
    restated = tuple(replace(r, appended=int(counts.get(r.symbol, 0))) for r in comparison.restated)
    return _Split(
        on_stored_basis(fresh, comparison.bases),
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
    check_against_store: StoreCheck | None = None,
    drop_bad_prints: bool = False,
) -> IngestResult:
    """Validate ``bars`` (and ``macro``), append what is new, bring the features table up to date
    (module docstring: appended, or rewritten when stored rows changed).

    ``check_against_store(stored_bars, bars)``, when given, runs on the store's committed bars (read
    under the writer's lock) and the validated source bars before anything else; its ``InputError``
    refuses the ingest with nothing written.

    A symbol whose stored bars the source repeats times one ratio (a split or dividend re-adjustment)
    is re-based: its new bars are stored on the store's basis and reported in ``IngestResult.rebased``.
    A source that restates stored rows otherwise is refused with an ``InputError`` before anything is
    written; ``keep_stored_on_restatement``: keep the stored rows as they are, append the restated
    symbols' new rows on their basis and report them in ``IngestResult.restated`` instead (module
    docstring).

    A new bar with a bad print (``replay.bad_prints``: an open or a reverting close more than 5x off
    its neighbours) refuses the ingest with an ``InputError`` before anything is written;
    ``drop_bad_prints``: leave those bars out instead (holes) and report them in
    ``IngestResult.dropped_bad_prints``. A stored bar the new bars show was such a spike is named in
    ``IngestResult.stored_bad_prints`` (a warning; the store is append-only)."""
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
            config = store_feature_config(path, config)  # refused here, before anything is written
            stored_bars, stored_macro = _stored(path, "bars"), _stored(path, "macro")
            if check_against_store is not None:
                check_against_store(stored_bars, bars)
            bar_split = _split_against_store("bars", bars, stored_bars)
            macro_split = _split_against_store("macro", macro, stored_macro) if macro is not None else None
            restated = bar_split.restated + (macro_split.restated if macro_split else ())
            if restated and not keep_stored_on_restatement:
                raise InputError(restatement_refusal(restated, origin))
            bad_prints = find_bad_prints(stored_bars, bar_split.new)
            refuse_bad_prints(bad_prints, origin, drop=drop_bad_prints)
            new_bars = without_bad_prints(bar_split.new, bad_prints)
            all_bars = pd.concat([f for f in (stored_bars, new_bars) if f is not None], ignore_index=True)
            held = set(stored_bars["symbol"].astype(str)) if stored_bars is not None else set()
            refuse_mixed_daily_clocks(all_bars, origin, stored=held)
            refuse_mixed_bar_lengths(all_bars, origin, stored=held)
            refuse_weekend_equities(new_bars, origin)
            splits = suspected_splits(stored_bars, new_bars)
            gaps = long_gaps(all_bars, stored_bars, new_bars)
            moves = big_moves(stored_bars, new_bars, ((s.symbol, s.ts) for s in splits))
            twins = twin_symbols(all_bars, new_bars)
            lone_days = lone_equity_days(all_bars, new_bars)
            unstepped = unstepped_crypto(all_bars, new_bars)
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
                if len(new_bars):
                    appended["bars"] = writer.append_bars(new_bars).rows_written
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
        suspected_splits=splits,
        priced_in_coin=tuple(s for s in sorted(bars["symbol"].unique()) if coin_quote(s) is not None),
        lone_equity_days=lone_days,
        unstepped_crypto=unstepped,
        dropped_bad_prints=tuple(p for p in bad_prints if not p.stored),
        stored_bad_prints=tuple(p for p in bad_prints if p.stored),
        long_gaps=gaps,
        big_moves=moves,
        twins=twins,
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
    first_row: int = 0,
) -> IngestResult:
    """Append external forecasts (validated) and rebuild the features table with them.

    Impossible values (``replay.sources.forecast_file.forecast_value_errors``: crossed quantiles, a
    return <= -1 or > 10, a negative std, a horizon < 1) and a forecast the store holds already (the
    same symbol, ts, source and horizon: ``replay.writer``) are refused before anything is written,
    row ``i`` of ``forecasts`` named as ``first_row + i`` (1: a file's data rows)."""
    path = Path(root)
    if not (path / "bars").is_dir():
        raise ReplayValidationError([], origin=f"{path} has no bars: ingest prices before forecasts")
    impossible = forecast_value_errors(forecasts, first_row=first_row)
    if impossible:
        raise ReplayValidationError(impossible, origin=origin)
    try:
        return _import_valid_forecasts(path, _validated("forecasts", forecasts, origin), origin, config)
    except ReplayValidationError as exc:  # the forecasts' rows (the writer's refusal names none of the file)
        if any(e.table != "forecasts" for e in exc.errors):
            raise
        rows = [replace(e, row=None if e.row is None else e.row + first_row) for e in exc.errors]
        raise ReplayValidationError(rows, origin=exc.origin or origin) from None


def _import_valid_forecasts(
    path: Path, forecasts: pd.DataFrame, origin: str, config: FeatureConfig | None
) -> IngestResult:
    with ReplayWriter(path) as writer:
        writer.open(*(t for t in ("bars", "features") if (path / t).is_dir()))
        recover_store(path, abandoned=True)  # under the locks: another ingest may be mid-swap
        config = store_feature_config(path, config)
        bars = read_frame(path, "bars")
        unknown = sorted(set(forecasts["symbol"].astype(str)) - set(bars["symbol"].astype(str)))
        if unknown:
            raise ValueError(f"{origin}: forecasts for symbols not in the store: {unknown[:5]}")
        off, off_clock = _off_clock_forecasts(forecasts, bars)
        if off.size == len(forecasts) and off.size:  # every row on another clock: refused, nothing stored
            raise ReplayValidationError(off_clock, origin=origin)
        skipped: tuple[str, ...] = ()
        if off.size:  # a halted day, a holiday of the file's calendar: those rows alone, said
            first = off_clock[0]
            skipped = (
                f"{origin}: {off.size} forecast rows NOT stored, stamped where their symbol has no bar "
                f"(first: {first.value}: {first.reason})",
            )
            forecasts = forecasts.drop(index=forecasts.index[off]).reset_index(drop=True)
        result = writer.append("forecasts", forecasts)
        features = build_features(bars, _stored(path, "macro"), read_frame(path, "forecasts"), config)
        stored = _stored(path, "features")
        changed = (
            0
            if stored is None
            else int(_changed_rows(stored, _validated("features", features, "features")).sum())
        )
        staged = _stage_features(path, features)
        try:
            _swap_features(path, staged)
        finally:
            _discard_staged(path, staged)
    # the features table is rewritten whole, not appended to: reported as such (it read "features +N")
    horizons = forecasts["horizon"].to_numpy()
    unused = tuple(
        f"{int((horizons == h).sum())} forecast rows of horizon {int(h)} stored: the features read horizon "
        "1 only (the next bar's return), so no policy sees them"
        for h in sorted(set(horizons.tolist()) - {1})
    )
    return IngestResult(
        {"forecasts": result.rows_written},
        skipped_bars=0,
        features_changed=changed,
        features_rewritten=len(features),
        unused_forecasts=skipped + unused,
    )


def _off_clock_forecasts(forecasts: pd.DataFrame, bars: pd.DataFrame) -> tuple[np.ndarray, list[RowError]]:
    """The positions in ``forecasts`` of the rows stamped where their symbol has no bar though its bars
    have passed that time, and the errors naming the first :data:`SHOWN_OFF_CLOCK` of them. A forecast
    joins its bar by the exact stamp, so such a row (another timezone, a time of day, a weekend, a
    halted day) was stored and never read, and the features kept the baseline forecaster's with no
    word. A row after the symbol's last bar is kept: its bar may come later."""
    stamp = "datetime64[us, UTC]"
    keys = pd.DataFrame(
        {"symbol": forecasts["symbol"].astype(str).to_numpy(), "ts": forecasts["ts"].astype(stamp).to_numpy()}
    )
    stored = pd.DataFrame({"symbol": bars["symbol"].astype(str), "ts": bars["ts"].astype(stamp)})
    on_bar = keys.merge(stored.drop_duplicates(), how="left", on=["symbol", "ts"], indicator=True)
    last = stored.groupby("symbol")["ts"].max()
    passed = keys["ts"].to_numpy() <= keys["symbol"].map(last).to_numpy()
    off = np.flatnonzero((on_bar["_merge"] != "both").to_numpy() & passed)
    errors = []
    for i in off[:SHOWN_OFF_CLOCK]:
        symbol, ts = keys["symbol"].iloc[i], pd.Timestamp(keys["ts"].iloc[i])
        until = pd.Timestamp(last[symbol]).isoformat()
        errors.append(
            RowError(
                "forecasts",
                int(i),
                "ts",
                ts.isoformat(),
                f"no {symbol} bar at this time, though its bars go on to {until}: a forecast joins its "
                "bar by the exact stamp, so it would never be read (another timezone, a time of day, a "
                "day without a bar?)",
            )
        )
    return off, errors


SHOWN_OFF_CLOCK: Final = 20
"""Off-clock forecast rows named in a refusal (the rest counted): naming 300,000 took 18 s."""
