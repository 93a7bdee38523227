"""The collector's pauses are measured by generation, and the heap settled after start."""

import gc

from prometheus_client import CollectorRegistry

from services.shared.gc_pauses import THRESHOLDS, GcPauses, settle_heap


def pauses_of(registry: CollectorRegistry, generation: str) -> float:
    return registry.get_sample_value("parley_test_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_each_collection_is_observed_under_its_generation_until_closed():
    registry = CollectorRegistry()
    pauses = GcPauses("test", registry)
    try:
        gc.collect(0)
        gc.collect(2)
        assert pauses_of(registry, "0") >= 1 and pauses_of(registry, "2") >= 1
    finally:
        pauses.close()
    seen = pauses_of(registry, "2")
    gc.collect(2)
    assert pauses_of(registry, "2") == seen


def test_settling_freezes_what_exists_and_raises_the_thresholds():
    threshold = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
