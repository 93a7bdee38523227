"""Emitting Socket.IO events to users from a service that holds no sockets (history, presence)."""

import logging

from .keys import user_room
from .routed_manager import RoutedRedisManager

log = logging.getLogger(__name__)


class ClientNotifier:
    """A write-only Socket.IO manager, routed like the gateways' own (to the nodes of the user)."""

    def __init__(self, redis_url: str, redis_prefix: str):
        self._manager = RoutedRedisManager(redis_url, redis_prefix, write_only=True)

    async def emit_to_user(self, event: str, data: object, user_id: str) -> None:
        """Best effort, like all fan-out: a client that misses it catches up through `sync`."""
        await self._manager.emit(event, data, room=user_room(user_id))

    async def emit_to_rooms(self, event: str, data: object, rooms: list[str]) -> None:
        """One publish for any number of rooms (each socket hears it once)."""
        if rooms:
            await self._manager.emit(event, data, room=rooms)

    async def close(self) -> None:
        await self._manager.close()
