"""Execution feedback: slippage calibration from logged fills, and the cost profile's one mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.envs.config import SimulatorConfig
from raytrade.envs.cost_calibration import MIN_SCALE_BPS, FillSample, fit_cost_profile, logged_fills
from raytrade.envs.cost_profile import (
    CostProfile,
    CostProfileError,
    FittedParameter,
    apply_cost_profile,
    load_cost_profile,
)
from raytrade.envs.costs import CostConfig, liquidity_tier
from raytrade.envs.market_data import MarketData
from raytrade.envs.rewards import RewardConfig
from raytrade.envs.simulator import MarketSimulator
from raytrade.replay.errors import InputError
from raytrade.replay.validation import ReplayValidationError
from raytrade.replay.writer import ReplayWriter

TRUE_SPREAD_FRACTION = 0.7
TRUE_BASES = (4.0, 10.0, 25.0)
TRUE_IMPACT = 150.0
TIER_VOLUME = (2e9, 5e7, 5e6)  # one symbol per liquidity tier of the default thresholds


def _simulated_fills(n: int, seed: int = 0) -> FillSample:
    """Fills whose cost follows the model with known parameters plus 1.5 bps of noise."""
    rng = np.random.default_rng(seed)
    tier = rng.integers(0, 3, n)
    volume = np.asarray(TIER_VOLUME)[tier]
    spread = rng.uniform(1.0, 30.0, n)
    participation = rng.uniform(0.0, 0.05, n) ** 2 * 20  # many small fills, a few large ones
    cost = (
        TRUE_SPREAD_FRACTION * spread
        + np.asarray(TRUE_BASES)[tier]
        + TRUE_IMPACT * np.sqrt(participation)
        + rng.normal(0.0, 1.5, n)
    )
    return FillSample(
        decided_at=np.datetime64("2026-01-05T15:00") + np.arange(n).astype("timedelta64[h]"),
        slippage_bps=cost,
        spread_bps=spread,
        participation=participation,
        dollar_volume=volume,
        vol_bps=rng.uniform(50.0, 300.0, n),
        dropped={},
    )


def test_calibration_recovers_known_slippage_parameters_within_ten_percent() -> None:
    profile = fit_cost_profile(_simulated_fills(600), CostConfig())
    assert profile.n_fills == 600
    assert profile.spread_fraction.value == pytest.approx(TRUE_SPREAD_FRACTION, rel=0.10)
    assert profile.impact_coef_bps.value == pytest.approx(TRUE_IMPACT, rel=0.10)
    for k, true in enumerate(TRUE_BASES):
        fitted = profile.tier_base_bps[k]
        assert fitted is not None and fitted.value == pytest.approx(true, rel=0.10)
    lo, hi = profile.impact_coef_bps.ci95
    assert lo < TRUE_IMPACT < hi
    assert profile.volatility_coef is not None and abs(profile.volatility_coef.value) < 3 * max(
        profile.volatility_coef.std_error, 1e-9
    )


def test_too_few_fills_are_refused_with_the_minimum() -> None:
    with pytest.raises(InputError, match="^29 usable market-order fills; calibrate-costs needs at least 30 "):
        fit_cost_profile(_simulated_fills(29), CostConfig(), min_fills=30)


def _profile(**update: object) -> CostProfile:
    param = FittedParameter(value=1.0, std_error=0.1)
    base = CostProfile(
        n_fills=100,
        n_dropped=0,
        n_passive=0,
        passive_mean_slippage_bps=None,
        fills_from=pd.Timestamp("2026-01-05", tz="UTC").to_pydatetime(),
        fills_to=pd.Timestamp("2026-02-05", tz="UTC").to_pydatetime(),
        spread_fraction=FittedParameter(value=0.6, std_error=0.01),
        tier_base_bps=(FittedParameter(value=2.0, std_error=0.1), None, param),
        tier_fills=(50, 0, 50),
        impact_coef_bps=FittedParameter(value=80.0, std_error=4.0),
        volatility_coef=None,
        residual_std_bps=1.0,
        tier_thresholds_usd=CostConfig().tier_thresholds_usd,
        max_participation=CostConfig().max_participation,
    )
    return base.model_copy(update=update)


def test_profile_maps_fitted_parameters_and_keeps_tiers_without_fills() -> None:
    cfg = apply_cost_profile(CostConfig(), _profile())
    assert (cfg.spread_fraction, cfg.impact_coef_bps, cfg.tier_base_bps) == (0.6, 80.0, (2.0, 8.0, 1.0))
    assert cfg.fee_bps_equity == CostConfig().fee_bps_equity


def test_profile_with_a_negative_fit_or_other_tiers_is_refused() -> None:
    negative = _profile(impact_coef_bps=FittedParameter(value=-3.0, std_error=1.0))
    with pytest.raises(CostProfileError, match="impact_coef_bps=-3 is negative"):
        apply_cost_profile(CostConfig(), negative)
    with pytest.raises(CostProfileError, match="tier_thresholds_usd"):
        apply_cost_profile(CostConfig(tier_thresholds_usd=(1e8, 1e6)), _profile())


def _store_with_fills(
    root: Path,
    n_days: int,
    seed: int = 1,
    decisions: bool = True,
    fills: bool = True,
    tiers: tuple[int, ...] = (0, 1, 2),
    passive_share: float = 0.0,
    gate_mode: str | None = "aggressive",
) -> list[float]:
    """A store with one symbol per tier: daily features and one logged decision + fill per day each
    (either left out when asked), the fill's cost drawn from the model with the known parameters. Each
    decision (15:00 UTC) has the features row of the day before: the last bar closed by then.

    ``passive_share`` of the decisions (drawn) are ``passive`` instead of ``gate_mode``: a limit at
    the near touch, filled half the spread better than the mid (+- 0.3 bps); their costs are returned."""
    rng, draw_passive = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    passive_costs: list[float] = []
    days = pd.date_range("2026-01-01", periods=n_days, freq="D", tz="UTC")
    features, experience = [], []
    for k in tiers:
        volume, symbol = TIER_VOLUME[k], f"T{k}"
        vol = rng.uniform(0.005, 0.03, n_days)
        features.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": days - pd.Timedelta(days=1),
                    "asset_class": "equity",
                    "close": 100.0,
                    "dollar_volume_20": volume,
                    "vol_20": vol,
                    "spread_bps": 12.0,
                }
            )
        )
        for d, day in enumerate(days):
            decided = day + pd.Timedelta(hours=15)
            spread = rng.uniform(1.0, 30.0)
            participation = rng.uniform(0.0, 0.05) ** 2 * 20
            cost = TRUE_SPREAD_FRACTION * spread + TRUE_BASES[k] + TRUE_IMPACT * np.sqrt(participation)
            cost += rng.normal(0.0, 1.0)
            mode = gate_mode
            if passive_share and draw_passive.random() < passive_share:
                mode, cost = "passive", -0.5 * spread + draw_passive.normal(0.0, 0.3)
                passive_costs.append(cost)
            qty = participation * volume / 100.0
            state = json.dumps({"snapshot": {"spread_bps": spread}})
            base = {"symbol": symbol, "policy_version": "p@1", "side": "buy", "target_weight": 0.1}
            if decisions:
                experience.append(
                    {
                        **base,
                        "ts": decided,
                        "decision_id": f"c{d}:{symbol}",
                        "state": state,
                        "gate_mode": mode,
                    }
                )
            if fills:
                experience.append(
                    {
                        **base,
                        "ts": decided + pd.Timedelta(hours=1),
                        "decision_id": f"c{d}:{symbol}:fill",
                        "fill_price": 100.0 * (1 + cost * 1e-4),
                        "filled_qty": qty,
                        "slippage_bps": cost,
                        "latency_order_to_fill_ms": 2000.0,  # in the session: filled at once
                    }
                )
    with ReplayWriter(root) as writer:
        writer.append_features(pd.concat(features, ignore_index=True))
        frame = pd.DataFrame(experience).sort_values(["symbol", "ts"], ignore_index=True)
        writer.append_experience(frame)
    return passive_costs


def test_calibrate_costs_command_fits_store_fills_and_writes_the_profile(tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "profile.json"
    _store_with_fills(root, n_days=120)
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fills: 360 used, 0 dropped" in result.output
    profile = load_cost_profile(out)
    assert profile.tier_fills == (120, 120, 120)
    assert profile.impact_coef_bps.value == pytest.approx(TRUE_IMPACT, rel=0.10)
    assert profile.spread_fraction.value == pytest.approx(TRUE_SPREAD_FRACTION, rel=0.10)


def test_calibrate_costs_command_refuses_too_few_fills_in_one_line(tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "profile.json"
    _store_with_fills(root, n_days=5)
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: 15 usable market-order fills; calibrate-costs needs at least 30 (--min-fills)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("decisions", "fills", "expected"),
    [
        (True, False, "error: 0 usable market-order fills; calibrate-costs needs at least 30 (--min-fills)"),
        (
            False,
            True,
            "error: 0 usable market-order fills (15 more logged fills lacked inputs); calibrate-costs needs "
            "at least 30 (--min-fills)",
        ),
    ],
    ids=["decisions-without-fills", "fills-without-decisions"],
)
def test_calibrate_costs_command_refuses_a_store_without_usable_fills(
    tmp_path: Path, decisions: bool, fills: bool, expected: str
) -> None:
    # e.g. `simulate-experience` logs decisions only: refused like too few fills, not a pandas crash
    root, out = tmp_path / "store", tmp_path / "profile.json"
    _store_with_fills(root, n_days=5, decisions=decisions, fills=fills)
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == expected
    assert not out.exists()


def test_passive_fills_are_left_out_of_the_fit(tmp_path: Path) -> None:
    # half the fills are limits at the near touch, half a spread better than the mid: fitted as market
    # orders they took spread_fraction 0.7 -> 0.07, the tier bases 4 / 10 / 25 -> -0.1 / 0.9 / 11 bps
    # and impact 150 -> 90
    passive = _store_with_fills(tmp_path, n_days=240, passive_share=0.5)
    assert 300 < len(passive) < 420  # of 720
    sample = logged_fills(tmp_path)
    assert (len(sample.slippage_bps), sample.n_passive, sample.dropped) == (
        720 - len(passive),
        len(passive),
        {},
    )
    assert sample.passive_mean_slippage_bps == pytest.approx(np.mean(passive), rel=1e-12)
    profile = fit_cost_profile(sample, CostConfig())
    assert profile.spread_fraction.value == pytest.approx(TRUE_SPREAD_FRACTION, rel=0.10)
    assert profile.impact_coef_bps.value == pytest.approx(TRUE_IMPACT, rel=0.10)
    for fitted, true in zip(profile.tier_base_bps, TRUE_BASES, strict=True):
        assert fitted is not None and fitted.value == pytest.approx(true, rel=0.10)


def test_calibrate_costs_command_reports_the_passive_fills(tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "profile.json"
    passive = _store_with_fills(root, n_days=60, passive_share=0.3)
    assert 30 < len(passive) < 80  # of 180
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"fills: {180 - len(passive)} used, 0 dropped" in result.output
    line = (
        f"passive (limit) fills: {len(passive)} left out of the fit, mean slippage {np.mean(passive):.3g} bps"
    )
    assert line in result.output
    profile = load_cost_profile(out)
    assert (profile.n_fills, profile.n_passive) == (180 - len(passive), len(passive))
    assert profile.passive_mean_slippage_bps == pytest.approx(np.mean(passive), rel=1e-12)


def test_too_few_market_order_fills_are_refused_naming_the_passive_ones(tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "profile.json"
    passive = _store_with_fills(root, n_days=20, passive_share=0.6)  # 60 fills, about 24 market orders
    market = 60 - len(passive)
    assert 10 <= market < 30
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: {market} usable market-order fills ({len(passive)} passive (limit) fills left out of the "
        "fit); calibrate-costs needs at least 30 (--min-fills)"
    )
    assert not out.exists()


@pytest.mark.parametrize("gate_mode", [None, "hold"], ids=["missing", "places-no-order"])
def test_fills_of_an_unknown_gate_mode_are_left_out_and_counted(
    tmp_path: Path, gate_mode: str | None
) -> None:
    # a market or a limit order cannot be told apart: never fitted, counted as dropped
    root = tmp_path / "store"
    passive = _store_with_fills(root, n_days=20, passive_share=0.5, gate_mode=gate_mode)
    sample = logged_fills(root)
    assert len(sample.slippage_bps) == 0
    assert sample.dropped == {
        "gate_mode of the decision missing or unknown (market or limit order cannot be told)": 60
        - len(passive)
    }
    assert (sample.n_passive, sample.passive_mean_slippage_bps) == (
        len(passive),
        pytest.approx(np.mean(passive)),
    )
    with pytest.raises(
        InputError, match=rf"^0 usable market-order fills \({len(passive)} passive .* lacked inputs\)"
    ):
        fit_cost_profile(sample, CostConfig())


def test_a_version_1_profile_fitted_with_passive_fills_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    old = _profile().model_dump(mode="json", exclude={"n_passive", "passive_mean_slippage_bps"})
    path.write_text(json.dumps({**old, "version": 1}))
    with pytest.raises(
        CostProfileError, match="has version=1: it fitted passive .* run raytrade calibrate-costs"
    ):
        load_cost_profile(path)
    path.write_text(_profile().model_dump_json())
    assert load_cost_profile(path) == _profile()


def _append_fill(
    root: Path, symbol: str, decided: pd.Timestamp, slippage: float, spread: float | None = 5.0
) -> None:
    """One logged decision (``spread`` in its snapshot, or none) and its fill of 1,000 x 100."""
    snapshot = {} if spread is None else {"spread_bps": spread}
    base = {"symbol": symbol, "policy_version": "p@1", "side": "buy", "target_weight": 0.1}
    decision_id = f"c{decided:%Y%m%d%H%M}:{symbol}"
    state = json.dumps({"snapshot": snapshot})
    rows = [
        {**base, "ts": decided, "decision_id": decision_id, "state": state, "gate_mode": "aggressive"},
        {
            **base,
            "ts": decided + pd.Timedelta(hours=1),
            "decision_id": f"{decision_id}:fill",
            "fill_price": 100.0,
            "filled_qty": 1000.0,
            "slippage_bps": slippage,
            "latency_order_to_fill_ms": 2000.0,  # filled at once
        },
    ]
    with ReplayWriter(root) as writer:
        writer.append_experience(pd.DataFrame(rows))


def _three_daily_rows(
    root: Path, dollar_volume: float | list[float], vol: float | list[float], spread: float | list[float]
) -> pd.DatetimeIndex:
    """Features of T1 on three daily rows stamped 00:00 UTC from 2026-03-02; their stamps."""
    days = pd.date_range("2026-03-02", periods=3, freq="D", tz="UTC")
    columns = {"dollar_volume_20": dollar_volume, "vol_20": vol, "spread_bps": spread}
    features = pd.DataFrame({"symbol": "T1", "ts": days, "asset_class": "equity", "close": 100.0, **columns})
    with ReplayWriter(root) as writer:
        writer.append_features(features)
    return days


def test_a_decision_sees_only_the_features_of_bars_closed_before_it(tmp_path: Path) -> None:
    # daily rows are stamped 00:00 UTC and built from that day's whole bar: a decision at 13:00 UTC
    # on day D (before the open) has day D-1's volume, volatility and spread, as the simulator charges
    # a fill at open[t+1] with bar t's volume; a decision at D+1 00:00 has day D's (its bar closed)
    root = tmp_path / "store"
    days = _three_daily_rows(
        root, dollar_volume=[1e7, 2e7, 4e7], vol=[0.01, 0.02, 0.04], spread=[11.0, 22.0, 44.0]
    )
    _append_fill(root, "T1", days[0] + pd.Timedelta(hours=13), 3.0)  # no bar closed yet: left out
    _append_fill(root, "T1", days[1] + pd.Timedelta(hours=13), 3.0, spread=None)
    _append_fill(root, "T1", days[2] + pd.Timedelta(hours=13), 3.0, spread=None)
    _append_fill(root, "T1", days[2] + pd.Timedelta(days=1), 3.0, spread=None)
    sample = logged_fills(root)
    assert sample.dropped == {"no features bar closed before the decision": 1}
    assert list(sample.decision_id) == [
        "c202603031300:T1:fill",
        "c202603041300:T1:fill",
        "c202603050000:T1:fill",
    ]
    assert sample.dollar_volume.tolist() == [1e7, 2e7, 4e7]
    assert sample.participation.tolist() == [1e5 / 1e7, 1e5 / 2e7, 1e5 / 4e7]
    assert sample.vol_bps == pytest.approx([100.0, 200.0, 400.0], rel=1e-12)
    assert sample.spread_bps.tolist() == [11.0, 22.0, 44.0]


def test_a_fill_whose_latest_closed_bar_is_stale_is_left_out_and_counted(tmp_path: Path) -> None:
    """A reviewer logged fills months after the store's last bar (a nightly ingest that had stopped,
    a symbol that no longer trades): each took the dollar volume, tier and volatility of a bar up to
    a year old, and all were fitted. Now a fill more than 96 h after its latest closed bar is not."""
    root = tmp_path / "store"
    days = _three_daily_rows(root, dollar_volume=1e7, vol=0.01, spread=10.0)
    closed = days[-1] + pd.Timedelta(days=1)  # the last row's bar closes at the next midnight
    _append_fill(root, "T1", closed + pd.Timedelta(hours=95), 3.0)  # within 96 h: kept
    _append_fill(root, "T1", closed + pd.Timedelta(hours=97), 3.0)
    _append_fill(root, "T1", closed + pd.Timedelta(days=300), 3.0)
    sample = logged_fills(root)
    (reason,) = sample.dropped
    assert (
        reason.startswith("features stale: the latest bar closed more than 96 h")
        and sample.dropped[reason] == 2
    )
    assert list(sample.decision_id) == [f"c{closed + pd.Timedelta(hours=95):%Y%m%d%H%M}:T1:fill"]


def test_a_decision_does_not_see_a_central_midnight_bar_before_its_real_close(tmp_path: Path) -> None:
    # Alpaca stamps daily crypto at midnight US Central: 23 h apart across the spring-forward Sunday
    # (2024-03-10), so a bar length of 23 h closed every bar an hour early. The bar opened 03-15 05:00
    # UTC closes at 03-16 05:00: a decision at 04:00 has the bar before; one after 06:00 (its stamp +
    # 25 h, the latest a local day can end) has it
    root = tmp_path / "store"
    stamps = pd.date_range("2024-03-01", "2024-03-20", freq="D", tz="America/Chicago").tz_convert("UTC")
    volume = 1e7 * np.arange(1, len(stamps) + 1)
    features = pd.DataFrame(
        {
            "symbol": "BTCUSD",
            "ts": stamps,
            "asset_class": "crypto",
            "close": 100.0,
            "dollar_volume_20": volume,
            "vol_20": 0.01,
            "spread_bps": 5.0,
        }
    )
    with ReplayWriter(root) as writer:
        writer.append_features(features)
    bar = stamps.get_loc(pd.Timestamp("2024-03-15 05:00", tz="UTC"))
    _append_fill(root, "BTCUSD", pd.Timestamp("2024-03-16 04:00", tz="UTC"), 3.0)  # 1 h before its close
    _append_fill(root, "BTCUSD", pd.Timestamp("2024-03-17 06:00", tz="UTC"), 3.0)
    sample = logged_fills(root)
    assert list(sample.decision_id) == ["c202403160400:BTCUSD:fill", "c202403170600:BTCUSD:fill"]
    assert sample.dollar_volume.tolist() == [volume[bar - 1], volume[bar + 1]]


def _named(fills: FillSample) -> FillSample:
    return fills._replace(decision_id=np.array([f"c{i}:X:fill" for i in range(len(fills.slippage_bps))]))


def test_one_mislogged_fill_is_capped_named_by_id_and_barely_moves_the_estimates() -> None:
    fills = _named(_simulated_fills(300))
    clean = fit_cost_profile(fills, CostConfig())
    assert (clean.n_fills, clean.n_outliers, clean.outliers) == (300, 0, ())  # normal noise passes
    # the largest, widest-spread mega-cap fill logged against a stale mid: plain least squares moved
    # spread_fraction 0.71 -> 2.05, the tier bases by -19 to -62 bps and impact 149 -> 367
    tier0 = np.asarray(fills.dollar_volume) >= CostConfig().tier_thresholds_usd[0]
    k = int(np.argmax(np.sqrt(fills.participation) * fills.spread_bps * tier0))
    slippage = fills.slippage_bps.copy()
    slippage[k] = 2500.0
    profile = fit_cost_profile(fills._replace(slippage_bps=slippage), CostConfig())
    assert (profile.n_fills, profile.n_outliers, profile.tier_fills[0]) == (300, 1, clean.tier_fills[0])
    assert [(o.decision_id, o.slippage_bps) for o in profile.outliers] == [(f"c{k}:X:fill", 2500.0)]
    assert profile.spread_fraction.value == pytest.approx(clean.spread_fraction.value, abs=0.005)
    # capped at the robust fit + 6 scales, it still counts (a costly fill raises costs), by little
    assert profile.impact_coef_bps.value == pytest.approx(clean.impact_coef_bps.value, abs=1.0)
    for fitted, reference in zip(profile.tier_base_bps, clean.tier_base_bps, strict=True):
        assert fitted is not None and reference is not None
        assert fitted.value == pytest.approx(reference.value, abs=0.25)
    apply_cost_profile(CostConfig(), profile)  # and the cost model takes it


def test_many_fills_off_the_model_are_refused_naming_the_worst() -> None:
    fills = _named(_simulated_fills(100))
    slippage = fills.slippage_bps.copy()
    slippage[:6] += np.arange(1, 7) * 1000.0  # 6 % of the fills: more than the 5 % the screen leaves out
    refusal = r"^6 of 100 fills lie more than 6 robust scales .* worst: c5:X:fill"
    with pytest.raises(InputError, match=refusal):
        fit_cost_profile(fills._replace(slippage_bps=slippage), CostConfig())


def test_fills_mostly_at_exactly_the_modelled_cost_calibrate_and_an_outlier_is_still_capped() -> None:
    fills = _named(_simulated_fills(300))
    tier = liquidity_tier(
        fills.dollar_volume, CostConfig()
    )  # spreads < 30 bps, participation < 5 %: uncapped
    model = TRUE_SPREAD_FRACTION * fills.spread_bps + np.asarray(TRUE_BASES)[tier]
    model += TRUE_IMPACT * np.sqrt(fills.participation)
    exact = np.arange(300) % 5 < 3  # 60 % of the fills at exactly the modelled cost: a median residual of 0
    slippage = np.where(exact, model, fills.slippage_bps)
    slippage[3] += 400.0  # and one mis-logged fill among the others (1.5 bps of noise)
    profile = fit_cost_profile(fills._replace(slippage_bps=slippage), CostConfig())
    # the scale of the fills off the fit (1.5 bps of noise x ~1.1), not the 0.01 bps floor (0.06 bps
    # threshold: each of the 120 noisy fills capped, 40 %, refused)
    assert 6 * 1.0 < profile.outlier_threshold_bps < 6 * 2.5
    assert [(o.decision_id, o.slippage_bps) for o in profile.outliers] == [("c3:X:fill", slippage[3])]
    assert profile.n_outliers == 1
    assert profile.spread_fraction.value == pytest.approx(TRUE_SPREAD_FRACTION, abs=0.01)
    assert profile.impact_coef_bps.value == pytest.approx(TRUE_IMPACT, rel=0.05)


def test_fills_nearly_all_on_the_fit_keep_the_floor_and_cap_every_other_one() -> None:
    """Few fills off the fit: the outliers the screen allows could be half of them, so they do not set
    the scale; each is capped at the fit, and more than 5 % of them are refused."""
    fills = _named(_simulated_fills(300))
    tier = liquidity_tier(fills.dollar_volume, CostConfig())
    model = TRUE_SPREAD_FRACTION * fills.spread_bps + np.asarray(TRUE_BASES)[tier]
    model += TRUE_IMPACT * np.sqrt(fills.participation)
    slippage = model.copy()
    slippage[:6] += 1000.0  # 2 % off the fit, all mis-logged: the off-fit fills' own median is 1000 bps
    slippage[6:12] += 1.0
    profile = fit_cost_profile(fills._replace(slippage_bps=slippage), CostConfig())
    assert profile.outlier_threshold_bps == pytest.approx(6 * MIN_SCALE_BPS)
    # all twelve capped (a scale from the twelve alone, ~740 bps, would have let the 1000s through)
    assert profile.n_outliers == 12
    assert {o.decision_id for o in profile.outliers} < {f"c{i}:X:fill" for i in range(6)}  # worst named


def test_calibrate_costs_command_names_the_fills_it_caps(tmp_path: Path) -> None:
    root, out = tmp_path / "store", tmp_path / "profile.json"
    _store_with_fills(root, n_days=20, tiers=(0, 1))
    _append_fill(root, "T1", pd.Timestamp("2026-01-10 13:00", tz="UTC"), 1e200)  # finite: the writer takes it
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fills: 41 used, 0 dropped, 1 capped as outliers" in result.output
    assert "worst first: c202601101300:T1:fill (1e+200 bps, residual 1e+200)" in result.output
    profile = load_cost_profile(out)
    assert profile.n_outliers == 1 and profile.outliers[0].decision_id == "c202601101300:T1:fill"
    assert profile.spread_fraction.value == pytest.approx(TRUE_SPREAD_FRACTION, rel=0.10)


def test_calibrate_costs_command_refuses_an_implausible_estimate_in_one_line(tmp_path: Path) -> None:
    # the only fill of tier 2 determines its base alone (no residual to screen it by): 50,000 bps
    root, out = tmp_path / "store", tmp_path / "profile.json"
    _store_with_fills(root, n_days=20, tiers=(0, 1))
    days = pd.date_range("2026-01-01", periods=2, freq="D", tz="UTC")
    with ReplayWriter(root) as writer:
        writer.append_features(
            pd.DataFrame(
                {
                    "symbol": "T2",
                    "ts": days,
                    "asset_class": "equity",
                    "close": 100.0,
                    "dollar_volume_20": TIER_VOLUME[2],
                    "vol_20": 0.01,
                    "spread_bps": 12.0,
                }
            )
        )
    _append_fill(root, "T2", days[1] + pd.Timedelta(hours=15), 5e4)
    result = CliRunner().invoke(main, ["calibrate-costs", "--replay", str(root), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: implausible estimate tier_base_bps[2]=4.99")
    assert "the largest logged costs among the fills used: c202601021500:T2:fill (5e+04 bps)" in lines[0]
    assert not out.exists()


def test_tune_trains_and_scores_with_the_cost_profile(tmp_path: Path) -> None:
    from raytrade.cluster.tune import TuneOptions

    path = tmp_path / "profile.json"
    path.write_text(_profile().model_dump_json())
    costs = TuneOptions(spec="ppo", replay=tmp_path, cost_profile=path).sim_overrides()["costs"]
    assert (costs["spread_fraction"], costs["impact_coef_bps"], costs["tier_base_bps"]) == (
        0.6,
        80.0,
        [2.0, 8.0, 1.0],
    )
    assert TuneOptions(spec="ppo", replay=tmp_path).sim_overrides() == {}


def test_a_spread_fraction_overrides_the_cost_models_and_the_profiles(tmp_path: Path) -> None:
    from raytrade.cluster.tune import TuneOptions

    path = tmp_path / "profile.json"
    path.write_text(_profile().model_dump_json())
    alone = TuneOptions(spec="ppo", replay=tmp_path, spread_fraction=0.0)
    costs = alone.sim_overrides()["costs"]
    assert costs == CostConfig(spread_fraction=0.0).model_dump(mode="json")
    assert "--spread-fraction 0.0" in alone.command()
    with_profile = TuneOptions(spec="ppo", replay=tmp_path, cost_profile=path, spread_fraction=0.1)
    costs = with_profile.sim_overrides()["costs"]
    # the profile's fitted slippage kept, only the spread's share replaced
    assert (costs["spread_fraction"], costs["impact_coef_bps"], costs["tier_base_bps"]) == (
        0.1,
        80.0,
        [2.0, 8.0, 1.0],
    )
    with pytest.raises(ValueError, match="spread_fraction"):
        TuneOptions(spec="ppo", replay=tmp_path, spread_fraction=1.5)


def test_an_offline_search_refuses_a_spread_fraction(tmp_path: Path) -> None:
    from raytrade.cluster.tune import TuneOptions, check_offline_env
    from raytrade.tune_specs import get_spec

    opts = TuneOptions(spec="bc", replay=tmp_path, spread_fraction=0.0)
    with pytest.raises(InputError, match=r"--spread-fraction 0.0: spec 'bc' is offline"):
        check_offline_env(opts, get_spec("bc"))


def test_evaluate_refuses_a_missing_cost_profile_before_replaying(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    args = [
        "evaluate",
        "--replay",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
        "--cost-profile",
        str(missing),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cost profile {str(missing)!r} does not exist"
    assert not (tmp_path / "r").exists()


def _one_stock(n_bars: int = 4) -> MarketData:
    """One equity at a flat 100 with a 20 bps spread and 1e7 of dollar volume per bar (tier 1)."""
    flat = np.full((n_bars, 1), 100.0)
    return MarketData(
        ts=np.datetime64("2026-01-05", "us") + np.arange(n_bars).astype("timedelta64[D]"),
        symbols=("A",),
        asset_class=("equity",),
        open=flat,
        close=flat,
        listed=np.ones((n_bars, 1), dtype=bool),
        spread_bps=np.full((n_bars, 1), 20.0),
        dollar_volume=np.full((n_bars, 1), 1e7),
        features=np.zeros((n_bars, 1, 1), dtype=np.float32),
        feature_names=("x",),
        regime_code=np.zeros((n_bars, 1), dtype=np.int8),
    )


def test_cost_overrun_reward_term_penalises_costs_above_the_projected_envelope() -> None:
    def first_reward(reward: RewardConfig) -> float:
        sim = MarketSimulator(_one_stock(), SimulatorConfig(episode_len=2, reward=reward), n_envs=1, seed=0)
        sim.reset(starts=np.array([0]))
        return float(sim.step(np.array([[0.2]])).reward[0])

    off = first_reward(RewardConfig())
    on = first_reward(RewardConfig(cost_overrun_lambda=1.0))
    # 20,000 traded: fee 5 + half-spread 10 + tier-1 base 8 + impact 100 * sqrt(0.002) bps, against
    # the loop's projected 6 bps; the overrun is charged as a fraction of the 100,000 equity
    cost = 20_000 * (5 + 10 + 8 + 100 * np.sqrt(0.002)) * 1e-4
    assert off - on == pytest.approx((cost - 20_000 * 6e-4) / 100_000, rel=1e-9)
    assert RewardConfig().cost_overrun_lambda == 0.0  # off by default


def test_every_fill_row_is_fitted_or_counted_under_its_reason(tmp_path: Path) -> None:
    """A fill the live loop logged without a slippage (its decision had no mid) was left out without a
    word; so were fills of no quantity; a fill filed under another symbol's decision was fitted with
    that symbol's dollar volume. Each is counted now, under its reason."""
    root = tmp_path / "store"
    _store_with_fills(root, n_days=60)
    base = {"policy_version": "p@1", "side": "buy", "target_weight": 0.1}
    day = pd.Timestamp("2026-02-10 15:00", tz="UTC")
    rows: list[dict[str, Any]] = []
    for i, (symbol, fill_symbol, qty, slippage) in enumerate(
        [("T1", "T1", 50.0, np.nan), ("T1", "T1", 0.0, 5.0), ("T1", "T2", 50.0, 5.0)]
    ):
        decided = day + pd.Timedelta(minutes=i)
        state = json.dumps({"snapshot": {"spread_bps": 10.0}})
        rows += [
            {
                **base,
                "symbol": symbol,
                "ts": decided,
                "decision_id": f"h{i}:T1",
                "state": state,
                "gate_mode": "aggressive",
            },
            {
                **base,
                "symbol": fill_symbol,
                "ts": decided + pd.Timedelta(hours=1),
                "decision_id": f"h{i}:T1:fill",
                "fill_price": 100.0,
                "filled_qty": qty,
                "slippage_bps": slippage,
                "latency_order_to_fill_ms": 2000.0,
            },
        ]
    with ReplayWriter(root) as writer:
        writer.append_experience(pd.DataFrame(rows))
    sample = logged_fills(root)
    assert len(sample.slippage_bps) == 180
    assert sample.dropped == {
        "filled_qty missing or not > 0": 1,
        "symbol differs from its decision's": 1,
        "slippage_bps missing (no mid when decided) and no open to measure the fill from (it did not "
        "wait for the open, or it is a limit order)": 1,
    }


@pytest.mark.parametrize("price", [0.0, -100.0])
def test_the_store_refuses_a_fill_at_a_price_at_or_below_zero(tmp_path: Path, price: float) -> None:
    """A negative price crashed the fit (SVD did not converge); a 0 was fitted as a fill of no notional."""
    row = {
        "symbol": "T1",
        "ts": pd.Timestamp("2026-02-10 16:00", tz="UTC"),
        "decision_id": "h:T1:fill",
        "policy_version": "p@1",
        "side": "buy",
        "fill_price": price,
        "filled_qty": 5.0,
    }
    with ReplayWriter(tmp_path) as writer, pytest.raises(ReplayValidationError) as refused:
        writer.append_experience(pd.DataFrame([row]))
    assert str(refused.value) == (
        f"experience: row 0, column 'fill_price', value {price!r}: must be > 0 (decision 'h:T1:fill')"
    )
