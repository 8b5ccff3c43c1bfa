"""Cost calibration measures a fill from its arrival price: the decision-time mid in the session, the
open a market order decided while the market was closed waited for (``envs.cost_calibration``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.envs.cost_calibration import fit_cost_profile, logged_fills
from raytrade.envs.cost_profile import load_cost_profile
from raytrade.envs.costs import CostConfig
from raytrade.replay.writer import ReplayWriter

MID = 100.0  # every decision's mid
TIER_VOLUME = {"T0": 2e9, "T1": 5e7, "T2": 5e6, "BTCUSD": 5e7}  # one symbol per liquidity tier; crypto
TUESDAY = pd.Timestamp("2026-03-03", tz="UTC")
SESSION_OPEN = pd.Timedelta(hours=14, minutes=30)  # 09:30 New York (standard time)
AFTER_CLOSE = pd.Timedelta(hours=21)  # 16:00 New York (standard time)


def _write_market(root: Path, opens: dict[str, pd.Series], spread_bps: np.ndarray | float = 12.0) -> None:
    """Daily features (00:00 UTC date labels) and bars of each symbol of ``opens``: bars on the dates of
    its series, opening there (closing at ``MID``); features on every date from 2026-02-01 to 04-30,
    with the bar's spread estimate ``spread_bps`` (one per date, or one for all)."""
    dates = pd.date_range("2026-02-01", "2026-04-30", freq="D", tz="UTC")
    features, bars = [], []
    for symbol, open_ in opens.items():
        asset_class = "crypto" if symbol.endswith("USD") else "equity"
        features.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": dates,
                    "asset_class": asset_class,
                    "close": MID,
                    "dollar_volume_20": TIER_VOLUME[symbol],
                    "vol_20": 0.01,
                    "spread_bps": spread_bps,
                }
            )
        )
        bars.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": open_.index,
                    "open": open_.to_numpy(),
                    "high": np.maximum(open_.to_numpy(), MID) * 1.01,
                    "low": np.minimum(open_.to_numpy(), MID) * 0.99,
                    "close": MID,
                    "volume": 1e6,
                    "asset_class": asset_class,
                    "source": "test",
                }
            )
        )
    with ReplayWriter(root) as writer:
        writer.append_features(pd.concat(features, ignore_index=True))
        writer.append_bars(pd.concat(bars, ignore_index=True))


def _opens(value: float, freq: str = "B", **on: float) -> pd.Series:
    """Bar opens on the dates of ``freq`` from 2026-02-02 to 04-30, ``value`` but where ``on`` (a
    ``YYYY_MM_DD`` date) says otherwise."""
    dates = pd.date_range("2026-02-02", "2026-04-30", freq=freq, tz="UTC")
    opens = pd.Series(value, index=dates)
    for date, price in on.items():
        opens[pd.Timestamp(date.replace("_", "-"), tz="UTC")] = price
    return opens


def _fill_rows(
    symbol: str,
    decided: pd.Timestamp,
    fill_price: float,
    latency_ms: float | None,
    side: str = "buy",
    spread: float = 5.0,
    qty: float = 1000.0,
) -> list[dict[str, object]]:
    """A logged market-order decision and its fill, whose ``slippage_bps`` is against ``MID`` (the loop's
    rule: the decision-time mid)."""
    sign = 1.0 if side == "buy" else -1.0
    base = {"symbol": symbol, "policy_version": "p@1", "side": side, "target_weight": 0.1}
    decision_id = f"c{decided:%Y%m%d%H%M}:{symbol}"
    state = json.dumps({"snapshot": {"spread_bps": spread}})
    return [
        {**base, "ts": decided, "decision_id": decision_id, "state": state, "gate_mode": "aggressive"},
        {
            **base,
            "ts": decided + pd.Timedelta(days=4),  # when the loop learnt of it
            "decision_id": f"{decision_id}:fill",
            "fill_price": fill_price,
            "filled_qty": qty,
            "slippage_bps": sign * (fill_price - MID) / MID * 1e4,
            "latency_order_to_fill_ms": latency_ms,
        },
    ]


def _log(root: Path, rows: list[dict[str, object]]) -> None:
    with ReplayWriter(root) as writer:
        writer.append_experience(pd.DataFrame(rows).sort_values(["symbol", "ts"], ignore_index=True))


def _ms(span: pd.Timedelta) -> float:
    return span / pd.Timedelta(milliseconds=1)


GAP = 1.03  # every open 300 bps above the decision mid
COST = 5e-4  # every fill 5 bps above the price it arrived at


