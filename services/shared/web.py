"""What every service's aiohttp app has: request ids, HTTP metrics, internal auth, probes, serving.

Probes: `/healthz` says the process is alive; `/readyz` pings each dependency with a short
timeout and answers 503 with the reason when one fails, or when the process is draining.
"""

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from . import fast_json
from .errors import ErrorCode, InvalidField, error_response
from .fast_json import json_response
from .internal import INTERNAL_TOKEN_HEADER, REQUEST_ID_HEADER
from .logs import new_request_id, request_id_var

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]

REGISTRY = web.AppKey("registry", CollectorRegistry)
READINESS = web.AppKey("readiness", "Readiness")
INTERNAL_TOKEN = web.AppKey("internal_token", str)
HTTP_METRICS = web.AppKey("http_metrics", "HttpMetrics")
# Coroutines run on SIGTERM after readiness goes false and before the listener closes.
DRAIN_HOOKS = web.AppKey("drain_hooks", list)

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READINESS_TIMEOUT = 2.0


class Readiness:
    """Named dependency checks, and the draining flag SIGTERM raises."""

    def __init__(self) -> None:
        self.checks: dict[str, ReadinessCheck] = {}
        self.draining = False

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def failures(self) -> dict[str, str]:
        if self.draining:
            return {"process": "draining"}
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[name](), READINESS_TIMEOUT) for name in names), return_exceptions=True
        )
        return {
            name: (type(result).__name__ + (f": {result}" if str(result) else ""))
            for name, result in zip(names, results)
            if isinstance(result, BaseException)
        }


class HttpMetrics:
    def __init__(self, service: str, registry: CollectorRegistry):
        self.requests = Counter(
            f"parley_{service}_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"parley_{service}_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            registry=registry,
        )


async def json_body(request: web.Request) -> object:
    """The request's JSON body, or a 400 naming `body` (bad JSON, or not UTF-8)."""
    try:
        return await request.json(loads=fast_json.loads)
    except ValueError:
        raise InvalidField("body", "must be valid JSON") from None


def create_base_app(service: str, internal_token: str, middlewares: list) -> web.Application:
    """An app with request ids, metrics, internal-token checks, probes and the given middlewares."""
    app = web.Application(middlewares=[request_context_middleware, internal_auth_middleware, *middlewares])
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[HTTP_METRICS] = HttpMetrics(service, registry)
    app[READINESS] = Readiness()
    app[INTERNAL_TOKEN] = internal_token
    app[DRAIN_HOOKS] = []
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@web.middleware
async def request_context_middleware(request: web.Request, handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
    request_id_var.set(request_id[:64])
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if request.path not in PROBE_PATHS:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            http_metrics = request.app[HTTP_METRICS]
            http_metrics.requests.labels(route, request.method, str(status)).inc()
            http_metrics.latency.labels(route).observe(time.perf_counter() - started)


@web.middleware
async def internal_auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    if request.path.startswith("/internal/"):
        given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), request.app[INTERNAL_TOKEN].encode()):
            return error_response(401, "A valid service token is required", ErrorCode.UNAUTHORIZED)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    failures = await request.app[READINESS].failures()
    if failures:
        return json_response({"status": "unavailable", "failures": failures}, status=503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def run_service(app: web.Application, host: str, port: int, grace_seconds: float) -> None:
    """Serve until SIGTERM or SIGINT, then drain: readiness false at once, in-flight work finishes."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
        asyncio.run(_serve(app, host, port, grace_seconds))
    else:
        uvloop.run(_serve(app, host, port, grace_seconds))


async def _serve(app: web.Application, host: str, port: int, grace_seconds: float) -> None:
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace_seconds, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: draining for at most %.1f s", grace_seconds)
    app[READINESS].draining = True
    # Drain hooks (the gateway's socket drain) run while /readyz still answers 503; then the
    # listener closes, in-flight requests get up to `grace_seconds`, and every cleanup context
    # closes its resources in reverse order.
    for hook in app[DRAIN_HOOKS]:
        await hook()
    await runner.cleanup()
    log.info("stopped")
