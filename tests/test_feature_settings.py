"""A stated spread for bars without a quote (``raytrade ingest --unquoted-spread-bps``): the features
it builds, the store's record of it (``replay.feature_settings``), and what reads it downstream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytrade.cluster.cli import main
from raytrade.replay import read_frame
from raytrade.replay.errors import InputError
from raytrade.replay.feature_settings import SETTINGS_FILE, read_feature_settings
from raytrade.replay.features import FeatureConfig, build_features
from raytrade.replay.ingest import ingest_frames
from raytrade.replay.remote_store import is_store_file
from tests.test_features import crafted_bars

STATED = FeatureConfig(unquoted_spread_bps=5.0)


def _bars(days: int = 40, start: str = "2024-01-01") -> pd.DataFrame:
    """Two stocks: AAA without quotes, QQQ quoted 99.95 / 100.05 (10 bps) on every bar."""
    rng = np.random.default_rng(0)
    closes = list(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, days))))
    plain = crafted_bars(closes)
    quoted = crafted_bars([100.0] * days, symbol="QQQ", bid=99.95, ask=100.05, bid_size=100.0, ask_size=100.0)
    bars = pd.concat([plain, quoted], ignore_index=True)
    shift = pd.Timestamp(start, tz="UTC") - pd.Timestamp("2024-01-01", tz="UTC")
    return bars.assign(ts=bars["ts"] + shift)


def test_a_stated_spread_replaces_the_estimate_on_unquoted_bars_only() -> None:
    estimated = build_features(_bars())
    stated = build_features(_bars(), config=STATED)
    plain, quoted = stated["symbol"] == "AAA", stated["symbol"] == "QQQ"
    assert (stated.loc[plain, "spread_bps"] == 5.0).all()  # from the first bar: no estimate to wait for
    assert not stated.loc[plain, "spread_is_quoted"].any()
    assert stated.loc[quoted, "spread_bps"].to_numpy() == pytest.approx(10.0, rel=1e-9)
    # the estimate of these bars' 2 % ranges reads as tens of bps: the reason for stating one
    assert estimated.loc[plain, "spread_bps"].median() > 10.0
    # the loop's gate reads it: at 5 bps the spread no longer shuts a 25 bps stock's gate
    assert "spread" not in "".join(stated.loc[plain, "fc_gate_reason"].dropna().astype(str))


def test_the_store_records_it_and_every_later_ingest_follows(tmp_path: Path) -> None:
    root = tmp_path / "store"
    bars = _bars(60)
    early, late = bars[bars["ts"] < bars["ts"].unique()[40]], bars[bars["ts"] >= bars["ts"].unique()[40]]
    ingest_frames(root, early, config=STATED, show_progress=False)
    assert json.loads((root / SETTINGS_FILE).read_text()) == {"unquoted_spread_bps": 5.0}
    ingest_frames(root, late, show_progress=False)  # no flag: the store's
    features = read_frame(root, "features")
    assert (features.loc[features["symbol"] == "AAA", "spread_bps"] == 5.0).all()
    assert read_feature_settings(root).unquoted_spread_bps == 5.0


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        (STATED, FeatureConfig(unquoted_spread_bps=6.0), "from 5 bps, this build asks for 6 bps"),
        (FeatureConfig(), STATED, "from the high/low estimate, this build asks for 5 bps"),
        (STATED, FeatureConfig(unquoted_spread_bps=None), "from 5 bps, this build asks for the high/low"),
    ],
)
def test_another_figure_on_a_built_store_is_refused_with_nothing_written(
    tmp_path: Path, first: FeatureConfig, then: FeatureConfig, message: str
) -> None:
    root = tmp_path / "store"
    ingest_frames(root, _bars(40), config=first, show_progress=False)
    before = len(read_frame(root, "bars"))
    with pytest.raises(InputError, match="--unquoted-spread-bps: the store at") as info:
        ingest_frames(root, _bars(10, start="2024-03-01"), config=then, show_progress=False)
    assert message in str(info.value)
    assert len(read_frame(root, "bars")) == before


def test_a_first_ingest_that_failed_binds_nothing(tmp_path: Path) -> None:
    """The record is written before the features; a store whose features table does not exist is
    built with whatever its first successful ingest asks for."""
    root = tmp_path / "store"
    root.mkdir()
    (root / SETTINGS_FILE).write_text(json.dumps({"unquoted_spread_bps": 9.0}))
    assert read_feature_settings(root).unquoted_spread_bps is None
    ingest_frames(root, _bars(40), config=STATED, show_progress=False)
    assert read_feature_settings(root).unquoted_spread_bps == 5.0


def test_a_refused_first_ingest_with_the_flag_does_not_switch_the_store_later(tmp_path: Path) -> None:
    """A reviewer's case: the first ingest with the flag was refused after writing the record; the
    rerun without the flag built estimates, and the next ingest read the leftover record and rebuilt
    every row at 5 bps, unasked. Now the rerun's build rewrites it to what it used (not removed: a
    remote store's record is replaced, never deleted), and the store stays estimated."""
    root = tmp_path / "store"
    bars = _bars(60)
    # a third stock on another daily clock (05:00 UTC): refused under the lock, after the record
    odd = bars[bars["symbol"] == "QQQ"].assign(symbol="ZZZ", ts=lambda f: f["ts"] + pd.Timedelta(hours=5))
    with pytest.raises(InputError):
        ingest_frames(root, pd.concat([bars, odd]), config=STATED, show_progress=False)
    assert (root / SETTINGS_FILE).exists() and not (root / "features").exists()
    ingest_frames(root, bars[bars["ts"] < bars["ts"].unique()[40]], show_progress=False)
    assert json.loads((root / SETTINGS_FILE).read_text()) == {"unquoted_spread_bps": None}  # what it used
    ingest_frames(root, bars[bars["ts"] >= bars["ts"].unique()[40]], show_progress=False)
    features = read_frame(root, "features")
    assert not (features.loc[features["symbol"] == "AAA", "spread_bps"] == 5.0).any()
    assert read_feature_settings(root).unquoted_spread_bps is None


