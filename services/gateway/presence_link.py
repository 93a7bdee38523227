"""A gateway node's link to presence: batched socket changes, a heartbeat, resync on demand.

The node's own table of sockets (sid -> user) is the truth. Changes are queued and sent in one
call per FLUSH_SECONDS; one heartbeat per interval asks presence whether it still holds this
node's sockets. When a call fails, or presence answers that it holds none (Redis lost its state,
or the node was swept), the next heartbeat sends the full table, and state converges.
The node's liveness is not this link's: its Socket.IO manager keeps it in Redis, so chat neither
waits for presence nor stops when presence is down.
"""

import asyncio
import logging
from collections.abc import Mapping

from prometheus_client import Gauge

from ..shared.batching import Batcher
from ..shared.errors import ParleyError
from ..shared.internal import InternalClient
from ..shared.limits import MAX_IDS_PER_PRESENCE_QUERY, MAX_USERS_PER_PARTNERS_QUERY
from ..shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
# New sockets' `onlineUsers` lookups that wait for the call under way (PARTNERS_PACE_FROM: one
# is enough) leave no sooner than this after that call started, so a storm's lookups share calls;
# a lookup that finds no call under way leaves at once. Unpaced, a storm of 10,000 connects made
# 2,600 calls of about 4 users each, 200 us of a gateway's CPU apiece, and as many for presence
# and history; paced from 2 waiting, still 1,800 (bench/RESULTS.md, "Connect storm and presence").
PARTNERS_INTERVAL_SECONDS = 0.025
PARTNERS_PACE_FROM = 1


