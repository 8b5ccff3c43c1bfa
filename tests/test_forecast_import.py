"""``raytrade ingest --source forecasts``: external quantiles/samples joined into the features."""

from __future__ import annotations

import re
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


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _quantile_file(store: Path, path: Path, bad: dict[str, object]) -> Path:
    """Two forecasts of SYN001 at stored dates: row 1 valid, row 2 with ``bad`` replacing its values."""
    ts = read_frame(store, "features").query("symbol == 'SYN001'")["ts"].tail(2)
    good = {"horizon": 1, "q05": -0.02, "q25": -0.01, "q50": 0.0, "q75": 0.01, "q95": 0.02}
    optional = {"mean": 0.0, "std": 0.01}
    good |= {k: optional[k] for k in bad if k in optional}
    rows = [good, {**good, **bad}]
    frame = pd.DataFrame(rows).assign(symbol="SYN001", source="ext", ts=ts.dt.strftime("%Y-%m-%d").to_numpy())
    frame.to_csv(path, index=False)
    return path


def _import(store: Path, path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["ingest", "--source", "forecasts", "--path", str(path), "--out", str(store)]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("bad", "column", "value", "reason"),
    [
        ({"q05": 0.05, "q95": -0.05}, "q25", -0.01, "below q05: quantiles must not decrease"),
        ({"q75": 0.03, "q95": 0.025}, "q95", 0.025, "below q75: quantiles must not decrease"),
        ({"q05": -3.0, "q25": -1.0}, "q05", -3.0, "a simple return must be > -1"),
        ({"q95": 20.0}, "q95", 20.0, "a return above 10 (+1000 %) is taken as percent units"),
        ({"mean": 12.0}, "mean", 12.0, "a return above 10 (+1000 %) is taken as percent units"),
        ({"std": -0.01}, "std", -0.01, "must lie in [0, 10]"),
        ({"horizon": 0}, "horizon", 0, "must be a whole number of bars >= 1"),
        ({"horizon": -5}, "horizon", -5, "must be a whole number of bars >= 1"),
        ({"horizon": 1.5}, "horizon", 1.5, "must be a whole number of bars >= 1"),
        ({"skew": 1e300}, "skew", 1e300, "must lie in [-100, 100]"),  # it reached fc_skew whole
    ],
)
def test_impossible_quantile_forecasts_are_refused_and_nothing_is_written(
    tmp_path: Path, store: Path, bad: dict[str, float], column: str, value: float, reason: str
) -> None:
    before = _snapshot(store)
    code, output = _import(store, _quantile_file(store, tmp_path / "bad.csv", bad))
    assert code == 2, output
    assert f"bad.csv: forecasts: row 2, column {column!r}, value {value!r}: {reason}" in output
    assert _snapshot(store) == before


def test_impossible_sample_forecasts_are_refused_naming_the_sample(tmp_path: Path, store: Path) -> None:
    ts = read_frame(store, "features").query("symbol == 'SYN001'")["ts"].tail(2)
    samples = pd.DataFrame(
        [[0.01, -0.02, 0.03], [0.01, -2.5, 0.02]], columns=["sample_0", "sample_1", "sample_2"]
    )
    keys = pd.DataFrame(
        {"symbol": "SYN001", "ts": ts.dt.strftime("%Y-%m-%d").to_numpy(), "source": "s", "horizon": 1}
    )
    path = tmp_path / "samples.csv"
    pd.concat([keys, samples], axis=1).to_csv(path, index=False)
    before = _snapshot(store)
    code, output = _import(store, path)
    assert code == 2, output
    assert "row 2, column 'sample_1', value -2.5: a simple return must be > -1" in output
    assert _snapshot(store) == before


def test_a_valid_quantile_file_with_equal_quantiles_still_imports(tmp_path: Path, store: Path) -> None:
    path = _quantile_file(store, tmp_path / "ok.csv", {"q25": 0.0, "q50": 0.0, "q75": 0.0, "std": 0.0})
    code, output = _import(store, path)
    assert code == 0, output
    stored = read_frame(store, "forecasts")
    assert len(stored) == 2 and stored["q05"].tolist() == [-0.02, -0.02]


