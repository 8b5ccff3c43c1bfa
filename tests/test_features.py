"""Feature groups: exact values on crafted bars, no look-ahead, determinism, reader agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytrade.replay import read, read_frame
from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.features.microstructure import corwin_schultz_bps
from raytrade.replay.features.regime import correlation_clusters
from raytrade.replay.schema import FEATURES_SCHEMA
from raytrade.replay.sources.csv_dir import read_csv_folder
from raytrade.replay.sources.synthetic import generate


def crafted_bars(
    closes: list[float], symbol: str = "AAA", asset_class: str = "equity", **quote: float
) -> pd.DataFrame:
    n = len(closes)
    close = np.array(closes)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            # an equity's weekdays (an equity trading on weekends is refused at ingest), crypto's every day
            "ts": pd.date_range(
                "2024-01-01", periods=n, freq="B" if asset_class == "equity" else "D", tz="UTC"
            ),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": 1e6,
            "asset_class": asset_class,
            "source": "test",
        }
    )
    for key, value in quote.items():
        frame[key] = value
    return frame


def test_columns_and_types_match_the_schema() -> None:
    features = build_features(generate(4, 0.5, seed=1, n_crypto=1).bars)
    assert list(features.columns) == FEATURES_SCHEMA.names


def test_drawdown_returns_and_kelly_by_hand() -> None:
    closes = [100, 110, 99, 104.5, 110, 121, 115, 120, 118, 122]
    f = build_features(crafted_bars(closes))
    assert f["drawdown"].tolist()[:4] == pytest.approx([0.0, 0.0, -0.1, -0.05])
    assert f["ret_1"].iloc[1] == pytest.approx(np.log(1.1))
    # kelly_lite = min(0.15, max(0, 0.2 * |fc_mean| / sigma^2)), sigma = std of the last 6 simple returns.
    row = f.iloc[-1]
    simple = pd.Series(closes).pct_change().iloc[-6:]
    expected = min(0.15, 0.2 * abs(row["fc_mean"]) / simple.std() ** 2) if row["fc_gate_open"] else 0.0
    assert row["kelly_lite"] == pytest.approx(expected)
    assert row["leverage_cap"] == 2.0
    assert row["financing_bps"] == pytest.approx(0.0675 / 252 * 1e4)


def test_quoted_spread_depth_and_imbalance() -> None:
    f = build_features(crafted_bars([100.0] * 3, bid=99.95, ask=100.05, bid_size=300.0, ask_size=100.0))
    row = f.iloc[-1]
    assert bool(row["spread_is_quoted"])
    assert row["spread_bps"] == pytest.approx(0.10 / 100.0 * 1e4)
    assert row["depth_usd"] == pytest.approx(300 * 99.95 + 100 * 100.05)
    assert row["imbalance"] == pytest.approx(0.5)
    assert row["book_slope"] == pytest.approx(5.0 / (row["depth_usd"] / 1e6))


def test_estimated_spread_when_no_quotes_is_flagged_and_matches_corwin_schultz() -> None:
    high = pd.DataFrame({"A": [101.0, 102.0]})
    low = pd.DataFrame({"A": [99.0, 100.0]})
    beta = np.log(101 / 99) ** 2 + np.log(102 / 100) ** 2
    gamma = np.log(102 / 99) ** 2
    k = 3 - 2 * np.sqrt(2)
    alpha = (np.sqrt(2 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    expected = max(0.0, 2 * (np.exp(alpha) - 1) / (1 + np.exp(alpha))) * 1e4
    assert corwin_schultz_bps(high, low)["A"].iloc[1] == pytest.approx(expected)
    f = build_features(crafted_bars([100.0, 101.0, 100.5]))
    assert not f["spread_is_quoted"].any()
    assert f["depth_usd"].isna().all() and f["fill_prob"].isna().all()


def test_gate_reasons_for_spread_edge_and_history() -> None:
    cfg = FeatureConfig(min_history=3)
    wide = crafted_bars([100 * 1.02**i for i in range(30)], bid=99.0, ask=101.0, bid_size=10.0, ask_size=10.0)
    f = build_features(wide, config=cfg)
    assert f["fc_gate_reason"].iloc[0].startswith("history")
    assert "spread" in f["fc_gate_reason"].iloc[-1]  # 200 bps > 25 bps cap
    assert not f["fc_gate_open"].iloc[-1] and f["kelly_lite"].iloc[-1] == 0.0
    flat = crafted_bars(
        [100.0 + 0.001 * (i % 2) for i in range(30)], bid=99.999, ask=100.001, bid_size=10.0, ask_size=10.0
    )
    g = build_features(flat, config=cfg).iloc[-1]
    assert "edge" in g["fc_gate_reason"] and g["fc_edge_threshold_bps"] == 16.0  # max(6 + 10, 15)


def test_crypto_threshold_and_leverage() -> None:
    f = build_features(
        crafted_bars([10.0 + 0.1 * i for i in range(10)], symbol="SOLUSD", asset_class="crypto")
    )
    assert (f["fc_edge_threshold_bps"] == 40.0).all()
    assert (f["leverage_cap"] == 1.0).all()
    assert f["financing_bps"].iloc[0] == pytest.approx(0.0675 / 365 * 1e4)


def test_imported_forecasts_replace_the_baseline_and_drive_consensus() -> None:
    bars = crafted_bars([100.0 + i for i in range(30)])
    ts = bars["ts"].iloc[-1]
    forecasts = pd.DataFrame(
        {
            "symbol": "AAA", "ts": [ts, ts], "source": ["toto", "kronos"], "horizon": [1, 1],
            "mean": [0.01, -0.004], "std": [0.02, 0.02], "skew": [0.0, 0.0],
            "q05": [-0.02, -0.03], "q25": [0.0, -0.01], "q50": [0.01, -0.004],
            "q75": [0.02, 0.005], "q95": [0.04, 0.02],
        }
    )  # fmt: skip
    f = build_features(bars, forecasts=forecasts).iloc[-1]
    assert not f["fc_fallback"] and f["fc_n_sources"] == 2
    assert f["fc_mean"] == pytest.approx(0.003) and f["fc_q95"] == pytest.approx(0.03)
    assert not f["fc_consensus_ok"] and "consensus" in f["fc_gate_reason"]
    earlier = build_features(bars, forecasts=forecasts).iloc[-2]
    assert earlier["fc_fallback"] and earlier["fc_n_sources"] == 1


def test_correlation_clusters_group_correlated_columns() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(200), rng.standard_normal(200)
    cols = np.column_stack([a, b + 0.1 * rng.standard_normal(200), a + 0.1 * rng.standard_normal(200), b])
    assert correlation_clusters(cols, 0.3).tolist() == [0, 1, 0, 1]


def test_synthetic_same_seed_same_store_rows() -> None:
    one, two = generate(6, 1.0, seed=11, n_crypto=1), generate(6, 1.0, seed=11, n_crypto=1)
    pd.testing.assert_frame_equal(one.bars, two.bars)
    pd.testing.assert_frame_equal(build_features(one.bars, one.macro), build_features(two.bars, two.macro))
    assert not generate(6, 1.0, seed=12).bars["close"].equals(one.bars["close"])


def test_synthetic_universe_is_ragged_with_quotes_regimes_and_macro() -> None:
    market = generate(20, 2.0, seed=2, n_crypto=2)
    first = market.bars.groupby("symbol")["ts"].min()
    assert (first > first.min()).sum() >= 3  # late listings
    assert market.bars["bid"].notna().all() and (market.bars["ask"] > market.bars["bid"]).all()
    assert set(market.regimes.unique()) == {"calm", "choppy", "crisis"}
    assert set(market.macro["symbol"]) == {"vix", "vix_3m", "curve_slope"}
    crypto_days = market.bars.loc[market.bars["asset_class"] == "crypto", "ts"].dt.dayofweek
    equity_days = market.bars.loc[market.bars["asset_class"] == "equity", "ts"].dt.dayofweek
    assert crypto_days.max() == 6 and equity_days.max() == 4
    kurtosis = market.bars.groupby("symbol")["close"].apply(lambda c: np.log(c).diff().kurt()).median()
    assert kurtosis > 1.0  # fat tails


@pytest.mark.slow
def test_no_look_ahead_on_shared_stocks(shared_data: Path) -> None:
    bars = read_csv_folder(shared_data / "yahoo")
    cutoff = pd.Timestamp("2024-06-28", tz="UTC")
    full = build_features(bars)
    truncated = build_features(bars[bars["ts"] <= cutoff])
    left = full[full["ts"] <= cutoff].reset_index(drop=True)
    assert len(left) == len(truncated) > 20_000
    pd.testing.assert_frame_equal(left, truncated.reset_index(drop=True), check_exact=True)


def test_csv_ingest_of_shared_data_keeps_ragged_listings_and_calendars(shared_data: Path) -> None:
    bars = read_csv_folder(shared_data)
    first = bars.groupby("symbol")["ts"].min()
    assert first["ARM"] >= pd.Timestamp("2023-09-01", tz="UTC")
    assert first["AAPL" if "AAPL" in first else "ALNY"] == pd.Timestamp("2020-01-02", tz="UTC")
    features = build_features(bars)
    assert len(features) == len(bars)  # one row per real bar, nothing forward-filled before listing
    arm = features[features["symbol"] == "ARM"]
    assert arm["ts"].min() == first["ARM"]
    sui = features[features["symbol"] == "SUIUSDT"]
    assert (sui["asset_class"] == "crypto").all() and sui["ts"].dt.dayofweek.max() == 6
    assert (features.loc[features["asset_class"] == "equity", "ts"].dt.dayofweek <= 4).all()


def test_ray_data_read_equals_pandas_read(synthetic_store: Path, ray_session: None) -> None:
    symbols = ["SYN001", "SYC00USD"]
    start, end = "2018-06-01", "2019-03-31"
    via_ray = read(synthetic_store, "features", symbols=symbols, start=start, end=end).to_pandas()
    via_pandas = read_frame(synthetic_store, "features", symbols=symbols, start=start, end=end)
    via_ray = via_ray.sort_values(["symbol", "ts"], ignore_index=True)
    # Ray Data may hand a double column holding nulls to pandas as double[pyarrow] with <NA> (e.g.
    # an opt-in feature not built here, null in every row); pandas reads float64 NaN: the same values.
    arrow_doubles = [c for c in via_ray.columns if str(via_ray[c].dtype) == "double[pyarrow]"]
    via_ray = via_ray.astype({c: "float64" for c in arrow_doubles})
    assert len(via_pandas) > 300
    pd.testing.assert_frame_equal(via_ray, via_pandas, check_dtype=False)


def test_a_crypto_only_store_has_volatility_proxies_and_loads_into_an_env(tmp_path: Path) -> None:
    """With no equities the vix proxies came from nowhere: ``vix_level`` and ``vix_term`` had no value,
    and every env (which observes them by default) refused the store. They are the coins' own now:
    their median ``vol_20`` annualised at 365 bars a year."""
    from raytrade.envs.synthetic_market import market_data_from_config
    from raytrade.replay.ingest import ingest_frames

    market = generate(n_symbols=1, years=2.0, seed=4, n_crypto=3)
    coins = market.bars[market.bars["asset_class"] == "crypto"]
    features = build_features(coins)
    vol = features.pivot(index="ts", columns="symbol", values="vol_20").median(axis=1)
    vix = features.groupby("ts")["vix_level"].first()
    np.testing.assert_allclose(vix.dropna(), (vol * np.sqrt(365) * 100).loc[vix.dropna().index], rtol=1e-12)
    assert vix.notna().mean() > 0.9
    ingest_frames(tmp_path / "store", coins, None, show_progress=False)
    data = market_data_from_config({"kind": "replay", "root": str(tmp_path / "store"), "split": "train"})
    k = data.feature_names.index("vix_level")
    assert data.periods_per_year == 365 and np.isfinite(data.features[:, :, k]).all()
    assert (data.features[:, :, k] != 0).any()
