"""The no-new-risk answer, shared by the service (stale data) and the client (service down).

Light on purpose: the trading loop imports it through ``serve.client`` without torch or the simulator.
"""

from __future__ import annotations

from datetime import UTC, datetime

from raytrade.serve.schemas import ActRequest, ActResponse, SymbolDecision


def hold_everything(
    request: ActRequest, model: str, version: int, reason: str, as_of: datetime | None = None
) -> ActResponse:
    """The no-new-risk answer: every position held at its current weight (fallback), its
    ``target_qty`` the signed units held (not its weight at the request's price: at any other price
    that would be a trade); every other symbol of the request flat, ``target_qty`` 0. Holding is within
    unwind-only, so it is what the kill switch allows too; the answer reports the caller's switch
    (``request.kill_switch``) as it is, and no rule (``kill_switch_rule`` None: nothing was decided)."""
    equity = request.account.equity
    decisions = {
        pos.symbol: SymbolDecision(
            target_weight=pos.signed_value() / equity,
            target_qty=pos.signed_qty(),
            current_weight=pos.signed_value() / equity,
            side=pos.side,
            gate_mode="hold",
            confidence=0.0,
            tradeable=False,
            reason=reason,
        )
        for pos in request.positions
    }
    for sym in request.analysis:
        decisions.setdefault(
            sym,
            SymbolDecision(
                target_weight=0.0,
                target_qty=0.0,
                current_weight=0.0,
                side="flat",
                gate_mode="hold",
                confidence=0.0,
                tradeable=False,
                reason=reason,
            ),
        )
    return ActResponse(
        model=model,
        model_version=version,
        as_of=as_of or request.as_of or datetime.now(UTC),
        decisions=decisions,
        gross_exposure=float(sum(abs(d.target_weight) for d in decisions.values())),
        kill_switch_active=request.kill_switch is not None and request.kill_switch.active,
        fallback=True,
        reason=reason,
    )
