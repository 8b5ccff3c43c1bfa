"""Plain input mistakes end as one ``error:`` line naming the field and the value, exit status 2,
without the "may be a bug" suffix (``cluster.errors``): one test per mistake a new-user review met.
No Ray starts and nothing leaves the machine (the live test's Alpaca is a loopback fake)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raytrade.cluster.cli import main
from tests.fake_alpaca import TEST_KEYS


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def _no_settings_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)


def test_a_lower_case_alpaca_symbol_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_settings_file(monkeypatch)
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    args = ["ingest", "--source", "alpaca", "--symbols", "aapl", "--start", "2024-01-02"]
    result = _run([*args, "--end", "2024-01-05", "--out", str(tmp_path / "store")])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: symbol='aapl' is not a valid Alpaca symbol (upper-case, e.g. 'AAPL', 'BTCUSD', 'BTC/USD')\n"
    )


def test_a_store_shorter_than_a_features_warm_up_is_an_input_error(tmp_path: Path) -> None:
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    store = tmp_path / "store"
    market = generate(n_symbols=3, years=0.35, seed=5)  # 55 train bars: vol_regime_code is still warming up
    ingest_frames(store, market.bars, market.macro, show_progress=False)
    args = ["tune", "--spec", "ppo", "--replay", str(store), "--smoke"]
    result = _run([*args, "--storage", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: feature column 'vol_regime_code' has no values in the 'train' split of {store} (55 bars: "
        "shorter than the feature's warm-up window, or the store predates it, or its source lacks the "
        "data): widen the split or leave it out of feature_columns\n"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"account_id": "PA-TEST", "peak_equity": NaN}', "peak_equity=NaN is not a finite number"),
        ('{"account_id": "PA-TEST", "peak_equity": 1e999}', "peak_equity=1e999 is not a finite number"),
        (
            '{"account_id": "PA-TEST", "peak_equity": -5, "pending": []}',
            "peak_equity=-5 is not a finite positive number",
        ),
        (  # an emptied file: it would forget the peak and disarm a tripped kill switch
            "{}",
            "no account_id, peak_equity, pending: the loop writes account_id, peak_equity, pending in every "
            "state file",
        ),
        ("{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (
            '{"account_id": "PA-TEST", "peak_equity": 1e5, "pending": [], "kill_switch": {"active": "yes"}}',
            "kill_switch.active: Input should be a valid boolean (and 2 more problems)",
        ),
    ],
)
def test_an_unreadable_live_state_file_is_an_input_error_and_still_refuses_to_start(
    fakes: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, reason: str
) -> None:
    trading, data = fakes
    _no_settings_file(monkeypatch)
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("ALPACA_DATA_URL", data.url)
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "serve-token-for-the-live-test-12345")
    with socket.socket() as closed:  # nothing is asked of the policy service before the state loads
        closed.bind(("127.0.0.1", 0))
        serve_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    state = tmp_path / "s.json"
    state.write_text(text)
    args = ["live", "--paper", "--once", "--symbols", "AAPL", "--serve-url", serve_url]
    args += ["--trading-url", trading.url, "--state-file", str(state)]
    args += ["--account-lock-dir", str(tmp_path / "locks")]
    result = _run(args)
    assert result.exit_code == 2
    shown = str(state)
    assert result.stderr == f"error: live state file {shown!r} is unreadable ({reason}); fix or move it\n"
    assert trading.paths().count("POST /v2/orders") == 0
    assert state.read_text() == text


def test_a_live_symbol_not_in_capitals_is_refused_before_any_broker_is_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new-user review: with the broker unreachable, `--symbols aapl` ended on the broker's
    ConnectionError, never naming 'aapl' (the check ran in the loop, after the account call)."""
    _no_settings_file(monkeypatch)
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "serve-token-for-the-live-test-12345")
    with socket.socket() as closed:  # nothing listens: any call to it would be a ConnectionError
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    args = ["live", "--paper", "--once", "--symbols", "AAPL,aapl", "--serve-url", nowhere]
    args += ["--trading-url", nowhere, "--data-url", nowhere, "--state-file", str(tmp_path / "s.json")]
    result = _run(args)
    assert result.exit_code == 2
    assert (
        result.stderr == "error: symbols: 'aapl' is not in capitals, as Alpaca spells every symbol (AAPL)\n"
    )
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("given", [",", " ", " , "])
def test_live_symbols_that_name_no_symbol_are_refused_not_read_as_the_served_universe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """A review of the up-front check: `--symbols ","` parsed to no symbol and fell back to every
    symbol the service decides, the whole universe, instead of being refused."""
    _no_settings_file(monkeypatch)
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "serve-token-for-the-live-test-12345")
    args = ["live", "--paper", "--once", "--symbols", given, "--serve-url", "http://127.0.0.1:9"]
    result = _run([*args, "--state-file", str(tmp_path / "s.json")])
    assert result.exit_code == 2
    assert f"Invalid value for --symbols: {given!r} names no symbol" in result.stderr


def test_a_registry_folder_that_does_not_exist_is_an_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "noreg"
    result = _run(["registry", "migrate", "--registry", str(missing)])
    assert result.exit_code == 2
    assert result.stderr == f"error: registry {str(missing)!r} (a local folder) does not exist\n"


