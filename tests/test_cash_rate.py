"""Idle cash earns a rate (``envs.cash_rate``): the simulator's credit against hand computations, the
rate file's refusals, and the evaluation's Sharpe and Sortino measured over that rate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from raytrade.envs.cash_rate import CashRate, RateStep, cash_return_per_bar, load_cash_rate, stale_rate
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.market_data import MarketData
from raytrade.envs.metrics import hit_rate, sharpe_ratio, sortino_ratio, summarize
from raytrade.envs.simulator import MarketSimulator

T = 8
PPY = 252


def _flat_market(shortable_crypto: bool = False) -> MarketData:
    """Two equities at constant prices (no P&L), deep volume: every equity change is costs or interest."""
    close = np.column_stack([np.full(T, 50.0), np.full(T, 100.0)])
    return MarketData(
        ts=(np.datetime64("2024-01-01") + np.arange(T)).astype("datetime64[us]"),
        symbols=("A", "B"),
        asset_class=("equity", "equity"),
        open=close.copy(),
        close=close,
        listed=np.ones((T, 2), dtype=bool),
        spread_bps=np.full((T, 2), 2.0),
        dollar_volume=np.full((T, 2), 1e12),
        features=np.zeros((T, 2, 1), dtype=np.float32),
        feature_names=("x",),
        regime_code=np.zeros((T, 2), dtype=np.int8),
        periods_per_year=PPY,
    )


def _sim(rate: CashRate, **sim: object) -> MarketSimulator:
    cfg = SimulatorConfig.model_validate({"episode_len": T - 2, "initial_equity": 10_000.0, **sim})
    cfg = cfg.model_copy(update={"cash_rate": rate})
    s = MarketSimulator(_flat_market(), cfg, n_envs=1, seed=0)
    s.reset(starts=np.zeros(1, dtype=np.int64))
    return s


def test_a_book_in_cash_compounds_the_rate_bar_by_bar() -> None:
    sim = _sim(CashRate(annual=0.0504))
    for k in range(1, 6):
        res = sim.step(np.zeros((1, 2)))
        assert res.costs.sum() == 0.0
        assert sim.equity[0] == pytest.approx(10_000.0 * (1 + 0.0504 / PPY) ** k, rel=1e-13)
    assert sim.equity_identity_error()[0] < 1e-12  # the interest is cash


def test_only_the_equity_not_held_long_earns() -> None:
    sim = _sim(CashRate(annual=0.1))
    res = sim.step(np.array([[0.5, 0.0]]))
    paid = res.costs.sum()
    long = sim.units[0, 0] * 50.0
    idle = 10_000.0 - paid - long  # flat prices: the close's equity is the start's less the costs
    assert long == pytest.approx(5_000.0, rel=1e-12)
    assert sim.equity[0] == pytest.approx(10_000.0 - paid + idle * 0.1 / PPY, rel=1e-14)
    assert sim.equity_identity_error()[0] < 1e-12


def test_a_levered_book_earns_nothing_and_pays_financing() -> None:
    sim = _sim(CashRate(annual=0.1), constraints={"per_asset_cap": 1.5, "gross_cap": 1.5, "long_only": True})
    res = sim.step(np.array([[1.5, 0.0]]))
    fee, spread, slip, financing = res.costs[0]
    assert financing > 0.0
    assert sim.equity[0] == pytest.approx(10_000.0 - (fee + spread + slip + financing), rel=1e-14)


def test_short_sale_proceeds_earn_nothing() -> None:
    sim = _sim(CashRate(annual=0.1), constraints={"long_only": False})
    res = sim.step(np.array([[-0.5, 0.0]]))
    fee, spread, slip, borrow = res.costs[0]
    equity_close = 10_000.0 - (fee + spread + slip)  # flat prices
    assert sim.cash[0] > 14_000.0  # the proceeds are in cash ...
    interest = equity_close * 0.1 / PPY  # ... but only the equity (no long exposure) earns
    assert sim.equity[0] == pytest.approx(equity_close - borrow + interest, rel=1e-14)


def test_each_bar_earns_the_rate_of_its_own_date() -> None:
    rate = CashRate(
        schedule=(RateStep(start="2023-12-01", annual=0.02), RateStep(start="2024-01-04", annual=0.3))
    )
    data = _flat_market()
    per_bar = cash_return_per_bar(data.ts, rate, PPY)
    assert per_bar.tolist() == pytest.approx([0.02 / PPY] * 3 + [0.3 / PPY] * 5, rel=1e-15)
    sim = _sim(rate)
    for _ in range(5):
        sim.step(np.zeros((1, 2)))
    # step k is earned over bar k + 1: bars 1, 2 at 2 %, bars 3, 4, 5 at 30 %
    want = 10_000.0 * (1 + 0.02 / PPY) ** 2 * (1 + 0.3 / PPY) ** 3
    assert sim.equity[0] == pytest.approx(want, rel=1e-13)


def test_a_schedule_must_cover_the_first_bar_cash_earns_over() -> None:
    """Bar 0 ends no step: a schedule from bar 1's date (the first return's) is enough, a later one
    is refused naming that bar."""
    from_bar_1 = CashRate(schedule=(RateStep(start="2024-01-02", annual=0.02),))
    sim = _sim(from_bar_1)
    sim.step(np.zeros((1, 2)))
    assert sim.equity[0] == pytest.approx(10_000.0 * (1 + 0.02 / PPY), rel=1e-14)
    rate = CashRate(schedule=(RateStep(start="2024-01-03", annual=0.02),))
    with pytest.raises(
        ValueError, match="starts 2024-01-03, after 2024-01-02, the first bar cash earns over"
    ):
        _sim(rate)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"annual": 0.02, "schedule": [{"start": "2024-01-01", "annual": 0.01}]}, "not both"),
        (
            {"schedule": [{"start": "2024-02-01", "annual": 0.01}, {"start": "2024-01-01", "annual": 0.02}]},
            "2024-01-01 follows 2024-02-01",
        ),
        ({"annual": 0.6}, "less than or equal to 0.5"),
        ({"annual": -0.01}, "greater than or equal to 0"),
        ({"annual": float("nan")}, "annual"),
    ],
)
def test_a_bad_cash_rate_is_refused_naming_it(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        CashRate.model_validate(fields)


def test_a_rate_file_in_percent_with_holidays_reads_as_its_changes(tmp_path: Path) -> None:
    path = tmp_path / "dtb3.csv"
    text = (
        "DATE,annual_rate_pct\n2023-01-03,4.3\n2023-01-04,.\n2023-01-05,4.3\n2023-01-06,4.5\n2023-01-09,.\n\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # with the byte-order mark Excel writes
    rate = load_cash_rate(path)
    assert [(str(s.start), s.annual) for s in rate.schedule] == [("2023-01-03", 0.043), ("2023-01-06", 0.045)]
    assert rate.source == "dtb3.csv" and str(rate.through) == "2023-01-09"  # its last row
    assert "2 rates from dtb3.csv (4.30%-4.50%/year, from 2023-01-03 through 2023-01-09)" in rate.describe()
    fractions = tmp_path / "f.csv"
    fractions.write_text("date,annual_rate\n2023-01-03,0.043\n")
    assert load_cash_rate(fractions).schedule == (RateStep(start="2023-01-03", annual=0.043),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        ("date,rate\n2024-01-01,0.01\n", "header"),
        ("date,annual_rate\n01/02/2024,0.01\n", "line 2: date '01/02/2024' is not YYYY-MM-DD"),
        ("date,annual_rate\n2024-01-02,0.01\n2024-01-01,0.02\n", "line 3: date 2024-01-01 does not follow"),
        ("date,annual_rate\n2024-01-02,0.01\n2024-01-02,0.01\n", "line 3: date 2024-01-02 does not follow"),
        ("date,annual_rate\n2024-01-02,.\n2024-01-02,0.01\n", "line 3: date 2024-01-02 does not follow"),
        ("date,annual_rate\n2024-01-02,abc\n", "line 2: annual_rate 'abc' is not a number"),
        ("date,annual_rate\n2024-01-02,-0.01\n", "line 2: annual_rate '-0.01' is outside 0..0.5"),
        ("date,annual_rate\n2024-01-02,5.25\n", "line 2: annual_rate '5.25' is outside 0..0.5"),
        ("date,annual_rate_pct\n2024-01-02,75\n", "line 2: annual_rate_pct '75' is outside 0..50"),
        ("date,annual_rate\n2024-01-02,nan\n", "line 2: annual_rate 'nan' is outside"),
        ("date,annual_rate\n2024-01-02,0.01,x\n", "line 2: 3 fields"),
        ("date,annual_rate\n2024-01-02,.\n", "no rate in the file"),
        ("date,annual_rate\n2024-01-02,0_05\n", "line 2: annual_rate '0_05' is not a number"),
    ],
)
def test_a_bad_rate_file_is_refused_naming_the_line_and_value(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_cash_rate(path)
    assert str(path) in str(info.value)


def test_a_rate_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "taux.csv"
    path.write_bytes("date,annual_rate\n2024-01-02,0.01 # \u00e9t\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"taux.csv: not UTF-8 text \(byte 35\)"):
        load_cash_rate(path)


def test_bars_past_the_rate_files_last_row_are_warned_about() -> None:
    rate = CashRate(
        schedule=(RateStep(start="2020-01-01", annual=0.01),), source="r.csv", through="2020-02-01"
    )
    assert stale_rate(rate, np.datetime64("2020-02-08")) is None  # within a week: a holiday, a late row
    line = stale_rate(rate, np.datetime64("2024-06-03T00:00:00.000000"))
    assert line is not None
    assert (
        "(r.csv) ends 2020-02-01, and its last rate (1.00%/year) is carried to the last bar, 2024-06-03"
        in line
    )
    assert stale_rate(CashRate(annual=0.04), np.datetime64("2030-01-01")) is None  # a constant never ends
    with pytest.raises(ValidationError, match="through"):
        CashRate(schedule=(RateStep(start="2020-01-01", annual=0.01),), through="2019-12-31")


def test_two_rates_agree_when_they_credit_the_same_rate_on_every_day_of_the_window() -> None:
    """``select`` and the evaluation's warning compare rates on the days that matter: a constant and
    a one-row schedule of it agree, a file with rows added after the window agrees with the file
    before them, the same rates from another file agree; a change inside the window, or a schedule
    that starts inside it, does not."""
    from datetime import date

    from raytrade.envs.cash_rate import rate_on, rates_agree

    start, end = date(2024, 1, 2), date(2024, 12, 31)
    four = CashRate(annual=0.04)
    filed = CashRate(
        schedule=(RateStep(start="2000-01-03", annual=0.04),), source="a.csv", through="2024-12-31"
    )
    kept_current = CashRate(
        schedule=(RateStep(start="2000-01-03", annual=0.04), RateStep(start="2025-02-01", annual=0.035)),
        source="b.csv",
    )
    assert rates_agree(four, filed, start, end) and rates_agree(filed, kept_current, start, end)
    assert not rates_agree(filed, kept_current, start, date(2025, 3, 1))  # the new row inside the window
    moved = CashRate(
        schedule=(RateStep(start="2000-01-03", annual=0.04), RateStep(start="2024-06-03", annual=0.05))
    )
    assert not rates_agree(four, moved, start, end) and rates_agree(four, moved, start, date(2024, 6, 2))
    late = CashRate(schedule=(RateStep(start="2024-03-01", annual=0.04),))
    assert rate_on(late, start) is None and not rates_agree(four, late, start, end)
    assert rates_agree(CashRate(), CashRate(), start, end) and not rates_agree(CashRate(), four, start, end)
    in_percent = CashRate(schedule=(RateStep(start="2000-01-03", annual=0.07 * 0.01),))  # a file's "0.07"
    assert in_percent.schedule[0].annual != 0.0007 and rates_agree(
        CashRate(annual=0.0007), in_percent, start, end
    )


def test_a_search_trains_and_scores_with_the_rate_it_is_given(synthetic_store: Path, tmp_path: Path) -> None:
    from raytrade.cluster.select import market_of
    from raytrade.cluster.tune import TuneOptions, check_cash_rate, check_offline_env
    from raytrade.envs.config import env_config_from_dict
    from raytrade.replay.errors import InputError
    from raytrade.tune_specs import get_spec

    spec = get_spec("ppo")
    opts = TuneOptions(spec="ppo", replay=synthetic_store, smoke=True, cash_rate=0.04)
    env_config = opts.env_config(spec, opts.budget(spec))
    sim = env_config_from_dict(env_config).sim  # the env, the objective's replays and select's alike
    assert sim.cash_rate == CashRate(annual=0.04)
    assert "--cash-rate 0.04" in opts.command()  # a resumed or submitted search keeps it
    assert market_of(sim) == market_of(sim.model_copy(update={"cash_rate": CashRate()}))  # by day instead
    rates = tmp_path / "rates.csv"
    rates.write_text("date,annual_rate_pct\n2000-01-03,5\n")
    from_file = TuneOptions(spec="ppo", replay=synthetic_store, smoke=True, cash_rates=rates)
    scheduled = env_config_from_dict(from_file.env_config(spec, from_file.budget(spec))).sim.cash_rate
    assert (
        scheduled.schedule == (RateStep(start="2000-01-03", annual=0.05),) and scheduled.source == "rates.csv"
    )
    both = TuneOptions(spec="ppo", replay=synthetic_store, cash_rate=0.04, cash_rates=rates)
    with pytest.raises(InputError, match="give --cash-rate or --cash-rates, not both"):
        both.env_config(spec, both.budget(spec))
    rates.write_text("date,annual_rate_pct\n2000-01-03,five\n")
    with pytest.raises(InputError, match="--cash-rates: .*line 2: annual_rate_pct 'five' is not a number"):
        from_file.env_config(spec, from_file.budget(spec))
    rates.write_text("date,annual_rate_pct\n2018-10-08,5\n")  # after the training window's first bars
    late = TuneOptions(spec="ppo", replay=synthetic_store, smoke=True, cash_rates=rates)
    with pytest.raises(
        InputError, match=r"--cash-rates: the cash_rate schedule \(rates.csv\) starts 2018-10-08"
    ):
        check_cash_rate(late)  # run_tune's check before Ray starts: each trial would refuse it
    rates.write_text("date,annual_rate_pct\n2000-01-03,4\n")
    stale = check_cash_rate(late)  # covers it, but ends long before the validation window does
    assert stale is not None and stale.startswith("the cash-rate schedule (rates.csv) ends 2000-01-03")
    rates.write_text("date,annual_rate_pct\n2000-01-03,4\n2019-12-31,4\n")
    assert check_cash_rate(late) is None
    offline = TuneOptions(spec="bc", replay=synthetic_store, cash_rate=0.04)
    with pytest.raises(
        InputError, match="--cash-rate 0.04: spec 'bc' is offline and the experience's rewards"
    ):
        check_offline_env(offline, get_spec("bc"))


def test_an_experiment_trains_and_evaluates_with_its_rate_in_folders_of_their_own(tmp_path: Path) -> None:
    import pandas as pd

    from raytrade.cluster.experiment import BUDGETS, ExperimentOptions, plan_folds, search_options

    opts = ExperimentOptions(replay=tmp_path, out=tmp_path, budget="small", cash_rate=0.04)
    assert opts.cash() == CashRate(annual=0.04)
    fold = plan_folds(pd.date_range("2020-01-01", periods=600, freq="B", tz="UTC"), BUDGETS["smoke"], 252)[0][
        0
    ]
    search = search_options(opts, opts.plan_budget(), "ppo", "base", fold)
    assert search.cash_rate == 0.04 and search.name.endswith("-cash0.04-fold0")
    assert ExperimentOptions(replay=tmp_path, out=tmp_path).cash().is_zero
    assert opts.action_suffix() == "-cash0.04"  # never reuses a search trained at another rate
    assert "--cash-rate 0.04" in opts.command()


def test_the_ratios_over_a_per_period_rate_are_the_ratios_of_the_excess() -> None:
    rng = np.random.default_rng(0)
    r, rf = rng.normal(0.0005, 0.01, 300), rng.uniform(0, 0.0002, 300)
    assert sharpe_ratio(r, PPY, rf) == pytest.approx(sharpe_ratio(r - rf, PPY), rel=1e-12)
    assert sortino_ratio(r, PPY, rf) == pytest.approx(sortino_ratio(r - rf, PPY), rel=1e-12)
    assert sharpe_ratio(r, PPY, 0.0001) == pytest.approx(sharpe_ratio(r - 0.0001, PPY), rel=1e-12)
    m = summarize(r, PPY, risk_free=rf)
    assert m["sharpe"] < summarize(r, PPY)["sharpe"]  # the yield no longer flatters it
    assert m["total_return"] == summarize(r, PPY)["total_return"]  # the return itself is unchanged
    earns_the_rate = np.where(np.arange(300) % 2 == 0, rf, r)  # every other bar in cash
    assert hit_rate(earns_the_rate, rf) == hit_rate(r[1::2] - rf[1::2])  # those bars are flat
    assert math.isnan(hit_rate(rf, rf))  # all in cash: no hit rate
    with pytest.raises(ValueError, match=r"risk_free has shape \(299,\), expected \(300,\)"):
        sharpe_ratio(r, PPY, rf[:-1])
    with pytest.raises(ValueError, match=r"required_return\[3\] = nan is not finite"):
        sortino_ratio(r, PPY, np.where(np.arange(300) == 3, np.nan, rf))


def test_the_evaluation_credits_cash_and_measures_the_ratios_over_it(
    synthetic_store: Path, tmp_path: Path
) -> None:
    from raytrade.cluster.evaluate import run_evaluation
    from raytrade.envs.evaluation.document import read_report
    from raytrade.envs.evaluation.render import render_markdown, report_blocks

    names = ["cash", "buy_and_hold", "kelly_lite"]
    kw: dict[str, object] = {"scenarios": [], "seeds": 1, "bootstrap_samples": 50, "plots": False}
    plain = run_evaluation(synthetic_store, names, tmp_path / "plain", **kw)  # type: ignore[arg-type]
    report = run_evaluation(synthetic_store, names, tmp_path / "paid", cash_rate=CashRate(annual=0.04), **kw)  # type: ignore[arg-type]
    assert read_report(tmp_path / "paid" / "report.json") == report
    assert report.report_schema == "raytrade.evaluation/8"
    ppy, cash = report.periods_per_year, report.policies["cash"]
    n = len(cash.returns)
    assert cash.metrics.total_return == pytest.approx((1 + 0.04 / ppy) ** n - 1, rel=1e-9)
    assert cash.metrics.sharpe is None and cash.metrics.sortino is None  # no excess over the rate: no ratio
    assert cash.vs_benchmark.sharpe_diff.n_valid == 0  # on no resampled path either
    assert cash.metrics.hit_rate is None  # earning the rate is no hit
    initial = report.config.simulator.initial_equity
    assert cash.interest == pytest.approx(initial * cash.metrics.total_return, rel=1e-9)  # all of it
    kelly_interest = report.policies["kelly_lite"].interest
    assert kelly_interest is not None and kelly_interest > 0.0
    assert all(p.interest == 0.0 for p in plain.policies.values())
    assert plain.policies["cash"].metrics.total_return == 0.0
    for name, entry in report.policies.items():
        assert entry.risk_free == pytest.approx([0.04 / ppy] * n, rel=1e-12)
        again = summarize(entry.returns, ppy, risk_free=entry.risk_free)
        for key in ("sharpe", "sortino", "hit_rate", "total_return"):
            value = getattr(entry.metrics, key)
            assert (value is None and not math.isfinite(again[key])) or value == again[key], (name, key)
    bh, bh_plain = report.policies["buy_and_hold"].metrics, plain.policies["buy_and_hold"].metrics
    assert bh.sharpe is not None and bh_plain.sharpe is not None and bh.sharpe < bh_plain.sharpe
    # kelly_lite's idle cash earned: on its first step (one decision, taken the same in both runs) its
    # return is higher than at 0 %. Over the window the two runs part: the interest kept this store's
    # drawdown under the kill switch's trigger, which the 0 % run reached (3 steps from 2019-12-27),
    # and a kelly_lite that holds its trade-blocked symbols (2026-12-05) rode the fall the other sold
    kl, kl_plain = report.policies["kelly_lite"], plain.policies["kelly_lite"]
    assert kl.metrics.total_return is not None and kl_plain.metrics.total_return is not None
    assert kl.returns[0] > kl_plain.returns[0]
    assert kl_plain.kill_switch_bars > kl.kill_switch_bars  # why the totals may order either way
    md = render_markdown("r", report_blocks(report, []))
    assert "earned 4.00%/year: the Sharpe and Sortino ratios" in md
    assert "| policy | fee | spread | slippage | financing | total | interest earned |" in md
    assert "Cash earned 0 %" in render_markdown("r", report_blocks(plain, []))
    assert plain.policies["buy_and_hold"].risk_free == ()


def test_evaluate_takes_a_rate_or_a_rate_file_not_both(synthetic_store: Path, tmp_path: Path) -> None:
    from raytrade.cluster.evaluate import evaluate_command

    rates = tmp_path / "rates.csv"
    rates.write_text("date,annual_rate_pct\n2000-01-01,3\n2024-01-02,abc\n")
    base = [
        "--replay",
        str(synthetic_store),
        "--policies",
        "cash",
        "--scenarios",
        "",
        "--out",
        str(tmp_path / "o"),
    ]
    both = CliRunner().invoke(evaluate_command, [*base, "--cash-rate", "0.03", "--cash-rates", str(rates)])
    assert both.exit_code == 2 and "give --cash-rate or --cash-rates, not both" in both.output
    bad = CliRunner().invoke(evaluate_command, [*base, "--cash-rates", str(rates)])
    assert bad.exit_code == 2 and "line 3: annual_rate_pct 'abc' is not a number" in bad.output
    high = CliRunner().invoke(evaluate_command, [*base, "--cash-rate", "4"])
    assert high.exit_code == 2 and "--cash-rate" in high.output and not (tmp_path / "o").exists()
    rates.write_text("date,annual_rate_pct\n2000-01-01,3\n")
    ok = CliRunner().invoke(evaluate_command, [*base, "--cash-rates", str(rates), "--no-plots"])
    assert ok.exit_code == 0, ok.output
    assert "idle cash earned a schedule of 1 rates from rates.csv (3.00%-3.00%/year" in ok.output
    assert "warning: the cash-rate schedule (rates.csv) ends 2000-01-01" in ok.output  # stale: said
    from raytrade.envs.evaluation.document import read_report

    cash = read_report(tmp_path / "o" / "report.json").policies["cash"]
    assert cash.metrics.total_return is not None and cash.metrics.total_return > 0.0

    # a schedule starting after the first bar a window earns over: one line naming the flag, the
    # window and that bar, before any replay; the walk-forward folds' windows are checked alike
    rates.write_text("date,annual_rate_pct\n2019-12-30,3\n")
    late = CliRunner().invoke(
        evaluate_command, [*base, "--cash-rates", str(rates), "--out", str(tmp_path / "l")]
    )
    assert late.exit_code == 2 and late.output.startswith("error: --cash-rates: test: the cash_rate schedule")
    assert "(rates.csv) starts 2019-12-30, after 2019-" in late.output and not (tmp_path / "l").exists()
    folds = [*base, "--walk-forward", "2", "--cash-rates", str(rates), "--out", str(tmp_path / "w")]
    late = CliRunner().invoke(evaluate_command, folds)
    assert late.exit_code == 2 and late.output.startswith(
        "error: --cash-rates: test_0: the cash_rate schedule"
    )
    # the folds covered, the stress scenarios' window (the split, here all of the store) not: refused too
    rates.write_text("date,annual_rate_pct\n2018-06-01,3\n")
    stressed = [
        *folds[:4],
        "--scenarios",
        "vol_spike",
        *folds[6:],
        "--split",
        "all",
        "--out",
        str(tmp_path / "s"),
    ]
    late = CliRunner().invoke(evaluate_command, stressed)
    assert late.exit_code == 2, late.output
    assert late.output.startswith("error: --cash-rates: all (its stress scenarios): the cash_rate schedule")
    assert "or evaluate without stress scenarios (--scenarios '')" in " ".join(late.output.split())


def test_a_training_env_in_cash_earns_its_configs_rate_and_is_rewarded_for_it() -> None:
    """The gymnasium env built from a plain env_config dict (what RLlib hands it): a book kept in cash
    (zero weights) grows by the rate every step, and the log-growth reward says so."""
    from raytrade.envs.gym_envs import PortfolioEnv

    config = {
        "sim": {"episode_len": 20, "cash_rate": {"annual": 0.1}},
        "data": {"kind": "synthetic", "n_steps": 60},
    }
    env = PortfolioEnv(config)
    _, info = env.reset(seed=0)
    equity, per_bar = info["equity"], 0.1 / env.data.periods_per_year
    for _ in range(3):
        _, reward, *_, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert not info["target_weights"].any()
        assert info["equity"] == pytest.approx(equity * (1 + per_bar), rel=1e-12)
        assert reward == pytest.approx(math.log1p(per_bar), rel=1e-9)
        equity = info["equity"]


def test_at_a_zero_rate_the_hit_rate_is_the_plain_one() -> None:
    r = np.array([1e-13, -2e-3, 0.0, 4e-3])  # a tiny gain is a hit at 0 %, as before the cash rate
    assert hit_rate(r, np.zeros(4)) == hit_rate(r) == pytest.approx(2 / 3)


def test_the_differential_sharpe_reward_is_of_growth_over_cash() -> None:
    """A book in cash at a positive rate has a steady growth: over 0 its differential Sharpe reward
    grows without bound (a reviewer measured 1,213 over 500 steps); over cash's own growth it is 0."""
    from raytrade.envs.gym_envs import PortfolioEnv

    sim = {"episode_len": 200, "cash_rate": {"annual": 0.04}, "reward": {"kind": "diff_sharpe"}}
    env = PortfolioEnv({"sim": sim, "data": {"kind": "synthetic", "n_steps": 260}})
    env.reset(seed=0)
    in_cash = [env.step(np.zeros(env.action_space.shape, dtype=np.float32))[1] for _ in range(150)]
    assert max(abs(r) for r in in_cash) < 1e-9
    env.reset(seed=0)
    invested = [env.step(np.full(env.action_space.shape, 0.1, dtype=np.float32))[1] for _ in range(150)]
    assert max(abs(r) for r in invested) > 1e-3  # a book that holds something is still rewarded


