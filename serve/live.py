"""``raytrade live --paper``: the trading loop itself, on an Alpaca paper account.

One cycle: read the account, positions and top of book from the broker; ask the policy service
(:mod:`serve.client`, with its no-new-risk fallback); turn the answer into orders
(:func:`plan_orders`); submit them; log every decision (and, next cycle, every fill) into the replay
store's ``experience`` table, which offline RL and cost calibration read.

Design decisions
----------------
* **Orders from weights:** :mod:`serve.orders` (caps, dust, execution mode, broker rules).
* **Drawdown.** The account's running peak equity is kept in a small state file (atomic writes), so
  ``drawdown_pct`` survives restarts; the service's kill switch reads it.
* **A new decision supersedes resting orders.** Orders of earlier cycles that are still open are
  cancelled before the new ones go out; what they filled is logged when the broker reports it.
* **One bad order is one bad order.** A rejected order is logged with the broker's message and the
  cycle goes on; nothing the broker says is retried blindly (``client_order_id`` makes a resubmission
  of the same decision a duplicate the broker refuses).
* **Real money is off.** Only a paper account is supported; the CLI refuses to run without
  ``--paper``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pandas as pd

from raytrade.replay.sources.alpaca import TopOfBook
from raytrade.serve.orders import LiveConfig, OrderPlan, plan_orders
from raytrade.serve.schemas import ActResponse

log = logging.getLogger("raytrade.live")

OPEN_ORDER_STATES = frozenset(
    {"new", "accepted", "pending_new", "partially_filled", "accepted_for_bidding", "held", "calculated"}
)
"""Alpaca order states that can still fill: such an order is reconciled on a later cycle."""

# ------------------------------------------------------------------------------------ broker


class BrokerAccount(NamedTuple):
    equity: float
    cash: float
    buying_power: float
    last_equity: float | None


class BrokerPosition(NamedTuple):
    """A position in the store's symbol spelling (``BTCUSD``), ``qty`` signed (short < 0)."""

    symbol: str
    qty: float
    market_value: float
    current_price: float | None


class OrderState(NamedTuple):
    order_id: str
    status: str
    filled_qty: float
    filled_avg_price: float | None
    filled_at: datetime | None


class Broker(Protocol):
    """What the loop needs from a broker (``AlpacaBroker``, or a test double)."""

    def account(self) -> BrokerAccount: ...
    def positions(self) -> list[BrokerPosition]: ...
    def quotes(self, symbols: Sequence[str]) -> dict[str, TopOfBook]: ...
    def submit(self, plan: OrderPlan) -> str: ...
    def order(self, order_id: str) -> OrderState: ...
    def cancel(self, order_id: str) -> None: ...


# ------------------------------------------------------------------------------------ state


@dataclass
class LiveState:
    """What the loop remembers between cycles (JSON file, written atomically)."""

    peak_equity: float | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)  # submitted orders not yet reconciled

    @classmethod
    def load(cls, path: Path) -> LiveState:
        """The saved state, or a fresh one when there is no file; an unreadable file is an error that
        names it (starting over would forget the peak and the open orders)."""
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
            peak = raw.get("peak_equity")
            return cls(
                peak_equity=None if peak is None else float(peak), pending=list(raw.get("pending", []))
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"live state file {str(path)!r} is unreadable ({exc}); fix or move it") from None

    def save(self, path: Path) -> None:
        """Write to a temporary file, fsync it, then rename over ``path`` (never half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"peak_equity": self.peak_equity, "pending": self.pending}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


# ------------------------------------------------------------------------------------ the loop


class PolicyAsker(Protocol):
    def act(self, request: Any) -> ActResponse: ...


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did."""

    cycle_id: str
    answer: ActResponse
    plans: list[OrderPlan]
    submitted: dict[str, str]  # decision_id -> order id
    rejected: dict[str, str]  # decision_id -> broker message
    fills_logged: int


