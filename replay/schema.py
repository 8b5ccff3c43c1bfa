"""Arrow schemas of the replay store: the one source of truth for every table's columns.

Design decisions
----------------
* Every table has ``symbol`` (string) and ``ts`` (timestamp, microseconds, UTC).
* Tables are hive-partitioned by ``year`` (derived from ``ts``); ``year`` is a path key only,
  never a column stored inside the files, so ``pyarrow.dataset.dataset(ROOT/'features',
  partitioning='hive')`` reads the files with ``year`` added as an int32 column.
* ``SCHEMA_VERSION`` is written into every file's metadata; readers refuse a store written by an
  incompatible major version.
* Feature columns are grouped (``FEATURE_GROUPS``) after the plan's names so summaries and envs can
  select whole groups.
"""

from __future__ import annotations

import math
from typing import Final

import pyarrow as pa

SCHEMA_VERSION: Final[str] = "1.1"
"""1.1: ``experience.observation_spec`` (files of 1.0 read it as null: their transitions cannot be
checked against a learner's observation and are refused for offline training)."""
TABLES: Final[tuple[str, ...]] = ("bars", "features", "experience", "forecasts", "macro")
ASSET_CLASSES: Final[frozenset[str]] = frozenset({"equity", "crypto"})
PARTITION_KEY: Final[str] = "year"

TS_TYPE: Final[pa.DataType] = pa.timestamp("us", tz="UTC")

_KEY_FIELDS = [pa.field("symbol", pa.string(), nullable=False), pa.field("ts", TS_TYPE, nullable=False)]


def _f64(name: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, pa.float64(), nullable=nullable)


BARS_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        *_KEY_FIELDS,
        _f64("open", False),
        _f64("high", False),
        _f64("low", False),
        _f64("close", False),
        _f64("volume", False),
        _f64("vwap"),
        pa.field("trade_count", pa.int64()),
        # Top of book at the bar's close, when the source has quotes (synthetic, alpaca).
        _f64("bid"),
        _f64("ask"),
        _f64("bid_size"),
        _f64("ask_size"),
        pa.field("asset_class", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

MACRO_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        # symbol names the series: "vix", "vix_3m", "curve_slope".
        *_KEY_FIELDS,
        _f64("value", False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

FORECAST_QUANTILES: Final[tuple[float, ...]] = (0.05, 0.25, 0.5, 0.75, 0.95)
FORECAST_QUANTILE_COLUMNS: Final[tuple[str, ...]] = ("q05", "q25", "q50", "q75", "q95")

FORECASTS_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        # One row per (symbol, ts, source, horizon): an external model's forecast of the
        # simple return from ts's close to the close `horizon` bars later.
        *_KEY_FIELDS,
        pa.field("source", pa.string(), nullable=False),
        pa.field("horizon", pa.int32(), nullable=False),
        _f64("mean", False),
        _f64("std", False),
        _f64("skew"),
        *[_f64(c, False) for c in FORECAST_QUANTILE_COLUMNS],
        pa.field("n_samples", pa.int32()),
    ]
)

FEATURE_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "returns": (
        "close",
        "ret_1",
        "ret_5",
        "ret_20",
        "vol_20",
        "vol_60",
        "skew_60",
        "atr_pct_14",
        "dollar_volume_20",
    ),
    "microstructure": (
        "spread_bps",
        "spread_is_quoted",
        "depth_usd",
        "imbalance",
        "book_slope",
        "fill_prob",
    ),
    "regime": (
        "drawdown",
        "drawdown_velocity",
        "var_95_60",
        "vol_regime",
        "vol_regime_code",
        "corr_cluster",
    ),
    "forecast": (
        "fc_mean",
        "fc_std",
        "fc_skew",
        "fc_q05",
        "fc_q25",
        "fc_q50",
        "fc_q75",
        "fc_q95",
        "fc_calib_resid",
        "fc_edge_bps",
        "fc_edge_threshold_bps",
        "fc_n_sources",
        "fc_consensus_ok",
        "fc_gate_open",
        "fc_gate_reason",
        "fc_fallback",
        "fc_min_move_adaptive",
        "fc_recal_q05",
        "fc_recal_q25",
        "fc_recal_q50",
        "fc_recal_q75",
        "fc_recal_q95",
    ),
    "risk": (
        "kelly_lite",
        "leverage_cap",
        "concentration",
        "dd_trigger_state",
        "financing_bps",
    ),
    "macro": ("vix_level", "vix_term", "curve_slope", "sector_momentum"),
}

