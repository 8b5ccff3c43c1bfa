"""serve.heap: a settle reclaims cycles frozen with an earlier load and freezes the rest; the late
freeze happens once, at its request."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from raytrade.serve.heap import LateFreeze, settle


class Node:
    """A cyclic object (freed only by the collector, never by reference counts alone)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (the test process is not a replica)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_reclaims_cycles_frozen_with_an_earlier_load_and_freezes_the_rest() -> None:
    old = Node()
    gone = weakref.ref(old)
    gc.freeze()  # an earlier load, frozen with the cycle that will become garbage
    del old
    gc.collect()
    assert gone() is not None, "a frozen cycle was collected: the test shows nothing"
    kept = Node()
    settle()
    assert gone() is None, "the earlier load's cycle survived the settle"
    assert gc.get_freeze_count() > 0 and kept.me is kept


def test_the_late_freeze_freezes_once_at_its_request() -> None:
    freeze = LateFreeze(after=3)
    assert [freeze.served(), freeze.served()] == [False, False] and gc.get_freeze_count() == 0
    assert freeze.served() and gc.get_freeze_count() > 0
    gc.unfreeze()
    assert not any(freeze.served() for _ in range(5)) and gc.get_freeze_count() == 0


def test_the_late_freeze_refuses_a_count_below_one() -> None:
    with pytest.raises(ValueError, match=r"^after must be >= 1, got 0$"):
        LateFreeze(after=0)
