"""What the notifier reads and writes in Postgres (history owns the schema): subscriptions."""

import asyncpg

from ..shared.postgres import pooled_connection
from ..shared.push import Subscription


class SubscriptionStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def ping(self) -> None:
        async with pooled_connection(self._pool, "subscription store") as connection:
            await connection.execute("SELECT 1")

    async def of_user(self, user_id: str) -> list[Subscription]:
        async with pooled_connection(self._pool, "subscription store") as connection:
            rows = await connection.fetch(
                "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = $1", user_id)
        return [Subscription(row["endpoint"], row["p256dh"], row["auth"]) for row in rows]

    async def remove(self, user_id: str, subscription: Subscription) -> None:
        """The push service said it is gone. Only that row: the browser may have subscribed
        again since (new keys), or moved to another user."""
        async with pooled_connection(self._pool, "subscription store") as connection:
            await connection.execute(
                "DELETE FROM push_subscriptions WHERE endpoint = $1 AND user_id = $2 AND p256dh = $3",
                subscription.endpoint, user_id, subscription.p256dh)
