"""``raytrade live`` advances its kill switch with the rule the served policy was trained with
(``GET /v1/model``: ``kill_switch``), settles it against a configured one, and holds while it cannot
read it."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.replay import read_frame
from raytrade.replay.exchange_calendar import nyse_holidays, trading_days_between
from raytrade.serve.client import (
    FALLBACK_MODEL,
    ClientConfig,
    Deadline,
    PolicyClient,
    ServiceError,
    served_kill_switch,
)
from raytrade.serve.kill_switch_rule import (
    RULE_UNKNOWN_MODEL,
    KillSwitchRuleError,
    looser_parameters,
    shown_rule,
)
from raytrade.serve.live import CycleReport, LiveLoop, LiveState, SavedKillSwitch
from raytrade.serve.orders import LiveConfig
from raytrade.serve.schemas import ActRequest, ActResponse, CallerKillSwitch
from tests.live_doubles import T0, ScriptedPolicy, StubPolicyService
from tests.test_live import PRICES, FakeBroker

BUY = {"AAPL": (0.1, "aggressive")}


def _cycles(
    tmp_path: Path, policy: ScriptedPolicy, equities: list[float], config: LiveConfig | None = None
) -> FakeBroker:
    """One cycle a day, the account's cash (its equity: nothing is held) set to each of ``equities``."""
    broker = FakeBroker(equities[0], PRICES)
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", config=config, reset=True) as loop:
        for day, equity in enumerate(equities):
            broker.cash = equity
            loop.cycle(T0 + timedelta(days=day))
    return broker


def _switches(policy: ScriptedPolicy) -> list[tuple[bool, int, float]]:
    return [
        (r.kill_switch.active, r.kill_switch.bars_active, r.kill_switch.peak_equity)
        for r in policy.requests
        if r.kill_switch is not None
    ]


def test_the_loop_releases_the_switch_after_the_served_release_after_bars(tmp_path: Path) -> None:
    """The policy was trained with a release after 3 bars; the loop released after its own 20."""
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, kill_switch=KillSwitchConfig(release_after_bars=3))
    _cycles(tmp_path, policy, [100_000.0, 75_000.0, 75_000.0, 75_000.0, 75_000.0])
    assert _switches(policy) == [
        (False, 0, 100_000.0),
        (True, 0, 100_000.0),  # 25 % down: tripped
        (True, 1, 100_000.0),
        (True, 2, 100_000.0),
        (False, 0, 75_000.0),  # the third bar on: released by time, the peak restarted
    ]


def test_a_configured_rule_stricter_than_the_served_one_is_kept_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stricter = KillSwitchConfig(trigger_drawdown=0.10, release_drawdown=None)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})  # serves the default rule: trigger 20 %
    with caplog.at_level("WARNING", logger="raytrade.live"):
        _cycles(tmp_path, policy, [100_000.0, 88_000.0], LiveConfig(kill_switch=stricter))
    assert _switches(policy)[-1] == (True, 0, 100_000.0)  # 12 % down trips the configured 10 %
    saved = json.loads((tmp_path / "state.json").read_text())["kill_switch"]
    assert saved["rule"] == stricter.model_dump()
    assert "is at least as strict as alpha@2's served rule" in caplog.text


def test_a_configured_rule_looser_than_the_served_one_refuses_to_start_naming_both(tmp_path: Path) -> None:
    served = KillSwitchConfig(release_after_bars=40)
    policy = ScriptedPolicy(BUY, kill_switch=served)
    broker = FakeBroker(100_000.0, PRICES)
    config = LiveConfig(kill_switch=KillSwitchConfig())  # releases after 20 bars
    with (
        LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", config=config, reset=True) as loop,
        pytest.raises(KillSwitchRuleError) as err,
    ):
        loop.start()
    message = str(err.value)
    assert f"LiveConfig.kill_switch: {shown_rule(KillSwitchConfig())})" in message
    assert f"(alpha@2, GET /v1/model kill_switch: {shown_rule(served)})" in message
    assert "release_after_bars=20 (served 40:" in message
    assert broker.submitted == [] and policy.requests == []
    assert not (tmp_path / "state.json").exists()  # refused before anything else


