"""``kelly_lite``: a replica of the live trading loop's gates and sizing, as an evaluation baseline.

The loop's rules (``shared/contracts/README.md``, DESIGN §4), applied per symbol at every bar ``t``
from data with timestamps ``<= t`` only:

1. tradeable: listed, and a quote exists (a spread that is NaN or ``<= 0`` means "no quote"; the
   loop stores None for such a spread);
2. spread gate: full spread ``<=`` its cap: 8 bps for mega caps (average dollar volume per bar
   ``>= mega_cap_dollar_volume``), 25 bps for other equities, 35 bps for crypto;
3. consensus: the forecast sources agree on the direction (``fc_consensus_ok``) and the blended
   expected move ``|fc_mean|`` reaches ``min_move`` (0.1 %; a smaller move counts as no move). With
   ``consensus_gate="adaptive"`` (an option; the static rule is the loop's and the default) the
   move must reach the store's ``fc_min_move_adaptive`` instead, derived from realised spread costs,
   the recent hit rate and forecast skew (``replay.features.consensus``); an unknown adaptive
   threshold blocks the symbol;
4. edge gate: ``|fc_mean|`` in bps ``>=`` ``max(expected cost + 10, 15 equities / 40 crypto)`` with
   expected cost 6 bps equities / 20 bps crypto (+25 bps for configured illiquid names);
5. sizing: ``kelly = min(0.15, max(0, 0.2 * edge / sigma**2))`` with ``edge = |fc_mean|`` and
   ``sigma`` the sample standard deviation (ddof 1) of the simple returns of the last 7 closes
   (``trailing_sigma``; a window cut from a longer history reads the closes just before its first
   bar, ``MarketData.close_before``); unknown sigma (fewer than 7 listed closes) sizes nothing;
6. direction: long when ``fc_mean > 0``, short when ``< 0`` for equities if shorting is allowed;
   crypto is long-only;
7. probe mode: a designated probe symbol that passes checks 1-2 and has a direction trades a tiny
   fixed ``probe_weight`` instead of its kelly size (edge and consensus are what the probe tests);
8. trade blocked: a listed symbol that fails check 1, 2 or 3 is what the loop marks
   ``trade_blocked`` (the contract's UNIUSD: ``block_reason`` "spread 50.8bps > cap 35.0bps;
   consensus"), and a blocked symbol is not tradeable: its position is held as it is, no order
   (``KellyDecision.held``), as the service holds it. Before 2026-12-05 the replica sold it to 0, and
   bought it back when the gate reopened (on the 30 real stocks, stated 5 bps, test split: -27.91 %,
   now -17.67 %). The edge gate, 4, and an unknown sigma, 5, still size a symbol at 0 (the loop's
   kelly fraction is 0 there); a probe symbol is held only by checks 1-2 (it trades through a
   consensus failure: that is what a probe tests);
9. exposure caps, by proportional scaling: crypto sleeve gross ``<=`` 1x (crypto unlevered), equity
   sleeve ``<=`` 2x (end-of-day leverage cap), then total gross ``<=`` 120 % (the loop's own sizing cap).
   The weight held in an asset not listed at ``t`` or trade blocked (from ``KellyInputs.w_now``: it
   cannot trade) counts against each cap it falls under (``envs.budget``), so the book stays inside
   them.

Sign conventions: weights are signed fractions of equity (``+0.1`` = long 10 % of equity);
``kelly`` is an unsigned fraction. Known simplifications: the loop's "probe after a losing trade"
needs per-trade history and is not replicated (only designated probe symbols probe); in a mixed
universe crypto is observed on the equity calendar (``envs.replay_loader``), so its 7 closes span
more calendar days than the loop's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import ConfigDict, Field

from raytrade.envs.budget import kept_weights, within_budget
from raytrade.replay.loop_rules import LoopRules, over_cap

KELLY_FEATURES: Final[tuple[str, ...]] = ("fc_mean", "fc_consensus_ok", "spread_bps")
"""Store feature columns the replica reads (``spread_bps`` only to tell a missing quote)."""
ADAPTIVE_MIN_MOVE: Final = "fc_min_move_adaptive"
"""Store feature column of the adaptive consensus threshold (``consensus_gate="adaptive"``)."""

# Bit flags of ``KellyDecision.blocked`` (0: nothing blocked the symbol).
NOT_LISTED: Final = 1
NO_QUOTE: Final = 2
SPREAD: Final = 4
CONSENSUS: Final = 8
EDGE: Final = 16
NO_SIGMA: Final = 32
NO_SHORT: Final = 64
TRADE_BLOCKED: Final = NO_QUOTE | SPREAD | CONSENSUS
"""The checks whose failure the loop marks ``trade_blocked`` (no quote, the spread gate, consensus):
such a symbol is held, never traded (rule 8)."""


class KellyLiteConfig(LoopRules):
    """The loop's rules (``LoopRules``, the 120 % gross sizing cap included) plus what only the replica
    needs: illiquid names, probes, shorting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    illiquid_symbols: tuple[str, ...] = Field((), description="names whose expected cost is raised")
    illiquid_extra_cost_bps: float = Field(25.0, ge=0, description="extra expected cost of illiquid names")
    allow_short_equity: bool = Field(True, description="short equities on a negative forecast")
    probe_symbols: tuple[str, ...] = Field((), description="symbols traded at probe size only")
    probe_weight: float = Field(0.002, ge=0, le=1, description="probe size, fraction of equity")
    consensus_gate: Literal["static", "adaptive"] = Field(
        "static",
        description="minimum consensus move: the contract's static min_move (the loop's rule), or the "
        "store's fc_min_move_adaptive (replay.features.consensus)",
    )

    def feature_columns(self) -> tuple[str, ...]:
        """Store feature columns this configuration reads."""
        return (*KELLY_FEATURES, ADAPTIVE_MIN_MOVE) if self.consensus_gate == "adaptive" else KELLY_FEATURES


