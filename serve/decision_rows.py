"""The live loop's decision rows: built from a cycle's answer and orders, kept in the state file until
the experience store has them, and settled from the broker when a crash hid their orders' outcome.

A decision row says what the policy decided for a symbol and what became of it (its order, whether
it reached the broker). The row is saved in the loop's state file (``LiveState.unlogged_rows``)
twice in a cycle: before the submits, **provisional** (each of its orders' outcome unknown), and
after them with the outcomes. A crash during the submits leaves the provisional rows; so does a
submit whose error and look-up both failed (``uncertain``). Such a row is never logged as it stands
(it would say "not submitted" of an order that may be resting at the broker): the next cycle, once
it has resolved the order by client id (``LiveLoop._sync_with_broker``), settles the row from that
record (:func:`settle_rows`): submitted with the broker's order id when the broker has the order,
not submitted when it never saw it. Until the look-up succeeds the row waits in the state file.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from raytrade.serve.orders import OrderPlan
from raytrade.serve.schemas import ActResponse

log = logging.getLogger("raytrade.live")

MAX_UNLOGGED_ROWS: Final = 5_000
"""The most decision rows the state file carries while the store refuses them (about 0.8 KB each:
the file is rewritten and fsynced after every cycle's submits)."""

PROVISIONAL: Final = "provisional"
"""Key of a state-file row whose order's outcome is unknown (set True; absent on a settled row)."""

NEVER_RECEIVED: Final = (
    "the loop stopped or lost the broker's answer during the submit; the broker never received it"
)
ADOPTED: Final = "the loop stopped or lost the broker's answer during the submit; the broker had it (adopted)"


def decision_rows(
    now: datetime,
    cycle_id: str,
    answer: ActResponse,
    plans: Sequence[OrderPlan],
    submitted: Mapping[str, str],
    rejected: Mapping[str, str],
    latency: Mapping[str, float],
    loop_state: Mapping[str, Any],
    notes: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One experience row per decision of the answer (per order where it has orders); its state's
    ``note`` is its order's note, or for a symbol without an order its note in ``notes`` (why a cap or
    another rule kept it from its target)."""
    by_symbol: dict[str, list[OrderPlan]] = {}
    for p in plans:
        by_symbol.setdefault(p.symbol, []).append(p)
    rows = []
    for sym, d in answer.decisions.items():
        state = {  # enough to rebuild the policy's observation for offline RL
            "snapshot": loop_state["analysis"].get(sym),
            "current_weight": d.current_weight,
            "drawdown_pct": loop_state["drawdown_pct"],
            "equity": loop_state["account"]["equity"],
            "cash": loop_state["account"]["cash"],
            "features_as_of": None if answer.features_as_of is None else answer.features_as_of.isoformat(),
            "kill_switch_active": answer.kill_switch_active,
            "confidence": d.confidence,
            "fallback": answer.fallback,
            "reason": d.reason or answer.reason,
        }
        legs: list[OrderPlan | None] = list(by_symbol.get(sym, [])) or [None]
        for plan in legs:
            decision_id = plan.decision_id if plan is not None else f"{cycle_id}:{sym}"
            rows.append(
                {
                    "symbol": sym,
                    "ts": now,
                    "decision_id": decision_id,
                    "policy_version": answer.model,
                    "state": json.dumps(
                        {
                            **state,
                            "note": plan.note if plan else (notes or {}).get(sym),
                            "broker_error": rejected.get(decision_id),
                        }
                    ),
                    "side": plan.side if plan is not None else "flat",
                    "target_weight": d.target_weight,
                    "quantity": plan.qty if plan is not None else 0.0,
                    "gate_mode": d.gate_mode,
                    "order_id": submitted.get(decision_id),
                    "submitted": decision_id in submitted,
                    "filled": False,
                    "latency_signal_to_order_ms": latency.get(decision_id),
                }
            )
    return rows


def row_for_state(row: Mapping[str, Any], provisional: bool = False) -> dict[str, Any]:
    """An experience row as the state file keeps it (``LiveState.unlogged_rows``): ``ts`` as ISO
    text, a number that is not finite as null (the state file refuses one, and a refused save after
    the submits would cost the order record), and ``provisional`` when its order's outcome is unknown."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    if provisional:
        out[PROVISIONAL] = True
    return out


def row_from_state(row: Mapping[str, Any]) -> dict[str, Any]:
    """A settled row of ``LiveState.unlogged_rows`` as ``LiveLoop._log`` takes it."""
    if row.get(PROVISIONAL):
        raise ValueError(f"decision row {row['decision_id']!r} is provisional: settle it first")
    return {**row, "ts": datetime.fromisoformat(row["ts"])}


def settle_rows(rows: Sequence[dict[str, Any]], pending: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (state-file rows) with each provisional row settled from ``pending`` (the state's order
    records after ``LiveLoop._sync_with_broker``), matched by decision id:

    * its record has a broker order id: submitted, with that id (the broker had the order);
    * it has no record: not submitted (the sync dropped it: the broker never received it);
    * its record is still ``planned`` (the look-up failed again): kept provisional, for a later cycle.

    A settled row's state says what happened (``restart_note``); its signal-to-order latency is
    unknown (null). Rows that are not provisional are returned as they are."""
    by_id = {p.get("decision_id"): p for p in pending}
    out = []
    for row in rows:
        if not row.get(PROVISIONAL):
            out.append(row)
            continue
        record = by_id.get(row["decision_id"])
        if record is not None and not record.get("order_id"):
            out.append(row)  # outcome still unknown
            continue
        order_id = None if record is None else str(record["order_id"])
        note = NEVER_RECEIVED if order_id is None else ADOPTED
        state = json.loads(row["state"]) if row.get("state") else {}
        settled = {k: v for k, v in row.items() if k != PROVISIONAL}
        settled.update(
            order_id=order_id,
            submitted=order_id is not None,
            latency_signal_to_order_ms=None,
            state=json.dumps({**state, "restart_note": note}),
        )
        log.warning("decision %s settled from the broker: %s", row["decision_id"], note)
        out.append(settled)
    return out


def is_provisional(row: Mapping[str, Any]) -> bool:
    return bool(row.get(PROVISIONAL))


def new_decisions(stored: set[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` less those whose ``decision_id`` is in ``stored`` (the store's experience table's) or
    earlier in ``rows`` (a fill is never counted twice)."""
    out, seen = [], set[str]()
    for r in rows:
        if r["decision_id"] in stored or r["decision_id"] in seen:
            log.warning("experience row %s is already logged; skipped", r["decision_id"])
            continue
        seen.add(r["decision_id"])
        out.append(r)
    return out


def bounded_rows(rows: list[dict[str, Any]], store: str | Path) -> list[dict[str, Any]]:
    """``rows`` for ``LiveState.unlogged_rows``, past :data:`MAX_UNLOGGED_ROWS` the oldest settled rows
    dropped with an error naming how many: a store whose writes keep failing (each failure is raised
    and logged by the cycle) cannot grow the state file without bound. A provisional row is never
    dropped (its order's outcome is still to be recorded; there are at most a cycle's orders of
    them)."""
    excess = len(rows) - MAX_UNLOGGED_ROWS
    if excess <= 0:
        return rows
    out, dropped = [], 0
    for row in rows:
        if dropped < excess and not is_provisional(row):
            dropped += 1
            continue
        out.append(row)
    log.error(
        "the experience store at %s has refused this loop's decision rows for many cycles: the oldest %d "
        "rows are dropped from the state file (%d kept); fix the store",
        store,
        dropped,
        len(out),
    )
    return out


def experience_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``rows`` as a frame of the experience table's columns (those a row lacks are null; keys that are
    not columns, e.g. :data:`PROVISIONAL`, are left out), sorted by symbol and time."""
    from raytrade.replay.schema import EXPERIENCE_SCHEMA

    frame = pd.DataFrame(rows)
    for name in EXPERIENCE_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame[EXPERIENCE_SCHEMA.names].sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
