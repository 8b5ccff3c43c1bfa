"""Stress paths: bootstrap pools and blocks, crises that reach their stated loss, rebuilt features, draws."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.evaluation.policies import buy_and_hold_policy
from raytrade.envs.market_data import MarketData, carry_close_through_holes
from raytrade.envs.rollout import replay_policy
from raytrade.envs.scenarios import (
    BootstrapScenario,
    CrisisScenario,
    ScenarioConfig,
    ScenarioDataError,
    apply_scenario,
    crisis_starts,
    inject_crisis,
    regime_block_bootstrap,
    row_regimes,
    scenario_draws,
    simple_returns,
)
from raytrade.envs.stress_features import (
    FORECAST_FEATURES,
    PRICE_FEATURES,
    price_features,
    with_stressed_features,
)
from raytrade.replay.features import FeatureConfig, build_features
from tests.test_scenarios import make_market_data

NAMED_CRISES = ("crisis_2008_like", "flash_crash")
FEATURES = ("ret_1", "vol_20", "drawdown", "vol_regime_code", "fc_mean")  # fc_mean: not price-derived


# --------------------------------------------------------------------------- bootstrap: properties


@st.composite
def bootstrap_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, bool, int | None, int]:
    """Random returns with ragged listings (NaN before each asset's first row), random regime runs."""
    t = draw(st.integers(20, 120))
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.02, size=(t, n))
    for j in range(n):
        r[: draw(st.integers(0, t // 2)), j] = np.nan
    if draw(st.booleans()):
        r[:, -1] = np.nan  # an asset never listed
    runs = rng.integers(0, 3, size=t // 5 + 1)
    codes = np.repeat(runs, 5)[:t]
    block_len = draw(st.integers(1, 6))
    regime = draw(st.sampled_from([None, 0, 1, 2]))
    return r, codes, block_len, draw(st.booleans()), regime, seed


@given(bootstrap_inputs())
def test_bootstrap_blocks_are_contiguous_never_repeat_and_stay_in_source_range(
    case: tuple[np.ndarray, np.ndarray, int, bool, int | None, int],
) -> None:
    r, codes, block_len, stationary, regime, seed = case
    try:
        draw = regime_block_bootstrap(
            r, codes, block_len, 200, np.random.default_rng(seed), regime, stationary
        )
    except ValueError as exc:
        assert "pool has" in str(exc) or "no row" in str(exc)
        return
    idx = draw.index
    assert (idx[1:] != idx[:-1]).all()  # no row twice in a row, by construction
    inside = ~draw.block_start[1:]
    np.testing.assert_array_equal(idx[1:][inside], idx[:-1][inside] + 1)  # blocks: contiguous source runs
    starts = np.flatnonzero(draw.block_start)
    same_regime = draw.regime[starts[1:]] == draw.regime[starts[:-1]]
    assert (idx[starts[1:]][same_regime] != idx[starts[:-1]][same_regime]).all()  # no block back-to-back
    if not stationary:
        lengths = np.diff(np.append(starts, idx.size))
        assert (lengths[:-1] <= block_len).all()
    lo, hi = _source_range(r)
    assert ((draw.returns >= lo) | np.isnan(draw.returns)).all()
    assert ((draw.returns <= hi) | np.isnan(draw.returns)).all()
    np.testing.assert_array_equal(np.isnan(draw.returns), np.isnan(r[idx]))  # masks travel with rows
    never = np.isnan(r).all(axis=0)
    assert np.isnan(draw.returns[:, never]).all()  # an asset with no history is never invented


def _source_range(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-asset min and max of the finite returns (NaN for an asset with none)."""
    seen = np.isfinite(r).any(axis=0)
    lo, hi = np.full(r.shape[1], np.nan), np.full(r.shape[1], np.nan)
    lo[seen], hi[seen] = np.nanmin(r[:, seen], axis=0), np.nanmax(r[:, seen], axis=0)
    return lo, hi


def test_fixed_blocks_stop_at_a_gap_in_the_source() -> None:
    r = np.random.default_rng(0).normal(0.0, 0.01, size=(60, 2))
    codes = np.zeros(60, dtype=np.int64)
    codes[[10, 11, 12, 13, 30, 31, 32, 33, 34]] = 2  # two crisis runs: 10..13 and 30..34
    draw = regime_block_bootstrap(r, codes, 3, 300, np.random.default_rng(1), regime=2, stationary=False)
    blocks = np.split(draw.index, np.flatnonzero(draw.block_start)[1:])
    assert {tuple(b.tolist()) for b in blocks} <= {
        (10, 11, 12),
        (11, 12, 13),
        (30, 31, 32),
        (31, 32, 33),
        (32, 33, 34),
    }


def test_small_pool_refused_with_regime_size_and_block_len() -> None:
    r = np.random.default_rng(0).normal(0.0, 0.01, size=(100, 3))
    codes = np.zeros(100, dtype=np.int64)
    codes[40:47] = 2
    with pytest.raises(ValueError, match=r"regime 2 \(crisis\) pool has 7 rows, fewer than min_pool_blocks=2 "
                       r"blocks of block_len=5 \(10 rows\)"):  # fmt: skip
        regime_block_bootstrap(r, codes, 5, 50, np.random.default_rng(0), regime=2)
    with pytest.raises(ValueError, match=r"regime 2 \(crisis\) pool has 7 rows"):
        regime_block_bootstrap(r, codes, 5, 50, np.random.default_rng(0), regime=None)  # every regime checked
    with pytest.raises(ValueError, match=r"allow 1 start\(s\) of a block of block_len=7"):
        regime_block_bootstrap(
            r, codes, 7, 50, np.random.default_rng(0), regime=2, stationary=False, min_pool_blocks=1
        )
    draw = regime_block_bootstrap(r, codes, 2, 50, np.random.default_rng(0), regime=2)
    assert set(draw.index.tolist()) <= set(range(40, 47))


def test_masked_asset_stays_masked_on_the_bootstrap_path() -> None:
    md = make_market_data()
    listed = md.listed.copy()
    listed[:, 2] = False  # never listed in the whole source
    md = replace(md, listed=listed)
    cfg = ScenarioConfig(scenarios={"choppy": BootstrapScenario(regime=1, block_len=5)})
    out = apply_scenario("choppy", md, np.random.default_rng(0), cfg)
    assert not out.listed[:, 2].any()
    np.testing.assert_array_equal(out.close[:, 2], md.close[0, 2])  # carried, never invented


# --------------------------------------------------------------------------- bootstrap: the failing case


def _ragged_crash_data() -> MarketData:
    """Ragged universe, a 6-row crisis regime holding a +20 %/day and a -40 %/day bar."""
    t, n = 300, 4
    rng = np.random.default_rng(11)
    log_r = rng.normal(0.0005, 0.01, size=(t, n))
    log_r[150, 1] = math.log(1.20)
    log_r[152, 2] = math.log(0.60)
    close = 50.0 * np.exp(np.cumsum(log_r, axis=0))
    listed = np.ones((t, n), dtype=bool)
    listed[:120, 3] = False  # lists mid-history
    listed[:60, 2] = False
    close[:120, 3] = close[120, 3]
    close[:60, 2] = close[60, 2]
    regime = np.zeros((t, n), dtype=np.int8)
    regime[149:155] = 2
    return replace(
        make_market_data(t=t, n=n, seed=11), open=close.copy(), close=close, listed=listed, regime_code=regime
    )


def test_regression_tiny_crisis_pool_is_refused_not_compounded() -> None:
    md = _ragged_crash_data()
    assert (row_regimes(md.regime_code, simple_returns(md)) == 2).sum() == 6
    with pytest.raises(ValueError, match=r"regime 2 \(crisis\) pool has 6 rows, fewer than min_pool_blocks=2 "
                       r"blocks of block_len=10 \(20 rows\)"):  # fmt: skip
        apply_scenario("bootstrap_crisis", md, np.random.default_rng(0))


def test_regression_short_blocks_over_a_tiny_pool_never_compound_one_row() -> None:
    md = _ragged_crash_data()
    cfg = ScenarioConfig(scenarios={"crisis": BootstrapScenario(regime=2, block_len=1, min_pool_blocks=3)})
    for seed in range(20):
        out = apply_scenario("crisis", md, np.random.default_rng(seed), cfg)
        growth = np.where(out.listed[1:], out.close[1:] / out.close[:-1], 1.0)
        assert not ((growth[1:] > 1.19) & (growth[:-1] > 1.19)).any()  # +20 % never twice in a row
        assert not ((growth[1:] < 0.61) & (growth[:-1] < 0.61)).any()
        lo, hi = _source_range(simple_returns(md))
        r = simple_returns(out)
        assert ((r >= lo - 1e-12) | np.isnan(r)).all() and ((r <= hi + 1e-12) | np.isnan(r)).all()


# --------------------------------------------------------------------------- bootstrap: halts and listings

HALT, REOPEN, LISTING = slice(150, 153), 153, 140


def _halted_crash_data() -> MarketData:
    """A crisis pool (rows 130-179) in which asset 1 halts for bars 150-152 and reopens 40 % lower
    (open 38 % lower), and asset 2 lists at bar 140; hole prices carried as the loader carries them."""
    t, n = 300, 3
    rng = np.random.default_rng(5)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(t, n)), axis=0))
    close[REOPEN:, 1] *= 0.60 * close[HALT.start - 1, 1] / close[REOPEN, 1]  # -40 % across the halt
    open_ = np.vstack([close[:1], close[:-1]])
    open_[REOPEN, 1] = 0.62 * close[HALT.start - 1, 1]
    listed = np.ones((t, n), dtype=bool)
    listed[HALT, 1] = False
    listed[:LISTING, 2] = False
    close[:LISTING, 2] = open_[:LISTING, 2] = open_[LISTING, 2]  # back-filled before the listing
    open_, close = carry_close_through_holes(open_, close, listed)
    regime = np.zeros((t, n), dtype=np.int8)
    regime[130:180] = 2
    md = make_market_data(t=t, n=n, seed=5)
    return replace(md, open=open_, close=close, listed=listed, regime_code=regime)


def test_a_reopen_bar_carries_the_move_across_its_halt_into_the_crisis_pool() -> None:
    md = _halted_crash_data()
    r = simple_returns(md)
    assert r[REOPEN, 1] == pytest.approx(-0.40, rel=1e-12)  # was NaN: the halt's gap was dropped
    assert np.isnan(r[HALT, 1]).all()  # no bar, no return
    assert r[REOPEN + 1, 1] == pytest.approx(md.close[REOPEN + 1, 1] / md.close[REOPEN, 1] - 1.0)
    assert np.isnan(r[: LISTING + 1, 2]).all() and np.isfinite(r[LISTING + 1 :, 2]).all()  # listing: none
    pool = row_regimes(md.regime_code, r) == 2
    assert pool[REOPEN] and np.nanmin(r[pool, 1]) == pytest.approx(-0.40, rel=1e-12)
    # the move is measured from the last real close, whatever a hand-built hole is priced at
    junk = md.close.copy()
    junk[HALT, 1] = 1.0
    assert simple_returns(replace(md, close=junk))[REOPEN, 1] == pytest.approx(-0.40, rel=1e-12)


def test_a_bootstrap_crisis_path_can_carry_a_halt_gap_as_one_bar() -> None:
    md = _halted_crash_data()
    source = simple_returns(md)
    carried = 0
    for seed in range(10):
        out = apply_scenario("bootstrap_crisis", md, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)  # the draw apply_scenario makes
        draw = regime_block_bootstrap(source, md.regime_code, 10, md.n_steps, rng, regime=2)
        np.testing.assert_array_equal(out.listed, np.isfinite(draw.returns))
        at = np.flatnonzero(draw.index == REOPEN)
        prev = np.concatenate([md.close[:1, 1], out.close[:-1, 1]])  # the path starts from close[0]
        assert out.listed[at, 1].all()  # the reopen is a real bar of the path
        np.testing.assert_allclose(out.close[at, 1] / prev[at], 0.60, rtol=1e-12)
        np.testing.assert_allclose(out.open[at, 1] / prev[at], 0.62, rtol=1e-12)
        assert not out.listed[draw.index == LISTING, 2].any()  # a listing bar has no move to draw
        carried += at.size
    assert carried > 0  # the -40 % enters crisis paths (none did when the reopen was dropped)


def test_a_reopen_after_a_halt_before_the_window_is_measured_from_close_before() -> None:
    md = _halted_crash_data()
    window = slice(151, 200)  # asset 1 is halted on the window's first two bars
    close_before, listed_before = md.close[119:151], md.listed[119:151]
    cut = replace(
        md,
        ts=md.ts[window], open=md.open[window], close=md.close[window], listed=md.listed[window],
        spread_bps=md.spread_bps[window], dollar_volume=md.dollar_volume[window],
        features=md.features[window], regime_code=md.regime_code[window],
        close_before=close_before, listed_before=listed_before,
    )  # fmt: skip
    r = simple_returns(cut)
    assert r[REOPEN - 151, 1] == pytest.approx(-0.40, rel=1e-12)
    assert np.isnan(r[0]).all()  # row 0: no bar before it to draw with
    no_history = replace(cut, close_before=None, listed_before=None)
    assert np.isnan(simple_returns(no_history)[REOPEN - 151, 1])  # its first bar here: a listing


# --------------------------------------------------------------------------- crises reach their stated loss


def _rallying_data(t: int = 400, n: int = 6, seed: int = 0) -> MarketData:
    """+0.5 %/bar trends with a common factor: the unshocked window rallies (the failing case's setup)."""
    rng = np.random.default_rng(seed)
    log_r = 0.005 + 0.01 * rng.normal(size=(t, 1)) + 0.01 * rng.normal(size=(t, n))
    close = 100.0 * np.exp(np.cumsum(log_r, axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    md = make_market_data(t=t, n=n, seed=seed)
    return replace(md, open=prev, close=close, listed=np.ones((t, n), dtype=bool))


def _window(sc: CrisisScenario, md: MarketData, out: MarketData) -> tuple[int, int]:
    """The rows ``start .. end - 1`` a draw ``out`` of ``sc`` shocked in ``md``: from the first row
    whose close it changed (each draw places the window elsewhere: ``start_jitter``)."""
    start = int(np.flatnonzero((out.close != md.close).any(axis=1))[0])
    lo = min(max(int((sc.start_frac - sc.start_jitter) * md.n_steps), 1), md.n_steps - sc.length)
    hi = min(max(int((sc.start_frac + sc.start_jitter) * md.n_steps), 1), md.n_steps - sc.length)
    assert lo <= start <= hi
    return start, start + sc.length


def _ew_drawdown(close: np.ndarray, listed: np.ndarray, start: int, end: int) -> float:
    """Peak-to-trough loss of the equal-weight index of assets listed from ``start - 1`` to ``end - 1``."""
    eligible = listed[start - 1 : end].all(axis=0)
    index = (close[start - 1 : end, eligible] / close[start - 1, eligible]).mean(axis=1)
    return float(1.0 - (index / np.maximum.accumulate(index)).min())


def _buy_and_hold(md: MarketData) -> float:
    rollout = replay_policy(md, buy_and_hold_policy(md, 0), SimulatorConfig(), n_envs=1)
    return float(np.prod(1.0 + rollout.returns[0]) - 1.0)


@pytest.mark.parametrize("name", NAMED_CRISES)
def test_named_crisis_reaches_its_loss_on_every_draw(name: str) -> None:
    md = _rallying_data()
    sc = ScenarioConfig().get(name)
    assert isinstance(sc, CrisisScenario) and sc.loss is not None
    unshocked = _buy_and_hold(md)
    starts = set()
    for out in scenario_draws(name, md, 3):
        start, end = _window(sc, md, out)
        starts.add(start)
        assert _ew_drawdown(md.close, md.listed, start, end) < sc.loss  # the unshocked window is no crisis
        assert _ew_drawdown(out.close, out.listed, start, end) >= sc.loss - 1e-12
        assert _buy_and_hold(out) < unshocked
    assert len(starts) > 1  # the draws are not one path: each places the crisis elsewhere


@pytest.mark.parametrize("name", NAMED_CRISES)
def test_named_crisis_draws_differ_where_the_data_is_already_as_correlated_as_its_target(name: str) -> None:
    """Assets moving together (correlation 1, above any target) leave the correlation factor nothing
    to do: with the window pinned every draw is the same path (what a reviewer saw on a real store);
    each draw's window start is what makes the draws a spread."""
    md = _rallying_data()
    log_r = np.log(md.close[1:, :1] / md.close[:-1, :1]) + np.zeros((1, md.n_assets))
    close = np.vstack(
        [md.close[:1, :1] + np.zeros((1, md.n_assets)), md.close[:1, :1] * np.exp(np.cumsum(log_r, 0))]
    )
    together = replace(md, open=np.vstack([close[:1], close[:-1]]), close=close)
    sc = ScenarioConfig().get(name)
    assert isinstance(sc, CrisisScenario)
    pinned = ScenarioConfig(scenarios={name: sc.model_copy(update={"start_jitter": 0.0})}, draws=4)
    assert len({d.close.tobytes() for d in scenario_draws(name, together, 3, pinned)}) == 1
    draws = scenario_draws(name, together, 3, ScenarioConfig(draws=4))
    assert len({_window(sc, together, d)[0] for d in draws}) == 4
    returns = {round(_buy_and_hold(d), 12) for d in draws}
    assert len(returns) > 1  # buy_and_hold, no randomness of its own, spreads over the draws


@pytest.mark.parametrize("t_total", [130, 258, 307, 800])
def test_a_jittered_crisis_start_favours_no_start_where_the_window_barely_fits(t_total: int) -> None:
    """Clipping a drawn start piled every draw past the last start that fits onto it: 43 % of
    ``crisis_2008_like``'s draws on a 258-bar fold, every draw on 121-160 bars (one path again)."""
    sc = ScenarioConfig().get("crisis_2008_like")
    assert isinstance(sc, CrisisScenario)
    rng = np.random.default_rng(0)
    starts = np.array([crisis_starts(sc, t_total, 1, rng)[0] for _ in range(4000)])
    last = t_total - sc.length
    lo = max(int((sc.start_frac - sc.start_jitter) * t_total), 1)
    hi = min(int((sc.start_frac + sc.start_jitter) * t_total), last)
    if lo > hi:  # the window fits nowhere near the middle: anywhere it fits
        lo, hi = 1, last
    assert starts.min() == lo and starts.max() == hi  # every start in range is reached, none outside
    counts = np.bincount(starts - lo, minlength=hi - lo + 1)
    assert counts.max() < 3.0 * len(starts) / (hi - lo + 1)  # uniform: no start takes a pile


def test_the_draws_of_a_jittered_crisis_start_on_different_bars_while_there_are_any() -> None:
    sc = ScenarioConfig().get("flash_crash")
    assert isinstance(sc, CrisisScenario)
    for seed in range(50):  # 26 starts (12 .. 37 of 50 bars): independent draws met on one often
        five = crisis_starts(sc, 50, 5, np.random.default_rng(seed))
        assert len(set(five)) == 5 and min(five) >= 12 and max(five) <= 37
    every = crisis_starts(sc, 50, 30, np.random.default_rng(0))  # more draws than starts: each once first
    assert sorted(every[:26]) == list(range(12, 38)) and len(set(every[26:])) == 4
    md = _rallying_data(t=110)
    draws = scenario_draws("flash_crash", md, 5, ScenarioConfig(draws=5))
    assert len({_window(sc, md, d)[0] for d in draws}) == 5
    with pytest.raises(ValueError, match="start=3 places a crisis window; scenario 'bootstrap_crisis'"):
        apply_scenario("bootstrap_crisis", md, np.random.default_rng(0), start=3)
    with pytest.raises(
        ScenarioDataError, match=r"the data has 3 bars; the scenario window \(length=3\) needs 4"
    ):
        crisis_starts(sc, 3, 2, np.random.default_rng(0))  # no start fits: refused, not bar 0
    with pytest.raises(ScenarioDataError, match=r"the data has 110 bars; .*\(length=120\) needs 121"):
        scenario_draws("crisis_2008_like", md, 5)  # a split shorter than the window: the data's refusal


def test_crisis_window_total_is_the_stated_loss_or_the_worse_original() -> None:
    rng = np.random.default_rng(2)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(200, 3)), axis=0))
    close[100:150, 2] = close[99, 2] * np.exp(np.linspace(-0.02, -1.0, 50))  # already loses 63 %
    out = inject_crisis(
        close, close, np.ones_like(close), start=100, length=50, vol_mult=3.0, corr_target=0.7,
        spread_mult=1.0, drift=0.0, rng=np.random.default_rng(0), loss=0.25,
    )  # fmt: skip
    total = np.log(out.close[149] / out.close[99])
    np.testing.assert_allclose(
        total, [math.log(0.75), math.log(0.75), math.log(close[149, 2] / close[99, 2])]
    )


def test_loss_and_drift_are_exclusive() -> None:
    with pytest.raises(pydantic.ValidationError, match="drift=-0.01 and loss=0.2 are exclusive"):
        CrisisScenario(length=10, loss=0.2, vol_mult=2.0, drift=-0.01)
    close = np.full((20, 2), 100.0)
    with pytest.raises(ValueError, match="loss must be in"):
        inject_crisis(
            close, close, close, start=5, length=5, vol_mult=1.0, corr_target=None, spread_mult=1.0,
            drift=0.0, rng=np.random.default_rng(0), loss=1.0,
        )  # fmt: skip


# --------------------------------------------------------------------------- rebuilt features


def _bars(md: MarketData) -> pd.DataFrame:
    """Long bars of ``md``'s listed cells, as ingest reads them."""
    t, n = np.nonzero(md.listed)
    return pd.DataFrame(
        {
            "symbol": np.asarray(md.symbols)[n],
            "ts": pd.DatetimeIndex(md.ts[t]).tz_localize("UTC"),
            "open": md.open[t, n],
            "high": np.maximum(md.open, md.close)[t, n],
            "low": np.minimum(md.open, md.close)[t, n],
            "close": md.close[t, n],
            "volume": 1e6,
            "asset_class": "equity",
        }
    )


def _wide(features: pd.DataFrame, name: str, md: MarketData) -> np.ndarray:
    frame = features.assign(ts=features["ts"].dt.tz_convert(None))
    wide = frame.pivot(index="ts", columns="symbol", values=name)
    return wide.reindex(index=md.ts, columns=list(md.symbols)).to_numpy(dtype=np.float64)


def test_price_features_equal_ingest_on_unshocked_data() -> None:
    md = make_market_data(t=400)
    ingest = build_features(_bars(md))
    ours = price_features(md.close, md.listed, md.ts, md.symbols, FeatureConfig())
    for name in PRICE_FEATURES:
        np.testing.assert_allclose(
            ours[name], _wide(ingest, name, md), rtol=1e-12, equal_nan=True, err_msg=name
        )


def _with_named_features(md: MarketData) -> MarketData:
    values = price_features(md.close, md.listed, md.ts, md.symbols, FeatureConfig())
    stack = np.stack([np.nan_to_num(values.get(f, np.full(md.close.shape, 0.5))) for f in FEATURES], axis=2)
    return replace(md, features=stack.astype(np.float32), feature_names=FEATURES)


def test_crisis_rebuilds_price_features_from_the_window_start_with_warmup() -> None:
    history = _with_named_features(_rallying_data(t=600))
    window = _slice(history, 300, 600)
    out = apply_scenario("crisis_2008_like", window, np.random.default_rng(0), history=history)
    start, _ = _window(ScenarioConfig().get("crisis_2008_like"), window, out)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out.features[:start], window.features[:start])
    np.testing.assert_array_equal(out.features[:, :, 4], window.features[:, :, 4])  # fc_mean kept
    joined = np.vstack([history.close[:300], out.close])
    expected = price_features(
        joined, np.ones_like(joined, dtype=bool), history.ts, history.symbols, FeatureConfig()
    )
    for k, name in enumerate(FEATURES[:4]):
        np.testing.assert_allclose(
            out.features[start:, :, k], expected[name][300 + start :], rtol=1e-6, atol=1e-7
        )
    np.testing.assert_allclose(
        out.features[start + 1 :, :, 0], np.log(out.close[start + 1 :] / out.close[start:-1]), rtol=1e-6
    )
    assert (
        out.features[start + 60, :, 1].mean() > 2.0 * window.features[start + 60, :, 1].mean()
    )  # 3x vol seen
    assert out.features[start + 119, :, 2].max() <= -0.2  # the crash is in the drawdown a policy sees


def test_bootstrap_rebuilds_price_features_of_the_drawn_path() -> None:
    history = _with_named_features(_rallying_data(t=500))
    codes = np.zeros_like(history.regime_code)
    codes[100:220] = 2
    history = replace(history, regime_code=codes)
    window = _slice(history, 400, 500)
    out = apply_scenario("bootstrap_crisis", window, np.random.default_rng(0), history=history)
    np.testing.assert_allclose(
        out.features[1:, :, 0], np.log(out.close[1:] / out.close[:-1]), rtol=1e-5, atol=1e-7
    )
    peak = np.maximum(history.close[:400].max(axis=0), np.maximum.accumulate(out.close, axis=0))
    np.testing.assert_allclose(out.features[:, :, 2], out.close / peak - 1.0, rtol=1e-5, atol=1e-7)


def test_with_stressed_features_leaves_unknown_columns_alone() -> None:
    md = make_market_data()  # features f0, f1: nothing to rebuild
    assert with_stressed_features(md, 0) is md
    with pytest.raises(ValueError, match="from_row=401"):
        with_stressed_features(_with_named_features(md), 401)


def _slice(md: MarketData, lo: int, hi: int) -> MarketData:
    sl = slice(lo, hi)
    return replace(
        md, ts=md.ts[sl], open=md.open[sl], close=md.close[sl], listed=md.listed[sl],
        spread_bps=md.spread_bps[sl], dollar_volume=md.dollar_volume[sl], features=md.features[sl],
        regime_code=md.regime_code[sl],
    )  # fmt: skip


# --------------------------------------------------------------------------- several draws


def test_scenario_draws_are_distinct_seeded_and_as_many_as_configured() -> None:
    md = make_market_data()
    cfg = ScenarioConfig(draws=4)
    a = scenario_draws("crisis_2008_like", md, [7, 0], cfg)
    b = scenario_draws("crisis_2008_like", md, [7, 0], cfg)
    assert len(a) == 4 and ScenarioConfig().draws == 5
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.close, y.close)
    closes = [d.close.tobytes() for d in a]
    assert len(set(closes)) == 4


def test_every_vol_spike_draw_is_a_different_month_of_the_same_shock() -> None:
    # The vol spike has no random factor (no correlation target, no loss): without a moving window
    # its K draws were one path K times.
    md = _rallying_data(t=400)
    sc = ScenarioConfig().get("vol_spike")
    assert isinstance(sc, CrisisScenario) and sc.start_jitter > 0
    draws = scenario_draws("vol_spike", md, 11, ScenarioConfig(draws=5))
    starts = []
    for out in draws:
        changed = np.flatnonzero((out.close != md.close).any(axis=1))
        starts.append(int(changed[0]))
        first, last = (
            int((sc.start_frac - sc.start_jitter) * 400),
            int((sc.start_frac + sc.start_jitter) * 400),
        )
        assert first <= starts[-1] <= last
        log_r = np.log(out.close[1:] / out.close[:-1])[starts[-1] - 1 : starts[-1] - 1 + sc.length]
        base = np.log(md.close[1:] / md.close[:-1])[starts[-1] - 1 : starts[-1] - 1 + sc.length]
        np.testing.assert_allclose(log_r.std(axis=0, ddof=1), sc.vol_mult * base.std(axis=0, ddof=1))
    assert len(set(starts)) == 5


def test_a_crisis_window_widens_the_spread_the_policy_observes_as_much_as_the_one_it_pays() -> None:
    md = make_market_data(t=200, n=3)
    md = replace(
        md,
        features=(md.spread_bps[:, :, None] * 1e-4).astype(np.float32),
        feature_names=("spread_bps",),
    )
    sc = CrisisScenario(length=10, vol_mult=1.0, spread_mult=4.0, start_frac=0.5)
    out = apply_scenario("x", md, np.random.default_rng(0), ScenarioConfig(scenarios={"x": sc}))
    np.testing.assert_allclose(out.features[:, :, 0], out.spread_bps * 1e-4, rtol=1e-6)
    np.testing.assert_allclose(out.spread_bps[100:110], 4.0 * md.spread_bps[100:110])
    np.testing.assert_array_equal(out.spread_bps[:100], md.spread_bps[:100])


def test_the_bar_range_feature_follows_the_rebuilt_volatility() -> None:
    md = _rallying_data(t=300, n=3)
    vol = price_features(md.close, md.listed, md.ts, md.symbols, FeatureConfig())["vol_20"]
    atr = np.full(md.close.shape, 0.02)  # the stored range, in the loader's units
    names = ("vol_20", "atr_pct_14")
    md = replace(md, features=np.stack([np.nan_to_num(vol), atr], axis=2), feature_names=names)
    sc = CrisisScenario(length=30, vol_mult=3.0, start_frac=0.5)
    out = apply_scenario("x", md, np.random.default_rng(0), ScenarioConfig(scenarios={"x": sc}))
    start = 150
    np.testing.assert_array_equal(out.features[:start, :, 1], atr[:start])
    ratio = out.features[start:, :, 0] / md.features[start:, :, 0]
    np.testing.assert_allclose(out.features[start:, :, 1], 0.02 * ratio, rtol=1e-9)
    assert out.features[start + 29, :, 1].min() > 2.0 * 0.02  # 3x volatility: a wider range seen


# --------------------------------------------------------------------------- real bars


@pytest.fixture(scope="module")
def real_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.csv_dir import read_csv_folder

    root = tmp_path_factory.mktemp("yahoo") / "store"
    ingest_frames(root, read_csv_folder(shared_data / "yahoo"), show_progress=False)
    return root


@pytest.mark.parametrize("name", NAMED_CRISES)
def test_named_crisis_on_real_bars_reaches_its_loss_and_lowers_buy_and_hold(
    real_store: Path, name: str
) -> None:
    from raytrade.envs.replay_loader import load_market_data

    history = load_market_data(real_store, "all")
    window = load_market_data(real_store, "test")
    history = _slice(history, 0, int(np.searchsorted(history.ts, window.ts[-1], side="right")))
    sc = ScenarioConfig().get(name)
    assert isinstance(sc, CrisisScenario) and sc.loss is not None
    unshocked = _buy_and_hold(window)
    for out in scenario_draws(name, window, 0, history=history):
        start, end = _window(sc, window, out)
        assert _ew_drawdown(out.close, out.listed, start, end) >= sc.loss - 1e-12
        assert _buy_and_hold(out) < unshocked
        k = window.feature_names.index("drawdown")
        assert out.features[end - 1, :, k].mean() < window.features[end - 1, :, k].mean()


def test_bootstrap_crisis_on_real_bars_refuses_the_tiny_crisis_pool(real_store: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    history = load_market_data(real_store, "all")
    window = load_market_data(real_store, "test")
    with pytest.raises(
        ValueError, match=r"regime 2 \(crisis\) pool has \d+ rows, fewer than min_pool_blocks=2"
    ):
        apply_scenario("bootstrap_crisis", window, np.random.default_rng(0), history=history)


# --------------------------------------------------------------------------- the harness, and warm-up


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    root = tmp_path_factory.mktemp("stress") / "store"
    market = generate(n_symbols=4, years=2.0, seed=5)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return root


IDENTITY = ScenarioConfig(
    scenarios={"identity": CrisisScenario(start_frac=0.0, length=40, vol_mult=1.0, regime_label=None)},
    draws=1,
)
"""A crisis that changes nothing (volatility x1, own trend): rebuilt features must equal the stored ones."""


def test_identity_shock_reproduces_the_stored_features_with_warmup(synthetic_root: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    history = load_market_data(synthetic_root, "all")
    window = load_market_data(synthetic_root, "test")
    out = apply_scenario("identity", window, np.random.default_rng(0), IDENTITY, history=history)
    np.testing.assert_allclose(out.close, window.close, rtol=1e-12)
    rebuilt = [k for k, name in enumerate(window.feature_names) if name in PRICE_FEATURES]
    assert len(rebuilt) == len(PRICE_FEATURES)
    np.testing.assert_allclose(
        out.features[:, :, rebuilt], window.features[:, :, rebuilt], rtol=1e-5, atol=1e-6
    )
    # the baseline forecaster's columns too (the store has no imported forecast: every row is its)
    assert window.forecast_fallback is not None and window.forecast_fallback[window.listed].all()
    forecasts = [k for k, name in enumerate(window.feature_names) if name in FORECAST_FEATURES]
    assert len(forecasts) == 8  # fc_mean/std/q05/q95/calib_resid/edge_bps, the gate, kelly_lite
    np.testing.assert_allclose(
        out.features[:, :, forecasts], window.features[:, :, forecasts], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(out.feature_missing, window.feature_missing)
    cold = apply_scenario("identity", window, np.random.default_rng(0), IDENTITY)  # no warm-up: differs
    k = window.feature_names.index("vol_60")
    assert not np.allclose(cold.features[1:30, :, k], window.features[1:30, :, k], atol=1e-6)


def test_harness_rebuilds_scenario_features_with_the_store_history(synthetic_root: Path) -> None:
    from raytrade.envs.evaluation.harness import EvaluationConfig, prepare

    plan = prepare(
        synthetic_root, ["inverse_vol"], EvaluationConfig(scenarios=("identity",), scenario_config=IDENTITY)
    )
    (draw,) = plan.scenario_draws["identity"]
    assert plan.split_data.feature_names == ("vol_20",)
    np.testing.assert_allclose(draw.features, plan.split_data.features, rtol=1e-5, atol=1e-6)


def test_harness_runs_every_draw_of_every_scenario(synthetic_root: Path) -> None:
    from raytrade.envs.evaluation.harness import EvaluationConfig, evaluate, prepare

    cfg = EvaluationConfig(scenarios=("flash_crash",), seeds=(0,), scenario_config=ScenarioConfig(draws=3))
    plan = prepare(synthetic_root, ["buy_and_hold"], cfg)
    draws = plan.scenario_draws["flash_crash"]
    assert len(draws) == 3
    assert len({d.close.tobytes() for d in draws}) == 3
    result = evaluate(plan).policies["buy_and_hold"]
    runs = result.stress_draws["flash_crash"]
    assert len(runs) == 3
    assert len({r.returns.tobytes() for r in runs}) == 3


def test_features_are_rebuilt_with_the_configured_windows() -> None:
    md = _with_named_features(_rallying_data(t=300))
    short = FeatureConfig(vol_short=5)
    cfg = ScenarioConfig(scenarios=IDENTITY.scenarios, feature_config=short)
    out = apply_scenario("identity", md, np.random.default_rng(0), cfg)
    expected = price_features(md.close, md.listed, md.ts, md.symbols, short)["vol_20"]
    np.testing.assert_allclose(out.features[1:, :, 1], np.nan_to_num(expected[1:]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(out.features[30:, :, 1], md.features[30:, :, 1], atol=1e-4)
