"""The history service's app: owns Postgres, answers the REST queries, emits read receipts."""

import asyncio
import logging

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..shared.auth import TokenVerifier
from ..shared.errors import StoreUnavailable, error_middleware
from ..shared.notify import ClientNotifier
from ..shared.tasks import cancel_and_wait
from ..shared.web import INTERNAL_APP, READINESS, REGISTRY, create_base_app
from .app_keys import GROUP_HANDLER, GROUPS, HANDLER, OPENAPI_JSON, PUSH, RELAY, SETTINGS, STORE, VERIFIER
from .group_handler import GroupHandler
from .group_routes import internal_group_routes, public_group_routes
from .group_store import GroupStore
from .handler import HistoryHandler
from .migrations import apply_migrations
from .read_replica import ReadReplica
from .openapi import OPENAPI_DOCUMENT
from .partitions import keep_partitions_ahead
from .push_relay import PushRelay
from .push_routes import push_routes
from .push_store import PushStore
from .routes import internal_routes, public_routes
from .settings import HistorySettings
from ..shared.postgres import UNAVAILABLE_ERRORS
from .store import MessageStore

log = logging.getLogger(__name__)

MIGRATION_RETRY_SECONDS = (0.5, 1, 2, 5)
PRUNE_BATCH = 5000  # feed events deleted per statement: a short transaction, many per pass


def create_app(settings: HistorySettings) -> web.Application:
    app = create_base_app("history", settings.caller_tokens(), [error_middleware])
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(settings, dev_mode=settings.dev_mode)
    app[OPENAPI_JSON] = OPENAPI_DOCUMENT.read_bytes()
    app.cleanup_ctx.append(postgres)
    app.cleanup_ctx.append(handler)
    app.cleanup_ctx.append(feed_pruner)
    app.cleanup_ctx.append(partition_keeper)
    app.add_routes(public_routes)
    app.add_routes(public_group_routes)
    app.add_routes(push_routes)
    app[INTERNAL_APP].add_routes(internal_routes)
    app[INTERNAL_APP].add_routes(internal_group_routes)
    return app


async def create_pool(settings: HistorySettings, url: str | None = None) -> asyncpg.Pool:
    """The primary's pool, or (`url`) the read replica's, alike."""
    # min_size=0: the pool opens no connection up front, so the service starts (unready)
    # while Postgres is down and recovers by itself when it comes back.
    return await asyncpg.create_pool(
        url or settings.database_url,
        min_size=0,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds,
        max_inactive_connection_lifetime=60,
        # A message is acknowledged only once committed: a server configured with
        # synchronous_commit=off could lose an acknowledged message in a crash.
        # Generic plans: every query here is an index walk whose plan does not depend on the
        # values, and planning each execution afresh cost half the CPU of storing a message
        # alone (0.62 -> 0.29 ms, bench/store_bench.py); reads measured within about 1 ms of before.
        server_settings={"synchronous_commit": "on", "plan_cache_mode": "force_generic_plan"},
        # No session state survives a use here (transaction-scoped locks only, no LISTEN, no
        # SET): asyncpg's default reset would send a statement of four commands on every
        # release. An open transaction is still rolled back. Migrations reset their connection.
        reset=keep_session,
    )


async def keep_session(connection: asyncpg.Connection) -> None:
    return None


async def postgres(app: web.Application):
    settings = app[SETTINGS]
    pool = await create_pool(settings)
    replica_pool = replica = None
    if settings.database_read_url:
        replica_pool = await create_pool(settings, settings.database_read_url)
        reads = Counter("parley_history_reads", "Read routes' queries, by where they ran.", ["source"],
                        registry=app[REGISTRY])
        replica = ReadReplica(pool, replica_pool, settings.read_replica_max_wait_seconds, reads)
    store = MessageStore(pool, replica)
    app[STORE] = store
    app[GROUPS] = GroupStore(store, app[SETTINGS].max_group_members)
    app[READINESS].add("postgres", store.ping)
    watch_pool(pool, app[REGISTRY])
    settings = app[SETTINGS]
    app[PUSH] = PushStore(pool)
    app[RELAY] = relay = PushRelay(pool, settings.redis_url, settings.redis_prefix,
                                   max_jobs=settings.push_stream_max_jobs, batch=settings.push_relay_batch,
                                   poll_seconds=settings.push_relay_poll_seconds)
    Gauge("parley_history_push_jobs_appended", "Notification jobs the relay appended to the stream (since start).",
          registry=app[REGISTRY]).set_function(lambda: relay.jobs_appended)
    migrating = asyncio.create_task(migrate_until_done(pool, store, relay, settings.message_partition_ids))
    relay.start()
    yield
    await cancel_and_wait([migrating])
    await relay.close()
    await store.close()
    if replica is not None:
        await replica.close()
        await asyncio.wait_for(replica_pool.close(), timeout=10)
    await asyncio.wait_for(pool.close(), timeout=10)


