"""kelly_lite replica: hand-worked gate decisions, the sizing formula to 1e-12, caps, probe, sigma."""

from __future__ import annotations

import numpy as np
import pytest

from raytrade.envs.evaluation.kelly_lite import (
    CONSENSUS,
    EDGE,
    NO_QUOTE,
    NO_SHORT,
    NO_SIGMA,
    SPREAD,
    AssetFlags,
    KellyInputs,
    KellyLiteConfig,
    asset_flags,
    kelly_lite_decision,
    trailing_sigma,
)
from raytrade.envs.evaluation.policies import baseline_spec
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import replay_policy

CFG = KellyLiteConfig()


def _flags(n: int, crypto: tuple[int, ...] = (), probe: tuple[int, ...] = ()) -> AssetFlags:
    return AssetFlags(
        is_crypto=np.isin(np.arange(n), crypto),
        illiquid=np.zeros(n, dtype=bool),
        probe=np.isin(np.arange(n), probe),
    )


def _inputs(
    fc: list[float],
    spread: list[float],
    dv: list[float] | None = None,
    ok: list[bool] | None = None,
    sigma: list[float] | None = None,
) -> KellyInputs:
    n = len(fc)
    return KellyInputs(
        fc_mean=np.array(fc),
        consensus_ok=np.array(ok if ok is not None else [True] * n),
        spread_bps=np.array(spread),
        dollar_volume=np.array(dv if dv is not None else [1e8] * n),
        sigma=np.array(sigma if sigma is not None else [0.02] * n),
        listed=np.ones(n, dtype=bool),
    )


def expected_kelly(m: float, sigma: float) -> float:
    return min(0.15, max(0.0, 0.2 * abs(m) / sigma**2))


def test_spread_gate_per_asset_class() -> None:
    # other equity 24 ok / 26 blocked; mega cap (dv >= 1e9) 7.9 ok / 8.5 blocked; crypto 34 ok / 36 blocked
    fc = [0.003] * 6
    d = kelly_lite_decision(
        _inputs(fc, [24, 26, 7.9, 8.5, 34, 36], dv=[1e8, 1e8, 2e9, 2e9, 1e8, 1e8]),
        _flags(6, crypto=(4, 5)),
        CFG,
    )
    assert [bool(b & SPREAD) for b in d.blocked] == [False, True, False, True, False, True]
    assert (d.weights[[1, 3, 5]] == 0).all() and (d.weights[[0, 2]] > 0).all()
    # crypto's edge threshold is 40 bps: 30 bps of edge is blocked on the edge, not the spread
    assert d.blocked[4] == EDGE


def test_no_quote_blocks() -> None:
    d = kelly_lite_decision(_inputs([0.003, 0.003], [np.nan, 0.0]), _flags(2), CFG)
    assert all(b & NO_QUOTE for b in d.blocked) and (d.weights == 0).all()


def test_edge_threshold_max_of_cost_plus_margin_and_floor() -> None:
    # equities: max(6 + 10, 15) = 16 bps; crypto: max(20 + 10, 40) = 40 bps
    d = kelly_lite_decision(
        _inputs([0.00159, 0.00161, 0.00399, 0.00401], [5] * 4), _flags(4, crypto=(2, 3)), CFG
    )
    assert d.blocked.tolist() == [EDGE, 0, EDGE, 0]
    illiquid = KellyLiteConfig(illiquid_symbols=("B",))
    flags = asset_flags(["A", "B"], ["equity", "equity"], illiquid)
    d = kelly_lite_decision(_inputs([0.003, 0.003], [5, 5]), flags, illiquid)  # B: max(6+25+10, 15) = 41
    assert d.blocked.tolist() == [0, EDGE]


def test_disagreeing_forecasts_and_min_move_block() -> None:
    d = kelly_lite_decision(_inputs([0.004, 0.004], [5, 5], ok=[False, True]), _flags(2), CFG)
    assert d.blocked.tolist() == [CONSENSUS, 0] and d.weights[0] == 0
    small = KellyLiteConfig(edge_floor_bps_equity=0.0, expected_cost_bps_equity=0.0, edge_cost_margin_bps=0.0)
    d = kelly_lite_decision(_inputs([0.0009, 0.0011], [5, 5]), _flags(2), small)  # min move 0.1 %
    assert d.blocked.tolist() == [CONSENSUS, 0]


