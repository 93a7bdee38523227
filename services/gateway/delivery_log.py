"""What of the change feed each socket of this node was written, and the recovery offset that
tells it (issue 20): one record per socket, kept where packets are written (`ParleyServer`).

The offset a feed event carries (its last argument; socket.io-client sends the last one back on
reconnection) is a resume point: `<settled>` or `<settled>+<d1>.<d2>...`, decimal deltas in the
order written. It says: the client has every feed event of its user up to position `settled`,
and the positions `settled + d` above it. Recovery replays what is above `settled` but those.

Why not just the event's own position: events reach a node in the order they were emitted, not
committed. A message through node b (position 101) can be held up one pub/sub hop while a later
one (102) is delivered by this node itself; a client that drops between the two holds 102, and a
replay "after 102" would lose 101 for good (tests/e2e/test_recovery.py, the overtaken event).
So a position counts as settled only SETTLE_SECONDS after it was written: by then every earlier
commit's emit has reached this node (a hop takes milliseconds), so nothing below it is still on
its way. What was written since is listed, at most MAX_UNSETTLED positions (a busy socket's
oldest ones are settled early: at 8 events within a second the race, one pub/sub hop, is still
far narrower than the window). A replay or a catch-up reads the feed itself, so what it writes
settles at once.

Known limit: a message to oneself is two events at one position (`messageSent`,
`receiveMessage`), written in the same turn; a drop between the two would replay neither.

A plain decimal offset (an older gateway's, during a rolling upgrade) still reads: settled there.

The same record serves the catch-up after a pub/sub outage (`catchup`): the last
RECENT_EVENTS_REMEMBERED (event, position) pairs written, and a floor below which everything was
written; a feed event written once (by a catch-up) is not written again when it comes live.
"""

import time
from collections import deque
from dataclasses import dataclass

from engineio import packet as eio_packet
from socketio.packet import EVENT

# The events whose last argument is a feed offset (see the recovery module).
FEED_EVENTS = frozenset({
    "receiveMessage", "messageSent", "messageDeleted", "messageEdited",
    "messagesRead", "groupRead", "groupUpdated", "memberAdded", "memberRemoved", "reactionUpdated",
})
# An emit reaches every node within this of any emit committed before it: one pub/sub hop (a
# few ms), with room for a busy event loop. A Redis outage is longer, and the catch-up's.
SETTLE_SECONDS = 1.0
MAX_UNSETTLED = 8  # positions listed in an offset: a few dozen characters
MAX_OFFSET_LENGTH = 19 + 1 + MAX_UNSETTLED * 20  # a bigint, "+", and deltas (each at most a bigint, and ".")
# Pairs remembered per socket for the catch-up: the live events of a few seconds' outage to a
# busy user; beyond it the oldest become the floor. A few KiB for a busy socket.
RECENT_EVENTS_REMEMBERED = 256

Written = tuple[str, int]  # (event, position)


@dataclass(frozen=True)
class ResumePoint:
    """What a client holds of its feed: everything up to `settled`, and `above`."""

    settled: int
    above: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: object) -> "ResumePoint | None":
        """The client's offset; None when absent. Raises ValueError when it is not one of ours."""
        if text is None:
            return None
        if not isinstance(text, str) or not text.isascii() or len(text) > MAX_OFFSET_LENGTH:
            raise ValueError("not a feed offset")
        settled, plus, deltas = text.partition("+")
        if not settled.isdigit() or len(settled) > 19 or (plus and not deltas):
            raise ValueError("not a feed offset")
        base = int(settled)
        above: list[int] = []
        for delta in deltas.split(".") if deltas else ():
            if not delta.isdigit() or len(delta) > 19 or int(delta) == 0 or len(above) == MAX_UNSETTLED:
                raise ValueError("not a feed offset")  # ours are above the settled one, at most MAX_UNSETTLED
            above.append(base + int(delta))
        return cls(base, frozenset(above))


class FeedPacket(eio_packet.Packet):
    """A feed event's packet before its offset is known: each socket's is written in at the
    moment the packet is written to it (`DeliveryLog.write`). `encoded` ends with the event's
    position as its offset (`...,"<position>"]`). `complete`: the writer read the feed itself (a
    replay, a catch-up), so everything below `position` is the socket's."""

    def __init__(self, encoded: str, event: str, position: int, complete: bool = False):
        super().__init__(eio_packet.MESSAGE, encoded)
        self.event = event
        self.position = position
        self.complete = complete
        self._head = encoded[:-len(str(position)) - 2]  # up to and with the offset's opening quote

    def with_offset(self, offset: str) -> eio_packet.Packet:
        return eio_packet.Packet(eio_packet.MESSAGE, f'{self._head}{offset}"]')


