"""A crisis shocks every asset over the window rows it is listed in (``inject_crisis``'s span): a halt
inside the window, a delisting inside it and a listing inside it no longer exempt an asset, and the
stressed data keeps the cells with no bar as cells with no bar."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.market_data import MarketData, carry_close_through_holes
from raytrade.envs.scenarios import ScenarioConfig, apply_scenario, inject_crisis
from raytrade.envs.simulator import MarketSimulator
from raytrade.envs.stress_features import PRICE_FEATURES
from raytrade.envs.synthetic_market import synthetic_market_data

T, N = 400, 4
START, LENGTH, LOSS = 150, 120, 0.30
END = START + LENGTH - 1


def _prices(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A calm market (a slight up-drift: no asset loses 30 % on its own in the window)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, (T, N)), axis=0))
    return np.vstack([close[:1], close[:-1]]), close


def _crisis(open_: np.ndarray, close: np.ndarray, listed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    out = inject_crisis(
        open_, close, np.full((T, N), 10.0), start=START, length=LENGTH, vol_mult=3.0, corr_target=0.7,
        spread_mult=3.0, drift=0.0, rng=np.random.default_rng(1), listed=listed, loss=LOSS,
    )  # fmt: skip
    return out.open, out.close


def test_a_halt_inside_the_window_is_shocked_through() -> None:
    open_, close = _prices()
    listed = np.ones((T, N), dtype=bool)
    listed[200:203, 3] = False  # stock 3 halted for three bars in the middle of the window
    open_, close = carry_close_through_holes(open_, close, listed)
    assert (close[END] / close[START - 1] > 1 - LOSS).all()  # none loses 30 % on its own
    new_open, new_close = _crisis(open_, close, listed)
    np.testing.assert_allclose(new_close[END] / new_close[START - 1], 1 - LOSS, rtol=1e-12)
    # the halted bars stay priced at the last real (shocked) close; the reopen takes the shock
    np.testing.assert_array_equal(new_close[200:203, 3], new_close[199, 3])
    np.testing.assert_array_equal(new_open[200:203, 3], new_close[199, 3])
    halted_shock = new_open[203, 3] / open_[203, 3]
    assert abs(halted_shock - new_close[199, 3] / close[199, 3]) > 1e-3


def test_a_delisting_inside_the_window_is_shocked_up_to_its_last_bar() -> None:
    open_, close = _prices()
    listed = np.ones((T, N), dtype=bool)
    last = 220
    listed[last + 1 :, 2] = False  # stock 2's last bar is 220, inside the window
    open_[last + 1 :, 2] = close[last + 1 :, 2] = close[last, 2]
    assert close[last, 2] / close[START - 1, 2] > 1 - LOSS
    new_open, new_close = _crisis(open_, close, listed)
    # the price it is liquidated at (its last close) carries the whole loss; flat after it
    np.testing.assert_allclose(new_close[last, 2] / new_close[START - 1, 2], 1 - LOSS, rtol=1e-12)
    np.testing.assert_array_equal(new_close[last + 1 :, 2], new_close[last, 2])
    np.testing.assert_array_equal(new_open[last + 2 :, 2], new_close[last, 2])
    np.testing.assert_allclose(new_close[END, :2] / new_close[START - 1, :2], 1 - LOSS, rtol=1e-12)


def test_a_listing_inside_the_window_is_shocked_from_its_listing_price() -> None:
    open_, close = _prices()
    listed = np.ones((T, N), dtype=bool)
    first = 230
    listed[:first, 1] = False  # stock 1 lists at bar 230, inside the window; earlier prices back-filled
    open_[:first, 1] = close[:first, 1] = open_[first, 1]
    assert close[END, 1] / close[first, 1] > 1 - LOSS
    new_open, new_close = _crisis(open_, close, listed)
    np.testing.assert_array_equal(new_close[: first + 1, 1], close[: first + 1, 1])  # its listing price
    np.testing.assert_array_equal(new_open[: first + 1, 1], open_[: first + 1, 1])
    np.testing.assert_allclose(new_close[END, 1] / new_close[first, 1], 1 - LOSS, rtol=1e-12)


def test_listed_all_along_is_shocked_as_before() -> None:
    """``listed`` all True is the same shock as no ``listed`` (every asset spans the window)."""
    open_, close = _prices()
    with_mask = _crisis(open_, close, np.ones((T, N), dtype=bool))
    without = _crisis(open_, close, None)
    np.testing.assert_array_equal(with_mask[0], without[0])
    np.testing.assert_array_equal(with_mask[1], without[1])


def _ragged_market() -> MarketData:
    """Synthetic data (price features included) with a halt (stock 3, bar 250), a delisting (stock
    2 after bar 259) and a listing (stock 1 at bar 230), all inside crisis_2008_like's window
    (bars 200..319); the loader's missing flags: no bar, no value."""
    md = synthetic_market_data(n_assets=N, n_steps=T, seed=0, ragged=False)
    listed = md.listed.copy()
    listed[250, 3] = False
    listed[260:, 2] = False
    listed[:230, 1] = False
    open_, close = carry_close_through_holes(md.open, md.close, listed)
    open_[260:, 2] = close[260:, 2] = close[259, 2]
    open_[:230, 1] = close[:230, 1] = open_[230, 1]
    missing = np.broadcast_to(~listed[..., None], md.features.shape).copy()
    features = np.where(missing, 0.0, md.features).astype(np.float32)
    return replace(md, listed=listed, open=open_, close=close, features=features, feature_missing=missing)


def _pinned(name: str) -> ScenarioConfig:
    """The default scenario ``name`` with its window at ``start_frac`` in every draw (no jitter)."""
    sc = ScenarioConfig().get(name)
    return ScenarioConfig(scenarios={name: sc.model_copy(update={"start_jitter": 0.0})})


def test_stressed_data_keeps_the_cells_with_no_bar_empty() -> None:
    md = _ragged_market()
    out = apply_scenario("crisis_2008_like", md, np.random.default_rng(0), _pinned("crisis_2008_like"))
    np.testing.assert_array_equal(out.listed, md.listed)
    MarketSimulator(out, SimulatorConfig(episode_len=10))  # holes priced at their last real close
    assert out.feature_missing is not None
    cols = [k for k, name in enumerate(md.feature_names) if name in PRICE_FEATURES]
    assert cols  # the synthetic data carries rebuilt price features
    no_bar = ~md.listed
    assert (out.features[no_bar][:, cols] == 0).all()
    assert out.feature_missing[no_bar][:, cols].all()
    # and every asset took the crash over the part of the window it is listed in
    assert out.close[319, 0] / out.close[199, 0] <= 1 - LOSS + 1e-12
    assert out.close[319, 1] / out.close[230, 1] <= 1 - LOSS + 1e-12
    assert out.close[259, 2] / out.close[199, 2] <= 1 - LOSS + 1e-12
    assert out.close[319, 3] / out.close[199, 3] <= 1 - LOSS + 1e-12
