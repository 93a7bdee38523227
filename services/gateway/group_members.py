"""Who is in a group, as a gateway needs it for typing: asked of history, kept a few seconds.

Messages never use this: history answers each stored group message with its recipients at
insert time. Typing is best-effort, and a typing burst in a busy group would otherwise cost a
history call per keystroke event; at most one call per group per node per
`GROUP_MEMBERS_CACHE_SECONDS` instead, so a removed member may see typing for that long at most.
"""

import asyncio
from urllib.parse import quote

from ..shared.internal import InternalClient

ROUTE = "/internal/groups/{groupId}/members"


class GroupMembers:
    def __init__(self, history: InternalClient, cache_seconds: float):
        self._history = history
        self._cache_seconds = cache_seconds
        self._cached: dict[str, tuple[float, frozenset[str]]] = {}

    async def of(self, group_id: str) -> frozenset[str]:
        """The member ids of the group (empty for a group that does not exist)."""
        now = asyncio.get_running_loop().time()
        cached = self._cached.get(group_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        answer = await self._history.call(
            "GET", ROUTE.format(groupId=quote(group_id, safe="")), idempotent=True, route=ROUTE
        )
        members = frozenset(answer["memberIds"])
        self._forget_expired(now)
        self._cached[group_id] = (now + self._cache_seconds, members)
        return members

    def _forget_expired(self, now: float) -> None:
        for group_id in [group_id for group_id, (expires, _) in self._cached.items() if expires <= now]:
            del self._cached[group_id]
