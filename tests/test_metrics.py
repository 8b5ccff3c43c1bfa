"""envs.metrics: hand-computed values, edge cases, bad input, and agreement with empyrical-reloaded."""

from __future__ import annotations

import math
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from raytrade.envs import metrics as m
from raytrade.envs.evaluation.stats import sharpe_batch
from tests.shared_data import shared_data_dir, shared_data_reason

RTOL = 1e-10
ATOL = 1e-13

# A known equity path: 1.1, 0.88, 0.66, 0.99, 1.188, 1.0692 (peaks 1.1 then 1.188).
PATH = np.array([0.1, -0.2, -0.25, 0.5, 0.2, -0.1])
# Ends under water for 4 bars, longer than its earlier 1-bar drawdown:
# equity 1.1, 0.88, 1.32, 1.188, 1.0692, 0.96228, 1.010394.
TAIL_PATH = np.array([0.1, -0.2, 0.5, -0.1, -0.1, -0.1, 0.05])


# --------------------------------------------------------------------------- hand-computed


def test_drawdown_series_of_known_path() -> None:
    np.testing.assert_allclose(
        m.drawdown_series(PATH), [0.0, -0.2, -0.4, -0.1, 0.0, -0.1], rtol=1e-12, atol=1e-15
    )


def test_max_drawdown_of_known_path() -> None:
    assert m.max_drawdown(PATH) == pytest.approx(-0.4, rel=1e-12)


def test_max_drawdown_duration_of_known_path() -> None:
    # Bars 1, 2, 3 under the 1.1 peak; bar 4 makes a new high; bar 5 is under again (1 bar).
    assert m.max_drawdown_duration(PATH) == 3


def test_max_drawdown_duration_counts_unrecovered_tail() -> None:
    assert m.max_drawdown_duration(TAIL_PATH) == 4


def test_first_period_loss_is_a_drawdown() -> None:
    assert m.drawdown_series([-0.1, 0.05, 0.1])[0] == pytest.approx(-0.1)
    assert m.max_drawdown_duration([-0.1, 0.05, 0.1]) == 2


def test_total_and_annual_return_of_known_path() -> None:
    assert m.total_return(PATH) == pytest.approx(0.0692, rel=1e-12)
    assert m.annual_return(PATH, 252) == pytest.approx(1.0692 ** (252 / 6) - 1, rel=1e-12)


def test_cvar_is_mean_of_worst_k() -> None:
    # T = 41 -> k = floor(40 * 0.05) + 1 = 3 worst returns: -0.05, -0.04, -0.03.
    r = np.full(41, 0.01)
    r[[3, 17, 30]] = [-0.04, -0.05, -0.03]
    r[5] = -0.001
    assert m.cvar(r) == pytest.approx(-0.04, rel=1e-12)


def test_cvar_short_series_is_worst_return() -> None:
    assert m.cvar([0.02, -0.07, 0.01]) == -0.07


def test_tail_hit_rate_hand_computed() -> None:
    # t=3: VaR of [.01,.02,.03] = .01 + .1 * .01 = .011 -> -0.05 is a hit.
    # t=4: VaR of [-.05,.01,.02,.03] = -.05 + .15 * .06 = -.041 -> 0.04 is not.
    r = [0.01, 0.02, 0.03, -0.05, 0.04]
    assert m.tail_hit_rate(r, min_history=3) == pytest.approx(0.5)


def test_tail_hit_rate_matches_brute_force() -> None:
    r = np.random.default_rng(0).standard_t(3, size=400) * 0.01
    expected = np.mean([r[t] < np.percentile(r[:t], 5) for t in range(20, r.size)])
    assert m.tail_hit_rate(r) == pytest.approx(expected, abs=0)


def test_tail_hit_rate_fixed_threshold() -> None:
    assert m.tail_hit_rate([0.01, -0.03, -0.02, 0.0], threshold=-0.02) == 0.25


def test_hit_rate_ignores_zero_periods() -> None:
    assert m.hit_rate([0.01, 0.0, -0.02, 0.03, 0.0]) == pytest.approx(2 / 3)


