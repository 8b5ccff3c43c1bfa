"""A replica's garbage collector, kept off the request path: what was loaded is frozen out of the
collector's scans.

Why: a replica holds a few hundred thousand long-lived objects (torch, Ray, the policy, its market
data), and each request promotes a few dozen short-lived ones into the oldest generation while they
are in flight. CPython then runs a full collection whenever the promotions reach a quarter of the
oldest generation; every one scans the whole heap with the GIL held. Measured in a ``ppo_mlp``
replica at 8 concurrent clients (``gc.callbacks``, thread CPU): a full collection every ~2 s taking
10-30 ms each, with every request in flight waiting on it, which is where the slowest percent of
answers came from. Frozen (``gc.freeze``), the loaded objects are no longer scanned: the same
collections took about 0.5 ms.

* :func:`settle` after a version is loaded and probed: collect what the load left (a previous
  version's cycles included), then freeze the rest. It scans the whole heap once, with the GIL held
  (a few hundred ms on a busy 2-core machine): paid once per load, where a reload already reads a
  checkpoint and the store.
* :class:`LateFreeze`: the first requests of a process import and build what the HTTP path needs
  (FastAPI, pydantic, Serve internals); :meth:`LateFreeze.served` freezes those too once
  ``after`` requests were served (``gc.freeze`` alone moves lists: no scan, no pause).

Frozen objects are still freed when their last reference goes; only cyclic garbage frozen with them
waits for the next :func:`settle`.
"""

from __future__ import annotations

import gc

FREEZE_AFTER_REQUESTS = 64
"""Requests a replica serves before :class:`LateFreeze` freezes what they built."""


def settle() -> None:
    """Collect everything (frozen objects included), then freeze what survived."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class LateFreeze:
    """Counts requests; freezes the heap once, when the ``after``-th has been served."""

    def __init__(self, after: int = FREEZE_AFTER_REQUESTS) -> None:
        if after < 1:
            raise ValueError(f"after must be >= 1, got {after}")
        self.after = after
        self.count = 0

    def served(self) -> bool:
        """Count one request; True when this one froze the heap."""
        self.count += 1
        if self.count != self.after:
            return False
        gc.freeze()
        return True