def test_sizing_equals_formula() -> None:
    fc, sigma = [0.0017, -0.0035, 0.0500, 0.0019], [0.05, 0.08, 0.01, 0.06]
    d = kelly_lite_decision(_inputs(fc, [5] * 4, sigma=sigma), _flags(4), CFG)
    expected = [np.sign(m) * expected_kelly(m, s) for m, s in zip(fc, sigma, strict=True)]
    assert d.blocked.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(d.weights, expected, rtol=0, atol=1e-12)
    assert d.weights[2] == 0.15  # capped
    assert 0 < d.weights[0] < 0.15 and 0 < d.weights[3] < 0.15  # uncapped: the formula itself
    assert d.weights[1] < 0  # equities may be short


def test_crypto_long_only_and_unknown_sigma() -> None:
    d = kelly_lite_decision(
        _inputs([-0.005, 0.005], [5, 5], sigma=[0.02, np.nan]), _flags(2, crypto=(0,)), CFG
    )
    assert d.blocked.tolist() == [NO_SHORT, NO_SIGMA] and (d.weights == 0).all()


def test_gross_cap_scales_proportionally() -> None:
    d = kelly_lite_decision(_inputs([0.01] * 10, [5] * 10), _flags(10), CFG)
    np.testing.assert_allclose(d.weights, np.full(10, 0.12), rtol=0, atol=1e-15)
    np.testing.assert_allclose(d.kelly, np.full(10, 0.15))


def test_probe_symbol_trades_probe_size_even_when_edge_fails() -> None:
    cfg = KellyLiteConfig(probe_weight=0.002)
    d = kelly_lite_decision(_inputs([-0.0012, 0.004, 0.004], [5, 5, 90]), _flags(3, probe=(0, 1, 2)), cfg)
    assert d.weights.tolist() == [-0.002, 0.002, 0.0]  # the third fails the spread gate


def test_trailing_sigma_by_hand() -> None:
    close = np.array([[100.0], [101], [99], [102], [103], [101], [104], [105]])
    listed = np.ones_like(close, dtype=bool)
    sig = trailing_sigma(close, listed, 7)
    assert np.isnan(sig[:6]).all()
    r = close[1:7, 0] / close[:6, 0] - 1
    assert sig[6, 0] == pytest.approx(np.std(r, ddof=1), abs=1e-15)
    listed[2, 0] = False
    assert np.isnan(trailing_sigma(close, listed, 7)[6:8, 0]).all()


def test_trailing_sigma_never_reads_a_flat_halt_as_returns_of_zero() -> None:
    """A halt stored as flat bars at the stale close (Yahoo's zero-volume days) is no real bar
    (``listed`` False): sigma is unknown while any of its last 7 closes is one, and from the 7th real
    close after the reopen it is the std of real returns only, not shrunk by the halt's zeros (as
    ``vol_20`` was before 2026-12-05)."""
    rng = np.random.default_rng(3)
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.03, (40, 1)), axis=0)
    listed = np.ones_like(close, dtype=bool)
    close[10:25] = close[9]  # 15 halted days at the last close
    listed[10:25] = False
    sig = trailing_sigma(close, listed, 7)
    assert np.isnan(sig[10:31, 0]).all()  # a halted close among the last 7, or the reopen's gap
    r = close[25:32, 0][1:] / close[25:32, 0][:-1] - 1.0
    assert sig[31, 0] == pytest.approx(np.std(r, ddof=1), rel=1e-12)
    assert sig[31, 0] > 0.01  # the 3 % name's sigma, not the halt's zeros