def test_serve_detach_without_a_ray_cluster_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's own text asks for an ``--address`` flag ``raytrade serve`` does not have. Without
    RAY_ADDRESS, --detach attaches nowhere: "auto" had found a test run's ``ray start`` cluster on a
    shared machine and deployed the policy into it."""
    import ray

    import raytrade.models.registry_load as registry_load

    def no_cluster(*args: object, **kwargs: object) -> None:
        raise ConnectionError(
            "Could not find any running Ray instance. Please specify the one to connect to by setting "
            "`--address` flag or `RAY_ADDRESS` environment variable."
        )

    _no_settings_file(monkeypatch)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAYTRADE_REGISTRY_HMAC_KEY", raising=False)
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", "serve-token-for-the-detach-test-1234")
    monkeypatch.setattr(registry_load, "verify_version", lambda *args: None)  # no registry needed
    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a suite's worker may run the session's Ray
    result = _run(["serve", "--model", "ppo", "--detach"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --detach deploys into a cluster that outlives this command, and RAY_ADDRESS names none: "
        "set it to the cluster's host:port (`raytrade cluster up` prints the line to export); "
        "RAY_ADDRESS=auto takes the cluster a `ray start` last recorded on this machine, whoever "
        "started it\n"
    )
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # asked for: attaches where `ray start` recorded, or says none
    result = _run(["serve", "--model", "ppo", "--detach"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no Ray cluster is running (none was found): start one with `raytrade cluster up` and "
        "export the RAY_ADDRESS line it prints, or set RAY_ADDRESS to a running cluster's host:port\n"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json\n", "Invalid JSON: expected ident at line 1 column 2"),
        ("{}", "n_fills: Field required (and 13 more problems)"),
        (
            json.dumps({"kind": "raytrade.cost_profile", "version": 2, "spread_fraction": "secret-ish"}),
            "n_fills: Field required (and 13 more problems)",
        ),
    ],
)
def test_a_cost_profile_that_is_not_one_is_one_line_without_its_content(
    tmp_path: Path, text: str, problem: str
) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(text)
    args = ["evaluate", "--replay", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    result = _run([*args, "--cost-profile", str(profile)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cost profile {str(profile)!r} is not a raytrade cost profile: {problem}\n"
    )
    assert "pydantic" not in result.output and "secret-ish" not in result.output


@pytest.mark.parametrize("freq", ["1d", "1m"])
def test_a_synthetic_span_without_a_weekday_is_an_input_error(tmp_path: Path, freq: str) -> None:
    """``--years 0.001`` (no day at all) ended in a numpy warning and a traceback (IndexError)."""
    out = tmp_path / "store"
    args = ["ingest", "--source", "synthetic", "--n-symbols", "3", "--freq", freq, "--years", "0.001"]
    result = _run([*args, "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: years=0.001 (0 days from 2018-01-01) spans no weekday: no equity bar to generate; "
        "give more years\n"
    )
    assert not out.exists()


def test_an_alpaca_ingest_without_its_window_names_the_missing_flag(tmp_path: Path) -> None:
    args = ["ingest", "--source", "alpaca", "--symbols", "AAPL", "--start", "2020-01-01"]
    result = _run([*args, "--out", str(tmp_path / "store")])
    assert result.exit_code == 2
    assert result.stderr == "error: --source alpaca needs --symbols, --start and --end; --end not given\n"


def test_tune_split_shares_that_leave_no_test_window_are_refused_by_their_flags(tmp_path: Path) -> None:
    """The check used to come from ``fractional_splits``, naming its own fields and asking for a
    traceback as a bug would; nothing is created either way."""
    shares = ["--train-fraction", "0.9", "--validation-fraction", "0.2"]
    result = _run(
        ["tune", "--spec", "ppo", "--replay", str(tmp_path), "--storage", str(tmp_path / "runs"), *shares]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --train-fraction 0.9 and --validation-fraction 0.2 leave no test window: their sum must "
        "be below 1 (defaults 0.6 and 0.2)\n"
    )
    assert _run(["tune", "--spec", "ppo", "--replay", str(tmp_path), "--train-fraction", "0.85"]).stderr == (
        "error: --train-fraction 0.85 and --validation-fraction 0.2 leave no test window: their sum must "
        "be below 1 (defaults 0.6 and 0.2)\n"
    )
    assert not (tmp_path / "runs").exists()


def test_tune_shares_a_short_store_cannot_split_are_an_input_error(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """Shares under 1 that leave the test split no bar on this store (the embargoes take them) were a
    ``ValueError`` with a hint to rerun for a traceback, as a bug would be."""
    shares = ["--train-fraction", "0.79", "--validation-fraction", "0.2"]
    result = _run(
        ["tune", "--spec", "ppo", "--replay", str(synthetic_store), "--storage", str(tmp_path), *shares]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: split 'test' would be empty (bars ")
    assert "too short for these shares (--train-fraction, --validation-fraction)" in result.stderr
    assert "rerun with -v" not in result.stderr
