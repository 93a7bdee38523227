"""Group commit of sent messages: the sends that arrive while history is busy share one call.

One call to history is under way at a time (`MAX_CALLS_IN_FLIGHT`); the sends arriving
meanwhile leave together in the next, which history stores in one statement and one commit
(see `shared.batching`). A send that finds no call under way leaves at once.

While sends keep coming (some waited for the call under way), calls start at most
`min_interval` apart (`STORE_CALL_INTERVAL_SECONDS`, 15 ms by default), so the interval's
sends share one: a call costs the gateway, history and Postgres about the same whatever it
carries (Postgres: about 0.3 ms a statement and 0.03 ms a message). Back to back with the code
before pacing, at 3,000 msg/s: 22.7 messages a call instead of 8.7, 0.448 CPU-ms a message for
the whole system instead of 0.592, for a median 17.6 ms instead of 14.1 (at 1,000 msg/s: 13.5
instead of 7.3): bench/RESULTS.md lines 401-404 (appendix, "Third session"). The current full
run, line 31: at 3,000 msg/s, 22.7 messages a call, p50 18.4 ms, p99 43.9 ms.
"""

import logging
from typing import NamedTuple

from prometheus_client import Histogram

from ..shared.batching import Batcher
from ..shared.errors import ParleyError, ServiceUnavailable
from ..shared.internal import InternalClient
from ..shared.limits import MAX_STORE_BATCH

log = logging.getLogger(__name__)

ROUTE = "/internal/messages/batch"
MAX_CALLS_IN_FLIGHT = 1


class Stored(NamedTuple):
    """A send's outcome: the message (with profiles), whether this send created it, and for a
    group message created now, the members to deliver it to (sender excluded)."""

    message: dict
    created: bool
    recipients: list[str] | None = None


class StoreBatcher:
    def __init__(self, history: InternalClient, batch_size: Histogram, min_interval: float = 0.0):
        self._history = history
        self._batch_size = batch_size
        self._batcher: Batcher[dict, Stored] = Batcher(
            self._store, max_batch=MAX_STORE_BATCH, max_in_flight=MAX_CALLS_IN_FLIGHT, min_interval=min_interval
        )

    async def store(self, message: dict) -> Stored:
        """The stored message, whether this send created it, and a new group message's recipients.

        Raises the `ParleyError` that refused this message, or that made history unreachable.
        """
        return await self._batcher.submit(message)

    async def _store(self, messages: list[dict]) -> list[Stored | ParleyError]:
        self._batch_size.observe(len(messages))
        try:
            answer = await self._history.call(
                "POST",
                ROUTE,
                json={"messages": messages},
                # With a clientId a repeated call stores nothing twice, so it is safe to retry.
                idempotent=all(message.get("clientId") is not None for message in messages),
                route=ROUTE,
            )
        except ParleyError as exc:
            return [ParleyError(exc.message, code=exc.code, status=exc.status) for _ in messages]
        except Exception:
            log.exception("storing a batch of %d message(s) failed", len(messages))
            return [ServiceUnavailable("The history service failed") for _ in messages]
        return [
            ParleyError(result["error"]["message"], code=result["error"]["code"], status=result["status"])
            if "error" in result
            else Stored(result["message"], result["created"], result.get("recipients"))
            for result in answer["results"]
        ]

    async def close(self) -> None:
        await self._batcher.close()
