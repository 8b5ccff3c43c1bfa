"""A coin whose bars stop on a weekend is sold at its last real close, not at Friday's.

A crypto-next-to-equities review (2026-12-05): DEADUSD's last bar, a Saturday, closed at 10 after
100 all week; stepped on the equity labels its last listed bar was Friday's, and a holder was sold
at 100, a price from before the weekend that ended the coin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raytrade.envs.config import SimulatorConfig
from raytrade.envs.replay_loader import load_market_data
from raytrade.envs.rollout import replay_policy
from raytrade.envs.simulator import Observation
from tests.test_equity_clocks import _csv, ingest, plain

FEATURES = ("vol_20",)
DAYS = pd.bdate_range("2024-01-02", periods=60)  # 2024-01-02 .. 2024-03-25
LAST = pd.Timestamp("2024-03-16")  # a Saturday


def _coin(path: Path, days: pd.DatetimeIndex, crash_on_last: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, d in enumerate(days):
        close = 10.0 if crash_on_last and k == len(days) - 1 else 100.0
        rows.append(f"{d:%Y-%m-%d}T00:00:00+00:00,100,101,{min(close, 99)},{close},1000000")
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")


def _store(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    _csv(src / "AAA.csv", plain(DAYS), 1)
    _csv(src / "BBB.csv", plain(DAYS), 2)
    _coin(src / "crypto" / "DEADUSD.csv", pd.date_range(DAYS[0], LAST, freq="D"), crash_on_last=True)
    store = tmp_path / "store"
    code, output = ingest(src, store)
    assert code == 0, output
    return store


def test_the_last_weekend_bar_is_on_the_next_label_and_a_holder_lives_its_move(tmp_path: Path) -> None:
    data = load_market_data(_store(tmp_path), "all", feature_columns=FEATURES)
    k = data.symbols.index("DEADUSD")
    ts = pd.DatetimeIndex(data.ts)
    monday = int(np.flatnonzero(ts == pd.Timestamp("2024-03-18"))[0])
    friday = monday - 1
    assert data.listed[friday, k] and data.listed[monday, k] and not data.listed[monday + 1 :, k].any()
    assert data.close[friday, k] == 100.0 and data.close[monday, k] == 10.0
    assert data.open[monday, k] == 100.0  # the Saturday bar's open: the first price after Friday

    def coin_only(obs: Observation) -> np.ndarray:
        return np.where(obs.mask & (np.arange(obs.mask.shape[-1]) == k), 0.9, 0.0)

    rollout = replay_policy(data, coin_only, SimulatorConfig())
    equity = rollout.equity[0]
    assert equity[monday - 1] < 0.2 * equity[friday - 1]  # the −90 % reached the account


def test_a_coin_that_trades_on_past_the_window_is_untouched(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _csv(src / "AAA.csv", plain(DAYS), 1)
    _coin(src / "crypto" / "LIVEUSD.csv", pd.date_range(DAYS[0], DAYS[-1], freq="D"), crash_on_last=False)
    store = tmp_path / "store"
    assert ingest(src, store)[0] == 0
    data = load_market_data(store, "all", feature_columns=FEATURES)
    assert data.listed.all() and (data.close[:, data.symbols.index("LIVEUSD")] == 100.0).all()
