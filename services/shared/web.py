"""What every service's aiohttp apps have: request ids, HTTP metrics, internal auth, probes, serving.

A service serves two apps on two listeners, so that nothing internal can be reached from the
public side by any spelling of a path: the public app (`PORT`) has only the service's public
routes and `/healthz`; the internal app (`INTERNAL_PORT`) has `/internal/*` (a caller's token
required, each route admitting named callers), `/readyz` and `/metrics`. Both share one state.

Probes: `/healthz` says the process is alive; `/readyz` says whether to send it traffic
(`Readiness`): 503 while it starts (until each dependency has answered once) and while it
drains; a dependency failing after that is reported, not a reason to take the pod out.
"""

import asyncio
import gc
import hmac
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import fast_json
from .errors import ErrorCode, InvalidField, error_response
from .fast_json import json_response
from .gc_pauses import GcPauses, settle_heap
from .internal import INTERNAL_TOKEN_HEADER, REQUEST_ID_HEADER
from .logs import new_request_id, request_id_var
from .settings import ServiceSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]

REGISTRY = web.AppKey("registry", CollectorRegistry)
READINESS = web.AppKey("readiness", "Readiness")
INTERNAL_APP = web.AppKey("internal_app", web.Application)
# Caller name -> the token it presents in X-Internal-Token.
CALLER_TOKENS = web.AppKey("caller_tokens", dict)
HTTP_METRICS = web.AppKey("http_metrics", "HttpMetrics")
# Coroutines run on SIGTERM after readiness goes false and before the listener closes.
DRAIN_HOOKS = web.AppKey("drain_hooks", list)

# The listen queue of the public listener. aiohttp's default, 128, overflowed in a connect storm
# (bench/presence_bench.py, 1,000 connects under way over two nodes: 17,494 SYNs dropped, each
# client then waiting out the kernel's 1, 2, 4, 8 s retransmit backoff). The kernel caps it at
# net.core.somaxconn (4,096 here).
LISTEN_BACKLOG = 4096
# The last line `write_task_stacks` writes: a reader of the log knows the dump is whole.
TASKS_WRITTEN = "--- end of asyncio tasks ---"
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READINESS_TIMEOUT = 2.0
# On every public answer: never sniffed into another type, never cached by a shared cache
# (API answers carry one user's data) unless the handler chose a policy itself.
PUBLIC_HEADERS = {"X-Content-Type-Options": "nosniff"}
DEFAULT_CACHE_CONTROL = "no-store"


class Readiness:
    """Named dependency checks, and the draining flag SIGTERM raises (issue 19).

    A process is not ready until every check has passed once (a gateway subscribed to pub/sub,
    history's migrations applied: what this pod must do before it can serve), nor once it
    drains. After that, a failing dependency (Redis, Postgres, history, storage) is one every
    pod shares: taking them all out of the load balancer at once would turn a degraded service
    into none (no page, no 503 that says why, clients' reconnections refused everywhere). So it
    stays ready, answers `degraded` with the failures, sets `parley_<service>_dependency_up` to
    0 and logs the change; the README says how each outage degrades.
    """

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.checks: dict[str, ReadinessCheck] = {}
        self.draining = False
        self.started = False
        self._down: set[str] = set()
        self._up = Gauge(f"parley_{service}_dependency_up", "1 while a dependency answers its readiness check, else 0.",
                         ["dependency"], registry=registry)

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check
        self._up.labels(name).set(0)

    async def answer(self) -> tuple[int, dict]:
        """/readyz's status and body."""
        if self.draining:
            return 503, {"status": "unavailable", "failures": {"process": "draining"}}
        failures = await self._failures()
        self._record(failures)
        if not self.started:
            if failures:
                return 503, {"status": "starting", "failures": failures}
            self.started = True
        if failures:
            return 200, {"status": "degraded", "failures": failures}
        return 200, {"status": "ready"}

    async def _failures(self) -> dict[str, str]:
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[name](), READINESS_TIMEOUT) for name in names), return_exceptions=True
        )
        return {
            name: (type(result).__name__ + (f": {result}" if str(result) else ""))
            for name, result in zip(names, results)
            if isinstance(result, BaseException)
        }

    def _record(self, failures: dict[str, str]) -> None:
        for name in self.checks:
            self._up.labels(name).set(0 if name in failures else 1)
        for name in failures.keys() - self._down:
            if self.started:
                log.warning("dependency %s is failing (%s): serving degraded", name, failures[name])
        for name in self._down - failures.keys():
            log.info("dependency %s answers again", name)
        self._down = set(failures)


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


def create_base_app(
    service: str, caller_tokens: dict[str, str], middlewares: list, client_max_size: int = 1024**2
) -> web.Application:
    """The public app, with request ids, metrics and `/healthz`; its internal twin is `app[INTERNAL_APP]`.

    `caller_tokens` names the services admitted to the internal API (see `admits`);
    `client_max_size` bounds a public request's body (aiohttp's default: 1 MB).
    """
    registry = CollectorRegistry()
    shared_state = {
        REGISTRY: registry,
        HTTP_METRICS: HttpMetrics(service, registry),
        READINESS: Readiness(service, registry),
        CALLER_TOKENS: dict(caller_tokens),
        DRAIN_HOOKS: [],
    }
    gc_pauses = GcPauses(service, registry)
    app = web.Application(
        middlewares=[request_context_middleware, public_headers_middleware, *middlewares], client_max_size=client_max_size
    )
    internal = web.Application(middlewares=[request_context_middleware, internal_auth_middleware, *middlewares])
    for target in (app, internal):
        for key, value in shared_state.items():
            target[key] = value
        target.router.add_get("/healthz", healthz)
    internal.router.add_get("/readyz", readyz)
    internal.router.add_get("/metrics", metrics)
    # What the public app's cleanup contexts open (pools, stores, clients) exists once it has
    # started, which `_serve` does first: the internal app then takes the same objects.
    internal.on_startup.append(lambda internal_app: share_state(app, internal_app))
    app[INTERNAL_APP] = internal
    app.on_cleanup.append(lambda _: _close(gc_pauses))
    return app