class AssetFlags(NamedTuple):
    """Static per-asset facts ``[N]`` the rules need."""

    is_crypto: np.ndarray  # bool
    illiquid: np.ndarray  # bool
    probe: np.ndarray  # bool


class KellyInputs(NamedTuple):
    """What the loop knows at bar ``t``; every array ``[..., N]``."""

    fc_mean: np.ndarray  # expected next-bar simple return, signed fraction
    consensus_ok: np.ndarray  # bool: forecast sources agree on the direction
    spread_bps: np.ndarray  # full spread in bps; NaN or <= 0: no quote
    dollar_volume: np.ndarray  # average traded notional per bar (mega-cap test)
    sigma: np.ndarray  # std of the last closes' simple returns; NaN when unknown
    listed: np.ndarray  # bool
    min_move: np.ndarray | None = None  # adaptive consensus threshold (fraction); NaN: unknown
    w_now: np.ndarray | None = (
        None  # current weights: an unlisted asset's is kept, inside the caps (None: flat)
    )


class KellyDecision(NamedTuple):
    """Per-symbol outcome ``[..., N]``."""

    weights: np.ndarray  # signed target weights after the exposure caps
    kelly: np.ndarray  # unsigned kelly fraction of the symbols that passed every gate (else 0)
    blocked: np.ndarray  # int bit flags of the failed checks (NOT_LISTED, NO_QUOTE, ...)
    held: np.ndarray  # bool: listed and trade blocked (TRADE_BLOCKED): its position is kept, no order


def asset_flags(symbols: Sequence[str], asset_class: Sequence[str], cfg: KellyLiteConfig) -> AssetFlags:
    """Per-asset flags from the universe's symbols and asset classes."""
    return AssetFlags(
        is_crypto=np.array([c == "crypto" for c in asset_class], dtype=bool),
        illiquid=np.array([s in cfg.illiquid_symbols for s in symbols], dtype=bool),
        probe=np.array([s in cfg.probe_symbols for s in symbols], dtype=bool),
    )


def edge_threshold_bps(flags: AssetFlags, cfg: KellyLiteConfig) -> np.ndarray:
    """``max(expected cost + margin, floor)`` per asset, bps."""
    cost = np.where(flags.is_crypto, cfg.expected_cost_bps_crypto, cfg.expected_cost_bps_equity)
    cost = cost + np.where(flags.illiquid, cfg.illiquid_extra_cost_bps, 0.0)
    floor = np.where(flags.is_crypto, cfg.edge_floor_bps_crypto, cfg.edge_floor_bps_equity)
    return np.maximum(cost + cfg.edge_cost_margin_bps, floor)


def spread_cap_bps(flags: AssetFlags, dollar_volume: np.ndarray, cfg: KellyLiteConfig) -> np.ndarray:
    """Spread cap per asset ``[..., N]``: crypto, mega-cap equity or other equity (``LoopRules``)."""
    return cfg.spread_cap_for(flags.is_crypto, dollar_volume)


def kelly_fraction(edge: np.ndarray, sigma: np.ndarray, cfg: KellyLiteConfig) -> np.ndarray:
    """``min(cap, max(0, scale * edge / sigma**2))``; 0 where sigma is unknown or not positive."""
    ok = np.isfinite(sigma) & (sigma > 0)
    safe = np.where(ok, sigma, 1.0)
    raw = cfg.kelly_scale * edge / (safe * safe)
    return np.where(ok, np.minimum(cfg.kelly_cap, np.maximum(0.0, raw)), 0.0)


