"""The garbage collector's pauses, measured, and made rarer.

CPython's cyclic collector stops the event loop while it runs: a young collection is quick, a
full one walks every tracked object (a gateway holding thousands of sockets has millions), and
every frame and message waits meanwhile. `GcPauses` puts each pause in a histogram
(`parley_<service>_gc_pause_seconds{generation}`), so a tail can be told apart from one.

`settle_heap` runs once a service has started: what exists then (modules, the app, pools,
compiled models) lives as long as the process, so `gc.freeze()` moves it out of the collector's
walks for good, and the thresholds are raised (`THRESHOLDS`): a young collection every 20,000
allocations rather than 700, and older ones rarer, so a burst of short-lived dicts costs a few
collections and a node holding many sockets seldom walks them all. Cyclic garbage waits longer
to be freed: at most 20,000 objects' worth. Measured (2026-12-02, load average 2 to 4):
- a connect storm of 5,000 sockets a node (`python -m bench.presence_bench --sockets 10000`):
  930 young and 7 full collections (0.25 s each: 2.2 s of the node's CPU) with CPython's
  (700, 10, 10), 30 young and no full one (0.5 s) so; 1.16 -> 0.82 CPU-ms a connect, 9.6 ->
  7.1 s until presence agrees;
- messages (`python -m bench.delivery_bench --rates 3000,4000`): the gateways' collector held
  them 3.4 and 6.3 % of the time with a young threshold of 700, 0.16 and 0.57 % with 10,000.
"""

import gc
import time

from prometheus_client import CollectorRegistry, Histogram

# Objects allocated (net of those freed) before a young collection (CPython's default: 700), and
# collections of each generation before the next one up is collected (default: 10 and 10).
THRESHOLDS = (20_000, 20, 20)
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """Observes every collection's duration, by generation, from `gc.callbacks`."""

    def __init__(self, service: str, registry: CollectorRegistry):
        self.pauses = Histogram(
            f"parley_{service}_gc_pause_seconds",
            "Time the cyclic garbage collector held the process, by generation collected.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self._by_generation = [self.pauses.labels(str(generation)) for generation in range(3)]
        self._started = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)

    def close(self) -> None:
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)


def settle_heap() -> None:
    """Once started: what exists now stays out of every later collection, and collections wait
    for `THRESHOLDS`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
