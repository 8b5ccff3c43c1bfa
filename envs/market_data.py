"""Dense arrays of one replay split, aligned on one calendar: what the simulator steps over.

Design decisions
----------------
* Everything is a numpy array indexed ``[t, n]`` (time x asset) or ``[t, n, f]``; the simulator
  never touches pandas in its step loop.
* ``listed[t, n]`` is False before an asset's first bar and after its last one (and on any bar the
  asset has none): such an asset can hold no weight and costs nothing. Prices there are NaN in the
  raw store; here they are filled with the last known price (or the first future price before the
  listing, which is never observed because the asset is masked) only so that arithmetic stays
  finite; ``listed`` is what the simulator trusts.
* ``days_per_bar`` is the bar length in trading days (1 for daily bars, 1/7 for hourly bars of a
  7-bar equity session, 1/1440 for minute crypto bars): per-bar carry rates (financing, borrow) are
  the annual rate / days per year * ``days_per_bar``. It and ``periods_per_year`` come from the
  same calendar (``periods_per_year = days per year / days_per_bar``).
* ``features[t]`` holds values computed from data with timestamp <= ``ts[t]`` (the store's
  contract); a decision at ``t`` fills at ``open[t + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
