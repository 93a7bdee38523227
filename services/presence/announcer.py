"""Tells the people who care when a user comes online or goes offline.

Those are the user's conversation partners (asked of history, cached briefly) and the sockets
watching the user (`watchPresence`): one publish per transition reaches all their rooms.
"""

import logging
import time

from ..shared.errors import ParleyError
from ..shared.internal import InternalClient
from ..shared.keys import presence_room, user_room
from ..shared.notify import ClientNotifier

log = logging.getLogger(__name__)

PARTNERS_CACHE_SECONDS = 10.0


class PresenceAnnouncer:
    def __init__(self, history: InternalClient, notifier: ClientNotifier):
        self._history = history
        self._notifier = notifier
        self._partners: dict[str, tuple[float, list[str]]] = {}

    async def partners(self, user_id: str) -> list[str]:
        cached = self._partners.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < PARTNERS_CACHE_SECONDS:
            return cached[1]
        partners = await self._history.call(
            "GET", f"/internal/users/{user_id}/partners", idempotent=True, route="/internal/users/{userId}/partners"
        )
        if len(self._partners) > 100_000:
            self._partners.clear()
        self._partners[user_id] = (time.monotonic(), partners)
        return partners

    async def announce(self, online: list[str], offline: list[str]) -> None:
        for event, users in (("userOnline", online), ("userOffline", offline)):
            for user_id in users:
                await self._announce_one(event, user_id)

    async def _announce_one(self, event: str, user_id: str) -> None:
        rooms = [presence_room(user_id)]
        try:
            rooms += [user_room(partner) for partner in await self.partners(user_id) if partner != user_id]
        except ParleyError as exc:
            # Watchers still hear it; partners catch up from `onlineUsers` on their next connect.
            log.warning("%s of a user told to watchers only: partners unknown (%s)", event, exc.code)
        await self._notifier.emit_to_rooms(event, user_id, rooms)
