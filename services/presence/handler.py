"""What presence does with a gateway's report: record it, then announce who came and went.

Routes parse and answer; the store only records; the announcer tells the people who care.
"""

from .announcer import PresenceAnnouncer
from .store import PresenceStore

Sockets = list[tuple[str, str]]  # (sid, user id)


class PresenceHandler:
    def __init__(self, store: PresenceStore, announcer: PresenceAnnouncer):
        self._store = store
        self._announcer = announcer

    async def sockets_changed(self, node_id: str, connected: Sockets, disconnected: Sockets) -> tuple[list, list, bool]:
        """A node's batch of socket changes: the users who came online and went offline, and
        whether its sockets were taken (not from a node whose liveness lapsed: it resyncs)."""
        online, offline, accepted = await self._store.apply_events(node_id, connected, disconnected)
        await self._announcer.announce(online, offline)
        return online, offline, accepted

    async def node_resynced(self, node_id: str, sockets: Sockets) -> tuple[list, list, bool]:
        """The node's full list replaces what was recorded of it (as `sockets_changed`)."""
        online, offline, accepted = await self._store.replace_node(node_id, sockets)
        await self._announcer.announce(online, offline)
        return online, offline, accepted

    async def node_left(self, node_id: str) -> list[str]:
        offline = await self._store.forget_node(node_id)
        await self._announcer.announce([], offline)
        return offline

    async def sweep(self) -> list[str]:
        """Forgets the nodes that stopped heartbeating; their users' partners hear them go."""
        offline = await self._store.sweep_dead_nodes()
        await self._announcer.announce([], offline)
        return offline

    async def heartbeat(self, node_id: str) -> bool:
        """True when the node must resync: presence holds no sockets of it, and the node's full
        socket list makes the state converge again.

        The heartbeat is not the node's liveness (the node keeps its own key, which the sweep
        reads), so presence knows it lost a node's state by the node's absence from the set of
        known nodes: a node is added to it with its first report (or resync) and taken out by
        the sweep that forgets it (its liveness lapsed) or when it leaves; a node that is new, or
        a Redis that restarted empty, has it missing too.
        """
        return not await self._store.knows(node_id)

    async def online_among(self, user_ids: list[str]) -> list[str]:
        return await self._store.online_among(user_ids)

    async def partners_online(self, user_id: str) -> list[str]:
        return await self._store.online_among(await self._announcer.partners(user_id))

    async def partners_online_of_many(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Each user's partners who are online: one history call and one Redis read for all."""
        partners = await self._announcer.partners_of_many(user_ids)
        online = set(await self._store.online_among(sorted({p for ids in partners.values() for p in ids})))
        return {user_id: [p for p in partners.get(user_id, []) if p in online] for user_id in user_ids}
