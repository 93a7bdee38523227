"""The notifier (issue 18): sends Web Push notifications to people who are not looking.

It takes notification jobs from the Redis stream history's relay appends to (one per message and
recipient with no visible socket), in a consumer group, so any number of notifiers share the
work; collapses, encrypts, signs and pushes (consumer.py, push.py), and acknowledges each job
once the push service answered. Pushing to browser vendors is slow, remote work: it runs
here, never on a gateway's or history's event loop. No service calls it: both listeners serve
probes only, and its metrics are on the internal one.
"""

import asyncio
import logging

import asyncpg
from aiohttp import web

from ..shared.errors import error_middleware
from ..shared.push import generate_vapid_keys
from ..shared.web import READINESS, REGISTRY, create_base_app
from .app_keys import CONSUMER, SETTINGS
from .consumer import Consumer
from .metrics import NotifierMetrics
from .push import PushSender
from .settings import NotifierSettings
from .store import SubscriptionStore

log = logging.getLogger(__name__)


def create_app(settings: NotifierSettings) -> web.Application:
    app = create_base_app("notifier", {}, [error_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(resources)
    return app


def private_key_of(settings: NotifierSettings) -> str:
    """The VAPID private key; in DEV_MODE without one, a key of this process's own (browsers
    subscribed with another public key will not accept its pushes: `parley dev` gives both)."""
    if settings.vapid_private_key:
        return settings.vapid_private_key
    log.warning("no VAPID_PRIVATE_KEY: signing with a key generated for this run (DEV_MODE)")
    return generate_vapid_keys()[0]


async def resources(app: web.Application):
    settings = app[SETTINGS]
    pool = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=settings.db_pool_max_size,
                                     command_timeout=settings.db_command_timeout_seconds)
    store = SubscriptionStore(pool)
    sender = PushSender(private_key_of(settings), settings.vapid_subject, settings.push_ttl_seconds,
                        settings.push_timeout_seconds)
    app[CONSUMER] = consumer = Consumer(settings, store, sender, NotifierMetrics(app[REGISTRY]))
    app[READINESS].add("postgres", store.ping)
    app[READINESS].add("redis", consumer.ping)
    consumer.start()
    yield
    # In-flight pushes finish within most of the grace period; the rest stays pending for others.
    await consumer.close(settings.shutdown_grace_seconds * 0.5)
    await sender.close()
    await asyncio.wait_for(pool.close(), timeout=max(1.0, settings.shutdown_grace_seconds * 0.2))