def test_turnover_and_costs() -> None:
    assert m.turnover([0.5, 0.0, 1.5]) == pytest.approx(2 / 3)
    # 2-D signed per-asset trades: |0.3| + |-0.3| = 0.6, then 0.1.
    assert m.turnover([[0.3, -0.3], [0.0, 0.1]]) == pytest.approx(0.35)
    assert m.costs_paid([0.001, 0.002, -0.0005]) == pytest.approx(0.0025)
    assert m.costs_paid([]) == 0.0
    assert math.isnan(m.turnover([]))


def test_sharpe_and_sortino_hand_computed() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0])
    mean, std = 0.005, np.sqrt(((0.005**2) + 0.025**2 + 0.025**2 + 0.005**2) / 3)
    assert m.sharpe_ratio(r, 252) == pytest.approx(mean / std * np.sqrt(252), rel=1e-12)
    downside = np.sqrt(0.02**2 / 4) * np.sqrt(252)
    assert m.sortino_ratio(r, 252) == pytest.approx(mean * 252 / downside, rel=1e-12)
    assert m.sharpe_ratio(r, 252, risk_free=0.005) == pytest.approx(0.0, abs=1e-14)


# --------------------------------------------------------------------------- edge cases


NAN_KEYS_EMPTY = {"annual_return", "volatility", "sharpe", "sortino", "cvar_5", "tail_hit_rate", "hit_rate"}


@pytest.mark.filterwarnings("error")
def test_summarize_empty() -> None:
    s = m.summarize(np.array([]), 252)
    assert tuple(s) == m.SUMMARY_KEYS
    for key in NAN_KEYS_EMPTY | {"turnover", "costs_paid", "calmar"}:
        assert math.isnan(s[key]), key
    assert s["total_return"] == 0.0
    assert s["max_drawdown"] == 0.0
    assert s["max_drawdown_duration"] == 0.0


@pytest.mark.filterwarnings("error")
def test_summarize_constant_zero() -> None:
    s = m.summarize(np.zeros(50), 252, turnover=np.zeros(50), costs=np.zeros(50))
    expected_zero = [
        "total_return",
        "annual_return",
        "volatility",
        "max_drawdown",
        "max_drawdown_duration",
        "cvar_5",
        "tail_hit_rate",
        "turnover",
        "costs_paid",
    ]
    for key in expected_zero:
        assert s[key] == 0.0, key
    for key in ("sharpe", "sortino", "hit_rate", "calmar"):
        assert math.isnan(s[key]), key


@pytest.mark.filterwarnings("error")
def test_summarize_all_positive() -> None:
    r = np.linspace(0.001, 0.01, 30)
    s = m.summarize(r, 365)
    assert s["max_drawdown"] == 0.0
    assert s["max_drawdown_duration"] == 0.0
    assert math.isnan(s["calmar"])
    assert math.isnan(s["sortino"])  # no downside: undefined, not inf
    assert s["hit_rate"] == 1.0
    assert s["sharpe"] > 0


@pytest.mark.filterwarnings("error")
def test_summarize_constant_positive_sharpe_is_nan() -> None:
    s = m.summarize(np.full(10, 0.01), 252)
    assert math.isnan(s["sharpe"])
    assert s["volatility"] == 0.0


@pytest.mark.filterwarnings("error")
def test_a_series_constant_up_to_float_rounding_has_no_sharpe_ratio() -> None:
    bench = np.random.default_rng(0).normal(0.001, 0.01, 50)
    steady = (bench + 5e-4) - bench  # 5 bps a bar; std ~1e-19, not 0
    assert np.ptp(steady) > 0.0
    assert math.isnan(m.sharpe_ratio(steady, 252))  # was ~2.5e16
    assert np.isnan(sharpe_batch(np.stack([steady, np.full(50, 5e-4)]), 252)).all()
    assert bool(m.no_dispersion(steady))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(("relative_std", "defined"), [(1e-8, True), (1e-10, False)])
