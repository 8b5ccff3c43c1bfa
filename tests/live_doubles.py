"""Test doubles for the live loop: a policy that answers with scripted target weights."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from raytrade.envs.kill_switch import KillSwitchConfig
from raytrade.serve.client import ServiceRequestError
from raytrade.serve.fallback import hold_everything
from raytrade.serve.schemas import ActRequest, ActResponse, SymbolDecision

T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)


class ScriptedPolicy:
    """Answers with fixed target weights (current weights taken from the request) as ``served``
    (``NAME@VERSION``), and publishes ``kill_switch`` as its rule on ``model()`` (``GET /v1/model``);
    ``model_error`` makes ``model()`` raise it instead (the service unreachable). Like the service
    (``serve.decide.PolicyService.prepare``), it refuses a caller's switch whose count reaches its
    rule's ``release_after_bars`` (a 422 on ``kill_switch.bars_active``) unless its rule is disabled;
    ``enforced`` overrides the rule it checks that with (a service inconsistent with what it publishes)."""

    def __init__(
        self,
        targets: dict[str, tuple[float, str]],
        fallback: bool = False,
        kill_switch: KillSwitchConfig | None = None,
        served: str = "alpha@2",
    ):
        self.targets, self.fallback = targets, fallback
        self.kill_switch = kill_switch or KillSwitchConfig()
        self.served = served
        self.model_error: Exception | None = None
        self.enforced: KillSwitchConfig | None = None
        self.model_reads = 0
        self.requests: list[ActRequest] = []

    def model(self) -> dict[str, Any]:
        self.model_reads += 1
        if self.model_error is not None:
            raise self.model_error
        return {
            "model": self.served,
            "symbols": list(self.targets),
            "kill_switch": self.kill_switch.model_dump(),
        }

    def act(self, request: ActRequest) -> ActResponse:
        self.requests.append(request)
        self._refuse_a_count_past_the_release(request)
        if self.fallback:
            return hold_everything(request, "unavailable", 0, "policy service unavailable: test")
        eq = request.account.equity
        current = {p.symbol: p.signed_value() / eq for p in request.positions}
        decisions = {
            s: SymbolDecision(
                target_weight=t,
                current_weight=current.get(s, 0.0),
                side="flat" if t == 0 else ("long" if t > 0 else "short"),
                gate_mode=mode,  # type: ignore[arg-type]
                confidence=0.6,
                tradeable=True,
            )
            for s, (t, mode) in self.targets.items()
        }
        return ActResponse(
            model=self.served,
            model_version=int(self.served.rsplit("@", 1)[1]),
            as_of=request.as_of or T0,
            decisions=decisions,
            gross_exposure=0.0,
        )

    def _refuse_a_count_past_the_release(self, request: ActRequest) -> None:
        rule = self.enforced or self.kill_switch
        release = rule.release_after_bars if rule.enabled else None
        state = request.kill_switch
        if state is not None and release is not None and state.bars_active >= release:
            raise ServiceRequestError(
                f"policy service rejected the request (HTTP 422): kill_switch.bars_active: "
                f"{state.bars_active} bars: the policy's kill switch releases after {release} "
                "(release_after_bars), so its state never counts that far",
                ("kill_switch.bars_active",),
            )
