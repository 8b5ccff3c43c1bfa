"""``raytrade ingest --source forecasts``: external quantiles/samples joined into the features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.replay import read_frame


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    result = CliRunner().invoke(
        main, ["ingest", "--source", "synthetic", "--n-symbols", "3", "--years", "0.5", "--out", str(root)]
    )
    assert result.exit_code == 0, result.output
    return root


def test_sample_forecasts_are_summarised_and_replace_the_baseline(tmp_path: Path, store: Path) -> None:
    features = read_frame(store, "features")
    rows = features[features["symbol"] == "SYN001"].tail(3)
    rng = np.random.default_rng(0)
    samples = pd.DataFrame(rng.normal(0.002, 0.01, size=(3, 64)), columns=[f"sample_{i}" for i in range(64)])
    file = pd.concat(
        [pd.DataFrame({"symbol": "SYN001", "ts": rows["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_numpy(),
                       "source": "toto", "horizon": 1}), samples],
        axis=1,
    )  # fmt: skip
    path = tmp_path / "toto.csv"
    file.to_csv(path, index=False)
    result = CliRunner().invoke(
        main, ["ingest", "--source", "forecasts", "--path", str(path), "--out", str(store)]
    )
    assert result.exit_code == 0, result.output
    stored = read_frame(store, "forecasts")
    assert len(stored) == 3 and (stored["n_samples"] == 64).all()
    assert stored["mean"].to_numpy() == pytest.approx(samples.mean(axis=1).to_numpy())
    after = read_frame(store, "features")
    assert len(after) == len(features)
    joined = after[(after["symbol"] == "SYN001")].tail(3)
    assert not joined["fc_fallback"].any()
    assert joined["fc_mean"].to_numpy() == pytest.approx(stored["mean"].to_numpy())
    # Other symbols keep every feature except the cross-sectional share of the kelly budget.
    others = [c for c in after.columns if c != "concentration"]
    untouched = after.loc[after["symbol"] != "SYN001", others].reset_index(drop=True)
    before = features.loc[features["symbol"] != "SYN001", others].reset_index(drop=True)
    pd.testing.assert_frame_equal(untouched, before)


def test_forecasts_for_unknown_symbols_write_nothing(tmp_path: Path, store: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame(
        {"symbol": ["NOPE"], "ts": ["2018-03-01"], "source": ["x"], "horizon": [1],
         "q05": [-0.02], "q25": [-0.01], "q50": [0.0], "q75": [0.01], "q95": [0.02]}
    ).to_csv(path, index=False)  # fmt: skip
    result = CliRunner().invoke(
        main, ["ingest", "--source", "forecasts", "--path", str(path), "--out", str(store)]
    )
    assert result.exit_code == 2 and "NOPE" in result.output
    assert not (store / "forecasts").exists() or read_frame(store, "forecasts").empty
