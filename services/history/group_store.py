"""All SQL of groups and their membership: create, change, members and roles, a group's pages
and its read watermark. Group messages are stored with the 1:1 ones (store.py's batch insert).

Every call that reads or changes a group first checks the caller's membership in the same
connection (`_membership`): an unknown group is `unknown_group`, a group one is not (or no
longer) in is `not_a_member`, an admin-only change by a member is `forbidden`.

Every change members hear of is appended to the change feed in its own transaction
(feed_events.py), which claims its feed position first (store.CLAIM_FEED_POSITIONS). The group's
row is the lock that orders a group's changes: a membership change takes it FOR UPDATE, a batch
of its messages FOR NO KEY UPDATE (store._LOCK_GROUPS), each before any member row. Each such
call returns its `FeedEvent`s, in feed order, for the handler to emit.
"""

import asyncpg

from ..shared.errors import Forbidden, InvalidField, NotAMember, NotFound, UnknownUser
from .errors import GroupFull, LastAdmin, unknown_group
from .feed_events import FeedEvent, append_event
from .group_models import group_json, member_json
from .store import CLAIM_FEED_POSITIONS, MESSAGE_COLUMNS, PROFILE_JOINS, MessageStore, messages_json

ADMIN = "admin"
MAX_ID = 2**63 - 1


