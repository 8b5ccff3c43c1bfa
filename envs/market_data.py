"""Dense arrays of one replay split, aligned on one calendar: what the simulator steps over.

Design decisions
----------------
* Everything is a numpy array indexed ``[t, n]`` (time x asset) or ``[t, n, f]``; the simulator
  never touches pandas in its step loop.
* ``listed[t, n]`` is True only where the asset has a real bar at ``t``; it is the one statement
  of that fact, and the asset's life span is derived from it (:func:`last_listed_bar`). Before an
  asset's first bar and after its last one it can hold no weight and costs nothing. A bar missing
  *inside* its life (a halt, a data hole: :func:`hole_bars`) is not a delisting: nothing trades
  there and a position is held through it (``envs.simulator``). Prices are NaN in the raw store
  where there is no bar; here they are filled only so that arithmetic stays finite: inside a hole
  both ``open`` and ``close`` are the last real close (a held position sees no move until the
  reopen, then the whole gap), before the listing the first future price and after the last bar
  the last known one (never observed: the asset is masked and holds nothing there).
* **A window's end is not a delisting.** Data cut from a longer history (a split of a store, an
  evaluation window) says which assets still have a real bar after its last one
  (``listed_after``): missing bars at the end of such an asset's window are a hole too (a halt that
  outlasts the window), not its last bar, so a position there is held at the last close to the end
  rather than sold at it and redeployed. Without ``listed_after`` (synthetic data) the last real bar
  in the data is the asset's last; a store's whole history (split ``all``) has none after it, except
  crypto bars later than the equity calendar's last label (crypto trades on).
* ``days_per_bar`` is the bar length in trading days (1 for daily bars, 1/7 for hourly bars of a
  7-bar equity session, 1/1440 for minute crypto bars): per-bar carry rates (financing, borrow) are
  the annual rate / days per year * ``days_per_bar``. It and ``periods_per_year`` come from the
  same calendar (``periods_per_year = days per year / days_per_bar``).
* ``features[t]`` holds values computed from data with timestamp <= ``ts[t]`` (the store's
  contract); a decision at ``t`` fills at ``open[t + 1]``.
* Two volumes, for two uses. ``dollar_volume[t]`` is what a decision at ``t`` may know (the store's
  20-bar average): it sets the costs and caps a fill. ``bar_dollar_volume[t]`` is bar ``t``'s own
  traded notional (volume x close): it only caps a fill *at* bar ``t`` and prices that fill's impact
  (the simulator's; no policy observes it), so a thin bar cannot absorb an order its average could,
  nor charge it the impact of the average. A bar that traded nothing is
  no bar at all (the loader leaves it out of ``listed``: a hole).
* **A window's start is not a listing either.** Data cut from a longer history may carry the closes
  and listed flags of up to :data:`BARS_BEFORE` bars just before its first one (``close_before``,
  ``listed_before``): only trailing estimates that must not restart at every window (``kelly_lite``'s
  sigma, ``envs.evaluation.kelly_lite.trailing_sigma``) read them; nothing is stepped or traded there.
  None (hand-built, synthetic, bootstrapped data): no history before ``ts[0]`` is known.
* ``forecast_fallback`` says which stored forecasts the baseline forecaster made (a pure function of
  closes, recomputed under a stress scenario's prices) and which were imported (kept as stored). It is
  no observation: a policy never reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

BARS_BEFORE: Final = 32
"""Bars of history before a window's first one that data cut from a longer history carries
(``MarketData.close_before``): enough for ``kelly_lite``'s sigma (``kelly_sigma_closes - 1`` = 6)."""


