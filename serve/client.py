"""The trading loop's side of ``POST /v1/act``: build the request from the loop's state, ask the policy
service, and never let an outage turn into a trade.

Contract
--------
* **Request.** :func:`request_from_loop` turns the loop's decision-time state (the shape of
  ``shared/contracts/trade_loop_decision.json``) into an :class:`~serve.schemas.ActRequest`: keys
  starting with ``_`` and every row's ``predictions`` are dropped, so are mapping values that are not
  JSON data (a DataFrame, an array); a ``pydantic.ValidationError`` propagates (the caller's bug).
  Only the schema's fields are sent (``request.model_dump_json()``).
* **Retries.** Only a connection error, a timeout or an HTTP 5xx (503: not ready) is retried, up to
  ``retries`` more attempts with an exponential, capped pause. ``/v1/act`` has no side effects, so
  repeating a request the service may already have seen is safe.
* **Time.** One attempt gets ``timeout_s`` (connect, send and the whole answer; the clock is checked
  between reads, so a server that trickles bytes overruns by at most one read wait), all attempts and
  pauses of one :meth:`PolicyClient.act` together ``total_deadline_s``: one deadline, set when it
  starts and shared by every request it makes (the kill-switch rule's ``GET /v1/model`` on first use,
  after a hot swap or a refused count; the act; the act redone after a swap), so a loop that budgets its
  bar on ``total_deadline_s`` keeps it (a process's first call loads the kill-switch kernel before its
  deadline starts, once: about 0.5 s). An attempt gets ``min(timeout_s, time left)``, and one that
  cannot start before the deadline is not made. Once the time is gone nothing more is sent and the call holds
  everything with the reason ``policy service unavailable: the act() deadline (total_deadline_s=<s> s)
  ran out with <request> pending: <how the last attempt failed> (<n> attempts)`` (or ``... ran out
  before <request> was sent``), prefixed ``the served kill-switch rule is unknown:`` when the request
  was the rule's read (model ``kill-switch-rule-unknown``, below). A deadline that runs out on the act
  is an outage of the act, as when its retries run out: held, the bar's advance kept under the rule
  read; one that runs out on the rule's read holds for want of the rule: the account's switch not
  advanced, the rule read again on the next call. A caller that keeps its own switch and reads the
  rule itself (``raytrade live``) makes one decision of the same requests: it takes one
  :meth:`PolicyClient.deadline` and gives it to each :meth:`PolicyClient.model` and
  :meth:`PolicyClient.act` of the decision, with the same outcomes. :meth:`PolicyClient.model`
  retries as the act does (the same rule, the same code) under a deadline, its own of
  ``total_deadline_s`` when given none; when its retries or its deadline run out it raises
  :class:`ServiceError` (status 0, ``policy service unreachable: ...``).
* **Holds.** When the retries are spent, or the answer is another non-200 status, a body that is not
  an ``ActResponse``, a decision for a symbol the request did not name (other than the service's idle
  hold of a universe symbol the request left out, which is dropped), no decision for a symbol it
  did name (a partial answer), an answer dated other than the request's ``as_of`` (a cached or
  replayed one), or a non-finite number,
  :meth:`PolicyClient.act` returns ``hold_everything`` (``fallback=True``, model ``"unavailable"``,
  reason ``"policy service unavailable: <cause>"``): every position held at its current weight, no new
  risk. A hold for want of the served kill-switch rule (below, and a rule read the deadline cut) is
  named ``serve.kill_switch_rule.RULE_UNKNOWN_MODEL`` (``"kill-switch-rule-unknown"``), as ``raytrade
  live`` names its own. It logs a warning and counts it in ``fallbacks``.
* **Raises.** 401/403 raise :class:`ServiceAuthError` and 422 :class:`ServiceRequestError` with the
  server's field detail (except a refused count of the client's own switch, below), and a
  ``ClientConfig.kill_switch`` looser than the served rule ``serve.kill_switch_rule.KillSwitchRuleError``
  naming both: these are configuration or caller bugs, not outages, and holding on them would hide
  them for as long as the loop runs.
* **Kill switch.** Replicas keep no state, so the caller carries the drawdown kill switch
  (``ActRequest.kill_switch``) and the answer applies the trained rule with its hysteresis.
  :class:`KillSwitchTracker` keeps one account's switch and advances it with the simulator's own
  ``envs.kill_switch.update_kill_switch`` (the rule is not restated here) once per new bar, a bar being
  the one the service observed (``ActResponse.features_as_of``): a later ``as_of`` (the client's clock
  when a request has none) advances it with the request's equity, and the answer settles it
  (:meth:`KillSwitchTracker.settle`): an answer that observed the bar the switch was last advanced at
  (a daily policy asked on a weekend or a holiday, or more often than once a bar) undoes the advance
  and the request is asked again with the switch as it was, so the timed release comes after the
  trained number of the model's bars, not of calls (counted by calls, a loop cycling daily released it
  after 13 sessions instead of 20); a hold without a bar (stale features, an outage) undoes it too,
  without asking again, and an advance under a rule that releases sooner than the count as it was
  (a hot swap) is kept. The same
  ``as_of`` again (a retry) redoes that bar's one advance from the state before it, an earlier one (a
  clock set back) sends the latest state unadvanced. A first request starts it from what it says: the
  peak its ``drawdown_pct`` implies, off, then advanced, so a drawdown at the trigger turns it on.
  :meth:`PolicyClient.act` sends a request
  that carries a state as it is (``raytrade live`` keeps its own, persisted) and stamps one that
  carries none with its account's tracker (``account``), advanced with the rule the served policy was
  trained with, exactly as ``raytrade live`` does (:func:`read_loop_rule`,
  ``serve.kill_switch_rule.loop_rule`` and ``ask_under_served_rule``, shared with it): the rule ``GET
  /v1/model`` publishes (:func:`served_kill_switch`), read on the first call and kept until an answer
  comes from another model version than it was read for, or the service refuses the switch's count
  (HTTP 422 on ``kill_switch.bars_active``); either reads it once more and redoes the bar's advance
  with a new rule (the same rule keeps an answer of its model). ``ClientConfig.kill_switch`` (None:
  the served rule) is kept only when at least as strict on every parameter; a looser one raises (above);
  a served rule that is disabled keeps the configured or default switch on. While the rule cannot be
  read (the service down, an answer without a complete valid rule), or a swap cannot be settled (the
  rule unreadable, a second refusal, an answer from yet another version), nothing is sent and the call
  holds everything (fail closed, model ``kill-switch-rule-unknown``, reason ``policy service
  unavailable: the served kill-switch rule is unknown (...)`` and so on, the switch reported as it
  was), without advancing the account's switch:
  the next call reads the rule again. An outage of ``POST /v1/act`` under a known rule holds and keeps
  the bar's advance until an answer has said a bar (then it is undone: :meth:`KillSwitchTracker.settle`).
  An answer whose switch is off while the request's state says on (a service that
  ignored the state) is held; one whose switch is on while the state says off (a service stricter than
  the rule it publishes) trips the tracker's switch at that bar, so its hysteresis follows.
* **Secrets.** The token is a ``SecretStr``; its value is read only to build the ``Authorization``
  header and is kept out of reprs, logs and exception messages. Environment proxies are not used
  (``trust_env=False``): the bearer token goes straight to the service.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, partial
from types import TracebackType
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import httpx
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from raytrade.envs.kill_switch import KillSwitchConfig, KillSwitchState, update_kill_switch
from raytrade.replay.credentials import check_secure_url, shown_url
from raytrade.replay.loop_rules import LoopRules
from raytrade.serve.answer_check import answer_breach
from raytrade.serve.caps import ExposureCaps
from raytrade.serve.fallback import hold_everything
from raytrade.serve.kill_switch_rule import (
    REFUSED_COUNT,
    RULE_UNKNOWN_MODEL,
    SETTING,
    Held,
    LoopRule,
    Refused,
    RuleUnknown,
    ask_under_served_rule,
    log_rule_change,
    loop_rule,
)
from raytrade.serve.schemas import (
    ACT_PATH,
    HEALTH_PATH,
    MODEL_PATH,
    ActRequest,
    ActResponse,
    CallerKillSwitch,
    SymbolDecision,
)

logger = logging.getLogger(__name__)

FALLBACK_MODEL: Final[str] = "unavailable"
FALLBACK_PREFIX: Final[str] = "policy service unavailable: "
CLIENT_SETTING: Final[str] = "ClientConfig.kill_switch"
"""Where a :class:`PolicyClient` caller sets a kill-switch rule of its own (named in refusals)."""
_MIN_ATTEMPT_S: Final[float] = 0.01  # a retry with less time left than this is not started
_DROPPED_ROW_KEYS: Final[frozenset[str]] = frozenset({"predictions"})
_MASK: Final[str] = "**********"


class ServiceError(Exception):
    """The policy service answered, but the answer says the caller is wrong (not an outage); or, from
    :meth:`PolicyClient.model` only (``status_code`` 0), it did not answer (every attempt failed, or
    its deadline ran out first): the loop cannot start without its universe; from
    :func:`served_kill_switch` (``status_code`` 200), the answer publishes no readable kill-switch
    rule. The CLI shows it as one line, exit status 2."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class ServiceAuthError(ServiceError):
    """HTTP 401/403: the token is missing or wrong (``RAYTRADE_SERVE_TOKEN``)."""


