"""The presence service: owns who is online, in Redis, with node heartbeats and TTLs."""

import asyncio
import logging

from aiohttp import web

from ..shared.errors import ParleyError, error_middleware
from ..shared.internal import InternalCallMetrics, InternalClient
from ..shared.notify import ClientNotifier
from ..shared.redis_client import connect, key_prefix
from ..shared.tasks import cancel_and_wait
from ..shared.web import INTERNAL_APP, READINESS, REGISTRY, create_base_app
from .announcer import PresenceAnnouncer
from .app_keys import HANDLER, SETTINGS
from .handler import PresenceHandler
from .routes import routes
from .settings import PresenceSettings
from .store import PresenceStore

log = logging.getLogger(__name__)


def create_app(settings: PresenceSettings) -> web.Application:
    app = create_base_app("presence", settings.caller_tokens(), [error_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(stores_and_clients)
    app.cleanup_ctx.append(sweeper)
    # Presence has no public API: its public listener answers `/healthz` only.
    app[INTERNAL_APP].add_routes(routes)
    return app


async def stores_and_clients(app: web.Application):
    settings = app[SETTINGS]
    client = connect(
        settings.redis_url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2, retry_on_timeout=True
    )
    store = PresenceStore(client, key_prefix(settings.redis_url, settings.redis_prefix))
    history = InternalClient(
        "history",
        settings.history_url,
        settings.internal_token,
        timeout=settings.internal_timeout_seconds,
        metrics=InternalCallMetrics("presence", app[REGISTRY]),
    )
    notifier = ClientNotifier(settings.redis_url, settings.redis_prefix)
    app[HANDLER] = PresenceHandler(store, PresenceAnnouncer(history, notifier))
    app[READINESS].add("redis", store.ping)
    yield
    await notifier.close()
    await history.close()
    await client.aclose()


async def sweeper(app: web.Application):
    """Every heartbeat interval, forgets the sockets of nodes whose liveness key has lapsed.

    Any number of presence replicas may sweep: the sweep of a node is atomic and happens once.
    """

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].heartbeat_seconds)
            try:
                await app[HANDLER].sweep()
            except ParleyError as exc:
                log.warning("sweep skipped: %s", exc.message)

    task = asyncio.create_task(sweep_forever())
    yield
    await cancel_and_wait([task])