def _after_close_store(root: Path, n_days: int = 20, seed: int = 0) -> list[dict[str, object]]:
    """Three equities (one per tier), one buy a business day each decided after the close and filled
    at the next open, 300 bps over the decision mid, 5 bps above that open (spread and participation
    drawn: they do not move the cost; the fit reads the bars' spread estimates, the quotes are ignored)."""
    rng = np.random.default_rng(seed)
    _write_market(root, {s: _opens(MID * GAP) for s in ("T0", "T1", "T2")}, rng.uniform(1.0, 30.0, 89))
    days = pd.date_range(TUESDAY, periods=n_days, freq="B")
    rows: list[dict[str, object]] = []
    for symbol in ("T0", "T1", "T2"):
        for day in days:
            decided, filled = day + AFTER_CLOSE, day + pd.offsets.BDay(1) + SESSION_OPEN
            participation = rng.uniform(0.0, 0.05) ** 2 * 20
            rows += _fill_rows(
                symbol,
                decided,
                MID * GAP * (1 + COST),
                _ms(filled - decided),
                spread=rng.uniform(1.0, 30.0),
                qty=participation * TIER_VOLUME[symbol] / MID,
            )
    _log(root, rows)
    return rows


def test_fills_decided_after_the_close_fit_their_cost_not_the_overnight_gap(tmp_path: Path) -> None:
    # logged against the decision mid each costs 305.15 bps (the gap, 300, and the cost, 5, compounded):
    # fitted so, every tier base came out at 305.15; against the open they filled at, 5
    rows = _after_close_store(tmp_path)
    logged = [r["slippage_bps"] for r in rows if str(r["decision_id"]).endswith(":fill")]
    assert logged == pytest.approx([305.15] * 60, abs=1e-9)
    sample = logged_fills(tmp_path)
    profile = fit_cost_profile(sample, CostConfig())
    assert [p.value for p in profile.tier_base_bps if p is not None] == pytest.approx([5.0] * 3, abs=1e-6)
    assert profile.spread_fraction.value == pytest.approx(0.0, abs=1e-6)
    assert profile.impact_coef_bps.value == pytest.approx(0.0, abs=1e-6)
    assert sample.slippage_bps == pytest.approx([5.0] * 60, abs=1e-9)
    assert (sample.n_rereferenced, sample.dropped, profile.n_rereferenced) == (60, {}, 60)


def test_calibrate_costs_command_reports_the_fills_measured_from_the_open(tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "profile.json"
    _after_close_store(root)
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "decided while the market was closed: 60 fills measured from the open they waited for (the "
        "arrival price), not the decision-time mid"
    ) in result.output
    assert load_cost_profile(out).n_rereferenced == 60


def test_each_fill_is_measured_from_its_arrival_price_in_a_mixed_store(tmp_path: Path) -> None:
    # T1's bars open 300 bps above the decision mid, but 300 bps below it on Monday 03-09 (after a
    # weekend); BTCUSD's bars open 300 bps above it every day, and are never read: no session to wait for
    _write_market(
        tmp_path,
        {"T1": _opens(MID * GAP, **{"2026_03_09": MID * 0.97}), "BTCUSD": _opens(MID * GAP, freq="D")},
    )
    tuesday, saturday = TUESDAY, TUESDAY + pd.Timedelta(days=4)
    in_session = tuesday + pd.Timedelta(hours=15)
    rows = [
        # in the session, filled 2 s later: the mid is the arrival price, 5 bps kept
        *_fill_rows("T1", in_session, MID * (1 + COST), 2_000.0),
        # five minutes at most (a slow cycle) is still filled at once: kept
        *_fill_rows("T1", in_session + pd.Timedelta(hours=1), MID * (1 + COST), 300_000.0),
        # after Tuesday's close, filled at Wednesday's open (103): 305.15 logged, 5 from the open
        *_fill_rows(
            "T1", tuesday + AFTER_CLOSE, MID * GAP * (1 + COST), _ms(SESSION_OPEN + pd.Timedelta(hours=3))
        ),
        # a sell on Saturday, filled at Monday's open (97): 304.85 logged, 5 from the open
        *_fill_rows(
            "T1",
            saturday + pd.Timedelta(hours=15),
            MID * 0.97 * (1 - COST),
            _ms(pd.Timedelta(days=2) - pd.Timedelta(minutes=30)),
            side="sell",
        ),
        # crypto after the equity close, filled 2 s later, and one that took 2 h: both kept
        *_fill_rows("BTCUSD", tuesday + AFTER_CLOSE, MID * (1 + COST), 2_000.0),
        *_fill_rows(
            "BTCUSD",
            tuesday + AFTER_CLOSE + pd.Timedelta(hours=1),
            MID * (1 + 7e-4),
            _ms(pd.Timedelta(hours=2)),
        ),
    ]
    _log(tmp_path, rows)
    sample = logged_fills(tmp_path)
    measured = dict(zip(sample.decision_id.tolist(), sample.slippage_bps.tolist(), strict=True))
    assert measured == pytest.approx(
        {
            "c202603031500:T1:fill": 5.0,
            "c202603031600:T1:fill": 5.0,
            "c202603032100:T1:fill": 5.0,
            "c202603071500:T1:fill": 5.0,
            "c202603032100:BTCUSD:fill": 5.0,
            "c202603032200:BTCUSD:fill": 7.0,
        },
        abs=1e-9,
    )
    assert sample.dropped == {} and sample.n_rereferenced == 2


