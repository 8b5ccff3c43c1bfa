"""Build the features table from bars (+ macro series and imported forecasts).

``build_features`` is a pure function: long bars in, long feature rows out, one row per bar, in the
``FEATURES_SCHEMA`` column order, sorted by (symbol, ts). Each asset class is computed on its own
calendar; every value at (symbol, ts) depends only on rows with timestamp <= ts (tests truncate the
input and compare). Besides the groups' own modules: ``fc_min_move_adaptive``
(``features.consensus``), and ``fc_recal_q*`` (``features.recalibration``, only with
``FeatureConfig.recalibration``; null otherwise, because its torch fits cost seconds per build).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytrade.replay.features.config import FeatureConfig
from raytrade.replay.features.consensus import ConsensusGateConfig, adaptive_min_move
from raytrade.replay.features.forecast import forecast_group
from raytrade.replay.features.macro import macro_group, macro_series, vol_proxies
from raytrade.replay.features.microstructure import microstructure_group
from raytrade.replay.features.recalibration import RECAL_COLUMNS, SOURCE_COLUMNS, recalibrate_quantiles
from raytrade.replay.features.regime import regime_group
from raytrade.replay.features.returns import returns_group
from raytrade.replay.features.risk import risk_group
from raytrade.replay.features.wide import Panel, periods_per_year, to_long, to_panel
from raytrade.replay.schema import FEATURES_SCHEMA


def forecast_features(
    panel: Panel,
    cfg: FeatureConfig,
    r1: pd.DataFrame,
    spread_bps: pd.DataFrame,
    dollar_volume: pd.DataFrame,
    forecasts: pd.DataFrame | None,
) -> dict[str, pd.DataFrame]:
    """The forecast group (``features.forecast``) plus ``fc_min_move_adaptive`` derived from it
    (``features.consensus``): every forecast column ingest writes except ``fc_recal_q*``. ``r1``: log
    returns of the panel's closes; ``spread_bps``: the store's spreads (NaN: no quote);
    ``dollar_volume``: the 20-bar average traded notional (the mega-cap spread cap)."""
    fc = forecast_group(panel, cfg, r1, spread_bps, dollar_volume, forecasts)
    fc["fc_min_move_adaptive"] = adaptive_min_move(
        fc["fc_mean"], fc["fc_skew"], np.expm1(r1), spread_bps, ConsensusGateConfig(floor=cfg.min_move)
    )
    return fc


def _panel_features(
    panel: Panel,
    cfg: FeatureConfig,
    macro: dict[str, pd.Series],
    proxies: dict[str, pd.Series],
    forecasts: pd.DataFrame | None,
) -> pd.DataFrame:
    ret = returns_group(panel, cfg)
    micro = microstructure_group(panel, cfg)
    regime = regime_group(panel, cfg, ret["vol_20"])
    fc = forecast_features(panel, cfg, ret["ret_1"], micro["spread_bps"], ret["dollar_volume_20"], forecasts)
    if cfg.recalibration is not None:
        recal = recalibrate_quantiles(
            {c: fc[c] for c in SOURCE_COLUMNS},
            regime["vol_regime_code"],
            np.expm1(ret["ret_1"]),
            cfg.recalibration,
        )
    else:
        recal = {c: pd.DataFrame(np.nan, index=panel.index, columns=panel.symbols) for c in RECAL_COLUMNS}
    fc.update(recal)
    risk = risk_group(panel, cfg, fc["fc_mean"], fc["fc_gate_open"], regime["drawdown"])
    mac = macro_group(panel.index, panel.symbols, macro, proxies)
    long = to_long({**ret, **micro, **regime, **fc, **risk, **mac}, panel.present)
    long.insert(2, "asset_class", panel.asset_class)
    return long


def build_features(
    bars: pd.DataFrame,
    macro: pd.DataFrame | None = None,
    forecasts: pd.DataFrame | None = None,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Every feature group for every bar of ``bars`` (long, validated bars: unique (symbol, ts))."""
    cfg = config or FeatureConfig()
    series = macro_series(macro)
    frames = []
    proxies: dict[str, pd.Series] = {}
    classes = [c for c in ("equity", "crypto") if (bars["asset_class"] == c).any()]
    for asset_class in classes:
        panel = to_panel(bars, asset_class)
        if asset_class == classes[0]:  # the equities' volatility, or a crypto-only store's own
            ret = returns_group(panel, cfg)
            proxies = vol_proxies(ret["vol_20"], ret["vol_60"], periods_per_year(panel.index, asset_class))
        frames.append(_panel_features(panel, cfg, series, proxies, forecasts))
    if not frames:
        return FEATURES_SCHEMA.empty_table().to_pandas()
    out = pd.concat(frames, ignore_index=True)
    cluster = out["corr_cluster"]
    keyed = out.assign(_cluster=cluster.fillna(-1), _cls=out["asset_class"])
    momentum = keyed.groupby(["_cls", "ts", "_cluster"], sort=False)["ret_20"].transform("mean")
    out["sector_momentum"] = momentum.where(cluster.notna())
    out = out.sort_values(["symbol", "ts"], kind="stable", ignore_index=True)
    return _cast(out)


def _cast(out: pd.DataFrame) -> pd.DataFrame:
    for field in FEATURES_SCHEMA:
        name = field.name
        if name in ("symbol", "ts", "asset_class"):
            continue
        col = out[name]
        if str(field.type) == "bool":
            out[name] = col.astype("boolean")
        elif str(field.type) in ("int8", "int32"):
            out[name] = col.astype("float64").round().astype("Int8" if str(field.type) == "int8" else "Int32")
        elif str(field.type) == "string":
            out[name] = col.astype(object).where(col.notna(), None)
        else:
            out[name] = col.astype("float64").replace([np.inf, -np.inf], np.nan)
    return out[FEATURES_SCHEMA.names]
