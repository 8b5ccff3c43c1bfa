"""``raytrade evaluate`` on hostile data completes: a scenario the data cannot carry is reported as
refused (with its reason) while every other scenario and every policy is evaluated.

The store is generated (``replay.sources.synthetic.generate``), then cut and shocked before the
project's own ingest: symbols listing mid-history (one inside the test window), a +20 % bar and a
-40 % bar on two symbols inside the test window, a symbol with almost no volume, and a crisis regime
of only a few rows (a short burst of +/-16 % days on every symbol at the end of the store). Before
the fix the default ``bootstrap_crisis`` refused its tiny crisis pool and the whole evaluation ended
with an input error; the crisis window of ``crisis_2008_like`` (120 bars) is also longer than this
store's test split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.cluster.evaluate import DEFAULT_POLICIES
from raytrade.envs.evaluation.harness import DEFAULT_SCENARIOS, EvaluationConfig, prepare
from raytrade.envs.market_data import MarketData
from raytrade.envs.scenarios import ScenarioDataError, apply_scenario, row_regimes, simple_returns

PRICES = ["open", "high", "low", "close", "vwap", "bid", "ask"]
LATE = {"SYN008": 0.3, "SYN009": 0.5, "SYN010": 0.7, "SYN011": 0.9}
"""Symbol -> fraction of the calendar at which it lists."""
JUMP, CRASH, THIN = "SYN000", "SYN001", "SYN002"
BURST = (1.16, 1 / 1.16, 1.16, 1 / 1.16)
"""Close-to-close moves of every symbol on the store's last bars: a crisis of a few rows."""
REFUSED = {
    "crisis_2008_like": "the data has 99 bars",
    "bootstrap_crisis": "regime 2 (crisis) pool has 3 rows",
}


def _move_from(bars: pd.DataFrame, symbol: str, ts: pd.Timestamp, factor: float) -> None:
    """Scale every price of ``symbol`` from ``ts`` on (a gap that persists), in place."""
    rows = (bars["symbol"] == symbol) & (bars["ts"] >= ts)
    bars.loc[rows, PRICES] *= factor


def _set_return(bars: pd.DataFrame, symbol: str, ts: pd.Timestamp, simple_return: float) -> None:
    """Make ``symbol``'s close-to-close return on ``ts`` exactly ``simple_return``."""
    closes = bars.loc[bars["symbol"] == symbol].set_index("ts")["close"]
    i = closes.index.get_loc(ts)
    _move_from(bars, symbol, ts, (1.0 + simple_return) * closes.iloc[i - 1] / closes.iloc[i])