def test_import_forecasts_refuses_impossible_rows_passed_as_a_frame(store: Path) -> None:
    from raytrade.replay.ingest import import_forecasts
    from raytrade.replay.validation import ReplayValidationError

    ts = read_frame(store, "features").query("symbol == 'SYN001'")["ts"].iloc[-1]
    frame = pd.DataFrame(
        {"symbol": ["SYN001"], "ts": [ts], "source": ["x"], "horizon": [1], "mean": [0.0], "std": [0.01],
         "skew": [0.0], "q05": [0.05], "q25": [0.0], "q50": [0.0], "q75": [0.0], "q95": [-0.05],
         "n_samples": [None]}
    )  # fmt: skip
    with pytest.raises(ReplayValidationError, match=r"row 0, column 'q25', value 0.0: below q05"):
        import_forecasts(store, frame, origin="frame")
    assert not (store / "forecasts").exists()


def test_a_forecast_already_stored_is_refused_and_the_store_stays_usable(tmp_path: Path, store: Path) -> None:
    """The same file imported twice (a retried import) was appended beside the stored rows: the second
    import failed on the features rebuild (a pandas reshape error) with its rows already written, and
    every later ingest of the store failed the same way, for good (the store is append-only). Now the
    repeated forecast is refused, naming its key, and nothing is written; a new source at the same
    dates still imports."""
    path = _quantile_file(store, tmp_path / "ok.csv", {})
    code, output = _import(store, path)
    assert code == 0, output
    rows = len(read_frame(store, "features"))  # rewritten whole: it read "features +N" as if appended
    assert "appended: forecasts +2; " in output and "features +" not in output
    assert f"features table rewritten ({rows:,} rows; 2 stored rows changed by the new data)" in output
    before = _snapshot(store)
    code, output = _import(store, path)
    assert code == 2, output
    ts = read_frame(store, "forecasts")["ts"].iloc[0].isoformat()
    assert (
        f"ok.csv: forecasts: row 1, column 'horizon', value 1: already stored: forecasts holds a row of "
        f"(symbol=SYN001, ts={ts}, source=ext, horizon=1); the store is append-only (a revised forecast "
        "needs another source name) (and 1 more refused rows)"
    ) in output
    assert _snapshot(store) == before
    renamed = tmp_path / "renamed.csv"  # the features are rebuilt with both sources
    pd.read_csv(path).assign(source="ext2").to_csv(renamed, index=False)
    assert _import(store, renamed)[0] == 0
    assert len(read_frame(store, "forecasts")) == 4


def test_a_store_holding_a_repeated_forecast_names_it(store: Path) -> None:
    """A store an older import left with a forecast stored twice: the features build named nothing
    ("Index contains duplicate entries, cannot reshape"); now it names the key and the way out."""
    from raytrade.replay import ReplayWriter
    from raytrade.replay.features import build_features

    ts = read_frame(store, "features").query("symbol == 'SYN001'")["ts"].iloc[-1]
    row = {"symbol": "SYN001", "ts": ts, "source": "x", "horizon": 1, "mean": 0.0, "std": 0.01, "skew": 0.0,
           "q05": -0.02, "q25": -0.01, "q50": 0.0, "q75": 0.01, "q95": 0.02, "n_samples": None}  # fmt: skip
    with ReplayWriter(store) as writer:
        writer.append("forecasts", pd.DataFrame([row]))
    stored = read_frame(store, "forecasts")
    twice = pd.concat([stored, stored], ignore_index=True)  # what the old import appended
    named = re.escape(f"hold (symbol=SYN001, ts={ts.isoformat()}, source=x, horizon=1) 2 times")
    with pytest.raises(ValueError, match=named):
        build_features(read_frame(store, "bars"), None, twice)


def _one_forecast(path: Path, ts: str, horizon: int = 1) -> Path:
    pd.DataFrame(
        {"symbol": ["SYN001"], "ts": [ts], "source": ["toto"], "horizon": [horizon],
         "q05": [-0.02], "q25": [-0.01], "q50": [0.0], "q75": [0.01], "q95": [0.02]}
    ).to_csv(path, index=False)  # fmt: skip
    return path


