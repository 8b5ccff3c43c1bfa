"""Evaluation closes every book at the window's end, at the simulator's own costs (harness: the rule).

The expected exit is computed independently: the book the simulator holds after the last step
(stepped here by hand) priced by the cost model's pure functions (``envs.costs.cost_rates``,
``costs_at_rates``) on the last bar's spread, dollar volume and fee, its impact on the smaller of the
last bar's 20-bar dollar volume and its own (where the data has bar dollar volumes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import cost_rates, costs_at_rates, exit_costs_at_rates, fee_bps, trade_costs
from raytrade.envs.evaluation.document import EvaluationReport, build_report, report_json
from raytrade.envs.evaluation.harness import (
    EvaluationConfig,
    EvaluationPlan,
    EvaluationResult,
    EvalWindow,
    RunSeries,
    evaluate,
    pool,
    prepare,
    run_window,
)
from raytrade.envs.evaluation.policies import PolicySpec
from raytrade.envs.evaluation.render import render_markdown, report_blocks
from raytrade.envs.market_data import MarketData
from raytrade.envs.rollout import Policy, decision_step, replay_policy
from raytrade.envs.simulator import MarketSimulator, Observation, exit_dollar_volume, fill_dollar_volume

T, N = 12, 2
SIM = SimulatorConfig(episode_len=T - 1)


def _data(last_dollar_volume: float = 5e7, crash_at: int | None = None) -> MarketData:
    """Two equities drifting up (4 % spread steps apart), 5e7 dollar volume a bar; the last bar's
    dollar volume is ``last_dollar_volume`` (same liquidity tier from 1e7 up); ``crash_at``: both
    opens and closes from that bar on at 30 % of the price before (a levered long book is ruined)."""
    ts = np.arange(T).astype("datetime64[D]").astype("datetime64[us]")
    close = 100.0 * (1.0 + 0.01 * np.arange(T))[:, None] * np.array([1.0, 0.5])
    open_ = close * 0.999
    if crash_at is not None:
        close[crash_at:] *= 0.3
        open_[crash_at:] *= 0.3
    volume = np.full((T, N), 5e7)
    volume[-1] = last_dollar_volume
    return MarketData(
        ts=ts,
        symbols=("AAA", "BBB"),
        asset_class=("equity", "equity"),
        open=open_,
        close=close,
        listed=np.ones((T, N), dtype=bool),
        spread_bps=np.tile([10.0, 30.0], (T, 1)),
        dollar_volume=volume,
        features=np.zeros((T, N, 1), dtype=np.float32),
        feature_names=("ret_1",),
        regime_code=np.zeros((T, N), dtype=np.int8),
    )


def levered(obs: Observation) -> np.ndarray:
    """Gross 2x: long AAA 1.2x, short BBB 0.8x, every bar."""
    return np.broadcast_to(np.array([1.2, -0.8]), obs.mask.shape).copy()


def flat(obs: Observation) -> np.ndarray:
    return np.zeros(obs.mask.shape)


def _spec(policy: Policy) -> PolicySpec:
    return PolicySpec(name="p", kind="baseline", make=lambda data, seed: policy)


def _book_at_end(data: MarketData, policy: Policy, sim_cfg: SimulatorConfig = SIM) -> MarketSimulator:
    """The simulator stepped by hand from bar 0 to the last bar with ``policy`` (as replay does)."""
    steps = data.n_steps - 1
    sim = MarketSimulator(data, sim_cfg.model_copy(update={"episode_len": steps}), n_envs=1, seed=0)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    step = decision_step(sim)
    for _ in range(steps):
        step(policy(sim.observe()))
    return sim


def _expected_exit(data: MarketData, policy: Policy, sim_cfg: SimulatorConfig = SIM) -> tuple[float, float]:
    """(exit cost, equity before it): the book at the last bar priced on the last bar's spread, dollar
    volume and fee, its impact on the smaller of that dollar volume and the bar's own."""
    sim = _book_at_end(data, policy, sim_cfg)
    notional = np.abs(sim.units[0] * data.close[-1])
    fees = fee_bps(np.array([c == "crypto" for c in data.asset_class]), sim_cfg.costs)
    known = data.dollar_volume[-1]
    own = known if data.bar_dollar_volume is None else np.minimum(known, data.bar_dollar_volume[-1])
    assert (own > 0).all()  # no zero-capacity bar here (that rule has its own test)
    rates = cost_rates(data.spread_bps[-1], known, fees, sim_cfg.costs, own)
    parts = costs_at_rates(notional, rates)
    return float(sum(p.sum() for p in parts)), float(sim.equity[0])


