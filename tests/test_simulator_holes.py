"""A missing bar inside an asset's life (a halt, a data hole) is not a delisting.

Only the bar after an asset's last real bar liquidates it (at that bar's close, no cost). Through a
hole the units are kept, nothing fills, the position is valued at the last real close and takes the
whole gap at the reopen; the loader prices hole bars at that close (open and close alike)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import max_cost_fraction
from raytrade.envs.evaluation.policies import buy_and_hold_policy, equal_weight_policy
from raytrade.envs.market_data import MarketData, carry_close_through_holes, hole_bars, last_listed_bar
from raytrade.envs.rollout import replay_policy
from raytrade.envs.simulator import MarketSimulator

T = 10
HOLE = 5  # bar 5 is missing; asset 0 reopens 40 % lower at bar 6


def _market(
    listed: np.ndarray, px: np.ndarray | None = None, listed_after: np.ndarray | None = None
) -> MarketData:
    if px is None:
        px = np.full((T, 2), 100.0)
        px[HOLE + 1 :, 0] = 60.0
    t, n = px.shape
    open_, close = carry_close_through_holes(px, px, listed, listed_after)
    return MarketData(
        ts=(np.datetime64("2024-01-01") + np.arange(t).astype("timedelta64[D]")).astype("datetime64[us]"),
        symbols=tuple(f"S{i}" for i in range(n)),
        asset_class=("equity",) * n,
        open=open_,
        close=close,
        listed=listed,
        spread_bps=np.full((t, n), 2.0),
        dollar_volume=np.full((t, n), 1e9),
        features=np.full((t, n, 1), 0.01, np.float32),
        feature_names=("vol_20",),
        regime_code=np.zeros((t, n), np.int8),
        listed_after=listed_after,
    )


def _total(data: MarketData, policy: object = buy_and_hold_policy) -> tuple[float, np.ndarray]:
    run = replay_policy(data, policy(data, 0))  # type: ignore[operator]
    assert np.isfinite(run.returns).all() and np.isfinite(run.equity).all()
    return float(np.prod(1.0 + run.returns[0]) - 1.0), run.weights[0, -1]


def _holed(*cols: int, bar: int = HOLE) -> np.ndarray:
    listed = np.ones((T, 2), dtype=bool)
    listed[bar, list(cols)] = False
    return listed


@pytest.mark.parametrize("policy", [buy_and_hold_policy, equal_weight_policy])
def test_a_one_bar_hole_before_a_gap_down_takes_the_gap(policy: object) -> None:
    whole, w_whole = _total(_market(np.ones((T, 2), dtype=bool)), policy)
    holed, w_holed = _total(_market(_holed(0)), policy)
    assert whole == pytest.approx(-0.2, abs=2e-3)  # half the book loses 40 %
    assert holed == pytest.approx(whole, abs=1e-12)
    np.testing.assert_allclose(w_holed, w_whole, rtol=0, atol=1e-12)


def test_a_bar_with_nothing_listed_does_not_liquidate_a_book_that_resumes() -> None:
    whole, w_whole = _total(_market(np.ones((T, 2), dtype=bool)))
    holed, w_holed = _total(_market(_holed(0, 1)))
    assert holed == pytest.approx(whole, abs=1e-12)
    assert (w_holed > 0.3).all()  # still invested, not in cash
    np.testing.assert_allclose(w_holed, w_whole, rtol=0, atol=1e-12)


def test_no_order_fills_on_either_side_of_a_hole_and_nothing_moves_inside_it() -> None:
    data = _market(_holed(0))
    sim = MarketSimulator(data, SimulatorConfig(episode_len=T - 1, initial_equity=10_000.0), seed=0)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    while int(sim.t[0]) < HOLE - 1:
        sim.step(np.array([[0.5, 0.5]]))
    units = sim.units[0, 0]
    assert units > 0
    equity = sim.equity[0]
    into = sim.step(np.array([[0.1, 0.5]]))  # decided at 4, would fill at the hole (5): unfilled
    assert into.traded_notional[0, 0] == 0.0 and sim.units[0, 0] == units
    assert into.target_weights[0, 0] == pytest.approx(units * data.close[HOLE - 1, 0] / equity)
    equity -= into.costs[0].sum()  # asset 1's rebalance
    assert sim.equity[0] == pytest.approx(equity, rel=1e-12)  # no move inside the hole
    assert not sim.observe().mask[0, 0]
    out = sim.step(np.array([[0.1, 0.5]]))  # decided at the hole (masked), fills at 6: unfilled
    assert out.traded_notional[0, 0] == 0.0 and sim.units[0, 0] == units
    loss = units * (data.open[HOLE + 1, 0] - data.close[HOLE - 1, 0])  # the whole reopen gap
    assert sim.equity[0] == pytest.approx(equity + loss - out.costs[0].sum(), rel=1e-12)
    assert sim.equity_identity_error().max() <= 1e-12
    sim.step(np.array([[0.1, 0.5]]))  # decided at 6 (a real bar), fills at 7: trades again
    assert sim.units[0, 0] < units


def test_a_delisting_still_exits_at_the_last_close_even_after_a_hole_and_pays_the_exit() -> None:
    listed = np.ones((T, 2), dtype=bool)
    listed[3, 0] = False  # a hole ...
    listed[6:, 0] = False  # ... and the last real bar is 5
    px = 100.0 + np.arange(T, dtype=float)[:, None] * np.array([1.0, 0.0])
    data = _market(listed, px)
    sim = MarketSimulator(data, SimulatorConfig(episode_len=T - 1, initial_equity=10_000.0), seed=0)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    sim.step(np.array([[0.5, 0.5]]))  # bar 0 -> 1: buy
    for _ in range(4):  # bars 1 .. 4 -> 5: hold through the hole at 3
        sim.step(np.array([[0.5, 0.5]]), fill=np.array([[False, False]]))
    units, cash = sim.units[0, 0], sim.cash[0]
    assert units > 0
    res = sim.step(np.array([[0.5, 0.5]]), fill=np.array([[False, False]]))  # bar 5 -> 6: gone
    assert sim.units[0, 0] == 0.0 and res.target_weights[0, 0] == 0.0
    sale = units * data.close[5, 0]  # unfilled orders or not, the close is forced; S1 keeps its units
    c = sim.cfg.costs
    rate_bps = (
        c.fee_bps_equity
        + c.spread_fraction * 2.0
        + c.tier_base_bps[0]
        + c.impact_coef_bps * np.sqrt(sale / 1e9)
    )
    assert res.costs[0].sum() == pytest.approx(sale * rate_bps * 1e-4, rel=1e-12)
    assert sim.cash[0] == pytest.approx(cash + sale - sale * rate_bps * 1e-4, rel=1e-15)


def test_life_span_and_hole_prices_are_derived_from_listed() -> None:
    listed = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(last_listed_bar(listed), [4, 3, -1])
    expected = np.zeros_like(listed)
    expected[2:4, 0] = True
    expected[2, 1] = True
    np.testing.assert_array_equal(hole_bars(listed), expected)
    px = np.arange(15, dtype=float).reshape(5, 3) + 1.0
    open_, close = carry_close_through_holes(px + 0.5, px, listed)
    assert close[2, 0] == close[3, 0] == px[1, 0] and open_[2, 0] == open_[3, 0] == px[1, 0]
    assert close[2, 1] == open_[2, 1] == px[1, 1]
    np.testing.assert_array_equal(open_[~expected], (px + 0.5)[~expected])  # other bars as given


def test_moving_prices_inside_a_hole_are_refused() -> None:
    data = _market(_holed(0))
    bad = data.open.copy()
    bad[HOLE, 0] = 90.0  # the previous bar's open carried forward: a fake gap
    with pytest.raises(ValueError, match=r"'S0' at bar 5 \(a hole"):
        MarketSimulator(replace(data, open=bad), SimulatorConfig(episode_len=T - 1))


def test_the_loader_prices_a_hole_at_the_last_close(tmp_path: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=2, years=0.5, seed=3, n_crypto=0)
    bars = market.bars
    first = bars[bars["symbol"] == "SYN000"].sort_values("ts")
    gone = first.index[40]
    ingest_frames(tmp_path / "store", bars.drop(index=gone), market.macro, show_progress=False)
    data = load_market_data(tmp_path / "store", "all", symbols=["SYN000", "SYN001"])
    t = int(np.flatnonzero(data.ts == first.loc[gone, "ts"].tz_convert(None).to_datetime64())[0])
    assert not data.listed[t, 0] and data.listed[t - 1, 0] and data.listed[t + 1, 0]
    assert data.open[t, 0] == data.close[t, 0] == data.close[t - 1, 0]
    assert data.open[t + 1, 0] == first.loc[first.index[41], "open"]
    MarketSimulator(data, SimulatorConfig(episode_len=20))  # the simulator accepts the loader's data


# ------------------------------------------------------------------ a halt at the window's end


def test_an_asset_listed_after_the_data_has_no_last_bar_inside_it() -> None:
    listed = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    after = np.array([True, False, True])
    np.testing.assert_array_equal(last_listed_bar(listed, after), [3, 0, 3])
    np.testing.assert_array_equal(hole_bars(listed, after), [[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    open_, close = carry_close_through_holes(
        np.full((3, 3), 7.0), np.array([[1.0] * 3, [2.0] * 3, [3.0] * 3]), listed, after
    )
    assert open_[2, 0] == close[2, 0] == 2.0  # the trailing hole at the last real close
    assert open_[2, 1] == 7.0  # after a real last bar: as given (never observed)


def test_a_halt_that_outlasts_the_window_is_held_not_sold_and_redeployed() -> None:
    """Asset 0 stops trading at bar 5 and the window ends before it reopens; asset 1 doubles
    afterwards. Read as a delisting, the position was sold at the last close and the cash bought
    more of asset 1 (the policy holds its listed names equally, every bar); read as the halt it is,
    it stays held and locked, valued at the last close, and its exposure still counts (here within
    the leverage the simulator allows: the return is the same, the book is not)."""
    listed = np.ones((T, 2), dtype=bool)
    listed[HOLE + 1 :, 0] = False
    px = np.full((T, 2), 100.0)
    px[HOLE + 3 :, 1] = 200.0
    delisted = _market(listed, px)
    halted = _market(listed, px, listed_after=np.array([True, True]))

    def listed_equally(_: MarketData, __: int) -> object:
        return lambda ob: ob.mask / np.maximum(ob.mask.sum(axis=-1, keepdims=True), 1)

    gone, w_gone = _total(delisted, listed_equally)
    held, w_held = _total(halted, listed_equally)
    assert w_gone[0] == 0.0 and w_gone[1] > 0.95  # sold at the last close, all of it in the winner
    assert w_held[0] > 0.2  # still holding the halted name at the end (a quarter, after the doubling)
    assert np.abs(w_held).sum() > np.abs(w_gone).sum() + 0.2  # its exposure still counts
    # valued at the last close, as the exit was, and no cash freed by it; the delisting's forced
    # close paid its exit (on about half the book), which the halt did not
    assert 0.0 < held - gone <= 0.6 * max_cost_fraction(SimulatorConfig().costs)
    sim = MarketSimulator(halted, SimulatorConfig(episode_len=T - 1, initial_equity=10_000.0), seed=0)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    while int(sim.t[0]) < HOLE:  # buy and hold up to its last bar in the window
        sim.step(np.array([[0.5, 0.5]]))
    units = sim.units[0, 0]
    assert units > 0
    while int(sim.t[0]) < T - 1:
        sim.step(np.array([[0.0, 1.0]]))  # asks to sell it: nothing fills while it is halted
        assert sim.units[0, 0] == units


def test_the_loader_and_a_window_slice_know_which_assets_trade_after_them(tmp_path: Path) -> None:
    from raytrade.envs.evaluation.harness import slice_window
    from raytrade.envs.replay_loader import load_market_data
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate
    from raytrade.replay.splits import TimeWindow

    market = generate(n_symbols=3, years=1.0, seed=4, n_crypto=0)
    bars = market.bars
    gone = bars[(bars["symbol"] == "SYN002") & (bars["ts"] > bars["ts"].quantile(0.5))].index
    ingest_frames(tmp_path / "store", bars.drop(index=gone), market.macro, show_progress=False)
    train = load_market_data(tmp_path / "store", "train")
    test = load_market_data(tmp_path / "store", "test")
    everything = load_market_data(tmp_path / "store", "all")
    assert train.listed_after is not None and train.listed_after.tolist() == [True, True, False]
    assert test.listed_after is not None and not test.listed_after.any()
    assert everything.listed_after is not None and not everything.listed_after.any()
    # SYN002 delisted inside the train window: its last bar there is a delisting, the others run on
    assert last_listed_bar(train.listed, train.listed_after).tolist()[:2] == [train.n_steps] * 2
    ts = pd.DatetimeIndex(everything.ts).tz_localize("UTC")
    first_half = slice_window(everything, TimeWindow("h1", ts[0], ts[len(ts) // 3], 0))
    assert first_half.listed_after is not None and first_half.listed_after.tolist() == [True, True, True]
    MarketSimulator(train, SimulatorConfig(episode_len=20))


def test_buy_and_hold_stays_in_cash_once_everything_it_bought_has_delisted() -> None:
    """S0 is bought on the first bar and delists after bar 4; S1 lists at bar 6 and doubles. Before,
    the book left flat by the delisting counted as a refused first buy and bought S1 (a reviewer's
    three-stock store: +98.8 % where the rule, cash after the delistings, gives +38.1 %)."""
    listed = np.zeros((T, 2), dtype=bool)
    listed[:5, 0] = listed[6:, 1] = True
    px = np.full((T, 2), 100.0)
    px[6:, 1] = np.linspace(100.0, 200.0, T - 6)
    total, last = _total(_market(listed, px, listed_after=np.zeros(2, dtype=bool)))
    assert -5e-3 < total <= 0.0  # S0 flat, then cash: only its costs (S1 would have given +50 %)
    np.testing.assert_array_equal(last, [0.0, 0.0])
