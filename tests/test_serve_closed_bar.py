"""Serving observes a bar only once it has surely closed (``serve.decide.bar_close_times``, the rule of
``replay.timeutil.bar_closed_at``), as training decides on close ``t`` and fills at ``t + 1``: a bar's
stamp is its open, so a request hours into a daily bar must not see its close, high, low or volume.
No Ray: an untrained (seeded) module on a small synthetic market, daily bars labelled 00:00 UTC as a
csv store labels dates (2020-01-01 .. 2020-04-29), restamped for the Alpaca and hourly cases."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from raytrade.envs.gym_envs import batched_observation, feature_index
from raytrade.envs.market_data import MarketData
from raytrade.envs.simulator import MarketSimulator
from raytrade.serve.decide import (
    DecisionService,
    RequestError,
    ServeConfig,
    bar_close_times,
    serving_market_data,
)
from raytrade.serve.schemas import ActRequest
from tests.test_serve_fast_path import _handle

LAST = datetime(2020, 4, 29, tzinfo=UTC)  # the synthetic market's last label (its 120th day)
_US = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def handle() -> Any:
    return _handle("ppo_mlp")


@pytest.fixture(scope="module")
def daily(handle: Any) -> MarketData:
    data = serving_market_data(handle.env_config(), handle.manifest.data.symbols)
    assert data.ts[-2:].tolist() == [datetime(2020, 4, 28), datetime(2020, 4, 29)]  # 00:00 UTC labels
    return data


def _service(handle: Any, data: MarketData, config: ServeConfig | None = None) -> DecisionService:
    return DecisionService(handle, data, config or ServeConfig(max_feature_age_hours=None))


def _restamped(data: MarketData, first: str, step: np.timedelta64) -> MarketData:
    """``data`` with its bars stamped ``first``, ``first + step``, ... (the same arrays)."""
    ts = np.datetime64(first, "us") + np.arange(data.n_steps) * step.astype("timedelta64[us]")
    return dataclasses.replace(data, ts=ts)


def _request(service: DecisionService, as_of: datetime) -> ActRequest:
    """A flat account at the simulator's initial equity, every symbol quoted, at ``as_of``."""
    equity = service.env_cfg.sim.initial_equity
    return ActRequest.model_validate(
        {
            "account": {"equity": equity, "cash": equity},
            "drawdown_pct": 0.0,
            "analysis": {s: {"bid_price": 99.99, "ask_price": 100.01} for s in service.data.symbols},
            "as_of": as_of.isoformat(),
            "observation": True,
        }
    )


def _bar(service: DecisionService, as_of: datetime) -> int:
    """The bar a request at ``as_of`` observes, counted from the end (-1: the last)."""
    return service.prepare(_request(service, as_of), as_of).bar - service.data.n_steps


def test_a_request_during_the_last_daily_bar_observes_the_bar_before(handle: Any, daily: MarketData) -> None:
    service = _service(handle, daily)
    as_of = LAST + timedelta(hours=15)  # 15:00 UTC on the last bar's date: that bar is still open
    (answer,) = service.decide([_request(service, as_of)])
    bar = daily.n_steps - 2
    assert service.prepare(_request(service, as_of), as_of).bar == bar
    assert answer.as_of == as_of and answer.features_as_of == datetime(2020, 4, 28, tzinfo=UTC)
    cfg = service.env_cfg
    sim = MarketSimulator(daily, cfg.sim.model_copy(update={"episode_len": 1}), n_envs=1)
    sim.reset(starts=np.array([bar]))
    rb = cfg.sim.kill_switch.release_after_bars
    env_obs = batched_observation(
        sim.observe(), feature_index(daily, cfg.feature_columns), rb, cfg.flat_obs, cfg.normalizer
    )
    assert answer.observation == env_obs[0].tolist()


