"""Dynamic batching without a timer: what a replica decides in one policy forward.

A call made while no batch is being decided is decided at once; calls that arrive while a batch is
being decided wait for it and then go together in the next one (up to ``max_batch_size``). The batch
size so follows the load: 1 on an idle service, about arrival rate x decide time under load.

Why not ``ray.serve.batch``: its batches wait ``batch_wait_timeout_s`` after their first request
(2 ms was the default here), which an unfilled batch (most of them at concurrency 1 and 8) pays in
full; and with a wait of 0 it forms a batch from whatever is queued the moment the previous batch is
*formed*, not decided, so under load the batches that queue behind a running one are of one request
each and every request pays its own forward. Here the next batch is formed when the previous one is
done. ``wait_s`` > 0 restores a fill wait (a batch that is not full waits that long before it is
decided), for an A/B or a policy whose forward is far cheaper per request in large batches.

**A fill wait under load only.** ``busy_wait_s`` is a fill wait paid only while calls overlap: each
call notes whether another was waiting or being decided when it arrived, and while the share of such
calls, averaged over about the last ten (:data:`OVERLAP_MEMORY`), is above :data:`BUSY_SHARE`, a
batch that is not full waits ``busy_wait_s`` for more. A call that finds the batcher idle for more
than :data:`IDLE_RESET_S` starts the share afresh. So a lone client (one request at a time, the
trading loop's own pattern, which never overlaps itself) never waits, except for its first few calls
right after a burst of other clients (while its calls come less than ``IDLE_RESET_S`` apart, about
twenty of them); under load the wait turns batches of one into batches of several, and a forward
costs far less per request in a batch (the ``gnn`` benchmark policy, one torch thread: 1.65 ms at
one request, 0.63 ms per request at four).
Measured over HTTP (``gnn`` replicas side by side, alternating rounds): at 8 clients, a fill wait of
2 ms on every batch raised requests/s 147 -> 168 (p50 52 -> 46 ms; 5 ms: 154/s), but cost a lone
client its 2 ms (p50 9.1 -> 11.3 ms); paid only under overlap, 2 ms gave 175 -> 181/s at 8 clients
(p50 45 -> 43 ms), 225 -> 235/s at 32, and left the lone client as it was (9.1 / 9.0 ms).

The decide function runs in a worker thread, one hop per batch, so the event loop keeps accepting
and checking requests while the policy forward runs (torch releases the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

OVERLAP_MEMORY = 0.1
"""Weight of the newest call in the running share of overlapping calls (about the last ten count)."""
BUSY_SHARE = 0.1
"""Share of overlapping calls above which ``busy_wait_s`` applies (a lone client's share is 0)."""
IDLE_RESET_S = 1.0
"""An arrival after this long with nothing pending or decided forgets the past overlap."""
DEFAULT_BUSY_WAIT_MS = 2.0
"""The service's default ``busy_wait_s``, in ms (see the module doc for the measurements)."""


class DrainBatcher(Generic[T, R]):
    """``await batcher(item)`` -> ``run([..., item, ...])``'s answer for ``item``.

    ``run`` maps a list of items to a list of answers of the same length, in order; an exception
    from it (or a wrong length) is raised to every caller of that batch and to no one else. A caller
    cancelled while waiting (its client went away) is left out of its batch. ``batches`` counts the
    batches decided.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        wait_s: float = 0.0,
        busy_wait_s: float = 0.0,
    ) -> None:
        self.run = run
        self.max_batch_size, self.wait_s, self.busy_wait_s = 1, 0.0, 0.0
        self.configure(max_batch_size, wait_s, busy_wait_s)
        self.batches = 0
        self.overlap = 0.0  # running share of calls that arrived while another waited or was decided
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._deciding = False
        self._idle_since: float | None = None  # loop time the last drain ended

    def configure(self, max_batch_size: int, wait_s: float, busy_wait_s: float = 0.0) -> None:
        """New limits, for the batches formed from now on (``ValueError`` naming a bad one)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        if busy_wait_s < 0:
            raise ValueError(f"busy_wait_s must be >= 0, got {busy_wait_s}")
        self.max_batch_size, self.wait_s, self.busy_wait_s = max_batch_size, wait_s, busy_wait_s

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        overlapped = bool(self._pending) or self._deciding
        if not overlapped and self._idle_since is not None and loop.time() - self._idle_since > IDLE_RESET_S:
            self.overlap = 0.0
        self.overlap += OVERLAP_MEMORY * (overlapped - self.overlap)
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    def fill_wait_s(self) -> float:
        """The fill wait a batch formed now gets: ``busy_wait_s`` while calls overlap, else ``wait_s``."""
        return max(self.wait_s, self.busy_wait_s if self.overlap > BUSY_SHARE else 0.0)

    async def _drain(self) -> None:
        """Decide the pending calls, one batch after another, until none is left."""
        while self._pending:
            wait = self.fill_wait_s()
            if wait > 0 and len(self._pending) < self.max_batch_size:
                try:
                    await asyncio.sleep(wait)
                except asyncio.CancelledError:  # the replica's loop is shutting down: no caller waits
                    for _, future in self._pending:
                        future.cancel()
                    raise
            batch = [(item, f) for item, f in self._pending[: self.max_batch_size] if not f.done()]
            del self._pending[: self.max_batch_size]
            if batch:
                await self._decide(batch)
        self._idle_since = asyncio.get_running_loop().time()

    async def _decide(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self._deciding = True
        try:
            answers = await asyncio.to_thread(self.run, [item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"the batch function answered {len(answers)} items for {len(batch)}")
        except Exception as exc:  # every caller of this batch gets it; the drain goes on
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # the replica's loop is shutting down: no caller waits forever
            for _, future in batch + self._pending:
                future.cancel()
            raise
        finally:
            self._deciding = False
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