def _crafted() -> MarketData:
    t, n = 12, 3
    rng = np.random.default_rng(0)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.08, (t, n)), axis=0)
    fc = np.tile(np.array([0.004, -0.003, 0.0025]), (t, 1))
    fc[9, 2] = 0.001  # edge 10 bps < 16: blocked at bar 9
    ok = np.ones((t, n))
    ok[8, 0] = 0.0  # disagreeing forecasts at bar 8
    spread = np.full((t, n), 5.0)
    spread[10, 1] = 30.0  # wide spread at bar 10
    features = np.stack([fc, ok, spread * 1e-4], axis=-1).astype(np.float32)
    return MarketData(
        ts=np.datetime64("2024-01-01", "us") + np.arange(t) * np.timedelta64(1, "D"),
        symbols=("A", "B", "C"),
        asset_class=("equity",) * 3,
        open=close.copy(),
        close=close,
        listed=np.ones((t, n), dtype=bool),
        spread_bps=spread,
        dollar_volume=np.full((t, n), 1e8),
        features=features,
        feature_names=("fc_mean", "fc_consensus_ok", "spread_bps"),
        regime_code=np.zeros((t, n), dtype=np.int8),
    )


def test_policy_reproduces_hand_worked_decisions_in_the_simulator() -> None:
    data = _crafted()
    rollout = replay_policy(data, baseline_spec("kelly_lite").make(data, 0))
    sent = rollout.weights[0]  # [T-1, N] projected targets (the projection is the identity here)
    assert (sent[:6] == 0).all()  # fewer than 7 closes: no sigma yet
    fc = data.features[..., 0].astype(np.float64)
    for k in range(6, data.n_steps - 1):
        r = data.close[k - 5 : k + 1] / data.close[k - 6 : k] - 1
        sigma = r.std(axis=0, ddof=1)
        want = np.array([np.sign(fc[k, j]) * expected_kelly(fc[k, j], sigma[j]) for j in range(3)])
        if k == 9:
            want[2] = 0.0  # the edge gate sizes it at 0: sold
        held = {8: 0, 10: 1}.get(k)  # trade blocked (consensus at 8, the spread at 10): held, no order
        if held is not None:
            # the position as it is: last step's target, filled at this bar's open = its close, less
            # the costs the book paid since (a hair)
            assert sent[k, held] == pytest.approx(sent[k - 1, held], rel=2e-3)
            want[held] = sent[k, held]
        np.testing.assert_allclose(sent[k], want, rtol=0, atol=1e-12)
    assert (sent[8:11] == 0).sum() == 1
    assert ((np.abs(sent[6:]) > 0) & (np.abs(sent[6:]) < 0.15)).sum() >= 4  # uncapped sizes too


def test_a_trade_blocked_symbol_is_held_where_it_is_and_counts_against_the_caps() -> None:
    """A review against the contract (2026-12-05): the replica sold a symbol whose gate closed (a
    spread over its cap, no quote, consensus lost) and bought it back when the gate reopened; the loop
    marks such a symbol trade_blocked, and a blocked symbol is not tradeable: it is held. The edge gate
    still sizes at 0 (the loop's kelly fraction there)."""
    inputs = _inputs([0.004, 0.004, 0.004, 0.001], [30.0, np.nan, 5.0, 5.0], ok=[True, True, False, True])
    w_now = np.array([0.5, 0.4, 0.3, 0.1])
    decided = kelly_lite_decision(inputs._replace(w_now=w_now), _flags(4), CFG)
    np.testing.assert_array_equal(decided.held, [True, True, True, False])  # spread, no quote, consensus
    assert decided.blocked[3] & EDGE and not decided.held[3] and decided.weights[3] == 0.0  # sold
    np.testing.assert_array_equal(decided.weights[:3], 0.0)  # held: the caller keeps w_now, no order
    # 1.2 gross already held by the three: nothing is left for a fourth that passes every gate
    free = kelly_lite_decision(
        _inputs([0.004] * 4, [30.0, np.nan, 5.0, 5.0], ok=[True, True, False, True])._replace(w_now=w_now),
        _flags(4),
        CFG,
    )
    assert free.weights[3] == 0.0


def test_a_probe_trades_through_a_consensus_failure_but_not_through_a_closed_market() -> None:
    w_now = np.array([0.002, 0.002, 0.002])
    inputs = _inputs([0.004, 0.004, 0.004], [30.0, 5.0, np.nan], ok=[True, False, True])._replace(w_now=w_now)
    decided = kelly_lite_decision(inputs, _flags(3, probe=(0, 1, 2)), CFG)
    assert decided.held.tolist() == [True, False, True]  # spread over its cap, no quote: held
    assert decided.weights[1] == CFG.probe_weight  # consensus lost: the probe still trades
