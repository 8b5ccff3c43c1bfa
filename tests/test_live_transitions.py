"""The live loop logs its decisions as offline-RL transitions, which the experience reader links."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raytrade.replay.experience import (
    flat_observation,
    read_transitions_frame,
    split_flat_observation,
)
from raytrade.serve.client import Deadline
from raytrade.serve.schemas import ActRequest, ActResponse
from tests.live_doubles import ScriptedPolicy
from tests.test_live import PRICES, T0, FakeBroker, _loop

TARGETS = {"AAPL": (0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (-3.0, "aggressive")}
N, F = 3, 2  # the policy's universe (TARGETS' order) and features per asset
SPEC = "f" * 64  # the service's observation_spec of its answers


class ObservingPolicy(ScriptedPolicy):
    """ScriptedPolicy that also returns the flat observation it acted on: per asset the features
    ``[cycle, asset index]``, then the request's weights, listed flags and a portfolio state whose
    first entry is the cash fraction."""

    def __init__(self, fallback_on: int | None = None):
        super().__init__(TARGETS)
        self.observations: list[list[float]] = []
        self.fallback_on = fallback_on

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        self.fallback = len(self.requests) == self.fallback_on
        answer = super().act(request)
        assert request.observation  # the loop asks for it when it logs experience
        if self.fallback:
            return answer
        eq = request.account.equity
        current = {p.symbol: p.signed_value() / eq for p in request.positions}
        k = float(len(self.requests))
        features = [[k, float(i)] for i in range(N)]
        weights = [current.get(s, 0.0) for s in TARGETS]
        cash = (request.account.cash or 0.0) / eq
        obs = [*np.ravel(features), *weights, *[1.0] * N, cash, 0.0, 0.0, 0.0, k / 10]
        self.observations.append([float(np.float32(v)) for v in obs])
        return answer.model_copy(update={"observation": obs, "observation_spec": SPEC})


def _session(tmp_path: Path, policy: ObservingPolicy, cycles: int) -> list[float]:
    """``cycles`` cycles a day apart, AAPL's price up 1 % each day; the equity each cycle saw."""
    broker = FakeBroker(100_000.0, dict(PRICES))
    equity = []
    with _loop(tmp_path, broker, policy) as loop:
        for day in range(cycles):
            bid, ask = PRICES["AAPL"]
            broker.prices["AAPL"] = (bid * 1.01**day, ask * 1.01**day)
            equity.append(broker.account().equity)
            loop.cycle(T0 + timedelta(days=day))
    return equity


def test_flat_observations_split_into_the_slices_the_reader_reassembles() -> None:
    import pandas as pd

    flat = np.arange(N * (F + 2) + 5, dtype=np.float32)
    slices, portfolio = split_flat_observation(flat, N, 5)
    assert [s.tolist() for s in slices] == [[0, 1, 6, 9], [2, 3, 7, 10], [4, 5, 8, 11]]
    np.testing.assert_array_equal(flat_observation(np.stack(slices), pd.Series([portfolio])), flat)


def test_a_live_session_reads_back_as_linked_transitions(tmp_path: Path) -> None:
    policy = ObservingPolicy()
    equity = _session(tmp_path, policy, cycles=3)
    tr = read_transitions_frame(
        tmp_path / "store", n_assets=N, obs_dim=N * (F + 2) + 5, symbols=list(TARGETS), observation_spec=SPEC
    )
    assert tr["eps_id"].tolist() == [tr["eps_id"][0]] * 2 and tr["eps_id"][0].startswith("live:2026")
    assert tr["t"].tolist() == [0, 1]  # the third decision waits for a fourth cycle
    np.testing.assert_array_equal(tr["obs"], np.asarray(policy.observations[:2], np.float32))
    np.testing.assert_array_equal(tr["new_obs"], np.asarray(policy.observations[1:], np.float32))
    # the action is what the book was sent to: AAPL's order; BTCUSD's -3 short went out as no order
    # (crypto cannot be shorted), so its weight stayed 0 (it was logged as -1, the target clipped)
    # (AAPL's weight the order reached, in whole shares: 0.1 within a share's worth)
    np.testing.assert_allclose(tr["actions"], np.array([[0.1, 0.0, 0.0]] * 2, np.float32), atol=2e-3)
    expected = [math.log(equity[1] / equity[0]), math.log(equity[2] / equity[1])]
    np.testing.assert_allclose(tr["rewards"], np.asarray(expected, np.float32), rtol=0, atol=0)
    assert expected[1] > 0 and not tr["terminateds"].any() and not tr["truncateds"].any()


