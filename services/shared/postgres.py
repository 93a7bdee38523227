"""What every service that talks to Postgres needs alike: which driver errors mean "the database
is not reachable now" (a 503 and a retry later), as opposed to a bad query (a bug, a 500)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from .errors import StoreUnavailable

log = logging.getLogger(__name__)

UNAVAILABLE_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)
ACQUIRE_TIMEOUT_SECONDS = 5


@contextlib.asynccontextmanager
async def pooled_connection(pool: asyncpg.Pool, store_name: str,
                            also_unavailable: tuple = ()) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the pool; a database out of reach becomes `StoreUnavailable` naming the store."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            yield connection
    except UNAVAILABLE_ERRORS + also_unavailable as exc:
        log.warning("postgres unavailable: %r", exc)
        raise StoreUnavailable(f"The {store_name} is unavailable, try again shortly") from None
