"""Test helpers: the stores and cluster a test run uses, users, and recording Socket.IO clients."""

import asyncio
import contextlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import socketio

from services.devtools.stack import Stack
from services.history.migrations import apply_migrations
from services.devtools.stores import PrivateRedis, free_port
from services.shared.auth import issue_token
from services.shared.push import generate_vapid_keys
from services.shared.settings import JwtSettings

PROJECT_DIR = Path(__file__).resolve().parents[1]
TEST_RUN_DIR = PROJECT_DIR / ".run" / "test"
# Each service's own token, as production has them (32 bytes or more; DEV_MODE stays off).
GATEWAY_TOKEN = "test-gateway-internal-token-0123456789abcdef"
PRESENCE_TOKEN = "test-presence-internal-token-0123456789abcdef"
ADMIN_TOKEN = "test-admin-internal-token-0123456789abcdef"
URL_SIGNING_SECRET = "test-media-url-signing-secret-0123456789abcdef"
JWT = JwtSettings(jwt_secret="test-jwt-secret-long-enough-for-hs256-0123456789")


@dataclass
class TestStores:
    __test__ = False  # a fixture value, not a test class

    database_url: str
    redis_url: str
    redis_prefix: str


def migrate(database_url: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()

    asyncio.run(run())


@dataclass
class User:
    id: str
    user_name: str
    token: str

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def service_env(stores: TestStores, **overrides: str) -> dict[str, str]:
    """The environment every service of a test cluster shares (a service reads what it needs)."""
    env = {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "REDIS_PREFIX": stores.redis_prefix,
        "JWT_SECRET": JWT.jwt_secret,
        "INTERNAL_TOKEN": GATEWAY_TOKEN,  # a gateway's own; presence is given its own below
        "GATEWAY_INTERNAL_TOKEN": GATEWAY_TOKEN,
        "PRESENCE_INTERNAL_TOKEN": PRESENCE_TOKEN,
        "ADMIN_INTERNAL_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "INFO",
        "TYPING_TIMEOUT_SECONDS": "1",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "CORS_ORIGINS": "http://allowed.example",
        # Generous limits for the shared cluster; rate-limit tests start a node of their own.
        "SEND_BURST": "500",
        "SEND_RATE_PER_SECOND": "500",
        "REST_BURST": "500",
        "REST_RATE_PER_SECOND": "500",
        "PRESENCE_BURST": "500",
        "PRESENCE_RATE_PER_SECOND": "500",
        "READ_BURST": "500",
        "READ_RATE_PER_SECOND": "500",
    }
    env.update(overrides)
    return env


@dataclass
class Cluster:
    """History, presence and gateway nodes `a` and `b` as real processes.

    Named as the services name them: `history_url` is history's internal listener (HISTORY_URL),
    `history_api_url` its public one (HISTORY_API_URL).
    """

    stack: Stack

    @property
    def history_url(self) -> str:
        return self.stack["history"].internal_url

    @property
    def history_api_url(self) -> str:
        return self.stack["history"].url

    @property
    def media_url(self) -> str:
        return self.stack["media"].url

    @property
    def presence_url(self) -> str:
        return self.stack["presence"].internal_url

    @property
    def vapid_public_key(self) -> str:
        return self.stack.env["VAPID_PUBLIC_KEY"]

    def gateway_url(self, node: str) -> str:
        return self.stack[f"gateway-{node}"].url

    def gateway_internal_url(self, node: str) -> str:
        return self.stack[f"gateway-{node}"].internal_url


def assert_no_errors_logged(cluster: "Cluster") -> None:
    """Whatever a module's tests threw at its cluster, no service logged an error (an unhandled
    exception, a bug): checked when the cluster stops."""
    for process in cluster.stack.processes.values():
        errors = [line for line in process.log_text().splitlines() if '"level": "error"' in line]
        assert not errors, f"{process.name} logged errors: {errors[:3]}"


@contextlib.contextmanager
def running_cluster(stores: TestStores, log_dir: Path, nodes: tuple[str, ...] = ("a", "b"),
                    ready_timeout: float = 30, **overrides: str) -> Iterator[Cluster]:
    """History, presence and a gateway per node, for a fixture's lifetime: stopped afterwards."""
    history_port, presence_port, media_port = free_port(), free_port(), free_port()
    history_internal_port, presence_internal_port = free_port(), free_port()
    # Short heartbeats and TTLs, so a dead node is noticed within about two seconds.
    timing = {"HEARTBEAT_SECONDS": "0.5", "NODE_TTL_SECONDS": "2"}
    # A Redis prefix of the cluster's own: clusters of one run reuse node names (gateway-a),
    # which must not meet in presence or on the pub/sub channels.
    prefix = f"{stores.redis_prefix}-{uuid.uuid4().hex[:6]}"
    # The cluster's own VAPID pair; push endpoints may be the tests' receiver on 127.0.0.1.
    vapid_private, vapid_public = generate_vapid_keys()
    env = service_env(
        stores,
        HISTORY_URL=f"http://127.0.0.1:{history_internal_port}",
        HISTORY_API_URL=f"http://127.0.0.1:{history_port}",
        PRESENCE_URL=f"http://127.0.0.1:{presence_internal_port}",
        MEDIA_API_URL=f"http://127.0.0.1:{media_port}",
        URL_SIGNING_SECRET=URL_SIGNING_SECRET,
        REDIS_PREFIX=prefix,
        VAPID_PRIVATE_KEY=vapid_private,
        VAPID_PUBLIC_KEY=vapid_public,
        PUSH_ALLOW_LOOPBACK_ENDPOINTS="true",
        # A directory of the cluster's own, unless a test names another storage (s3://).
        **{"STORAGE_URL": f"file://{log_dir / ('media-' + uuid.uuid4().hex[:6])}", **timing, **overrides},
    )
    stack = Stack(env, log_dir)
    stack.add("history", "history", history_port, history_internal_port)
    stack.add("presence", "presence", presence_port, presence_internal_port, {"INTERNAL_TOKEN": PRESENCE_TOKEN})
    stack.add("media", "media", media_port, free_port())
    stack.add("notifier", "notifier", free_port(), free_port())
    for node in nodes:
        stack.add("gateway", f"gateway-{node}", free_port(), free_port())
    try:
        stack.start(ready_timeout)
        wait_presence_in_sync(stack, [f"gateway-{node}" for node in nodes], 10)
        yield Cluster(stack)
    finally:
        stack.stop()


def wait_presence_in_sync(stack: Stack, gateways: list[str], timeout: float) -> None:
    """Until presence holds each gateway's sockets (`parley_gateway_presence_in_sync`): a node is
    ready before its first resync (chat does not wait for presence), and a socket that comes and
    goes before that resync is, rightly, never announced: a test expecting its announcements
    starts after it. A node whose link has not synced by `timeout` is left to its next resync
    (one full-suite run saw a node miss 30 s; the cause is not known yet): a start barrier, not a
    check, so the tests go on."""
    deadline = time.monotonic() + timeout
    for name in gateways:
        while time.monotonic() < deadline:
            with urllib.request.urlopen(stack[name].internal_url + "/metrics", timeout=2) as answer:
                if "parley_gateway_presence_in_sync 1.0" in answer.read().decode():
                    break
            time.sleep(0.05)  # polling a metric: nothing to wait on from outside the process


async def create_user(history_url: str, name: str | None = None, user_id: str | None = None) -> User:
    """A profile stored through history's internal API (`history_url`: its internal listener),
    as the social app's profile sync would, and a token for it."""
    user_id = user_id or uuid.uuid4().hex[:24]
    user_name = name or f"user-{user_id[:10]}"
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{history_url}/internal/users/{user_id}",
            json={"userName": user_name, "name": user_name.title()},
            headers={"X-Internal-Token": ADMIN_TOKEN},
        ) as answer:
            assert answer.status == 200, await answer.text()
    return User(user_id, user_name, issue_token(user_id, JWT))