class LiveLoop:
    """Broker + policy service + (optional) replay store: one :meth:`cycle` per decision time."""

    def __init__(
        self,
        broker: Broker,
        policy: PolicyAsker,
        symbols: Sequence[str],
        state_file: Path,
        store: Path | None = None,
        config: LiveConfig | None = None,
    ):
        if not symbols:
            raise ValueError("symbols must name at least one symbol to trade")
        self.broker, self.policy, self.symbols = broker, policy, list(symbols)
        self.state_file, self.store, self.config = state_file, store, config or LiveConfig()

    def cycle(self, now: datetime | None = None) -> CycleReport:
        """Reconcile the previous cycle's fills, decide, submit, log."""
        from raytrade.serve.client import request_from_loop

        now = (now or datetime.now(UTC)).astimezone(UTC)
        cycle_id = now.strftime("%Y%m%dT%H%M%S%fZ")
        state = LiveState.load(self.state_file)
        fill_rows, still_open = self._reconcile(state, now)
        self._cancel(still_open)

        account = self.broker.account()
        positions = self.broker.positions()
        quotes = self.broker.quotes(self.symbols)
        peak = max(state.peak_equity or account.equity, account.equity)
        loop_state = _loop_state(account, positions, quotes, self.symbols, peak)
        request = request_from_loop(loop_state, as_of=now)
        answer = self.policy.act(request)
        asked = time.perf_counter()
        held = {p.symbol: p.qty for p in positions}
        volumes = _latest_dollar_volume(self.store, self.symbols, now) if self.store is not None else {}
        plans = plan_orders(answer, account.equity, quotes, held, cycle_id, self.config, volumes)
        submitted: dict[str, str] = {}
        rejected: dict[str, str] = {}
        latency: dict[str, float] = {}
        for plan in plans:
            try:
                submitted[plan.decision_id] = self.broker.submit(plan)
                latency[plan.decision_id] = (time.perf_counter() - asked) * 1e3
            except Exception as exc:  # one refused order must not stop the others
                rejected[plan.decision_id] = " ".join(str(exc).split())[:300]
                log.warning("order %s refused: %s", plan.decision_id, rejected[plan.decision_id])
        state.peak_equity = peak
        state.pending = still_open + [
            {
                "decision_id": p.decision_id,
                "order_id": submitted[p.decision_id],
                "symbol": p.symbol,
                "side": p.side,
                "mid": p.mid,
                "target_weight": p.target_weight,
                "policy_version": answer.model,
                "submitted_at": now.isoformat(),
            }
            for p in plans
            if p.decision_id in submitted
        ]
        decision_rows = _decision_rows(now, cycle_id, answer, plans, submitted, rejected, latency, loop_state)
        self._log(fill_rows, decision_rows)
        state.save(self.state_file)
        return CycleReport(cycle_id, answer, plans, submitted, rejected, len(fill_rows))

    def _cancel(self, still_open: list[dict[str, Any]]) -> None:
        """Cancel the earlier cycles' orders that still rest: this cycle's decision supersedes them
        (and a resting order would hold shares or buying power the new one needs). They stay pending,
        so whatever they filled before the cancel is logged next cycle."""
        for p in still_open:
            try:
                self.broker.cancel(p["order_id"])
            except Exception as exc:  # already filled or gone: the next reconcile sees its state
                log.warning("cannot cancel order %s: %s", p["order_id"], exc)

    def _reconcile(
        self, state: LiveState, now: datetime
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Experience rows for earlier orders that are done and (partly) filled, and the orders still
        open (kept for the next cycle).

        A fill row is stamped with ``now``, when the loop learnt of it: the store is append-only per
        symbol, and a later cycle's decision may already be stored. The fill's own time is
        ``submitted + latency_order_to_fill_ms``."""
        rows, still_open = [], []
        for p in state.pending:
            try:
                o = self.broker.order(p["order_id"])
            except Exception as exc:  # the broker is unreachable: try again next cycle
                log.warning("cannot read order %s: %s", p["order_id"], exc)
                still_open.append(p)
                continue
            if o.status in OPEN_ORDER_STATES:
                still_open.append(p)
                continue
            if o.filled_qty <= 0 or o.filled_avg_price is None:
                continue
            sign = 1.0 if p["side"] == "buy" else -1.0
            submitted_at = datetime.fromisoformat(p["submitted_at"])
            filled_at = o.filled_at or submitted_at
            rows.append(
                {
                    "symbol": p["symbol"],
                    "ts": now,
                    "decision_id": p["decision_id"] + ":fill",
                    "policy_version": p["policy_version"],
                    "side": p["side"],
                    "target_weight": p["target_weight"],
                    "order_id": o.order_id,
                    "submitted": True,
                    "filled": o.status == "filled",
                    "fill_price": o.filled_avg_price,
                    "filled_qty": o.filled_qty,
                    "partial": o.status != "filled",
                    "slippage_bps": sign * (o.filled_avg_price - p["mid"]) / p["mid"] * 1e4,
                    "latency_order_to_fill_ms": (filled_at - submitted_at).total_seconds() * 1e3,
                }
            )
        return rows, still_open

    def _log(self, fill_rows: list[dict[str, Any]], decision_rows: list[dict[str, Any]]) -> None:
        if self.store is None:
            return
        from raytrade.replay.writer import ReplayWriter

        with ReplayWriter(self.store) as writer:
            for rows in (fill_rows, decision_rows):
                if rows:
                    writer.append_experience(_experience_frame(rows))


def _latest_dollar_volume(store: Path, symbols: Sequence[str], now: datetime) -> dict[str, float]:
    """Each symbol's latest ``dollar_volume_20`` in the store's features up to ``now`` (the volume the
    simulator caps fills with; the last 30 days are read); a symbol without one is left out (unknown,
    so only the equity-fraction cap applies to it)."""
    from raytrade.replay.reader import read_frame

    if not (Path(store) / "features").is_dir():
        return {}
    frame = read_frame(
        store,
        "features",
        symbols=list(symbols),
        start=pd.Timestamp(now) - pd.Timedelta(days=30),
        end=pd.Timestamp(now),
        columns=["symbol", "ts", "dollar_volume_20"],
    )
    frame = frame.dropna(subset=["dollar_volume_20"]).sort_values("ts")
    last = frame.groupby("symbol")["dollar_volume_20"].last()
    return {str(k): float(v) for k, v in last.items() if v > 0}


def _loop_state(
    account: BrokerAccount,
    positions: Sequence[BrokerPosition],
    quotes: Mapping[str, TopOfBook],
    symbols: Sequence[str],
    peak: float,
) -> dict[str, Any]:
    """The decision-time state in the trading loop's shape (``shared/contracts``)."""
    analysis: dict[str, Any] = {}
    for sym in symbols:
        book = quotes.get(sym)
        if book is None or not (book.bid > 0 and book.ask > 0):
            analysis[sym] = {"bid_price": None, "ask_price": None, "spread_bps": None}
            continue
        mid = 0.5 * (book.bid + book.ask)
        analysis[sym] = {
            "bid_price": book.bid,
            "ask_price": book.ask,
            "spread_bps": max(book.ask - book.bid, 0.0) / mid * 1e4,
        }
    return {
        "account": {
            "equity": account.equity,
            "cash": account.cash,
            "buying_power": account.buying_power,
            "last_equity": account.last_equity,
        },
        "positions": [
            {
                "symbol": p.symbol,
                "qty": str(abs(p.qty)),
                "side": "long" if p.qty > 0 else "short",
                "market_value": str(p.market_value),
                "current_price": None if p.current_price is None else str(p.current_price),
            }
            for p in positions
            if p.qty != 0
        ],
        "drawdown_pct": min(account.equity / peak - 1.0, 0.0) if peak > 0 else 0.0,
        "analysis": analysis,
    }


def _decision_rows(
    now: datetime,
    cycle_id: str,
    answer: ActResponse,
    plans: Sequence[OrderPlan],
    submitted: Mapping[str, str],
    rejected: Mapping[str, str],
    latency: Mapping[str, float],
    loop_state: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One experience row per decision of the answer."""
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
                            "note": plan.note if plan else None,
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


def _experience_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    from raytrade.replay.schema import EXPERIENCE_SCHEMA

    frame = pd.DataFrame(rows)
    for name in EXPERIENCE_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame[EXPERIENCE_SCHEMA.names].sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