def test_a_decision_followed_by_a_fallback_is_not_a_transition(tmp_path: Path) -> None:
    policy = ObservingPolicy(fallback_on=1)  # cycle 2 falls back: no next observation for cycle 1
    _session(tmp_path, policy, cycles=4)
    tr = read_transitions_frame(tmp_path / "store", n_assets=N)
    # cycle 3 -> cycle 4 only, step 0 of an episode of its own: the fallback broke the chain, and an
    # episode's steps stay consecutive (a learner's returns read them in order)
    third = T0 + timedelta(days=2)
    assert tr["t"].tolist() == [0] and tr["eps_id"][0] == f"live:{third:%Y%m%dT%H%M%S%f}Z"
    np.testing.assert_array_equal(tr["obs"][0], np.asarray(policy.observations[1], np.float32))


class SwappingPolicy(ObservingPolicy):
    """From its ``swap_on``-th answer the service answers with another version and encoding (with
    ``fallback_on``, one answer is a fallback)."""

    def __init__(self, swap_on: int, new_spec: str, fallback_on: int | None = None):
        super().__init__(fallback_on)
        self.swap_on, self.new_spec = swap_on, new_spec

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        if len(self.requests) >= self.swap_on:  # GET /v1/model says the new version from now on too
            self.served = "alpha@3"
        answer = super().act(request)
        if self.served == "alpha@3":
            return answer.model_copy(update={"observation_spec": self.new_spec})
        return answer


@pytest.mark.parametrize("new_spec", [SPEC, "e" * 64], ids=["new-version", "new-encoding"])
def test_a_hot_swap_ends_the_episode_instead_of_linking_two_policies_observations(
    tmp_path: Path, new_spec: str
) -> None:
    """Cycle 2's decision was linked to cycle 3's observation, encoded by the swapped-in version and
    logged under the old version's spec (a nightly retrain: same width, other numbers)."""
    policy = SwappingPolicy(swap_on=2, new_spec=new_spec)
    _session(tmp_path, policy, cycles=5)
    frame = read_transitions_frame(tmp_path / "store", n_assets=N)
    steps = sorted(zip(frame["eps_id"].tolist(), frame["t"].tolist(), strict=True))
    before, after = sorted({e for e, _ in steps})
    assert [t for e, t in steps if e == before] == [0]  # cycle 1 -> 2; not 2 -> 3 across the swap
    assert [t for e, t in steps if e == after] == [0, 1]  # the new version's own: 3 -> 4, 4 -> 5
    by_step = dict(
        zip(zip(frame["eps_id"].tolist(), frame["t"].tolist(), strict=True), frame["obs"], strict=True)
    )
    np.testing.assert_array_equal(by_step[(after, 0)], np.asarray(policy.observations[2], np.float32))


def test_a_hot_swap_right_after_a_fallback_still_starts_a_new_episode(tmp_path: Path) -> None:
    """The fallback cleared the pending step, so the swap went unseen: one episode held two policies."""
    policy = SwappingPolicy(swap_on=3, new_spec="e" * 64, fallback_on=2)  # cycle 3 falls back
    _session(tmp_path, policy, cycles=6)
    frame = read_transitions_frame(tmp_path / "store", n_assets=N)
    steps = sorted(zip(frame["eps_id"].tolist(), frame["t"].tolist(), strict=True))
    before, after = sorted({e for e, _ in steps})
    assert [t for e, t in steps if e == before] == [0]  # cycle 1 -> 2
    assert [t for e, t in steps if e == after] == [0, 1]  # the new version: 4 -> 5, 5 -> 6