async def _close(gc_pauses: GcPauses) -> None:
    gc_pauses.close()


async def share_state(source: web.Application, target: web.Application) -> None:
    for key in source:
        if key is not INTERNAL_APP and key not in target:
            target[key] = source[key]


def admits(*callers: str):
    """Marks an internal route handler with the callers (services) it admits; others get 403."""

    def mark(handler):
        handler.admitted_callers = frozenset(callers)
        return handler

    return mark


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
async def public_headers_middleware(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(PUBLIC_HEADERS)
    response.headers.setdefault("Cache-Control", DEFAULT_CACHE_CONTROL)
    return response


@web.middleware
async def internal_auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every internal route needs a known caller's token (401), and must admit that caller (403)."""
    if request.path in PROBE_PATHS:
        return await handler(request)
    caller = caller_of(request.headers.get(INTERNAL_TOKEN_HEADER, ""), request.app[CALLER_TOKENS])
    if caller is None:
        return error_response(401, "A valid service token is required", ErrorCode.UNAUTHORIZED)
    admitted = getattr(request.match_info.handler, "admitted_callers", frozenset())
    if caller not in admitted:
        return error_response(403, f"The {caller} service may not call this route", ErrorCode.FORBIDDEN)
    return await handler(request)


def caller_of(given: str, caller_tokens: dict[str, str]) -> str | None:
    """The caller whose token this is; every token is compared, in constant time each."""
    matches = [name for name, token in caller_tokens.items() if hmac.compare_digest(given.encode(), token.encode())]
    return matches[0] if given and matches else None


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    status, body = await request.app[READINESS].answer()
    return json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def run_service(app: web.Application, settings: ServiceSettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain: readiness false at once, in-flight work finishes."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
        asyncio.run(_serve(app, settings))
    else:
        uvloop.run(_serve(app, settings))


def write_task_stacks() -> None:
    """Every asyncio task's chain of awaits to stderr (the log), on SIGUSR2: where a process whose
    loop is idle waits (a start or a shutdown that never ends), which the threads' stacks (SIGUSR1,
    faulthandler) show only as the loop itself, and `Task.print_stack` only as each task's
    outermost coroutine."""
    tasks = asyncio.all_tasks()
    lines = [f"--- {len(tasks)} asyncio task(s) ---"]
    for task in tasks:
        lines.append(f"{task.get_name()}:")
        awaited = task.get_coro()
        while (frame := getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
               or getattr(awaited, "ag_frame", None)) is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = (getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
                       or getattr(awaited, "ag_await", None))
            if type(awaited).__name__ in ("async_generator_asend", "async_generator_athrow"):
                # A step of an async generator (a cleanup context): the generator it steps.
                awaited = next((referent for referent in gc.get_referents(awaited)
                                if hasattr(referent, "ag_frame")), awaited)
        lines.append(f"  awaiting {awaited!r}"[:500])
    lines.append(TASKS_WRITTEN)
    print("\n".join(lines), file=sys.stderr, flush=True)


async def _serve(app: web.Application, settings: ServiceSettings) -> None:
    grace = settings.shutdown_grace_seconds
    # First: a SIGTERM while the app starts (a rollout that changes its mind) then stops it
    # cleanly once started, where Python's default would kill it mid-setup with status -15.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, write_task_stacks)
    public = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace, access_log=None)
    internal = web.AppRunner(app[INTERNAL_APP], handle_signals=False, shutdown_timeout=grace, access_log=None)
    # A start that fails (a port taken, a context that raises) closes what it had opened too:
    # left to asyncio's runner, the loops already started were cancelled without their owners'
    # clean-up, and the process hung there instead of exiting with the error.
    try:
        await public.setup()  # first: its cleanup contexts open what the internal app shares
        await internal.setup()
        await web.TCPSite(internal, settings.internal_host, settings.internal_port, reuse_address=True).start()
        await web.TCPSite(public, settings.host, settings.port, reuse_address=True, backlog=LISTEN_BACKLOG).start()
        log.info("listening on %s:%d, internal on %s:%d", settings.host, settings.port,
                 settings.internal_host, settings.internal_port)
        settle_heap()  # what exists now lives as long as the process: out of the collector's walks
        await stop.wait()
        log.info("stopping: draining for at most %.1f s", grace)
        app[READINESS].draining = True
        # Drain hooks (the gateway's socket drain) run while /readyz still answers 503; then the
        # internal listener closes (its in-flight calls finish), then the public one, whose cleanup
        # contexts close the resources both used, in reverse order.
        for hook in app[DRAIN_HOOKS]:
            await hook()
    finally:
        await internal.cleanup()
        await public.cleanup()
    log.info("stopped")