class ServiceRequestError(ServiceError):
    """HTTP 422: the service rejected the request; the message carries the server's field detail and
    ``fields`` the fields it names (dotted, from the request's top: ``kill_switch.bars_active``), so a
    caller can tell a refusal it can act on from a bug."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()):
        super().__init__(message, 422)
        self.fields = fields


class ClientConfig(BaseModel):
    """Where the policy service is and how long the loop waits for it (seconds)."""

    # A refused base_url may carry a secret (user:password@, ?token=): pydantic must not echo it.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    base_url: str = Field(description="Serve ingress: https://, or http:// on 127.0.0.1 / localhost only")
    timeout_s: float = Field(0.5, gt=0, description="one attempt, connect to last byte of the answer")
    retries: int = Field(2, ge=0, description="further attempts after a connection error, timeout or 5xx")
    backoff_s: float = Field(0.05, ge=0, description="pause before the first retry; doubles each retry")
    max_backoff_s: float = Field(0.4, ge=0, description="cap on one pause")
    total_deadline_s: float = Field(1.5, gt=0, description="all attempts and pauses of one act() together")
    kill_switch: KillSwitchConfig | None = Field(
        None,
        description="a kill-switch rule of the caller's own, kept only when at least as strict as the "
        "one the served policy publishes (GET /v1/model: kill_switch; serve.kill_switch_rule), a looser "
        "one refused; None: the served rule, which act() advances each account's switch with",
    )

    caps: ExposureCaps = Field(
        ExposureCaps(),
        description="the exposure caps an answer must keep (serve.answer_check): one past them is held "
        "as inconsistent; a service deployed with looser caps needs the same caps here",
    )
    loop_rules: LoopRules = Field(
        LoopRules(), description="the loop's gates (spread caps) an answer must hold symbols by"
    )

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        # Credentials and queries first, and never echoed: the other messages show the URL.
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url must not carry credentials; pass the token instead")
        if parts.query or parts.fragment:
            raise ValueError(
                f"base_url={shown_url(url)!r} must not have a query or fragment (not shown here)"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url={shown_url(value)!r} must be an absolute http:// or https:// URL")
        check_secure_url(url, field="base_url")  # the bearer token must not cross a network in clear
        return url

    @model_validator(mode="after")
    def _deadline_fits_one_attempt(self) -> ClientConfig:
        if self.total_deadline_s < self.timeout_s:
            raise ValueError(
                f"total_deadline_s={self.total_deadline_s} is shorter than one attempt "
                f"(timeout_s={self.timeout_s})"
            )
        return self

    def backoff(self, retry: int) -> float:
        """Pause before retry number ``retry`` (1-based): ``backoff_s * 2**(retry-1)``, capped."""
        return min(self.backoff_s * 2.0 ** (retry - 1), self.max_backoff_s)


_MIN_PEAK_FRACTION: Final[float] = 1e-12  # drawdown_pct -1 (all lost): the peak equity / 1e-12


class KillSwitchTracker:
    """One account's drawdown kill switch as the caller keeps it across requests (module doc).

    ``state`` is the switch as of the bar ``bar`` (the ``as_of`` it was last advanced at); with no
    ``bar`` it is the state before the first bar, which the next request advances; with no ``state``
    the first request says where it starts. ``rule`` is what it is advanced with; None (not known yet)
    refuses to advance it: a switch is never advanced with a guessed rule."""

    def __init__(
        self,
        rule: KillSwitchConfig | None,
        state: CallerKillSwitch | None = None,
        bar: datetime | None = None,
        served_bar: datetime | None = None,
    ):
        if bar is not None and state is None:
            raise ValueError(f"bar={bar.isoformat()} without a state: nothing was advanced at it")
        self.rule = rule
        self._state, self._bar = state, bar
        self._start: KillSwitchState | None = None  # the state before bar ``_bar`` (None: not known)
        self._served_bar = served_bar
        # what the last advance replaced (state, bar, start), while an answer may still undo it
        self._before: tuple[CallerKillSwitch | None, datetime | None, KillSwitchState | None] | None = None

    @property
    def state(self) -> CallerKillSwitch | None:
        """The switch as of :attr:`bar` (what the last request carried)."""
        return self._state

    def copy(self) -> KillSwitchTracker:
        """An independent copy (the same rule, state, bar and state before the bar): a caller advances
        the copy and keeps it only once the bar's answer is taken."""
        twin = KillSwitchTracker(self.rule, self._state, self._bar, self._served_bar)
        twin._start, twin._before = self._start, self._before
        return twin

    @property
    def bar(self) -> datetime | None:
        """The ``as_of`` of the last bar the switch was advanced at."""
        return self._bar

    @property
    def served_bar(self) -> datetime | None:
        """The bar the service observed (``ActResponse.features_as_of``) when the switch was last
        advanced (:meth:`settle`); None until an answer said."""
        return self._served_bar

    def stamp(self, request: ActRequest, now: datetime | None = None) -> ActRequest:
        """``request`` carrying the switch at its bar (``request.as_of``, else ``now``, else the
        clock), advanced once per new bar (module doc)."""
        bar = request.as_of or now or datetime.now(UTC)
        if self._bar is None or bar > self._bar:
            self._before = (self._state, self._bar, self._start)
            self._start = self._start_from(request) if self._state is None else _as_arrays(self._state)
            self._state, self._bar = self._advance(self._start, request), bar
        elif bar == self._bar and self._start is not None:  # a retry: the bar's one advance, redone
            self._state = self._advance(self._start, request)
        elif bar < self._bar:
            logger.warning(
                "as_of %s precedes the last bar %s: the kill switch is sent as it is, not advanced",
                bar.isoformat(),
                self._bar.isoformat(),
            )
        return request.model_copy(update={"kill_switch": self._state})

    def settle(self, request: ActRequest, answer: ActResponse) -> ActRequest | None:
        """Keep or undo the advance :meth:`stamp` made for ``request``, now ``answer`` says which bar
        the service observed. A bar is the *served* bar: an answer that observed a bar newer than the
        one the switch was last advanced at keeps the advance, its bar
        recorded (:attr:`served_bar`), and this returns None. An answer that observed that bar again (a
        daily policy asked on a Saturday, a holiday, or by a loop cycling more often than its bars) did
        not see a new bar: the advance is undone and this returns ``request`` carrying the switch as
        it was, to ask again with. Counted by calls, the switch's 20-bar release came after 13
        sessions of a loop cycling daily. A hold that says no bar (a stale store's, an outage's) undoes
        the advance too, without asking again (it holds whatever the switch says): counted per call, a
        stale store's hourly holds released a tripped switch in 19 hours. Kept all the same: an answer
        that is no hold and says no bar (a service of an earlier version), a hold before any answer
        said a bar (the first request's advance, a trip included), and an advance under a rule
        that releases sooner than the count as it was (the service would refuse that count). A request
        with no advance to settle (a retry) returns None."""
        bar = answer.features_as_of
        if self._before is None:
            return None
        if bar is None and (not answer.fallback or self._served_bar is None):
            # an answer that does not say (a service of an earlier version), or a hold before any bar
            # was seen (the first request's trip is kept): counted as before
            self._before = None
            return None
        if bar is not None and (self._served_bar is None or bar > self._served_bar):
            self._served_bar, self._before = bar, None
            return None
        if self._refused_as_it_was():  # a new rule releases sooner: its advance stands, as before
            self._before = None
            return None
        self._state, self._bar, self._start = self._before
        self._before = None
        if bar is None:  # a hold (stale features, an outage): it holds whatever the switch says
            return None
        return request.model_copy(update={"kill_switch": self._state})

    def _refused_as_it_was(self) -> bool:
        """Whether the switch as it was before the advance counts to the rule's ``release_after_bars``
        or past it (a hot swap to a rule that releases sooner): the service refuses that count, so the
        advance under the new rule (which releases it) is kept rather than undone."""
        before = self._before[0] if self._before is not None else None
        rule = self.rule
        if before is None or rule is None or not rule.enabled or rule.release_after_bars is None:
            return False
        return before.active and before.bars_active >= rule.release_after_bars

    def tripped_by_service(self) -> None:
        """The service answered this bar with its switch on while :attr:`state` says off: its rule is
        stricter than :attr:`rule` (a ``kill_drawdown`` of its own, or another trained trigger). The
        switch is taken as tripped at this bar (0 bars, the same peak), so the trained hysteresis holds
        from the next bar on instead of re-risking as soon as the drawdown is under the service's
        trigger again; a retry of the bar advances from the state before it and is told again."""
        if self._state is not None and not self._state.active:
            self._state = self._state.model_copy(update={"active": True, "bars_active": 0})

    def _advance(self, start: KillSwitchState, request: ActRequest) -> CallerKillSwitch:
        if self.rule is None:
            raise ValueError(
                "KillSwitchTracker.rule is None: the rule to advance the switch with is not known "
                "(PolicyClient.act reads the served one)"
            )
        after = update_kill_switch(start, np.array([request.account.equity]), self.rule)
        return CallerKillSwitch(
            active=bool(after.active[0]),
            bars_active=int(after.bars_active[0]),
            peak_equity=float(after.peak[0]),
        )

    @staticmethod
    def _start_from(request: ActRequest) -> KillSwitchState:
        """What can be known from a first request: the peak its drawdown implies, the switch off."""
        peak = request.account.equity / max(1.0 + request.drawdown_pct, _MIN_PEAK_FRACTION)
        return _as_arrays(CallerKillSwitch(active=False, bars_active=0, peak_equity=peak))


