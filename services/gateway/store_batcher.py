"""Group commit of sent messages: the sends that arrive while history is busy share one call.

One call to history is under way at a time (`MAX_CALLS_IN_FLIGHT`); the sends arriving
meanwhile leave together in the next, which history stores in one statement and one commit
(see `shared.batching`). A send that finds no call under way leaves at once.

Two calls in flight (a sender's messages kept in order) were tried, now that history's writers
run in parallel: with the collector tuned (gc_pauses.py) they lost, back to back and interleaved
(bench/RESULTS.md, "What we tried and did not keep"): p99 20 to 23 against 14 ms at 1,000 msg/s,
and 0.56 to 0.63 against 0.48 to 0.51 CPU-ms a message at 3,000/s: more, smaller calls cost
Postgres and history a commit and a round trip each.

While sends are queueing (PACE_FROM_WAITING or more waited for the call under way), calls start
at most `min_interval` apart (`STORE_CALL_INTERVAL_SECONDS`, 15 ms by default), so the
interval's sends share one: a call costs the gateway, history and Postgres about the same
whatever it carries (Postgres: about 0.3 ms a statement and 0.03 ms a message). Fewer waiting
leave as soon as the call under way ends (issue 21: adaptive pacing). Back to back on a quiet
machine, against pacing whenever any send waited (bench/RESULTS.md, "Delivery: adaptive
pacing"): median 17.7 -> 11.0 ms at 500 msg/s, 22.3 -> 14.5 ms at 1,000, p99 176 -> 80 ms at
2,000; at 3,000 msg/s both are paced alike (the machine is saturated; p50 108 to 264 ms, run to
run, either way), for 3.1 instead of 2.4 CPU-ms a message at 500 (calls carry 1.5 messages, not 3.5).
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
# Pacing starts when this many sends waited for the call under way: fewer leave at once. A
# statement costs Postgres about 0.3 ms and a message 0.03 ms more (bench/store_bench.py), so
# below about 8 a call is cheap enough to send now; at 8 and more, the sends are queueing and
# gathering them pays (bench/RESULTS.md, "Delivery": adaptive pacing).
PACE_FROM_WAITING = 8


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
            self._store, max_batch=MAX_STORE_BATCH, max_in_flight=MAX_CALLS_IN_FLIGHT, min_interval=min_interval,
            pace_from=PACE_FROM_WAITING,
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
