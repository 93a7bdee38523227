"""What history does when a group changes: store the change, then tell the members.

Routes parse and answer; the stores only store; this decides who hears of a change. Every
event goes out as ONE emit to the list of the members' user rooms (services/shared/notify.py):
one publish per gateway node holding any of them, whatever the group's size. Every event is
in the change feed (feed_events.py) and carries its position as its last argument: the offset
a socket recovers (or is caught up) from.
"""

from ..shared.keys import user_room
from ..shared.notify import ClientNotifier
from .feed_events import FeedEvent
from .group_models import CreateGroup, UpdateGroup
from .group_store import GroupStore


def member_ids(group: dict) -> list[str]:
    return [member["_id"] for member in group["members"]]


class GroupHandler:
    def __init__(self, groups: GroupStore, notifier: ClientNotifier):
        self._groups = groups
        self._notifier = notifier

    async def _tell(self, events: list[FeedEvent], user_ids: list[str]) -> None:
        """Each event, in feed order, with its feed position as its last argument (its offset)."""
        rooms = [user_room(user_id) for user_id in dict.fromkeys(user_ids)]
        for event in events:
            await self._notifier.emit_to_rooms(event.event, event.data(), rooms)

    async def create_group(self, me: str, payload: CreateGroup) -> dict:
        """Every member (the creator's other devices too) learns the group through `groupUpdated`."""
        group, events = await self._groups.create_group(me, payload.name, payload.image, list(payload.member_ids))
        await self._tell(events, member_ids(group))
        return group

    async def update_group(self, me: str, group_id: int, payload: UpdateGroup) -> dict:
        group, events = await self._groups.update_group(me, group_id, payload.name, payload.image)
        await self._tell(events, member_ids(group))
        return group

    async def add_members(self, me: str, group_id: int, user_ids: list[str]) -> dict:
        """All members, the new ones included, get the group (`groupUpdated`), then `memberAdded` for each new one."""
        group, events = await self._groups.add_members(me, group_id, user_ids)
        await self._tell(events, member_ids(group))
        return group

    async def remove_member(self, me: str, group_id: int, user_id: str) -> None:
        """Those who remain and the removed member hear `memberRemoved` once; then the removed hear nothing more."""
        remaining, removed = await self._groups.remove_member(me, group_id, user_id)
        await self._tell([removed], [*remaining, user_id])

    async def set_role(self, me: str, group_id: int, user_id: str, role: str) -> dict:
        group, events = await self._groups.set_role(me, group_id, user_id, role)
        await self._tell(events, member_ids(group))
        return group

    async def mark_read(self, me: str, group_id: int) -> tuple[int, str | None]:
        """Members hear `groupRead` (the web client's "read by N") when the read marked anything."""
        count, up_to, members, receipt = await self._groups.mark_read(me, group_id)
        if receipt is not None:
            await self._tell([receipt], members)
        return count, up_to