@dataclass(frozen=True)
class MarketData:
    """One split's prices, features and listing mask, aligned on ``ts``.

    Shapes: ``T`` bars, ``N`` assets, ``F`` features.
    """

    ts: np.ndarray  # [T] datetime64[us] (UTC)
    symbols: tuple[str, ...]  # [N]
    asset_class: tuple[str, ...]  # [N] "equity" | "crypto"
    open: np.ndarray  # [T, N] float64, finite
    close: np.ndarray  # [T, N] float64, finite
    listed: np.ndarray  # [T, N] bool
    spread_bps: np.ndarray  # [T, N] float64, full quoted/estimated spread in bps, finite
    dollar_volume: np.ndarray  # [T, N] float64, average traded notional per bar, finite, >= 0 (0: no fills)
    features: np.ndarray  # [T, N, F] float32, finite (NaN replaced by 0, see ``feature_missing``)
    feature_names: tuple[str, ...]  # [F]
    regime_code: np.ndarray  # [T, N] int8: 0 calm, 1 choppy, 2 crisis
    periods_per_year: int = 252
    days_per_bar: float = 1.0  # trading days one bar spans: 1 daily, 1/7 hourly equity, 1/24 hourly crypto
    feature_missing: np.ndarray | None = None  # [T, N, F] bool: the store had no value (filled by 0 in
    #                                            ``features``); None: every value is present
    listed_after: np.ndarray | None = None  # [N] bool: the asset has a real bar after ts[-1] (data cut
    #                                         from a longer history); None: none has
    bar_dollar_volume: np.ndarray | None = None  # [T, N] float64, finite, >= 0: bar t's own traded
    #   notional (volume x close), which caps and prices a fill at bar t's open (never observed); None:
    #   unknown, fills are capped and priced by ``dollar_volume`` alone (hand-built and synthetic data)
    close_before: np.ndarray | None = None  # [K, N] float64, finite, K <= BARS_BEFORE: the closes of the
    #   K bars just before ts[0] (filled like ``close`` where not listed); None: no history known
    listed_before: np.ndarray | None = None  # [K, N] bool: ``listed`` of those K bars (a hole: False)
    forecast_fallback: np.ndarray | None = None  # [T, N] bool: the stored forecast columns at (t, n)
    #   are the baseline forecaster's (the store's ``fc_fallback``), a function of closes that a stress
    #   scenario recomputes (``envs.stress_features``); False: imported (or no row). None: unknown
    #   (hand-built data): every stored forecast is kept

    def __post_init__(self) -> None:
        t, n = self.close.shape
        expected = {
            "ts": (t,),
            "open": (t, n),
            "listed": (t, n),
            "spread_bps": (t, n),
            "dollar_volume": (t, n),
            "regime_code": (t, n),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(f"MarketData.{name} has shape {actual}, expected {shape}")
        if len(self.symbols) != n or len(self.asset_class) != n:
            raise ValueError(
                f"MarketData.symbols/asset_class have {len(self.symbols)}/{len(self.asset_class)} "
                f"entries, expected {n}"
            )
        if not (np.isfinite(self.days_per_bar) and self.days_per_bar > 0):
            raise ValueError(f"MarketData.days_per_bar must be finite and > 0, got {self.days_per_bar!r}")
        if self.features.shape[:2] != (t, n) or self.features.shape[2] != len(self.feature_names):
            raise ValueError(
                f"MarketData.features has shape {self.features.shape}, expected "
                f"({t}, {n}, {len(self.feature_names)})"
            )
        if self.bar_dollar_volume is not None and self.bar_dollar_volume.shape != (t, n):
            raise ValueError(
                f"MarketData.bar_dollar_volume has shape {self.bar_dollar_volume.shape}, expected {(t, n)}"
            )
        if self.listed_after is not None and self.listed_after.shape != (n,):
            raise ValueError(f"MarketData.listed_after has shape {self.listed_after.shape}, expected ({n},)")
        if (self.close_before is None) != (self.listed_before is None):
            raise ValueError("MarketData.close_before and listed_before must be given together (or neither)")
        if self.close_before is not None and self.listed_before is not None:
            k = self.close_before.shape[0]
            if self.close_before.ndim != 2 or self.close_before.shape[1] != n or k > BARS_BEFORE:
                raise ValueError(
                    f"MarketData.close_before has shape {self.close_before.shape}, expected (K, {n}) "
                    f"with K <= {BARS_BEFORE}"
                )
            if self.listed_before.shape != (k, n):
                raise ValueError(
                    f"MarketData.listed_before has shape {self.listed_before.shape}, expected {(k, n)}"
                )
            if not np.isfinite(self.close_before).all():
                raise ValueError("MarketData.close_before must be finite (fill the bars that are not listed)")
        if self.forecast_fallback is not None and self.forecast_fallback.shape != (t, n):
            raise ValueError(
                f"MarketData.forecast_fallback has shape {self.forecast_fallback.shape}, expected {(t, n)}"
            )
        if self.feature_missing is not None and self.feature_missing.shape != self.features.shape:
            raise ValueError(
                f"MarketData.feature_missing has shape {self.feature_missing.shape}, expected "
                f"{self.features.shape}"
            )

    @property
    def n_steps(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.close.shape[1])


def last_listed_bar(listed: np.ndarray, listed_after: np.ndarray | None = None) -> np.ndarray:
    """``[N]`` int64: each asset's last bar with a real bar in ``listed [T, N]`` (-1: none); ``T``
    (past the data) for an asset of ``listed_after`` (a real bar after the data's end). A position
    still held at that bar is delisted (``envs.simulator``); a missing bar before it is a hole."""
    lst = np.asarray(listed, dtype=bool)
    last = lst.shape[0] - 1 - lst[::-1].argmax(axis=0)
    last = np.where(lst.any(axis=0), last, -1).astype(np.int64)
    if listed_after is not None:
        last = np.where(np.asarray(listed_after, dtype=bool), lst.shape[0], last)
    return last


def hole_bars(listed: np.ndarray, listed_after: np.ndarray | None = None) -> np.ndarray:
    """``[T, N]`` bool: bars without a real bar strictly inside an asset's life (after its first
    listed bar and before its last one, which for an asset of ``listed_after`` lies past the data)
    in ``listed [T, N]``."""
    lst = np.asarray(listed, dtype=bool)
    seen_before = np.maximum.accumulate(lst, axis=0)
    seen_after = np.maximum.accumulate(lst[::-1], axis=0)[::-1]
    if listed_after is not None:
        seen_after = seen_after | np.asarray(listed_after, dtype=bool)[None, :]
    return seen_before & seen_after & ~lst


def listed_after_slice(data: MarketData, stop: int) -> np.ndarray:
    """``[N]`` bool: the :attr:`MarketData.listed_after` of ``data``'s bars before ``stop``: a real
    bar at ``stop`` or later, or after ``data`` itself."""
    after = np.asarray(np.asarray(data.listed[stop:], dtype=bool).any(axis=0), dtype=bool)
    return after if data.listed_after is None else after | np.asarray(data.listed_after, dtype=bool)


def bars_before_slice(data: MarketData, start: int) -> tuple[np.ndarray, np.ndarray]:
    """``(close_before, listed_before)`` of ``data``'s bars from ``start`` on: the last
    :data:`BARS_BEFORE` closes and listed flags before bar ``start``, ``data``'s own
    ``close_before`` included (a slice of a slice keeps its parent's history)."""
    close = np.asarray(data.close[:start], dtype=np.float64)
    listed = np.asarray(data.listed[:start], dtype=bool)
    if data.close_before is not None and data.listed_before is not None:
        close = np.vstack([data.close_before, close])
        listed = np.vstack([data.listed_before, listed])
    return close[-BARS_BEFORE:].copy(), listed[-BARS_BEFORE:].copy()


def carry_close_through_holes(
    open_: np.ndarray, close: np.ndarray, listed: np.ndarray, listed_after: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(open, close)`` ``[T, N]`` with every hole bar (:func:`hole_bars`) priced at the last real
    close, open and close alike (new arrays; other bars as given): a position held through a halt
    sees no move inside it and the whole gap at the reopen."""
    hole = hole_bars(listed, listed_after)
    rows = np.where(hole, 0, np.arange(hole.shape[0])[:, None])
    source = np.maximum.accumulate(rows, axis=0)  # the last bar that is not a hole
    carried = np.take_along_axis(np.asarray(close, dtype=np.float64), source, axis=0)
    return np.where(hole, carried, open_), carried