def test_a_settings_file_that_is_not_one_is_refused_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ingest_frames(root, _bars(40), config=STATED, show_progress=False)
    (root / SETTINGS_FILE).write_text('{"unquoted_spread_bps": -1}')
    with pytest.raises(InputError, match=f"{SETTINGS_FILE} is not a raytrade feature settings file"):
        ingest_frames(root, _bars(10, start="2024-03-01"), show_progress=False)


def test_a_remote_store_carries_the_record() -> None:
    assert is_store_file(SETTINGS_FILE)
    assert not is_store_file(f"bars/{SETTINGS_FILE}")


def test_the_simulator_charges_and_observes_the_stated_spread(tmp_path: Path) -> None:
    from raytrade.envs.replay_loader import load_market_data

    root = tmp_path / "store"
    ingest_frames(root, _bars(200), config=STATED, show_progress=False)
    data = load_market_data(root, "all", feature_columns=("spread_bps",))
    aaa = data.symbols.index("AAA")
    assert (data.spread_bps[data.listed[:, aaa], aaa] == 5.0).all()
    assert np.allclose(data.features[:, aaa, 0], 5.0 * 1e-4)  # observed, in the loader's scale


def test_the_ingest_command_takes_it_and_the_summary_says_which(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    _bars(40).query("symbol == 'AAA'")[["ts", "open", "high", "low", "close", "volume"]].rename(
        columns={"ts": "Date"}
    ).assign(Date=lambda f: f["Date"].dt.date).to_csv(folder / "AAA.csv", index=False)
    root = tmp_path / "store"
    args = ["ingest", "--source", "csv", "--path", str(folder), "--out", str(root)]
    result = CliRunner().invoke(main, [*args, "--unquoted-spread-bps", "5"])
    assert result.exit_code == 0, result.output
    assert "spread on bars without a quote: stated, 5 bps" in result.output
    refused = CliRunner().invoke(main, [*args, "--unquoted-spread-bps", "7"])
    assert refused.exit_code != 0 and "error: --unquoted-spread-bps: the store at" in refused.output
    assert len(refused.output.strip().splitlines()[-1]) > 0
    for bad in ("0", "-3", "nan", "10000"):
        out = CliRunner().invoke(main, [*args, "--unquoted-spread-bps", bad])
        assert out.exit_code == 2 and "--unquoted-spread-bps" in out.output
    summary = CliRunner().invoke(main, ["summary", str(root), "--json"])
    assert json.loads(summary.output)["unquoted_spread_bps"] == 5.0


def test_the_ingest_flag_and_the_settings_field_agree() -> None:
    from raytrade.cluster.cli import ingest
    from raytrade.cluster.options import option_drift
    from raytrade.replay.feature_settings import FeatureSettings

    assert option_drift(ingest, FeatureSettings) == []


def test_an_evaluation_report_says_where_the_spreads_came_from(tmp_path: Path) -> None:
    from raytrade.cluster.evaluate import run_evaluation
    from raytrade.envs.evaluation.render import render_markdown, report_blocks

    kw: dict[str, object] = {"scenarios": [], "seeds": 1, "bootstrap_samples": 20, "plots": False}
    for name, config, said in (
        ("stated", STATED, "stated, 5 bps"),
        ("estimated", None, "the high/low estimate"),
    ):
        root = tmp_path / name / "store"
        ingest_frames(root, _bars(400), config=config, show_progress=False)
        report = run_evaluation(root, ["cash"], tmp_path / name / "out", **kw)  # type: ignore[arg-type]
        assert report.replay.spread_source == said
        assert f"; spreads on bars without a quote: {said})" in render_markdown(
            "r", report_blocks(report, [])
        )
