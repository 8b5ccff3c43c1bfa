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

The decide function runs in a worker thread, one hop per batch, so the event loop keeps accepting
and checking requests while the policy forward runs (torch releases the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DrainBatcher(Generic[T, R]):
    """``await batcher(item)`` -> ``run([..., item, ...])``'s answer for ``item``.

    ``run`` maps a list of items to a list of answers of the same length, in order; an exception
    from it (or a wrong length) is raised to every caller of that batch and to no one else. A caller
    cancelled while waiting (its client went away) is left out of its batch. ``batches`` counts the
    batches decided.
    """

    def __init__(
        self, run: Callable[[list[T]], Sequence[R]], max_batch_size: int, wait_s: float = 0.0
    ) -> None:
        self.run = run
        self.max_batch_size, self.wait_s = 1, 0.0
        self.configure(max_batch_size, wait_s)
        self.batches = 0
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    def configure(self, max_batch_size: int, wait_s: float) -> None:
        """New limits, for the batches formed from now on (``ValueError`` naming a bad one)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.max_batch_size, self.wait_s = max_batch_size, wait_s

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Decide the pending calls, one batch after another, until none is left."""
        while self._pending:
            if self.wait_s > 0 and len(self._pending) < self.max_batch_size:
                await asyncio.sleep(self.wait_s)
            batch = [(item, f) for item, f in self._pending[: self.max_batch_size] if not f.done()]
            del self._pending[: self.max_batch_size]
            if batch:
                await self._decide(batch)

    async def _decide(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
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
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
