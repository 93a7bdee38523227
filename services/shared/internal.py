"""The internal HTTP client: how one service calls another's `/internal/*` routes.

One keep-alive connection pool per target, one timeout, one retry policy: only calls that are
safe to repeat are retried, and a call that gives up says so in the log and to the caller.
"""

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson

from prometheus_client import CollectorRegistry, Counter, Histogram

from . import fast_json
from .errors import ErrorCode, ParleyError, ServiceUnavailable
from .logs import request_id_var

log = logging.getLogger(__name__)

INTERNAL_TOKEN_HEADER = "X-Internal-Token"
REQUEST_ID_HEADER = "X-Request-Id"
RETRY_DELAYS = (0.05, 0.25)


class InternalCallMetrics:
    """Latency and failures of the internal calls one service makes, by target and route."""

    def __init__(self, caller: str, registry: CollectorRegistry):
        self.latency = Histogram(
            f"parley_{caller}_internal_call_duration_seconds",
            "Time of an internal HTTP call, by target service and route.",
            ["target", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.errors = Counter(
            f"parley_{caller}_internal_call_errors_total",
            "Internal HTTP calls that failed, by target, route and kind (unavailable or refused).",
            ["target", "route", "kind"],
            registry=registry,
        )


class InternalClient:
    def __init__(
        self,
        service: str,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        pool_size: int = 100,
        metrics: InternalCallMetrics | None = None,
    ):
        self.service = service
        self._metrics = metrics
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers(self) -> dict[str, str]:
        headers = {INTERNAL_TOKEN_HEADER: self._token}
        if (request_id := request_id_var.get()) is not None:
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        idempotent: bool = False,
        route: str | None = None,
    ) -> Any:
        """The decoded JSON answer; a `ParleyError` carrying the callee's code when it refused.

        `route` labels the metrics: the path template, so ids never become label values.
        """
        started = time.perf_counter()
        try:
            return await self._call_with_retries(method, path, json, params, idempotent)
        except ParleyError as exc:
            self._count_error(route or path, "unavailable" if exc.status >= 500 else "refused")
            raise
        finally:
            if self._metrics is not None:
                self._metrics.latency.labels(self.service, route or path).observe(time.perf_counter() - started)

    def _count_error(self, route: str, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.errors.labels(self.service, route, kind).inc()

    async def _call_with_retries(self, method: str, path: str, json: Any, params: dict | None, idempotent: bool) -> Any:
        attempts = 1 + (len(RETRY_DELAYS) if idempotent else 0)
        for attempt in range(attempts):
            try:
                return await self._call_once(method, path, json, params)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                if attempt + 1 < attempts:
                    await asyncio.sleep(RETRY_DELAYS[attempt])
                    continue
                log.warning("%s %s%s failed after %d attempt(s): %r", method, self.service, path, attempts, exc)
                raise ServiceUnavailable(f"The {self.service} service is unavailable") from None
        raise AssertionError("unreachable")

    async def _call_once(self, method: str, path: str, json: Any, params: dict | None) -> Any:
        headers = self.headers()
        data = None
        if json is not None:
            data = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.base_url + path, data=data, params=params, headers=headers
        ) as response:
            body = await response.read()
            if response.status < 400:
                return fast_json.loads(body) if body else None
            raise _error_from(response.status, body, self.service)


def _error_from(status: int, body: bytes, service: str) -> ParleyError:
    try:
        decoded = fast_json.loads(body)
        message, code = decoded["message"], decoded["code"]
    except (ValueError, KeyError, TypeError):  # ValueError: not JSON, or not UTF-8
        message, code = f"The {service} service failed", ErrorCode.SERVICE_UNAVAILABLE
    if status >= 500 and code == ErrorCode.INTERNAL:
        code = ErrorCode.SERVICE_UNAVAILABLE
        status = 503
    return ParleyError(message, code=code, status=status)
