"""The serving path's decision: a request becomes the env's observation, the policy acts, and the
simulator's own constraint step turns the action into weights. No Ray here (``serve/app.py`` wraps
it in a deployment; tests call it directly).

Design decisions
----------------
* **Same timing as training.** Training decides on bar ``t``'s close and fills at ``t + 1``. The
  observation is the simulator's at bar ``t`` = the newest bar of the store that has surely *closed*
  at or before the request's ``as_of`` (:func:`bar_close_times`: ``replay.timeutil.bar_closed_at``, the
  rule the Alpaca ingest stores bars by), never the newest one *stamped* before it: a bar's stamp is
  its open (00:00 UTC for a csv date label, a local midnight for Alpaca), so a request at 15:00 UTC
  would otherwise see that day's close, high, low and volume hours early (a csv store holding today's
  partial bar, a store refreshed intraday). The features come from the store (built by the same
  feature code as the training data, read by the same loader), and the answer is the weight to hold
  after the next fill. The snapshot's quotes decide only whether a symbol can trade now.
* **Same constraints as training.** Targets go through ``envs.simulator.constrained_targets``: the
  per-asset and gross caps, the crypto sleeve, and unwind-only while the kill switch is active.
* **Hold what cannot be traded.** A symbol of the universe missing from the request, held by the
  loop's gates (``serve.caps.gate_reasons``: ``trade_blocked``, no usable quote, or a quoted spread
  over the loop's cap), or without a bar at ``t`` keeps its current weight (the simulator's unfilled
  order), and its exposure counts against the gross budget. Positions outside the universe are not
  traded either; they are listed as ``unmanaged`` and their gross comes out of the budget, and the
  gross of those that are crypto (``replay.loop_rules.is_crypto_symbol``: the request gives no asset
  class) out of the crypto sleeve's and the crypto cap's budgets too.
* **Hard caps after the model.** The constrained targets then go through ``serve.caps.cap_targets``
  (``ServeConfig.caps``: per-symbol, gross, leverage and crypto caps, and the basket throttle on the
  gross one answer adds), always on; the answer records the caps and which of them bound (``caps``).
* **Quantities.** Each symbol's ``target_qty`` is its target weight at the request's price, except
  where the answer keeps the symbol where it is (held, or its target weight is its current weight):
  then it is the quantity the request says is held (0 for none), so a loop that orders
  ``target_qty - qty`` sends nothing for it whatever the price. A pair quoted in a coin (``ETHBTC``,
  ``replay.loop_rules.coin_quote``) gets none (None) where it would be computed: its price is in the
  coin, not in the account's dollars.
* **Same action mapping as training.** The policy's action becomes orders through ``envs.actions``
  with the trained ``env_config.action``: absolute weights, or a tilt around the baseline decided at
  the request's bar (``envs.baseline_weights``; with no episode start, ``equal_weight`` and
  ``inverse_vol`` rebalance on the first bar of a month and hold otherwise), so a zero output serves
  the baseline. A symbol the mapping holds (the baseline's hold, the no-trade band) keeps its weight.
* **Safe failure.** Features older than ``max_feature_age_hours`` (the store stopped updating) give a
  ``fallback`` answer that holds every position, with the reason; they never feed the policy. Their age
  is ``as_of`` minus the bar's close (:func:`bar_close_times`), not its stamp: the features are those
  of the close, and a bar is only ever observed after it closed, so an age from the stamp would add a
  whole bar (24 h for a csv date label, 25 h for an Alpaca stamp: the same store judged differently by
  its clock) to every answer. The default 96 h then covers a long weekend: Friday's daily bar closes
  at Saturday 00:00 UTC and Tuesday's at Wednesday 00:00. So does
  a non-finite action (a corrupt checkpoint), and non-finite distribution inputs
  (``models.inference.broken_rows``: for the gated family a NaN argmax would read "flat" and sell
  everything; a Gaussian policy's NaN log-std leaves a finite mean from a diverged network). The whole
  request holds, not just the symbol: one NaN feature reaches every symbol's decision through the
  shared encoder, and a Box target with any non-finite entry holds the whole request too.
* **Kill switch.** While it is on only unwinds are allowed, as in training. Replicas keep no state:
  the caller carries the switch (``ActRequest.kill_switch``: active, bars since it tripped, the peak
  it measures from, advanced with the simulator's ``update_kill_switch`` by ``serve.client``). With
  it, the switch is on when the state says so or the drawdown from the state's peak reaches the
  trigger now (``sim.kill_switch.trigger_drawdown``, or ``kill_drawdown`` here), and the observation
  gets the state's bars as the simulator's does: the trained hysteresis (``kill_switch_rule``
  ``caller_state``). A state whose bars reach the policy's ``release_after_bars`` cannot come from
  its rule: a 422 (a policy trained without a switch has no rule to hold the count to: only the state's
  ``active`` counts, unwind-only while on). Without it, the stateless rule: on only while
  ``drawdown_pct`` reaches the trigger, bars 0 (``stateless``: a caller can see it is not the trained
  behaviour).
* **Episode progress.** A live account has no episode; the observation's progress slot is 0, as
  every encoder writes it (``envs.gym_envs.PROGRESS_SLOT``), so what was scored is what is served.
* **Confidence.** For a Gaussian policy, ``2p - 1`` where ``p`` is the probability that a sampled
  action has the sign of the deterministic one: ``erf(|mean| / (std * sqrt 2))``, 0 for a coin flip
  (``mean = 0``, or a held symbol) and 1 for certainty (p = 0.69 gives 0.38, p = 0.84 gives 0.68); for
  the gate, the probability of the chosen mode (at least 1 / the number of modes). A broken decision
  (above) answers hold-everything, whose confidence is 0; a NaN confidence is never sent.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import erf

from raytrade.envs.actions import Orders, band_hold, tilt_orders, weight_orders
from raytrade.envs.baseline_weights import baseline_context, baseline_decision
from raytrade.envs.config import GatedEnvConfig, PortfolioEnvConfig, ReplayDataConfig
from raytrade.envs.experience import observation_spec
from raytrade.envs.gate import GATE_CHANNEL, GateState, contract_gate
from raytrade.envs.gym_envs import (
    GATE_ACTION_FIELDS,
    GATE_MODES,
    encoded_features,
    feature_index,
    gate_action_space,
    gate_orders,
    observation_with,
)
from raytrade.envs.kill_switch import KillSwitchConfig, tripped
from raytrade.envs.kill_switch import drawdown as drawdown_from_peak
from raytrade.envs.market_data import MarketData
from raytrade.envs.normalization import MISSING_CHANNEL
from raytrade.envs.simulator import Observation, constrained_targets, exposure_limits
from raytrade.models.inference import broken_rows, trace_for_inference
from raytrade.replay.errors import InputError
from raytrade.replay.exchange_calendar import bars_closed_since
from raytrade.replay.loop_rules import LoopRules, coin_quote, is_crypto_symbol
from raytrade.replay.timeutil import (
    LONGEST_INTRADAY_BAR,
    MAX_FEATURE_AGE_HOURS,
    MAX_MISSED_BARS,
    series_closed_at,
)
from raytrade.serve.answer_check import FLAT
from raytrade.serve.caps import MAX_QUOTE_MOVE, ExposureCaps, cap_targets, gate_reasons
from raytrade.serve.fallback import hold_everything
from raytrade.serve.schemas import (
    ActRequest,
    ActResponse,
    AppliedCaps,
    KillSwitchRule,
    SymbolSnapshot,
    target_quantity,
)

_ZERO = FLAT  # |weight| below this is flat (the rule a client checks answers by)
MAX_WARMED_BATCH = 32
"""The largest batch size :meth:`DecisionService.probe` warms (a larger batch runs the eager
forward: the traces are closed after the warm-up)."""
NON_FINITE_ACTION = "the policy produced a non-finite action: holding every position"
ENCODED_BARS_KEPT = 8
"""Bars whose encoded per-asset channels a service keeps (:meth:`DecisionService._bar_channels`)."""


def _folded(symbol: str) -> str:
    """``symbol`` in upper case without a pair's slash: two spellings of one ticker fold alike."""
    return symbol.upper().replace("/", "")


