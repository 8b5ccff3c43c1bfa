"""Replay store -> MarketData: calendars, listing mask, scaling, and refusals that name the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raytrade.envs.replay_loader import DEFAULT_FEATURES, load_market_data
from raytrade.replay import read_frame


def test_splits_step_on_the_equity_calendar_and_mask_unlisted(synthetic_store: Path) -> None:
    train = load_market_data(synthetic_store, "train")
    test = load_market_data(synthetic_store, "test")
    assert train.ts[-1] < test.ts[0]
    weekdays = (train.ts.astype("datetime64[D]").view("int64") - 4) % 7  # 1970-01-01 was a Thursday
    assert weekdays.max() <= 4  # Monday=0 .. Friday=4: crypto is observed on equity days only
    assert train.features.shape == (train.n_steps, train.n_assets, len(DEFAULT_FEATURES))
    assert np.isfinite(train.features).all() and np.isfinite(train.close).all()
    bars = read_frame(synthetic_store, "bars", columns=["symbol", "ts"])
    first = bars.groupby("symbol")["ts"].min()
    late = first.idxmax()
    column = train.symbols.index(late)
    listed_from = int(np.argmax(train.listed[:, column]))
    assert train.ts[listed_from] >= first[late].tz_convert(None).to_datetime64()
    assert train.periods_per_year == 252


def test_all_split_spans_the_whole_calendar(synthetic_store: Path) -> None:
    whole = load_market_data(synthetic_store, "all", symbols=["SYN000", "SYN001"])
    assert whole.symbols == ("SYN000", "SYN001")
    assert whole.listed[:, 0].all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": ["NOPE"]}, "symbols not in the store: \\['NOPE'\\]"),
        ({"feature_columns": ("ret_1", "colour")}, "feature column 'colour' is not in the features table"),
        ({"feature_columns": ("vol_regime",)}, "'vol_regime' is text"),
        ({"feature_columns": ("ret_1", "curve_slope"), "symbols": ["SYN000"]}, None),
        ({"split": "holdout"}, "split must be one of"),
    ],
)
def test_bad_requests_name_what_is_wrong(
    synthetic_store: Path, kwargs: dict[str, object], message: str | None
) -> None:
    if message is None:  # curve_slope exists in the synthetic store: accepted
        assert load_market_data(synthetic_store, "train", **kwargs).features.shape[2] == 2  # type: ignore[arg-type]
        return
    with pytest.raises(ValueError, match=message):
        load_market_data(synthetic_store, **{"split": "train", **kwargs})  # type: ignore[arg-type]


def test_a_feature_without_values_is_refused(tmp_path: Path) -> None:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    market = generate(4, 1.0, seed=5)
    ingest_frames(tmp_path / "s", market.bars, None, show_progress=False)  # no macro: no curve slope
    with pytest.raises(ValueError, match="'curve_slope' has no values"):
        load_market_data(tmp_path / "s", "train", feature_columns=("ret_1", "curve_slope"))