def test_no_order_goes_out_while_the_served_rule_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = ScriptedPolicy(BUY)
    policy.model_error = ServiceError("policy service unreachable: ConnectError", 0)
    broker = FakeBroker(100_000.0, PRICES)
    with (
        caplog.at_level("WARNING", logger="raytrade.live"),
        LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", tmp_path / "store", reset=True) as loop,
    ):
        report = loop.cycle(T0)
    assert report.plans == [] and broker.submitted == [] and policy.requests == []
    assert report.answer.fallback
    assert report.answer.reason == "the served kill-switch rule is unknown (GET /v1/model unreadable)"
    assert "the served rule cannot be read at start (policy service unreachable: ConnectError)" in caplog.text


def test_the_loop_asks_for_the_rule_each_cycle_and_trades_once_it_can_read_it(tmp_path: Path) -> None:
    policy = ScriptedPolicy(BUY)
    policy.model_error = ServiceError("policy service answered HTTP 503 to /v1/model", 503)
    broker = FakeBroker(100_000.0, PRICES)
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", reset=True) as loop:
        held = loop.cycle(T0)
        policy.model_error = None
        traded = loop.cycle(T0 + timedelta(days=1))
    assert (len(held.plans), len(traded.plans)) == (0, 1)
    assert policy.model_reads == 3  # at start, the held cycle, the one that traded


def test_a_served_rule_that_is_disabled_keeps_the_loops_own_switch_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, kill_switch=KillSwitchConfig(enabled=False))
    with caplog.at_level("WARNING", logger="raytrade.live"):
        _cycles(tmp_path, policy, [100_000.0, 75_000.0])
    assert _switches(policy)[-1] == (True, 0, 100_000.0)  # fail closed: the default rule trips
    assert (
        json.loads((tmp_path / "state.json").read_text())["kill_switch"]["rule"]
        == KillSwitchConfig().model_dump()
    )
    assert (
        "alpha@2 was trained without a kill switch (served rule disabled); the loop keeps the default"
        in caplog.text
    )


class _SwappingRule(ScriptedPolicy):
    """From its ``swap_on``-th request the service answers as ``alpha@3`` and publishes ``rule``."""

    def __init__(self, swap_on: int, rule: KillSwitchConfig):
        super().__init__({"AAPL": (0.0, "flat")})
        self.swap_on, self.new_rule = swap_on, rule

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        if len(self.requests) >= self.swap_on:
            self.served, self.kill_switch = "alpha@3", self.new_rule
        return super().act(request)


def test_an_answer_from_a_new_version_with_another_rule_redoes_the_bar_with_it(tmp_path: Path) -> None:
    policy = _SwappingRule(swap_on=1, rule=KillSwitchConfig(trigger_drawdown=0.10))
    _cycles(tmp_path, policy, [100_000.0, 88_000.0])
    assert _switches(policy) == [
        (False, 0, 100_000.0),
        (False, 0, 100_000.0),  # 12 % down, asked with alpha@2's rule (20 %); alpha@3 answered
        (True, 0, 100_000.0),  # the bar redone with alpha@3's rule (10 %): tripped, asked again
    ]
    assert policy.model_reads == 4  # at start, each cycle, and on the new version