def test_an_equity_fill_whose_arrival_price_is_unknown_is_left_out_and_counted(tmp_path: Path) -> None:
    # without a latency an equity fill may have waited for the open or not; a fill after the store's
    # last bar has no open to be measured from; crypto needs neither (kept, against its mid)
    _write_market(tmp_path, {"T1": _opens(MID * GAP), "BTCUSD": _opens(MID * GAP, freq="D")})
    in_session = TUESDAY + pd.Timedelta(hours=15)
    last_close = pd.Timestamp("2026-04-30 21:00", tz="UTC")  # Thursday; no bar on Friday 05-01
    rows = [
        *_fill_rows("T1", in_session, MID * (1 + COST), 2_000.0),
        *_fill_rows("T1", in_session + pd.Timedelta(days=1), MID * (1 + COST), None),
        *_fill_rows("T1", last_close, MID * GAP * (1 + COST), _ms(pd.Timedelta(hours=17, minutes=30))),
        *_fill_rows("BTCUSD", in_session, MID * (1 + COST), None),
    ]
    _log(tmp_path, rows)
    sample = logged_fills(tmp_path)
    assert sample.dropped == {
        "fill time unknown (no latency_order_to_fill_ms, or 0: what builds before the null was logged "
        "wrote for a fill without a broker time): whether it waited for the market to open cannot be told": 1,
        "waited for the market to open, and no bars row of the bar it filled in (no arrival price)": 1,
    }
    assert sample.decision_id.tolist() == ["c202603031500:BTCUSD:fill", "c202603031500:T1:fill"]
    assert sample.slippage_bps == pytest.approx([5.0, 5.0], abs=1e-9)
    assert sample.n_rereferenced == 0


@pytest.mark.parametrize(
    "stamps",
    [
        pd.date_range("2026-03-02", "2026-03-06", freq="B", tz="America/New_York").tz_convert("UTC"),
        pd.DatetimeIndex(
            [
                d + pd.Timedelta(hours=h)
                for d in pd.date_range("2026-03-02", "2026-03-06", tz="UTC")
                for h in range(14, 21)
            ]
        ),
    ],
    ids=["daily-new-york-midnight", "hourly"],
)
def test_a_fill_after_the_close_is_measured_from_its_bars_open_on_any_bar_clock(
    tmp_path: Path, stamps: pd.DatetimeIndex
) -> None:
    # Wednesday's bar it fills in at 14:30 UTC: stamped 05:00 UTC (New York midnight) on daily bars,
    # 14:00 UTC on hourly ones (Alpaca's clock: its 09:00 bar holds the session's first half hour);
    # every other bar opens at the mid, so a wrong bar would measure the fill's 305 bps
    wednesday_open = stamps[stamps.searchsorted(pd.Timestamp("2026-03-04 14:30", tz="UTC"), "right") - 1]
    opens = pd.Series(MID, index=stamps)
    opens[wednesday_open] = MID * GAP
    _write_market(tmp_path, {"T1": opens})
    decided = TUESDAY + AFTER_CLOSE
    _log(
        tmp_path, _fill_rows("T1", decided, MID * GAP * (1 + COST), _ms(SESSION_OPEN + pd.Timedelta(hours=3)))
    )
    sample = logged_fills(tmp_path)
    assert sample.slippage_bps == pytest.approx([5.0], abs=1e-9)
    assert (sample.n_rereferenced, sample.dropped) == (1, {})


