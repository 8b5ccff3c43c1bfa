"""The spread-estimator benchmark's reference estimators against known answers (no timing: a
benchmark is not a test), and its quick run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.spread_estimators import (
    abdi_ranaldo_sq,
    edge_sq,
    main,
    simulated_bars,
    store_estimate_bps,
)


def _window(spread_bps: float, vol: float, days: int, seed: int) -> list[np.ndarray]:
    bars = simulated_bars(spread_bps, vol, days, np.random.default_rng(seed))
    return [bars[k].to_numpy() for k in ("open", "high", "low", "close")]


@pytest.mark.parametrize("estimator", [edge_sq, abdi_ranaldo_sq])
def test_a_wide_spread_on_a_quiet_price_is_recovered_over_a_long_window(estimator: object) -> None:
    """100 bps at 0.5 % daily volatility over 2,000 days: both moment estimators land within 10 %."""
    assert callable(estimator)
    s = np.sqrt(estimator(*_window(100.0, 0.005, 2000, seed=1))) * 1e4
    assert s == pytest.approx(100.0, rel=0.10)


def test_edge_of_a_price_that_never_moves_is_undefined() -> None:
    flat = [np.full(21, 100.0) for _ in range(4)]
    assert np.isnan(edge_sq(*flat))


def test_the_store_estimate_reads_volatility_as_spread() -> None:
    """The product's own estimate (clip-then-average Corwin-Schultz): 5 bps at 3 % daily volatility
    reads as over 50 bps, the bias the benchmark measures."""
    bars = simulated_bars(5.0, 0.03, 400, np.random.default_rng(2))
    assert np.median(store_estimate_bps(bars)) > 50.0


def test_the_quick_run_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "spread.json"
    main(["--quick", "--json", str(out), "--data", str(tmp_path / "absent")])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "spread_estimators" and report["cs_over_truth_liquid"] > 2.0
    assert "real" not in report and len(report["simulated"]) == 6
