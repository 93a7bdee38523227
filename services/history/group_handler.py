"""What history does when a group changes: store the change, then tell the members.

Routes parse and answer; the stores only store; this decides who hears of a change. Every
event goes out as ONE emit to the list of the members' user rooms (services/shared/notify.py):
one publish per gateway node holding any of them, whatever the group's size.
"""

from ..shared.keys import user_room
from ..shared.notify import ClientNotifier
from .group_models import CreateGroup, UpdateGroup
from .group_store import GroupStore


def member_ids(group: dict) -> list[str]:
    return [member["_id"] for member in group["members"]]


class GroupHandler:
    def __init__(self, groups: GroupStore, notifier: ClientNotifier):
        self._groups = groups
        self._notifier = notifier

    async def _tell(self, event: str, data: object, user_ids: list[str]) -> None:
        await self._notifier.emit_to_rooms(event, data, [user_room(user_id) for user_id in dict.fromkeys(user_ids)])

    async def create_group(self, me: str, payload: CreateGroup) -> dict:
        """Every member (the creator's other devices too) learns the group through `groupUpdated`."""
        group = await self._groups.create_group(me, payload.name, payload.image, list(payload.member_ids))
        await self._tell("groupUpdated", {"group": group}, member_ids(group))
        return group

    async def update_group(self, me: str, group_id: int, payload: UpdateGroup) -> dict:
        group = await self._groups.update_group(me, group_id, payload.name, payload.image)
        await self._tell("groupUpdated", {"group": group}, member_ids(group))
        return group

    async def add_members(self, me: str, group_id: int, user_ids: list[str]) -> dict:
        """All members, the new ones included, get the group (`groupUpdated`), then `memberAdded` for each new one."""
        group, added = await self._groups.add_members(me, group_id, user_ids)
        if added:
            everyone = member_ids(group)
            await self._tell("groupUpdated", {"group": group}, everyone)
            for member in added:
                await self._tell("memberAdded", {"groupId": group["_id"], "member": member}, everyone)
        return group

    async def remove_member(self, me: str, group_id: int, user_id: str) -> None:
        """Those who remain and the removed member hear `memberRemoved` once; then the removed hear nothing more."""
        remaining = await self._groups.remove_member(me, group_id, user_id)
        await self._tell("memberRemoved", {"groupId": str(group_id), "userId": user_id}, [*remaining, user_id])

    async def set_role(self, me: str, group_id: int, user_id: str, role: str) -> dict:
        group = await self._groups.set_role(me, group_id, user_id, role)
        await self._tell("groupUpdated", {"group": group}, member_ids(group))
        return group

    async def mark_read(self, me: str, group_id: int) -> tuple[int, str | None]:
        """Members hear `groupRead` (the web client's "read by N") when the read marked anything."""
        count, up_to, members = await self._groups.mark_read(me, group_id)
        if count:
            await self._tell("groupRead", {"groupId": str(group_id), "readerId": me, "upTo": up_to}, members)
        return count, up_to