def test_a_fill_that_waited_for_the_open_is_fitted_with_its_bars_spread_not_the_after_hours_quote(
    tmp_path: Path,
) -> None:
    # the snapshot of a decision taken after the close holds an after-hours quote (80 bps here); the
    # fill crossed the opening spread, which the simulator charges with the closed bar's estimate (12)
    _write_market(tmp_path, {"T1": _opens(MID * GAP), "BTCUSD": _opens(MID * GAP, freq="D")})
    in_session = TUESDAY + pd.Timedelta(hours=15)
    waited = _ms(SESSION_OPEN + pd.Timedelta(hours=3))
    rows = [
        *_fill_rows("T1", in_session, MID * (1 + COST), 2_000.0, spread=5.0),
        *_fill_rows("T1", TUESDAY + AFTER_CLOSE, MID * GAP * (1 + COST), waited, spread=80.0),
        *_fill_rows("BTCUSD", TUESDAY + AFTER_CLOSE, MID * (1 + COST), 2_000.0, spread=80.0),
    ]
    _log(tmp_path, rows)
    sample = logged_fills(tmp_path)
    spreads = dict(zip(sample.decision_id.tolist(), sample.spread_bps.tolist(), strict=True))
    assert spreads == {
        "c202603031500:T1:fill": 5.0,  # in the session: the quote it crossed
        "c202603032100:T1:fill": 12.0,  # waited for the open: the bar's estimate
        "c202603032100:BTCUSD:fill": 80.0,  # crypto never waits: its quote
    }
    assert sample.n_rereferenced == 1


def test_a_slow_fill_of_an_order_decided_in_the_session_keeps_the_decision_mid(tmp_path: Path) -> None:
    # decided at 10:00 New York, filled 6 minutes later (a slow cycle) 5 bps above the mid; the day's
    # bar opened 300 bps below, before the decision: measured from that open it read 314.4 bps
    _write_market(tmp_path, {"T1": _opens(MID, **{"2026_03_04": MID * 0.97})})
    decided = pd.Timestamp("2026-03-04 15:00", tz="UTC")  # 10:00 New York (standard time)
    _log(tmp_path, _fill_rows("T1", decided, MID * (1 + COST), _ms(pd.Timedelta(minutes=6))))
    sample = logged_fills(tmp_path)
    assert sample.slippage_bps == pytest.approx([5.0], abs=1e-9)
    assert (sample.n_rereferenced, sample.dropped) == (0, {})


def test_a_pre_market_decision_filled_at_that_days_open_is_measured_from_the_open(tmp_path: Path) -> None:
    # decided at 02:00 UTC Wednesday (21:00 New York on Tuesday) and at 08:00 New York Wednesday, both
    # filled at Wednesday's open: on a date-labelled store the fill's bar is stamped before the first
    # decision, and the second comes on the fill's own New York date; both waited for the open
    _write_market(tmp_path, {"T1": _opens(MID, **{"2026_03_04": MID * GAP})})
    open_ = pd.Timestamp("2026-03-04", tz="UTC") + SESSION_OPEN
    rows = []
    for decided in (pd.Timestamp("2026-03-04 02:00", tz="UTC"), pd.Timestamp("2026-03-04 13:00", tz="UTC")):
        rows += _fill_rows(
            "T1", decided, MID * GAP * (1 + COST), _ms(open_ - decided + pd.Timedelta(seconds=2))
        )
    _log(tmp_path, rows)
    sample = logged_fills(tmp_path)
    assert sample.slippage_bps == pytest.approx([5.0, 5.0], abs=1e-9)
    assert (sample.n_rereferenced, sample.dropped) == (2, {})


def test_an_equity_fill_logged_with_a_latency_of_zero_is_left_out(tmp_path: Path) -> None:
    # builds before the null latency logged 0 for a fill without a broker time: after the close, filled
    # at the next open, it read as filled at once, 305 bps from the mid, the gap in the fit
    _write_market(tmp_path, {"T1": _opens(MID * GAP), "BTCUSD": _opens(MID * GAP, freq="D")})
    rows = [
        *_fill_rows("T1", TUESDAY + AFTER_CLOSE, MID * GAP * (1 + COST), 0.0),
        *_fill_rows("BTCUSD", TUESDAY + AFTER_CLOSE, MID * (1 + COST), 0.0),  # crypto: the mid, kept
    ]
    _log(tmp_path, rows)
    sample = logged_fills(tmp_path)
    assert sample.decision_id.tolist() == ["c202603032100:BTCUSD:fill"]
    assert list(sample.dropped.values()) == [1] and "fill time unknown" in next(iter(sample.dropped))


def test_a_fill_that_waited_on_a_flat_bar_keeps_its_quote_spread(tmp_path: Path) -> None:
    # the closed bar's estimate is 0 (a flat bar: the simulator costs it at a past median, not at 0)
    spreads = np.full(89, 12.0)
    spreads[29] = 0.0  # 03-02: the last bar closed by Tuesday 21:00 UTC (a date label closes at midnight)
    _write_market(tmp_path, {"T1": _opens(MID * GAP)}, spreads)
    waited = _ms(SESSION_OPEN + pd.Timedelta(hours=3))
    _log(tmp_path, _fill_rows("T1", TUESDAY + AFTER_CLOSE, MID * GAP * (1 + COST), waited, spread=80.0))
    sample = logged_fills(tmp_path)
    assert sample.spread_bps.tolist() == [80.0]
    assert sample.n_rereferenced == 1
