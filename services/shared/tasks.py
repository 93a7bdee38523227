"""Stopping background tasks so that a shutdown ends: every service's loops stop through here.

A cancelled task may go on. On Python 3.11, `asyncio.wait_for` returns the awaited call's result
when the cancellation lands after that call has finished and before `wait_for` has woken up
(CPython gh-86296; 3.12 rebuilt `wait_for` on `asyncio.timeout`). redis-py 8.1 wraps every socket
write in `wait_for` (`Connection.send_packed_command`, whenever a socket timeout is set), and a
new connection makes several (its handshake): a gateway stopped within milliseconds of its start
cancelled its pub/sub and liveness loops mid-connect (3 stops of 21 here); the loops went on, and
`gather` on them waited for ever (a gateway that never exits on SIGTERM).
So a task still running after a cancellation is cancelled again, until it ends or time is up.
"""

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

# How long a cancelled task has to end before it is cancelled again: its own clean-up (closing a
# connection) normally takes a millisecond; a second cancellation would cut a longer one short.
CANCEL_AGAIN_SECONDS = 0.25
DEFAULT_TIMEOUT_SECONDS = 5.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task | None],
                          timeout: float = DEFAULT_TIMEOUT_SECONDS) -> set[asyncio.Task]:
    """Cancels the tasks (None: none) and waits until each has ended, cancelling again any that
    goes on; after `timeout`, returns those still running (logged), so a shutdown still ends."""
    given = {task for task in tasks if task is not None}
    pending = {task for task in given if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(CANCEL_AGAIN_SECONDS, left))
    for task in given - pending:  # what a task raised before it was stopped was its own to log
        if not task.cancelled():
            task.exception()
    if pending:
        log.warning("%d task(s) still running %.1f s after their cancellation: %s", len(pending), timeout,
                    ", ".join(sorted(task.get_name() for task in pending)))
    return pending
