"""Coalescing without waiting: work submitted while earlier work is under way leaves together.

A `Batcher` hands items to a flush function (one call for many items: one HTTP request, one
Redis script call, one pipeline). Nothing waits for a batch to fill: the first item leaves at
the end of the current event loop turn with whatever else arrived in that turn, and while
`max_in_flight` flushes are under way, new items queue for the next. An idle system pays no
latency; a busy one makes few calls. With one flush in flight, items keep their order.

`min_interval` paces a busy batcher: when at least `pace_from` items were waiting for a flush
to end, the next one starts no sooner than that long after the previous one started, so the
items of the whole interval share one call (group commit): a call costs about the same whether
it carries 8 items or 16, and a busy system pays it per call. Fewer waiting (a quiet system)
leave at once, as does an item that finds nothing under way: pacing adapts to the load.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# One result per item, in order: the item's value, or the exception to raise to its submitter.
Flush = Callable[[list[Item]], Awaitable[list[Result | BaseException]]]


class Batcher(Generic[Item, Result]):
    def __init__(self, flush: Flush, *, max_batch: int, max_in_flight: int = 1, min_interval: float = 0.0,
                 pace_from: int = 1):
        self._flush = flush
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._min_interval = min_interval
        self._pace_from = pace_from
        self._last_start = float("-inf")  # when the latest flush started (loop time)
        self._queue: list[tuple[Item, asyncio.Future]] = []
        self._in_flight = 0
        self._scheduled = False
        self._flushes: set[asyncio.Task] = set()

    async def submit(self, item: Item) -> Result:
        return await self.submit_nowait(item)

    def submit_nowait(self, item: Item) -> asyncio.Future:
        """Queues `item`; the future will hold its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._start_flushes)
        return future

    def _start_flushes(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self._max_in_flight:
            self._last_start = asyncio.get_running_loop().time()
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self._in_flight += 1
            flush = asyncio.ensure_future(self._run(batch))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)

    async def _run(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its submitter was cancelled (shutdown): nobody to tell
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                # Busy: these items waited for a flush to end. Paced, they leave together; a
                # few (fewer than `pace_from`) leave at once.
                loop = asyncio.get_running_loop()
                delay = self._last_start + self._min_interval - loop.time() if len(self._queue) >= self._pace_from else 0
                if delay > 0:
                    self._scheduled = True
                    loop.call_later(delay, self._start_flushes)
                else:
                    self._start_flushes()

    async def close(self) -> None:
        """Waits until everything submitted has been flushed (its submitters are owed an answer)."""
        while self._flushes or self._queue:
            if not self._flushes:
                self._start_flushes()
            await asyncio.gather(*self._flushes, return_exceptions=True)
