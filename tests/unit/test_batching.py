"""The coalescing used for group commit, routed publishes and registrations."""

import asyncio

import pytest

from services.shared.batching import Batcher


class Recorder:
    """A flush that takes `delay` seconds and records the batches it was given."""

    def __init__(self, delay: float = 0.01):
        self.delay = delay
        self.batches: list[list[int]] = []
        self.in_flight = self.most_in_flight = 0

    async def flush(self, items: list[int]) -> list:
        self.batches.append(items)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return [ValueError(item) if item < 0 else item * 10 for item in items]


async def test_a_lone_item_leaves_at_once_alone():
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=10)
    assert await batcher.submit(1) == 10
    assert recorder.batches == [[1]]


async def test_items_arriving_while_a_flush_runs_leave_together_in_order():
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=100)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.002)  # the first flush is under way
    results = await asyncio.gather(first, *(batcher.submit(n) for n in range(1, 30)))
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
    recorder = Recorder(delay=0.02)
    batcher = Batcher(recorder.flush, max_batch=10)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.005)
    cancelled = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert await first == 0 and await kept == 20
    await batcher.close()
    assert recorder.batches == [[0], [1, 2]]


async def test_close_flushes_what_was_submitted_without_waiting_even_behind_a_flush():
    recorder = Recorder()
    batcher = Batcher(recorder.flush, max_batch=2)
    futures = [batcher.submit_nowait(n) for n in range(5)]
    await asyncio.sleep(0)  # the first flush starts; the rest queue behind it

    await batcher.close()

    assert [future.result() for future in futures] == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_a_busy_paced_batcher_sends_what_arrives_within_the_interval_in_one_flush():
    recorder = Recorder(delay=0.02)
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.005)  # the first flush is under way: these wait for it, and for the pace
    rest = [asyncio.ensure_future(batcher.submit(n)) for n in range(1, 10)]
    await asyncio.sleep(0.045)  # the first flush is over; the next may not start before 0.3 s
    rest.append(asyncio.ensure_future(batcher.submit(10)))

    assert await asyncio.gather(first, *rest) == [n * 10 for n in range(11)]
    assert recorder.batches == [[0], list(range(1, 11))]
    assert loop.time() - started >= 0.3


async def test_a_paced_batcher_sends_an_item_that_finds_nothing_under_way_at_once():
    recorder = Recorder(delay=0.001)
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(4):  # one after another, as a single client sending in turn
        assert await batcher.submit(n) == n * 10
    assert loop.time() - started < 0.04
    assert recorder.batches == [[0], [1], [2], [3]]


async def test_close_does_not_wait_out_the_interval():
    recorder = Recorder(delay=0.01)
    batcher = Batcher(recorder.flush, max_batch=100, min_interval=10)
    first = batcher.submit_nowait(1)
    await asyncio.sleep(0.001)
    queued = batcher.submit_nowait(2)  # behind the flush under way, and paced

    await asyncio.wait_for(batcher.close(), 1)

    assert first.result() == 10 and queued.result() == 20