def event_packet(encoded: str, event: str, args: list) -> eio_packet.Packet:
    """The engine.io packet of an encoded event: a `FeedPacket` for a feed event."""
    position = feed_position(event, args)
    if position is None:
        return eio_packet.Packet(eio_packet.MESSAGE, encoded)
    return FeedPacket(encoded, event, position)


def replayed_packet(packet_class, event: list) -> FeedPacket:
    """A feed event read from the feed (`[name, payload, offset]`), for a replay or a catch-up."""
    return FeedPacket(packet_class(EVENT, namespace="/", data=event).encode(), event[0], int(event[-1]),
                      complete=True)


def feed_position(event: str, args: list) -> int | None:
    """The feed position an emit's last argument carries, for a feed event; else None."""
    if event not in FEED_EVENTS or not args or not isinstance(args[-1], str):
        return None
    offset = args[-1]
    return int(offset) if offset.isascii() and offset.isdigit() and len(offset) <= 19 else None


NOTHING_SEEN: frozenset[Written] = frozenset()


@dataclass(slots=True)
class SocketFeed:
    """One socket's record. Its deques and set are made with its first feed event: a socket that
    has none (most of them, idle) holds no empty ones (two empty deques, a set and an instance
    dict were 1.9 KB a socket, a twelfth of an idle socket's memory; `python -m bench.idle_bench`)."""

    floor: int | None  # the catch-up's: every change up to here is the client's; None: not known
    settled: int | None  # the resume point's (see the module docstring)
    unsettled: deque[tuple[int, float]] | tuple = ()  # (position, written at); a deque once any
    recent: deque[Written] | tuple = ()  # a deque (of at most RECENT_EVENTS_REMEMBERED) once any
    seen: set[Written] | frozenset = NOTHING_SEEN

    def remember(self, item: Written) -> None:
        if type(self.recent) is tuple:
            self.recent, self.seen = deque(maxlen=RECENT_EVENTS_REMEMBERED), set()
        if len(self.recent) == self.recent.maxlen:
            forgotten = self.recent[0]
            self.seen.discard(forgotten)
            self.floor = forgotten[1] if self.floor is None else max(self.floor, forgotten[1])
        self.recent.append(item)
        self.seen.add(item)

    def settle(self, position: int) -> None:
        self.settled = position if self.settled is None else max(self.settled, position)

    def offset(self, position: int, complete: bool, now: float) -> str:
        """The offset of `position`, written now (what `ResumePoint.parse` reads; made for every
        copy of every feed event, so kept cheap)."""
        unsettled = self.unsettled
        if type(unsettled) is tuple:
            unsettled = self.unsettled = deque()
        while unsettled and unsettled[0][1] <= now - SETTLE_SECONDS:
            self.settle(unsettled.popleft()[0])
        if complete:
            self.settle(position)
            while unsettled and unsettled[0][0] <= position:  # what the feed read covered
                unsettled.popleft()
        elif self.settled is None:
            self.settle(position - 1)  # no start known: as a plain offset would, take it all below
            unsettled.append((position, now))
        elif position > self.settled:
            unsettled.append((position, now))
            while len(unsettled) > MAX_UNSETTLED:
                self.settle(unsettled.popleft()[0])
        settled = self.settled
        above = [str(p - settled) for p, _ in unsettled if p > settled]  # in the order written
        return f"{settled}+" + ".".join(above) if above else str(settled)

    def known_floor(self) -> int | None:
        """Where a catch-up starts: the floor, or, when it is unknown, the oldest change written."""
        if self.floor is not None:
            return self.floor
        return min(offset for _, offset in self.recent) if self.recent else None


class DeliveryLog:
    """Per socket (Socket.IO sid): the feed events it was written (see the module docstring)."""

    def __init__(self, clock=time.monotonic):
        self.sockets: dict[str, SocketFeed] = {}
        self._clock = clock

    def start(self, sid: str, position: int | None) -> None:
        """The socket has every change up to `position` (None: not known)."""
        feed = self.sockets.setdefault(sid, SocketFeed(None, None))
        if position is not None:
            feed.floor = position if feed.floor is None else max(feed.floor, position)
            feed.settle(position)

    def resume(self, sid: str, point: ResumePoint) -> None:
        """A recovered socket's client has what its offset says."""
        self.start(sid, point.settled)
        now = self._clock()
        feed = self.sockets[sid]
        feed.unsettled = deque([*feed.unsettled, *((position, now) for position in sorted(point.above))])

    def write(self, sid: str, packet: FeedPacket) -> eio_packet.Packet | None:
        """The packet as this socket is written it (with its offset); None: it has it already."""
        feed = self.sockets.get(sid)
        if feed is None:
            feed = self.sockets[sid] = SocketFeed(None, None)
        item = (packet.event, packet.position)
        if item in feed.seen:
            return None
        feed.remember(item)
        return packet.with_offset(feed.offset(packet.position, packet.complete, self._clock()))

    def forget(self, sid: str) -> None:
        self.sockets.pop(sid, None)