class RequestError(InputError):
    """A request the service cannot decide on (HTTP 422); ``loc`` names the field."""

    def __init__(self, loc: tuple[str | int, ...], msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc, self.msg = loc, msg

    def detail(self) -> dict[str, Any]:
        """The error in FastAPI's validation-error shape (``loc`` starts at the body)."""
        return {"loc": ["body", *self.loc], "msg": self.msg, "type": "value_error"}


class ProbeFellBack(RuntimeError):
    """:meth:`DecisionService.probe` got a fallback answer (the reason is in the message)."""


class ServeConfig(BaseModel):
    """How the service turns requests into decisions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_feature_age_hours: float | None = Field(
        MAX_FEATURE_AGE_HOURS,
        gt=0,
        description="features older than this (hours from the observed bar's close to as_of) give a "
        "hold-everything fallback (None: never stale)",
    )
    max_missed_bars: int | None = Field(
        MAX_MISSED_BARS,
        ge=0,
        description="daily data: features of a bar that more of the universe's bars (NYSE sessions with "
        "an equity, days for crypto alone) have closed after, before as_of, give a hold-everything "
        "fallback, as stale as max_feature_age_hours says (None: not checked; nor while "
        "max_feature_age_hours is None)",
    )
    kill_drawdown: float | None = Field(
        None, gt=0, le=1, description="account drawdown that activates unwind-only (None: the trained one)"
    )
    max_quote_move: float | None = Field(
        MAX_QUOTE_MOVE,
        gt=1,
        description="a quote whose mid is more than this many times, or less than one over it, the "
        "observed bar's close holds its symbol (a bad or stale quote would size the order by a wrong "
        "price; None: no band)",
    )
    loop_rules: LoopRules = Field(LoopRules(), description="the loop's gates (spread caps) held to")
    caps: ExposureCaps = Field(ExposureCaps(), description="hard exposure caps after the model")
    traced_forward: bool = Field(
        True,
        description="run the policy's forward through per-batch-size traces where its family has them "
        "(models.tracing: the same numbers, checked at trace time, less time per request)",
    )


def serving_market_data(env_cfg: PortfolioEnvConfig, symbols: Sequence[str] | None = None) -> MarketData:
    """Every bar of the policy's data source: a replay store is read whole (not its training split),
    for the policy's own universe ``symbols`` (a store that gained symbols since training still
    serves the trained ones)."""
    from raytrade.envs.synthetic_market import market_data_from_config

    data_cfg = env_cfg.data
    if isinstance(data_cfg, ReplayDataConfig):
        update: dict[str, Any] = {"split": "all"}
        if symbols is not None:
            update["symbols"] = tuple(symbols)
        data_cfg = data_cfg.model_copy(update=update)
    return market_data_from_config(data_cfg)


@dataclass(frozen=True)
class Prepared:
    """A checked request in array form (:meth:`DecisionService.prepare`)."""

    request: ActRequest
    as_of: datetime
    bar: int
    w_now: np.ndarray  # [N]
    tradeable: np.ndarray  # [N]
    external_gross: float
    external_crypto: float  # the crypto part of external_gross
    unmanaged: list[str]
    hold_reason: dict[str, str]


class DecisionService:
    """A loaded policy (``models.load`` handle) and the market data its observations come from."""

    def __init__(self, handle: Any, data: MarketData, config: ServeConfig | None = None):
        self.handle = handle
        self.config = config or ServeConfig()
        # on or off as configured (a handle shared with an earlier service follows the latest one)
        self._traces = trace_for_inference(handle.module, self.config.traced_forward)
        self.env_cfg: PortfolioEnvConfig = handle.env_config()
        self.data = data
        self.universe = {s: i for i, s in enumerate(data.symbols)}
        trained = handle.manifest.data.symbols
        if list(trained) != list(data.symbols):
            raise ValueError(
                f"the data's symbols {list(data.symbols)[:5]}... differ from the symbols the policy was "
                f"trained on {list(trained)[:5]}..."
            )
        self._feat_idx = feature_index(data, self.env_cfg.feature_columns)
        self.observation_spec = observation_spec(self.env_cfg, data.feature_names)
        self._is_crypto = np.array([c == "crypto" for c in data.asset_class], dtype=bool)
        self._folded = {_folded(s): s for s in data.symbols}  # a held symbol spelled otherwise
        misnamed = [s for s, c in zip(data.symbols, self._is_crypto, strict=True) if c != is_crypto_symbol(s)]
        if misnamed:  # the loop, its order planner and Alpaca tell crypto by the symbol alone
            raise ValueError(
                f"symbols {misnamed[:5]} are not of the asset class their names say to the trading "
                "loop and Alpaca "
                "(replay.loop_rules.is_crypto_symbol: a crypto pair is spelled BASE/QUOTE, ends in "
                "USD, USDT or USDC, or ends in BTC or ETH and has over 5 letters): its crypto cap and "
                "no-short rule would miss them; rename them "
                "(e.g. crypto/BTC.csv -> BTCUSD.csv) and ingest again"
            )
        self._limits = exposure_limits(self._is_crypto, self.env_cfg.sim.constraints)
        # a pair quoted in a coin is priced in it: no quantity from its price (target_qty None)
        self._priced_in_coin = [i for i, s in enumerate(data.symbols) if coin_quote(s) is not None]
        self._channels: dict[int, np.ndarray] = {}  # per bar, its encoded per-asset channels
        self._channels_lock = threading.Lock()
        ks = self.env_cfg.sim.kill_switch
        self._kill_trigger = self.config.kill_drawdown or (ks.trigger_drawdown if ks.enabled else None)
        self._kill_release_bars = ks.release_after_bars
        self._ts = data.ts.astype("datetime64[us]")
        # daily as series_closed_at reads it (a store whose clock changes has 19 h between two days)
        self._daily = len(self._ts) < 2 or bool(
            np.diff(self._ts).min() >= np.timedelta64(LONGEST_INTRADAY_BAR)
        )
        self._crypto_only = bool(self._is_crypto.all())
        # when each bar has surely closed, in microseconds since the epoch: the bar look-up (module doc)
        self._closed_us = bar_close_times(self._ts).astype(np.int64)
        self._bar_times: dict[int, tuple[datetime, datetime]] = {}
        self.gated = isinstance(self.env_cfg, GatedEnvConfig)
        self._gate: GateState | None = None  # the contract's gate, sigma and kelly per bar (gated policy)
        if isinstance(self.env_cfg, GatedEnvConfig):
            self._gate = contract_gate(data, self.env_cfg)
            expected = gate_action_space(len(data.symbols), self.env_cfg.size_levels)
            actual = getattr(handle.module, "action_space", None)
            if actual != expected:  # e.g. a gate policy trained before sizing levels existed
                raise ValueError(
                    f"the gated policy's action space {actual} is not its env's {expected}: it cannot be "
                    "decoded safely; retrain or promote a current gating policy"
                )
        action = self.env_cfg.action
        self._baseline = (
            None if action.baseline is None else baseline_context(action.baseline, data, action.kelly_lite)
        )

    @property
    def model_ref(self) -> str:
        return f"{self.handle.name}@{self.handle.version}"

    @property
    def observed_features(self) -> list[str]:
        """The feature channels the policy observes per asset, in its order: the columns, then the
        fraction-missing channel when the policy normalises its features (``envs.normalization``),
        then a gated policy's gate channel (``envs.gate``)."""
        columns = list(self.env_cfg.feature_columns or self.data.feature_names)
        columns += [MISSING_CHANNEL] if self.env_cfg.normalizer is not None else []
        return columns + ([GATE_CHANNEL] if self.gated else [])

    def closed_at(self, bar: int) -> datetime:
        """When ``bar`` (an index of ``data.ts``, negative from the end) has surely closed, UTC: the
        earliest ``as_of`` that observes it (:func:`bar_close_times`)."""
        return self._bar_time(bar)[1]

    def kill_switch_rule(self) -> KillSwitchConfig:
        """The kill-switch rule a caller advances its state with (``serve.client.ClientConfig``): the
        trained one, its trigger ``kill_drawdown`` when that is set."""
        ks = self.env_cfg.sim.kill_switch
        if self.config.kill_drawdown is None:
            return ks
        return ks.model_copy(update={"enabled": True, "trigger_drawdown": self.config.kill_drawdown})

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` shows: the version, its universe, data and validation metrics."""
        m = self.handle.manifest
        return {
            "model": self.model_ref,
            "name": self.handle.name,
            "version": self.handle.version,
            "family": m.source.family,
            "symbols": list(self.data.symbols),
            "features": self.observed_features,
            "data_last_bar": _utc(self._ts[-1]).isoformat(),
            "data_last_bar_closed_at": self.closed_at(-1).isoformat(),
            "code_version": m.code_version,
            "created_at": m.created_at.isoformat(),
            "validation": m.metrics.get("validation"),
            "action": self.env_cfg.action.model_dump(include={"mode", "max_tilt", "no_trade_band"}),
            "kill_switch": self.kill_switch_rule().model_dump(),
            "serve_config": self.config.model_dump(),
        }

    # ------------------------------------------------------------------------------------ decide

    def decide(self, requests: Sequence[ActRequest], now: datetime | None = None) -> list[ActResponse]:
        """Decisions for a batch of requests; the first one that cannot be decided on raises
        :class:`RequestError` (the deployment checks each with :meth:`prepare` before batching)."""
        now = now or datetime.now(UTC)
        return self.decide_prepared([self.prepare(r, now) for r in requests])

    def decide_prepared(self, prepared: Sequence[Prepared]) -> list[ActResponse]:
        """Decisions for checked requests: one policy forward for every request with fresh features,
        a hold-everything fallback for the others."""
        out: dict[int, ActResponse] = {}
        fresh: list[int] = []
        for i, p in enumerate(prepared):
            reason = self._stale_reason(p)
            if reason is None:
                fresh.append(i)
            else:
                out[i] = hold_everything(p.request, self.model_ref, self.handle.version, reason, p.as_of)
        if fresh:
            decided = self._decide_fresh([prepared[i] for i in fresh])
            out.update(zip(fresh, decided, strict=True))
        return [out[i] for i in range(len(prepared))]

    def probe(self, batch_sizes: int = 1) -> ActResponse:
        """The answer to a probe request at the data's last bar, dated when that bar closed (a flat
        account, every symbol quoted at 100.00 / 100.01); :class:`ProbeFellBack` naming the reason
        when it falls back (a non-finite action: a corrupt checkpoint, or a NaN feature at the last
        bar). A replica probes each version it loads before answering with it
        (``serve.app.PolicyHolder``, which decides what a failed probe refuses), and no live request
        pays the first call of each code path: the probe is also decided in batches of 2 to
        ``batch_sizes`` (at most :data:`MAX_WARMED_BATCH`), so each batch size's first forward (a
        traced forward's trace, ``models.tracing``) is paid here, even when it falls back; then the
        traces are closed: a larger batch runs the eager forward, and no request pays a trace."""
        as_of = self.closed_at(-1)  # the earliest as_of that observes the last bar
        request = ActRequest.model_validate(
            {
                "account": {"equity": 100_000.0},
                "drawdown_pct": 0.0,
                "analysis": {sym: {"bid_price": 100.0, "ask_price": 100.01} for sym in self.universe},
                "as_of": as_of,
                "observation": True,
            }
        )
        (answer,) = self.decide([request], as_of)
        for size in range(2, min(batch_sizes, MAX_WARMED_BATCH) + 1):
            self.decide([request] * size, as_of)
        if self._traces is not None:
            self._traces.close()  # no request pays a trace: larger batches run eagerly
        if answer.fallback:
            raise ProbeFellBack(
                f"{self.model_ref} fell back on a probe decision at {as_of.isoformat()}: {answer.reason}"
            )
        return answer

    def prepare(self, request: ActRequest, now: datetime) -> Prepared:
        """Check a request against the universe and put it in array form (``RequestError`` names
        the field that is wrong)."""
        unknown = sorted(request.analysis.keys() - self.universe.keys())
        if unknown:
            shown = ", ".join(list(self.universe)[:8]) + (", ..." if len(self.universe) > 8 else "")
            raise RequestError(
                ("analysis", unknown[0]),
                f"{unknown[0]!r} is not in the model's universe ({len(self.universe)} symbols: {shown})",
            )
        # a policy without a switch honours the caller's ``active`` (a loop keeping its own switch on)
        # but has no release rule, so the caller's count is its own business
        release = self._kill_release_bars if self._kill_trigger is not None else None
        if (
            request.kill_switch is not None
            and release is not None
            and request.kill_switch.bars_active >= release
        ):
            raise RequestError(
                ("kill_switch", "bars_active"),
                f"{request.kill_switch.bars_active} bars: the policy's kill switch releases after "
                f"{release} (release_after_bars), so its state never counts that far; advance it with "
                "the served rule (GET /v1/model: kill_switch)",
            )
        request = request.respelled(self.universe)  # a pair held as BTC/USD is the universe's BTCUSD
        as_of = request.as_of or now
        bar = int(np.searchsorted(self._closed_us, _utc_us(as_of), side="right")) - 1  # closed by as_of
        if bar < 0:
            first, closes = self._bar_time(0)
            raise RequestError(
                ("as_of",),
                f"{as_of.isoformat()} precedes the close of the data's first bar ({first.isoformat()}, "
                f"closes at {closes.isoformat()}): no bar has closed by then",
            )
        equity = request.account.equity
        n = len(self.universe)
        w_now = np.zeros(n)
        external, external_crypto, unmanaged = 0.0, 0.0, []
        for i, pos in enumerate(request.positions):
            weight = pos.signed_value() / equity
            if pos.symbol in self.universe:
                w_now[self.universe[pos.symbol]] = weight
            elif (spelled := self._folded.get(_folded(pos.symbol))) is not None:
                raise RequestError(
                    ("positions", i, "symbol"),
                    f"{pos.symbol!r} is the universe's {spelled!r} spelled otherwise; send it as "
                    f"{spelled!r} (read as another symbol, its position would not count toward "
                    f"{spelled!r}'s caps)",
                )
            else:
                external += abs(weight)
                external_crypto += abs(weight) if is_crypto_symbol(pos.symbol) else 0.0
                unmanaged.append(pos.symbol)
        tradeable = np.zeros(n, dtype=bool)
        hold: dict[str, str] = {}
        listed = self.data.listed[bar]
        sent = [sym for sym in self.universe if sym in request.analysis]
        crypto = self._is_crypto[[self.universe[sym] for sym in sent]]
        reasons = gate_reasons([request.analysis[sym] for sym in sent], crypto, self.config.loop_rules)
        gates = dict(zip(sent, reasons, strict=True))  # the loop's gates, all rows in one call
        for sym, i in self.universe.items():
            if sym not in gates:
                hold[sym] = "not in the request"
            elif (gate := gates[sym]) is not None:
                hold[sym] = gate
            elif not listed[i]:
                hold[sym] = f"no bar at {_utc(self._ts[bar]).date()}"
            elif (far := self._quote_off(request.analysis[sym], i, bar)) is not None:
                hold[sym] = far
            else:
                tradeable[i] = True
        return Prepared(
            request, as_of, bar, w_now, tradeable, external, external_crypto, sorted(unmanaged), hold
        )

    def _quote_off(self, row: SymbolSnapshot, i: int, bar: int) -> str | None:
        """Why asset ``i``'s quote is not believed: its mid outside ``max_quote_move`` times the close
        of ``bar`` either way (ServeConfig); None when it is within, or there is no band."""
        band, mid, close = self.config.max_quote_move, row.mid(), float(self.data.close[bar, i])
        if band is None or mid is None or not close > 0 or close / band <= mid <= close * band:
            return None
        return (
            f"quote mid {mid:.6g} is {mid / close:.3g}x the close {close:.6g} of "
            f"{_utc(self._ts[bar]).date()}, outside the {band:g}x band: held as a bad or stale quote "
            "(or a split since that bar: held until the store has a bar after it)"
        )

    def _bar_time(self, bar: int) -> tuple[datetime, datetime]:
        """The UTC stamp of ``bar`` and when it closed (cached: every answer is dated by its bar,
        nearly always the last)."""
        if (cached := self._bar_times.get(bar)) is None:
            closed = _EPOCH + int(self._closed_us[bar]) * _MICROSECOND
            cached = self._bar_times[bar] = (_utc(self._ts[bar]), closed)
        return cached

    def _stale_reason(self, p: Prepared) -> str | None:
        """Why ``p``'s features are too old to decide on (``max_feature_age_hours``), measured from
        the bar's close (module doc), or, on daily data, by the universe's bars closed since
        (``max_missed_bars``: 96 hours let a store three sessions behind decide midweek); None when
        they are fresh enough."""
        limit = self.config.max_feature_age_hours
        if limit is None:
            return None
        bar_time, closed = self._bar_time(p.bar)
        age_h = (p.as_of - closed).total_seconds() / 3600.0
        if age_h > limit:
            return (
                f"features are from the bar of {bar_time.isoformat()}, closed at {closed.isoformat()}, "
                f"{age_h:.1f} h old, over the limit of {limit:g} h: holding"
            )
        most = self.config.max_missed_bars
        if most is None or not self._daily:
            return None
        missed = bars_closed_since(bar_time.date(), closed, p.as_of, self._crypto_only)
        if missed > most:
            unit = "days" if self._crypto_only else "NYSE sessions"
            return (
                f"features are from the bar of {bar_time.date().isoformat()}, and {missed} {unit} closed "
                f"after it before {p.as_of.isoformat()} (the store stopped updating?), over the limit of "
                f"{most} (max_missed_bars): holding"
            )
        return None

    def env_observation(self, prepared: Sequence[Prepared]) -> Any:
        """The env observation (flat array or dict, ``[B, ...]``) the policy sees for these requests:
        exactly what ``PortfolioEnv`` would show in the same state at the same bar."""
        if not prepared:
            raise ValueError("env_observation needs at least one prepared request")
        ob, _ = self._observation(prepared)
        return self._encode(ob, np.array([p.bar for p in prepared]))

    def _encode(self, ob: Observation, bars: np.ndarray) -> Any:
        """``envs.gym_envs.batched_observation`` of ``ob`` at ``bars``, each bar's per-asset channels
        encoded once (:meth:`_bar_channels`)."""
        rb = self.env_cfg.sim.kill_switch.release_after_bars
        channels = np.array([self._bar_channels(bar) for bar in bars.tolist()])  # np.stack, in C
        return observation_with(channels, ob, rb, self.env_cfg.flat_obs)

    def _bar_channels(self, bar: int) -> np.ndarray:
        """``envs.gym_envs.encoded_features`` of one bar ``[N, F']``: its features selected and
        normalised, the gate appended. A function of the bar alone, the same for every request that
        observes it, so it is computed once and kept (read-only) for the last
        :data:`ENCODED_BARS_KEPT` bars asked for: nearly every request observes the data's last bar."""
        if (kept := self._channels.get(bar)) is not None:
            return kept
        data, gate = self.data, None if self._gate is None else self._gate.open[bar : bar + 1]
        missing = None if data.feature_missing is None else data.feature_missing[bar : bar + 1]
        channels = encoded_features(
            data.features[bar : bar + 1], missing, self._feat_idx, self.env_cfg.normalizer, gate
        )[0]
        channels.flags.writeable = False
        with self._channels_lock:  # requests decided in several threads at once (DirectBackend)
            if len(self._channels) >= ENCODED_BARS_KEPT:
                self._channels.pop(next(iter(self._channels)))  # the oldest
            self._channels[bar] = channels
        return channels

    def _observation(self, prepared: Sequence[Prepared]) -> tuple[Observation, np.ndarray]:
        requests = [p.request for p in prepared]
        bars = np.array([p.bar for p in prepared])
        w_now = np.array([p.w_now for p in prepared])  # np.stack of the rows (its Python: ~2 us a call)
        equity = np.array([r.account.equity for r in requests])
        cash = np.array(
            [
                r.account.cash if r.account.cash is not None else r.account.equity * (1 - p.w_now.sum())
                for r, p in zip(requests, prepared, strict=True)
            ]
        )
        drawdown = np.array([-r.drawdown_pct for r in requests])
        kill, kill_bars = self._kill_switch(requests, equity, drawdown)
        ob = Observation(
            features=self.data.features[bars],
            weights=w_now,
            cash_fraction=cash / equity,
            drawdown=drawdown,
            kill_active=kill,
            kill_bars=kill_bars,
            mask=self.data.listed[bars],
            progress=np.zeros(len(requests)),  # encoded as 0 whatever it is (envs.gym_envs.PROGRESS_SLOT)
            missing=None if self.data.feature_missing is None else self.data.feature_missing[bars],
        )
        return ob, kill

    def _kill_switch(
        self, requests: Sequence[ActRequest], equity: np.ndarray, drawdown: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per request, whether unwind-only is on and the bars since it tripped (module doc): with the
        caller's state, on when it says so or when the drawdown from its peak trips the trigger now
        (a newly tripped switch counts 0 bars, as the simulator's); without it, on while the account's
        ``drawdown`` trips it, 0 bars."""
        states = [r.kill_switch for r in requests]
        held_on = np.array([s is not None and s.active for s in states], dtype=bool)
        bars = np.array(
            [s.bars_active if s is not None and s.active else 0 for s in states], dtype=np.float64
        )
        if self._kill_trigger is None:
            return held_on, bars
        measured = drawdown.copy()  # the drawdown the trigger reads: from the switch's own peak, if any
        for i, s in enumerate(states):
            if s is not None:  # the state's peak as the simulator's rule advances it (never below equity)
                measured[i] = drawdown_from_peak(equity[i], np.maximum(s.peak_equity, equity[i]))
        return held_on | np.asarray(tripped(measured, self._kill_trigger)), bars

    def _kill_switch_rule(self, request: ActRequest) -> KillSwitchRule:
        if request.kill_switch is not None:
            return "caller_state"
        return "stateless" if self._kill_trigger is not None else "disabled"

    def _decide_fresh(self, prepared: Sequence[Prepared]) -> list[ActResponse]:
        ob, kill = self._observation(prepared)
        bars = np.array([p.bar for p in prepared])
        obs = self._encode(ob, bars)
        decided = self.handle.act_with_inputs(obs)  # one forward: the action and its confidence
        action = np.asarray(decided.action)
        base = None  # a live account has no episode start: the baseline trades on its own schedule
        if self._baseline is not None:
            base = baseline_decision(self._baseline, bars, np.zeros(len(prepared), bool), ob.mask, ob.weights)
        if isinstance(self.env_cfg, GatedEnvConfig) and self._gate is not None:
            gated = gate_orders(action, self._gate.kelly[bars], self.env_cfg)
            modes = gated.mode
            orders = (
                Orders(gated.target, band_hold(gated.target, ob.weights, self.env_cfg.action.no_trade_band))
                if base is None
                else tilt_orders(self.env_cfg.action, gated.target, ob.weights, base)
            )
        else:
            orders, modes = weight_orders(self.env_cfg.action, action, ob.weights, base), None
        target = orders.target
        # a corrupt checkpoint must not reach the market: a non-finite target (Box), or a gated decision
        # whose distribution inputs are not finite (its argmax would read "flat": sell everything)
        dist_inputs = _float64(decided.dist_inputs)  # read once, for the check and the confidence
        broken = ~np.isfinite(target).all(axis=-1) | broken_rows(self.handle.module, dist_inputs)
        target = np.where(np.isfinite(target), target, 0.0)
        tradeable = np.array([p.tradeable for p in prepared]) & ~orders.hold  # held: no order
        w_target, locked = constrained_targets(
            target,
            ob.weights,
            np.ones_like(tradeable),
            kill,
            self._limits,
            fill=tradeable,
            external_gross=np.array([p.external_gross for p in prepared]),
            external_crypto=np.array([p.external_crypto for p in prepared]),
        )
        assert locked is not None
        weights = np.where(locked, ob.weights, w_target)
        capped = [
            cap_targets(
                weights[i],
                p.w_now,
                p.tradeable,
                self.config.caps,
                p.external_gross,
                self._is_crypto,
                p.external_crypto,
            )
            for i, p in enumerate(prepared)
        ]
        confidence = action_confidence(self.handle.module, dist_inputs)
        confidence[np.isnan(confidence)] = (
            0.0  # a broken row's (held below); never inf: erf and softmax are bounded
        )
        explained = self._attributions(obs, [i for i, p in enumerate(prepared) if p.request.attributions])
        return [
            hold_everything(p.request, self.model_ref, self.handle.version, NON_FINITE_ACTION, p.as_of)
            if broken[i]
            else self._response(
                p,
                capped[i].weights,
                self.config.caps.applied(capped[i].binding),  # AppliedCaps, validated with the answer
                None if modes is None else modes[i],
                confidence[i],
                bool(kill[i]),
                explained.get(i),
                obs[i].tolist() if isinstance(obs, np.ndarray) and p.request.observation else None,
            )
            for i, p in enumerate(prepared)
        ]

    def _attributions(self, obs: Any, rows: list[int]) -> dict[int, list[dict[str, float]]]:
        """Per requested row, per symbol, the top feature attributions (:mod:`serve.attribution`)."""
        if not rows:
            return {}
        from raytrade.serve.attribution import feature_attributions

        subset = {k: v[rows] for k, v in obs.items()} if isinstance(obs, dict) else obs[rows]
        per_row = feature_attributions(self.handle.module, subset, len(self.universe), self.observed_features)
        return dict(zip(rows, per_row, strict=True))

    def _response(
        self,
        p: Prepared,
        weights: np.ndarray,
        caps: AppliedCaps,
        modes: np.ndarray | None,
        confidence: np.ndarray,
        kill: bool,
        attributions: list[dict[str, float]] | None = None,
        observation: list[float] | None = None,
    ) -> ActResponse:
        # The answer is validated in one call (nested dicts, pydantic-core): the same checks as a
        # SymbolDecision per symbol, a fraction of the cost (the arrays are read as Python floats once).
        decisions: dict[str, dict[str, Any]] = {}
        equity, hold = p.request.account.equity, p.hold_reason
        prices = p.request.reference_prices(self.universe)
        for i in self._priced_in_coin:
            prices[i] = None
        units = p.request.held_quantities()
        w_target, w_now, conf = weights.tolist(), p.w_now.tolist(), confidence.tolist()
        mode_of = None if modes is None else modes.tolist()
        for i, sym in enumerate(self.universe):
            w = w_target[i]
            flat = abs(w) < _ZERO
            reason = hold.get(sym)
            held = reason is not None
            if held:
                mode = "hold"
            elif mode_of is not None:
                mode = GATE_MODES[mode_of[i]]
            else:
                mode = "flat" if flat else "aggressive"
            if kill and not held and abs(w) < abs(w_now[i]) - _ZERO:
                reason = "kill switch: unwind only"
            kept = held or w == w_now[i]  # no order: the units held, whatever the price
            decisions[sym] = {
                "target_weight": w,
                "target_qty": units.get(sym, 0.0) if kept else target_quantity(w, equity, prices[i]),
                "current_weight": w_now[i],
                "side": "flat" if flat else ("long" if w > 0 else "short"),
                "gate_mode": mode,
                "confidence": 0.0 if held else conf[i],
                "tradeable": not held,
                "reason": reason,
                "attributions": None if attributions is None else attributions[i],
            }
        return ActResponse.model_validate(
            {
                "model": self.model_ref,
                "model_version": self.handle.version,
                "as_of": p.as_of,
                "features_as_of": self._bar_time(p.bar)[0],
                "decisions": decisions,
                "gross_exposure": float(np.abs(weights).sum()),
                "kill_switch_active": kill,
                "kill_switch_rule": self._kill_switch_rule(p.request),
                "unmanaged": p.unmanaged,
                "caps": caps,
                "observation": observation,
                "observation_spec": None if observation is None else self.observation_spec,
            }
        )


def bar_close_times(ts: np.ndarray) -> np.ndarray:
    """When each bar of a serving timeline (``MarketData.ts``: datetime64, UTC, sorted) has surely
    closed, as datetime64[us] UTC: ``replay.timeutil.series_closed_at`` (``bar_closed_at`` with the
    timeline's ``bar_length``; a day with a single bar, the longest a bar lasts).

    One length for the whole timeline is the right one, not one per asset class: the timeline is the
    calendar of one class (``envs.replay_loader``: the equities' when there are any, else the
    crypto's), and the loader observes the other class only at those same labels, refusing bars stamped
    between them (``refuse_off_calendar_crypto``), so every bar observed at a label opened at that
    label on that clock. So a daily csv store (00:00 UTC labels) closes each bar a day after its
    label, an Alpaca one (a local midnight, e.g. 05:00 UTC) 25 h after, an hourly one an hour after.
    The result increases with ``ts`` (daily stamps are at least 20 h apart and close 24 or 25 h after
    them), so a ``searchsorted`` finds the newest bar closed by a time. A series whose clock changes
    between two days is still daily (``replay.timeutil.series_closed_at``)."""
    stamps = pd.DatetimeIndex(np.asarray(ts, dtype="datetime64[us]"))
    return series_closed_at(stamps).tz_convert(None).to_numpy().astype("datetime64[us]")


def action_confidence(module: Any, dist_inputs: Any) -> np.ndarray:
    """Per-symbol confidence ``[B, N]`` in [0, 1] of the policy's deterministic action (see module doc),
    from its action distribution's inputs (``PolicyHandle.act_with_inputs``: a tensor or an array).

    Computed in float64 numpy (``scipy.special.erf``, a softmax with its max subtracted), no torch op:
    6.7 us at B = 1 where the torch version took 15 us (``benchmarks/serve_latency.md``, 2026-12-03b).
    The result equals torch's ``erf`` / ``softmax`` in float64 to a few ulps (``tests/test_confidence.py``
    checks 1e-12 on random and hostile inputs: NaN, inf, huge and tiny values)."""
    inputs = _float64(dist_inputs)
    space = module.action_space
    # overflow, x / 0 and inf - inf (a broken row) give inf and NaN, as torch's maths does: no warning
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if isinstance(space, gym.spaces.Box):
            n = inputs.shape[-1] // 2
            mean, log_std = inputs[..., :n], inputs[..., n:]
            return np.asarray(erf(np.abs(mean) / (np.exp(log_std) * _SQRT2)))
        b, n = inputs.shape[0], len(space.nvec) // GATE_ACTION_FIELDS
        logits = inputs.reshape(b, n, -1)[..., : len(GATE_MODES)]
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray((e / e.sum(axis=-1, keepdims=True)).max(axis=-1))


_SQRT2 = math.sqrt(2.0)


def _float64(x: Any) -> np.ndarray:
    """A tensor or an array as a float64 numpy array (float32 widened exactly)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _utc_us(ts: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact: no float on the way)."""
    return (ts - _EPOCH) // _MICROSECOND


def _utc(ts: np.datetime64) -> datetime:
    seconds = ts.astype("datetime64[us]").astype(np.int64) / 1e6
    return datetime.fromtimestamp(float(seconds), tz=UTC)