@dataclass
class ChatClient:
    """A python-socketio client that records every event it receives."""

    url: str
    token: str | None
    events: list[tuple[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self._changed = asyncio.Event()
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._record_connect_error)

    async def _record(self, event: str, *args: object) -> None:
        self.events.append((event, args[0] if args else None))
        self._changed.set()

    async def _record_connect_error(self, data: object = None) -> None:
        await self._record("connect_error", data)

    async def connect(self, transports: tuple[str, ...] = ("websocket",), **kwargs) -> "ChatClient":
        auth = {"token": self.token} if self.token is not None else None
        await self.sio.connect(self.url, auth=auth, transports=list(transports), wait_timeout=5, **kwargs)
        return self

    async def wait_for(self, event: str, predicate=lambda data: True, timeout: float = 5.0) -> object:
        """The first recorded `event` whose data satisfies `predicate`, waiting up to `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for name, data in self.events:
                if name == event and predicate(data):
                    return data
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout} s; got {[name for name, _ in self.events]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def received(self, event: str) -> list[object]:
        return [data for name, data in self.events if name == event]

    async def call(self, event: str, payload: object = None, timeout: float = 5.0) -> dict:
        return await self.sio.call(event, payload, timeout=timeout)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.eio.disconnect(abort=True)
        await asyncio.sleep(0)


@contextlib.contextmanager
def private_redis_server(data_dir: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own (its port, its data dir), stopped afterwards."""
    server = PrivateRedis(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def eventually(check, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Waits until the awaitable `check` stops raising (re-raising its last error after `timeout`):
    for conditions that only polling can see, such as a readiness check or a key's expiry."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await check()
            return
        except Exception:
            if asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(interval)