def test_a_levered_book_pays_exactly_the_cost_of_trading_it_to_zero_at_the_last_bar() -> None:
    data = _data()
    run = run_window(_spec(levered), data, 0, SIM)
    marked = replay_policy(data, levered, SIM)
    cost, equity = _expected_exit(data, levered)
    assert cost > 0
    assert run.exit_cost == pytest.approx(cost, rel=1e-12)
    assert run.exit_bps == pytest.approx(cost / equity * 1e4, rel=1e-12)
    before = marked.equity[0, -2]
    assert run.returns[-1] == pytest.approx((equity - cost) / before - 1.0, rel=1e-12, abs=1e-15)
    np.testing.assert_array_equal(run.returns[:-1], marked.returns[0, :-1])  # only the last bar changes
    assert run.costs[-1, :3].sum() - marked.costs[0, -1, :3].sum() == pytest.approx(cost, rel=1e-12)


def test_a_flat_book_pays_nothing() -> None:
    data = _data()
    run = run_window(_spec(flat), data, 0, SIM)
    assert (run.exit_cost, run.exit_bps) == (0.0, 0.0)
    np.testing.assert_array_equal(run.returns, replay_policy(data, flat, SIM).returns[0])


def test_a_thin_last_bar_pays_more_impact() -> None:
    """Same book, same tier (dollar volume >= 1e7): only the participation of the exit differs."""
    thick, thin = _data(last_dollar_volume=5e7), _data(last_dollar_volume=1.2e7)
    run_thick, run_thin = (run_window(_spec(levered), d, 0, SIM) for d in (thick, thin))
    assert run_thick.exit_cost == pytest.approx(_expected_exit(thick, levered)[0], rel=1e-12)
    assert run_thin.exit_cost == pytest.approx(_expected_exit(thin, levered)[0], rel=1e-12)
    assert run_thin.exit_cost > run_thick.exit_cost


def test_a_last_bar_that_traded_1_percent_of_its_average_prices_the_exits_impact_on_that_bar() -> None:
    """20-bar dollar volume 5e8 on every bar; the last bar itself trades 5e6 (1 %). The exit fills in
    that bar: participation = notional / 5e6, impact 100 bps x sqrt(participation) (the tier stays the
    average's, 8 bps: 1e7 <= 5e8 < 1e9); with the same average and a normal last bar it is about 10x
    smaller (sqrt of 100x the volume)."""
    normal = _data(last_dollar_volume=5e8)
    normal = dataclasses.replace(
        normal, dollar_volume=np.full((T, N), 5e8), bar_dollar_volume=np.full((T, N), 5e8)
    )
    own = normal.bar_dollar_volume.copy()
    own[-1] = 5e6
    thin = dataclasses.replace(normal, bar_dollar_volume=own)
    run_normal, run_thin = (run_window(_spec(levered), d, 0, SIM) for d in (normal, thin))
    sim = _book_at_end(thin, levered)
    notional = np.abs(sim.units[0] * thin.close[-1])
    assert (notional / 5e6 < SIM.costs.max_participation).all()  # under the cap: sqrt(participation)
    rate_bps = 5.0 + 0.5 * np.array([10.0, 30.0]) + 8.0 + 100.0 * np.sqrt(notional / 5e6)
    assert run_thin.exit_cost == pytest.approx(float((notional * rate_bps * 1e-4).sum()), rel=1e-12)
    assert run_thin.exit_bps > run_normal.exit_bps + 10.0


