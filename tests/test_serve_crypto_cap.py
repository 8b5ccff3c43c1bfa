"""Crypto stays unlevered in serving ("crypto unlevered", ``shared/contracts/README.md``), counting crypto
held outside the model's universe; and a symbol the answer keeps where it is carries the units held as
its ``target_qty``. No Ray: an untrained (seeded) module on a small synthetic market
whose last asset is crypto (``SYN005USD``), its action replaced by a fixed one, so the caps are what
must hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from raytrade.envs.projection import ConstraintConfig
from raytrade.envs.simulator import constrained_targets, exposure_limits
from raytrade.models.registry_load import PolicyHandle
from raytrade.serve.decide import DecisionService, ServeConfig, serving_market_data
from raytrade.serve.schemas import ActRequest
from tests.test_serve_fast_path import _handle

EQUITY = 100_000.0


class _FixedAction:
    """A policy handle whose action is ``action [N]`` (a finite, extreme policy), trained under
    ``env_config`` when given."""

    def __init__(self, handle: PolicyHandle, action: np.ndarray, env_config: Any = None):
        self._handle, self._action, self._env_config = handle, action, env_config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def env_config(self) -> Any:
        return self._env_config or self._handle.env_config()

    def act_with_inputs(self, batch: Any) -> Any:
        out = self._handle.act_with_inputs(batch)
        action = np.asarray(out.action)
        return out._replace(action=np.broadcast_to(self._action, action.shape).astype(action.dtype))


WANTS_CRYPTO = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # all in on SYN005USD, nothing else


def _service(
    env_config: Any = None, action: np.ndarray = WANTS_CRYPTO, config: ServeConfig | None = None
) -> DecisionService:
    handle = _handle("ppo_mlp")
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    assert [s for s, c in zip(data.symbols, data.asset_class, strict=True) if c == "crypto"] == ["SYN005USD"]
    policy = _FixedAction(handle, action, env_config)
    return DecisionService(policy, data, config or ServeConfig(max_feature_age_hours=None))


@pytest.fixture(scope="module")
def service() -> DecisionService:
    return _service()


def _position(symbol: str, weight: float, qty: float, price: float | None = None) -> dict[str, Any]:
    row = {"symbol": symbol, "qty": str(qty), "side": "long" if weight >= 0 else "short"}
    return (
        row
        | {"market_value": str(weight * EQUITY)}
        | ({} if price is None else {"current_price": str(price)})
    )


def _every_symbol_listed(service: DecisionService) -> int:
    """The last bar where every symbol has a bar (none is held for want of one)."""
    return int(np.flatnonzero(service.data.listed.all(axis=1))[-1])


def _request(service: DecisionService, positions: list[dict[str, Any]], **rows: dict[str, Any]) -> ActRequest:
    analysis: dict[str, Any] = {s: {"bid_price": 99.99, "ask_price": 100.01} for s in service.data.symbols}
    return ActRequest.model_validate(
        {
            "account": {"equity": EQUITY},
            "positions": positions,
            "drawdown_pct": 0.0,
            "analysis": analysis | rows,
            "as_of": service.closed_at(_every_symbol_listed(service)).isoformat(),  # observes that bar
        }
    )


# --------------------------------------------------------------------------------- crypto budget


def test_the_crypto_sleeve_counts_crypto_held_outside_the_universe() -> None:
    # gross budget 2.0 - 0.9 = 1.1 does not bind (0.4 of equities + 0.1 of crypto); the crypto budget
    # 1.0 - 0.9 (BTCUSD outside) = 0.1 is split evenly between the two crypto targets of 0.6
    limits = exposure_limits(np.array([False, False, True, True]), ConstraintConfig())
    w, _ = constrained_targets(
        np.array([[0.2, 0.2, 0.6, 0.6]]),
        np.zeros((1, 4)),
        np.ones((1, 4), bool),
        np.zeros(1, bool),
        limits,
        external_gross=0.9,
        external_crypto=0.9,
    )
    np.testing.assert_allclose(w, [[0.2, 0.2, 0.05, 0.05]], rtol=0, atol=1e-12)


def test_an_answer_keeps_crypto_gross_within_the_cap_counting_crypto_held_outside(
    service: DecisionService,
) -> None:
    # BTCUSD (outside the universe) 0.9 of equity + SYN005USD 0.05: the policy wants +1 everywhere,
    # so SYN005USD may reach 0.1 at most (the crypto cap 1.0 - 0.9), not the per-symbol cap 0.15
    request = _request(service, [_position("BTCUSD", 0.9, 0.9), _position("SYN005USD", 0.05, 50)])
    answer = service.decide([request])[0]
    assert answer.unmanaged == ["BTCUSD"]
    crypto = answer.decisions["SYN005USD"].target_weight
    assert 0.9 + crypto <= 1.0 + 1e-12
    assert crypto == pytest.approx(0.1, abs=1e-9)  # the budget is reached, not gone past
    assert answer.caps is not None and answer.caps.crypto_gross_cap == 1.0


def test_an_account_over_the_crypto_cap_gets_no_crypto_added(service: DecisionService) -> None:
    # 1.05 of crypto outside the universe: nothing is left for crypto, so SYN005USD only unwinds
    request = _request(service, [_position("ETH/USD", 1.05, 35), _position("SYN005USD", 0.05, 50)])
    d = service.decide([request])[0].decisions["SYN005USD"]
    assert (d.current_weight, d.target_weight) == (pytest.approx(0.05), 0.0)


def test_the_serving_crypto_cap_holds_whatever_the_training_config(service: DecisionService) -> None:
    # a policy trained with a crypto sleeve of 2x (no crypto budget of its own) is still held to the
    # service's crypto cap: 1.0 - 0.95 outside leaves 0.05 (the gross budget, 1.2 - 0.95, would allow 0.15)
    cfg = service.env_cfg
    sim = cfg.sim.model_copy(update={"constraints": ConstraintConfig(crypto_gross_cap=2.0)})
    lax = _service(cfg.model_copy(update={"sim": sim}))
    answer = lax.decide([_request(lax, [_position("BTCUSD", 0.95, 0.95)])])[0]
    assert answer.decisions["SYN005USD"].target_weight == pytest.approx(0.05, abs=1e-12)
    assert answer.caps is not None and answer.caps.binding == ["per_symbol_cap", "crypto_gross_cap"]


def test_a_coin_held_under_its_slash_spelling_is_the_universes_coin(service: DecisionService) -> None:
    """SYN005/USD held at 0.14 of equity was a position outside the universe (current weight 0), so the
    per-symbol cap let SYN005USD be bought to 0.15 beside it: 0.29 in one coin."""
    from raytrade.serve.answer_check import answer_breach
    from raytrade.serve.caps import ExposureCaps

    request = _request(service, [_position("SYN005/USD", 0.14, 140)])
    answer = service.decide([request])[0]
    d = answer.decisions["SYN005USD"]
    assert answer.unmanaged == [] and d.current_weight == pytest.approx(0.14)
    assert d.target_weight == pytest.approx(0.15) and d.target_qty == pytest.approx(0.15 * EQUITY / 100.0)
    assert answer_breach(request, answer, ExposureCaps()) is None  # the client reads it the same way


def test_one_pair_held_under_both_spellings_is_refused() -> None:
    with pytest.raises(ValueError, match=r"positions\[1\].symbol 'BTC/USD' is 'BTCUSD' again"):
        ActRequest.model_validate(
            {
                "account": {"equity": EQUITY},
                "positions": [_position("BTCUSD", 0.1, 1), _position("BTC/USD", 0.1, 1)],
                "drawdown_pct": 0.0,
                "analysis": {"BTCUSD": {"bid_price": 99.99, "ask_price": 100.01}},
            }
        )


# --------------------------------------------------------------------------------- held quantities


@pytest.mark.parametrize(
    "row",
    [
        {"bid_price": 169.95, "ask_price": 170.05, "trade_blocked": True},
        {"bid_price": 199.95, "ask_price": 200.05, "trade_blocked": True},
        {"bid_price": 169.0, "ask_price": 171.0},  # 117 bps: over the spread cap
        {"last_close": 170.0},  # no quote
    ],
    ids=["blocked-mid-down", "blocked-mid-up", "wide-spread", "no-quote"],
)
def test_a_held_symbol_targets_the_units_it_holds(service: DecisionService, row: dict[str, Any]) -> None:
    # 40 units held, valued at 185.32 (the broker's price): at any other mid, target_weight x equity /
    # mid would be an order on a symbol that must not move
    held = _position("SYN001", 7412.80 / EQUITY, 40, 185.32)
    short = _position("SYN002", -0.05, -25, 200.0)
    wide = {"bid_price": 190.0, "ask_price": 210.0}
    d = service.decide([_request(service, [held, short], SYN001=row, SYN002=wide)])[0].decisions
    assert (d["SYN001"].gate_mode, d["SYN001"].target_weight) == ("hold", pytest.approx(0.074128))
    assert (d["SYN001"].target_qty, d["SYN002"].target_qty) == (40.0, -25.0)


def test_a_held_symbol_with_no_position_targets_zero_units(service: DecisionService) -> None:
    request = _request(service, [], SYN003={"last_close": 50.0}, SYN004={"trade_blocked": True})
    d = service.decide([request])[0].decisions
    assert (d["SYN003"].target_qty, d["SYN004"].target_qty) == (0.0, 0.0)  # the second has no price


def test_a_symbol_the_kill_switch_keeps_where_it_is_targets_the_units_it_holds() -> None:
    # unwind-only: the policy wants +1 on SYN000, so it stays at its 0.1 (40 units at the broker's 250)
    kill = _service(action=np.ones(6), config=ServeConfig(max_feature_age_hours=None, kill_drawdown=0.1))
    request = _request(kill, [_position("SYN000", 0.1, 40, 250.0)]).model_copy(update={"drawdown_pct": -0.2})
    answer = kill.decide([request])[0]
    d = answer.decisions["SYN000"]
    assert answer.kill_switch_active and (d.gate_mode, d.target_weight) == ("aggressive", 0.1)
    assert d.target_qty == 40.0  # not 0.1 x 100k / 100 (the mid) = 100: a buy of 60 under the kill switch


def test_one_crypto_rule_for_ingest_serving_and_the_loop() -> None:
    """CSV ingest knew SUIUSDT as crypto, serving's cap did not (it counted only a USD suffix)."""
    from pathlib import Path

    from raytrade.replay.loop_rules import is_crypto_symbol
    from raytrade.replay.sources.csv_dir import asset_class_of

    for symbol in ("BTCUSD", "BTC/USD", "SUIUSDT", "ETHUSDC", "btcusdt", "ETHBTC", "ETH/BTC", "LINKETH"):
        assert is_crypto_symbol(symbol) and asset_class_of(symbol.upper(), Path(f"{symbol}.csv")) == "crypto"
    # a coin quote marks a pair only past the longest listed ticker: GBTC and ETHE are trusts, BTC a coin
    for symbol in ("AAPL", "USD", "USDT", "MSFT", "GBTC", "BTC", "ETH", "ETHE", "XBTC"):
        assert not is_crypto_symbol(symbol) and asset_class_of(symbol, Path(f"{symbol}.csv")) == "equity"


