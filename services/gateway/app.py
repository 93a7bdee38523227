"""A gateway node: Socket.IO over aiohttp with a Redis manager, and the public API forwarded to history.

The public listener serves the page, `/socket.io/`, `/healthz` and the public API; the internal
one only `/readyz` and `/metrics` (a gateway has no internal routes).
"""

import asyncio

import redis.asyncio
from aiohttp import web

from ..shared import fast_json
from ..shared.auth import TokenVerifier
from ..shared.errors import error_middleware
from ..shared.internal import InternalCallMetrics, InternalClient
from ..shared.routed_manager import RoutedRedisManager
from ..shared.web import DRAIN_HOOKS, READINESS, REGISTRY, create_base_app, public_headers_middleware
from .app_keys import CHAT, HISTORY, HISTORY_API, PRESENCE, REST_LIMITER, SETTINGS, SIO, VERIFIER
from .history_api import HistoryApi
from .chat import ChatHandler
from .metrics import GatewayMetrics
from .ratelimit import RateLimiter
from .presence_link import PresenceLink
from .rest import add_forwarded_routes, cors_middleware, presence_of, raw_path_guard
from .server import ParleyServer, WirePacket, harden, origin_check
from .settings import GatewaySettings
from .webclient import setup_web_client
from .websocket import FrameWriter


def create_app(settings: GatewaySettings) -> web.Application:
    app = create_base_app("gateway", {}, [cors_middleware, error_middleware])
    app[SETTINGS] = settings
    app[VERIFIER] = verifier = TokenVerifier(settings, dev_mode=settings.dev_mode)
    call_metrics = InternalCallMetrics("gateway", app[REGISTRY])

    def internal_client(service: str, url: str) -> InternalClient:
        return InternalClient(
            service, url, settings.internal_token, timeout=settings.internal_timeout_seconds, metrics=call_metrics
        )

    app[HISTORY] = history = internal_client("history", settings.history_url)
    app[REST_LIMITER] = RateLimiter(settings.rest_rate_per_second, settings.rest_burst)

    metrics = GatewayMetrics(app[REGISTRY])
    manager = RoutedRedisManager(
        settings.redis_url, settings.redis_prefix, node_id=settings.node_id, received=metrics.pubsub_received
    )
    sio = ParleyServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=origin_check(settings.cors_origin_list),
        cors_credentials=True,
        max_http_buffer_size=settings.max_payload_bytes,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        serializer=WirePacket,
        frame_writer=FrameWriter(settings.slow_client_buffer_bytes, metrics.slow_clients.inc),
        connect_timeout=settings.connect_timeout_seconds,
        json=fast_json,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    harden(app)
    # Every request line but engine.io's (its middleware is outermost and lets only its exact
    # route through) is checked before any route or the CORS and error middlewares see it; the
    # refusal still carries the public headers.
    app.middlewares.insert(app.middlewares.index(public_headers_middleware) + 1, raw_path_guard)
    app[SIO] = sio
    app[PRESENCE] = presence = internal_client("presence", settings.presence_url)
    chat = ChatHandler(sio, settings, verifier, history, metrics)
    chat.presence = PresenceLink(presence, settings.node_id, settings.heartbeat_seconds, lambda: chat.user_of)
    app[CHAT] = chat
    chat.register()

    setup_web_client(app)
    app.router.add_get("/api/presence", presence_of)
    add_forwarded_routes(app.router)
    app[READINESS].add("history", history_ready(history))
    app[DRAIN_HOOKS].append(lambda: drain_sockets(app))
    app.cleanup_ctx.append(history_api)
    app.cleanup_ctx.append(close_clients)
    return app


async def history_api(app: web.Application):
    settings = app[SETTINGS]
    app[HISTORY_API] = forwarder = HistoryApi(settings.history_api_url, settings.internal_timeout_seconds)
    yield
    await forwarder.close()


def history_ready(history: InternalClient):
    async def check() -> None:
        await history.call("GET", "/healthz")

    return check


async def drain_sockets(app: web.Application) -> None:
    """Readiness is already false: give the load balancer `DRAIN_DELAY_SECONDS` to see it, then
    close the sockets so their clients reconnect to another node."""
    settings = app[SETTINGS]
    await asyncio.sleep(settings.drain_delay_seconds)
    await app[CHAT].drain(settings.shutdown_grace_seconds)
    await app[CHAT].presence.leave()


async def close_clients(app: web.Application):
    # A client of our own for the readiness ping: the Socket.IO manager's is private to it.
    probe = redis.asyncio.Redis.from_url(app[SETTINGS].redis_url, socket_timeout=2, socket_connect_timeout=2)
    app[READINESS].add("redis", probe.ping)
    # Subscribed before the first user arrives; not ready until Redis has confirmed it.
    app[SIO].manager.start()
    app[READINESS].add("pubsub", app[SIO].manager.subscribed)
    app[CHAT].presence.start()
    yield
    await probe.aclose()
    await app[CHAT].close()
    await app[SIO].shutdown()
    await app[SIO].manager.close()
    await app[HISTORY].close()
    await app[PRESENCE].close()
