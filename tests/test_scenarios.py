"""envs.scenarios: determinism, no mutation, shock sizes, exact spreads, regime-pure bootstrap, masks."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pydantic
import pytest

from raytrade.envs.market_data import MarketData
from raytrade.envs.scenarios import (
    BootstrapScenario,
    CrisisPrices,
    CrisisScenario,
    ScenarioConfig,
    apply_scenario,
    inject_crisis,
    mean_pairwise_corr,
    regime_block_bootstrap,
    row_regimes,
    simple_returns,
)

SCENARIO_NAMES = ("crisis_2008_like", "flash_crash", "vol_spike", "bootstrap_crisis")


def _prices(t: int, n: int, seed: int, vol: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Independent log-normal random walks: ``close`` and an ``open`` with a small overnight gap."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, size=(t, n)), axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, vol / 4, size=(t, n)))
    return open_, close


def _regime_path(t: int) -> np.ndarray:
    """calm 0..149, crisis 150..219, choppy 220..299, calm 300..: only 0->2, 2->1, 1->0 switches."""
    path = np.zeros(t, dtype=np.int8)
    path[150:220] = 2
    path[220:300] = 1
    return path


def make_market_data(t: int = 400, n: int = 5, seed: int = 0) -> MarketData:
    open_, close = _prices(t, n, seed)
    listed = np.ones((t, n), dtype=bool)
    listed[:100, n - 1] = False  # the last asset lists at bar 100; earlier prices are back-filled
    open_[:100, n - 1] = open_[100, n - 1]
    close[:100, n - 1] = open_[100, n - 1]
    regime = np.repeat(_regime_path(t)[:, None], n, axis=1)
    regime[:100, n - 1] = 2  # meaningless codes of an unlisted asset: must not sway the row's regime
    rng = np.random.default_rng(seed + 1)
    return MarketData(
        ts=np.datetime64("2024-01-01", "us") + np.arange(t) * np.timedelta64(1, "D"),
        symbols=tuple(f"S{i}" for i in range(n)),
        asset_class=("equity",) * n,
        open=open_,
        close=close,
        listed=listed,
        spread_bps=rng.uniform(2.0, 30.0, size=(t, n)),
        dollar_volume=rng.uniform(1e6, 1e8, size=(t, n)),
        features=rng.normal(size=(t, n, 2)).astype(np.float32),
        feature_names=("f0", "f1"),
        regime_code=regime,
    )


def _freeze(md: MarketData) -> MarketData:
    """Make every array read-only so any in-place write raises."""
    for field in dataclasses.fields(md):
        value = getattr(md, field.name)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return md


def _assert_md_equal(a: MarketData, b: MarketData) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        else:
            assert x == y, field.name


def _log_returns(close: np.ndarray) -> np.ndarray:
    return np.log(close[1:] / close[:-1])


def _long_shock(open_: np.ndarray, close: np.ndarray, corr_target: float | None, seed: int) -> CrisisPrices:
    """Bars 200..999 at 3x volatility: long enough for statistical checks."""
    return inject_crisis(
        open_, close, np.ones_like(close), start=200, length=800, vol_mult=3.0, corr_target=corr_target,
        spread_mult=4.0, drift=0.0, rng=np.random.default_rng(seed),
    )  # fmt: skip


# --------------------------------------------------------------------------- determinism, purity


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_apply_scenario_is_deterministic_and_pure(name: str) -> None:
    md = _freeze(make_market_data())
    reference = make_market_data()
    a = apply_scenario(name, md, np.random.default_rng(7))
    b = apply_scenario(name, md, np.random.default_rng(7))
    _assert_md_equal(a, b)
    _assert_md_equal(md, reference)  # read-only arrays and identical values: nothing was written
    assert isinstance(a, MarketData)
    assert (a.open > 0).all() and (a.close > 0).all()
    assert np.isfinite(a.open).all() and np.isfinite(a.close).all()


def test_different_seeds_differ() -> None:
    md = make_market_data()
    a = apply_scenario("bootstrap_crisis", md, np.random.default_rng(1))
    b = apply_scenario("bootstrap_crisis", md, np.random.default_rng(2))
    assert not np.array_equal(a.close, b.close)


def test_inject_crisis_does_not_mutate_inputs() -> None:
    open_, close = _prices(1200, 4, seed=3)
    spread = np.full_like(close, 5.0)
    high, low = np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99
    arrays = [open_, close, spread, high, low]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    inject_crisis(
        open_, close, spread, start=200, length=800, vol_mult=3.0, corr_target=0.5, spread_mult=4.0,
        drift=0.0, rng=np.random.default_rng(0), high=high, low=low,
    )  # fmt: skip
    for a, c in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------- crisis shock sizes


def test_vol_ratio_is_exact_without_correlation_shock() -> None:
    open_, close = _prices(1200, 6, seed=4)
    out = _long_shock(open_, close, None, seed=0)
    window = slice(200 - 1, 200 + 800 - 1)  # log-return rows of bars 200..999
    ratio = _log_returns(out.close)[window].std(axis=0) / _log_returns(close)[window].std(axis=0)
    np.testing.assert_allclose(ratio, 3.0, rtol=1e-9)


def test_vol_ratio_and_correlation_reach_targets() -> None:
    open_, close = _prices(1200, 10, seed=5)
    window = slice(200 - 1, 200 + 800 - 1)
    before = _log_returns(close)[window]
    out = _long_shock(open_, close, 0.6, seed=1)
    after = _log_returns(out.close)[window]
    ratio = after.std(axis=0) / before.std(axis=0)
    # Statistical: 800 samples, blended factor variance ~1 +- 0.05.
    np.testing.assert_allclose(ratio, 3.0, rtol=0.1)
    assert ratio.mean() == pytest.approx(3.0, rel=0.05)
    assert abs(mean_pairwise_corr(before)) < 0.05
    assert mean_pairwise_corr(after) == pytest.approx(0.6, abs=0.1)


def test_correlation_never_lowered() -> None:
    rng = np.random.default_rng(6)
    common = rng.normal(0, 0.01, size=(1200, 1))
    close = 100 * np.exp(np.cumsum(common + rng.normal(0, 0.005, size=(1200, 5)), axis=0))
    window = slice(199, 999)
    c0 = mean_pairwise_corr(_log_returns(close)[window])
    assert c0 > 0.6
    out = _long_shock(close, close, 0.3, seed=2)
    assert mean_pairwise_corr(_log_returns(out.close)[window]) == pytest.approx(c0, abs=1e-9)


def test_spread_multiplied_exactly_inside_window_only() -> None:
    md = make_market_data()
    out = inject_crisis(
        md.open, md.close, md.spread_bps, start=50, length=30, vol_mult=2.0, corr_target=0.5,
        spread_mult=3.5, drift=-0.01, rng=np.random.default_rng(0),
    )  # fmt: skip
    np.testing.assert_array_equal(out.spread_bps[50:80], md.spread_bps[50:80] * 3.5)
    np.testing.assert_array_equal(out.spread_bps[:50], md.spread_bps[:50])
    np.testing.assert_array_equal(out.spread_bps[80:], md.spread_bps[80:])


def test_prices_positive_and_coherent_under_extreme_crash() -> None:
    open_, close = _prices(300, 4, seed=8)
    high, low = np.maximum(open_, close) * 1.02, np.minimum(open_, close) * 0.97
    out = inject_crisis(
        open_, close, np.ones_like(close), start=100, length=10, vol_mult=5.0, corr_target=0.9,
        spread_mult=10.0, drift=-0.5, rng=np.random.default_rng(0), high=high, low=low,
    )  # fmt: skip
    assert out.high is not None and out.low is not None
    for arr in (out.open, out.close, out.high, out.low):
        assert (arr > 0).all() and np.isfinite(arr).all()
    assert (out.high >= np.maximum(out.open, out.close)).all()
    assert (out.low <= np.minimum(out.open, out.close)).all()
    assert out.close[109, 0] < 0.01 * close[109, 0]  # 10 bars at -0.5 log return each: e^-5
    # Overnight gaps kept everywhere; returns outside the window untouched; the level shift persists.
    np.testing.assert_allclose(out.open[1:] / out.close[:-1], open_[1:] / close[:-1], rtol=1e-12)
    np.testing.assert_allclose(_log_returns(out.close)[:99], _log_returns(close)[:99], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        _log_returns(out.close)[109:], _log_returns(close)[109:], rtol=1e-9, atol=1e-12
    )
    np.testing.assert_array_equal(out.close[:100], close[:100])
    np.testing.assert_array_equal(out.open[:100], open_[:100])


def test_drift_shifts_window_mean_exactly() -> None:
    open_, close = _prices(400, 3, seed=9)
    out = inject_crisis(
        open_, close, np.ones_like(close), start=100, length=50, vol_mult=1.0, corr_target=None,
        spread_mult=1.0, drift=-0.02, rng=np.random.default_rng(0),
    )  # fmt: skip
    shift = _log_returns(out.close)[99:149].mean(axis=0) - _log_returns(close)[99:149].mean(axis=0)
    np.testing.assert_allclose(shift, -0.02, rtol=1e-9)


def _pinned(name: str) -> ScenarioConfig:
    """The default scenario ``name`` with its window at ``start_frac`` in every draw (no jitter)."""
    sc = ScenarioConfig().get(name)
    return ScenarioConfig(scenarios={name: sc.model_copy(update={"start_jitter": 0.0})})


def test_asset_listing_inside_the_crisis_window_is_untouched_only_up_to_its_listing() -> None:
    md = make_market_data()
    out = apply_scenario("crisis_2008_like", md, np.random.default_rng(0), _pinned("crisis_2008_like"))
    # Window starts at bar 200 (start_frac 0.5 of 400); the last asset is listed there, so check a
    # window that overlaps its listing instead.
    cfg = ScenarioConfig(
        scenarios={"early": CrisisScenario(start_frac=0.2, length=40, vol_mult=3.0, corr_target=0.8)}
    )
    early = apply_scenario("early", md, np.random.default_rng(0), cfg)  # bars 80..119; asset 4 lists at 100
    np.testing.assert_array_equal(early.close[:101, -1], md.close[:101, -1])  # up to its listing price
    # shocked from there on (loss=None keeps its own trend: the window's last close is its own)
    assert (early.close[101:119, -1] != md.close[101:119, -1]).all()
    assert early.close[119, -1] == pytest.approx(md.close[119, -1], rel=1e-12)
    np.testing.assert_array_equal(early.listed, md.listed)
    assert not np.array_equal(early.close[:, 0], md.close[:, 0])
    assert not np.array_equal(out.close[:, -1], md.close[:, -1])
    np.testing.assert_array_equal(out.features, md.features)
    assert (out.regime_code[200:320] == 2).all()
    np.testing.assert_array_equal(out.regime_code[:200], md.regime_code[:200])


def test_crisis_window_validation() -> None:
    open_, close = _prices(50, 2, seed=0)
    with pytest.raises(ValueError, match="start=0"):
        inject_crisis(
            open_, close, np.ones_like(close), start=0, length=10, vol_mult=2.0, corr_target=None,
            spread_mult=1.0, drift=0.0, rng=np.random.default_rng(0),
        )  # fmt: skip
    bad = close.copy()
    bad[3, 1] = -1.0
    with pytest.raises(ValueError, match=r"close\[3, 1\] = -1.0"):
        inject_crisis(
            open_, bad, np.ones_like(close), start=5, length=10, vol_mult=2.0, corr_target=None,
            spread_mult=1.0, drift=0.0, rng=np.random.default_rng(0),
        )  # fmt: skip


# --------------------------------------------------------------------------- bootstrap


def _bootstrap_inputs() -> tuple[np.ndarray, np.ndarray]:
    md = make_market_data()
    return simple_returns(md), md.regime_code


@pytest.mark.parametrize("regime", [0, 1, 2])
def test_bootstrap_draws_only_requested_regime(regime: int) -> None:
    r, codes = _bootstrap_inputs()
    per_row = row_regimes(codes, r)
    draw = regime_block_bootstrap(
        r, codes, block_len=7, n_steps=500, rng=np.random.default_rng(0), regime=regime
    )
    assert draw.returns.shape == (500, r.shape[1])
    assert (per_row[draw.index] == regime).all()
    assert (draw.regime == regime).all()
    assert (_regime_path(400)[draw.index] == regime).all()


def test_row_regime_ignores_unlisted_codes() -> None:
    r, codes = _bootstrap_inputs()
    np.testing.assert_array_equal(row_regimes(codes, r)[1:], _regime_path(400)[1:])
    assert row_regimes(codes, r)[0] == -1  # row 0 has no return


def test_bootstrap_is_deterministic_and_rows_are_whole() -> None:
    r, codes = _bootstrap_inputs()
    a = regime_block_bootstrap(r, codes, 5, 300, np.random.default_rng(3))
    b = regime_block_bootstrap(r, codes, 5, 300, np.random.default_rng(3))
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.returns, r[a.index])  # NaN-for-NaN: masks travel with rows


def test_unlisted_stays_masked() -> None:
    r, codes = _bootstrap_inputs()
    draw = regime_block_bootstrap(r, codes, 5, 400, np.random.default_rng(4), regime=0)
    np.testing.assert_array_equal(np.isnan(draw.returns), np.isnan(r[draw.index]))
    assert np.isnan(draw.returns[:, -1]).any()  # calm rows before bar 100 have the unlisted asset
    md = make_market_data()
    cfg = ScenarioConfig(scenarios={"calm": BootstrapScenario(regime=0, block_len=5, n_steps=400)})
    out = apply_scenario("calm", md, np.random.default_rng(4), cfg)
    expected_listed = np.isfinite(draw.returns)  # same seed, same draw
    np.testing.assert_array_equal(out.listed, expected_listed)
    assert np.isfinite(out.close).all() and (out.close > 0).all()
    # Listed bars compound the drawn returns; unlisted bars keep the previous price.
    growth = out.close[1:] / out.close[:-1] - 1.0
    np.testing.assert_allclose(growth[expected_listed[1:]], draw.returns[1:][expected_listed[1:]], rtol=1e-10)
    np.testing.assert_array_equal(out.close[1:][~out.listed[1:]], out.close[:-1][~out.listed[1:]])


def test_bootstrap_follows_empirical_transitions() -> None:
    r, codes = _bootstrap_inputs()
    draw = regime_block_bootstrap(r, codes, 5, 3000, np.random.default_rng(5), regime=None)
    per_row = row_regimes(codes, r)
    np.testing.assert_array_equal(draw.regime, per_row[draw.index])
    pairs = set(zip(draw.regime[:-1].tolist(), draw.regime[1:].tolist(), strict=True))
    assert not pairs & {(0, 1), (1, 2), (2, 0)}  # switches never seen in the data
    assert {0, 1, 2} <= set(draw.regime.tolist())


def test_fixed_blocks_walk_the_pool_circularly() -> None:
    r, codes = _bootstrap_inputs()
    pool = np.flatnonzero(row_regimes(codes, r) == 2)
    draw = regime_block_bootstrap(r, codes, 4, 400, np.random.default_rng(6), regime=2, stationary=False)
    pos = np.searchsorted(pool, draw.index).reshape(-1, 4)
    np.testing.assert_array_equal((pos[:, 1:] - pos[:, :-1]) % pool.size, 1)


def test_bootstrap_bad_input() -> None:
    r, codes = _bootstrap_inputs()
    with pytest.raises(ValueError, match="regime=2: no row"):
        regime_block_bootstrap(r, np.zeros(400, dtype=np.int8), 5, 10, np.random.default_rng(0), regime=2)
    with pytest.raises(ValueError, match="block_len"):
        regime_block_bootstrap(r, codes, 0, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="regime_code contains 3"):
        regime_block_bootstrap(r, np.full(400, 3), 5, 10, np.random.default_rng(0))


# --------------------------------------------------------------------------- config


def test_config_is_frozen_and_lists_named_scenarios() -> None:
    cfg = ScenarioConfig()
    assert set(SCENARIO_NAMES) <= set(cfg.scenarios)
    flash = cfg.scenarios["flash_crash"]
    assert isinstance(flash, CrisisScenario)
    with pytest.raises(pydantic.ValidationError):
        flash.vol_mult = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        apply_scenario("nope", make_market_data(), np.random.default_rng(0))


def test_config_round_trips_through_dicts() -> None:
    cfg = ScenarioConfig()
    assert ScenarioConfig.model_validate(cfg.model_dump()) == cfg
    custom = ScenarioConfig.model_validate(
        {"scenarios": {"x": {"kind": "crisis", "length": 5, "vol_mult": 2}}}
    )
    assert isinstance(custom.get("x"), CrisisScenario)


def test_bootstrap_draws_from_a_longer_history_when_the_window_has_no_crisis() -> None:
    from dataclasses import replace

    history = make_market_data(t=400, n=5, seed=3)
    regime = np.zeros_like(history.regime_code)
    regime[150:190] = 2  # crisis only well before the window
    history = replace(history, regime_code=regime)
    window = replace(
        history,
        ts=history.ts[300:],
        open=history.open[300:],
        close=history.close[300:],
        listed=history.listed[300:],
        spread_bps=history.spread_bps[300:],
        dollar_volume=history.dollar_volume[300:],
        features=history.features[300:],
        regime_code=history.regime_code[300:],
    )
    with pytest.raises(ValueError, match="regime"):
        apply_scenario("bootstrap_crisis", window, np.random.default_rng(0))
    out = apply_scenario("bootstrap_crisis", window, np.random.default_rng(0), history=history)
    assert out.n_steps == window.n_steps and out.ts[0] == window.ts[0]
    assert (out.regime_code == 2).all()
    assert np.isfinite(out.close).all() and (out.close > 0).all()


def test_a_bootstrap_path_keeps_the_window_calendar_so_a_dated_cash_rate_is_the_windows() -> None:
    """A path's bar ``i`` is on the window's bar ``i`` (weekends and holidays kept), not on a compressed
    calendar of median steps: a rate schedule's later rates apply to the path's later bars, as they do
    to the window's. A path longer than the window goes on one median step a bar."""
    from dataclasses import replace

    from raytrade.envs.cash_rate import CashRate, RateStep, cash_return_per_bar

    md = make_market_data(t=400, n=5, seed=4)
    weekdays = pd.bdate_range("2024-01-01", periods=md.n_steps).to_numpy().astype("datetime64[us]")
    md = replace(md, ts=weekdays)
    out = apply_scenario("bootstrap_crisis", md, np.random.default_rng(0))
    assert np.array_equal(out.ts, md.ts)  # 400 weekdays span 559 days; the median step would give 400
    switch = md.ts[300].astype("datetime64[D]").item()
    steps = (RateStep(start=date(2023, 1, 1), annual=0.01), RateStep(start=switch, annual=0.05))
    rate = CashRate(schedule=steps)
    assert np.array_equal(cash_return_per_bar(out.ts, rate, 252), cash_return_per_bar(md.ts, rate, 252))
    assert cash_return_per_bar(out.ts, rate, 252)[-1] == pytest.approx(0.05 / 252)

    longer = ScenarioConfig(scenarios={"long": BootstrapScenario(regime=None, n_steps=450)})
    long_path = apply_scenario("long", md, np.random.default_rng(1), longer)
    assert np.array_equal(long_path.ts[: md.n_steps], md.ts)
    past_end = np.diff(long_path.ts[md.n_steps - 1 :])
    assert (past_end == np.timedelta64(1, "D")).all()  # the median step of weekdays