def test_alpaca_pairs_keep_their_quote_currency() -> None:
    """BTCUSDT was sent to Alpaca as BTCU/USD once USDT pairs counted as crypto."""
    from raytrade.replay.sources.alpaca import parse_symbol

    given = ("BTCUSD", "BTCUSDT", "ETHUSDC", "BTC/USDT", "AAPL", "ETHBTC", "LINKETH", "GBTC")
    spelled = {s: parse_symbol(s).alpaca for s in given}
    assert spelled == {
        "BTCUSD": "BTC/USD",
        "BTCUSDT": "BTC/USDT",
        "ETHUSDC": "ETH/USDC",
        "BTC/USDT": "BTC/USDT",
        "AAPL": "AAPL",
        "ETHBTC": "ETH/BTC",  # a coin-quoted pair, once taken for a 6-letter equity
        "LINKETH": "LINK/ETH",
        "GBTC": "GBTC",  # the listed trust
    }
    assert parse_symbol("ETHBTC").asset_class == "crypto" and parse_symbol("GBTC").asset_class == "equity"


def test_a_universe_whose_names_hide_their_asset_class_is_refused_at_load() -> None:
    """crypto/BTC.csv is crypto in the store, an equity (an ETF ticker, even) to the loop's planner and
    Alpaca: the crypto cap and the no-short rule in plan_cycle would miss it."""
    import dataclasses

    handle = _handle("ppo_mlp")
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    relabelled = dataclasses.replace(
        data,
        asset_class=tuple(
            "crypto" if s == "SYN001" else c for s, c in zip(data.symbols, data.asset_class, strict=True)
        ),
    )
    with pytest.raises(ValueError, match=r"symbols \['SYN001'\] are not of the asset class their names say"):
        DecisionService(
            _FixedAction(handle, WANTS_CRYPTO, None), relabelled, ServeConfig(max_feature_age_hours=None)
        )


