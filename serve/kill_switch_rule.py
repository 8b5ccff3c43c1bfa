"""Which kill-switch rule the live loop advances its drawdown switch with.

The service applies the caller's switch (``ActRequest.kill_switch``) with the hysteresis of the rule
the served policy was trained and evaluated with, and publishes that rule on ``GET /v1/model``
(``kill_switch``, read by ``serve.client.served_kill_switch``). The loop must advance its switch with
the same rule: a shorter ``release_after_bars`` or a higher trigger re-risks before the policy's rule
would, a longer count is refused by the service (HTTP 422 once the count reaches the served
``release_after_bars``: a state its rule never produces).

Contract (:func:`loop_rule`)
----------------------------
* **Nothing configured** (``LiveConfig.kill_switch`` None, the default): the served rule.
* **Served rule disabled** (the policy was trained without a switch): fail closed, the loop keeps a
  switch of its own: the configured rule, else the simulator's default ``KillSwitchConfig()``; the
  note says so. The service enforces the caller's unwind-only even then.
* **Configured rule equal to the served one:** it.
* **Configured rule at least as strict on every parameter** (:func:`looser_parameters` finds none): the
  configured rule, with a note. Strict means: enabled; ``trigger_drawdown`` at most the served one
  (trips no later); ``release_drawdown`` at most the served one, or None (never by drawdown);
  ``reset_peak_on_release`` off where the served one is off (when it releases by time);
  ``release_after_bars`` *equal* to the served one, since an earlier release is looser and a later one
  the service refuses.
* **Otherwise** :class:`KillSwitchRuleError`: the message names both rules, the parameters on which
  the configured one is looser and the setting to change (``setting``: ``LiveConfig.kill_switch`` for
  ``raytrade live``, ``ClientConfig.kill_switch`` for ``serve.client.PolicyClient``). The loop does not
  start (or, on a hot swap to such a rule, stops before it orders anything).

A hot swap between the read and the answer (:func:`ask_under_served_rule`)
-------------------------------------------------------------------------
Both callers that advance a switch (``raytrade live``, ``serve.client.PolicyClient``) ask the same way,
so the policy is stated once here: advance the bar's switch with the rule read and ask. An answer of the
model the rule was read for, or a fallback (nothing was decided), is taken. An answer of another version,
or the service refusing the switch's count (HTTP 422 on :data:`REFUSED_COUNT`: the new policy releases
sooner), makes the caller read the rule once more: another rule redoes the bar's advance from the state
before it and asks again; the same rule keeps the answer of its model. A rule that cannot be read, a
count refused again (or under the same rule), or an answer from yet another version: :class:`Held`,
with the reason, and the caller holds everything without keeping the bar's advance (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.replay.errors import InputError
from raytrade.serve.schemas import ActResponse

SETTING = "LiveConfig.kill_switch"
"""The setting that configures the loop's own rule (None: the served one)."""

REFUSED_COUNT = "kill_switch.bars_active"
"""The field of the service's 422 when it refuses the switch's count (at or past its policy's
``release_after_bars``): the caller advanced it with another rule than the one now served (a hot swap)."""


RULE_UNKNOWN_MODEL = "kill-switch-rule-unknown"
"""The ``model`` of the hold-everything answer a caller makes itself when it does not know the served
kill-switch rule, or cannot settle a hot swap (:class:`RuleUnknown`, :class:`Held`): ``raytrade live``
and ``serve.client.PolicyClient.act`` name that hold alike; no order goes out with an unknown rule."""


class KillSwitchRuleError(InputError):
    """The configured kill-switch rule is looser than the served policy's: the loop refuses to trade
    with it (the message names both rules and the setting)."""


class RuleUnknown(NamedTuple):
    """The served kill-switch rule could not be had: ``why`` says which step failed (short), ``cause``
    how (the error's message)."""

    why: str
    cause: str = ""


class Refused(NamedTuple):
    """The service refused the switch's count (HTTP 422 on :data:`REFUSED_COUNT`); ``bars`` is the
    count the request carried."""

    bars: int | None


class Held(NamedTuple):
    """No answer can be taken under a rule known to be the served one: hold everything, for ``reason``."""

    reason: str


class LoopRule(NamedTuple):
    """The rule the loop advances its switch with, for the served ``model`` (``NAME@VERSION``), and
    ``note``: why it is not simply the served rule (None when it is)."""

    model: str
    rule: KillSwitchConfig
    note: str | None = None


def shown_rule(rule: KillSwitchConfig) -> str:
    """``rule`` as one line of ``field=value``, in the model's field order."""
    return ", ".join(f"{name}={value}" for name, value in rule.model_dump().items())


def log_rule_change(log: logging.Logger, read: LoopRule, before: LoopRule | None) -> None:
    """Log the rule a caller settled on (``read``) when it is not the one it had (``before``): the
    note of a configured rule kept or a disabled served one as a warning, else the served rule."""
    if read == before:
        return
    if read.note is not None:
        log.warning("kill switch: %s", read.note)
    else:
        log.info("kill switch: %s's served rule (%s)", read.model, shown_rule(read.rule))


