"""Emitting Socket.IO events to users from a service that holds no sockets (history, presence)."""

import logging

import socketio

from .keys import sio_channel, user_room

log = logging.getLogger(__name__)


class ClientNotifier:
    """A write-only Socket.IO manager on the gateways' Redis channel."""

    def __init__(self, redis_url: str, redis_prefix: str):
        self._manager = socketio.AsyncRedisManager(
            redis_url, channel=sio_channel(redis_prefix), write_only=True, logger=log
        )

    async def emit_to_user(self, event: str, data: object, user_id: str) -> None:
        """Best effort, like all fan-out: a client that misses it catches up through `sync`."""
        await self._manager.emit(event, data, room=user_room(user_id))

    async def emit_to_rooms(self, event: str, data: object, rooms: list[str]) -> None:
        """One publish for any number of rooms (each socket hears it once)."""
        if rooms:
            await self._manager.emit(event, data, room=rooms)

    async def close(self) -> None:
        if self._manager.redis is not None:
            await self._manager.redis.aclose()