def test_the_dispersion_tolerance_is_relative_to_the_mean(relative_std: float, defined: bool) -> None:
    mean = 0.01
    wiggle = np.tile([1.0, -1.0], 20)  # mean 0, std(ddof=1) sqrt(40 / 39)
    r = mean + mean * relative_std * wiggle
    assert (relative_std > m.DISPERSION_RTOL) == defined  # one case either side of the rule
    point, batch = m.sharpe_ratio(r, 252), float(sharpe_batch(r[None], 252)[0])
    if defined:
        expected = np.sqrt(252) / (relative_std * np.sqrt(40 / 39))
        assert point == pytest.approx(expected, rel=1e-6) and batch == pytest.approx(point, rel=1e-12)
    else:
        assert math.isnan(point) and math.isnan(batch)
    assert m.annual_volatility(r, 252) > 0.0  # volatility still reports what it measured


@pytest.mark.filterwarnings("error")
def test_summarize_single_period() -> None:
    s = m.summarize(np.array([-0.02]), 252, turnover=[0.4], costs=[0.001])
    assert s["total_return"] == pytest.approx(-0.02)
    assert s["annual_return"] == pytest.approx(0.98**252 - 1)
    assert s["max_drawdown"] == pytest.approx(-0.02)
    assert s["max_drawdown_duration"] == 1.0
    assert s["cvar_5"] == pytest.approx(-0.02)
    assert s["hit_rate"] == 0.0
    assert s["turnover"] == pytest.approx(0.4)
    assert s["costs_paid"] == pytest.approx(0.001)
    for key in ("volatility", "sharpe", "sortino", "tail_hit_rate"):
        assert math.isnan(s[key]), key
    assert s["calmar"] == pytest.approx((0.98**252 - 1) / 0.02)