def test_a_count_the_new_version_refuses_is_redone_with_its_rule_and_asked_again(tmp_path: Path) -> None:
    """alpha@3 (release after 2 bars) is served between the cycle's read and its act: the count of 2
    is refused (HTTP 422 on kill_switch.bars_active), the bar is redone with alpha@3's rule."""
    policy = _SwappingRule(swap_on=3, rule=KillSwitchConfig(release_after_bars=2))
    _cycles(tmp_path, policy, [100_000.0, 75_000.0, 75_000.0, 75_000.0])
    assert _switches(policy) == [
        (False, 0, 100_000.0),
        (True, 0, 100_000.0),
        (True, 1, 100_000.0),
        (True, 2, 100_000.0),  # advanced with alpha@2's rule (20 bars); refused by alpha@3
        (False, 0, 75_000.0),  # the bar redone with alpha@3's rule (2 bars): released, answered
    ]
    assert policy.model_reads == 6  # at start, each cycle, and on the refusal
    saved = json.loads((tmp_path / "state.json").read_text())["kill_switch"]
    assert (saved["active"], saved["bars_active"], saved["rule"]["release_after_bars"]) == (False, 0, 2)


def _state_with_switch(tmp_path: Path, switch: dict[str, Any]) -> None:
    (tmp_path / "state.json").write_text(
        json.dumps({"account_id": "PA-TEST", "peak_equity": 1e5, "pending": [], "kill_switch": switch})
    )


def _counted(bars: int, release_after_bars: int) -> dict[str, Any]:
    """A saved switch on for ``bars`` bars (advanced the day before T0), released after
    ``release_after_bars``."""
    rule = KillSwitchConfig(release_after_bars=release_after_bars).model_dump()
    return {
        "active": True,
        "bars_active": bars,
        "peak_equity": None,
        "as_of": "2026-11-23T14:30:00Z",
        "rule": rule,
    }


def test_a_swap_to_a_shorter_release_while_the_switch_is_on_releases_it_at_the_next_cycle(
    tmp_path: Path,
) -> None:
    """Tripped under alpha@2 (release after 40 bars) and counted to 9; alpha@3 (release after 10) is
    served before the next cycle: that cycle reads alpha@3's rule and releases (it used to advance to
    10 with the rule read at start, which alpha@3 refuses, every cycle, forever)."""
    _state_with_switch(tmp_path, _counted(8, 40))
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, kill_switch=KillSwitchConfig(release_after_bars=40))
    with LiveLoop(FakeBroker(75_000.0, PRICES), policy, ["AAPL"], tmp_path / "state.json") as loop:
        loop.cycle(T0)
        policy.served, policy.kill_switch = "alpha@3", KillSwitchConfig(release_after_bars=10)
        answers = [loop.cycle(T0 + timedelta(days=day)).answer for day in (1, 2)]
    assert _switches(policy) == [(True, 9, 1e5), (False, 0, 75_000.0), (False, 0, 75_000.0)]
    assert [(a.model, a.fallback) for a in answers] == [("alpha@3", False), ("alpha@3", False)]
    assert policy.model_reads == 4  # at start and each cycle: nothing refused


def _held_on_a_refused_count(tmp_path: Path, policy: ScriptedPolicy) -> Any:
    """One cycle of a switch counted to 9 under a rule releasing after 40, ``policy`` publishing that
    rule but refusing from 10 bars: its report, after checking that nothing was ordered."""
    _state_with_switch(tmp_path, _counted(9, 40))
    policy.enforced = KillSwitchConfig(release_after_bars=10)
    broker = FakeBroker(75_000.0, PRICES)
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json") as loop:
        report = loop.cycle(T0)
    assert report.plans == [] and broker.submitted == []
    return report


def test_a_count_refused_under_the_rule_just_read_holds_the_cycle_and_orders_nothing(tmp_path: Path) -> None:
    """The service publishes a release after 40 bars but refuses a count of 10 (a replica of another
    version): the rule read again is the same, so the cycle holds, and the saved switch waits."""
    policy = ScriptedPolicy(BUY, kill_switch=KillSwitchConfig(release_after_bars=40))
    report = _held_on_a_refused_count(tmp_path, policy)
    assert report.answer.reason == (
        "the service refuses the kill switch's count (10 bars) advanced with alpha@2's rule "
        "(release_after_bars=40)"
    )
    assert report.answer.kill_switch_active
    assert json.loads((tmp_path / "state.json").read_text())["kill_switch"]["bars_active"] == 9
    assert policy.model_reads == 3  # at start, the cycle, on the refusal


