"""Group commit of sent messages: the sends that arrive while history is busy go in one call.

Nothing waits for a batch to fill. A send goes out at once (at the end of the current event loop
turn, with whatever else arrived in that turn) while fewer than `max_in_flight` calls are under
way; otherwise it waits for the next call to return and leaves with everything queued meanwhile.
So an idle system pays no latency, and a busy one stores many messages per request, statement
and commit.
"""

import asyncio
import logging

from prometheus_client import Histogram

from ..shared.errors import ParleyError, ServiceUnavailable
from ..shared.internal import InternalClient
from ..shared.models import MAX_STORE_BATCH

log = logging.getLogger(__name__)

ROUTE = "/internal/messages/batch"


class StoreBatcher:
    def __init__(self, history: InternalClient, batch_size: Histogram, *, max_in_flight: int = 4,
                 max_batch: int = MAX_STORE_BATCH):
        self._history = history
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._queue: list[tuple[dict, asyncio.Future]] = []
        self._in_flight = 0
        self._flush_scheduled = False
        self._calls: set[asyncio.Task] = set()

    async def store(self, message: dict) -> tuple[dict, bool]:
        """The stored message (with both profiles) and whether this send created it.

        Raises the `ParleyError` that refused this message, or that made history unreachable.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((message, future))
        if not self._flush_scheduled and self._in_flight < self._max_in_flight:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._queue and self._in_flight < self._max_in_flight:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self._in_flight += 1
            call = asyncio.ensure_future(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        self._batch_size.observe(len(batch))
        try:
            answer = await self._history.call(
                "POST",
                ROUTE,
                json={"messages": [message for message, _ in batch]},
                # With a clientId a repeated call stores nothing twice, so it is safe to retry.
                idempotent=all(message.get("clientId") is not None for message, _ in batch),
                route=ROUTE,
            )
            for (_, future), result in zip(batch, answer["results"], strict=True):
                if future.done():  # the sender's event was cancelled (shutdown); nothing to tell
                    continue
                if "error" in result:
                    error = result["error"]
                    future.set_exception(ParleyError(error["message"], code=error["code"], status=result["status"]))
                else:
                    future.set_result((result["message"], result["created"]))
        except ParleyError as exc:
            self._fail(batch, exc)
        except Exception:
            log.exception("storing a batch of %d message(s) failed", len(batch))
            self._fail(batch, ServiceUnavailable("The history service failed"))
        finally:
            self._in_flight -= 1
            if self._queue:
                self._flush()

    @staticmethod
    def _fail(batch: list[tuple[dict, asyncio.Future]], exc: ParleyError) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(ParleyError(exc.message, code=exc.code, status=exc.status))

    async def close(self) -> None:
        """Waits for the calls under way (their senders are owed an answer)."""
        await asyncio.gather(*self._calls, return_exceptions=True)