def hostile_bars() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bars and macro of the hostile store (see the module docstring)."""
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=12, years=2.0, seed=7)
    bars = market.bars.copy()
    calendar = pd.DatetimeIndex(sorted(bars["ts"].unique()))
    t = len(calendar)
    for symbol, frac in LATE.items():
        bars = bars[~((bars["symbol"] == symbol) & (bars["ts"] < calendar[int(frac * t)]))]
    bars = bars.reset_index(drop=True)
    _set_return(bars, JUMP, calendar[t - 40], 0.20)
    _set_return(bars, CRASH, calendar[t - 30], -0.40)
    for k, factor in zip(range(len(BURST), 0, -1), BURST, strict=True):
        for symbol in bars["symbol"].unique():
            _move_from(bars, symbol, calendar[t - k], factor)
    thin = bars["symbol"] == THIN
    bars.loc[thin, "volume"] = np.round(bars.loc[thin, "volume"] / 1e4)
    return bars, market.macro


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames

    root = tmp_path_factory.mktemp("hostile") / "store"
    bars, macro = hostile_bars()
    ingest_frames(root, bars, macro, show_progress=False)
    return root


@pytest.fixture(scope="module")
def history(hostile_store: Path) -> MarketData:
    from raytrade.envs.replay_loader import load_market_data

    return load_market_data(hostile_store, "all")


def test_the_store_is_as_hostile_as_intended(hostile_store: Path, history: MarketData) -> None:
    from raytrade.replay.reader import read_frame

    thin = read_frame(hostile_store, "bars", symbols=[THIN], columns=["close", "volume"])
    assert float((thin["close"] * thin["volume"]).median()) < 1e4  # a few thousand dollars a day
    returns = simple_returns(history)
    col = {s: k for k, s in enumerate(history.symbols)}
    assert np.nanmax(returns[:, col[JUMP]]) == pytest.approx(0.20, abs=1e-9)
    assert np.nanmin(returns[:, col[CRASH]]) == pytest.approx(-0.40, abs=1e-9)
    assert [bool(history.listed[0, col[s]]) for s in LATE] == [False] * len(LATE)
    assert [bool(history.listed[-1, col[s]]) for s in LATE] == [True] * len(LATE)
    regimes = row_regimes(history.regime_code, returns)
    assert int((regimes == 2).sum()) == 3  # the burst's last three bars; nothing else is a crisis


def test_a_scenario_the_data_cannot_carry_raises_scenario_data_error(history: MarketData) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ScenarioDataError, match=r"regime 2 \(crisis\) pool has 3 rows, fewer than"):
        apply_scenario("bootstrap_crisis", history, rng)
    with pytest.raises(ScenarioDataError, match=r"the data has 99 bars; the scenario window \(length=120\)"):
        apply_scenario("crisis_2008_like", _first_bars(history, 99), rng)


def _first_bars(data: MarketData, n: int) -> MarketData:
    from raytrade.envs.evaluation.harness import slice_window
    from raytrade.replay.splits import TimeWindow

    start, end = (pd.Timestamp(data.ts[k]).tz_localize("UTC") for k in (0, n - 1))
    return slice_window(data, TimeWindow("head", start, end, n))


def test_prepare_records_refused_scenarios_and_builds_the_others(hostile_store: Path) -> None:
    plan = prepare(hostile_store, ["buy_and_hold"], EvaluationConfig())
    assert list(plan.refused_scenarios) == list(REFUSED)
    for name, start in REFUSED.items():
        assert plan.refused_scenarios[name].startswith(start)
    assert list(plan.scenario_draws) == ["flash_crash", "vol_spike"]
    assert [len(d) for d in plan.scenario_draws.values()] == [5, 5]


def test_a_plain_value_error_from_a_scenario_is_not_a_refusal(
    hostile_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raytrade.envs.evaluation.harness as harness

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug, not the data")

    monkeypatch.setattr(harness, "scenario_draws", broken)
    with pytest.raises(ValueError, match="a bug, not the data"):
        prepare(hostile_store, ["buy_and_hold"], EvaluationConfig(scenarios=("vol_spike",)))


def _refuse_non_finite(token: str) -> float:
    raise AssertionError(f"report.json holds {token}")


def _numbers(node: Any) -> list[float]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in _numbers(v)]
    return [float(node)] if isinstance(node, int | float) and not isinstance(node, bool) else []


def test_evaluate_completes_on_hostile_data_and_reports_refused_scenarios(
    hostile_store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    args = ["evaluate", "--replay", str(hostile_store), "--out", str(out), "--bootstrap-samples", "50"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    refused_lines = [  # a warning line each (a scenario dropped without a word was easy to miss)
        line.removeprefix("warning: ")
        for line in result.output.splitlines()
        if line.startswith("warning: scenario ")
    ]
    assert [line.split(" refused: ")[0] for line in refused_lines] == [f"scenario {s}" for s in REFUSED]

    text = (out / "report.json").read_text()
    doc = json.loads(text, parse_constant=_refuse_non_finite)
    assert all(math.isfinite(x) for x in _numbers(doc))
    policies = [*DEFAULT_POLICIES.split(",")]
    assert sorted(doc["policies"]) == sorted(policies)
    assert list(doc["stress_scenarios"]) == list(DEFAULT_SCENARIOS)
    ran = [s for s in DEFAULT_SCENARIOS if s not in REFUSED]
    for name, start in REFUSED.items():
        reason = doc["stress_scenarios"][name]["refused"]
        assert reason.startswith(start)
        assert f"scenario {name} refused: {reason}" in refused_lines
    for name, entry in doc["policies"].items():
        assert list(entry["stress"]) == ran, name
        assert [entry["stress"][s]["n_draws"] for s in ran] == [5, 5]
        assert [len(entry["stress"][s]["draws"]) for s in ran] == [5, 5]

    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for name in REFUSED:
        reason = doc["stress_scenarios"][name]["refused"]
        assert f"{name}: refused: {reason}" in md
        assert f"{name}: refused: {reason}".replace("'", "&#x27;") in page