class _RefusesThenUnreachable(ScriptedPolicy):
    """Refuses a count of 10 (releases after 10, publishes 40), and is unreachable on ``GET /v1/model``
    from then on."""

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        try:
            return super().act(request)
        except ServiceError:
            self.model_error = ServiceError("policy service unreachable: ConnectError", 0)
            raise


def test_a_refused_count_whose_rule_cannot_be_read_again_holds_the_cycle(tmp_path: Path) -> None:
    policy = _RefusesThenUnreachable(BUY, kill_switch=KillSwitchConfig(release_after_bars=40))
    report = _held_on_a_refused_count(tmp_path, policy)
    assert report.answer.reason == (
        "the rule the service refuses the count under is unknown (GET /v1/model unreadable)"
    )


def test_a_cycle_held_with_the_rule_unknown_logs_the_saved_switch_as_on(tmp_path: Path) -> None:
    _state_with_switch(tmp_path, _counted(3, 20))
    policy = ScriptedPolicy(BUY)
    policy.model_error = ServiceError("policy service unreachable: ConnectError", 0)
    store = tmp_path / "store"
    with LiveLoop(FakeBroker(75_000.0, PRICES), policy, ["AAPL"], tmp_path / "state.json", store) as loop:
        report = loop.cycle(T0)
    assert report.answer.fallback and report.answer.kill_switch_active
    row = read_frame(store, "experience").iloc[0]
    assert json.loads(row["state"])["kill_switch_active"] is True


class _NoRule(ScriptedPolicy):
    """Answers ``GET /v1/model`` without a kill_switch rule (a service of an earlier version)."""

    def model(self, deadline: Deadline | None = None) -> dict[str, Any]:
        return {k: v for k, v in super().model().items() if k != "kill_switch"}


def test_a_model_answer_without_a_valid_rule_holds_saying_so(tmp_path: Path) -> None:
    policy = _NoRule(BUY)
    broker = FakeBroker(100_000.0, PRICES)
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", reset=True) as loop:
        report = loop.cycle(T0)
    assert broker.submitted == [] and policy.requests == []
    assert (
        report.answer.reason
        == "the served kill-switch rule is unknown (GET /v1/model publishes no valid rule)"
    )


def test_a_new_model_version_whose_rule_the_configured_one_is_looser_than_stops_the_loop(
    tmp_path: Path,
) -> None:
    policy = _SwappingRule(swap_on=1, rule=KillSwitchConfig(release_after_bars=40))
    policy.targets = dict(BUY)
    broker = FakeBroker(100_000.0, PRICES)
    config = LiveConfig(kill_switch=KillSwitchConfig())  # alpha@2's rule, explicitly
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", config=config, reset=True) as loop:
        loop.cycle(T0)
        sent = len(broker.submitted)
        with pytest.raises(KillSwitchRuleError, match=r"\(alpha@3, GET /v1/model kill_switch: "):
            loop.cycle(T0 + timedelta(days=1))
    assert (sent, len(broker.submitted)) == (1, 1)  # nothing ordered on alpha@3's answer


