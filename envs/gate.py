"""The trading loop's gate and kelly sizing inputs for the gated env, from data with timestamp <= t.

The contract (``shared/contracts/README.md``) sizes with ``kelly_lite = min(0.15, max(0, 0.2 *
edge / sigma^2))``, ``edge = |expected move|``, ``sigma`` the realised volatility of the last 7
closes, and lets a symbol trade only where its gates are open (spread cap, edge threshold,
consensus). :func:`contract_gate` states those per bar ``[T, N]`` once, for the env, evaluation
and serving alike:

* ``sigma[t, n]``: the sample standard deviation (ddof 1) of the simple returns of closes
  ``t-6 .. t`` (``kelly_sigma_closes`` = 7), ``envs.evaluation.kelly_lite.trailing_sigma``, the
  function the ``kelly_lite`` baseline uses (with the closes before the window where the data
  carries them, ``MarketData.close_before``); NaN until 7 listed closes exist.
* ``open[t, n]``: listed, sigma known and positive, and the contract's gates pass:
  - data from the replay store carries them as ``fc_gate_open`` (``replay.features.forecast``:
    quote present, spread within its cap, the forecast sources agree, edge over the threshold,
    enough history), and that column is used;
  - other data (the in-process synthetic market, one forecast source) goes through the
    ``kelly_lite`` replica's checks on ``edge_column``: quote present, spread within its cap
    (8 / 25 / 35 bps), a move of at least ``min_move`` (one source agrees with itself), edge over
    ``max(expected cost + 10, 15 / 40)`` bps.
* ``kelly[t, n]``: the formula above from ``|edge_column|`` and ``sigma`` (0 where sigma is
  unknown); the gated env sizes ``passive`` / ``aggressive`` as a fraction of it.

Every value at ``t`` reads closes, spreads and features at bars ``<= t`` only (tested by truncation).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from raytrade.envs.config import GatedEnvConfig
from raytrade.envs.evaluation.kelly_lite import (
    CONSENSUS,
    EDGE,
    NO_QUOTE,
    NO_SIGMA,
    NOT_LISTED,
    SPREAD,
    KellyInputs,
    KellyLiteConfig,
    asset_flags,
    kelly_fraction,
    kelly_lite_decision,
    trailing_sigma,
)
from raytrade.envs.market_data import MarketData

STORE_GATE_COLUMN = "fc_gate_open"
"""The replay store's gate column (``replay.features.forecast``), used when the data carries it."""
GATE_CHANNEL = "contract_gate_open"
"""Name of the gate channel the gated observation appends after the features (serving, attributions)."""
_GATE_CHECKS = NOT_LISTED | NO_QUOTE | SPREAD | CONSENSUS | EDGE | NO_SIGMA


class GateState(NamedTuple):
    """Per bar and symbol ``[T, N]``: is the contract's gate open, its sigma, its kelly fraction."""

    open: np.ndarray  # bool
    sigma: np.ndarray  # float64, NaN where unknown
    kelly: np.ndarray  # float64 in [0, kelly_cap]


def gate_rules(cfg: GatedEnvConfig) -> KellyLiteConfig:
    """The loop's rules the gated env applies: the loop's defaults with the env's kelly constants."""
    return KellyLiteConfig(kelly_scale=cfg.kelly_scale, kelly_cap=cfg.kelly_cap)


def _column(data: MarketData, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values [T, N] float64, present [T, N] bool) of feature ``name``."""
    k = data.feature_names.index(name)
    values = data.features[:, :, k].astype(np.float64)
    present = np.isfinite(values)
    if data.feature_missing is not None:
        present &= ~data.feature_missing[:, :, k]
    return values, present


def gate_columns(cfg: GatedEnvConfig) -> tuple[str, str]:
    """The store columns :func:`contract_gate` reads besides prices: the edge and the store's gate flag
    (without the flag it falls back to the loop's rules replica, another gate), so a gated model is
    evaluated with the gate it trained with."""
    return cfg.edge_column, STORE_GATE_COLUMN


def gate_lookback(cfg: GatedEnvConfig) -> int:
    """Bars of closes :func:`contract_gate`'s sigma looks back (the contract's ``kelly_sigma_closes``)."""
    return gate_rules(cfg).kelly_sigma_closes


def contract_gate(data: MarketData, cfg: GatedEnvConfig) -> GateState:
    """The contract's gate, sigma and kelly per bar of ``data`` (rules in the module docstring).

    Raises ``ValueError`` naming ``edge_column`` when the data lacks it.
    """
    if cfg.edge_column not in data.feature_names:
        raise ValueError(
            f"edge_column {cfg.edge_column!r} is not in the data's features {list(data.feature_names)}"
        )
    rules = gate_rules(cfg)
    edge, edge_present = _column(data, cfg.edge_column)
    sigma = trailing_sigma(
        data.close, data.listed, rules.kelly_sigma_closes, data.close_before, data.listed_before
    )
    if STORE_GATE_COLUMN in data.feature_names:
        flag, present = _column(data, STORE_GATE_COLUMN)
        checks_pass = present & (flag > 0.5)
    else:
        quoted = np.ones(data.listed.shape, dtype=bool)
        if "spread_bps" in data.feature_names:  # the store's null spread is a missing quote
            spread_feature, spread_present = _column(data, "spread_bps")
            # without a missing mask the loader's 0-fill is indistinguishable from a null: <= 0 is one
            quoted = spread_present if data.feature_missing is not None else spread_feature > 0
        inputs = KellyInputs(
            fc_mean=np.where(edge_present, edge, 0.0),
            consensus_ok=edge_present,
            spread_bps=np.where(quoted, data.spread_bps, np.nan),
            dollar_volume=data.dollar_volume,
            sigma=sigma,
            listed=data.listed,
        )
        flags = asset_flags(data.symbols, data.asset_class, rules)
        blocked = kelly_lite_decision(inputs, flags, rules).blocked
        checks_pass = (blocked & _GATE_CHECKS) == 0
    known = np.isfinite(sigma) & (sigma > 0)
    is_open = data.listed & known & edge_present & checks_pass
    move = np.abs(np.where(edge_present, edge, 0.0))
    kelly = np.where(edge_present, kelly_fraction(move, sigma, rules), 0.0)
    return GateState(open=is_open, sigma=sigma, kelly=kelly)
