"""The SQL of push notifications' user-facing state (issue 18): subscriptions, mutes, the setting."""

from datetime import datetime

import asyncpg

from ..shared.errors import ErrorCode, NotFound, ParleyError
from ..shared.postgres import pooled_connection
from ..shared.push import MAX_SUBSCRIPTIONS_PER_USER, Subscription
from .errors import unknown_group


class TooManySubscriptions(ParleyError):
    status = 409
    code = "too_many_subscriptions"


class PushStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    def _connection(self):
        return pooled_connection(self._pool, "message store")

    async def add_subscription(self, user_id: str, subscription: Subscription) -> bool:
        """Stores (or refreshes) the browser's subscription as the user's; True when it is new to
        them. The count is checked under a lock on the user's row, so two browsers subscribing
        at once cannot both pass it."""
        async with self._connection() as connection, connection.transaction():
            if await connection.fetchval("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id) is None:
                raise NotFound("No such user", code=ErrorCode.UNKNOWN_SENDER)
            owner = await connection.fetchval(
                "SELECT user_id FROM push_subscriptions WHERE endpoint = $1", subscription.endpoint)
            if owner != user_id:
                count = await connection.fetchval(
                    "SELECT count(*) FROM push_subscriptions WHERE user_id = $1", user_id)
                if count >= MAX_SUBSCRIPTIONS_PER_USER:
                    raise TooManySubscriptions(
                        f"A user has at most {MAX_SUBSCRIPTIONS_PER_USER} push subscriptions; remove one first")
            # A browser that signs in as someone else moves to them: the previous user's
            # notifications must not show on a browser where another user is signed in.
            await connection.execute(
                "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (endpoint) DO UPDATE SET user_id = $2, p256dh = $3, auth = $4, created_at = now()",
                subscription.endpoint, user_id, subscription.p256dh, subscription.auth)
            return owner != user_id

    async def remove_subscription(self, user_id: str, endpoint: str) -> bool:
        async with self._connection() as connection:
            status = await connection.execute(
                "DELETE FROM push_subscriptions WHERE endpoint = $1 AND user_id = $2", endpoint, user_id)
        return status != "DELETE 0"

    async def mute(self, user_id: str, kind: str, target: str, until: datetime | None) -> None:
        """Mutes a 1:1 conversation (the partner must exist) or a group (I must be a member)."""
        async with self._connection() as connection:
            await self._check_conversation(connection, user_id, kind, target)
            await connection.execute(
                "INSERT INTO conversation_mutes (user_id, conversation, until) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id, conversation) DO UPDATE SET until = $3",
                user_id, f"{kind}:{target}", until)

    async def unmute(self, user_id: str, kind: str, target: str) -> None:
        async with self._connection() as connection:
            await self._check_conversation(connection, user_id, kind, target)
            await connection.execute(
                "DELETE FROM conversation_mutes WHERE user_id = $1 AND conversation = $2", user_id, f"{kind}:{target}")

    @staticmethod
    async def _check_conversation(connection: asyncpg.Connection, user_id: str, kind: str, target: str) -> None:
        if kind == "user":
            if await connection.fetchval("SELECT 1 FROM users WHERE id = $1", target) is None:
                raise NotFound("No such user", code=ErrorCode.UNKNOWN_RECEIVER)
        elif await connection.fetchval(
                "SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2", int(target), user_id) is None:
            raise unknown_group()  # not a member: the group's existence is not told either

    async def settings(self, user_id: str) -> dict:
        async with self._connection() as connection:
            hide = await connection.fetchval("SELECT hide_text FROM notification_settings WHERE user_id = $1", user_id)
        return {"hideText": bool(hide)}

    async def set_settings(self, user_id: str, hide_text: bool) -> dict:
        async with self._connection() as connection:
            try:
                await connection.execute(
                    "INSERT INTO notification_settings (user_id, hide_text) VALUES ($1, $2)"
                    " ON CONFLICT (user_id) DO UPDATE SET hide_text = $2", user_id, hide_text)
            except asyncpg.ForeignKeyViolationError:
                raise NotFound("No such user", code=ErrorCode.UNKNOWN_SENDER) from None
        return {"hideText": hide_text}