def test_a_forecast_off_its_symbols_clock_is_refused_and_one_after_its_bars_kept(
    tmp_path: Path, store: Path
) -> None:
    """A forecast joins its bar by the exact stamp: one stamped at another time (a local midnight, a
    time of day, a weekend) was stored, never read, and every policy saw the baseline forecaster."""
    days = read_frame(store, "bars").query("symbol == 'SYN001'")["ts"]
    day = days.iloc[10].strftime("%Y-%m-%d")
    last = days.iloc[-1].isoformat()
    before = _snapshot(store)
    for ts, shown in [
        (f"{day}T00:00:00-05:00", f"{day}T05:00:00+00:00"),
        (f"{day}T16:00:00Z", f"{day}T16:00:00+00:00"),
    ]:
        code, output = _import(store, _one_forecast(tmp_path / "off.csv", ts))
        assert code == 2, output
        assert (
            f"off.csv: forecasts: row 1, column 'ts', value '{shown}': no SYN001 bar at this time, though "
            f"its bars go on to {last}: a forecast joins its bar by the exact stamp"
        ) in " ".join(output.split())
    code, output = _import(store, _one_forecast(tmp_path / "naive.csv", f"{day}T16:00:00"))
    assert (
        code == 2 and f"value '{day}T16:00:00': a time of day without a UTC offset (which clock?)" in output
    )
    assert _snapshot(store) == before
    later = (days.iloc[-1] + pd.Timedelta(days=30)).strftime("%Y-%m-%d")  # its bar may come later
    code, output = _import(store, _one_forecast(tmp_path / "later.csv", later))
    assert code == 0, output


@pytest.mark.parametrize(
    "ts",
    ["2024-01-03T16", "20240103T160000", "2024-01-02T16:00:00.5", "01/02/2024 16:00", "2024-01-02 16:00 UTC"],
)
def test_a_time_of_day_without_an_offset_is_refused_in_any_form(tmp_path: Path, ts: str) -> None:
    """Only the extended ISO form was refused: the basic form and an hour alone were read as UTC (a
    16:00 New York stamp joined the bar of 12:00 New York's clock, or none)."""
    from raytrade.replay.sources.forecast_file import read_forecast_file
    from raytrade.replay.validation import ReplayValidationError

    with pytest.raises(ReplayValidationError, match="a time of day without a UTC offset"):
        read_forecast_file(_one_forecast(tmp_path / "f.csv", ts))


@pytest.mark.parametrize(
    ("ts", "read"),
    [
        ("2024-01-03T16:00:00-0500", "2024-01-03T21:00:00+00:00"),
        ("2024-01-03T21:00Z", "2024-01-03T21:00:00+00:00"),
        ("2024-01-03T16:00:00-05", "2024-01-03T21:00:00+00:00"),
        ("2024-01-03", "2024-01-03T00:00:00+00:00"),
        ("20240103", "2024-01-03T00:00:00+00:00"),
    ],
)
def test_a_stamp_with_its_offset_or_a_plain_date_is_read(tmp_path: Path, ts: str, read: str) -> None:
    from raytrade.replay.sources.forecast_file import read_forecast_file

    assert read_forecast_file(_one_forecast(tmp_path / "f.csv", ts))["ts"].iloc[0].isoformat() == read


def test_a_file_with_a_few_rows_off_the_clock_stores_the_rest_and_says_so(
    tmp_path: Path, store: Path
) -> None:
    """A halted day or a holiday of the file's calendar: those rows are never read; refusing the whole
    file for them lost the good ones."""
    days = read_frame(store, "bars").query("symbol == 'SYN001'")["ts"]
    good = [d.strftime("%Y-%m-%d") for d in days.iloc[10:13]]
    weekend = (days.iloc[12] + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    while pd.Timestamp(weekend, tz="UTC") in set(days):
        weekend = (pd.Timestamp(weekend) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    frame = pd.concat(
        [pd.read_csv(_one_forecast(tmp_path / f"{i}.csv", ts)) for i, ts in enumerate([*good, weekend])]
    )
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    code, output = _import(store, tmp_path / "mixed.csv")
    assert code == 0, output
    assert (
        "warning: " in output
        and "1 forecast rows NOT stored, stamped where their symbol has no bar" in output
    )
    assert len(read_frame(store, "forecasts")) == 3


def test_a_forecast_of_another_horizon_is_stored_with_a_warning(tmp_path: Path, store: Path) -> None:
    day = read_frame(store, "bars").query("symbol == 'SYN001'")["ts"].iloc[10].strftime("%Y-%m-%d")
    code, output = _import(store, _one_forecast(tmp_path / "h5.csv", day, horizon=5))
    assert code == 0, output
    assert (
        "warning: 1 forecast rows of horizon 5 stored: the features read horizon 1 only (the next bar's "
        "return), so no policy sees them"
    ) in output
