"""services/shared/tasks.py: stopping background tasks that may swallow a cancellation."""

import asyncio
import logging
import sys

from services.shared.tasks import cancel_and_wait
from tests.support import eventually


async def quick() -> int:
    return 1


async def loop_with_a_wait_for(steps: list[str]) -> None:
    """A background loop as redis-py's writes make one: a `wait_for` whose call has just ended."""
    await asyncio.wait_for(quick(), 5)
    steps.append("wait_for returned")
    await asyncio.sleep(3600)


async def started_in_its_wait_for(steps: list[str]) -> asyncio.Task:
    """The loop, cancellable at the moment Python 3.11's `wait_for` swallows a cancellation:
    its call has ended and `wait_for` has not woken up yet."""
    task = asyncio.create_task(loop_with_a_wait_for(steps))
    await asyncio.sleep(0)  # the task enters wait_for, which starts `quick` as a task of its own
    await asyncio.sleep(0)  # `quick` ends: wait_for's wake-up is scheduled, not yet run
    return task


async def test_a_single_cancellation_at_that_moment_is_swallowed_on_python_3_11():
    """Why cancel_and_wait exists: here a cancelled task goes on (CPython gh-86296, fixed in 3.12)."""
    steps: list[str] = []
    task = await started_in_its_wait_for(steps)
    task.cancel()

    async def resumed() -> None:  # by the cancellation, whichever way it took it
        assert task.done() or steps

    await eventually(resumed)
    if sys.version_info < (3, 12):
        assert steps == ["wait_for returned"] and not task.done()  # on, into its next wait
    else:
        assert task.cancelled() and steps == []
    task.cancel()
    await asyncio.wait({task}, timeout=1)


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_first_cancellation():
    steps: list[str] = []
    task = await started_in_its_wait_for(steps)
    assert await cancel_and_wait([task, None], timeout=5) == set()
    assert task.cancelled()


async def test_a_task_that_will_not_end_is_given_up_on_at_the_timeout_and_named(caplog):
    cancellations, released = 0, False

    async def stubborn() -> None:
        nonlocal cancellations
        while not released:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)  # into its loop: a task cancelled before its first step just ends
    with caplog.at_level(logging.WARNING):
        assert await cancel_and_wait([task], timeout=0.6) == {task}
    assert cancellations >= 2  # cancelled again, not once
    assert any("stubborn-loop" in record.getMessage() for record in caplog.records)
    released = True  # the test's own clean-up: the next cancellation ends it
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()


async def test_what_a_task_raised_before_its_stop_is_taken_so_asyncio_does_not_report_it(caplog):
    async def failing() -> None:
        raise RuntimeError("failed on its own")

    task = asyncio.create_task(failing())
    await asyncio.wait({task})
    assert await cancel_and_wait([task]) == set()
    assert task._log_traceback is False  # asyncio's flag: an exception nobody retrieved is logged at GC
