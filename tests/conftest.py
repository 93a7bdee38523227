"""Session-wide fixtures: real Postgres and Redis (a database and key prefix of the run's own)."""

import uuid

import pytest

from services.devtools.stores import drop_database, ensure_database, find_stores, with_database
from tests.support import TEST_RUN_DIR, TestStores, migrate


@pytest.fixture(scope="session")
def stores() -> TestStores:
    found = find_stores(TEST_RUN_DIR)
    admin_url = with_database(found.database_url, "postgres")
    run_id = uuid.uuid4().hex[:8]
    database = f"parley_test_{run_id}"
    url = ensure_database(admin_url, database)

    migrate(url)
    try:
        yield TestStores(database_url=url, redis_url=found.redis_url, redis_prefix=f"parley-test-{run_id}")
    finally:
        drop_database(admin_url, database)
        found.stop()


def pytest_terminal_summary(terminalreporter):
    """The fault tests' count: faults injected, messages acknowledged, stored, received, lost."""
    from tests.e2e.faults import RECORDED

    if not RECORDED:
        return
    terminalreporter.section("faults injected")
    terminalreporter.write_line(f"{'fault':<32} {'acknowledged':>12} {'stored':>8} {'received':>9} {'lost':>5}")
    for fault, tally in RECORDED:
        terminalreporter.write_line(
            f"{fault:<32} {tally.acknowledged:>12} {tally.stored:>8} {tally.received:>9} {tally.lost:>5}"
        )
