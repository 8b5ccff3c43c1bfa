"""How far daily high/low spread estimators are from the truth: the store's Corwin-Schultz against two others.

``python -m benchmarks.spread_estimators [--json out.json] [--quick] [--data ../shared/data]``

A store without quotes (daily CSV bars) gets its ``spread_bps`` from the Corwin-Schultz (2012)
high/low estimator (``replay.features.microstructure``, a 20-bar mean of two-bar estimates, negatives
set to 0). This benchmark measures what that figure is worth, next to two later estimators written
here from their papers (reference estimators, not the product's):

* Abdi-Ranaldo (2017): ``s^2 = 4 E[(c_t - eta_t)(c_t - eta_{t+1})]`` with ``eta`` the mid-range
  ``(ln h + ln l) / 2``;
* EDGE, Ardia-Guidotti-Kroencke (2024): the efficient combination of two moment conditions on
  open, high, low and close.

Both are means over a window (21 bars here, a month), their negative squares reported as shares.

1. **Simulated bars with a known spread.** A day is 390 one-minute trades on a random-walk efficient
   price (daily volatility ``vol``), each printed at the bid or the ask (half the spread either side,
   side drawn at random); a day's bars are the open, high, low and close of its trades. For each
   (spread, vol) the table gives each estimator's median over windows and its ratio to the truth.
2. **Real daily bars** (``--data``: a folder of the ``yahoo/`` CSVs, skipped when absent): each
   estimator's median per symbol, the median over symbols and the share of negative window estimates.
   No truth is known there; the simulated rows say how to read them.

Headline: ``cs_over_truth_liquid``, the store estimator's median over the true spread at 5 bps and
3 % daily volatility (a liquid but volatile name: the shared data's). Target <= 2x (the estimate
within a factor of two of the spread it stands for).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import print_table, quick_and_json_args, write_report
from raytrade.replay.features.microstructure import corwin_schultz_bps

MINUTES = 390
WINDOW = 21
STORE_WINDOW = 20  # FeatureConfig.spread_estimator_window's default
SPREADS_BPS = (5.0, 25.0, 100.0)
VOLS = (0.01, 0.03)
LIQUID = (5.0, 0.03)


def simulated_bars(spread_bps: float, vol: float, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Daily OHLC of ``days`` x 390 trades at the bid or ask around a random-walk efficient price."""
    steps = rng.normal(0.0, vol / np.sqrt(MINUTES), size=(days, MINUTES))
    efficient = np.cumsum(steps.ravel()).reshape(days, MINUTES)
    side = rng.choice((-1.0, 1.0), size=(days, MINUTES))
    trades = np.exp(efficient + side * spread_bps / 2e4)
    return pd.DataFrame(
        {"open": trades[:, 0], "high": trades.max(axis=1), "low": trades.min(axis=1), "close": trades[:, -1]}
    )


def store_estimate_bps(bars: pd.DataFrame) -> np.ndarray:
    """The store's estimate on every bar: 20-bar mean of two-bar Corwin-Schultz estimates (>= 0)."""
    pairs = corwin_schultz_bps(bars[["high"]], bars[["low"]].set_axis(["high"], axis=1))["high"]
    return pairs.rolling(STORE_WINDOW, min_periods=STORE_WINDOW).mean().dropna().to_numpy()


def corwin_schultz_signed_bps(bars: pd.DataFrame) -> np.ndarray:
    """The 20-bar mean of the two-bar Corwin-Schultz estimates *before* any is set to 0 (the paper's
    other variant): negative where the window's ranges read less than no spread."""
    h, low = np.log(bars["high"].to_numpy(dtype=float)), np.log(bars["low"].to_numpy(dtype=float))
    hl = (h - low) ** 2
    beta = hl[1:] + hl[:-1]
    gamma = (np.maximum(h[1:], h[:-1]) - np.minimum(low[1:], low[:-1])) ** 2
    denom = 3.0 - 2.0 * np.sqrt(2.0)
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / denom - np.sqrt(gamma / denom)
    pairs = pd.Series(2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha)) * 1e4)
    return pairs.rolling(STORE_WINDOW, min_periods=STORE_WINDOW).mean().dropna().to_numpy()


def abdi_ranaldo_sq(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray) -> float:
    """Squared spread (signed) of one window by Abdi-Ranaldo (2017)."""
    eta = (np.log(h) + np.log(low)) / 2.0
    lc = np.log(c)
    return float(4.0 * np.mean((lc[:-1] - eta[:-1]) * (lc[:-1] - eta[1:])))


def edge_sq(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray) -> float:
    """Squared spread (signed) of one window by EDGE (Ardia, Guidotti and Kroencke 2024); NaN when the
    window has fewer than two bars that moved or no open / close away from the range's ends."""
    lo, lh, ll, lc = (np.log(x) for x in (o, h, low, c))
    mid = (lh + ll) / 2.0
    o1, h1, l1, c1, m1 = lo[1:], lh[1:], ll[1:], lc[:-1], mid[:-1]
    m, hp, lp = mid[1:], lh[:-1], ll[:-1]
    r1, r2, r3, r4, r5 = m - o1, o1 - m1, m - c1, c1 - m1, o1 - c1
    moved = ((h1 != l1) | (l1 != c1)).astype(float)
    p_t = moved.mean()
    p_o = (moved * (o1 != h1)).mean() + (moved * (o1 != l1)).mean()
    p_c = (moved * (c1 != hp)).mean() + (moved * (c1 != lp)).mean()
    if moved.sum() < 2 or p_o == 0 or p_c == 0:
        return float("nan")
    d1, d3, d5 = (r - r.mean() / p_t * moved for r in (r1, r3, r5))
    x1 = -4.0 / p_o * d1 * r2 - 4.0 / p_c * d3 * r4
    x2 = -4.0 / p_o * d1 * r5 - 4.0 / p_c * d5 * r4
    e1, e2 = x1.mean(), x2.mean()
    v1, v2 = x1.var(), x2.var()
    return float((v2 * e1 + v1 * e2) / (v1 + v2) if v1 + v2 > 0 else (e1 + e2) / 2.0)


