"""What a policy sees: feature groups, the train-window normaliser, the explicit missing channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from raytrade.envs.config import PortfolioEnvConfig
from raytrade.envs.gym_envs import PortfolioEnv, batched_observation
from raytrade.envs.market_data import MarketData
from raytrade.envs.normalization import FeatureNormalizer, fit_normalizer
from raytrade.envs.replay_loader import (
    DEFAULT_FEATURES,
    FEATURE_GROUPS,
    load_market_data,
    resolve_feature_groups,
)
from raytrade.envs.simulator import Observation
from raytrade.tune_specs import get_spec
from raytrade.tune_specs.spec import train_normalizer


def _market(values: np.ndarray, listed: np.ndarray, missing: np.ndarray | None = None) -> MarketData:
    t, n, f = values.shape
    price = np.full((t, n), 100.0)
    return MarketData(
        ts=np.arange(t).astype("datetime64[D]").astype("datetime64[us]"),
        symbols=tuple(f"S{i}" for i in range(n)),
        asset_class=("equity",) * n,
        open=price,
        close=price,
        listed=listed,
        spread_bps=np.full((t, n), 5.0),
        dollar_volume=np.full((t, n), 1e8),
        features=values.astype(np.float32),
        feature_names=tuple(f"x{k}" for k in range(f)),
        regime_code=np.ones((t, n), np.int8),
        feature_missing=missing,
    )


def test_groups_resolve_base_enriched_and_a_union_in_first_seen_order() -> None:
    assert resolve_feature_groups("base") == FEATURE_GROUPS["base"]
    assert resolve_feature_groups("enriched") == DEFAULT_FEATURES
    assert resolve_feature_groups("microstructure, macro,microstructure") == (
        "spread_bps",
        "vix_level",
        "vix_term",
        "sector_momentum",
    )
    with pytest.raises(ValueError, match="unknown feature group 'news'; known: enriched, base, returns"):
        resolve_feature_groups("returns,news")


@pytest.mark.parametrize("name", ["ppo", "distrl", "gnn", "gating"])
def test_on_policy_specs_observe_the_enriched_groups(name: str) -> None:
    assert get_spec(name).required_features == DEFAULT_FEATURES


def test_robust_fit_uses_listed_present_values_only() -> None:
    # column 0: listed values 1, 2, 3, 4, 100 (the 999 is unlisted, the -50 flagged missing)
    values = np.array([[[1.0], [999.0]], [[2.0], [3.0]], [[4.0], [-50.0]], [[100.0], [7.0]]])
    listed = np.array([[True, False], [True, True], [True, True], [True, False]])
    missing = np.zeros(values.shape, bool)
    missing[2, 1, 0] = True
    norm = fit_normalizer(_market(values, listed, missing), ["x0"])
    # median of (1, 2, 3, 4, 100) = 3; IQR = 4 - 2 = 2 -> scale 2 / 1.349
    assert norm.center == (3.0,)
    assert norm.scale == pytest.approx((2.0 / 1.349,))


def test_standard_fit_and_a_constant_column_is_only_centred() -> None:
    values = np.array([[[1.0, 5.0]], [[3.0, 5.0]]])
    norm = fit_normalizer(_market(values, np.ones((2, 1), bool)), ["x0", "x1"], method="standard")
    assert norm.center == (2.0, 5.0)
    assert norm.scale == (1.0, 1.0)  # std of (1, 3) is 1; (5, 5) has none -> 1


def test_encoder_normalises_clips_and_flags_missing_values() -> None:
    norm = FeatureNormalizer(columns=("a", "b"), center=(1.0, 0.0), scale=(2.0, 0.1), clip=3.0)
    feats = np.array([[[5.0, 0.05], [0.0, 9.0]]], np.float32)  # [B=1, N=2, F=2]
    missing = np.array([[[False, False], [True, False]]])
    ob = Observation(
        features=feats,
        weights=np.zeros((1, 2)),
        cash_fraction=np.ones(1),
        drawdown=np.zeros(1),
        kill_active=np.zeros(1, bool),
        kill_bars=np.zeros(1),
        mask=np.ones((1, 2), bool),
        progress=np.zeros(1),
        missing=missing,
    )
    out = batched_observation(ob, None, None, flat=False, normalizer=norm)["features"]
    # asset 0: (5 - 1) / 2 = 2, 0.05 / 0.1 = 0.5, none missing; asset 1: a missing -> 0, b clipped to 3
    np.testing.assert_allclose(out, [[[2.0, 0.5, 0.0], [0.0, 3.0, 0.5]]])


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "dict"])
def test_the_progress_slot_is_encoded_as_zero_whatever_the_episodes_progress(flat: bool) -> None:
    """A live account has no episode: serving can only show 0 there, so training, scoring and
    evaluation show 0 too (what is scored is what is served); the rest of the portfolio state is kept."""
    from raytrade.envs.gym_envs import N_PORTFOLIO_STATE, PROGRESS_SLOT

    ob = Observation(
        features=np.ones((2, 2, 1), np.float32),
        weights=np.zeros((2, 2)),
        cash_fraction=np.array([0.25, 0.5]),
        drawdown=np.array([-0.1, 0.0]),
        kill_active=np.array([True, False]),
        kill_bars=np.array([2.0, 0.0]),
        mask=np.ones((2, 2), bool),
        progress=np.array([0.3, 0.9]),
        missing=None,
    )
    out = batched_observation(ob, None, 4, flat=flat)
    state = out[:, -N_PORTFOLIO_STATE:] if flat else out["portfolio"]
    np.testing.assert_allclose(state, [[0.25, -0.1, 1.0, 0.5, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0]])
    assert PROGRESS_SLOT == N_PORTFOLIO_STATE - 1


def test_an_env_shows_the_same_portfolio_state_at_the_start_and_the_end_of_an_episode() -> None:
    """The progress slot no longer tells one bar of an episode from another."""
    from raytrade.envs.gym_envs import PROGRESS_SLOT

    config = {"data": {"kind": "synthetic", "n_assets": 3, "n_steps": 80}, "sim": {"episode_len": 20}}
    env = PortfolioEnv(config)
    obs, _ = env.reset(seed=0)
    seen = [obs["portfolio"][PROGRESS_SLOT]]
    for _ in range(5):
        obs, *_ = env.step(np.zeros(3, np.float32))
        seen.append(obs["portfolio"][PROGRESS_SLOT])
    assert seen == [0.0] * 6


def test_env_observation_gains_the_missing_channel_with_a_normaliser() -> None:
    base = {
        "data": {"kind": "synthetic", "n_assets": 3, "n_steps": 80},
        "feature_columns": ["ret_1", "vol_20"],
        "sim": {"episode_len": 20},
    }
    norm = train_normalizer(base["data"], ("ret_1", "vol_20"))
    env = PortfolioEnv({**base, "normalizer": norm.model_dump()})
    assert env.observation_space["features"].shape == (3, 3)
    assert PortfolioEnv(base).observation_space["features"].shape == (3, 2)


def test_config_refuses_a_normaliser_of_other_columns() -> None:
    norm = FeatureNormalizer(columns=("ret_1",), center=(0.0,), scale=(1.0,))
    with pytest.raises(ValidationError, match=r"normalizer.columns \['ret_1'\] must equal feature_columns"):
        PortfolioEnvConfig.model_validate({"feature_columns": ["vol_20"], "normalizer": norm.model_dump()})


def test_loader_flags_the_stores_nulls(synthetic_store: Path) -> None:
    data = load_market_data(synthetic_store, "train", feature_columns=("ret_20",))
    assert data.feature_missing is not None
    # ret_20 needs 20 prior bars: the first bar of every asset listed from the start has no value
    first_listed = data.listed[0]
    assert data.feature_missing[0, first_listed, 0].all()
    assert (data.features[0, first_listed, 0] == 0.0).all()
    assert not data.feature_missing[-1, data.listed[-1], 0].any()


def test_changing_only_the_later_windows_leaves_the_normaliser_unchanged(tmp_path: Path) -> None:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=4, years=2.0, seed=5, n_crypto=0)
    ingest_frames(tmp_path / "a", market.bars, market.macro, show_progress=False)
    train = load_market_data(tmp_path / "a", "train")
    later = market.bars["ts"] > pd.Timestamp(train.ts[-1], tz="UTC")
    bars = market.bars.copy()
    for column in ("open", "high", "low", "close", "vwap", "bid", "ask"):
        bars.loc[later, column] = bars.loc[later, column] * 3.0
    ingest_frames(tmp_path / "b", bars, market.macro, show_progress=False)
    columns = DEFAULT_FEATURES
    first = train_normalizer({"kind": "replay", "root": str(tmp_path / "a"), "split": "train"}, columns)
    second = train_normalizer({"kind": "replay", "root": str(tmp_path / "b"), "split": "train"}, columns)
    assert first.center == second.center and first.scale == second.scale
    validation = [load_market_data(tmp_path / s, "validation").features for s in ("a", "b")]
    assert not np.array_equal(*validation)  # the later window did change


def test_tune_features_option_selects_groups_and_names_an_unknown_one(tmp_path: Path) -> None:
    from raytrade.cluster.tune import TuneOptions
    from raytrade.replay.errors import InputError

    spec = get_spec("ppo")
    assert TuneOptions(spec="ppo", replay=tmp_path).feature_columns(spec) == DEFAULT_FEATURES
    opts = TuneOptions(spec="ppo", replay=tmp_path, features="base")
    assert opts.feature_columns(spec) == FEATURE_GROUPS["base"]
    assert "--features base" in opts.command()
    with pytest.raises(InputError, match="--features: unknown feature group 'nope'"):
        TuneOptions(spec="ppo", replay=tmp_path, features="nope").feature_columns(spec)


def test_a_sliced_window_keeps_its_missing_flags_aligned(synthetic_store: Path) -> None:
    from raytrade.envs.evaluation.harness import slice_window
    from raytrade.replay.splits import TimeWindow

    data = load_market_data(synthetic_store, "train", feature_columns=("ret_20",))
    start, end = pd.Timestamp(data.ts[10], tz="UTC"), pd.Timestamp(data.ts[40], tz="UTC")
    window = TimeWindow(name="w", start=start, end=end, n_bars=31)
    part = slice_window(data, window)
    assert part.feature_missing is not None and data.feature_missing is not None
    np.testing.assert_array_equal(part.feature_missing, data.feature_missing[10:41])


def test_scoring_and_serving_encode_exactly_what_the_env_shows(synthetic_store: Path) -> None:
    from raytrade.models.inference import observation_arrays

    data = {"kind": "replay", "root": str(synthetic_store), "split": "train"}
    norm = train_normalizer(data, DEFAULT_FEATURES)
    config = {"data": data, "feature_columns": list(DEFAULT_FEATURES), "normalizer": norm.model_dump()}
    env = PortfolioEnv({**config, "sim": {"episode_len": 50}, "flat_obs": True})
    obs, _ = env.reset(seed=1)
    again = observation_arrays(env.sim.observe(), env.data, env.cfg)[0]
    np.testing.assert_array_equal(obs, again)
    n = env.data.n_assets
    feats = obs[: n * (len(DEFAULT_FEATURES) + 1)].reshape(n, -1)
    t = int(env.sim.t[0])
    assert env.data.feature_missing is not None
    expected = norm.apply(env.data.features[t], env.data.feature_missing[t])
    listed = env.data.listed[t]
    np.testing.assert_array_equal(feats[listed], expected[listed])
    assert obs.shape == (n * (len(DEFAULT_FEATURES) + 3) + 5,)


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("with_gate", [False, True])
def test_channels_encoded_one_row_at_a_time_are_the_batchs(flat: bool, with_gate: bool) -> None:
    """``encoded_features`` of each row alone, stacked, then ``observation_with``, is
    ``batched_observation`` of the batch bit for bit (what serving's per-bar cache relies on): NaN and
    missing values, a column selection, the normaliser and the gate included."""
    from raytrade.envs.gym_envs import batched_observation, encoded_features, observation_with
    from raytrade.envs.simulator import Observation

    rng = np.random.default_rng(4)
    b, n, f = 5, 4, 3
    features = rng.normal(size=(b, n, f)).astype(np.float32) * 5
    features[rng.random((b, n, f)) < 0.2] = np.nan
    missing = np.isnan(features) | (rng.random((b, n, f)) < 0.1)
    ob = Observation(
        features=features,
        weights=rng.normal(size=(b, n)) * 0.1,
        cash_fraction=rng.random(b),
        drawdown=rng.random(b) * 0.3,
        kill_active=rng.random(b) < 0.5,
        kill_bars=rng.integers(0, 5, b).astype(float),
        mask=rng.random((b, n)) < 0.8,
        progress=np.zeros(b),
        missing=missing,
    )
    norm = FeatureNormalizer(columns=("c", "a"), center=(1.0, 0.0), scale=(2.0, 0.1), clip=3.0)
    idx, gate = np.array([2, 0]), (rng.random((b, n)) < 0.5 if with_gate else None)
    want = batched_observation(ob, idx, 10, flat, norm, gate)
    rows = [
        encoded_features(
            features[i : i + 1], missing[i : i + 1], idx, norm, None if gate is None else gate[i : i + 1]
        )[0]
        for i in range(b)
    ]
    got = observation_with(np.stack(rows), ob, 10, flat)
    for key in ("features", "weights", "mask", "portfolio") if not flat else (None,):
        g, w = (got, want) if key is None else (got[key], want[key])
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True), key


def test_a_fitted_normaliser_is_kept_until_the_stores_files_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search's driver builds its env config several times before Ray starts; each fit loaded the
    train split again (a 520-symbol, ten-year store: 12-15 s each, three times)."""
    import os

    import raytrade.envs.synthetic_market as synthetic_market
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.reader import table_files
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=4, years=2.0, seed=5, n_crypto=0)
    ingest_frames(tmp_path / "s", market.bars, market.macro, show_progress=False)
    loads = []
    real = synthetic_market.market_data_from_config

    def counted(cfg: Any) -> Any:
        loads.append(cfg)
        return real(cfg)

    monkeypatch.setattr(synthetic_market, "market_data_from_config", counted)
    data = {"kind": "replay", "root": str(tmp_path / "s"), "split": "train"}
    first = train_normalizer(data, DEFAULT_FEATURES)
    assert train_normalizer(dict(data), DEFAULT_FEATURES) == first and len(loads) == 1
    train_normalizer(data, DEFAULT_FEATURES[:3])  # other columns: another fit
    assert len(loads) == 2
    stamp = table_files(tmp_path / "s", "features")[0]
    os.utime(stamp, ns=(stamp.stat().st_atime_ns, stamp.stat().st_mtime_ns + 10**9))  # a rewrite
    assert train_normalizer(data, DEFAULT_FEATURES) == first and len(loads) == 3