def test_coin_quote_names_the_coin_a_pair_is_priced_in() -> None:
    """ETHBTC quotes ~0.05 (BTC): w x equity / 0.05 read as dollars asks for ~BTCUSD times the units.
    A pair quoted in dollars or a stablecoin, and a ticker, have no coin quote."""
    from raytrade.replay.loop_rules import coin_quote

    given = ("ETHBTC", "ETH/BTC", "LINKETH", "BTCUSD", "BTC/USDT", "GBTC", "AAPL")
    quoted = {s: coin_quote(s) for s in given}
    assert quoted == {s: q for s, q in zip(given, ("BTC", "BTC", "ETH", None, None, None, None), strict=True)}


def test_serving_gives_a_pair_quoted_in_a_coin_no_target_qty() -> None:
    """The weight is the policy's; the units are not knowable from a price in BTC."""
    import dataclasses

    handle = _handle("ppo_mlp")
    renamed = [s.replace("SYN005USD", "SYNFIVEBTC") for s in handle.manifest.data.symbols]
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    data = dataclasses.replace(data, symbols=tuple(renamed))
    manifest = handle.manifest.model_copy(
        update={"data": handle.manifest.data.model_copy(update={"symbols": renamed})}
    )

    class _Renamed(_FixedAction):
        def __init__(self) -> None:
            super().__init__(handle, WANTS_CRYPTO)
            self.manifest = manifest

    service = DecisionService(_Renamed(), data, ServeConfig(max_feature_age_hours=None))
    request = _request(service, [])
    (answer,) = service.decide([request])
    coin, dollar = answer.decisions["SYNFIVEBTC"], answer.decisions["SYN000"]
    assert coin.target_weight > 0 and coin.target_qty is None  # bought, but no units from 100 BTC a coin
    assert dollar.target_qty == pytest.approx(dollar.target_weight * EQUITY / 100.0)
