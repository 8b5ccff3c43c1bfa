"""One instrument under two names (an old ticker's file kept beside the new ticker's whole history):
ingest names the pair. Stored silently, each got its own share of every book, so together they passed
the per-symbol cap (a reviewer's copy of KGC as KGCN: `buy_and_hold` +72.1 % against +49.6 %)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raytrade.replay.odd_moves import twin_symbols
from tests.test_ingest_bad_prints import DAYS, ingest, walk, warnings, write_csv


def test_a_copy_of_a_symbol_under_another_name_is_named(tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "src", walk("KGC"))
    write_csv(folder, walk("KGCN").iloc[: len(DAYS) // 2])  # the old ticker: the first half, the same closes
    write_csv(folder, walk("AEM", seed=4))
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    (line,) = [w for w in warnings(out) if "closed at the same price" in w]
    assert (
        f"KGC and KGCN closed at the same price on {len(DAYS) // 2:,} of the {len(DAYS) // 2:,} bars" in line
    )
    assert "AEM" not in line


def test_names_that_close_alike_now_and_then_are_not_twins(tmp_path: Path) -> None:
    kgc, other = walk("KGC"), walk("AEM", seed=4)
    other.loc[:30, ["open", "close", "high", "low"]] = kgc.loc[
        :30, ["open", "close", "high", "low"]
    ].to_numpy()
    folder = write_csv(tmp_path / "src", kgc)
    write_csv(folder, other)  # 31 of 251 bars alike: 12 %
    code, out = ingest(folder, tmp_path / "store")
    assert code == 0, out
    assert not [w for w in warnings(out) if "closed at the same price" in w]


def test_names_pinned_at_a_few_prices_are_not_twins() -> None:
    """Two stablecoins at 1.0000 (a tick either way), or shells at 0.0001, close alike every bar
    without being one instrument; nor are names that many others share a price with (a SPAC
    universe pinned near $10), whose pairs also made the check quadratic."""
    days = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC")
    rng = np.random.default_rng(0)
    rows = [
        pd.DataFrame({"symbol": name, "ts": days, "close": 1.0 + 0.0001 * rng.integers(-1, 2, len(days))})
        for name in ("USDCUSDT", "FDUSDUSDT")
    ]
    pinned = 10.0 + 0.01 * rng.integers(0, 16, len(days))  # 16 prices, shared by 12 names every bar
    rows += [pd.DataFrame({"symbol": f"SPAC{i}", "ts": days, "close": pinned}) for i in range(12)]
    both = pd.concat(rows, ignore_index=True)
    assert twin_symbols(both, both) == ()


def test_twins_at_varied_prices_are_still_named() -> None:
    days = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC")
    close = 20.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.02, len(days))))
    both = pd.concat([pd.DataFrame({"symbol": s, "ts": days, "close": close}) for s in ("OLD", "NEW")])
    (twin,) = twin_symbols(both, both)
    assert {twin.symbol, twin.twin} == {"OLD", "NEW"} and (twin.same, twin.shared) == (200, 200)


def test_a_duplicate_in_a_crowded_universe_is_still_named() -> None:
    """20 SPACs at 10.00 on most days; S00W is S00 on every bar. The crowd's bars were left out of the
    matches but not of the bars shared, so the pair matched on a third of them and was not named."""
    days = pd.bdate_range("2024-01-02", periods=120, tz="UTC")
    rng = np.random.default_rng(1)
    spacs = {
        f"S{i:02d}": np.where(
            rng.random(len(days)) < 0.7, 10.0, np.round(10 + rng.integers(1, 40, len(days)) / 100, 2)
        )
        for i in range(20)
    }
    spacs["S00W"] = spacs["S00"].copy()
    bars = pd.concat(
        [pd.DataFrame({"symbol": s, "ts": days, "close": c}) for s, c in spacs.items()], ignore_index=True
    )
    (twin,) = twin_symbols(bars, bars[bars["ts"] == days[-1]])
    assert {twin.symbol, twin.twin} == {"S00", "S00W"} and twin.same == twin.shared