def looser_parameters(configured: KillSwitchConfig, served: KillSwitchConfig) -> list[str]:
    """The parameters on which ``configured`` does not hold at least as tightly as the enabled rule
    ``served`` (module doc), each as ``name=<configured> (served <served>)``; empty when it holds."""
    out: list[str] = []

    def differs(name: str, why: str) -> None:
        out.append(f"{name}={getattr(configured, name)} (served {getattr(served, name)}: {why})")

    if not configured.enabled:
        differs("enabled", "the configured switch never trips")
    if configured.trigger_drawdown > served.trigger_drawdown:
        differs("trigger_drawdown", "trips later")
    if served.release_drawdown is None:
        if configured.release_drawdown is not None:
            differs("release_drawdown", "releases on a recovery the served rule ignores")
    elif configured.release_drawdown is not None and configured.release_drawdown > served.release_drawdown:
        differs("release_drawdown", "releases before the drawdown is back within the served one")
    if configured.release_after_bars != served.release_after_bars:
        differs(
            "release_after_bars",
            "must be equal: an earlier release re-risks sooner, a later one the service refuses",
        )
    timed = served.release_after_bars is not None  # the peak is reset on a timed release only
    if timed and configured.reset_peak_on_release and not served.reset_peak_on_release:
        differs("reset_peak_on_release", "restarts the peak, so it trips again later")
    return out


def loop_rule(
    configured: KillSwitchConfig | None, served: KillSwitchConfig, model: str, setting: str = SETTING
) -> LoopRule:
    """The rule the loop advances its switch with, given the configured one (None: unset; ``setting``
    names where it is set) and the one ``model`` publishes (module doc); raises
    :class:`KillSwitchRuleError` for a looser configured rule."""
    if not served.enabled:
        own = configured or KillSwitchConfig()
        origin = f"the configured {setting}" if configured is not None else "the default rule"
        return LoopRule(
            model,
            own,
            f"{model} was trained without a kill switch (served rule disabled); the loop keeps {origin} "
            f"on: {shown_rule(own)}",
        )
    if configured is None or configured == served:
        return LoopRule(model, served)
    looser = looser_parameters(configured, served)
    if looser:
        raise KillSwitchRuleError(
            f"the configured kill-switch rule ({setting}: {shown_rule(configured)}) is looser than the "
            f"served policy's ({model}, GET /v1/model kill_switch: {shown_rule(served)}) on "
            f"{'; '.join(looser)}; set {setting} to the served rule or to a stricter one, or leave it "
            "unset to use the served rule"
        )
    return LoopRule(
        model,
        configured,
        f"the configured {setting} ({shown_rule(configured)}) is at least as strict as {model}'s "
        f"served rule ({shown_rule(served)}) on every parameter: the loop keeps it",
    )


class Asked(NamedTuple):
    """The answer taken, and the rule the bar's switch was advanced with for it."""

    answer: ActResponse
    rule: LoopRule


def ask_under_served_rule(
    read: LoopRule,
    ask: Callable[[KillSwitchConfig], ActResponse | Refused],
    reread: Callable[[str], LoopRule | RuleUnknown],
) -> Asked | Held:
    """Ask with the bar's switch advanced by ``read``, settling a hot swap (module doc).

    ``ask(rule)`` advances this bar's switch with ``rule`` (from the state before the bar, so a second
    call redoes the advance) and asks the service: its answer, or :class:`Refused` for a 422 on
    :data:`REFUSED_COUNT`. ``reread(when)`` reads the served rule again (``when`` says why, for its log);
    :class:`KillSwitchRuleError` from it propagates."""
    answer = ask(read.rule)
    if not isinstance(answer, Refused) and (answer.fallback or answer.model == read.model):
        return Asked(answer, read)
    why = f"refuses {REFUSED_COUNT}" if isinstance(answer, Refused) else f"answers with {answer.model}"
    again = reread(f"after the service {why} (the rule read was {read.model}'s)")
    if isinstance(again, RuleUnknown):
        whose = (
            "the rule the service refuses the count under"
            if isinstance(answer, Refused)
            else f"the kill-switch rule of {answer.model}"
        )
        return Held(f"{whose} is unknown ({again.why})")
    if again.rule != read.rule:  # redo this bar's advance with the new rule, and ask again
        answer = ask(again.rule)
    if isinstance(answer, Refused):
        return Held(
            f"the service refuses the kill switch's count ({answer.bars} bars) advanced with "
            f"{again.model}'s rule (release_after_bars={again.rule.release_after_bars})"
        )
    if not answer.fallback and answer.model != again.model:
        return Held(f"the answer is {answer.model}'s, the kill-switch rule read is {again.model}'s")
    return Asked(answer, again)