def test_an_exit_reads_its_own_bars_volume_and_a_fill_the_next_bars() -> None:
    """An exit at bar t fills in bar t (min of the known and bar t's own dollar volume); a fill decided
    at t fills in bar t + 1 (min of the known and bar t + 1's)."""
    known = np.array([[10.0], [10.0], [10.0]])
    own = np.array([[10.0], [1.0], [20.0]])
    np.testing.assert_array_equal(exit_dollar_volume(known, own), [[10.0], [1.0], [10.0]])
    np.testing.assert_array_equal(fill_dollar_volume(known, own), [[1.0], [10.0], [10.0]])
    np.testing.assert_array_equal(exit_dollar_volume(known, None), known)


def test_no_capacity_at_the_last_bar_is_priced_at_the_participation_cap() -> None:
    """A zero dollar volume at the last bar is no free exit: impact at ``max_participation``."""
    data = _data(last_dollar_volume=0.0)
    run = run_window(_spec(levered), data, 0, SIM)
    notional = np.abs(_book_at_end(data, levered).units[0] * data.close[-1])
    c = SIM.costs
    rate_bps = c.fee_bps_equity + c.spread_fraction * data.spread_bps[-1] + c.tier_base_bps[2]
    rate_bps = rate_bps + c.impact_coef_bps * np.sqrt(c.max_participation)
    assert run.exit_cost == pytest.approx(float((notional * rate_bps * 1e-4).sum()), rel=1e-12)


@pytest.mark.parametrize("bar_volume", [0.25, 0.5, 1.0, 50.0])
def test_an_exit_on_a_bar_under_a_dollar_of_volume_pays_no_less_than_one_on_no_volume(
    bar_volume: float,
) -> None:
    """The impact's $1 volume floor priced a position above the cap on a bar of $0.25 at less impact
    than on a bar of $0 (35.8 against 51.6 bps, a reviewer's figures): a position at or above the
    cap pays the impact at ``max_participation`` whatever the bar's volume."""
    c = SIM.costs
    fee = np.array([c.fee_bps_equity])

    def exit_bps(volume: float) -> float:
        rates = cost_rates(np.array([10.0]), np.array([5e7]), fee, c, np.array([volume]))
        parts = exit_costs_at_rates(np.array([10_000.0]), rates, c)
        return float(sum(p.sum() for p in parts))  # dollars on $10,000: bps

    at_cap = (
        c.fee_bps_equity + c.spread_fraction * 10.0 + c.tier_base_bps[1] + c.impact_coef_bps * np.sqrt(0.1)
    )
    assert exit_bps(0.0) == pytest.approx(at_cap, rel=1e-12)
    assert exit_bps(bar_volume) == pytest.approx(at_cap, rel=1e-12)  # $10,000 is above every such cap


def long_2x(obs: Observation) -> np.ndarray:
    """Gross 2x long: 1x each asset, every bar."""
    return np.where(obs.mask, 1.0, 0.0)


def test_a_ruined_account_pays_nothing() -> None:
    data = _data(crash_at=6)
    run = run_window(_spec(long_2x), data, 0, SIM)
    assert run.ruined
    assert (run.exit_cost, run.exit_bps) == (0.0, 0.0)
    np.testing.assert_array_equal(run.returns, replay_policy(data, long_2x, SIM).returns[0])


def test_a_symbol_delisted_earlier_was_liquidated_and_pays_no_exit() -> None:
    """BBB's last bar is bar 5: the simulator sold it there (paying that exit); the window-end exit
    prices AAA's position alone."""
    data = _data()
    listed = data.listed.copy()
    listed[6:, 1] = False
    data = dataclasses.replace(data, listed=listed)
    units = _book_at_end(data, long_2x).units[0]
    assert units[1] == 0.0 and units[0] > 0
    fee = np.array([SIM.costs.fee_bps_equity])
    aaa = trade_costs(
        np.abs(units[:1] * data.close[-1, :1]),
        data.spread_bps[-1, :1],
        data.dollar_volume[-1, :1],
        fee,
        SIM.costs,
    )
    run = run_window(_spec(long_2x), data, 0, SIM)
    assert run.exit_cost == pytest.approx(float(sum(p.sum() for p in aaa)), rel=1e-12)


# --------------------------------------------------------------------------- the harness and report


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("exit") / "store"
    market = generate(n_symbols=4, years=1.0, seed=5)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