@pytest.mark.ray
def test_ray_data_reads_the_live_transitions_skipping_files_without_any(
    ray_session: None, tmp_path: Path
) -> None:
    from raytrade.replay.experience import read_transitions

    policy = ObservingPolicy()
    _session(tmp_path, policy, cycles=3)  # the first cycle's file holds decision rows only
    rows: list[dict[str, Any]] = read_transitions(tmp_path / "store", n_assets=N).take_all()
    rows.sort(key=lambda r: r["t"])
    assert [r["t"] for r in rows] == [0, 1]
    np.testing.assert_array_equal(rows[0]["new_obs"], rows[1]["obs"])  # linked step to step
    np.testing.assert_array_equal(rows[1]["new_obs"], np.asarray(policy.observations[2], np.float32))


def test_a_failing_transition_never_costs_a_fill_or_decision_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pandas as pd

    from raytrade.serve import live

    def broken(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("transition bug")

    baseline_root, broken_root = tmp_path / "ok", tmp_path / "broken"
    _session(baseline_root, ObservingPolicy(), cycles=3)
    monkeypatch.setattr(live, "transition_rows", broken)
    _session(broken_root, ObservingPolicy(), cycles=3)  # raises nothing

    def rows(root: Path) -> pd.DataFrame:
        frame = pd.read_parquet(root / "store" / "experience")
        return frame[frame["episode_id"].isna()]  # fills and decisions

    ok, after = rows(baseline_root), rows(broken_root)
    assert len(after) == len(ok) > 0
    assert sorted(after["decision_id"]) == sorted(ok["decision_id"])
    # cycle 2 fails completing cycle 1's decision and ends the chain, so cycle 3 has none to complete
    assert sum("transition rows not logged" in r.getMessage() for r in caplog.records) == 1


class DailyBarPolicy(ObservingPolicy):
    """Answers observing the bar of the cycle's UTC day (``features_as_of``), as a daily policy does."""

    def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
        answer = super().act(request)
        day = request.as_of.replace(hour=0, minute=0, second=0, microsecond=0)
        return answer.model_copy(update={"features_as_of": day})


def test_cycles_within_one_bar_are_one_transition_over_the_bar(tmp_path: Path) -> None:
    """A loop cycling hourly on a daily policy logged each hour as an env step: an hour's reward
    discounted as a day's. The env's step is a bar: the bar's first decision stays pending through
    the later cycles on that bar (its action now their last intent) and is completed by the next
    bar's first answer, rewarded over that span."""
    policy = DailyBarPolicy()
    broker = FakeBroker(100_000.0, dict(PRICES))
    hours = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(days=1)]
    equity = []
    with _loop(tmp_path, broker, policy) as loop:
        for k, now in enumerate(hours):
            if k == 2:  # the bar's last cycle aims elsewhere: its intent is the action logged
                policy.targets = {**policy.targets, "AAPL": (0.05, "aggressive")}
            if k == 3:
                bid, ask = PRICES["AAPL"]
                broker.prices["AAPL"] = (bid * 1.02, ask * 1.02)  # the next day moves
            equity.append(broker.account().equity)
            loop.cycle(now)
    tr = read_transitions_frame(tmp_path / "store", n_assets=N)
    assert tr["t"].tolist() == [0]  # one transition, not three
    np.testing.assert_array_equal(tr["obs"][0], np.asarray(policy.observations[0], np.float32))
    # the next bar's answer: the last one asked (a later cycle on a bar asks twice: the kill switch's
    # advance, then, the bar seen again, without it)
    np.testing.assert_array_equal(tr["new_obs"][0], np.asarray(policy.observations[-1], np.float32))
    assert tr["rewards"][0] == pytest.approx(math.log(equity[3] / equity[0]), abs=1e-6)  # over the bar
    assert tr["actions"][0][0] == pytest.approx(0.05, abs=2e-3)  # the bar's last intent, not its first