@pytest.mark.parametrize(
    ("recorded", "served_bars", "expected"),
    [
        # advanced under a 40-bar release: 26 bars are past the served 20, released (peak restarted)
        (
            KillSwitchConfig(release_after_bars=40).model_dump(),
            20,
            CallerKillSwitch(active=False, bars_active=0, peak_equity=75_000.0),
        ),
        # an earlier version's record names no rule: counted on under the served 30
        (None, 30, CallerKillSwitch(active=True, bars_active=26, peak_equity=1e5)),
    ],
    ids=["advanced-under-another-rule", "no-rule-recorded"],
)
def test_a_saved_switch_loads_and_is_advanced_with_the_served_rule(
    tmp_path: Path, recorded: dict[str, Any] | None, served_bars: int, expected: CallerKillSwitch
) -> None:
    switch = {"active": True, "bars_active": 25, "peak_equity": None, "as_of": "2026-11-23T14:30:00Z"}
    _state_with_switch(tmp_path, switch if recorded is None else {**switch, "rule": recorded})
    served = KillSwitchConfig(release_after_bars=served_bars)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, kill_switch=served)
    with LiveLoop(FakeBroker(75_000.0, PRICES), policy, ["AAPL"], tmp_path / "state.json") as loop:
        loop.cycle(T0)
    assert policy.requests[0].kill_switch == expected
    assert json.loads((tmp_path / "state.json").read_text())["kill_switch"]["rule"] == served.model_dump()


def test_looser_parameters_names_each_one_with_both_values() -> None:
    configured = KillSwitchConfig(trigger_drawdown=0.3, release_drawdown=0.01, release_after_bars=10)
    assert looser_parameters(configured, KillSwitchConfig()) == [
        "trigger_drawdown=0.3 (served 0.2: trips later)",
        "release_after_bars=10 (served 20: must be equal: an earlier release re-risks sooner, a later one "
        "the service refuses)",
    ]


def test_a_model_answer_without_a_kill_switch_rule_is_a_service_error() -> None:
    with pytest.raises(ServiceError, match=r"^/v1/model publishes no kill_switch rule for alpha@2$"):
        served_kill_switch({"model": "alpha@2", "symbols": ["AAPL"]})


def test_a_rule_published_with_a_field_left_out_is_unknown_naming_the_fields() -> None:
    with pytest.raises(ServiceError) as err:
        served_kill_switch({"model": "alpha@2", "kill_switch": {"enabled": True, "trigger_drawdown": 0.2}})
    assert str(err.value) == (
        "/v1/model publishes a kill_switch rule for alpha@2 that cannot be read "
        "(kill_switch.release_drawdown, kill_switch.release_after_bars, "
        "kill_switch.reset_peak_on_release: missing)"
    )


def test_a_null_rule_is_unknown_named_once() -> None:
    with pytest.raises(ServiceError) as err:
        served_kill_switch({"model": "alpha@2", "kill_switch": None})
    assert str(err.value) == (
        "/v1/model publishes a kill_switch rule for alpha@2 that cannot be read "
        "(kill_switch: not an object: None)"
    )


# -- one deadline per cycle's decision: the loop's real client against a slow stub service ----------

SERVE_TOKEN = "serve-token-for-the-deadline-test-1234"
ONE_CYCLE: dict[str, Any] = {"timeout_s": 0.6, "total_deadline_s": 0.8, "backoff_s": 0.01}
"""Every request fits one attempt (0.6 s), so each of the old loop's requests, a deadline of its own
each, was answered; requests of 0.5 s and 0.5 s (or 0.3 s and 0.6 s) do not fit one cycle's 0.8 s."""


def _cycle_against_a_slow_service(
    tmp_path: Path, policy: ScriptedPolicy, delays: dict[str, list[float]]
) -> tuple[CycleReport, FakeBroker, SavedKillSwitch | None]:
    """Start the loop (its rule read at once), then one cycle at ``T0`` with the service waiting
    ``delays`` (per method, request by request) before it answers; the report, the broker and the
    switch the cycle saved."""
    stub = StubPolicyService(SERVE_TOKEN, policy)
    broker = FakeBroker(100_000.0, PRICES)
    try:
        with (
            PolicyClient(ClientConfig(base_url=stub.url, **ONE_CYCLE), SecretStr(SERVE_TOKEN)) as client,
            LiveLoop(broker, client, ["AAPL"], tmp_path / "state.json", reset=True) as loop,
        ):
            loop.start()
            stub.delays.update(delays)
            report = loop.cycle(T0)
    finally:
        stub.close()
    return report, broker, LiveState.load(tmp_path / "state.json").kill_switch


