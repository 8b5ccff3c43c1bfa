"""Forecast-diagnostics group: a built-in baseline distributional forecaster, imported forecasts,
calibration measured on the past only, edge versus the loop's threshold, and the loop's gate.

Forecasts are of the next bar's simple return (horizon 1), made at the close of bar t.

* Baseline (source ``baseline``): drift = ``forecast_drift_shrink`` x EWMA of log returns
  (half-life ``forecast_halflife``), scale = EWMA std (``forecast_vol_halflife``); quantiles are the
  drift plus the scale times the empirical quantiles of the past ``forecast_resid_window``
  standardised one-step errors (so fat tails and skew come from the data, not a normal law).
* Imported sources (``forecasts`` table, horizon 1) replace the baseline where they exist: the
  distribution is their equal-weight quantile average (Vincentisation) and ``fc_fallback`` is False;
  elsewhere the baseline fills in and ``fc_fallback`` is True.
* ``fc_calib_resid``: realised coverage of the 90 % interval (q05..q95) over the last
  ``calibration_window`` forecasts already resolved at t, minus 0.90 (negative: too narrow).
* ``fc_edge_bps`` = |fc_mean| in bps; ``fc_edge_threshold_bps`` = max(expected cost + margin, floor)
  per asset class (DESIGN §4).
* Consensus: each source's mean counts as a move only when |mean| >= ``min_move``; consensus holds
  when every source at (symbol, ts) moves, and all in the same direction.
* Gate: open when the symbol has ``min_history`` traded bars, a spread, spread <= its cap (mega caps /
  other equities / crypto), consensus holds and the edge reaches the threshold. ``fc_gate_reason``
  is ``ok`` or the failing checks joined by ``+`` (``history``, ``no_quote``, ``spread``,
  ``consensus``, ``edge``); the numbers behind them are in their own columns. A bar that traded
  nothing (volume 0: ``Panel.traded``) adds no history: its flat print at the last close is no
  market information (a zero return, no range), and a name listed for weeks without a trade would
  otherwise pass the check on its first real bars. The loader's recomputations of the gate
  (``envs.step_features``, ``envs.stress_features``) see traded bars only and count the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.errors import InputError
from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.wide import Panel
from raytrade.replay.loop_rules import over_cap
from raytrade.replay.schema import FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES

_DIST_COLUMNS = ("mean", "std", "skew", *FORECAST_QUANTILE_COLUMNS)


def baseline_forecast(r1: pd.DataFrame, cfg: FeatureConfig) -> dict[str, pd.DataFrame]:
    """The baseline forecaster's distribution of the next simple return, per (ts, symbol)."""
    drift = cfg.forecast_drift_shrink * r1.ewm(halflife=cfg.forecast_halflife, min_periods=5).mean()
    scale = np.sqrt(r1.ewm(halflife=cfg.forecast_vol_halflife, min_periods=5).var())
    z = (r1 - drift.shift(1)) / scale.shift(1)
    z = z.where(np.isfinite(z))
    rolling = z.rolling(cfg.forecast_resid_window, min_periods=20)
    out = {"mean": np.expm1(drift), "std": scale, "skew": rolling.skew()}
    for name, p in zip(FORECAST_QUANTILE_COLUMNS, FORECAST_QUANTILES, strict=True):
        out[name] = np.expm1(drift + scale * rolling.quantile(p))
    return out


def imported_forecasts(forecasts: pd.DataFrame | None, panel: Panel) -> list[dict[str, pd.DataFrame]]:
    """Horizon-1 imported forecasts of the panel's symbols, one wide dict per source."""
    if forecasts is None or forecasts.empty:
        return []
    sub = forecasts[(forecasts["horizon"] == 1) & forecasts["symbol"].isin(panel.symbols)]
    repeated = sub[sub.duplicated(["source", "symbol", "ts"], keep=False)]
    if not repeated.empty:  # stored by an import before the writer refused a forecast stored already
        first = repeated.iloc[0]
        same = repeated[["source", "symbol", "ts"]].eq(first[["source", "symbol", "ts"]]).all(axis=1)
        when = pd.Timestamp(first["ts"]).isoformat()
        raise InputError(
            f"the store's forecasts hold (symbol={first['symbol']}, ts={when}, source={first['source']}, "
            f"horizon=1) {int(same.sum())} times ({len(repeated)} repeated rows in all): an import before "
            "2026-12-05 appended a forecast already stored; move the later forecasts file of that import "
            "out of <store>/forecasts/ (or rebuild the store)"
        )
    sources = []
    for _, rows in sub.groupby("source", sort=True):
        sources.append(
            {
                col: rows.pivot(index="ts", columns="symbol", values=col)
                .astype("float64")
                .reindex(index=panel.index, columns=panel.symbols)
                for col in _DIST_COLUMNS
            }
        )
    return sources


