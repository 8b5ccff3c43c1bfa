"""The paper loop end to end with the real alpaca-py clients against fakes of Alpaca's trading and
market-data APIs on 127.0.0.1, and ``raytrade live`` against a stub policy service."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from raytrade.cluster.settings import Settings
from raytrade.replay import read_frame
from raytrade.replay.sources.alpaca import SourceError
from raytrade.serve.alpaca_broker import AlpacaBroker
from raytrade.serve.live import LiveLoop
from tests.fake_alpaca import TEST_KEYS, FakeAlpaca
from tests.fake_alpaca_trading import FakeAlpacaTrading
from tests.live_doubles import PAPER_TARGETS, T0, RunnerLoop, ScriptedPolicy, StubPolicyService

SYMBOLS = ["AAPL", "MSFT", "BTCUSD"]
TARGETS = PAPER_TARGETS


def _settings(data: FakeAlpaca, keys: tuple[str, str] = TEST_KEYS) -> Settings:
    return Settings(alpaca_api_key=keys[0], alpaca_secret_key=keys[1], alpaca_data_url=data.url)


def test_a_paper_cycle_trades_the_answer_and_logs_it(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    broker = AlpacaBroker(_settings(data).alpaca_access(), trading_url=trading.url)
    equity = float(trading.equity())
    loop = LiveLoop(
        broker, ScriptedPolicy(TARGETS), SYMBOLS, tmp_path / "state.json", tmp_path / "store", reset=True
    )
    report = loop.cycle(T0)
    assert report.rejected == {}

    # AAPL: 10 held at mid 181.915; target 10 % of equity -> whole shares at the mid.
    aapl_mid = (181.90 + 181.93) / 2
    expected_aapl = int((0.1 * equity / aapl_mid - 10) // 1)
    assert trading.position_qty("AAPL") == Decimal(10 + expected_aapl)
    # BTC: bought to 1e-6 units at the ask of the order book; MSFT: a limit resting at the bid.
    btc = next(p for p in report.plans if p.symbol == "BTCUSD")
    assert trading.position_qty("BTCUSD") == Decimal(str(btc.qty))
    msft = next(p for p in report.plans if p.symbol == "MSFT")
    assert (msft.order_type, msft.limit_price) == ("limit", 367.9)
    assert trading.order(report.submitted[msft.decision_id])["status"] == "new"
    orders = [r for r in trading.requests if r.method == "POST" and r.path == "/v2/orders"]
    assert {r.body["symbol"] for r in orders} == {"AAPL", "MSFT", "BTC/USD"}  # Alpaca's spelling

    exp = read_frame(tmp_path / "store", "experience")
    assert sorted(exp["symbol"]) == sorted(SYMBOLS) and exp["submitted"].all()

    # The resting order fills; the next cycle logs it (and the two market fills of the first).
    trading.fill_open_orders()
    report2 = loop.cycle(T0.replace(day=25))
    assert report2.fills_logged == 3
    fills = read_frame(tmp_path / "store", "experience")
    fills = fills[fills["decision_id"].str.endswith(":fill")].set_index("symbol")
    assert fills.loc["MSFT", "fill_price"] == 367.9
    assert fills.loc["AAPL", "fill_price"] == 181.93 and fills.loc["AAPL", "slippage_bps"] > 0


def test_a_refusal_by_alpaca_is_one_line_and_does_not_stop_the_cycle(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    trading.fail("/v2/orders", 403, times=1, method="POST", message="insufficient buying power")
    broker = AlpacaBroker(_settings(data).alpaca_access(), trading_url=trading.url)
    loop = LiveLoop(broker, ScriptedPolicy(TARGETS), SYMBOLS, tmp_path / "state.json", reset=True)
    report = loop.cycle(T0)
    assert len(report.rejected) == 1 and len(report.submitted) == 2
    (message,) = report.rejected.values()
    assert "HTTP 403" in message and "insufficient buying power" in message


def test_wrong_keys_fail_with_one_line_and_never_show_the_secret(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    secret = "wrong-secret-never-printed-0987654321"
    broker = AlpacaBroker(_settings(data, (TEST_KEYS[0], secret)).alpaca_access(), trading_url=trading.url)
    loop = LiveLoop(broker, ScriptedPolicy(TARGETS), SYMBOLS, tmp_path / "state.json", reset=True)
    with pytest.raises(SourceError) as err:
        loop.cycle(T0)
    assert "HTTP 401" in str(err.value) and secret not in str(err.value) and secret not in repr(broker)


# ---------------------------------------------------------------------------------- the CLI


def _cli_environment(monkeypatch: pytest.MonkeyPatch, data: FakeAlpaca) -> str:
    """The environment `raytrade live` reads (the fake's keys and data URL, a Serve token); the token.
    The fake's quotes are stamped now: `raytrade live` cycles at the real clock."""
    data.stamp_quotes(datetime.now(UTC))
    token = "serve-token-for-the-live-test-12345"
    monkeypatch.setenv("ALPACA_API_KEY", TEST_KEYS[0])
    monkeypatch.setenv("ALPACA_SECRET_KEY", TEST_KEYS[1])
    monkeypatch.setenv("ALPACA_DATA_URL", data.url)
    monkeypatch.setenv("RAYTRADE_SERVE_TOKEN", token)
    monkeypatch.delenv("RAYTRADE_SETTINGS_FILE", raising=False)
    return token


def test_raytrade_live_paper_once(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raytrade.cluster.cli import main

    trading, data = fakes
    token = _cli_environment(monkeypatch, data)
    refused = CliRunner().invoke(main, ["live", "--serve-url", "http://127.0.0.1:1", "--once"])
    assert refused.exit_code == 2 and "--paper" in refused.output

    stub = StubPolicyService(token)
    try:
        args = ["live", "--paper", "--once", "--serve-url", stub.url, "--trading-url", trading.url]
        args += ["--store", str(tmp_path / "store"), "--state-file", str(tmp_path / "state.json"), "--reset"]
        result = CliRunner().invoke(main, args)
    finally:
        stub.close()
    assert result.exit_code == 0, result.output
    assert "3 symbols" in result.output and "alpha@2: 3 orders, 3 sent, 0 refused" in result.output
    for secret in (token, TEST_KEYS[1]):
        assert secret not in result.output
    assert len(read_frame(tmp_path / "store", "experience")) == 3


def test_raytrade_live_orders_nothing_while_the_served_kill_switch_rule_cannot_be_read(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--symbols`` nothing else reads ``GET /v1/model``: the loop traded the answers of a
    service whose kill-switch rule it did not know. Now the cycle holds and says why."""
    from raytrade.cluster.cli import main

    trading, data = fakes
    token = _cli_environment(monkeypatch, data)
    policy = ScriptedPolicy(TARGETS)
    policy.model_error = RuntimeError("GET /v1/model fails")
    stub = StubPolicyService(token, policy)
    try:
        args = ["live", "--paper", "--once", "--serve-url", stub.url, "--trading-url", trading.url]
        args += ["--symbols", ",".join(SYMBOLS), "--state-file", str(tmp_path / "state.json"), "--reset"]
        result = CliRunner().invoke(main, args)
    finally:
        stub.close()
    assert result.exit_code == 0, result.output
    assert (
        "fallback (the served kill-switch rule is unknown (GET /v1/model unreadable)): 0 orders, 0 sent"
        in result.output
    )
    assert not [r for r in trading.requests if r.method == "POST" and r.path == "/v2/orders"]
    assert policy.requests == []  # not even asked


def test_a_resting_alpaca_order_is_cancelled_by_the_next_cycle(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    trading, data = fakes
    broker = AlpacaBroker(_settings(data).alpaca_access(), trading_url=trading.url)
    loop = LiveLoop(
        broker, ScriptedPolicy({"MSFT": (0.05, "passive")}), ["MSFT"], tmp_path / "state.json", reset=True
    )
    first = loop.cycle(T0)
    order_id = first.submitted[f"{first.cycle_id}:MSFT"]
    assert trading.order(order_id)["status"] == "new"
    loop.cycle(T0.replace(day=25))
    assert trading.order(order_id)["status"] == "canceled"
    assert any(r.method == "DELETE" and r.path == f"/v2/orders/{order_id}" for r in trading.requests)


def test_an_order_id_alpaca_does_not_know_is_dropped_not_held_for_ever(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path
) -> None:
    """A pending order whose id Alpaca answers 404 for (e.g. a state file of another account) cannot
    fill: the loop drops it and trades the symbol, instead of holding it on every cycle."""
    trading, data = fakes
    broker = AlpacaBroker(_settings(data).alpaca_access(), trading_url=trading.url)
    state = tmp_path / "state.json"
    loop = LiveLoop(broker, ScriptedPolicy({"MSFT": (0.05, "passive")}), ["MSFT"], state, reset=True)
    first = loop.cycle(T0)
    (order_id,) = first.submitted.values()
    broker.cancel(order_id)  # the first order is done, unfilled; only the unknown one is left pending
    saved = json.loads(state.read_text())
    saved["pending"] = [
        {**p, "order_id": "00000000-0000-4000-8000-000000000000", "client_order_id": "rt-unknown"}
        for p in saved["pending"]
    ]
    state.write_text(json.dumps(saved))
    loop.cycle(T0.replace(day=25))
    posts = [r for r in trading.requests if r.method == "POST" and r.path == "/v2/orders"]
    assert len(posts) == 2, "MSFT was held instead of traded"
    assert "00000000-0000-4000-8000-000000000000" not in state.read_text()


def test_raytrade_live_exits_naming_an_order_alpaca_cannot_read(
    fakes: tuple[FakeAlpacaTrading, FakeAlpaca], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MSFT limit of the first run rests; Alpaca then answers 500 to every read of it. With
    ``--max-unreadable-order-cycles 1`` the next run stops at once: exit status 2, one line naming the
    order's client id, symbol and Alpaca's error; the state file still holds the order."""
    from raytrade.cluster.cli import main

    trading, data = fakes
    token = _cli_environment(monkeypatch, data)
    state = tmp_path / "state.json"
    stub = StubPolicyService(token)
    try:
        args = ["live", "--paper", "--once", "--serve-url", stub.url, "--trading-url", trading.url]
        args += ["--state-file", str(state)]
        first = CliRunner().invoke(main, [*args, "--reset"])
        (msft,) = [p for p in json.loads(state.read_text())["pending"] if p["symbol"] == "MSFT"]
        trading.fail(f"/v2/orders/{msft['order_id']}", 500, times=None, method="GET", message="upstream down")
        stopped = CliRunner().invoke(main, [*args, "--max-unreadable-order-cycles", "1"])
    finally:
        stub.close()
    assert first.exit_code == 0, first.output
    assert stopped.exit_code == 2, stopped.output
    (error,) = [line for line in stopped.output.splitlines() if line.startswith("error:")]
    assert error.startswith(
        f"error: live loop stopped: order {msft['client_order_id']!r} (MSFT, broker id {msft['order_id']}) "
        "unreadable for 1 cycles, last error: "
    )
    assert "HTTP 500 upstream down" in error
    (kept,) = [p for p in json.loads(state.read_text())["pending"] if p["symbol"] == "MSFT"]
    assert (kept["order_id"], kept["unreadable_cycles"]) == (msft["order_id"], 1)


class _Retried(BaseException):
    """The runner went on to another cycle (not an ``Exception``: the runner does not retry it)."""


class _FailingLoop(RunnerLoop):
    """A loop whose cycles raise the given errors in turn (a ``LiveLoop`` stand-in for the runner)."""

    def __init__(self, errors: list[BaseException]):
        self.errors, self.cycles = errors, 0

    def cycle(self) -> None:
        self.cycles += 1
        raise self.errors.pop(0)


@pytest.mark.parametrize("stop", ["token", "universe"])
def test_the_runner_retries_a_hiccup_and_stops_on_what_no_cycle_can_mend(
    monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """A broker hiccup is retried at the next cycle; a token the service refuses (rotated there: the
    loop reads it once) or a served model deciding none of the loop's symbols is not: the loop used to
    fail (or hold) every cycle for ever."""
    from raytrade.cluster import live as live_cli
    from raytrade.serve.client import ServiceAuthError
    from raytrade.serve.live import UniverseError

    sleeps: list[float] = []
    monkeypatch.setattr(live_cli.time, "sleep", sleeps.append)
    error: Exception = (
        ServiceAuthError("policy service refused the token (HTTP 401)", 401)
        if stop == "token"
        else UniverseError("symbols: alpha@2 decides none of AAPL")
    )
    loop = _FailingLoop([SourceError("account: HTTP 503"), error, _Retried()])
    with pytest.raises(type(error)):
        live_cli._run(loop, once=False, every_minutes=5.0)  # type: ignore[arg-type]
    assert loop.cycles == 2 and sleeps == [300.0]