def _as_arrays(state: CallerKillSwitch) -> KillSwitchState:
    """``state`` as ``envs.kill_switch``'s arrays of one episode."""
    return KillSwitchState(
        peak=np.array([state.peak_equity]),
        active=np.array([state.active]),
        bars_active=np.array([state.bars_active], dtype=np.int64),
    )


class ServedKillSwitch(NamedTuple):
    """The kill-switch rule ``rule`` the service applies for the policy ``model`` (``NAME@VERSION``)."""

    model: str
    rule: KillSwitchConfig


def served_kill_switch(info: Mapping[str, Any]) -> ServedKillSwitch:
    """The rule a ``GET /v1/model`` answer (``info``, :meth:`PolicyClient.model`) publishes in
    ``kill_switch``, with its ``model``: what a caller that keeps its own switch (``raytrade live``)
    advances it with. An answer without them, with a rule that leaves out any of its fields (no
    default fills a gap: a service of another version may mean another value), or with one
    ``KillSwitchConfig`` refuses, raises :class:`ServiceError` (status 200) naming the field: a caller
    must not guess the rule it trades under."""
    model = info.get("model")
    if not isinstance(model, str) or not model:
        raise ServiceError(f"{MODEL_PATH} names no model (model={model!r})", 200)
    if "kill_switch" not in info:
        raise ServiceError(f"{MODEL_PATH} publishes no kill_switch rule for {model}", 200)
    published = info["kill_switch"]

    def unreadable(why: str) -> ServiceError:
        return ServiceError(
            f"{MODEL_PATH} publishes a kill_switch rule for {model} that cannot be read ({why})", 200
        )

    if not isinstance(published, Mapping):
        raise unreadable(f"kill_switch: not an object: {published!r}")
    missing = [f"kill_switch.{name}" for name in KillSwitchConfig.model_fields if name not in published]
    if missing:
        raise unreadable(f"{', '.join(missing)}: missing")
    try:
        rule = KillSwitchConfig.model_validate(published)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["kill_switch", *(str(p) for p in first["loc"])])
        raise unreadable(f"{where}: {first['msg']}") from None
    return ServedKillSwitch(model, rule)


