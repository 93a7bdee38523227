"""`visibility {visible}` (issue 18): which of a user's sockets belong to a page someone is looking at.

A user is sent push notifications only while none of their sockets, on any node, is visible:
a socket counts as visible from the moment its page says `{visible: true}` (the web client
sends it on connect and on every `visibilitychange`) until it says false or disconnects. A
socket that never says is not visible (the guide's client, an app in the background).

Across nodes, in Redis: one sorted set per user (`keys.visible_sockets_key`), sid -> the time
its entry lapses. The node that holds the socket refreshes its entries every HEARTBEAT_SECONDS
for NODE_TTL_SECONDS, so a node that dies stops counting within NODE_TTL_SECONDS, as its
routing does. History's notification relay reads `ZCOUNT key now +inf`.

Who may send it: any connected socket, about itself only. Cost: one ZADD or ZREM per change
(pages change visibility at human pace; rate limited with typing's bucket), and per node one
pipeline per heartbeat with an entry per visible socket. Bad input: anything but
`{visible: bool}` is `invalid_visible`.
"""

import asyncio
import logging
import time

from redis.exceptions import RedisError

from ..shared.errors import InvalidField, ServiceUnavailable
from ..shared.keys import visible_sockets_key
from ..shared.redis_client import connect, key_prefix
from ..shared.tasks import cancel_and_wait
from .chat import ChatHandler, socket_event

log = logging.getLogger(__name__)


def parse_visible(payload: object) -> bool:
    visible = payload.get("visible") if isinstance(payload, dict) else None
    if not isinstance(visible, bool):
        raise InvalidField("visible", "must be true or false: {visible: bool}")
    return visible


class Visibility:
    def __init__(self, redis_url: str, prefix: str, heartbeat_seconds: float, ttl_seconds: float):
        self._redis = connect(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = key_prefix(redis_url, prefix)
        self._heartbeat = heartbeat_seconds
        self._ttl = ttl_seconds
        self._visible: dict[str, str] = {}  # sid -> user, the visible sockets of this node
        self._tasks: set[asyncio.Task] = set()
        self._refresher: asyncio.Task | None = None

    def register(self, chat: ChatHandler) -> None:
        """Serves `visibility` on the chat's sockets and forgets each socket that leaves."""

        @socket_event("visibility")
        async def visibility(chat: ChatHandler, sid: str, user_id: str, payload: object) -> dict:
            visible = parse_visible(payload)
            chat.typing_limiter.check(user_id)
            await self.report(sid, user_id, visible)
            return {"visible": visible}

        async def on_visibility(sid: str, payload: object = None, *_extra: object) -> dict:
            return await visibility(chat, sid, payload)

        chat.sio.on("visibility", on_visibility)
        previous = chat.on_disconnected

        def disconnected(sid: str) -> None:
            if previous is not None:
                previous(sid)
            self.forget(sid)

        chat.on_disconnected = disconnected

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def report(self, sid: str, user_id: str, visible: bool) -> None:
        try:
            await self._write(sid, user_id, visible)
        except RedisError as exc:
            log.warning("visibility not recorded: %r", exc)
            raise ServiceUnavailable("Visibility cannot be recorded now, try again shortly") from None

    async def _write(self, sid: str, user_id: str, visible: bool) -> None:
        key = visible_sockets_key(self._prefix, user_id)
        if visible:
            self._visible[sid] = user_id
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {sid: time.time() + self._ttl})
                pipe.expire(key, int(self._ttl) + 1)
                await pipe.execute()
        else:
            self._visible.pop(sid, None)
            await self._redis.zrem(key, sid)

    def forget(self, sid: str) -> None:
        """A socket left: it no longer counts (in the background: disconnect handlers are sync here)."""
        user_id = self._visible.pop(sid, None)
        if user_id is None:
            return
        task = asyncio.ensure_future(self._remove(sid, user_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, sid: str, user_id: str) -> None:
        try:
            await self._redis.zrem(visible_sockets_key(self._prefix, user_id), sid)
        except RedisError as exc:  # its entry lapses by itself within NODE_TTL_SECONDS
            log.info("visibility of a closed socket left to lapse: %r", exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            if not self._visible:
                continue
            lapses = time.time() + self._ttl
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for sid, user_id in list(self._visible.items()):
                        key = visible_sockets_key(self._prefix, user_id)
                        pipe.zadd(key, {sid: lapses})
                        pipe.expire(key, int(self._ttl) + 1)
                    await pipe.execute()
            except RedisError as exc:  # Redis restarting: the next beat writes them all again
                log.info("visibility refresh skipped: %r", exc)

    async def close(self) -> None:
        await cancel_and_wait([self._refresher, *self._tasks], timeout=2)
        await asyncio.wait_for(self._redis.aclose(), timeout=2)