@pytest.mark.timeout(20)
def test_a_cycle_whose_rule_read_takes_most_of_its_deadline_holds_the_act_as_an_outage(
    tmp_path: Path,
) -> None:
    """The rule read takes 0.5 s of the cycle's 0.8 s, the act would take 0.5 s: the act gets the 0.3 s
    left and is cut, an outage of the act as the client holds one: no order, the bar's advance kept
    (the old loop gave each its own deadline and traded at 1 s)."""
    report, broker, saved = _cycle_against_a_slow_service(
        tmp_path, ScriptedPolicy(BUY), {"GET": [0.5], "POST": [0.5]}
    )
    assert (report.answer.fallback, report.answer.model) == (True, FALLBACK_MODEL)
    pending = "the act() deadline (total_deadline_s=0.8 s) ran out with POST /v1/act pending: no answer"
    assert (report.answer.reason or "").startswith(f"policy service unavailable: {pending}")
    assert broker.submitted == [] and report.plans == []
    assert saved is not None and (saved.as_of, saved.active, saved.bars_active) == (T0, False, 0)


@pytest.mark.timeout(20)
def test_a_hot_swap_whose_rule_reread_overruns_the_cycles_deadline_holds_with_the_rule_unknown(
    tmp_path: Path,
) -> None:
    """alpha@3 answers the act after 0.3 s; its rule would take 0.6 s more: the re-read is cut at the
    cycle's 0.8 s and the cycle holds for want of the rule, the switch not advanced (the old loop read
    it under a deadline of its own and traded alpha@3's answer)."""
    policy = _SwappingRule(swap_on=0, rule=KillSwitchConfig())
    policy.targets = BUY
    report, broker, saved = _cycle_against_a_slow_service(
        tmp_path, policy, {"GET": [0.0, 0.6], "POST": [0.3]}
    )
    assert (report.answer.fallback, report.answer.model) == (True, RULE_UNKNOWN_MODEL)
    assert report.answer.reason == "the kill-switch rule of alpha@3 is unknown (GET /v1/model unreadable)"
    assert broker.submitted == [] and report.plans == []
    assert saved is None  # held with the rule unknown: no advance saved


class _StricterService(ScriptedPolicy):
    """Publishes the default rule (trigger 20 %) but trips its own switch at 10 % down, as a service
    with a ``kill_drawdown`` of its own would; on also while the caller's switch says so."""

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        answer = super().act(request, deadline=deadline)
        state = request.kill_switch
        on = (state is not None and state.active) or request.account.equity < 90_000.0
        return answer.model_copy(update={"kill_switch_active": on})


