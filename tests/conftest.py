"""Session-wide fixtures: real Postgres and Redis (a database and key prefix of the run's own)."""

import uuid

import pytest
import redis

from services.devtools.stores import drop_database, ensure_database, find_stores, with_database
from tests import tally
from tests.support import TEST_RUN_DIR, TestStores, migrate


@pytest.fixture(scope="session")
def stores() -> TestStores:
    found = find_stores(TEST_RUN_DIR)
    admin_url = with_database(found.database_url, "postgres")
    run_id = uuid.uuid4().hex[:8]
    database = f"parley_test_{run_id}"
    url = ensure_database(admin_url, database)

    migrate(url)
    prefix = f"parley-test-{run_id}"
    try:
        yield TestStores(database_url=url, redis_url=found.redis_url, redis_prefix=prefix)
    finally:
        drop_database(admin_url, database)
        drop_redis_keys(found.redis_url, prefix)
        found.stop()


def drop_redis_keys(redis_url: str, prefix: str) -> None:
    """Every key this run wrote: each cluster's prefix starts with the run's own."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        for batch in batched(client.scan_iter(match=f"{prefix}*", count=1000), 500):
            client.delete(*batch)
    finally:
        client.close()


def batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pytest_configure(config):
    config.addinivalue_line("markers", "tally(kind, what, per_example=False): count this test in the "
                                       "bad-input or attack table printed after the run")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    marker = item.get_closest_marker("tally")
    if marker is not None and report.when == "call":
        tally.record(*marker.args, passed=report.passed, per_example=marker.kwargs.get("per_example", False))


def pytest_terminal_summary(terminalreporter):
    """Faults injected (acknowledged, stored, received, lost, delivered without sync); bad inputs and attacks tried."""
    from tests.e2e.faults import RECORDED

    for kind, header in ((tally.BAD_INPUT, "5xx or crash"), (tally.ATTACK, "let through")):
        if lines := tally.table_lines(kind, header):
            terminalreporter.section(f"{kind}s")
            for line in lines:
                terminalreporter.write_line(line)
    if tally.PUSH_FAULTS:
        terminalreporter.section("notification faults")
        terminalreporter.write_line(f"{'fault':<44} {'jobs appended':>13} {'pushed':>7} {'lost':>5} {'duplicates':>10}")
        for fault, appended, pushed, lost, duplicates in tally.PUSH_FAULTS:
            terminalreporter.write_line(f"{fault:<44} {appended:>13} {pushed:>7} {lost:>5} {duplicates:>10}")
    if not RECORDED:
        return
    terminalreporter.section("faults injected")
    terminalreporter.write_line(f"{'fault':<36} {'acknowledged':>12} {'stored':>8} {'received':>9} {'lost':>5} "
                                f"{'delivered without sync':>23}")
    for fault, counts in RECORDED:
        without_sync = "-" if counts.without_sync is None else counts.without_sync
        terminalreporter.write_line(f"{fault:<36} {counts.acknowledged:>12} {counts.stored:>8} {counts.received:>9} "
                                    f"{counts.lost:>5} {without_sync:>23}")