BASELINES = ["cash", "buy_and_hold", "equal_weight", "inverse_vol", "kelly_lite"]
CFG = EvaluationConfig(scenarios=(), seeds=(0,))


@pytest.fixture(scope="module")
def evaluated(store: Path) -> tuple[EvaluationPlan, EvaluationResult, EvaluationReport]:
    plan = prepare(store, BASELINES, CFG)
    result = evaluate(plan)
    return plan, result, build_report(result)


def test_every_baseline_pays_its_exit_and_the_report_says_how_much(
    evaluated: tuple[EvaluationPlan, EvaluationResult, EvaluationReport],
) -> None:
    plan, result, report = evaluated
    data = plan.split_data
    for name in BASELINES:
        run = result.policies[name].main
        policy = next(s for s in plan.specs if s.name == name).make(data, 0)
        cost, equity = _expected_exit(data, policy, CFG.simulator)
        assert run.exit_cost == pytest.approx(cost, rel=1e-9), name
        entry = report.policies[name]
        assert entry.exit_cost == run.exit_cost
        assert entry.exit_cost_bps == pytest.approx(cost / equity * 1e4, rel=1e-9), name
    assert result.policies["cash"].main.exit_cost == 0.0
    for name in ("buy_and_hold", "equal_weight", "inverse_vol"):  # invested at the end
        assert result.policies[name].main.exit_cost > 0, name