_FEATURE_TYPES: Final[dict[str, pa.DataType]] = {
    "spread_is_quoted": pa.bool_(),
    "vol_regime": pa.string(),
    "vol_regime_code": pa.int8(),
    "corr_cluster": pa.int32(),
    "fc_n_sources": pa.int8(),
    "fc_consensus_ok": pa.bool_(),
    "fc_gate_open": pa.bool_(),
    "fc_gate_reason": pa.string(),
    "fc_fallback": pa.bool_(),
    "dd_trigger_state": pa.int8(),
}

FEATURE_COLUMNS: Final[tuple[str, ...]] = tuple(c for cols in FEATURE_GROUPS.values() for c in cols)

FEATURES_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        *_KEY_FIELDS,
        pa.field("asset_class", pa.string(), nullable=False),
        *[pa.field(c, _FEATURE_TYPES.get(c, pa.float64()), nullable=c != "close") for c in FEATURE_COLUMNS],
    ]
)

EXPERIENCE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        *_KEY_FIELDS,
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("policy_version", pa.string(), nullable=False),
        # JSON text of what the policy saw (the Serve request's per-symbol snapshot).
        pa.field("state", pa.string()),
        pa.field("side", pa.string(), nullable=False),  # buy | sell | flat
        # null only on the fill of an order the loop adopted from the broker: the decision that
        # placed it (its target, its mid) is not known to this loop (serve.live)
        _f64("target_weight"),
        _f64("quantity"),
        pa.field("gate_mode", pa.string()),  # flat | probe | passive | aggressive
        pa.field("order_id", pa.string()),
        pa.field("submitted", pa.bool_()),
        pa.field("filled", pa.bool_()),
        _f64("fill_price"),
        _f64("filled_qty"),
        pa.field("partial", pa.bool_()),
        _f64("slippage_bps"),
        _f64("latency_signal_to_order_ms"),
        _f64("latency_order_to_fill_ms"),
        _f64("pnl"),
        _f64("reward"),
        pa.field("planner_intent", pa.string()),
        pa.field("planner_scenario", pa.string()),
        # Offline-RL transitions (``replay.experience``): one row per (decision step, asset) of an
        # episode; null on rows that carry no transition (e.g. fills). ``observation`` is the asset's
        # slice of the env observation (its observed feature channels, current weight, listed flag),
        # ``portfolio_state`` the portfolio part shared by the step's rows, ``action`` the asset's
        # component of the env action (Box(-1, 1)), ``reward`` above the step's reward.
        # ``observation_spec`` names the encoding of the observations (observed feature columns,
        # normaliser, portfolio-state layout: ``envs.experience.observation_spec``), so a learner
        # whose env encodes otherwise refuses the rows instead of learning from numbers that mean
        # something else; ``symbol`` in ``asset_index`` order is the universe.
        pa.field("episode_id", pa.string()),
        pa.field("step", pa.int32()),
        pa.field("asset_index", pa.int32()),
        pa.field("observation", pa.list_(pa.float32())),
        pa.field("portfolio_state", pa.list_(pa.float32())),
        _f64("action"),
        pa.field("next_observation", pa.list_(pa.float32())),
        pa.field("next_portfolio_state", pa.list_(pa.float32())),
        pa.field("terminal", pa.bool_()),
        pa.field("truncated", pa.bool_()),
        pa.field("observation_spec", pa.string()),
    ]
)

