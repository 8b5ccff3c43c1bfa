"""An account the broker blocks (Alpaca's ``trading_blocked``, ``account_blocked``,
``trade_suspended_by_user``) takes no order: the loop sends none and says why, instead of sending a
basket Alpaca refuses order by order, every cycle. The real alpaca-py client against the fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_doubles import T0
from tests.test_live_assets import _paper, _refused, _sent


@pytest.mark.parametrize("flag", ["trading_blocked", "account_blocked", "trade_suspended_by_user"])
def test_a_blocked_account_gets_no_order_and_each_decision_says_why(
    tmp_path: Path, flag: str, caplog: pytest.LogCaptureFixture
) -> None:
    with _paper(tmp_path, {"AAPL": (0.1, "aggressive"), "MSFT": (0.05, "aggressive")}) as (loop, trading, _):
        trading.account_flags[flag] = True
        with caplog.at_level("ERROR"):
            report = loop.cycle(T0)
        assert _sent(trading) == [] and _refused(report) == []
        assert f"not sent: the broker blocks orders on the account ({flag})" in report.notes["AAPL"]
        assert f"the broker blocks orders on the account ({flag})" in caplog.text
        trading.account_flags[flag] = False  # unblocked: the next cycle trades
        loop.cycle(T0)
        assert {symbol for symbol, _, _ in _sent(trading)} == {"AAPL", "MSFT"}