def test_a_trip_by_the_service_is_adopted_by_the_loops_switch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service's switch went on at 12 % down while the loop's rule (20 %) said off: the loop takes
    its switch as tripped at that bar, so the next bar, 5 % down, still unwinds (the service's own
    trigger would have let go), counting from the trip."""
    policy = _StricterService({"AAPL": (0.0, "flat")})
    with caplog.at_level("WARNING", logger="raytrade.live"):
        _cycles(tmp_path, policy, [100_000.0, 88_000.0, 95_000.0])
    assert _switches(policy) == [
        (False, 0, 100_000.0),
        (False, 0, 100_000.0),  # the loop's own rule: 12 % is under its 20 % trigger
        (True, 1, 100_000.0),  # adopted at the previous bar, advanced one bar
    ]
    saved = json.loads((tmp_path / "state.json").read_text())["kill_switch"]
    assert (saved["active"], saved["bars_active"]) == (True, 1)
    assert "the service tripped it at this bar; the loop's rule had not" in caplog.text


def test_an_answer_with_the_switch_off_leaves_the_loops_switch_off(tmp_path: Path) -> None:
    """The adoption reads the answer: a service that does not trip leaves the loop's switch as its
    rule advances it (the mutant that trips on every answer fails here)."""
    policy = _StricterService({"AAPL": (0.0, "flat")})
    _cycles(tmp_path, policy, [100_000.0, 95_000.0, 95_000.0])
    assert [s[0] for s in _switches(policy)] == [False, False, False]
    saved = json.loads((tmp_path / "state.json").read_text())["kill_switch"]
    assert saved["active"] is False


def test_a_cycle_with_none_of_its_symbols_served_still_advances_the_switch(tmp_path: Path) -> None:
    """While the served model decides none of the loop's symbols the cycle holds, but the rule was read:
    the switch is advanced with it, so a trip in that stretch is kept (it used to be skipped, and the
    loop bought once the symbols came back, 15 % down, unwind-only under the served rule)."""
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")})  # nothing held: the equity is the cash
    broker = FakeBroker(100_000.0, PRICES)
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", reset=True) as loop:
        loop.cycle(T0)
        policy.universe, broker.cash = ["NVDA"], 75_000.0  # 25 % down: the default rule trips at 20 %
        held = loop.cycle(T0 + timedelta(days=1))
        policy.universe, broker.cash = ["AAPL"], 85_000.0
        loop.cycle(T0 + timedelta(days=2))
    assert held.answer.fallback and held.plans == [] and held.answer.model == "alpha@2"
    assert (
        held.answer.kill_switch_active and held.answer.reason == "alpha@2 decides none of the loop's symbols"
    )
    assert _switches(policy)[-1] == (True, 1, 100_000.0)
    saved = json.loads((tmp_path / "state.json").read_text())["kill_switch"]
    assert (saved["active"], saved["bars_active"]) == (True, 1)


def _last_session(as_of: datetime) -> datetime:
    """The NYSE session whose daily bar (closed at the next UTC midnight) is the newest closed by
    ``as_of``: the bar a daily policy's answer observes."""
    day = np.busday_offset(
        np.datetime64(as_of.date() - timedelta(days=1)), 0, roll="backward", holidays=nyse_holidays()
    )
    return datetime.fromisoformat(str(day)).replace(tzinfo=UTC)


def test_the_switch_counts_the_bars_the_policy_observed_not_the_loops_daily_cycles(tmp_path: Path) -> None:
    """A daily cycle at 15:00 UTC, seven days a week (the loop's default), the account 25 % down from
    Friday 2025-01-17 on. The service observes the last NYSE session's bar: the weekends and
    Martin Luther King Day bring none. Counted by cycles the switch released on Thursday 2025-02-06,
    13 sessions after the trip; the policy's 20 bars end with the bar of Friday 2025-02-14."""
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, observed_bar=_last_session)
    start = datetime(2025, 1, 16, 15, tzinfo=UTC)  # a Thursday
    broker = FakeBroker(100_000.0, PRICES)
    taken: list[tuple[datetime, bool, int]] = []
    with LiveLoop(broker, policy, ["AAPL"], tmp_path / "state.json", reset=True) as loop:
        for day in range(33):
            broker.cash = 100_000.0 if day == 0 else 75_000.0
            loop.cycle(start + timedelta(days=day))
            saved = LiveState.load(tmp_path / "state.json").kill_switch
            assert saved is not None
            taken.append((start + timedelta(days=day), saved.active, saved.bars_active))
    tripped = [when for when, active, bars in taken if active and bars == 0]
    assert tripped[0].date().isoformat() == "2025-01-17"  # observing Thursday's bar
    released = next(when for when, active, _ in taken if when > tripped[0] and not active)
    assert released.date().isoformat() == "2025-02-15"  # the first cycle observing Friday 02-14's bar
    assert _last_session(released).date().isoformat() == "2025-02-14"
    assert trading_days_between(_last_session(tripped[0]).date(), _last_session(released).date()) == 20
    # a cycle that observes the bar of the one before it sends the switch as it was
    for (before, _, bars_before), (when, active, bars) in itertools.pairwise(taken):
        if active and _last_session(when) == _last_session(before):
            assert bars == bars_before, when
    saved = LiveState.load(tmp_path / "state.json").kill_switch
    assert saved is not None and saved.bar == _last_session(start + timedelta(days=32))


