"""The coalescing used for group commit, routed publishes and registrations."""

import asyncio

import pytest

from services.shared.batching import Batcher


class Recorder:
    """A flush that records the batches it was given and when each started (loop time), then
    takes `delay` seconds, or, given a `gate`, waits until the test opens it."""

    def __init__(self, delay: float = 0.01, gate: asyncio.Event | None = None):
        self.delay = delay
        self.gate = gate
        self.batches: list[list[int]] = []
        self.starts: list[float] = []
        self.started = asyncio.Event()  # a flush is under way
        self.in_flight = self.most_in_flight = 0

    async def flush(self, items: list[int]) -> list:
        self.batches.append(items)
        self.starts.append(asyncio.get_running_loop().time())
        self.started.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(self.delay)  # the flush's own work, not synchronisation
        self.in_flight -= 1
        return [ValueError(item) if item < 0 else item * 10 for item in items]


# asyncio may run a timer up to its clock's resolution early; a paced start is checked with this slack.
CLOCK_SLACK = 0.001


async def test_a_lone_item_leaves_at_once_alone():
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=10)
    assert await batcher.submit(1) == 10
    assert recorder.batches == [[1]]


async def test_items_arriving_while_a_flush_runs_leave_together_in_order():
    recorder = Recorder(gate=asyncio.Event())
    batcher = Batcher(recorder.flush, max_batch=100)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.started.wait()
    rest = [batcher.submit_nowait(n) for n in range(1, 30)]
    recorder.gate.set()
    results = await asyncio.gather(first, *rest)
    assert results == [n * 10 for n in range(30)]
    assert recorder.batches == [[0], list(range(1, 30))]


async def test_batches_are_capped_and_flushes_in_flight_limited():
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=4, max_in_flight=2)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(20)))
    assert results == [n * 10 for n in range(20)]
    assert max(len(batch) for batch in recorder.batches) == 4
    assert recorder.most_in_flight == 2
    assert [item for batch in recorder.batches for item in batch] == list(range(20))


async def test_each_item_gets_its_own_outcome():
    batcher = Batcher(Recorder().flush, max_batch=10)
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(-2), batcher.submit(3), return_exceptions=True)
    assert outcomes[0] == 10 and outcomes[2] == 30
    assert isinstance(outcomes[1], ValueError)


async def test_a_failing_flush_fails_its_batch_only():
    calls = []

    async def flush(items):
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("down")
        return items

    batcher = Batcher(flush, max_batch=10)
    with pytest.raises(ConnectionError):
        await batcher.submit("lost")
    assert await batcher.submit("next") == "next"


async def test_a_cancelled_submitter_does_not_disturb_the_others():
    recorder = Recorder(gate=asyncio.Event())
    batcher = Batcher(recorder.flush, max_batch=10)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.started.wait()
    # What a submitter awaits: cancelling the submitter cancels it.
    cancelled, kept = batcher.submit_nowait(1), batcher.submit_nowait(2)
    cancelled.cancel()
    recorder.gate.set()
    assert await first == 0 and await kept == 20
    await batcher.close()
    assert recorder.batches == [[0], [1, 2]]


async def test_close_flushes_what_was_submitted_without_waiting_even_behind_a_flush():
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=2)
    futures = [batcher.submit_nowait(n) for n in range(5)]
    await recorder.started.wait()  # the first flush is under way; the rest queue behind it

    await batcher.close()

    assert [future.result() for future in futures] == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_a_busy_paced_batcher_sends_what_arrives_within_the_interval_in_one_flush():
    recorder = Recorder(gate=asyncio.Event())
    # An interval no test outlives: the queued items leave only when close() sends them.
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=3600)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.started.wait()
    rest = [batcher.submit_nowait(n) for n in range(1, 10)]  # wait for the flush, and for the pace
    recorder.gate.set()
    assert await first == 0
    rest.append(batcher.submit_nowait(10))  # the flush is over, the interval not
    assert recorder.batches == [[0]] and not any(future.done() for future in rest)

    await batcher.close()

    assert [future.result() for future in rest] == [n * 10 for n in range(1, 11)]
    assert recorder.batches == [[0], list(range(1, 11))]


async def test_a_busy_paced_batcher_starts_the_next_flush_an_interval_after_the_last():
    recorder = Recorder(gate=asyncio.Event())
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=0.2)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.started.wait()
    queued = batcher.submit_nowait(1)
    recorder.gate.set()

    assert await asyncio.gather(first, queued) == [0, 10]
    assert recorder.starts[1] - recorder.starts[0] >= 0.2 - CLOCK_SLACK


async def test_a_paced_batcher_sends_an_item_that_finds_nothing_under_way_at_once():
    recorder = Recorder(delay=0)
    # Were a lone item paced, the second submit would wait an hour: the timeout says so.
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=3600)
    for n in range(4):  # one after another, as a single client sending in turn
        assert await asyncio.wait_for(batcher.submit(n), timeout=5) == n * 10
    assert recorder.batches == [[0], [1], [2], [3]]


async def test_close_does_not_wait_out_the_interval():
    recorder = Recorder(delay=0.01)
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=3600)
    first = batcher.submit_nowait(1)
    await recorder.started.wait()
    queued = batcher.submit_nowait(2)  # behind the flush under way, and paced

    await asyncio.wait_for(batcher.close(), 5)

    assert first.result() == 10 and queued.result() == 20


async def test_a_few_items_that_waited_leave_at_once_when_pacing_starts_from_more():
    """Adaptive pacing (issue 21): fewer than `pace_from` items waiting for a flush leave as soon
    as it ends; the interval (an hour) would otherwise hold them until close()."""
    recorder = Recorder(gate=asyncio.Event())
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=3600, pace_from=8)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.started.wait()
    waiting = [batcher.submit_nowait(n) for n in range(1, 8)]  # 7: one short of pacing
    recorder.gate.set()

    assert await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=5) == [n * 10 for n in range(8)]
    assert recorder.batches == [[0], list(range(1, 8))]
    await batcher.close()


async def test_as_many_items_as_pace_from_waiting_are_paced():
    recorder = Recorder(gate=asyncio.Event())
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=3600, pace_from=8)
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.started.wait()
    waiting = [batcher.submit_nowait(n) for n in range(1, 9)]  # 8: the sends are queueing
    recorder.gate.set()
    assert await first == 0
    # The flush is over and its answer delivered: a later one (a ninth waiting) proves the loop
    # got past the point where an unpaced flush would have started.
    waiting.append(batcher.submit_nowait(9))
    assert recorder.batches == [[0]] and not any(future.done() for future in waiting)

    await batcher.close()

    assert recorder.batches == [[0], list(range(1, 10))]