def test_the_leaderboard_shows_the_exit_in_bps(
    evaluated: tuple[EvaluationPlan, EvaluationResult, EvaluationReport],
) -> None:
    _, _, report = evaluated
    md = render_markdown("t", report_blocks(report, []))
    section = md.split("## Leaderboard (net of costs)")[1].split("## ")[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    column = rows[0].index("exit bps")
    cells = {row[0]: row[column] for row in rows[1:]}
    for name in BASELINES:
        assert cells[name] == f"{report.policies[name].exit_cost_bps:.1f}", name
    assert cells["cash"] == "0.0"


def test_a_report_written_before_the_exit_reads_with_no_exit_figure(
    evaluated: tuple[EvaluationPlan, EvaluationResult, EvaluationReport],
) -> None:
    doc = json.loads(report_json(evaluated[2]))
    doc["schema"] = "raytrade.evaluation/3"
    for policy in doc["policies"].values():
        for run in (policy, *policy["folds"]):
            del run["exit_cost"], run["exit_cost_bps"]
    old = EvaluationReport.model_validate_json(json.dumps(doc))
    assert {(p.exit_cost, p.exit_cost_bps) for p in old.policies.values()} == {(None, None)}


def _series(exit_cost: float, exit_bps: float, ruin_bar: int | None = None) -> RunSeries:
    ts = np.arange(3).astype("datetime64[D]")
    return RunSeries(
        ts,
        np.zeros(3),
        np.zeros(3),
        np.zeros((3, 4)),
        np.zeros(3, dtype=np.int8),
        ruined=ruin_bar is not None,
        ruin_bar=ruin_bar,
        exit_cost=exit_cost,
        exit_bps=exit_bps,
    )


def test_pooled_folds_sum_their_exits_up_to_a_ruin() -> None:
    pooled = pool([_series(10.0, 1.0), _series(30.0, 3.0)])
    assert (pooled.exit_cost, pooled.exit_bps) == (40.0, 4.0)
    ruined_first = pool([_series(0.0, 0.0, ruin_bar=1), _series(30.0, 3.0)])
    assert (ruined_first.exit_cost, ruined_first.exit_bps) == (0.0, 0.0)


# --------------------------------------------------------------------------- a symbol whose bars stop


def _stopping(stop_at: int = 5) -> MarketData:
    """``_data`` with BBB's bars stopping at ``stop_at`` (its last real bar): a delisting inside it."""
    data = _data()
    listed = data.listed.copy()
    listed[stop_at + 1 :, 1] = False
    return dataclasses.replace(data, listed=listed)


def _report_on(data: MarketData, policy: Policy) -> tuple[EvaluationResult, EvaluationReport]:
    """Evaluate ``policy`` (as ``p``, benchmark ``equal_weight``: the same policy) on ``data`` as the
    one window of a plan built by hand (no store)."""
    specs = tuple(
        PolicySpec(name=n, kind="baseline", make=lambda d, s: policy) for n in ("p", "equal_weight")
    )
    cfg = EvaluationConfig(scenarios=(), seeds=(0,), simulator=SIM)
    plan = EvaluationPlan("mem", cfg, specs, (EvalWindow("test", data),), data, {}, {}, "0" * 64, 0)
    result = evaluate(plan)
    return result, build_report(result)


def test_a_position_whose_bars_stop_pays_its_forced_close_at_that_bar() -> None:
    """BBB's last bar is 5: the step decided there sells it at close 5 and pays what an exit there
    costs (the cost model's pure functions at bar 5's spread, dollar volume and fee); the report's
    costs of that step are that exit plus nothing else (the policy holds only BBB)."""
    data = _stopping()

    def bbb_only(obs: Observation) -> np.ndarray:
        return np.where(obs.mask, np.array([0.0, 0.9]), 0.0)

    held = _book_at_end(dataclasses.replace(data, ts=data.ts[:6], **_rows(data, 6)), bbb_only)
    sale = abs(held.units[0, 1] * data.close[5, 1])
    fee = np.array([SIM.costs.fee_bps_equity])
    parts = trade_costs(np.array([sale]), data.spread_bps[5, 1:], data.dollar_volume[5, 1:], fee, SIM.costs)
    by_hand = float(sum(p.sum() for p in parts))
    result, report = _report_on(data, bbb_only)
    run = result.policies["p"].main
    assert run.costs[5, :3].sum() == pytest.approx(by_hand, rel=1e-12)
    assert run.turnover[5] == pytest.approx(sale / held.equity[0], rel=1e-12)
    assert run.exit_cost == 0.0  # nothing left to close at the window's end
    assert report.policies["p"].costs.total == pytest.approx(float(run.costs.sum()), rel=1e-12)


def _rows(data: MarketData, stop: int) -> dict[str, np.ndarray]:
    """The ``[T, ...]`` arrays of ``data`` before ``stop``, every symbol trading on past them."""
    names = ("open", "close", "listed", "spread_bps", "dollar_volume", "features", "regime_code")
    return {n: getattr(data, n)[:stop] for n in names} | {"listed_after": np.array([True, True])}


def test_the_report_names_each_symbol_whose_bars_stop_and_a_window_too_short_to_annualise() -> None:
    _, report = _report_on(_stopping(), levered)
    fold = report.policies["p"].folds[0]
    assert [(s.symbol, s.last_date) for s in fold.bars_stop] == [("BBB", "1970-01-06")]
    short, stops = report.warnings
    assert short.startswith("the evaluated returns are 11 bars (1970-01-02..1970-01-12), under a quarter")
    assert "BBB (last bar 1970-01-06, test)" in stops and "closed at that last close" in stops
    md = render_markdown("t", report_blocks(report, []))
    head = md.split("## Leaderboard")[0]
    assert f"**Warning:** {short}." in head and f"**Warning:** {stops}." in head
    from raytrade.cluster.evaluate import report_warnings

    assert report_warnings(report)[-2:] == [short, stops]  # the console prints them too
    again = EvaluationReport.model_validate_json(report_json(report))
    assert again == report and again.report_schema == "raytrade.evaluation/8"


def test_a_long_window_whose_symbols_all_trade_to_its_end_carries_no_warning() -> None:
    t = 80  # over a quarter of a 252-bar year
    data = _data()
    reps = -(-t // T)
    tile = {
        n: np.concatenate([getattr(data, n)] * reps)[:t]
        for n in ("open", "close", "spread_bps", "dollar_volume", "features", "regime_code")
    }
    long = dataclasses.replace(
        data,
        ts=np.arange(t).astype("datetime64[D]").astype("datetime64[us]"),
        listed=np.ones((t, N), bool),
        **tile,
    )
    _, report = _report_on(long, levered)
    assert report.warnings == () and report.policies["p"].folds[0].bars_stop == ()