def trailing_sigma(
    close: np.ndarray,
    listed: np.ndarray,
    n_closes: int,
    close_before: np.ndarray | None = None,
    listed_before: np.ndarray | None = None,
) -> np.ndarray:
    """``[T, N]``: std (ddof 1) of the ``n_closes - 1`` simple returns of closes ``t-n+1 .. t``.

    ``close_before`` / ``listed_before`` ``[K, N]`` are the closes and listed flags of the ``K`` bars
    just before bar 0 (``MarketData.close_before``: a window cut from a longer history), read as if
    they preceded it, so the estimate does not restart at the window's start; only bars ``<= t``
    enter the value at ``t``. NaN for ``t < n_closes - 1 - K`` and wherever one of those closes is
    not listed.
    """
    k = 0
    if close_before is not None and listed_before is not None:
        k = close_before.shape[0]
        close = np.vstack([np.asarray(close_before, dtype=np.float64), close])
        listed = np.vstack([np.asarray(listed_before, dtype=bool), listed])
    t_total, n_assets = close.shape
    out = np.full((t_total, n_assets), np.nan)
    if t_total >= n_closes:
        simple = close[1:] / close[:-1] - 1.0  # simple[j] is the return earned at bar j + 1
        windows = sliding_window_view(simple, n_closes - 1, axis=0)  # [T - n + 1, N, n - 1]
        all_listed = sliding_window_view(listed, n_closes, axis=0).all(axis=-1)  # [T - n + 1, N]
        sigma = windows.std(axis=-1, ddof=1)
        out[n_closes - 1 :] = np.where(all_listed, sigma, np.nan)
    return out[k:]


def consensus_min_move(inputs: KellyInputs, cfg: KellyLiteConfig) -> np.ndarray | float:
    """The move a forecast must reach to count: ``cfg.min_move`` (static), or ``inputs.min_move``
    (adaptive; NaN compares false, so an unknown threshold blocks). Adaptive without a threshold is a
    ``ValueError``: silently falling back to the static rule would hide a missing feature."""
    if cfg.consensus_gate == "static":
        return cfg.min_move
    if inputs.min_move is None:
        raise ValueError("consensus_gate='adaptive' needs KellyInputs.min_move (fc_min_move_adaptive)")
    return np.asarray(inputs.min_move, dtype=np.float64)


def kelly_lite_decision(inputs: KellyInputs, flags: AssetFlags, cfg: KellyLiteConfig) -> KellyDecision:
    """The loop's decision for every symbol (rules in the module docstring), vectorised over ``[..., N]``."""
    fc = np.asarray(inputs.fc_mean, dtype=np.float64)
    spread = np.asarray(inputs.spread_bps, dtype=np.float64)
    listed = np.asarray(inputs.listed, dtype=bool)
    move = np.abs(fc)
    direction = np.sign(fc)
    blocked = np.zeros(fc.shape, dtype=np.int64)

    def flag(condition: np.ndarray, bit: int) -> None:
        nonlocal blocked
        blocked = blocked | np.where(condition, bit, 0)

    quoted = np.isfinite(spread) & (spread > 0)
    flag(~listed, NOT_LISTED)
    flag(~quoted, NO_QUOTE)
    flag(quoted & over_cap(spread, spread_cap_bps(flags, np.asarray(inputs.dollar_volume), cfg)), SPREAD)
    min_move = consensus_min_move(inputs, cfg)
    flag(~(np.asarray(inputs.consensus_ok, dtype=bool) & (move >= min_move)), CONSENSUS)
    flag(~(move * 1e4 >= edge_threshold_bps(flags, cfg)), EDGE)
    sigma = np.asarray(inputs.sigma, dtype=np.float64)
    flag(~(np.isfinite(sigma) & (sigma > 0)), NO_SIGMA)
    no_short = (direction < 0) & (flags.is_crypto | (not cfg.allow_short_equity))
    flag(no_short, NO_SHORT)

    kelly = np.where(blocked == 0, kelly_fraction(move, sigma, cfg), 0.0)
    weights = direction * kelly
    probe_ok = (blocked & (NOT_LISTED | NO_QUOTE | SPREAD | NO_SHORT)) == 0
    probe_ok = probe_ok & flags.probe & (move >= min_move)
    weights = np.where(flags.probe, np.where(probe_ok, direction * cfg.probe_weight, 0.0), weights)
    kelly = np.where(flags.probe, 0.0, kelly)

    # a probe trades through a consensus failure (the probe tests it), not through a closed market
    untradeable = np.where(
        np.asarray(flags.probe, dtype=bool), blocked & (NO_QUOTE | SPREAD), blocked & TRADE_BLOCKED
    )
    held = listed & (untradeable != 0)
    weights = np.where(held, 0.0, weights)
    w_now = np.zeros_like(weights) if inputs.w_now is None else np.asarray(inputs.w_now, dtype=np.float64)
    kept = kept_weights(w_now, listed) + np.where(held, w_now, 0.0)
    weights = within_budget(weights, flags.is_crypto, cfg.leverage_cap_crypto, kept)
    weights = within_budget(weights, ~flags.is_crypto, cfg.leverage_cap_equity, kept)
    weights = within_budget(weights, np.ones(fc.shape[-1], dtype=bool), cfg.gross_cap, kept)
    return KellyDecision(weights=weights, kelly=kelly, blocked=blocked, held=held)
