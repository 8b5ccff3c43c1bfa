"""Evaluation harness: identical treatment of identical trades, exact no-trade holds, metrics that
recompute from the report, walk-forward folds after their training windows, determinism, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from raytrade.cluster.evaluate import evaluate_command, run_evaluation
from raytrade.envs.costs import COST_COMPONENTS
from raytrade.envs.evaluation.document import (
    CostBreakdown,
    EvaluationReport,
    Metrics,
    Spread,
    StressScenario,
    StressSummary,
    build_report,
    read_report,
    report_json,
    series_metrics,
)
from raytrade.envs.evaluation.harness import EvaluationConfig, evaluate, prepare
from raytrade.envs.evaluation.plots import stress_bars
from raytrade.envs.evaluation.policies import EvalPolicy, buy_and_hold_policy, month_starts, step_index
from raytrade.envs.evaluation.render import render_html, render_markdown, report_blocks
from raytrade.envs.evaluation.stats import (
    BootstrapConfig,
    difference_ci,
    sharpe_batch,
    sortino_batch,
    stationary_indices,
)
from raytrade.envs.market_data import MarketData
from raytrade.envs.metrics import SUMMARY_KEYS, sharpe_ratio, sortino_ratio, summarize
from raytrade.envs.rollout import Decision, equal_weight, replay_policy
from raytrade.envs.scenarios import ScenarioConfig
from raytrade.envs.simulator import Observation

SCEN = ["flash_crash", "vol_spike"]
FAST = EvaluationConfig(scenarios=tuple(SCEN), seeds=(0, 1))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("eval") / "store"
    market = generate(n_symbols=6, years=2.0, seed=11)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


class FakeHandle:
    """A registry handle that re-implements buy-and-hold independently (first bar 1/n, then hold)."""

    path = Path("registry/fake/1")
    feature_columns = ("ret_1", "vol_20")

    def policy(self, data: MarketData) -> EvalPolicy:
        def act(obs: Observation) -> Decision:
            assert obs.features.shape[-1] == 2  # its own columns only
            first = np.rint(obs.progress * (data.n_steps - 1)) == 0
            n = obs.mask.sum(-1, keepdims=True)
            target = np.where(first[:, None], obs.mask / np.maximum(n, 1), obs.weights)
            return Decision(target, np.repeat(~first[:, None], obs.mask.shape[1], axis=1))

        return act

    def act(self, observation: Any) -> Any:  # pragma: no cover - policy() is preferred
        raise AssertionError("policy() should be used")


def fake_loader(ref: str, registry: Path) -> FakeHandle:
    if not ref.startswith("fake"):
        raise ValueError(f"no policy {ref!r} in registry {str(registry)!r}; available: fake")
    return FakeHandle()


def test_buy_and_hold_trades_only_on_the_first_bar(store: Path) -> None:
    plan = prepare(store, ["buy_and_hold"], FAST)
    data = plan.split_data
    rollout = replay_policy(data, buy_and_hold_policy(data, 0))
    assert rollout.turnover[0, 0] > 0.9
    assert (rollout.turnover[0, 1:] == 0.0).all()
    assert (rollout.costs[0, 1:, :3] == 0.0).all()  # fee, spread, slippage: nothing traded


def test_identical_trades_give_identical_returns_and_costs(store: Path) -> None:
    plan = prepare(store, ["buy_and_hold", "registry:fake"], FAST, registry=store.parent, loader=fake_loader)
    result = evaluate(plan)
    a, b = result.policies["buy_and_hold"].main, result.policies["registry:fake"].main
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.costs, b.costs)
    for scenario in SCEN:
        for ours, theirs in zip(
            result.policies["buy_and_hold"].stress_draws[scenario],
            result.policies["registry:fake"].stress_draws[scenario],
            strict=True,
        ):
            np.testing.assert_array_equal(ours.returns, theirs.returns)


def test_a_decision_without_holds_trades_exactly_like_plain_weights(store: Path) -> None:
    data = prepare(store, ["cash"], FAST).split_data

    def as_decision(obs: Observation) -> Decision:
        weights = equal_weight(obs)
        return Decision(weights, np.zeros(weights.shape, dtype=bool))

    ours, theirs = replay_policy(data, as_decision), replay_policy(data, equal_weight)
    for name in ("returns", "equity", "costs", "turnover", "weights"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))


def test_monthly_schedule_and_step_index() -> None:
    ts = np.array(
        ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-03-01"], dtype="datetime64[us]"
    )
    assert month_starts(ts).tolist() == [True, False, True, False, True]


def _same(a: float | None, b: float) -> bool:
    return (a is None and not math.isfinite(b)) or a == b


def test_report_metrics_recompute_from_its_returns(store: Path, tmp_path: Path) -> None:
    report = run_evaluation(
        store,
        ["buy_and_hold", "inverse_vol", "kelly_lite", "cash"],
        tmp_path / "r",
        scenarios=SCEN,
        bootstrap_samples=50,
        plots=False,
    )
    on_disk = read_report(tmp_path / "r" / "report.json")
    assert on_disk == report
    assert "## Plots" not in (tmp_path / "r" / "report.md").read_text()  # none drawn: no empty section
    ppy = on_disk.periods_per_year
    for name, entry in on_disk.policies.items():
        assert len(entry.timestamps) == len(entry.returns)
        again = summarize(entry.returns, ppy, turnover=entry.turnover, costs=entry.costs_per_period)
        for key, value in again.items():
            assert _same(getattr(entry.metrics, key), value), (name, key)
        assert [name for name, _ in entry.regimes.by_name()] == ["calm", "choppy", "crisis"]
        assert set(entry.stress) == set(SCEN)
    assert on_disk.cost_model.fee_bps_equity == 5.0
    assert len(on_disk.replay.fingerprint_sha256) == 64


def test_walk_forward_folds_never_overlap_their_training_windows(store: Path) -> None:
    cfg = FAST.model_copy(update={"walk_forward": 3})
    plan = prepare(store, ["buy_and_hold"], cfg)
    assert len(plan.windows) == 3
    previous_end = None
    for w in plan.windows:
        assert w.train is not None
        ts = w.data.ts.astype("datetime64[us]")
        start = np.datetime64(w.train.end.tz_convert(None).to_datetime64(), "us")
        assert (ts > start).all()  # every evaluated bar is after the training window
        gap = int(((plan.split_data.ts > start) & (plan.split_data.ts < ts[0])).sum())
        assert gap <= cfg.embargo_bars
        if previous_end is not None:
            assert ts[0] > previous_end  # folds do not overlap each other
        previous_end = ts[-1]
    result = evaluate(plan)
    pooled = result.policies["buy_and_hold"].main
    assert pooled.returns.size == sum(w.data.n_steps - 1 for w in plan.windows)


def test_same_inputs_byte_identical_report(store: Path, tmp_path: Path) -> None:
    args = [
        "--replay",
        str(store),
        "--policies",
        "kelly_lite,buy_and_hold",
        "--scenarios",
        ",".join(SCEN),
        "--bootstrap-samples",
        "50",
    ]
    outs = []
    for k in range(2):
        result = CliRunner().invoke(evaluate_command, [*args, "--out", str(tmp_path / str(k))])
        assert result.exit_code == 0, result.output
        outs.append((tmp_path / str(k) / "report.json").read_bytes())
    assert outs[0] == outs[1]
    md = (tmp_path / "0" / "report.md").read_text()
    assert "Leaderboard" in md and "plots/equity.png" in md
    assert (tmp_path / "0" / "report.html").exists() and (tmp_path / "0" / "plots" / "stress.png").exists()


def _error(args: list[str]) -> str:
    result = CliRunner().invoke(evaluate_command, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_unknown_policy_is_refused_before_work(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = _error(["--replay", str(store), "--policies", "cash,buy_and_hodl", "--out", str(out)])
    assert "buy_and_hodl" in line
    line = _error(
        [
            "--replay",
            str(store),
            "--policies",
            "registry:nope",
            "--registry",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    assert "nope" in line
    assert not out.exists()


def test_too_short_split_is_refused(tmp_path: Path) -> None:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path / "tiny"
    market = generate(n_symbols=3, years=0.2, seed=1)
    ingest_frames(root, market.bars, show_progress=False)
    out = tmp_path / "out"
    line = _error(["--replay", str(root), "--policies", "kelly_lite", "--scenarios", "", "--out", str(out)])
    assert "kelly_lite" in line and "lookback 7" in line
    assert not out.exists()


def test_store_without_needed_features_is_refused(store: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(store / "bars", bare / "bars")
    out = tmp_path / "out"
    line = _error(
        ["--replay", str(bare), "--policies", "kelly_lite,inverse_vol", "--scenarios", "", "--out", str(out)]
    )
    assert "features" in line and "fc_mean" in line and "vol_20" in line and "kelly_lite" in line
    line = _error(
        ["--replay", str(store), "--policies", "cash", "--scenarios", "crash_of_29", "--out", str(out)]
    )
    assert "crash_of_29" in line
    assert not out.exists()


def test_null_feature_column_is_refused(store: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "nulls"
    shutil.copytree(store, copy)
    for f in (copy / "features").rglob("*.parquet"):
        table = pq.read_table(f)
        i = table.schema.get_field_index("fc_consensus_ok")
        table = table.set_column(i, table.schema.field(i), pa.nulls(table.num_rows, pa.bool_()))
        pq.write_table(table, f)
    line = _error(
        ["--replay", str(copy), "--policies", "kelly_lite", "--scenarios", "", "--out", str(tmp_path / "o")]
    )
    assert "fc_consensus_ok" in line and "kelly_lite" in line


def test_bootstrap_matches_metrics_and_is_zero_against_itself() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, 200)
    assert sharpe_batch(r[None], 252)[0] == pytest.approx(sharpe_ratio(r, 252), rel=1e-12)
    assert sortino_batch(r[None], 252)[0] == pytest.approx(sortino_ratio(r, 252), rel=1e-12)
    idx = stationary_indices(200, 100, 10.0, np.random.default_rng(1))
    assert idx.shape == (100, 200) and idx.min() >= 0 and idx.max() < 200
    ci = difference_ci(r, r, 252, "sharpe", idx, 0.95)
    assert (ci.estimate, ci.low, ci.high, ci.n_valid) == (0.0, 0.0, 0.0, 100)
    better = difference_ci(r + 0.002, r, 252, "sortino", idx, 0.95)
    assert better.low > 0


def test_step_index_recovers_the_bar(store: Path) -> None:
    data = prepare(store, ["cash"], FAST).split_data
    seen: list[int] = []

    def spy(obs: Observation) -> np.ndarray:
        seen.append(int(step_index(obs, data)[0]))
        return np.zeros(obs.mask.shape)

    replay_policy(data, spy)
    assert seen == list(range(data.n_steps - 1))


class NoisyHandle:
    """A stochastic registry model: random long-only weights from its own seeded generator."""

    stochastic = True
    feature_columns = ("vol_20",)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        return self.rng.random(obs.mask.shape) * obs.mask / obs.mask.shape[1]


def test_stochastic_models_run_every_seed_and_report_the_spread(store: Path, tmp_path: Path) -> None:
    cfg = FAST.model_copy(update={"seeds": (0, 1, 2)})
    plan = prepare(
        store, ["registry:noisy"], cfg, registry=tmp_path, loader=lambda ref, registry: NoisyHandle()
    )
    result = evaluate(plan)
    noisy = result.policies["registry:noisy"]
    assert noisy.seeds == (0, 1, 2) and result.policies["equal_weight"].seeds == (0,)
    assert not np.array_equal(noisy.by_seed[0].returns, noisy.by_seed[1].returns)
    np.testing.assert_array_equal(noisy.main.returns, noisy.by_seed[0].returns)
    spread = build_report(result).policies["registry:noisy"].seeds.summary.sharpe
    assert spread.std is not None and spread.std > 0
    assert spread.min is not None and spread.mean is not None and spread.max is not None
    assert spread.min < spread.mean < spread.max


# --------------------------------------------------------------------------- the report document


BOOT = BootstrapConfig(samples=20)


@pytest.fixture(scope="module")
def report(store: Path) -> EvaluationReport:
    """The document of a small split evaluation (cash has no dispersion: an undefined Sharpe)."""
    plan = prepare(store, ["buy_and_hold", "kelly_lite", "cash"], FAST.model_copy(update={"bootstrap": BOOT}))
    return build_report(evaluate(plan))


def test_report_round_trips_through_json(report: EvaluationReport) -> None:
    assert report.policies["cash"].metrics.sharpe is None  # the null path is exercised
    again = EvaluationReport.model_validate_json(report_json(report))
    assert again == report
    assert report_json(again) == report_json(report)


def test_report_json_keeps_its_key_names(report: EvaluationReport) -> None:
    doc = json.loads(report_json(report))
    assert list(doc) == [
        "schema",
        "replay",
        "mode",
        "split",
        "periods_per_year",
        "config",
        "cost_model",
        "stress_scenarios",
        "benchmark",
        "policies",
        "warnings",
        "large_moves",
    ]
    assert doc["schema"] == "raytrade.evaluation/8"
    assert set(doc["policies"]["cash"]) == {
        "kind",
        "stochastic",
        "manifest",
        "timestamps",
        "returns",
        "turnover",
        "costs_per_period",
        "risk_free",
        "metrics",
        "costs",
        "regimes",
        "seeds",
        "folds",
        "stress",
        "vs_benchmark",
        "sample",
        "ruined",
        "ruin_date",
        "exit_cost",
        "exit_cost_bps",
        "interest",
        "kill_switch_bars",
        "kill_switch_from",
        "ruined_runs",
    }
    assert doc["policies"]["cash"]["metrics"]["sharpe"] is None
    assert list(doc["policies"]["cash"]["costs"]) == ["fee", "spread", "slippage", "financing", "total"]
    fold_keys = {"name", "train", "test", "in_sample", "metrics", "costs", "ruined", "ruin_date"}
    fold_keys |= {"exit_cost", "exit_cost_bps", "interest", "bars_stop", "halted_at_end"}
    fold_keys |= {"kill_switch_bars", "kill_switch_from"}
    assert set(doc["policies"]["cash"]["folds"][0]) == fold_keys


def test_metric_and_cost_fields_follow_their_sources() -> None:
    assert tuple(Metrics.model_fields) == SUMMARY_KEYS
    assert tuple(CostBreakdown.model_fields) == (*COST_COMPONENTS, "total")


def test_undefined_numbers_cannot_enter_the_document() -> None:
    with pytest.raises(ValidationError, match="max"):
        Spread(mean=0.0, std=None, min=0.0, max=math.inf)


def test_report_file_missing_a_field_is_refused(report: EvaluationReport, tmp_path: Path) -> None:
    doc = json.loads(report_json(report))
    del doc["replay"]["fingerprint_sha256"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValidationError) as info:
        read_report(path)
    errors = [(e["loc"], e["type"]) for e in info.value.errors()]
    assert errors == [(("replay", "fingerprint_sha256"), "missing")]


def test_report_file_with_a_wrong_type_is_refused(report: EvaluationReport, tmp_path: Path) -> None:
    doc = json.loads(report_json(report))
    doc["policies"]["kelly_lite"]["metrics"]["sharpe"] = "high"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValidationError) as info:
        read_report(path)
    assert [e["loc"] for e in info.value.errors()] == [("policies", "kelly_lite", "metrics", "sharpe")]
    assert "policies.kelly_lite.metrics.sharpe" in str(info.value)


def _with_sharpe(report: EvaluationReport, sharpe: dict[str, float | None]) -> EvaluationReport:
    policies = {
        name: p.model_copy(update={"metrics": p.metrics.model_copy(update={"sharpe": sharpe[name]})})
        for name, p in report.policies.items()
    }
    return report.model_copy(update={"policies": policies})


def _leaderboard(markdown: str) -> list[str]:
    section = markdown.split("## Leaderboard (net of costs)")[1].split("## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # after the header
    return [row.split(" | ")[0].removeprefix("| ") for row in rows]


def test_markdown_ranks_policies_by_sharpe_undefined_last(report: EvaluationReport) -> None:
    ranked = _with_sharpe(
        report, {"cash": 2.0, "buy_and_hold": None, "kelly_lite": -0.5, "equal_weight": 0.25}
    )
    md = render_markdown("t", report_blocks(ranked, []))
    assert _leaderboard(md) == ["cash", "equal_weight", "kelly_lite", "buy_and_hold"]
    assert ranked.ranked() == ["cash", "equal_weight", "kelly_lite", "buy_and_hold"]


def test_markdown_shows_undefined_figures_as_na(report: EvaluationReport) -> None:
    md = render_markdown("t", report_blocks(report, []))
    cash_row = next(line for line in md.splitlines() if line.startswith("| cash | "))
    assert cash_row.split(" | ")[4] == "n/a"  # policy, total, annual, vol, sharpe
    assert _leaderboard(md)[-1] == "cash"


# --------------------------------------------------------------------------- stress over draws


def test_stress_reports_every_draw_and_the_spread_over_draws(store: Path) -> None:
    plan = prepare(store, ["inverse_vol"], FAST.model_copy(update={"bootstrap": BOOT}))
    result = evaluate(plan)
    entry = build_report(result).policies["inverse_vol"].stress["flash_crash"]
    runs = result.policies["inverse_vol"].stress_draws["flash_crash"]
    assert entry.n_draws == len(runs) == FAST.scenario_config.draws == 5
    assert [d.metrics for d in entry.draws] == [series_metrics(r, plan.periods_per_year) for r in runs]
    for key in Metrics.model_fields:
        values = np.array([getattr(d.metrics, key) for d in entry.draws], dtype=np.float64)
        spread = getattr(entry.summary, key)
        assert (spread.mean, spread.min, spread.max) == (values.mean(), values.min(), values.max()), key
        assert spread.std == values.std(ddof=1), key
    totals = [d.metrics.total_return for d in entry.draws]
    assert len(set(totals)) > 1  # the draws differ: a spread, not one path five times


def test_stress_of_one_draw_has_no_std(store: Path) -> None:
    one = ScenarioConfig(draws=1)
    plan = prepare(
        store, ["buy_and_hold"], FAST.model_copy(update={"bootstrap": BOOT, "scenario_config": one})
    )
    entry = build_report(evaluate(plan)).policies["buy_and_hold"].stress["vol_spike"]
    (draw,) = entry.draws
    total = entry.summary.total_return
    assert (entry.n_draws, total.std) == (1, None)
    assert total.mean == total.min == total.max == draw.metrics.total_return


def test_stress_summary_keeps_the_metric_names() -> None:
    assert tuple(StressSummary.model_fields) == tuple(Metrics.model_fields)


def _with_stress_total(report: EvaluationReport, spread: Spread) -> EvaluationReport:
    policies = {}
    for name, p in report.policies.items():
        stress = {
            s: e.model_copy(update={"summary": e.summary.model_copy(update={"total_return": spread})})
            for s, e in p.stress.items()
        }
        policies[name] = p.model_copy(update={"stress": stress})
    return report.model_copy(update={"policies": policies})


def _table_after(markdown: str, caption: str) -> list[list[str]]:
    section = markdown.split(caption)[1].split("\n\n")[1]
    return [line.strip("| ").split(" | ") for line in section.splitlines()[2:]]


def test_stress_table_cells_are_mean_min_max(report: EvaluationReport) -> None:
    shown = _with_stress_total(report, Spread(mean=-0.1, std=0.05, min=-0.2, max=0.05))
    rows = _table_after(render_markdown("t", report_blocks(shown, [])), "Stress total return:")
    assert rows[0][1:] == ["-10.00% [-20.00%, 5.00%]", "-10.00% [-20.00%, 5.00%]"]
    assert len(rows) == len(report.policies)


def test_seeds_table_heads_the_seed_ids_and_counts_the_runs(report: EvaluationReport) -> None:
    md = render_markdown("t", report_blocks(report, []))
    section = md.split("## Seeds")[1].split("\n\n")[1]
    header, _, *rows = [line.strip("| ").split(" | ") for line in section.splitlines()]
    assert header[:3] == ["policy", "runs", "seed ids"]
    assert {row[0]: row[1:3] for row in rows} == {n: ["1", "0"] for n in report.policies}


def test_the_summary_dates_the_window_every_policy_was_scored_on(report: EvaluationReport) -> None:
    dated = report.policies[report.benchmark].timestamps
    md = render_markdown("t", report_blocks(report, []))
    assert f"on split {report.split!r} (returns dated {dated[0]} to {dated[-1]}, {len(dated)} bars)" in md
    assert {p.timestamps for p in report.policies.values()} == {dated}  # one window for all


def test_a_refused_scenario_is_shown_with_its_reason(report: EvaluationReport) -> None:
    scenarios = {
        **report.stress_scenarios,
        "bootstrap_crisis": StressScenario(
            definition=ScenarioConfig().get("bootstrap_crisis"), refused="regime 2 (crisis) pool has 4 rows"
        ),
    }
    shown = report.model_copy(update={"stress_scenarios": scenarios})
    again = EvaluationReport.model_validate_json(report_json(shown))
    assert again.stress_scenarios["bootstrap_crisis"].refused == "regime 2 (crisis) pool has 4 rows"
    blocks = report_blocks(shown, [])
    md = render_markdown("t", blocks)
    assert "bootstrap_crisis: refused: regime 2 (crisis) pool has 4 rows" in md
    rows = _table_after(md, "Stress total return:")
    assert [row[-1] for row in rows] == ["refused"] * len(report.policies)
    assert "<p>bootstrap_crisis: refused: regime 2 (crisis) pool has 4 rows</p>" in render_html("t", blocks)


def test_a_policy_without_a_scenario_that_ran_is_refused(report: EvaluationReport) -> None:
    doc = json.loads(report_json(report))
    del doc["policies"]["cash"]["stress"]["vol_spike"]
    with pytest.raises(ValidationError, match=r"policies.cash.stress reports \['flash_crash'\]"):
        EvaluationReport.model_validate(doc)


def test_stress_plot_bars_are_the_reported_mean_min_max(report: EvaluationReport) -> None:
    mean, low, high = stress_bars(report, "kelly_lite", ["flash_crash", "vol_spike"])
    summary = [
        report.policies["kelly_lite"].stress[s].summary.total_return for s in ("flash_crash", "vol_spike")
    ]
    assert mean.tolist() == [s.mean for s in summary]
    assert low.tolist() == [s.min for s in summary]
    assert high.tolist() == [s.max for s in summary]


def test_unknown_scenario_is_an_input_error(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = _error(
        ["--replay", str(store), "--policies", "cash", "--scenarios", "vol_spike,nope", "--out", str(out)]
    )
    assert line == (
        "error: unknown scenario 'nope'; known: bootstrap_crisis, crisis_2008_like, flash_crash, vol_spike"
    )
    assert not out.exists()


def test_a_scenario_listed_twice_is_refused_like_a_policy_listed_twice(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--replay", str(store), "--out", str(out)]
    line = _error([*args, "--policies", "cash", "--scenarios", "flash_crash,vol_spike,flash_crash"])
    assert line == "error: scenario 'flash_crash' is listed twice"
    line = _error([*args, "--policies", "cash,cash", "--scenarios", "flash_crash"])
    assert line == "error: policy 'cash' is listed twice"  # the same words for policies
    assert not out.exists()


# ------------------------------------------------------------------------------ shared facts


def test_registry_references_parse_to_name_and_version() -> None:
    from raytrade.envs.registry_ref import RegistryRef, parse_registry_ref

    assert parse_registry_ref("alpha") == RegistryRef(name="alpha", version=None)
    assert parse_registry_ref("alpha.v2@12") == RegistryRef(name="alpha.v2", version=12)
    assert str(parse_registry_ref("alpha@3")) == "alpha@3"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("alpha@", "registry reference 'alpha@': version '' is not a positive integer"),
        ("alpha@x", "registry reference 'alpha@x': version 'x' is not a positive integer"),
        ("alpha@0", "registry reference 'alpha@0': version '0' is not a positive integer"),
        ("@3", "registry reference '@3': name '' must match"),
        ("../x", "registry reference '../x': name '../x' must match"),
    ],
)
def test_bad_registry_reference_names_the_reference(ref: str, message: str) -> None:
    from raytrade.envs.registry_ref import RegistryRefError, parse_registry_ref

    with pytest.raises(RegistryRefError) as info:
        parse_registry_ref(ref)
    assert str(info.value).startswith(message)


def test_bad_registry_reference_is_an_evaluation_input_error(store: Path) -> None:
    from raytrade.envs.evaluation.policies import EvaluationInputError

    with pytest.raises(EvaluationInputError, match="registry reference 'fake@x': version 'x'"):
        prepare(store, ["registry:fake@x"], FAST, registry=store.parent, loader=fake_loader)


def test_data_fingerprint_is_sha256_of_sorted_paths_and_bytes(tmp_path: Path) -> None:
    import hashlib

    from raytrade.envs.evaluation import harness
    from raytrade.replay.fingerprint import data_fingerprint

    for rel, body in [
        ("features/year=2024/part-0.parquet", b"F"),
        ("bars/year=2025/part-0.parquet", b"B2"),
        ("bars/year=2024/part-1.parquet", b"B1"),
        ("experience/year=2024/part-0.parquet", b"E"),  # not an input of a policy
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(body)
    expected = hashlib.sha256(
        b"bars/year=2024/part-1.parquet\0B1"
        b"bars/year=2025/part-0.parquet\0B2"
        b"features/year=2024/part-0.parquet\0F"
    ).hexdigest()
    assert data_fingerprint(tmp_path) == (expected, 3)
    assert harness.data_fingerprint is data_fingerprint  # the report records the same fact
