"""Tells the people who care when a user comes online or goes offline.

Those are the user's conversation partners (asked of history each time: a cache would keep a
brand-new partner uninformed, and transitions are rare next to messages) and the sockets watching
the user (`watchPresence`): one routed emit per transition reaches all their rooms, on the nodes
that hold them (the routed manager registers presence rooms as it does user rooms), and no other
node: in a connect storm every node decoded every `userOnline` on the shared channel, though
nobody watched, 6.5 % of a gateway's CPU (bench/RESULTS.md, "Connect storm and presence").
"""

import logging

from ..shared.errors import ParleyError
from ..shared.internal import InternalClient
from ..shared.keys import presence_room, user_room
from ..shared.notify import ClientNotifier

log = logging.getLogger(__name__)


class PresenceAnnouncer:
    def __init__(self, history: InternalClient, notifier: ClientNotifier):
        self._history = history
        self._notifier = notifier

    async def partners(self, user_id: str) -> list[str]:
        return await self._history.call(
            "GET", f"/internal/users/{user_id}/partners", idempotent=True, route="/internal/users/{userId}/partners"
        )

    async def partners_of_many(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Each user's partners, in one history call."""
        answer = await self._history.call("POST", "/internal/partners", json={"userIds": user_ids}, idempotent=True,
                                          route="/internal/partners")
        return answer["partners"]

    async def announce(self, online: list[str], offline: list[str]) -> None:
        """One history call for the whole batch, then one publish per transition."""
        if not online and not offline:
            return
        try:
            partners = await self.partners_of_many(online + offline)
        except ParleyError as exc:
            # Watchers still hear it; partners catch up from `onlineUsers` on their next connect.
            log.warning("%d transition(s) told to watchers only: partners unknown (%s)",
                        len(online) + len(offline), exc.code)
            partners = {}
        for event, users in (("userOnline", online), ("userOffline", offline)):
            for user_id in users:
                rooms = [presence_room(user_id)]
                rooms += [user_room(partner) for partner in partners.get(user_id, []) if partner != user_id]
                await self._notifier.emit_to_rooms(event, user_id, rooms)