TRANSITION_COLUMNS: Final[tuple[str, ...]] = (
    "episode_id",
    "step",
    "asset_index",
    "observation",
    "portfolio_state",
    "action",
    "reward",
    "next_observation",
    "next_portfolio_state",
    "terminal",
    "truncated",
)
"""Experience columns a transition is built from (``replay.experience``): a row with an
``episode_id`` (a transition row) must carry every one (the writer refuses one without; NaN counts as
missing), and (``episode_id``, ``step``, ``asset_index``) is stored once."""

MAX_ABS_OBSERVATION: Final = 1e15
"""Largest ``|value|`` of an experience observation or portfolio state the store accepts. Raw
features stay far below it (prices, dollar volumes: under ~1e12; normalised ones are clipped to
+-10), and a value within it, squared (an MSE loss, a variance), is still finite in float32 (1e30
< 3.4e38); a value beyond it is corruption or a unit error, and beyond 3.4e38 it reads back as inf."""
MAX_ABS_REWARD: Final = math.log(10.0)
"""Largest ``|reward|`` of an experience row the store accepts, ln 10 (about 2.303): a stored reward
is one bar's (one live cycle's) net log growth of equity, the env's default reward at scale 1, what
``raytrade simulate-experience`` records and the live loop logs (an offline learner scales it).
Real bars stay well inside: a -40 % day is ln 0.6 = -0.51, the same at the 2x gross cap ln 0.2 =
-1.61, a crypto pair doubling ln 2 = 0.69, and the simulator rewards a ruin 0. Equity x10 or /10 in
one bar is not a bar; a value beyond it is a unit error (a percent, a scaled reward) or corruption,
which an offline learner would fit as the signal (its square, a critic's loss, dominates)."""
MAX_PRICE: Final = 1e9
"""Largest bar price the store accepts (open, high, low, close, vwap, bid, ask): the dearest share
trades under $1e6; a price beyond it is a unit error or corruption (a bar at 1e300 overflowed every
evaluation of the store)."""
MIN_PRICE: Final = 1e-12
"""Smallest positive bar price the store accepts: the cheapest coins quoted in dollars trade above
1e-9; one at 1e-300 is corruption (its returns overflow)."""
MAX_VOLUME: Final = 1e18
"""Largest bar size the store accepts (volume, trade_count, bid and ask size): a coin priced near
1e-9 trades about 1e16 units a day; a volume of 1e307 overflowed the dollar volume to inf."""
MAX_ABS_ACTION: Final = 1.0
"""The env's action space is ``Box(-1, 1)`` in every action mode (``envs.actions``: absolute target
weights, or tilts in units of ``max_tilt``): a logged action outside it is not one the env can take."""

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "bars": BARS_SCHEMA,
    "features": FEATURES_SCHEMA,
    "experience": EXPERIENCE_SCHEMA,
    "forecasts": FORECASTS_SCHEMA,
    "macro": MACRO_SCHEMA,
}

# Columns whose values must be > 0 / >= 0 when present, per table.
POSITIVE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "bars": ("open", "high", "low", "close"),
    "forecasts": (),
    "macro": (),
    "features": ("close",),
    "experience": ("fill_price",),  # a fill at 0 or below is corruption (calibration divides by it)
}
NON_NEGATIVE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "bars": ("volume", "vwap", "trade_count", "bid", "ask", "bid_size", "ask_size"),
    "forecasts": ("std",),
    "macro": (),
    "features": ("vol_20", "vol_60", "spread_bps", "depth_usd", "kelly_lite", "leverage_cap"),
    "experience": ("filled_qty",),
}
# Extra key columns making a row unique beyond (symbol, ts).
UNIQUE_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "bars": ("symbol", "ts"),
    "features": ("symbol", "ts"),
    "macro": ("symbol", "ts"),
    "forecasts": ("symbol", "ts", "source", "horizon"),
    "experience": ("decision_id",),
}


def schema_for(table: str) -> pa.Schema:
    """The Arrow schema of ``table``; raises ``ValueError`` naming the table and the known ones."""
    try:
        return SCHEMAS[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; known tables: {', '.join(TABLES)}") from None