_DROP: Final = object()


def read_loop_rule(
    published: Callable[[], Mapping[str, Any]],
    configured: KillSwitchConfig | None,
    setting: str = SETTING,
) -> LoopRule | RuleUnknown:
    """The rule a caller advances its switch with: ``published()`` (a ``GET /v1/model`` answer) read by
    :func:`served_kill_switch`, settled against ``configured`` (set in ``setting``) by
    ``serve.kill_switch_rule.loop_rule``; or why it cannot be had: :class:`RuleUnknown` ``GET /v1/model
    unreadable`` (a :class:`ServiceError` from ``published``) or ``GET /v1/model publishes no valid rule``.
    :class:`ServiceAuthError` (a wrong token) and ``KillSwitchRuleError`` (a looser ``configured``)
    propagate: they are configuration bugs; so does any other exception of ``published`` (the client's
    act() deadline running out). Shared by ``raytrade live`` and :meth:`PolicyClient.act`."""
    try:
        info = published()
    except ServiceAuthError:
        raise
    except ServiceError as exc:
        return RuleUnknown("GET /v1/model unreadable", str(exc))
    try:
        served = served_kill_switch(info)
    except ServiceError as exc:
        return RuleUnknown("GET /v1/model publishes no valid rule", str(exc))
    return loop_rule(configured, served.rule, served.model, setting)