class PresenceLink:
    def __init__(self, presence: InternalClient, node_id: str, heartbeat_seconds: float,
                 sockets: Mapping[str, str], in_sync: Gauge | None = None):
        """`sockets` is the node's live table (sid -> user), read at each resync; `in_sync` shows
        whether presence holds it (changes made meanwhile are folded into the next resync)."""
        self._in_sync = in_sync
        self._presence = presence
        self._node_id = node_id
        self._heartbeat_seconds = heartbeat_seconds
        self._sockets = sockets
        self._connected: list[tuple[str, str]] = []
        self._disconnected: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._resync_pending = True
        self._tasks: list[asyncio.Task] = []
        # One call to presence at a time: a batch landing after a resync it predates could
        # bring back a socket the resync had removed.
        self._calls = asyncio.Lock()
        # New sockets' `onlineUsers`: the connects that arrive together share one presence call
        # (and presence one history call): in a connect storm, per socket, they were an eighth
        # of a gateway's CPU (py-spy, `python -m bench.presence_bench --sockets 10000`).
        self._partner_lookups: Batcher[str, list[str]] = Batcher(
            self._online_partners_of_many, max_batch=MAX_USERS_PER_PARTNERS_QUERY,
            min_interval=PARTNERS_INTERVAL_SECONDS, pace_from=PARTNERS_PACE_FROM)

    @property
    def _needs_resync(self) -> bool:
        return self._resync_pending

    @_needs_resync.setter
    def _needs_resync(self, pending: bool) -> None:
        self._resync_pending = pending
        if self._in_sync is not None:
            self._in_sync.set(0 if pending else 1)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_forever()), asyncio.create_task(self._heartbeat_forever())]

    async def stop(self) -> None:
        """No more flushes or heartbeats (presence's sweep forgets the node once its liveness lapses)."""
        await cancel_and_wait(self._tasks)
        await self._partner_lookups.close()

    def socket_connected(self, sid: str, user_id: str) -> None:
        self._connected.append((sid, user_id))
        self._wake.set()

    def socket_disconnected(self, sid: str, user_id: str) -> None:
        self._disconnected.append((sid, user_id))
        self._wake.set()

    async def online_partners(self, user_id: str) -> list[str] | None:
        """The user's partners online (a new socket's `onlineUsers`); None when presence cannot say."""
        try:
            return await self._partner_lookups.submit(user_id)
        except ParleyError as exc:
            log.info("no onlineUsers for a new socket: presence answered %s", exc.code)
            return None

    async def _online_partners_of_many(self, user_ids: list[str]) -> list[list[str]]:
        answer = await self._presence.call(
            "POST", "/internal/presence/partners-online", json={"userIds": sorted(set(user_ids))}, idempotent=True,
            route="/internal/presence/partners-online",
        )
        return [answer["online"].get(user_id, []) for user_id in user_ids]

    async def online_among(self, user_ids: list[str]) -> list[str]:
        online: list[str] = []
        for start in range(0, len(user_ids), MAX_IDS_PER_PRESENCE_QUERY):
            answer = await self._presence.call(
                "GET", "/internal/presence/online", params={"ids": ",".join(user_ids[start:start + MAX_IDS_PER_PRESENCE_QUERY])},
                idempotent=True, route="/internal/presence/online",
            )
            online += answer["online"]
        return online

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)  # coalesce a burst of connects into one call
            self._wake.clear()
            await self._surviving(self.flush)

    async def flush(self) -> None:
        async with self._calls:
            await self._flush()

    async def _flush(self) -> None:
        if self._needs_resync or not (self._connected or self._disconnected):
            return  # a resync will send the whole table anyway
        connected, disconnected = self._connected, self._disconnected
        self._connected, self._disconnected = [], []
        try:
            answer = await self._presence.call(
                "POST", "/internal/presence/events",
                json={"nodeId": self._node_id, "connected": connected, "disconnected": disconnected},
                idempotent=True, route="/internal/presence/events",
            )
            if not answer["accepted"]:  # this node's liveness key is not (yet, again) in Redis
                self._needs_resync = True
        except ParleyError as exc:
            log.warning("presence did not take %d change(s) (%s); resyncing at the next heartbeat",
                        len(connected) + len(disconnected), exc.code)
            self._needs_resync = True

    async def _heartbeat_forever(self) -> None:
        while True:
            await self._surviving(self.heartbeat)
            await asyncio.sleep(self._heartbeat_seconds)

    async def _surviving(self, step) -> None:
        """Runs a flush or a heartbeat; an error no call path expects (an answer that is not the
        JSON asked for, a bug) is logged and the next heartbeat resyncs, where it would have ended
        the loop, and presence would never again have heard of this node's sockets."""
        try:
            await step()
        except Exception:
            log.exception("presence link step failed; resyncing at the next heartbeat")
            self._needs_resync = True

    async def heartbeat(self) -> None:
        async with self._calls:
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        try:
            answer = await self._presence.call(
                "POST", "/internal/presence/heartbeat", json={"nodeId": self._node_id},
                route="/internal/presence/heartbeat",
            )
            if answer["resync"] or self._needs_resync:
                await self._resync()
        except ParleyError as exc:
            if not self._needs_resync:
                log.warning("presence heartbeat failed (%s); will resync when it answers", exc.code)
            self._needs_resync = True

    async def _resync(self) -> None:
        # The table is read and the queues cleared in one step, so no change is lost or doubled.
        table = list(self._sockets.items())
        self._connected, self._disconnected = [], []
        answer = await self._presence.call(
            "PUT", f"/internal/presence/nodes/{self._node_id}", json={"sockets": table},
            idempotent=True, route="/internal/presence/nodes/{nodeId}",
        )
        if not answer["accepted"]:
            # Presence takes no socket of a node whose liveness key has lapsed (a Redis that
            # restarted empty, before this node's manager wrote it again): next heartbeat.
            self._needs_resync = True
            log.info("presence did not take this node's sockets yet (its liveness key is not in Redis)")
            return
        self._needs_resync = False
        log.info("presence resynced with %d socket(s)", len(table))

    async def leave(self) -> None:
        """A drained node tells presence it is gone, rather than leaving it to the TTL."""
        await self.stop()
        try:
            await self._presence.call("DELETE", f"/internal/presence/nodes/{self._node_id}",
                                      route="/internal/presence/nodes/{nodeId}")
        except ParleyError as exc:
            log.warning("could not tell presence this node left (%s); its TTL will", exc.code)