def test_a_refused_order_is_logged_as_the_weight_the_book_kept(tmp_path: Path) -> None:
    """The broker refused AAPL's order: the book stayed at 0, so the transition's action is 0, not
    the 0.1 the service asked for (a learner would credit 0.1 with the reward of holding nothing)."""

    class RefusingBroker(FakeBroker):
        def submit(self, plan: Any) -> str:
            if plan.symbol == "AAPL":
                from raytrade.replay.sources.alpaca import SourceError

                raise SourceError("403 forbidden: insufficient buying power", status=403)
            return str(super().submit(plan))

        def order_by_client_id(self, client_order_id: str) -> Any:
            return None

    policy = ObservingPolicy()
    broker = RefusingBroker(100_000.0, dict(PRICES))
    with _loop(tmp_path, broker, policy) as loop:
        for day in range(2):
            loop.cycle(T0 + timedelta(days=day))
    tr = read_transitions_frame(tmp_path / "store", n_assets=N)
    np.testing.assert_array_equal(tr["actions"], np.array([[0.0, 0.0, 0.0]], np.float32))


def test_a_pair_the_universe_spells_otherwise_is_logged_in_the_served_spelling(tmp_path: Path) -> None:
    """The store spells the pair ``BTC/USD``, the broker ``BTCUSD``: transitions were logged under the
    broker's name, and the learner refused them as experience of another universe."""
    from raytrade.serve.live import LiveLoop

    universe = ["AAPL", "BTC/USD"]

    class PairPolicy(ScriptedPolicy):
        def act(self, request: ActRequest, *, deadline: Deadline | None = None) -> ActResponse:
            answer = super().act(request)
            k = float(len(self.requests))
            obs = [k, 0.0, k, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # 2 x (F + 2) + 5
            return answer.model_copy(update={"observation": obs, "observation_spec": SPEC})

    policy = PairPolicy({"AAPL": (0.1, "aggressive"), "BTC/USD": (0.0, "flat")}, universe=universe)
    broker = FakeBroker(100_000.0, dict(PRICES))
    with LiveLoop(broker, policy, universe, tmp_path / "s.json", tmp_path / "store", reset=True) as loop:
        for day in range(2):
            loop.cycle(T0 + timedelta(days=day))
    tr = read_transitions_frame(tmp_path / "store", n_assets=2, symbols=universe, observation_spec=SPEC)
    assert tr["t"].tolist() == [0]


def _bookkeeping_loop() -> Any:
    """A LiveLoop with only its transition bookkeeping (no broker, policy or store)."""
    from raytrade.serve.live import LiveLoop

    loop = LiveLoop.__new__(LiveLoop)
    loop._episode_id, loop._episode_policy, loop._step, loop._pending_step = None, None, 0, None
    loop._served_spelling, loop._previous_bar = {}, None
    return loop


def _answer(k: int, bar: Any) -> Any:
    from types import SimpleNamespace

    obs = [float(k), 0.0, float(k), 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.1]
    decisions = {s: SimpleNamespace(target_weight=0.1, current_weight=0.05) for s in ("AAPL", "BTCUSD")}
    return SimpleNamespace(
        observation=obs,
        decisions=decisions,
        features_as_of=bar,
        model="m@1",
        observation_spec="x",
        fallback=False,
    )


def test_an_order_of_unknown_outcome_or_a_failed_log_ends_the_episode() -> None:
    """No pending step after an order of unknown outcome, and a failed log: the next decision went on
    in the same episode, one step further, its steps no longer consecutive transitions."""
    loop = _bookkeeping_loop()
    days = [T0 + timedelta(days=d) for d in range(5)]
    logged: list[tuple[str, int]] = []
    for k, sent in enumerate([{}, {}, {"AAPL": None}, {}, {}]):
        rows = loop._advance_episode(days[k], f"c{k}", _answer(k, days[k]), 100.0 + k, sent)
        logged += [(r["episode_id"], r["step"]) for r in rows if r["asset_index"] == 0]
    assert logged == [("live:c0", 0), ("live:c0", 1), ("live:c3", 0)]  # c2 unknown: c3 starts afresh

    loop, calls, kept = _bookkeeping_loop(), [0], []

    def log_rows(rows: list[dict[str, Any]]) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise OSError("store write failed")
        kept.extend((r["episode_id"], r["step"]) for r in rows if r["asset_index"] == 0)

    loop._log = log_rows
    for k in range(5):
        loop._log_transitions(days[k], f"c{k}", _answer(k, days[k]), 100.0 + k, {})
    assert kept == [("live:c0", 0), ("live:c3", 0)]  # the failure at c2 broke the chain


def test_a_flip_logs_the_closing_order_the_book_was_sent_to(tmp_path: Path) -> None:
    """Long AAPL, the policy says -0.1: the loop sends only the closing order (a flip closes first), so
    the book went to 0, and that is the action logged (it was the -0.1 short target)."""
    policy = ObservingPolicy()
    policy.targets = {"AAPL": (-0.1, "aggressive"), "MSFT": (0.0, "flat"), "BTCUSD": (0.0, "flat")}
    broker = FakeBroker(90_000.0, dict(PRICES))
    broker.qty["AAPL"] = 100.0
    with _loop(tmp_path, broker, policy) as loop:
        for day in range(2):
            loop.cycle(T0 + timedelta(days=day))
    tr = read_transitions_frame(
        tmp_path / "store", n_assets=N, obs_dim=N * (F + 2) + 5, observation_spec=SPEC
    )
    assert tr["actions"][0].tolist() == [0.0, 0.0, 0.0]
    assert tr["new_obs"][0][N * F] == 0.0  # the book's AAPL weight at the next cycle


def test_after_a_break_within_a_bar_the_next_episode_starts_on_the_next_bar() -> None:
    """An order of unknown outcome mid-bar ends the episode; a decision later on that bar started the
    next one, and its transition spanned part of a bar (an hour's reward read as a day's)."""
    loop = _bookkeeping_loop()
    d0, d1, d2 = (T0 + timedelta(days=d) for d in range(3))
    script = [(d0, {}), (d0, {"AAPL": None}), (d0, {}), (d1, {}), (d2, {})]
    logged = []
    for k, (bar, sent) in enumerate(script):
        rows = loop._advance_episode(T0 + timedelta(hours=k), f"c{k}", _answer(k, bar), 100.0 + k, sent)
        logged += [(r["episode_id"], r["step"], r["observation"][0]) for r in rows if r["asset_index"] == 0]
    assert logged == [("live:c3", 0, 3.0)]  # c2 (same bar as the break) started nothing; c3 did


def test_the_weight_sent_counts_every_resting_order_at_the_mark() -> None:
    """Two orders resting on one symbol (a ladder, or the loop's and another's) both move the book;
    only the last counted. The book is valued at the symbol's mark, not the resting orders' highest
    reference price (a worst case for the gross budget)."""
    from raytrade.replay.sources.alpaca import TopOfBook
    from raytrade.serve.live import BrokerPosition, _sent_weights
    from raytrade.serve.orders import RestingOrder

    quotes = {"AAPL": TopOfBook(bid=99.9, ask=100.1, bid_size=1.0, ask_size=1.0, ts=T0)}
    held = [BrokerPosition("AAPL", 100.0, 10_000.0, 100.0)]

    def order(side: str, qty: float | None, price: float = 120.0) -> RestingOrder:
        return RestingOrder(symbol="AAPL", side=side, remaining_qty=qty, reference_price=price)

    ladder = _sent_weights([], {}, {}, [order("buy", 50.0), order("buy", 50.0)], held, quotes, 100_000.0)
    assert ladder == {"AAPL": pytest.approx(0.2)}  # 200 shares at the 100 mid, not 150 at 120
    mixed = _sent_weights([], {}, {}, [order("buy", 50.0), order("sell", 100.0)], held, quotes, 100_000.0)
    assert mixed == {"AAPL": pytest.approx(0.05)}
    unknown = _sent_weights([], {}, {}, [order("buy", None)], held, quotes, 100_000.0)
    assert unknown == {"AAPL": None}


def test_a_hot_swap_on_a_new_bar_starts_the_new_versions_episode_at_once() -> None:
    """The swap ends the old version's episode; the swap cycle is its bar's first, so the new
    version's decision there starts its episode (not the next bar's)."""
    loop = _bookkeeping_loop()
    days = [T0 + timedelta(days=d) for d in range(3)]
    logged = []
    for k, model in enumerate(["m@1", "m@2", "m@2"]):
        answer = _answer(k, days[k])
        answer.model = model
        rows = loop._advance_episode(days[k], f"c{k}", answer, 100.0 + k, {})
        logged += [(r["episode_id"], r["step"], r["policy_version"]) for r in rows if r["asset_index"] == 0]
    assert logged == [("live:c1", 0, "m@2")]  # not c0 -> c1 across the swap


def test_a_cycle_that_raises_ends_the_episode(tmp_path: Path) -> None:
    """The broker's account unreadable on days 2-6 (each cycle raises): day 1's decision waited and day
    7's answer completed it, one step of six days in the same episode. Now day 7 starts an episode."""
    policy = ObservingPolicy()
    broker = FakeBroker(100_000.0, dict(PRICES))
    read_account = broker.account
    down = {"on": False}

    def account() -> Any:
        if down["on"]:
            raise RuntimeError("broker unreachable")
        return read_account()

    broker.account = account  # type: ignore[method-assign]
    with _loop(tmp_path, broker, policy) as loop:
        for day in range(9):
            down["on"] = 2 <= day <= 6
            try:
                loop.cycle(T0 + timedelta(days=day))
            except RuntimeError:
                assert down["on"]
    tr = read_transitions_frame(tmp_path / "store", n_assets=N)
    episodes = list(tr["eps_id"])
    assert list(tr["t"]) == [0, 0] and len(set(episodes)) == 2, (episodes, list(tr["t"]))
    # each spans one day: the first from day 0's decision, the second from day 7's
    assert [o[0] for o in tr["obs"]] == [1.0, 3.0] and [o[0] for o in tr["new_obs"]] == [2.0, 4.0]


def test_an_answer_bars_after_the_pending_decisions_is_no_transition() -> None:
    """The nightly ingest failed for two nights: the service answered on Tuesday's bar until it caught up
    on Friday's. Tuesday's decision is not completed by Friday's answer (a reward of three bars logged
    as one step); Friday's starts an episode, and Monday's completes it (the weekend is no bar)."""
    loop = _bookkeeping_loop()
    day = {d: datetime(2025, 3, d, tzinfo=UTC) for d in (3, 4, 7, 10)}  # Mon, Tue, Fri, next Mon
    script = [(3, 3), (4, 4), (5, 4), (6, 4), (7, 7), (10, 10)]  # (the cycle's day, the bar observed)
    logged: list[tuple[str, int, float]] = []
    for k, (cycle_day, bar_day) in enumerate(script):
        when = datetime(2025, 3, cycle_day, 15, tzinfo=UTC)
        rows = loop._advance_episode(when, f"c{k}", _answer(k, day[bar_day]), 100.0 + k, {})
        logged += [(r["episode_id"], r["step"], r["observation"][0]) for r in rows if r["asset_index"] == 0]
    assert logged == [("live:c0", 0, 0.0), ("live:c4", 0, 4.0)]


def test_bars_skipped_counts_the_universes_sessions() -> None:
    from raytrade.serve.live import bars_skipped

    friday, monday = datetime(2025, 1, 17, tzinfo=UTC), datetime(2025, 1, 21, tzinfo=UTC)  # MLK Day between
    assert bars_skipped(friday, monday, ["AAPL", "BTCUSD"]) == 0  # the next NYSE session
    assert bars_skipped(friday, monday, ["BTCUSD"]) == 3  # a pair alone steps on every day
    assert bars_skipped(friday, monday + timedelta(days=1), ["AAPL"]) == 1
    assert bars_skipped(friday, friday + timedelta(hours=5), ["AAPL"]) == 0  # intraday: not counted
    assert bars_skipped(None, monday, ["AAPL"]) == 0