def _consensus(means: list[pd.DataFrame], min_move: float) -> pd.DataFrame:
    signs = [np.sign(m).where(m.abs() >= min_move, 0.0) for m in means]
    first = signs[0]
    ok = first != 0
    for other in signs[1:]:
        ok &= other == first
    return ok


def forecast_group(
    panel: Panel,
    cfg: FeatureConfig,
    r1: pd.DataFrame,
    spread_bps: pd.DataFrame,
    dollar_volume: pd.DataFrame,
    forecasts: pd.DataFrame | None,
) -> dict[str, pd.DataFrame]:
    base = baseline_forecast(r1, cfg)
    sources = imported_forecasts(forecasts, panel)
    if sources:
        n_sources = sum(s["mean"].notna().astype("int64") for s in sources)
        has_import = n_sources > 0
        dist = {}
        for col in _DIST_COLUMNS:
            stacked = np.stack([s[col].to_numpy() for s in sources])
            present = np.isfinite(stacked)
            count = present.sum(axis=0)
            total = np.where(present, stacked, 0.0).sum(axis=0)
            avg = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
            blended = pd.DataFrame(avg, index=panel.index, columns=panel.symbols)
            dist[col] = blended.where(has_import, base[col])
        consensus = _consensus([s["mean"].where(has_import, base["mean"]) for s in sources], cfg.min_move)
        consensus = consensus.where(has_import, _consensus([base["mean"]], cfg.min_move))
        n_sources = n_sources.where(has_import, 1)
        fallback = ~has_import
    else:
        dist = base
        consensus = _consensus([base["mean"]], cfg.min_move)
        n_sources = pd.DataFrame(1, index=panel.index, columns=panel.symbols)
        fallback = pd.DataFrame(True, index=panel.index, columns=panel.symbols)

    realised = np.expm1(r1)
    inside = (realised >= dist["q05"].shift(1)) & (realised <= dist["q95"].shift(1))
    resolved = realised.notna() & dist["q05"].shift(1).notna()
    coverage = inside.astype("float64").where(resolved).rolling(cfg.calibration_window, min_periods=10).mean()

    crypto = panel.asset_class == "crypto"
    cost = cfg.expected_cost_bps_crypto if crypto else cfg.expected_cost_bps_equity
    floor = cfg.edge_floor_bps_crypto if crypto else cfg.edge_floor_bps_equity
    threshold = max(cost + cfg.edge_cost_margin_bps, floor)
    edge_bps = dist["mean"].abs() * 1e4
    if crypto:
        cap = pd.DataFrame(cfg.spread_cap_bps_crypto, index=panel.index, columns=panel.symbols)
    else:
        cap = pd.DataFrame(
            np.where(
                dollar_volume >= cfg.mega_cap_dollar_volume,
                cfg.spread_cap_bps_mega,
                cfg.spread_cap_bps_equity,
            ),
            index=panel.index,
            columns=panel.symbols,
        )
    history = panel.traded.cumsum() >= cfg.min_history
    checks = {
        "history": ~history,
        "no_quote": spread_bps.isna(),
        "spread": over_cap(spread_bps, cap),
        "consensus": ~consensus.astype(bool),
        "edge": ~(edge_bps >= threshold),
    }
    reason = np.full(panel.present.shape, "", dtype=object)
    for name, failed in checks.items():
        hit = failed.to_numpy(dtype=bool)
        reason = np.where(hit, np.where(reason == "", name, reason + "+" + name), reason)
    gate_open = reason == ""
    reason = np.where(gate_open, "ok", reason)
    frame = lambda a: pd.DataFrame(a, index=panel.index, columns=panel.symbols)  # noqa: E731
    return {
        "fc_mean": dist["mean"],
        "fc_std": dist["std"],
        "fc_skew": dist["skew"],
        **{f"fc_{q}": dist[q] for q in FORECAST_QUANTILE_COLUMNS},
        "fc_calib_resid": coverage - 0.90,
        "fc_edge_bps": edge_bps,
        "fc_edge_threshold_bps": frame(np.full(panel.present.shape, threshold)),
        "fc_n_sources": n_sources,
        "fc_consensus_ok": consensus.astype(bool),
        "fc_gate_open": frame(gate_open),
        "fc_gate_reason": frame(reason),
        "fc_fallback": fallback,
    }
