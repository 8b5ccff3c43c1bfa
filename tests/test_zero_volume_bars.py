"""A bar that traded nothing is no bar, and a fill takes at most its participation of the fill bar.

Yahoo reports a halted day as a bar with volume 0 at a flat, stale price. The loader leaves such a
bar out of ``listed`` (a hole: no fill, carried at the last traded close); the simulator caps a fill
at ``max_participation`` x the fill bar's own dollar volume as well as the one known at decision time.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.costs import CostConfig
from raytrade.envs.market_data import MarketData, last_listed_bar
from raytrade.envs.replay_loader import load_market_data
from raytrade.envs.simulator import MarketSimulator, StepResult
from raytrade.envs.synthetic_market import synthetic_market_data
from raytrade.replay import read_frame

SYMBOL = "SYN000"
HALT = slice(100, 103)  # three zero-volume bars at a stale price
THIN = 150  # ten shares traded
DEAD_TAIL = 40  # the other symbol's last bars trade nothing (a delisting Yahoo keeps reporting)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yahoo"


@pytest.fixture(scope="module")
def halted_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=2, years=1.0, seed=5).bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    rows = np.flatnonzero(bars["symbol"] == SYMBOL)
    stale = float(bars.loc[rows[HALT.start - 1], "close"])
    bars.loc[rows[HALT], ["open", "high", "low", "close", "vwap"]] = stale
    bars.loc[rows[HALT], "volume"] = 0.0
    bars.loc[rows[THIN], "volume"] = 10.0
    other = np.flatnonzero(bars["symbol"] != SYMBOL)
    bars.loc[other[-DEAD_TAIL:], "volume"] = 0.0
    root = tmp_path_factory.mktemp("halted") / "store"
    ingest_frames(root, bars, None, show_progress=False)
    return root


def _step(
    data: MarketData, t: int, target: np.ndarray, sim: MarketSimulator | None = None
) -> tuple[MarketSimulator, StepResult]:
    """One step of ``sim`` (or of a fresh simulator started at bar ``t``) towards ``target``."""
    if sim is None:
        sim = MarketSimulator(data, SimulatorConfig(episode_len=5), n_envs=1, seed=0)
        sim.reset(starts=np.array([t]))
    return sim, sim.step(target[None, :])


def test_a_zero_volume_bar_is_a_hole_at_the_last_traded_close(halted_store: Path) -> None:
    data = load_market_data(halted_store, "all")
    j = data.symbols.index(SYMBOL)
    assert not data.listed[HALT, j].any()
    assert data.listed[HALT.start - 1, j] and data.listed[HALT.stop, j]
    last_close = data.close[HALT.start - 1, j]
    assert (data.open[HALT, j] == last_close).all() and (data.close[HALT, j] == last_close).all()
    assert (data.bar_dollar_volume[HALT, j] == 0).all()
    stored = read_frame(halted_store, "bars", symbols=[SYMBOL]).iloc[THIN]
    assert data.bar_dollar_volume[THIN, j] == pytest.approx(10.0 * stored["close"], rel=1e-12)


def test_no_order_fills_on_a_zero_volume_bar_nor_later_at_its_stale_price(halted_store: Path) -> None:
    data = load_market_data(halted_store, "all")
    j = data.symbols.index(SYMBOL)
    target = np.zeros(data.n_assets)
    target[j] = 0.5
    sim = MarketSimulator(data, SimulatorConfig(episode_len=5), n_envs=1, seed=0)
    sim.reset(starts=np.array([HALT.start - 1]))
    for _ in range(HALT.stop - HALT.start):  # every decision that would fill inside the halt
        _, result = _step(data, 0, target, sim)
        assert result.traded_notional[0, j] == 0.0 and sim.units[0, j] == 0.0
    _, result = _step(data, 0, target, sim)  # decided on the last halted bar: no real bar to decide on
    assert result.traded_notional[0, j] == 0.0
    _, result = _step(data, 0, target, sim)  # decided on the reopen, filled at the next real open
    bought = result.traded_notional[0, j]
    assert bought > 0
    assert bought / sim.units[0, j] == pytest.approx(data.open[HALT.stop + 1, j], rel=1e-12)


def test_a_thin_bar_fills_at_most_its_participation_of_that_bar(halted_store: Path) -> None:
    data = load_market_data(halted_store, "all")
    j = data.symbols.index(SYMBOL)
    target = np.zeros(data.n_assets)
    target[j] = 0.5
    _, result = _step(data, THIN - 1, target)
    cap = CostConfig().max_participation * data.bar_dollar_volume[THIN, j]
    assert cap < 1e3 < CostConfig().max_participation * data.dollar_volume[THIN - 1, j]
    assert result.traded_notional[0, j] == pytest.approx(cap, rel=1e-9)


def test_the_fill_bar_cap_applies_to_hand_built_data_and_is_optional() -> None:
    data = synthetic_market_data(n_assets=2, n_steps=40, seed=1)
    assert data.bar_dollar_volume is None  # unknown: the known average alone caps (as before)
    bar_volume = np.full((data.n_steps, data.n_assets), 1e12)
    bar_volume[11, 0] = 2_000.0  # bar 11 traded $2k of asset 0
    thin = replace(data, bar_dollar_volume=bar_volume)
    _, result = _step(thin, 10, np.array([0.5, 0.5]))
    _, free = _step(data, 10, np.array([0.5, 0.5]))
    assert result.traded_notional[0, 0] == pytest.approx(CostConfig().max_participation * 2_000.0, rel=1e-9)
    assert result.traded_notional[0, 1] == pytest.approx(free.traded_notional[0, 1], rel=1e-12)
    with pytest.raises(ValueError, match="bar_dollar_volume has shape"):
        replace(data, bar_dollar_volume=bar_volume[1:])


def test_trailing_zero_volume_bars_do_not_keep_a_symbol_listed(halted_store: Path) -> None:
    data = load_market_data(halted_store, "all")
    k = 1 - data.symbols.index(SYMBOL)
    last_traded = int(np.flatnonzero(data.listed[:, k])[-1])
    assert last_traded == data.n_steps - 1 - DEAD_TAIL
    assert last_listed_bar(data.listed, data.listed_after)[k] == last_traded  # delisted there
    # a window ending inside the dead tail: its zero-volume bars are no bars after the window, so the
    # symbol is delisted at its last traded bar, not held as if halted to the window's end
    train = load_market_data(
        halted_store, "train", train_fraction=0.9, validation_fraction=0.05, embargo_bars=2
    )
    assert data.ts[last_traded] < train.ts[-1] < data.ts[-1]
    assert not train.listed_after[k]
    assert last_listed_bar(train.listed, train.listed_after)[k] == last_traded


@pytest.mark.skipif(not (SHARED / "HIMS.csv").is_file(), reason="needs the real HIMS file in ../shared/data")
def test_real_hims_zero_volume_bars_get_no_fill(tmp_path: Path) -> None:
    from raytrade.envs.evaluation.policies import baseline_spec
    from raytrade.envs.rollout import decision_step
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.csv_dir import read_csv_folder

    folder = tmp_path / "csv"
    folder.mkdir()
    for symbol in ("HIMS", "WPM"):
        frame = pd.read_csv(SHARED / f"{symbol}.csv")
        frame[frame["Date"] <= "2020-12-31"].to_csv(folder / f"{symbol}.csv", index=False)
    ingest_frames(tmp_path / "store", read_csv_folder(folder), None, show_progress=False)
    data = load_market_data(tmp_path / "store", "all", feature_columns=("vol_20",))
    bars = read_frame(tmp_path / "store", "bars", symbols=["HIMS"]).set_index("ts")
    zero = bars.index[bars["volume"] == 0].tz_convert(None)
    assert len(zero) >= 20  # the file's halted ex-SPAC days
    sim = MarketSimulator(data, SimulatorConfig(episode_len=data.n_steps - 1), n_envs=1, seed=0)
    sim.reset(starts=np.zeros(1, dtype=np.int64))
    policy, step = baseline_spec("equal_weight").make(data, 0), decision_step(sim)
    j, ts = data.symbols.index("HIMS"), pd.DatetimeIndex(data.ts)
    fills_on_zero = 0
    for k in range(data.n_steps - 1):
        traded = step(policy(sim.observe())).traded_notional[0, j]
        fills_on_zero += int(traded != 0 and ts[k + 1] in zero)
    assert fills_on_zero == 0


def test_a_stamp_where_no_bar_traded_is_no_step(tmp_path: Path) -> None:
    """A source that exports every weekday prints an exchange holiday as a flat bar with volume 0 for
    every symbol: no session, so no label. As one it was a step where nothing was listed, counted in
    every bar window and credited a bar of carry (60 such labels in six years of real data took the
    year to 261 labels). A stamp where one symbol traded stays a step (the others are holes there)."""
    from raytrade.envs.config import ReplayDataConfig
    from raytrade.envs.replay_loader import split_calendar
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    bars = generate(n_symbols=3, years=1.0, seed=7).bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
    stamps = pd.DatetimeIndex(np.unique(bars["ts"]))
    holidays, half = stamps[[40, 41, 120]], stamps[200]
    for symbol in bars["symbol"].unique():
        for ts in [*holidays, half]:
            if ts == half and symbol == "SYN000":
                continue  # one symbol trades on this stamp
            i = bars.index[(bars["symbol"] == symbol) & (bars["ts"] == ts)][0]
            stale = float(bars.loc[i - 1, "close"])
            bars.loc[i, ["open", "high", "low", "close", "vwap"]] = stale
            bars.loc[i, "volume"] = 0.0
    root = tmp_path / "store"
    ingest_frames(root, bars, None, show_progress=False)
    data = load_market_data(root, "all")
    steps = pd.DatetimeIndex(data.ts).tz_localize("UTC")
    assert not steps.isin(holidays).any()
    assert half in steps and len(steps) == len(stamps) - len(holidays)
    assert data.listed.any(axis=1).all()  # every step has a listed symbol
    cfg = ReplayDataConfig(kind="replay", root=str(root), split="all")
    assert split_calendar(cfg).equals(steps)  # the experiment's folds split the loader's calendar