def request_payload(state: Mapping[str, Any], as_of: datetime | None = None) -> dict[str, Any]:
    """The loop's decision-time ``state`` as plain JSON data, before validation.

    ``state`` has the shape of ``trade_loop_decision.json`` (account, positions, drawdown_pct,
    analysis). Dropped: keys starting with ``_`` (at any depth), each analysis row's ``predictions``,
    and any mapping value that is not JSON data (a DataFrame, an array, an object). Numpy scalars
    become Python numbers, datetimes ISO strings. A *list element* that is not JSON data raises
    ``TypeError`` naming its path, because dropping it could silently lose a position. ``as_of``
    replaces the state's own.
    """
    data = dict(state)
    analysis = data.get("analysis")
    if isinstance(analysis, Mapping):
        data["analysis"] = {
            symbol: {k: v for k, v in row.items() if k not in _DROPPED_ROW_KEYS}
            if isinstance(row, Mapping)
            else row
            for symbol, row in analysis.items()
        }
    if as_of is not None:
        data["as_of"] = as_of
    payload: dict[str, Any] = _json_data(data, "state")
    return payload


def request_from_loop(state: Mapping[str, Any], as_of: datetime | None = None) -> ActRequest:
    """The ``POST /v1/act`` request for the loop's ``state`` (cleaned by :func:`request_payload`).

    ``as_of`` must be timezone aware. A ``pydantic.ValidationError`` (naming the field) propagates: a
    state the service cannot read is the caller's bug, not an outage to hold through.
    """
    return ActRequest.model_validate(request_payload(state, as_of))