def test_a_model_trained_at_another_rate_than_the_evaluations_is_warned_about(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """A registry model whose training env paid 4 % on cash, replayed where cash earns 0 %: the report
    and the console say so (its decisions assumed a yield the replay does not pay)."""
    from types import SimpleNamespace

    from raytrade.cluster.evaluate import run_evaluation
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.policies import handle_cash_rate

    class TrainedAt4:
        path = tmp_path / "registry" / "cashy" / "1"
        feature_columns = ("ret_1",)

        def env_config(self) -> PortfolioEnvConfig:
            return PortfolioEnvConfig.model_validate({"sim": {"cash_rate": {"annual": 0.04}}})

        def policy(self, data: MarketData) -> object:
            return lambda obs: np.zeros(obs.mask.shape)

    assert handle_cash_rate(TrainedAt4()) == CashRate(annual=0.04)
    assert handle_cash_rate(SimpleNamespace()) is None  # no training env config: nothing to compare

    def loader(ref: str, registry: Path) -> TrainedAt4:
        return TrainedAt4()

    kw: dict[str, object] = {"scenarios": [], "seeds": 1, "bootstrap_samples": 10, "plots": False}
    kw |= {"registry": tmp_path / "registry", "loader": loader, "in_sample": True}
    at_zero = run_evaluation(synthetic_store, ["cash", "registry:cashy"], tmp_path / "a", **kw)  # type: ignore[arg-type]
    said = [
        w for w in at_zero.warnings if w.startswith("registry:cashy trained with idle cash earning 4.00%")
    ]
    assert len(said) == 1 and "this evaluation credits 0.00%/year" in said[0]
    matched = run_evaluation(
        synthetic_store, ["cash", "registry:cashy"], tmp_path / "b", cash_rate=CashRate(annual=0.04), **kw
    )  # type: ignore[arg-type]
    assert not [w for w in matched.warnings if "trained with idle cash" in w]


def test_a_rate_file_kept_current_since_the_model_trained_is_the_rate_it_trained_with(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """The rates are compared on the model's training window: rows added to the file after it (as the
    stale warning asks) are no other rate, while a rate that changed inside it is."""
    import pandas as pd

    from raytrade.cluster.evaluate import run_evaluation
    from raytrade.envs.config import PortfolioEnvConfig
    from raytrade.envs.evaluation.insample import TrainedOn
    from raytrade.replay.splits import TimeWindow

    trained = CashRate(
        schedule=(RateStep(start="2000-01-03", annual=0.04),), source="t.csv", through="2018-12-31"
    )

    class TrainedOnAFile:
        path = tmp_path / "registry" / "filed" / "1"
        feature_columns = ("ret_1",)

        def env_config(self) -> PortfolioEnvConfig:
            return PortfolioEnvConfig.model_validate({"sim": {"cash_rate": trained.model_dump(mode="json")}})

        def policy(self, data: MarketData) -> object:
            return lambda obs: np.zeros(obs.mask.shape)

        def trained_on(self, root: str, sha256: str) -> TrainedOn:
            start, end = (pd.Timestamp(d, tz="UTC") for d in ("2018-01-02", "2018-12-31"))
            return TrainedOn(TimeWindow("train", start, end, 250), "its manifest")

    def loader(ref: str, registry: Path) -> TrainedOnAFile:
        return TrainedOnAFile()

    kw: dict[str, object] = {"scenarios": [], "seeds": 1, "bootstrap_samples": 10, "plots": False}
    kw |= {"registry": tmp_path / "registry", "loader": loader}
    current = CashRate(
        schedule=(*trained.schedule, RateStep(start="2019-06-03", annual=0.03)), source="t.csv"
    )
    kept = run_evaluation(
        synthetic_store, ["cash", "registry:filed"], tmp_path / "a", cash_rate=current, **kw
    )  # type: ignore[arg-type]
    assert not [w for w in kept.warnings if "trained with idle cash" in w]
    moved = CashRate(schedule=(*trained.schedule, RateStep(start="2018-06-01", annual=0.05)), source="t.csv")
    other = run_evaluation(synthetic_store, ["cash", "registry:filed"], tmp_path / "b", cash_rate=moved, **kw)  # type: ignore[arg-type]
    assert [
        w for w in other.warnings if w.startswith("registry:filed trained with idle cash earning a schedule")
    ]


def test_after_training_without_walk_forward_names_the_flags(synthetic_store: Path, tmp_path: Path) -> None:
    """It named the config's fields ("after_training ... needs walk_forward"), not the flags to give."""
    from raytrade.cluster.evaluate import evaluate_command

    args = ["--replay", str(synthetic_store), "--policies", "cash", "--out", str(tmp_path / "o")]
    lone = CliRunner().invoke(evaluate_command, [*args, "--after-training"])
    assert lone.exit_code == 2, lone.output
    assert "--after-training cuts the --walk-forward folds: give --walk-forward K too" in lone.output
    assert not (tmp_path / "o").exists()