def test_a_saved_switch_remembers_the_bar_it_observed_across_a_restart(tmp_path: Path) -> None:
    """Saturday's cycle (the service still on Friday's bar) advanced, then restarted on Sunday: Sunday's
    cycle observes that bar again and sends the switch as Saturday saved it."""
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, observed_bar=_last_session)
    saturday = datetime(2025, 1, 18, 15, tzinfo=UTC)
    broker = FakeBroker(75_000.0, PRICES)
    state = tmp_path / "state.json"
    LiveState(peak_equity=100_000.0).save(state)
    with LiveLoop(broker, policy, ["AAPL"], state) as loop:
        loop.cycle(saturday)
    after_saturday = LiveState.load(state).kill_switch
    assert after_saturday is not None and after_saturday.bar is not None
    assert after_saturday.bar.date().isoformat() == "2025-01-17"
    with LiveLoop(broker, policy, ["AAPL"], state) as loop:
        loop.cycle(saturday + timedelta(days=1))
    after_sunday = LiveState.load(state).kill_switch
    assert after_sunday is not None
    assert after_sunday.active == after_saturday.active
    assert after_sunday.bars_active == after_saturday.bars_active
    assert policy.requests[-1].kill_switch is not None
    assert policy.requests[-1].kill_switch.bars_active == after_saturday.bars_active


def test_holds_without_a_bar_do_not_advance_the_switch(tmp_path: Path) -> None:
    """Every cycle answered by a hold that says no bar (a stale store's, an outage's): counted per
    cycle, 20 hourly cycles released a tripped switch and restarted its peak at the drawdown."""
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, fallback=True)
    state = tmp_path / "state.json"
    t0 = datetime(2025, 1, 21, 15, tzinfo=UTC)
    friday = datetime(2025, 1, 17, tzinfo=UTC)
    tripped = SavedKillSwitch(active=True, bars_active=3, as_of=t0, rule=KillSwitchConfig(), bar=friday)
    LiveState(peak_equity=100_000.0, kill_switch=tripped).save(state)
    with LiveLoop(FakeBroker(75_000.0, PRICES), policy, ["AAPL"], state) as loop:
        for hour in range(1, 22):
            loop.cycle(t0 + timedelta(hours=hour))
    saved = LiveState.load(state).kill_switch
    assert saved is not None
    assert (saved.active, saved.bars_active, saved.peak_equity, saved.bar) == (True, 3, None, friday)


def test_a_swap_to_a_shorter_release_on_a_bar_seen_before_releases_instead_of_being_refused(
    tmp_path: Path,
) -> None:
    """The saved switch on at 15 bars; the new version releases after 10, and Saturday's answers still
    observe Friday's bar. Undone, the advance re-sent 15, which the new service refuses every cycle
    (held without it, counted failed); the new rule's release stands, as it did before."""
    friday = datetime(2025, 1, 17, tzinfo=UTC)
    policy = ScriptedPolicy({"AAPL": (0.0, "flat")}, observed_bar=lambda as_of: friday)
    state = tmp_path / "state.json"
    saved = SavedKillSwitch(
        active=True, bars_active=15, as_of=friday + timedelta(hours=15), rule=KillSwitchConfig(), bar=friday
    )
    LiveState(peak_equity=100_000.0, kill_switch=saved).save(state)
    policy.kill_switch = KillSwitchConfig(release_after_bars=10)
    policy.served = "beta@3"
    with LiveLoop(FakeBroker(75_000.0, PRICES), policy, ["AAPL"], state) as loop:
        report = loop.cycle(datetime(2025, 1, 18, 15, tzinfo=UTC))
    assert report.held_without_service is None and report.answer.model == "beta@3"
    after = LiveState.load(state).kill_switch
    assert after is not None and (after.active, after.bars_active) == (False, 0)