def _json_data(value: Any, path: str) -> Any:
    """``value`` as JSON data, or ``_DROP`` when it is not (see :func:`request_from_loop`)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.bool_ | np.number):
        return value.item()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a non-string key {key!r}")
            if key.startswith("_"):
                continue
            cleaned = _json_data(item, f"{path}.{key}")
            if cleaned is not _DROP:
                out[key] = cleaned
        return out
    if isinstance(value, list | tuple):
        items = [_json_data(item, f"{path}[{i}]") for i, item in enumerate(value)]
        for i, item in enumerate(items):
            if item is _DROP:
                raise TypeError(f"{path}[{i}] is a {type(value[i]).__name__}, not JSON data")
        return items
    return _DROP


@dataclass(frozen=True)
class _Reply:
    status: int
    content: bytes


@dataclass(frozen=True)
class Deadline:
    """When one decision must be done (``time.monotonic()`` seconds, ``at``): set once when it starts
    (:meth:`PolicyClient.deadline`), shared by every request of it, the retries and pauses included;
    ``total_s`` is its length and ``what`` what it bounds (for messages: ``act()``, ``model()``)."""

    at: float
    total_s: float
    what: str = "act()"

    @classmethod
    def from_now(cls, total_s: float, what: str = "act()") -> Deadline:
        return cls(time.monotonic() + total_s, total_s, what)

    def left(self) -> float:
        """Seconds left (negative once it has passed)."""
        return self.at - time.monotonic()

    def ran_out(self) -> str:
        return f"the {self.what} deadline (total_deadline_s={self.total_s:g} s) ran out"


class _Unavailable(Exception):
    """Every attempt failed with a transient error; the message says how the last one did."""


class _OutOfTime(Exception):
    """The act()'s deadline ran out before a request was answered (or sent): nothing more is sent; the
    message says which request and how its last attempt failed."""


class PolicyClient:
    """One HTTP connection pool to the policy service; use it as a context manager.

    ``token`` is the bearer token (``load_settings().serve_token``); ``None`` sends no
    ``Authorization`` header. ``fallbacks`` and ``retries_used`` count, over the client's life, the
    hold answers it made up and the extra attempts it made.
    """

    def __init__(self, config: ClientConfig, token: SecretStr | None):
        if token is not None:
            _check_token(token)
        self.config = config
        self._token = token
        self._http = httpx.Client(
            base_url=config.base_url,
            timeout=config.timeout_s,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json"},
        )
        self._fallbacks = 0
        self._retries_used = 0
        self._kill_switches: dict[str, KillSwitchTracker] = {}
        self._rule: LoopRule | None = None  # the served rule last read, and the model it was read for

    @property
    def fallbacks(self) -> int:
        """Hold-everything answers this client returned instead of the service's."""
        return self._fallbacks

    @property
    def retries_used(self) -> int:
        """Attempts made after a first one failed, over all calls."""
        return self._retries_used

    def __repr__(self) -> str:
        token = "set" if self._token is not None else "none"
        return (
            f"PolicyClient(base_url={self.config.base_url!r}, token={token}, "
            f"fallbacks={self._fallbacks}, retries_used={self._retries_used})"
        )

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def kill_switch(self, account: str = "default") -> KillSwitchTracker:
        """``account``'s kill switch as this client keeps it (made on first use; its ``rule`` is the
        one the last answer was taken under, None before the served rule was read)."""
        if account not in self._kill_switches:
            self._kill_switches[account] = KillSwitchTracker(self._rule.rule if self._rule else None)
        return self._kill_switches[account]

    def deadline(self, what: str = "act()") -> Deadline:
        """A deadline of ``total_deadline_s`` from now, bounding ``what``: for a caller whose one
        decision makes several requests (``raytrade live``: a cycle's rule read, act and redo), each
        given it (:meth:`model`, :meth:`act`), so that together they keep it (module doc, **Time**)."""
        return Deadline.from_now(self.config.total_deadline_s, what)

    def act(
        self, request: ActRequest, account: str = "default", deadline: Deadline | None = None
    ) -> ActResponse:
        """The service's decision for ``request``, or a hold-everything fallback (see module doc).
        A request without a kill-switch state is sent with ``account``'s, advanced to its bar with the
        served rule (read on first use, after a hot swap, and after a refused count). Every request it
        makes is made before ``deadline`` (None: :meth:`deadline` from now): a caller's decision that
        read the rule already under it passes it, so the act gets what is left.

        Raises :class:`ServiceAuthError` on 401/403, :class:`ServiceRequestError` on 422 (other than a
        refused count it can settle) and ``serve.kill_switch_rule.KillSwitchRuleError`` when
        ``ClientConfig.kill_switch`` is looser than the served rule.
        """
        if request.kill_switch is None:
            load_kill_switch_kernel()
        if deadline is None:
            deadline = self.deadline()  # one for every request below
        if request.kill_switch is not None:  # the caller keeps its own switch: sent as it is
            return self._decide(request, deadline)
        return self._act_under_served_rule(request, account, deadline)

    def _act_under_served_rule(self, request: ActRequest, account: str, deadline: Deadline) -> ActResponse:
        """``request`` stamped with ``account``'s switch advanced by the served rule (module doc,
        **Kill switch**), every request made before ``deadline`` (module doc, **Time**); the advance is
        kept once an answer is taken (an outage's hold included), and dropped when it holds for want
        of a rule it can trust (a read the deadline cut included)."""
        kept = self.kill_switch(account)
        bar = request.as_of or datetime.now(UTC)  # one bar, however many times it is asked
        tracker = kept.copy()

        read_rule = partial(self._read_rule, deadline=deadline)

        def ask(rule: KillSwitchConfig) -> ActResponse | Refused:
            tracker.rule = rule
            stamped = tracker.stamp(request, bar)
            try:
                answer = self._decide(stamped, deadline)
                if (again := tracker.settle(stamped, answer)) is not None:  # not a new bar: unadvanced
                    stamped = again
                    answer = self._decide(stamped, deadline)
                return answer
            except ServiceRequestError as exc:
                if REFUSED_COUNT not in exc.fields:
                    raise
                logger.warning("kill switch: %s", exc)
                return Refused(stamped.kill_switch.bars_active if stamped.kill_switch is not None else None)

        try:
            read = self._rule or read_rule("on first use")
            if isinstance(read, RuleUnknown):
                return self._hold(
                    _carrying(request, kept),
                    f"the served kill-switch rule is unknown ({read.why}: {read.cause})",
                    RULE_UNKNOWN_MODEL,
                )
            asked = ask_under_served_rule(read, ask, read_rule)
        except _OutOfTime as exc:  # the rule's read ran out of time: nothing sent, no advance on a guess
            self._rule = None  # read again on the next call
            return self._hold(
                _carrying(request, kept), f"the served kill-switch rule is unknown: {exc}", RULE_UNKNOWN_MODEL
            )
        if isinstance(asked, Held):
            self._rule = None  # read again on the next call
            return self._hold(_carrying(request, kept), asked.reason, RULE_UNKNOWN_MODEL)
        self._rule = asked.rule
        self._kill_switches[account] = tracker
        answer = asked.answer
        if answer.kill_switch_active:
            tracker.tripped_by_service()
        return answer

    def _read_rule(self, when: str, deadline: Deadline) -> LoopRule | RuleUnknown:
        """The served rule settled against ``ClientConfig.kill_switch`` (``read_loop_rule``), read now
        (before ``deadline``, else ``_OutOfTime``); logged when it changes, or why it cannot be had."""
        read = read_loop_rule(partial(self._published, deadline), self.config.kill_switch, CLIENT_SETTING)
        if isinstance(read, RuleUnknown):
            logger.warning(
                "kill switch: the served rule cannot be read %s (%s): holding until it can", when, read.cause
            )
            return read
        log_rule_change(logger, read, self._rule)
        return read

    def _decide(self, request: ActRequest, deadline: Deadline) -> ActResponse:
        """``POST /v1/act`` for ``request`` as it is, checked (module doc, **Holds** and **Raises**);
        a hold when the retries or ``deadline`` run out first (an outage: under the served rule the
        bar's advance is kept, as for any outage of the act)."""
        try:
            reply = self._with_retries("POST", ACT_PATH, request.model_dump_json().encode(), deadline)
        except (_Unavailable, _OutOfTime) as exc:  # an outage, whether retries or time ran out first
            return self._hold(request, str(exc))
        if reply.status in (401, 403):
            sent = "the token was refused" if self._token is not None else "no token was sent"
            raise ServiceAuthError(
                f"policy service answered HTTP {reply.status}: {sent} (check RAYTRADE_SERVE_TOKEN)",
                reply.status,
            )
        if reply.status == 422:
            detail = self._redact(_error_detail(reply.content))
            raise ServiceRequestError(
                f"policy service rejected the request (HTTP 422): {detail}", _error_fields(reply.content)
            )
        if reply.status != 200:
            return self._hold(request, f"HTTP {reply.status}")
        try:
            answer = ActResponse.model_validate_json(reply.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return self._hold(request, f"malformed answer ({where}: {first['msg']})")
        problem = _inconsistency(request, answer) or answer_breach(
            request, answer, self.config.caps, self.config.loop_rules
        )
        if problem is not None:
            return self._hold(request, f"answer inconsistent with the request: {problem}")
        return _without_idle_extras(request, answer)

    def health(self) -> bool:
        """True when ``GET /v1/health`` answers 200 within ``timeout_s``; never raises."""
        try:
            reply = self._attempt("GET", HEALTH_PATH, None, self.config.timeout_s)
        except (httpx.RequestError, RuntimeError) as exc:
            logger.debug("policy service health check failed: %s", self._redact(_describe(exc)))
            return False
        return reply.status == 200

    def model(self, deadline: Deadline | None = None) -> dict[str, Any]:
        """``GET /v1/model``: the served version, its universe, features and kill-switch rule (the
        loop's start-up check, and its rule read). Retried as :meth:`act` retries (a connection error,
        a timeout, a 5xx), every attempt made before ``deadline`` (None: :meth:`deadline` from now,
        bounding ``model()``). Raises :class:`ServiceAuthError` on 401/403, and :class:`ServiceError`
        otherwise: status 0, ``policy service unreachable: <how>``, when the retries or the deadline
        ran out first."""
        try:
            reply = self._with_retries("GET", MODEL_PATH, None, deadline or self.deadline("model()"))
        except (_Unavailable, _OutOfTime) as exc:
            raise ServiceError(f"policy service unreachable: {exc}", 0) from None
        except RuntimeError as exc:  # httpx on a closed client
            raise ServiceError(f"policy service unreachable: {self._redact(_describe(exc))}", 0) from None
        return _model_info(reply)

    def _published(self, deadline: Deadline) -> dict[str, Any]:
        """``GET /v1/model`` as :meth:`act` reads the rule: retried like ``POST /v1/act``, within the
        act's ``deadline`` (else ``_OutOfTime``); :class:`ServiceError` (status 0) when every attempt
        failed."""
        try:
            reply = self._with_retries("GET", MODEL_PATH, None, deadline)
        except _Unavailable as exc:
            raise ServiceError(str(exc), 0) from None
        return _model_info(reply)

    def _with_retries(self, method: str, path: str, body: bytes | None, deadline: Deadline) -> _Reply:
        """The first reply that is not a 5xx, each attempt given ``min(timeout_s, time left)``: the
        one retry rule of the client (``POST /v1/act``, ``GET /v1/model``). ``_OutOfTime`` when
        ``deadline`` (the decision's: an act's, a loop cycle's, a model()'s) ends it: no time left to
        send the first attempt, an attempt cut short by it, or no time for the next one;
        ``_Unavailable`` when the retries run out first."""
        cfg = self.config
        attempt, failed = 1, ""  # failed: how the last attempt failed, and how many were made
        while True:
            left = deadline.left()
            if left < _MIN_ATTEMPT_S:  # a retry that cannot fit is not even waited for (below)
                if not failed:
                    raise _OutOfTime(f"{deadline.ran_out()} before {method} {path} was sent")
                raise _OutOfTime(f"{deadline.ran_out()} with {method} {path} pending: {failed}")
            budget = min(cfg.timeout_s, left)
            cut = False  # the deadline, not timeout_s, ended this attempt
            try:
                reply = self._attempt(method, path, body, budget)
                if reply.status < 500:
                    return reply
                cause = f"HTTP {reply.status}"
            except httpx.TimeoutException:
                cause = f"no answer within {budget * 1000:.0f} ms"
                cut = budget < cfg.timeout_s
            except httpx.RequestError as exc:
                cause = self._redact(_describe(exc))
            failed = f"{cause} ({'1 attempt' if attempt == 1 else f'{attempt} attempts'})"
            pause = cfg.backoff(attempt)
            if attempt > cfg.retries and not cut:
                raise _Unavailable(failed)
            if cut or deadline.left() < pause + _MIN_ATTEMPT_S:
                raise _OutOfTime(f"{deadline.ran_out()} with {method} {path} pending: {failed}")
            logger.info(
                "policy service attempt %d failed (%s); retrying in %.0f ms", attempt, cause, pause * 1e3
            )
            time.sleep(pause)
            attempt += 1
            self._retries_used += 1

    def _attempt(self, method: str, path: str, body: bytes | None, budget: float) -> _Reply:
        """One request; the answer must be complete within ``budget`` seconds (else ``ReadTimeout``)."""
        started = time.monotonic()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        chunks: list[bytes] = []
        with self._http.stream(
            method, path, content=body, headers=headers, timeout=httpx.Timeout(budget)
        ) as response:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() - started > budget:
                    raise httpx.ReadTimeout(f"answer not complete within {budget:.3f} s")
        return _Reply(response.status_code, b"".join(chunks))

    def _hold(self, request: ActRequest, cause: str, model: str = FALLBACK_MODEL) -> ActResponse:
        """Hold everything for ``cause`` (module doc, **Holds**); ``model`` names who held."""
        reason = FALLBACK_PREFIX + cause
        self._fallbacks += 1
        logger.warning("%s; holding every position (fallback %d)", reason, self._fallbacks)
        return hold_everything(request, model=model, version=0, reason=reason)

    def _redact(self, text: str) -> str:
        if self._token is None:
            return text
        return text.replace(self._token.get_secret_value(), _MASK)


def _check_token(token: SecretStr) -> None:
    """A bearer token must be non-empty visible ASCII; the error never shows the value."""
    value = token.get_secret_value()
    if not value:
        raise ValueError("token is empty: pass None to send no Authorization header")
    if not all("!" <= ch <= "~" for ch in value):
        raise ValueError(f"token ({len(value)} characters) must be visible ASCII without spaces")


def _model_info(reply: _Reply) -> dict[str, Any]:
    """A ``GET /v1/model`` reply's JSON object; :class:`ServiceAuthError` on 401/403,
    :class:`ServiceError` on another status or a body that is not one."""
    if reply.status in (401, 403):
        raise ServiceAuthError(
            f"policy service answered HTTP {reply.status} (check RAYTRADE_SERVE_TOKEN)", reply.status
        )
    if reply.status != 200:
        raise ServiceError(f"policy service answered HTTP {reply.status} to {MODEL_PATH}", reply.status)
    try:
        info = json.loads(reply.content)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise ServiceError(f"policy service answered {MODEL_PATH} with no JSON object", reply.status)
    return info


@cache
def load_kill_switch_kernel() -> None:
    """Advance a switch once, so that ``envs.kill_switch``'s numba kernel is loaded: about 0.5 s in a
    process (more on a busy machine, a compile where no cache exists), paid once, before the first
    :meth:`PolicyClient.act`'s deadline starts rather than charged to it (and before the first cycle
    of ``raytrade live``, which advances its own switch under the deadline): the deadline bounds the
    wait for the service, and charging it would hold the first bar of every process."""
    state = KillSwitchState(
        peak=np.ones(1), active=np.zeros(1, dtype=np.bool_), bars_active=np.zeros(1, dtype=np.int64)
    )
    update_kill_switch(state, np.ones(1), KillSwitchConfig())


def _carrying(request: ActRequest, tracker: KillSwitchTracker) -> ActRequest:
    """``request`` with ``tracker``'s switch as it is (not advanced), for a hold that reports it."""
    return request.model_copy(update={"kill_switch": tracker.state})


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _error_detail(content: bytes) -> str:
    """FastAPI's ``{"detail": ...}`` as ``field: message (input: value)``; raw text if it is not that."""
    try:
        detail = json.loads(content)["detail"]
    except (ValueError, KeyError, TypeError):
        return content[:300].decode("utf-8", errors="replace") or "(empty body)"
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for item in detail:
        if not isinstance(item, dict):
            parts.append(str(item))
            continue
        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        text = f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", ""))
        if "input" in item:
            text += f" (input: {json.dumps(item['input'], default=str)[:80]})"
        parts.append(text)
    return "; ".join(parts)


def _error_fields(content: bytes) -> tuple[str, ...]:
    """The fields FastAPI's ``{"detail": [{"loc": [...]}, ...]}`` names, dotted, without ``body``."""
    try:
        detail = json.loads(content)["detail"]
    except (ValueError, KeyError, TypeError):
        return ()
    if not isinstance(detail, list):
        return ()
    return tuple(
        ".".join(str(p) for p in item["loc"] if p != "body")
        for item in detail
        if isinstance(item, dict) and isinstance(item.get("loc"), list)
    )


def _requested(request: ActRequest) -> set[str]:
    return set(request.analysis) | {p.symbol for p in request.positions}


def _idle_hold(d: SymbolDecision) -> bool:
    """The service's answer for a universe symbol the request left out: held, untradeable, no weight
    now or after."""
    return d.gate_mode == "hold" and not d.tradeable and d.target_weight == 0.0 and d.current_weight == 0.0


def _without_idle_extras(request: ActRequest, answer: ActResponse) -> ActResponse:
    """``answer`` less the service's idle holds of symbols the request did not name (a loop that trades
    part of the model's universe gets decisions for its own symbols only)."""
    known = _requested(request)
    if known >= answer.decisions.keys():
        return answer
    kept = {s: d for s, d in answer.decisions.items() if s in known}
    # the observation covers the whole universe: with fewer decisions it would be split wrongly into
    # offline-RL transitions (a loop that trades part of the universe logs none)
    return answer.model_copy(update={"decisions": kept, "observation": None, "observation_spec": None})


def _inconsistency(request: ActRequest, answer: ActResponse) -> str | None:
    """Why ``answer`` cannot be an answer to ``request``, or None when it can. The service answers
    every symbol of its universe; one the request did not name must be an idle hold
    (:func:`_idle_hold`)."""
    known = _requested(request)
    unknown = sorted(s for s, d in answer.decisions.items() if s not in known and not _idle_hold(d))
    if unknown:
        return f"decision for symbol(s) not in the request: {', '.join(unknown[:5])}"
    missing = sorted(set(request.analysis) - set(answer.decisions))
    if missing:  # the service answers every symbol it was asked about, even one it holds
        return f"no decision for requested symbol(s): {', '.join(missing[:5])}"
    if request.as_of is not None and answer.as_of != request.as_of:  # the service echoes it
        return f"answer is for as_of {answer.as_of.isoformat()}, the request for {request.as_of.isoformat()}"
    if request.kill_switch is not None and request.kill_switch.active and not answer.kill_switch_active:
        return "the request's kill switch is on, the answer's off (the service ignored the state)"
    for symbol, d in answer.decisions.items():
        for name in ("target_weight", "target_qty", "current_weight", "confidence"):
            value = getattr(d, name)
            if value is not None and not math.isfinite(value):
                return f"decisions.{symbol}.{name} is {value}"
    if not math.isfinite(answer.gross_exposure):
        return f"gross_exposure is {answer.gross_exposure}"
    return None