def window_estimates(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """Signed spread estimates in bps (sign of the square kept) over every ``WINDOW``-bar window."""
    cols = [bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close")]
    out: dict[str, list[float]] = {"abdi_ranaldo": [], "edge": []}
    for end in range(WINDOW, len(bars) + 1):
        window = [x[end - WINDOW : end] for x in cols]
        for name, fn in (("abdi_ranaldo", abdi_ranaldo_sq), ("edge", edge_sq)):
            sq = fn(*window)
            out[name].append(np.sign(sq) * np.sqrt(abs(sq)) * 1e4)
    return {k: np.asarray(v) for k, v in out.items()}


def summary(bars: pd.DataFrame) -> dict[str, float]:
    """Per estimator: the median (a negative square counted as 0, as the store counts a negative
    estimate), the 10th and 90th percentiles of the signed estimates (how wide the noise is) and the
    share of windows whose square came out negative."""
    store = store_estimate_bps(bars)
    row = {
        "corwin_schultz_store": float(np.median(store)),
        "corwin_schultz_store_p10": float(np.percentile(store, 10)),
        "corwin_schultz_store_p90": float(np.percentile(store, 90)),
    }
    signed = {"corwin_schultz_signed": corwin_schultz_signed_bps(bars), **window_estimates(bars)}
    for name, values in signed.items():
        values = values[np.isfinite(values)]
        row[name] = float(np.median(np.maximum(values, 0.0)))
        row[f"{name}_p10"], row[f"{name}_p90"] = (float(q) for q in np.percentile(values, [10, 90]))
        row[f"{name}_negative_share"] = float(np.mean(values < 0))
    return row


def simulated(days: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for vol in VOLS:
        for spread in SPREADS_BPS:
            rows.append({"spread_bps": spread, "vol": vol, **summary(simulated_bars(spread, vol, days, rng))})
    return rows


def real(folder: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("*.csv"))[:limit]:
        bars = pd.read_csv(path).rename(columns=str.lower)
        bars = bars[(bars["volume"] > 0) & (bars["low"] > 0)].reset_index(drop=True)
        if len(bars) > WINDOW + STORE_WINDOW:
            rows.append({"symbol": path.stem, **summary(bars)})
    return rows


_SHORT = {"CS signed": "corwin_schultz_signed", "AR": "abdi_ranaldo", "EDGE": "edge"}


def _table(title: str, rows: Sequence[dict[str, Any]], label: str) -> None:
    shown = []
    for r in rows:
        name = str(r[label]) if label == "symbol" else f"{r['spread_bps']:g} bps, vol {r['vol']:.0%}"
        cells = [
            f"{r[k]:.0f} [{r[k + '_p10']:.0f}, {r[k + '_p90']:.0f}]"
            for k in ("corwin_schultz_store", "corwin_schultz_signed", "abdi_ranaldo", "edge")
        ]
        shown.append(
            (
                name,
                " / ".join(cells),
                "negative: " + ", ".join(f"{a} {r[k + '_negative_share']:.0%}" for a, k in _SHORT.items()),
            )
        )
    print_table(title + " (bps, median [p10, p90]: store CS / CS signed / Abdi-Ranaldo / EDGE)", shown)


def main(argv: list[str] | None = None) -> None:
    def data_arg(parser: Any) -> None:
        parser.add_argument(
            "--data", type=Path, default=Path("../shared/data"), help="folder holding yahoo/*.csv"
        )

    args = quick_and_json_args(__doc__, argv, data_arg)
    days = 200 if args.quick else 2000
    sim = simulated(days, seed=0)
    _table(f"simulated daily bars, {days} days each", sim, "spread_bps")
    liquid = next(r for r in sim if (r["spread_bps"], r["vol"]) == LIQUID)
    results: dict[str, Any] = {
        "cs_over_truth_liquid": liquid["corwin_schultz_store"] / LIQUID[0],
        "edge_over_truth_liquid": liquid["edge"] / LIQUID[0],
        "abdi_ranaldo_over_truth_liquid": liquid["abdi_ranaldo"] / LIQUID[0],
        "cs_signed_over_truth_liquid": liquid["corwin_schultz_signed"] / LIQUID[0],
        "simulated": sim,
        "days": days,
    }
    folder = args.data / "yahoo"
    if folder.is_dir():
        rows = real(folder, 3 if args.quick else None)
        _table(f"real daily bars ({folder})", rows, "symbol")
        frame = pd.DataFrame(rows).drop(columns="symbol")
        results["real"] = rows
        results["real_median_over_symbols"] = frame.median().to_dict()
    else:
        print(f"\nreal daily bars: skipped, {folder} is absent")
    print_table(
        "headline: estimate / truth at 5 bps and 3 % daily volatility",
        [
            ("corwin_schultz_store", results["cs_over_truth_liquid"], "<= 2"),
            ("corwin_schultz_signed", results["cs_signed_over_truth_liquid"], "reference"),
            ("abdi_ranaldo", results["abdi_ranaldo_over_truth_liquid"], "reference"),
            ("edge", results["edge_over_truth_liquid"], "reference"),
        ],
    )
    write_report(args.json, "spread_estimators", results)


if __name__ == "__main__":
    main()