def test_a_daily_date_label_is_observed_from_the_next_midnight_utc_on(handle: Any, daily: MarketData) -> None:
    service = _service(handle, daily)
    midnight = LAST + timedelta(days=1)
    assert service.closed_at(-1) == midnight
    assert [_bar(service, midnight - _US), _bar(service, midnight)] == [-2, -1]
    assert service.decide([_request(service, midnight)])[0].features_as_of == LAST


def test_a_daily_bar_stamped_at_a_local_midnight_counts_closed_25_hours_later(
    handle: Any, daily: MarketData
) -> None:
    service = _service(handle, _restamped(daily, "2020-01-01T05:00", np.timedelta64(1, "D")))
    opened = LAST + timedelta(hours=5)  # New York midnight, as Alpaca stamps daily bars
    assert service.closed_at(-1) == opened + timedelta(hours=25)
    day, closed = opened + timedelta(hours=24), opened + timedelta(hours=25)
    assert [_bar(service, day), _bar(service, closed)] == [-2, -1]


def test_an_hourly_bar_closes_an_hour_after_its_stamp(handle: Any, daily: MarketData) -> None:
    service = _service(handle, _restamped(daily, "2024-01-02T00:00", np.timedelta64(1, "h")))
    last = datetime(2024, 1, 2, tzinfo=UTC) + timedelta(hours=daily.n_steps - 1)
    assert service.closed_at(-1) == last + timedelta(hours=1)
    assert [_bar(service, last + timedelta(minutes=59)), _bar(service, last + timedelta(hours=1))] == [-2, -1]


def test_an_as_of_before_the_first_bar_closes_is_a_422_naming_as_of(handle: Any, daily: MarketData) -> None:
    service = _service(handle, daily)
    as_of = datetime(2020, 1, 1, 12, tzinfo=UTC)  # after the first bar's stamp, before its close
    with pytest.raises(RequestError) as err:
        service.prepare(_request(service, as_of), as_of)
    assert err.value.loc == ("as_of",)
    assert err.value.msg == (
        "2020-01-01T12:00:00+00:00 precedes the close of the data's first bar (2020-01-01T00:00:00+00:00, "
        "closes at 2020-01-02T00:00:00+00:00): no bar has closed by then"
    )
    assert service.prepare(_request(service, as_of + timedelta(hours=12)), as_of).bar == 0


def test_the_probe_decides_on_the_last_bar_dated_when_it_closed(handle: Any, daily: MarketData) -> None:
    service = _service(handle, daily)
    answer = service.probe()
    assert (answer.as_of, answer.features_as_of) == (LAST + timedelta(days=1), LAST)
    assert service.describe()["data_last_bar_closed_at"] == "2020-04-30T00:00:00+00:00"


def test_feature_age_is_measured_from_the_bars_close(handle: Any, daily: MarketData) -> None:
    service = _service(handle, daily, ServeConfig(max_feature_age_hours=24))
    closed = LAST + timedelta(days=1)
    at_limit = service.decide([_request(service, closed + timedelta(hours=24))])[0]
    assert not at_limit.fallback and at_limit.features_as_of == LAST
    late = service.decide([_request(service, closed + timedelta(hours=24, seconds=1))])[0]
    assert late.fallback and late.reason == (
        "features are from the bar of 2020-04-29T00:00:00+00:00, closed at 2020-04-30T00:00:00+00:00, "
        "24.0 h old, over the limit of 24 h: holding"
    )


def test_daily_bars_changing_clock_between_two_days_still_close_a_day_after_their_label() -> None:
    """05:00 UTC stamps, then 00:00 UTC date labels: 19 h apart at the change, which ``bar_length``
    calls a 19 h bar; a date label would then count closed at 19:00 UTC, before the session closed."""
    ts = np.array(["2024-01-08T05:00", "2024-01-09T05:00", "2024-01-10T00:00", "2024-01-11T00:00"], "M8[us]")
    closes = bar_close_times(ts)
    expected = ["2024-01-09T06:00", "2024-01-10T06:00", "2024-01-11T00:00", "2024-01-12T00:00"]
    assert closes.tolist() == np.array(expected, "M8[us]").tolist()
