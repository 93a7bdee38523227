"""Bounded traffic for fault tests, and the count of what was acknowledged, stored and received."""

import asyncio
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from tests.support import ChatClient, User, create_user


@dataclass
class Sender:
    """One client sending to one receiver (or, with `group_id`, to a group) at a steady pace,
    recording every outcome."""

    client: ChatClient
    receiver: User | None
    acked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    group_id: str | None = None

    @property
    def conversation(self) -> dict:
        return {"groupId": self.group_id} if self.group_id else {"receiverId": self.receiver.id}

    async def run(self, stop: asyncio.Event, interval: float = 0.05) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                ack = await self.client.call(
                    "sendMessage", {**self.conversation, "text": f"fault test {number}"}, timeout=5
                )
            except Exception as exc:  # a dropped connection or a timed-out ack: nothing acknowledged
                self.errors.append(type(exc).__name__)
                await asyncio.sleep(interval)
                continue
            if ack["ok"]:
                self.acked.append(ack["message"]["_id"])
            else:
                self.errors.append(ack["error"]["code"])
            await asyncio.sleep(interval)


async def stored_ids(database_url: str, ids: list[str]) -> set[str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT id FROM messages WHERE id = ANY($1::bigint[])", [int(i) for i in ids])
    finally:
        await connection.close()
    return {str(row["id"]) for row in rows}


async def synced_ids(gateway_url: str, user: User) -> set[str]:
    """Everything the user can recover with `sync` from the beginning, following every page."""
    found, cursor = set(), "0"
    async with aiohttp.ClientSession() as http:
        for _ in range(1000):
            async with http.get(f"{gateway_url}/api/messages/sync?after={cursor}&limit=500",
                                headers=user.auth_headers) as answer:
                assert answer.status == 200, await answer.text()
                page = await answer.json()
            found |= {message["_id"] for message in page["messages"]}
            cursor = page["next"]
            if not page["hasMore"]:
                return found
    raise AssertionError("sync did not end")


@dataclass
class Tally:
    acknowledged: int
    stored: int
    received: int  # live, or through `sync`
    lost: int
    # Reached every receiver's device with the guide's client as it is: live, by recovery or by
    # catch-up, never by `sync`. None where a test measures with `sync` (shown as "-").
    without_sync: int | None = None


# (fault, tally) of every fault test in this run, printed as a table at the end of the session.
RECORDED: list[tuple[str, Tally]] = []


async def tally(
    fault: str, database_url: str, gateway_url: str, senders: list[Sender], receivers: dict[str, ChatClient]
) -> Tally:
    """Acknowledged vs stored vs what each receiver ended with (live, or through `sync`)."""
    acked = [message_id for sender in senders for message_id in sender.acked]
    stored = await stored_ids(database_url, acked)
    ended_with = 0
    for sender in senders:
        live = {message["_id"] for message in receivers[sender.receiver.id].received("receiveMessage")}
        recovered = await synced_ids(gateway_url, sender.receiver)
        ended_with += len(set(sender.acked) & (live | recovered))
    result = Tally(len(acked), len(stored & set(acked)), ended_with, len(acked) - min(len(stored), ended_with))
    RECORDED.append((fault, result))
    return result


async def tally_group(fault: str, database_url: str, gateway_url: str, sender: Sender,
                      members: dict[str, tuple[User, ChatClient]]) -> Tally:
    """As `tally`, for one sender in a group: `received` counts the acknowledged messages that
    every other member ended with (live, or through `sync`)."""
    acked = set(sender.acked)
    stored = await stored_ids(database_url, sender.acked)
    reached_all = set(acked)
    for user, client in members.values():
        live = {message["_id"] for message in client.received("receiveMessage")}
        reached_all &= live | await synced_ids(gateway_url, user)
    result = Tally(len(acked), len(stored & acked), len(reached_all), len(acked) - min(len(stored), len(reached_all)))
    RECORDED.append((fault, result))
    return result


async def open_pairs(cluster, count: int = 3):
    """`count` sender/receiver pairs, senders on node a and receivers on node b."""
    senders, receivers, clients = [], {}, []
    for _ in range(count):
        ada, grace = await create_user(cluster.history_url), await create_user(cluster.history_url)
        sender_client = ChatClient(cluster.gateway_url("a"), ada.token)
        receiver_client = ChatClient(cluster.gateway_url("b"), grace.token)
        await sender_client.connect()
        await receiver_client.connect()
        clients += [sender_client, receiver_client]
        senders.append(Sender(sender_client, grace))
        receivers[grace.id] = receiver_client
    return senders, receivers, clients


async def run_traffic(senders, fault, seconds_before: float = 1.0, seconds_after: float = 3.0):
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(sender.run(stop)) for sender in senders]
    await asyncio.sleep(seconds_before)
    outcome = await fault()
    await asyncio.sleep(seconds_after)
    stop.set()
    await asyncio.gather(*tasks)
    return outcome
