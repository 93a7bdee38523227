"""A gateway node: Socket.IO over aiohttp with a Redis manager, and the public API forwarded to history.

The public listener serves the page, `/socket.io/`, `/healthz` and the public API; the internal
one only `/readyz` and `/metrics` (a gateway has no internal routes).
"""

import asyncio

from aiohttp import web

from ..shared import fast_json
from ..shared.auth import TokenVerifier
from ..shared.errors import error_middleware
from ..shared.internal import InternalCallMetrics, InternalClient
from ..shared.redis_client import connect
from ..shared.routed_manager import RoutedRedisManager
from ..shared.web import DRAIN_HOOKS, READINESS, REGISTRY, create_base_app, public_headers_middleware
from .app_keys import CHAT, HISTORY, HISTORY_API, MEDIA_API, METRICS, PRESENCE, REST_LIMITER, SETTINGS, SIO, VERIFIER
from .history_api import HistoryApi
from .ice_servers import ice_servers
from .catchup import CatchUp
from .delivery_log import DeliveryLog, event_packet
from .call_store import CallStore
from .calls import CallHandler
from .chat import ChatHandler
from .metrics import GatewayMetrics
from .ratelimit import RateLimiter
from .media_forward import MediaApi, add_media_routes
from .recovery import Recovery
from .rest import add_forwarded_routes, cors_middleware, presence_of, raw_path_guard
from .server import ParleyServer, WirePacket, harden, origin_check
from .settings import GatewaySettings
from .visibility import Visibility
from .webclient import setup_web_client
from .websocket import FrameWriter


def create_app(settings: GatewaySettings) -> web.Application:
    """The app and its Socket.IO server (attached here: its routes must exist before the app
    freezes); every client opens in a cleanup context, in order, and closes in reverse."""
    app = create_base_app("gateway", {}, [cors_middleware, error_middleware])
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(settings, dev_mode=settings.dev_mode)
    app[REST_LIMITER] = RateLimiter(settings.rest_rate_per_second, settings.rest_burst)
    app[METRICS] = metrics = GatewayMetrics(app[REGISTRY])
    app[SIO] = sio = socketio_server(settings, metrics)
    sio.attach(app)
    harden(app)
    # Every request line but engine.io's (its middleware is outermost and lets only its exact
    # route through) is checked before any route or the CORS and error middlewares see it; the
    # refusal still carries the public headers.
    app.middlewares.insert(app.middlewares.index(public_headers_middleware) + 1, raw_path_guard)
    setup_web_client(app)
    app.router.add_get("/api/presence", presence_of)
    app.router.add_get("/api/calls/ice-servers", ice_servers)
    add_forwarded_routes(app.router)
    add_media_routes(app.router)
    app[DRAIN_HOOKS].append(lambda: drain_sockets(app))
    app.cleanup_ctx.append(internal_clients)
    app.cleanup_ctx.append(history_api)
    app.cleanup_ctx.append(redis_probe)
    app.cleanup_ctx.append(pubsub)
    app.cleanup_ctx.append(chat_handler)
    return app