def watch_pool(pool: asyncpg.Pool, registry: CollectorRegistry) -> None:
    Gauge(
        "parley_history_db_pool_connections", "Connections the Postgres pool holds open.", registry=registry
    ).set_function(pool.get_size)
    Gauge(
        "parley_history_db_pool_idle_connections", "Open pool connections not in use.", registry=registry
    ).set_function(pool.get_idle_size)


async def migrate_until_done(pool: asyncpg.Pool, store: MessageStore, relay: PushRelay, partition_ids: int) -> None:
    """Migrations, then partitions for the next ids (partitions.py), before the store serves."""
    attempt = 0
    while True:
        try:
            async with pool.acquire(timeout=5) as connection:
                try:
                    await apply_migrations(connection)
                    await relay.add_cursor(connection)
                finally:
                    await connection.reset()  # its session-level lock, whatever happened
            try:
                await keep_partitions_ahead(pool, partition_ids)
            except asyncpg.PostgresError as exc:  # serving matters more: partition_keeper tries again
                log.error("partitions of messages not created ahead at start: %r", exc)
        except UNAVAILABLE_ERRORS as exc:
            delay = MIGRATION_RETRY_SECONDS[min(attempt, len(MIGRATION_RETRY_SECONDS) - 1)]
            log.warning("cannot apply migrations yet (%r), retrying in %s s", exc, delay)
            attempt += 1
            await asyncio.sleep(delay)
            continue
        store.schema_ready = True
        return


async def prune_feed_events(app: web.Application) -> int:
    """One pass: old feed events pruned, a batch at a time, until none is old enough."""
    settings, pruned = app[SETTINGS], 0
    while (batch := await app[STORE].prune_feed_events(settings.feed_events_retention_seconds, PRUNE_BATCH)) > 0:
        pruned += batch
    return pruned


async def feed_pruner(app: web.Application):
    """Prunes the change feed's old events every FEED_PRUNE_INTERVAL_SECONDS (feed_events.py)."""
    pruned_total = Counter("parley_history_feed_events_pruned", "Feed events pruned past their retention.",
                           registry=app[REGISTRY])

    async def prune_forever() -> None:
        while True:
            try:
                if app[STORE].schema_ready and (pruned := await prune_feed_events(app)):
                    pruned_total.inc(pruned)
                    log.info("pruned %d feed events older than %s s", pruned, app[SETTINGS].feed_events_retention_seconds)
            except StoreUnavailable as exc:
                log.warning("feed events not pruned this time: %s", exc)
            await asyncio.sleep(app[SETTINGS].feed_prune_interval_seconds)

    task = asyncio.create_task(prune_forever())
    yield
    await cancel_and_wait([task])


async def partition_keeper(app: web.Application):
    """Creates the partitions of messages ahead of the ids every MESSAGE_PARTITION_CHECK_SECONDS
    (partitions.py): one history process at a time does it, the others skip that pass."""
    settings = app[SETTINGS]
    created_total = Counter("parley_history_message_partitions_created", "Partitions of messages created ahead.",
                            registry=app[REGISTRY])
    # Ids left before the last partition ends, as of this process' last pass (alert well before 0:
    # past it, sends are refused until a partition exists).
    headroom = Gauge("parley_history_message_partition_headroom_ids",
                     "Ids the sequence may still draw before the last partition of messages ends.",
                     registry=app[REGISTRY])

    async def keep_forever() -> None:
        while True:
            try:
                if app[STORE].schema_ready and (done := await app[STORE].keep_partitions_ahead(
                        settings.message_partition_ids)) is not None:
                    created_total.inc(len(done.created))
                    headroom.set(done.headroom)
            except UNAVAILABLE_ERRORS + (asyncpg.PostgresError,) as exc:
                log.warning("partitions of messages not checked this time: %r", exc)
            await asyncio.sleep(settings.message_partition_check_seconds)

    task = asyncio.create_task(keep_forever())
    yield
    await cancel_and_wait([task])


async def handler(app: web.Application):
    """The handler, with the notifier it tells clients through (after `postgres`: it needs the store)."""
    settings = app[SETTINGS]
    notifier = ClientNotifier(settings.redis_url, settings.redis_prefix)
    app[HANDLER] = HistoryHandler(app[STORE], app[GROUPS], notifier, settings.edit_window_seconds)
    app[GROUP_HANDLER] = GroupHandler(app[GROUPS], notifier)
    yield
    await app[HANDLER].close()
    await notifier.close()