@pytest.mark.filterwarnings("error")
def test_annual_return_overflow_is_inf_without_warning() -> None:
    assert m.annual_return([10.0], 1e6) == math.inf


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ([0.01, 0.02, 0.0, np.nan], "returns[3] = nan"),
        ([0.01, np.inf], "returns[1] = inf"),
        ([0.01, -1.0, 0.2], "returns[1] = -1.0"),
        ([-1.5], "returns[0] = -1.5"),
    ],
)
def test_bad_returns_name_index_and_value(bad: list[float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        m.summarize(np.array(bad), 252)


def test_wrong_ndim_rejected() -> None:
    with pytest.raises(ValueError, match=r"returns must be 1-D, got shape \(2, 2\)"):
        m.sharpe_ratio(np.zeros((2, 2)), 252)


def test_bad_periods_per_year_rejected() -> None:
    with pytest.raises(ValueError, match="periods_per_year"):
        m.annual_return([0.01], 0)


def test_bad_turnover_and_costs_rejected() -> None:
    with pytest.raises(ValueError, match=r"traded\[1\] = -0.1"):
        m.turnover([0.2, -0.1])
    with pytest.raises(ValueError, match=r"costs\[0, 1\] = nan"):
        m.costs_paid([[0.0, np.nan]])
    with pytest.raises(ValueError, match="turnover has 2 rows, expected 3"):
        m.summarize([0.0, 0.01, 0.02], 252, turnover=[0.1, 0.2])


# --------------------------------------------------------------------------- vs empyrical


def _close(ours: float, theirs: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return math.isclose(ours, theirs, rel_tol=rtol, abs_tol=atol)


def assert_matches_empyrical(r: np.ndarray, ppy: int) -> None:
    """Every metric empyrical defines agrees; where empyrical says inf/nan ours says nan."""
    n = r.size
    checks: dict[str, tuple[float, float]] = {
        "annual_return": (m.annual_return(r, ppy), empyrical.annual_return(r, annualization=ppy)),
        "max_drawdown": (m.max_drawdown(r), empyrical.max_drawdown(r)),
        "cvar": (m.cvar(r), empyrical.conditional_value_at_risk(r)),
        "calmar": (m.calmar_ratio(r, ppy), empyrical.calmar_ratio(r, annualization=ppy)),
    }
    if n >= 1:
        checks["total_return"] = (m.total_return(r), empyrical.cum_returns_final(r))
        checks["downside_risk"] = (m.downside_risk(r, ppy), empyrical.downside_risk(r, annualization=ppy))
    if n >= 2:
        checks["volatility"] = (
            m.annual_volatility(r, ppy),
            empyrical.annual_volatility(r, annualization=ppy),
        )
        checks["sharpe"] = (m.sharpe_ratio(r, ppy), empyrical.sharpe_ratio(r, annualization=ppy))
        checks["sortino"] = (m.sortino_ratio(r, ppy), empyrical.sortino_ratio(r, annualization=ppy))
    for name, (ours, theirs) in checks.items():
        theirs = float(theirs)
        if n == 0 and name == "max_drawdown":
            assert ours == 0.0  # documented: empty path never left its start (empyrical: nan)
        elif name == "sharpe" and bool(m.no_dispersion(r)):
            assert math.isnan(ours)  # documented: constant up to rounding (empyrical: inf or ~1e16)
        elif math.isfinite(theirs):
            # Calmar divides by the max drawdown: when that is a few ulps, both libraries' rounding
            # of the drawdown dominates, so compare at the drawdown's own precision.
            tiny_dd = name == "calmar" and abs(m.max_drawdown(r)) < 1e-6
            rtol = 1e-6 if tiny_dd else RTOL
            assert _close(ours, theirs, rtol=rtol), f"{name}: ours {ours!r} vs empyrical {theirs!r}"
        else:
            assert math.isnan(ours), f"{name}: ours {ours!r} vs empyrical {theirs!r}"
    if n >= 1:
        np.testing.assert_allclose(
            m.drawdown_series(r), empyrical.stats.drawdown_series(r), rtol=RTOL, atol=ATOL
        )


# Non-zero magnitudes below 1e-9 are left out of the comparison: empyrical anchors equity at 100,
# which rounds a drawdown of one ulp (~2e-16) differently, so the two disagree on noise only.
# ``test_tiny_returns_never_warn`` covers that range.
realistic_returns = st.floats(min_value=-0.3, max_value=0.3, allow_nan=False).filter(
    lambda x: x == 0.0 or abs(x) >= 1e-9
)
returns_arrays = arrays(
    np.float64,
    st.integers(min_value=0, max_value=120),
    elements=st.one_of(realistic_returns, st.sampled_from([0.0, 0.01, -0.01])),
)
tiny_returns_arrays = arrays(
    np.float64,
    st.integers(min_value=0, max_value=40),
    elements=st.floats(min_value=-1e-150, max_value=1e-150, allow_nan=False),
)


@settings(max_examples=150, deadline=None)
@given(r=returns_arrays, ppy=st.sampled_from([252, 365, 12]))
def test_agrees_with_empyrical_on_random_series(r: np.ndarray, ppy: int) -> None:
    assert_matches_empyrical(r, ppy)


@pytest.mark.filterwarnings("error")
@settings(max_examples=60, deadline=None)
@given(r=tiny_returns_arrays)
def test_tiny_returns_never_warn(r: np.ndarray) -> None:
    s = m.summarize(r, 252)
    assert all(not math.isinf(v) for v in s.values())
    assert -1e-140 <= s["max_drawdown"] <= 0.0


@settings(max_examples=60, deadline=None)
@given(r=returns_arrays)
def test_drawdown_duration_matches_loop(r: np.ndarray) -> None:
    equity, peak, run, best = 1.0, 1.0, 0, 0
    for x in r:
        equity *= 1.0 + x
        peak = max(peak, equity)
        run = run + 1 if equity < peak else 0
        best = max(best, run)
    assert m.max_drawdown_duration(r) == best


def _real_series() -> list[tuple[str, np.ndarray, int]]:
    root = shared_data_dir()
    if root is None:
        pytest.skip(shared_data_reason())
    files: list[tuple[Path, int]] = [(p, 252) for p in sorted((root / "yahoo").glob("*.csv"))]
    files.append((root / "crypto" / "SUIUSDT.csv", 365))
    out = []
    for path, ppy in files:
        frame = pd.read_csv(path)
        close = frame[{c.lower(): c for c in frame.columns}["close"]].to_numpy(dtype=np.float64)
        out.append((path.stem, close[1:] / close[:-1] - 1.0, ppy))
    return out


def test_agrees_with_empyrical_on_real_series() -> None:
    series = _real_series()
    assert len(series) == 31
    for name, r, ppy in series:
        assert r.size > 500, name
        assert_matches_empyrical(r, ppy)
        s = m.summarize(r, ppy)
        unknown = {"turnover", "costs_paid"}  # not supplied: documented nan
        assert all(math.isfinite(v) for k, v in s.items() if k not in unknown), (name, s)
