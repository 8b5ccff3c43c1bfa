"""The no-new-risk answer, shared by the service (stale data) and the client (service down).

Light on purpose: the trading loop imports it through ``serve.client`` without torch or the simulator.
"""

from __future__ import annotations

from datetime import UTC, datetime

from raytrade.serve.schemas import ActRequest, ActResponse, SymbolDecision, target_quantity


def hold_everything(
    request: ActRequest, model: str, version: int, reason: str, as_of: datetime | None = None
) -> ActResponse:
    """The no-new-risk answer: every position held at its current weight (fallback), with its
    ``target_qty`` at the request's price."""
    equity = request.account.equity
    decisions = {
        pos.symbol: SymbolDecision(
            target_weight=pos.signed_value() / equity,
            target_qty=target_quantity(
                pos.signed_value() / equity, equity, request.reference_price(pos.symbol)
            ),
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
                target_qty=target_quantity(0.0, equity, request.reference_price(sym)),
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
        fallback=True,
        reason=reason,
    )