def socketio_server(settings: GatewaySettings, metrics: GatewayMetrics) -> ParleyServer:
    """The Socket.IO server over the routed Redis manager (which `pubsub` starts and closes)."""
    manager = RoutedRedisManager(
        settings.redis_url, settings.redis_prefix, node_id=settings.node_id, received=metrics.pubsub_received,
        liveness=settings, unreadable=metrics.pubsub_unreadable,
    )
    return ParleyServer(
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


async def internal_clients(app: web.Application):
    """History's and presence's internal APIs, with the gateway's token."""
    settings = app[SETTINGS]
    call_metrics = InternalCallMetrics("gateway", app[REGISTRY])

    def internal_client(service: str, url: str) -> InternalClient:
        return InternalClient(
            service, url, settings.internal_token, timeout=settings.internal_timeout_seconds, metrics=call_metrics
        )

    app[HISTORY] = history = internal_client("history", settings.history_url)
    app[PRESENCE] = presence = internal_client("presence", settings.presence_url)
    app[READINESS].add("history", history_ready(history))
    yield
    await presence.close()
    await history.close()


async def history_api(app: web.Application):
    settings = app[SETTINGS]
    app[HISTORY_API] = forwarder = HistoryApi(settings.history_api_url, settings.internal_timeout_seconds)
    app[MEDIA_API] = media = MediaApi(settings.media_api_url, settings.internal_timeout_seconds)
    yield
    await media.close()
    await forwarder.close()


def history_ready(history: InternalClient):
    async def check() -> None:
        await history.call("GET", "/healthz")

    return check


async def redis_probe(app: web.Application):
    """A client of our own for the readiness ping: the Socket.IO manager's is private to it."""
    probe = connect(app[SETTINGS].redis_url, socket_timeout=2, socket_connect_timeout=2)
    app[READINESS].add("redis", probe.ping)
    yield
    await probe.aclose()


async def pubsub(app: web.Application):
    """Subscribed (and this node's liveness kept) before the first user arrives; not ready until
    Redis has confirmed the subscriptions."""
    manager = app[SIO].manager
    manager.start()
    app[READINESS].add("pubsub", manager.subscribed)
    yield
    await app[SIO].shutdown()
    await manager.close()


async def chat_handler(app: web.Application):
    """The chat events and the node's link to presence (after `internal_clients` and `pubsub`)."""
    settings = app[SETTINGS]
    sio = app[SIO]
    deliveries = DeliveryLog()
    recovery = Recovery(sio, app[HISTORY], settings.internal_token, settings.recovery_window_seconds,
                        settings.recovery_max_events, app[METRICS], deliveries)
    app[CHAT] = chat = ChatHandler(sio, settings, app[VERIFIER], app[HISTORY], app[METRICS],
                                   presence=app[PRESENCE], recovery=recovery)
    # After a pub/sub outage, connected sockets are caught up from history (see `catchup`).
    catch_up = CatchUp(sio, app[HISTORY], deliveries, chat.user_of, settings.recovery_max_events, app[METRICS])
    # Voice and video calls (issue 17): their events beside the chat's, their state in Redis.
    calls = CallHandler(sio, chat, CallStore(settings.redis_url, settings.redis_prefix,
                                             ring_seconds=settings.call_ring_seconds,
                                             lost_after_seconds=settings.call_lost_after_seconds),
                        app[HISTORY], settings, app[METRICS])
    calls.register()

    def disconnected(sid: str) -> None:
        deliveries.forget(sid)
        calls.socket_left(sid)

    chat.on_disconnected = disconnected
    chat.on_connected = calls.socket_arrived
    sio.deliveries = deliveries
    sio.manager.packet_for = event_packet
    sio.manager.on_catch_up = catch_up.request
    # Which sockets' pages are visible (issue 18), for the notification relay: after
    # `chat.on_disconnected` is set, so a socket that leaves is forgotten by both.
    visibility = Visibility(settings.redis_url, settings.redis_prefix, settings.heartbeat_seconds,
                            settings.node_ttl_seconds)
    visibility.register(chat)
    visibility.start()
    chat.presence.start()
    calls.start()
    yield
    await visibility.close()
    sio.manager.on_catch_up = sio.manager.packet_for = None
    await calls.close()
    await catch_up.close()
    await chat.close()
    await chat.presence.stop()


async def drain_sockets(app: web.Application) -> None:
    """Readiness is already false: give the load balancer `DRAIN_DELAY_SECONDS` to see it, then
    close the sockets so their clients reconnect to another node."""
    settings = app[SETTINGS]
    await asyncio.sleep(settings.drain_delay_seconds)
    await app[CHAT].drain(settings.shutdown_grace_seconds)
    await app[CHAT].presence.leave()