class GroupStore:
    """Groups and members in Postgres; shares the message store's pool and readiness."""

    def __init__(self, messages: MessageStore, max_members: int):
        self._messages = messages
        self.max_members = max_members

    async def create_group(self, creator: str, name: str, image: str, member_ids: list[str]) -> tuple[dict, list[FeedEvent]]:
        """The creator (an admin) and the other members, all existing users, in one transaction;
        and its `groupUpdated`."""
        others = [user_id for user_id in dict.fromkeys(member_ids) if user_id != creator]
        if not others:
            raise InvalidField("memberIds", "must name at least one other user")
        if len(others) + 1 > self.max_members:
            raise GroupFull(f"A group holds at most {self.max_members} members")
        async with self._messages.connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            if not await connection.fetchval("SELECT true FROM users WHERE id = $1", creator):
                raise UnknownUser("Your profile is not known to the chat service", code="unknown_sender")
            group_id = await connection.fetchval(_CREATE_GROUP, name, image, creator)
            added = await connection.fetchval(_ADD_MEMBERS, group_id, [creator, *others], creator)
            if added != len(others) + 1:
                raise InvalidField("memberIds", "must be ids of known users")
            return await _group_updated(connection, group_id)

    async def group(self, me: str, group_id: int) -> dict:
        async with self._messages.read_connection() as connection:
            await _membership(connection, group_id, me)
            return await _group(connection, group_id)

    async def member_ids(self, group_id: int) -> list[str]:
        """Everyone in the group now (the gateway's check for typing, and who to tell of a change)."""
        async with self._messages.connection() as connection:
            rows = await connection.fetch(_MEMBER_IDS, group_id)
            if not rows and not await connection.fetchval("SELECT true FROM groups WHERE id = $1", group_id):
                raise unknown_group()
        return [row["user_id"] for row in rows]

    async def update_group(self, me: str, group_id: int, name: str | None,
                           image: str | None) -> tuple[dict, list[FeedEvent]]:
        async with self._messages.connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            await _require_admin(connection, group_id, me, lock=True)
            await connection.execute(_UPDATE_GROUP, group_id, name, image)
            return await _group_updated(connection, group_id)

    async def add_members(self, me: str, group_id: int, user_ids: list[str]) -> tuple[dict, list[FeedEvent]]:
        """The group after the change, and (when it added anyone: those already in are left as
        they are) its `groupUpdated`, then a `memberAdded` for each member added."""
        async with self._messages.connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            await _require_admin(connection, group_id, me, lock=True)
            present = await connection.fetchrow(_COUNT_MEMBERS_AND_PRESENT, group_id, user_ids)
            new = [user_id for user_id in dict.fromkeys(user_ids) if user_id not in set(present["present"])]
            if present["count"] + len(new) > self.max_members:
                raise GroupFull(f"A group holds at most {self.max_members} members")
            added = await connection.fetch(_ADD_JOINING_MEMBERS, group_id, new)
            if len(added) != len(new):
                raise InvalidField("userIds", "must be ids of known users")
            if not new:
                return await _group(connection, group_id), []
            group, events = await _group_updated(connection, group_id)
            new_set = set(new)
            for member in group["members"]:
                if member["_id"] in new_set:
                    events.append(await append_event(
                        connection, "memberAdded", {"groupId": group["_id"], "member": member}, group=group_id))
        return group, events

    async def remove_member(self, me: str, group_id: int, user_id: str) -> tuple[list[str], FeedEvent]:
        """Removes a member (an admin's act, or anyone's leaving): the ids of those who remain, and
        the `memberRemoved` they and the removed member hear (one feed row for both: the removed
        one reads it as its `audience_user`, no longer a member)."""
        async with self._messages.connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            my_role = await _membership(connection, group_id, me, lock=True)
            if user_id != me and my_role != ADMIN:
                raise Forbidden("Only an admin can remove another member")
            roles = await _roles(connection, group_id)
            if user_id not in roles:
                raise NotFound("No such member", code="not_found")
            if _would_lose_last_admin(roles, user_id):
                raise LastAdmin("The last admin cannot leave while other members remain: make another admin first")
            await connection.execute(_REMOVE_MEMBER, group_id, user_id)
            removed = await append_event(connection, "memberRemoved", {"groupId": str(group_id), "userId": user_id},
                                         user=user_id, group=group_id)
        return [member for member in roles if member != user_id], removed

    async def set_role(self, me: str, group_id: int, user_id: str, role: str) -> tuple[dict, list[FeedEvent]]:
        async with self._messages.connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            await _require_admin(connection, group_id, me, lock=True)
            roles = await _roles(connection, group_id)
            if user_id not in roles:
                raise NotFound("No such member", code="not_found")
            if role != ADMIN and _would_lose_last_admin(roles, user_id):
                raise LastAdmin("The last admin cannot be demoted while other members remain")
            await connection.execute(_SET_ROLE, group_id, user_id, role)
            return await _group_updated(connection, group_id)

    async def fetch_page(self, me: str, group_id: int, before: int | None, limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` messages before the cursor, oldest first, and whether older ones exist."""
        async with self._messages.read_connection() as connection:
            await _membership(connection, group_id, me)
            rows = await connection.fetch(_GROUP_PAGE, group_id, before or MAX_ID, limit + 1)
            page = await messages_json(connection, list(reversed(rows[:limit])), me)
        return page, len(rows) > limit

    async def mark_read(self, me: str, group_id: int) -> tuple[int, str | None, list[str], FeedEvent | None]:
        """Reads the group up to its newest message: how many were unread, the newest id, the
        members, and (when it marked anything) the members' `groupRead`."""
        async with self._messages.connection() as connection, connection.transaction():
            await connection.execute(CLAIM_FEED_POSITIONS)
            await _membership(connection, group_id, me)
            row = await connection.fetchrow(_MARK_GROUP_READ, group_id, me)
            members = [r["user_id"] for r in await connection.fetch(_MEMBER_IDS, group_id)]
            up_to = str(row["read_up_to"]) if row["read_up_to"] is not None else None
            receipt = None
            if row["count"]:
                receipt = await append_event(connection, "groupRead",
                                             {"groupId": str(group_id), "readerId": me, "upTo": up_to}, group=group_id)
        return row["count"], up_to, members, receipt


def _would_lose_last_admin(roles: dict[str, str], user_id: str) -> bool:
    """Whether taking this member's admin role (or them) leaves members without any admin."""
    admins = [member for member, role in roles.items() if role == ADMIN]
    return admins == [user_id] and len(roles) > 1


async def _membership(connection: asyncpg.Connection, group_id: int, user_id: str, *, lock: bool = False) -> str:
    """My role in the group, or why I may not act in it. `lock` holds the group row for the
    transaction, so concurrent membership changes (counts, last admin) are checked one at a time."""
    row = await connection.fetchrow(_MEMBERSHIP_LOCKED if lock else _MEMBERSHIP, group_id, user_id)
    if row is None:
        raise unknown_group()
    if row["role"] is None:
        raise NotAMember()
    return row["role"]


async def _require_admin(connection: asyncpg.Connection, group_id: int, user_id: str, *, lock: bool = False) -> None:
    if await _membership(connection, group_id, user_id, lock=lock) != ADMIN:
        raise Forbidden("Only an admin can change the group")


async def _roles(connection: asyncpg.Connection, group_id: int) -> dict[str, str]:
    return {row["user_id"]: row["role"] for row in await connection.fetch(_ROLES, group_id)}


async def _group_updated(connection: asyncpg.Connection, group_id: int) -> tuple[dict, list[FeedEvent]]:
    """The group as it is now, and its `groupUpdated` appended to the feed."""
    group = await _group(connection, group_id)
    return group, [await append_event(connection, "groupUpdated", {"group": group}, group=group_id)]


async def _group(connection: asyncpg.Connection, group_id: int) -> dict:
    group = await connection.fetchrow(_GROUP, group_id)
    members = await connection.fetch(_GROUP_MEMBERS, group_id)
    return group_json(group, [member_json(row) for row in members])


# The group row by primary key, and my membership by (group_id, user_id): both primary keys.
_MEMBERSHIP = """
SELECT m.role FROM groups g LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = $2 WHERE g.id = $1
"""
# FOR UPDATE OF g: the group row is the one lock every membership change takes (never a member row first).
_MEMBERSHIP_LOCKED = _MEMBERSHIP + " FOR UPDATE OF g"

_CREATE_GROUP = "INSERT INTO groups (name, image, created_by) VALUES ($1, $2, $3) RETURNING id"

# Unknown ids simply find no user and are not inserted: the caller compares the count.
_ADD_MEMBERS = """
WITH added AS (
    INSERT INTO group_members (group_id, user_id, role)
    SELECT $1, u.id, CASE WHEN u.id = $3 THEN 'admin' ELSE 'member' END FROM users u WHERE u.id = ANY($2::text[])
    ORDER BY u.id
    RETURNING 1
)
SELECT count(*) FROM added
"""

# A member who joins has read everything before them: their unread count starts at zero.
_ADD_JOINING_MEMBERS = """
INSERT INTO group_members (group_id, user_id, role, read_seq, read_up_to)
SELECT g.id, u.id, 'member', g.last_seq, g.last_message_id FROM groups g JOIN users u ON u.id = ANY($2::text[])
WHERE g.id = $1 ORDER BY u.id
RETURNING user_id
"""

# One primary-key range scan for the count, one probe per asked id for those already in.
_COUNT_MEMBERS_AND_PRESENT = """
SELECT (SELECT count(*) FROM group_members WHERE group_id = $1) AS count,
       ARRAY(SELECT user_id FROM group_members WHERE group_id = $1 AND user_id = ANY($2::text[])) AS present
"""

_UPDATE_GROUP = """
UPDATE groups SET name = COALESCE($2, name), image = COALESCE($3, image), updated_at = now() WHERE id = $1
"""

_REMOVE_MEMBER = "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2"
_SET_ROLE = "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2"

# The primary key's range scan of one group (at most MAX_GROUP_MEMBERS rows).
_MEMBER_IDS = "SELECT user_id FROM group_members WHERE group_id = $1"
_ROLES = "SELECT user_id, role FROM group_members WHERE group_id = $1"

_GROUP = "SELECT id, name, image, created_by, created_at FROM groups WHERE id = $1"

# Admins first, then in the order they joined: the order a member list is shown in.
_GROUP_MEMBERS = """
SELECT u.id, u.user_name, u.name, u.profile_image, m.role, m.read_up_to
FROM group_members m JOIN users u ON u.id = m.user_id
WHERE m.group_id = $1
ORDER BY m.role = 'admin' DESC, m.joined_at, m.user_id
"""

# A backward range scan of messages_group_idx (group_id, id): the page costs its own rows.
_GROUP_PAGE = f"""
SELECT {MESSAGE_COLUMNS} FROM (
    SELECT * FROM messages WHERE group_id = $1 AND id < $2 AND deleted_at IS NULL ORDER BY id DESC LIMIT $3
) AS m {PROFILE_JOINS}
ORDER BY m.id DESC
"""

# The watermark moves to the group's counter: O(1), whatever the group's history. The old
# read_seq is read under the row's lock (FOR UPDATE), so two reads at once count each message once.
_MARK_GROUP_READ = """
WITH before AS (
    SELECT read_seq FROM group_members WHERE group_id = $1 AND user_id = $2 FOR UPDATE
)
UPDATE group_members m
SET read_seq = GREATEST(m.read_seq, g.last_seq), read_up_to = GREATEST(m.read_up_to, g.last_message_id)
FROM groups g, before
WHERE g.id = m.group_id AND m.group_id = $1 AND m.user_id = $2
RETURNING GREATEST(g.last_seq - before.read_seq, 0)::int AS count, m.read_up_to
"""
