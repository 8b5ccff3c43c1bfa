"""Load a split of the replay store as ``MarketData`` for the simulator.

Calendar rule: when the universe holds any equity, the simulator steps on the equity calendar (the
sorted union of equity bar timestamps) and crypto is observed at those same labels (its weekend bars
are not stepped; nothing is forward-filled from a later bar). Crypto bars stamped on another clock
(between the labels, e.g. daily bars at 05:00 UTC next to equity dates at 00:00 UTC) are refused
(:func:`refuse_off_calendar_crypto`), never dropped or shifted. Daily bars of the calendar's class
stamped at different times of day on the same dates (equities dated 00:00 UTC next to equities at New
York midnight, 05:00 UTC) would make two labels per session and a hole in every symbol at every other
one: refused too (``replay.timeutil.refuse_mixed_daily_clocks``). A crypto-only universe steps on its
7-day calendar. An asset stepped off its own calendar (crypto next to equities: a Friday -> Monday
step carries three days of its moves) has its close-derived features, its forecasts and ``kelly_lite``
restated on the stepping calendar from its closes there, history before the split included
(``envs.step_features``: the baseline forecaster recomputed from the step closes, an imported
forecast scaled to the step's length), so every volatility a policy or baseline sizes by, and the
edge it sizes, is that of one step; the store keeps its own-calendar values. ``periods_per_year``
follows: 252 (365 for crypto-only) x bars per day, and ``days_per_bar`` is 1 / bars per day (the
bar length per-bar financing and borrow rates follow).

Per (t, asset): ``listed`` is True only where the asset has a real bar at t: a bar with a volume of 0
(a halted day reported at a stale price) is not one, it is a hole like a missing bar (and does not
count as a bar after the window for ``listed_after``). Inside an asset's life a missing bar (a
halt or a data hole) gets the last real close as both open and close, so a position
held through it sees no move until the reopen; before the listing prices are carried backward and
after the last bar forward, only to keep arithmetic finite (the asset is masked there). A missing or
non-positive spread (a Corwin-Schultz estimate of 0 on a flat bar is not a free trade) is costed at
the median of the asset's positive spreads at bars <= t in the window, or 25 bps before it has one.
A missing dollar volume is 0, and so is a zero one: no fill capacity (the simulator fills at most
``max_participation`` of it, so nothing; no floor invents liquidity). ``bar_dollar_volume`` is each
real bar's own close x volume (0 at a hole): the simulator caps (and prices the impact of) a fill at
that bar's open by it too.
``close_before`` / ``listed_before`` are the closes and real-bar flags of the (up to ``BARS_BEFORE``)
calendar bars just before the split's first one (none for ``all``), so ``kelly_lite``'s sigma does
not restart at the split. Feature NaNs become 0 (the store's nulls mean "not enough history yet")
and are flagged in ``MarketData.feature_missing``, which the observation encoder turns into an
explicit missing channel (``envs.normalization``); an unknown volatility regime counts as 1 (choppy).
``forecast_fallback`` is the store's ``fc_fallback`` (the baseline forecaster made the row's forecast;
stress scenarios recompute those), False where it is null.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raytrade.envs.config import ReplayDataConfig
from raytrade.envs.market_data import BARS_BEFORE, MarketData, carry_close_through_holes
from raytrade.envs.step_features import STEP_FEATURES, STEP_FORECAST_INPUTS, price_features, step_forecasts
from raytrade.replay.bar_lengths import refuse_mixed_bar_lengths
from raytrade.replay.errors import InputError
from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.wide import periods_per_year
from raytrade.replay.reader import read_frame
from raytrade.replay.remote_store import local_store
from raytrade.replay.schema import FEATURES_SCHEMA
from raytrade.replay.splits import EMBARGO_BARS, TRAIN_FRACTION, VALIDATION_FRACTION, fractional_splits
from raytrade.replay.timeutil import (
    DAILY_SPACING,
    DAY,
    bar_length,
    refuse_mixed_daily_clocks,
    times_of_day,
)

DEFAULT_FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_20",
    "vol_60",
    "skew_60",
    "atr_pct_14",
    "spread_bps",
    "drawdown",
    "drawdown_velocity",
    "var_95_60",
    "vol_regime_code",
    "fc_mean",
    "fc_std",
    "fc_q05",
    "fc_q95",
    "fc_calib_resid",
    "fc_edge_bps",
    "fc_gate_open",
    "kelly_lite",
    "dd_trigger_state",
    "vix_level",
    "vix_term",
    "sector_momentum",
)
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "base": ("ret_1", "ret_5", "ret_20", "vol_20", "spread_bps", "fc_mean", "fc_std"),
    "returns": ("ret_1", "ret_5", "ret_20", "vol_20", "vol_60", "skew_60", "atr_pct_14"),
    "microstructure": ("spread_bps",),
    "regime": ("vol_regime_code", "drawdown", "drawdown_velocity", "var_95_60"),
    "forecast": ("fc_mean", "fc_std", "fc_q05", "fc_q95", "fc_calib_resid", "fc_edge_bps", "fc_gate_open"),
    "risk": ("kelly_lite", "dd_trigger_state"),
    "macro": ("vix_level", "vix_term", "sector_momentum"),
    "consensus": ("fc_min_move_adaptive",),
    "recalibrated": ("fc_recal_q05", "fc_recal_q25", "fc_recal_q50", "fc_recal_q75", "fc_recal_q95"),
}
"""Observation feature groups (``raytrade tune --features``), by the ``replay.features`` module that
computes them; ``base`` is the original 7-column observation. ``enriched`` is every group but
``base``, ``consensus`` and ``recalibrated``: all of :data:`DEFAULT_FEATURES`. ``consensus``
(``replay.features.consensus``) and ``recalibrated`` (``replay.features.recalibration``, filled only
in stores built with ``FeatureConfig.recalibration``) are opt-in."""
ENRICHED: str = "enriched"


def resolve_feature_groups(selection: str) -> tuple[str, ...]:
    """Feature columns of ``selection``: ``base``, ``enriched`` or comma-separated group names
    (:data:`FEATURE_GROUPS`); columns keep first-seen order, without repeats. An unknown group is a
    ``ValueError`` naming it and the known ones."""
    names = [part.strip() for part in selection.split(",") if part.strip()]
    if not names:
        raise InputError(f"--features must name at least one group, got {selection!r}")
    columns: list[str] = []
    for name in names:
        if name == ENRICHED:
            group = DEFAULT_FEATURES
        elif name in FEATURE_GROUPS:
            group = FEATURE_GROUPS[name]
        else:
            known = ", ".join([ENRICHED, *FEATURE_GROUPS])
            raise InputError(f"unknown feature group {name!r}; known: {known}")
        columns += [c for c in group if c not in columns]
    return tuple(columns)


_MISSING_SPREAD_BPS = 25.0
_SCALED = {"vix_level": 0.01, "fc_edge_bps": 1e-4, "spread_bps": 1e-4, "atr_pct_14": 0.01}


def _numeric_feature(name: str) -> bool:
    field = FEATURES_SCHEMA.field(name)
    return str(field.type) != "string"


def calendar_class(bars: pd.DataFrame) -> str:
    """The asset class whose bars make the calendar (module docstring): equity when ``bars`` (columns
    ``asset_class``, ``volume``) holds an equity bar that traded. An equity-class series that never
    trades (an index, a fund's NAV at volume 0) is no session calendar: a store of coins beside it
    steps on the coins' days (it had no step at all, and the loader failed with an IndexError)."""
    return "equity" if ((bars["asset_class"] == "equity") & (bars["volume"] > 0)).any() else "crypto"


def market_calendar(bars: pd.DataFrame) -> pd.DatetimeIndex:
    """The calendar the simulator steps on: the sorted unique ``ts`` of the rows of ``bars`` (columns
    ``ts``, ``asset_class``, ``volume``) of their :func:`calendar_class` that traded (volume > 0).

    A stamp where no bar of that class traded is no session: a source that exports every weekday
    prints an exchange holiday as a flat bar at the last close with volume 0 for every symbol. As a
    label it would be a step where nothing is listed, counted in every bar-based window (the kill
    switch's release, the benchmark's month, ``periods_per_year``) and credited a bar of carry."""
    traded = bars[bars["volume"] > 0]
    stepped = traded["asset_class"] == calendar_class(bars)
    # Series.unique keeps the datetime dtype; np.unique on tz-aware stamps sorted Python objects
    # (5.8 s for a 520-symbol, ten-year store, on every load)
    calendar = pd.DatetimeIndex(traded.loc[stepped, "ts"].unique()).sort_values()
    if calendar.empty:
        raise InputError(f"the store holds no bar that traded (volume > 0) among its {len(bars):,} bars")
    return calendar


def split_of(
    calendar: pd.DatetimeIndex,
    split: str,
    train_fraction: float = TRAIN_FRACTION,
    validation_fraction: float = VALIDATION_FRACTION,
    embargo_bars: int = EMBARGO_BARS,
) -> pd.DatetimeIndex:
    """The bars of ``calendar`` in ``split`` ("train" | "validation" | "test" | "all"):
    ``replay.splits.fractional_splits`` at these fractions and embargo."""
    if split == "all":
        return calendar
    windows = fractional_splits(calendar, train_fraction, validation_fraction, embargo_bars)
    if split not in windows:
        raise InputError(f"split must be one of train, validation, test, all; got {split!r}")
    window = windows[split]
    return calendar[(calendar >= window.start) & (calendar <= window.end)]


def split_calendar(cfg: ReplayDataConfig) -> pd.DatetimeIndex:
    """The bars of ``cfg.split`` of the store at ``cfg.root``: exactly the calendar
    :func:`load_market_data_from_config` steps on, read from the bars' timestamps alone."""
    columns = ["ts", "asset_class", "volume"]
    bars = read_frame(local_store(cfg.root), "bars", symbols=cfg.symbols, columns=columns)
    if bars.empty:
        raise InputError(f"the store at {cfg.root} holds no bars")
    return split_of(
        market_calendar(bars), cfg.split, cfg.train_fraction, cfg.validation_fraction, cfg.embargo_bars
    )


def load_market_data(
    root: str | os.PathLike[str],
    split: str = "train",
    symbols: Sequence[str] | None = None,
    *,
    train_fraction: float = TRAIN_FRACTION,
    validation_fraction: float = VALIDATION_FRACTION,
    embargo_bars: int = EMBARGO_BARS,
    feature_columns: Sequence[str] = DEFAULT_FEATURES,
) -> MarketData:
    """The ``split`` window ("train" | "validation" | "test" | "all") of the store at ``root``.

    Raises ``ValueError`` naming unknown symbols, unknown or non-numeric feature columns, or a split
    that would be empty; an ``InputError`` naming the symbols and their times of day for bars on two
    clocks (module docstring).
    """
    store = local_store(root)  # a remote store (s3://…) is read from its local mirror, on any node
    names = set(FEATURES_SCHEMA.names)
    unknown = [c for c in feature_columns if c not in names]
    if unknown:
        raise InputError(f"feature column {unknown[0]!r} is not in the features table")
    text = [c for c in feature_columns if not _numeric_feature(c)]
    if text:
        raise InputError(f"feature column {text[0]!r} is text; use its numeric code instead")
    bar_columns = ["symbol", "ts", "open", "close", "volume", "asset_class"]
    bars = read_frame(store, "bars", symbols=symbols, columns=bar_columns)
    if symbols is not None:
        missing = sorted(set(symbols) - set(bars["symbol"].astype(str)))
        if missing:
            raise InputError(f"symbols not in the store: {missing}")
    if bars.empty:
        raise InputError(f"the store at {root} holds no bars")
    classes = bars.groupby("symbol")["asset_class"].first()
    refuse_mixed_bar_lengths(bars)  # a store built before the rule
    calendar, stepped_class = market_calendar(bars), calendar_class(bars)
    refuse_mixed_daily_clocks(bars[bars["asset_class"] == stepped_class])
    if stepped_class == "equity":
        refuse_off_calendar_crypto(bars, calendar)
    full_calendar = calendar
    calendar = split_of(calendar, split, train_fraction, validation_fraction, embargo_bars)
    order = sorted(classes.index.astype(str))
    bars = bars[bars["volume"] > 0]  # a bar that traded nothing (a halt's stale bar) is a hole
    # a symbol with a traded bar after the window is not delisted at the window's end (market_data)
    last_traded = bars.groupby("symbol")["ts"].max().reindex(order)
    listed_after = (last_traded > calendar[-1]).to_numpy(dtype=bool)
    bars = bars.assign(dollar_volume=bars["close"] * bars["volume"])
    # assets stepped off their own calendar (crypto next to equities)
    off_calendar = [s for s in order if classes[s] != stepped_class]
    last_moved = last_bars_between_labels(bars, full_calendar, off_calendar)
    bars = restamped(bars, last_moved)
    before = full_calendar[full_calendar < calendar[0]][-BARS_BEFORE:]
    close_before_raw = (
        bars[bars["ts"].isin(before)]
        .pivot(index="ts", columns="symbol", values="close")
        .reindex(index=before, columns=order)
        .astype("float64")
    )
    # the closes of assets stepped off their own calendar, from the calendar's start (warm-up)
    history = full_calendar[full_calendar <= calendar[-1]]
    history_close = (
        bars[bars["ts"].isin(history) & bars["symbol"].isin(off_calendar)]
        .pivot(index="ts", columns="symbol", values="close")
        .reindex(index=history, columns=off_calendar)
        .astype("float64")
    )
    restepped = STEP_FEATURES if off_calendar else ()
    # their own bar length (one day for daily crypto): the unit an imported forecast's horizon is in
    own_bar = np.array(
        [(bar_length(bars.loc[bars["symbol"] == s, "ts"]) or DAY).to_timedelta64() for s in off_calendar],
        dtype="timedelta64[ns]",
    )
    bars = bars[bars["ts"].isin(calendar)]

    def wide(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        return frame.pivot(index="ts", columns="symbol", values=column).reindex(index=calendar, columns=order)

    close_raw = wide(bars, "close").astype("float64")
    listed = close_raw.notna().to_numpy()
    # a symbol without a bar in the window is never listed there: placeholder prices 1.0 (never traded)
    close = close_raw.ffill().bfill().fillna(1.0).to_numpy()
    open_ = wide(bars, "open").astype("float64").ffill().bfill().fillna(1.0).to_numpy()
    # inside a hole both prices are the last real close (the forward-filled open would be a fake gap)
    open_, close = carry_close_through_holes(open_, close, listed, listed_after)

    numeric = {*feature_columns, "vol_regime_code", *restepped}
    wanted = sorted({*numeric, "spread_bps", "dollar_volume_20", "fc_fallback"})
    feats = read_frame(
        store,
        "features",
        symbols=order,
        start=calendar[0],
        end=calendar[-1],
        columns=["symbol", "ts", *wanted],
    )
    feats = restamped(feats, last_moved)
    feats = feats[feats["ts"].isin(calendar)]
    spread = _costed_spread(wide(feats, "spread_bps").astype("float64"))
    dollar_volume = wide(feats, "dollar_volume_20").astype("float64").fillna(0.0)
    stored = {name: wide(feats, name).astype("float64").to_numpy(copy=True) for name in numeric}
    if off_calendar:
        history_feats = read_frame(
            store,
            "features",
            symbols=off_calendar,
            end=calendar[-1],
            columns=["symbol", "ts", *STEP_FORECAST_INPUTS],
        )
        history_feats = history_feats[history_feats["ts"].isin(history)]
        frames = {
            name: history_feats.pivot(index="ts", columns="symbol", values=name).reindex(
                index=history, columns=off_calendar
            )
            for name in STEP_FORECAST_INPUTS
        }
        inputs = {
            name: frame.astype(object).fillna("").to_numpy(dtype=object)
            if name == "fc_gate_reason"
            else frame.astype("float64").to_numpy()
            for name, frame in frames.items()
        }
        _restep(stored, history_close, inputs, own_bar, calendar, [order.index(s) for s in off_calendar])
    regime = np.nan_to_num(stored["vol_regime_code"], nan=1.0).astype(np.int8)
    stack = np.empty((len(calendar), len(order), len(feature_columns)), dtype=np.float32)
    absent = np.empty(stack.shape, dtype=bool)
    for k, name in enumerate(feature_columns):
        values = stored[name] * _SCALED.get(name, 1.0)
        if not np.isfinite(values).any():  # the user's store or split is too short: an input error
            raise InputError(
                f"feature column {name!r} has no values in the {split!r} split of {root} "
                f"({len(calendar)} bars: shorter than the feature's warm-up window, or the store predates "
                "it, or its source lacks the data): widen the split or leave it out of feature_columns"
            )
        absent[:, :, k] = ~np.isfinite(values)
        stack[:, :, k] = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return MarketData(
        ts=calendar.tz_convert(None).to_numpy().astype("datetime64[us]"),
        symbols=tuple(order),
        asset_class=tuple(str(classes[s]) for s in order),
        open=open_,
        close=close,
        listed=listed,
        spread_bps=spread,
        dollar_volume=dollar_volume.to_numpy(),
        bar_dollar_volume=wide(bars, "dollar_volume").astype("float64").fillna(0.0).to_numpy(),
        features=stack,
        feature_names=tuple(feature_columns),
        regime_code=regime,
        periods_per_year=round(periods_per_year(calendar, stepped_class)),
        days_per_bar=1.0 / _bars_per_day(calendar),
        feature_missing=absent,
        # a row without a baseline flag (no bar, a store that predates it) counts as imported: kept
        forecast_fallback=wide(feats, "fc_fallback").astype("boolean").fillna(False).to_numpy(dtype=bool),
        listed_after=listed_after,
        close_before=close_before_raw.ffill().bfill().fillna(1.0).to_numpy(),
        listed_before=close_before_raw.notna().to_numpy(),
    )


class OffCalendarBarsError(InputError):
    """Crypto bars stamped between the equity calendar's labels: loading would drop them silently."""


def last_bars_between_labels(
    bars: pd.DataFrame, calendar: pd.DatetimeIndex, symbols: list[str]
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """``symbol -> (its last bar's stamp, the first label after it)`` for each of ``symbols`` (assets
    stepped on another class's calendar: crypto next to equities) whose bars stop between two labels
    of ``calendar``: a coin whose last bar is a Saturday. Stepped on the labels alone, its last listed
    bar was the Friday's, and a holding was sold at Friday's close, a price from before the weekend
    that ended it (a reviewer's −90 % last Saturday never reached the account). Its last bar belongs
    on the next label, where the simulator sells what is held at that bar's close."""
    out: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
    last = bars[bars["symbol"].isin(symbols)].groupby("symbol")["ts"].max()
    for symbol, stamp in last.items():
        k = int(calendar.searchsorted(stamp))
        if k < len(calendar) and calendar[k] != stamp:
            out[str(symbol)] = (pd.Timestamp(stamp), pd.Timestamp(calendar[k]))
    return out


def restamped(frame: pd.DataFrame, moved: dict[str, tuple[pd.Timestamp, pd.Timestamp]]) -> pd.DataFrame:
    """``frame`` (``symbol``, ``ts``) with each moved symbol's row at its old stamp on its new one."""
    if not moved:
        return frame
    frame = frame.copy()
    for symbol, (old, new) in moved.items():
        frame.loc[(frame["symbol"] == symbol) & (frame["ts"] == old), "ts"] = new
    return frame


def refuse_off_calendar_crypto(bars: pd.DataFrame, calendar: pd.DatetimeIndex) -> None:
    """Refuse crypto bars that fall between the equity ``calendar``'s labels.

    In a universe with equities, crypto is observed at the equity calendar's labels only (its weekend
    and night bars are not stepped). A crypto bar that is not on a label yet lies less than one bar
    length (``replay.timeutil.bar_length``: the calendar's smallest spacing; for daily labels
    ``replay.timeutil.DAILY_SPACING``, 20 h, since bars stamped at one local midnight are 23 h apart
    across a spring-forward change) from one is stamped on another clock: daily bars opened at
    midnight New York (05:00 UTC) next to equity dates labelled 00:00 UTC. Each would match no label,
    so the symbol would silently never trade. Moving such a bar onto the nearest label is not done: a
    daily bar stamped 05:00 UTC on day ``D`` closes at ``D + 1`` 05:00 UTC, after the equity close of
    ``D``, so a decision at ``D``'s close would see the future.

    ``bars`` has ``symbol``, ``ts`` (UTC) and ``asset_class``. Raises :class:`OffCalendarBarsError`
    naming each such symbol, how many of its bars are off the labels, the time of day they are
    stamped at, the labels' time of day, and the fix."""
    length = bar_length(calendar)
    if length is None:
        return
    labels = calendar.as_unit("ns").asi8
    # a weekend crypto bar at New York midnight lies 23 h before a Monday label after a spring-forward
    step = int(min(length, DAILY_SPACING).value) if length >= DAY else int(length.value)
    crypto = bars[bars["asset_class"] == "crypto"]
    stamps = pd.DatetimeIndex(crypto["ts"]).as_unit("ns")
    x = stamps.asi8
    idx = np.searchsorted(labels, x)
    after = labels[np.minimum(idx, len(labels) - 1)]
    before = labels[np.maximum(idx - 1, 0)]
    on = (idx < len(labels)) & (after == x)
    near = ((idx < len(labels)) & (after - x < step)) | ((idx > 0) & (x - before < step))
    off = ~on & near
    if not off.any():
        return
    label_times = times_of_day(calendar)
    problems = []
    for symbol, group in pd.Series(stamps[off], index=crypto["symbol"].to_numpy()[off]).groupby(level=0):
        mine = (crypto["symbol"] == symbol).to_numpy()
        problems.append(
            f"{symbol!r}: {int((mine & on).sum())} of its {int(mine.sum())} bars are on a label, "
            f"{len(group)} lie between labels, stamped at {times_of_day(group)} UTC"
        )
    if _bars_per_day(calendar) == 1.0 and label_times != "00:00":
        fix = (
            f"The equities' daily bars are stamped at {label_times} UTC (a local midnight, e.g. New York's "
            "as Alpaca stamps them, or a session's close), not at 00:00 UTC of their session date, and "
            "daily crypto "
            "is not stamped there: the two cannot share labels. Ingest the equities with plain session "
            "dates (the csv source labels a date 00:00 UTC) next to crypto at 00:00 UTC, or re-ingest "
            "from Alpaca into a new store fetching the stocks and the crypto together (its daily crypto "
            "is then built from hourly bars and stamped at New York midnight like the stocks')"
        )
    elif _bars_per_day(calendar) == 1.0:
        fix = (
            "Re-stamp the symbol's bars on the equities' clock and ingest it into a new store: a daily "
            "bar at 00:00 UTC of the date it opens (the bar's open in UTC, as the csv source labels a "
            "date), never shifted to an earlier label"
        )
    else:  # intraday labels: the crypto's bars start at other minutes than the equities'
        fix = (
            "Stamp the crypto's and the equities' intraday bars on one clock (each bar at its open, both "
            "on the clock hour as Alpaca stamps them, or both at the half hour) and ingest them into a "
            "new store; no bar is moved onto a label"
        )
    raise OffCalendarBarsError(
        f"crypto bars off the equity calendar's labels (stamped at {label_times} UTC) would be dropped "
        f"and the symbol never traded: {'; '.join(problems)}. {fix}"
    )


def _restep(
    stored: dict[str, np.ndarray],
    history_close: pd.DataFrame,
    inputs: dict[str, np.ndarray],
    own_bar: np.ndarray,
    calendar: pd.DatetimeIndex,
    cols: list[int],
) -> None:
    """Replace, in ``stored`` (store units ``[T, N]`` over ``calendar``), the ``STEP_FEATURES`` of the
    assets at ``cols`` by their values on the stepping calendar (``envs.step_features``): forecasts
    first (``step_forecasts``, the baseline's recomputed, imported ones restated for the step's
    length, ``kelly_lite`` sized from them), then the price features. Computed over ``history_close``
    (those assets' closes at the calendar's labels up to ``calendar[-1]``; NaN: no real bar) and
    ``inputs`` (their stored ``STEP_FORECAST_INPUTS`` at the same labels), so rolling windows and
    EWMAs reach back before the split; ``own_bar``: each asset's own bar length."""
    rows = history_close.index.isin(calendar)
    listed = history_close.notna().to_numpy()
    close = history_close.ffill().bfill().fillna(1.0).to_numpy()
    ts = history_close.index.tz_convert(None).to_numpy()
    symbols = tuple(str(c) for c in history_close.columns)
    cfg = FeatureConfig()
    forecasts = step_forecasts(close, listed, ts, symbols, inputs, own_bar, cfg)
    prices = price_features(close, listed, ts, symbols, cfg)
    values = {**forecasts, **{name: np.where(listed, v, np.nan) for name, v in prices.items()}}
    for name in STEP_FEATURES:
        stored[name][:, cols] = values[name][rows]


def _costed_spread(spread: pd.DataFrame) -> np.ndarray:
    """The spread the simulator charges, bps ``[T, N]``: the store's where it is positive, else (NaN,
    or an estimate of 0 from a flat bar) the median of the asset's positive spreads at bars ``<= t``
    (past-only), else :data:`_MISSING_SPREAD_BPS`."""
    known = spread.where(spread > 0)
    past_median = known.expanding(min_periods=1).median()
    return known.fillna(past_median).fillna(_MISSING_SPREAD_BPS).to_numpy()


def _bars_per_day(calendar: pd.DatetimeIndex) -> float:
    """Median bars per calendar date (1 for daily bars, 7 for an hourly equity session, 24 for hourly
    crypto): the bar length the per-bar carry rates follow."""
    if len(calendar) < 2:
        return 1.0
    return float(pd.Series(1, index=calendar).groupby(calendar.normalize()).size().median())


def load_market_data_from_config(cfg: ReplayDataConfig) -> MarketData:
    """``load_market_data`` for an ``env_config["data"]`` entry of kind ``replay``."""
    return load_market_data(
        cfg.root,
        split=cfg.split,
        symbols=cfg.symbols,
        train_fraction=cfg.train_fraction,
        validation_fraction=cfg.validation_fraction,
        embargo_bars=cfg.embargo_bars,
        feature_columns=(*DEFAULT_FEATURES, *(c for c in cfg.extra_features if c not in DEFAULT_FEATURES)),
    )
