"""Each socket's record of the feed (services/gateway/delivery_log.py): the offsets it is written,
what a catch-up takes it to have missed, and what the live path skips after a catch-up."""

import pytest

from services.gateway.delivery_log import (MAX_UNSETTLED, RECENT_EVENTS_REMEMBERED, SETTLE_SECONDS, DeliveryLog,
                                           FeedPacket, ResumePoint, event_packet)
from services.gateway.server import WirePacket


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def packet(position: int, event: str = "receiveMessage", complete: bool = False) -> FeedPacket:
    data = [event, {"_id": str(position), "text": 'a "quoted" text'}, str(position)]
    return FeedPacket(WirePacket(data=data).encode(), event, position, complete)


def offset_of(written) -> str:
    """The offset a written packet carries: its last argument."""
    return _last_argument(written.data)


def _last_argument(encoded: str) -> str:
    import orjson
    return orjson.loads(encoded[1:])[-1]


def test_an_offset_is_the_settled_position_and_what_is_written_above_it():
    clock = Clock()
    log = DeliveryLog(clock)
    log.start("s1", 100)
    first = log.write("s1", packet(102))
    # The payload is kept byte for byte; only the offset is this socket's.
    assert first.data.startswith('2["receiveMessage",{"_id":"102","text":"a \\"quoted\\" text"},"')
    assert _last_argument(first.data) == "100+2"
    assert ResumePoint.parse("100+2") == ResumePoint(100, frozenset({102}))
    assert _last_argument(log.write("s1", packet(101)).data) == "100+2.1"  # overtaken, still listed
    clock.now += SETTLE_SECONDS
    # A second later nothing older can still be on its way: 101 and 102 settle.
    assert _last_argument(log.write("s1", packet(140)).data) == "102+38"


def test_a_replay_or_catch_up_settles_what_it_writes_at_once():
    log = DeliveryLog(Clock())
    log.start("s1", 100)
    log.write("s1", packet(103))
    assert _last_argument(log.write("s1", packet(101, complete=True)).data) == "101+2"
    assert _last_argument(log.write("s1", packet(105, complete=True)).data) == "105"


def test_a_busy_socket_lists_at_most_the_newest_positions():
    log = DeliveryLog(Clock())
    log.start("s1", 0)
    for position in range(1, 40):
        written = log.write("s1", packet(position))
    point = ResumePoint.parse(_last_argument(written.data))
    assert len(point.above) == MAX_UNSETTLED and point.settled == 39 - MAX_UNSETTLED
    assert point.above == frozenset(range(40 - MAX_UNSETTLED, 40))


def test_a_recovered_socket_starts_from_what_its_offset_says():
    clock = Clock()
    log = DeliveryLog(clock)
    log.resume("s1", ResumePoint(100, frozenset({102, 104})))
    assert _last_argument(log.write("s1", packet(101, complete=True)).data) == "101+1.3"
    assert _last_argument(log.write("s1", packet(103, complete=True)).data) == "103+1"


def test_a_socket_without_a_known_start_takes_everything_below_its_first_event():
    log = DeliveryLog(Clock())
    assert _last_argument(log.write("s1", packet(40)).data) == "39+1"


def test_a_feed_event_written_once_is_skipped_when_it_comes_again():
    log = DeliveryLog(Clock())
    log.start("s1", 10)
    assert log.write("s1", packet(11)) is not None
    assert log.write("s1", packet(11)) is None
    # Same position, another event (a message to oneself is both): written.
    assert log.write("s1", packet(11, "messageSent")) is not None
    assert log.sockets["s1"].seen == {("receiveMessage", 11), ("messageSent", 11)}


def test_only_feed_events_get_an_offset_of_their_socket():
    def encoded(data: list) -> str:
        return WirePacket(data=data).encode()

    feed = event_packet(encoded(["messageDeleted", {"_id": "3"}, "9"]), "messageDeleted", [{"_id": "3"}, "9"])
    assert isinstance(feed, FeedPacket) and feed.position == 9
    for data in (["userTyping", "9"], ["onlineUsers", ["u1"]], ["messagesRead", {"count": 1}]):
        assert not isinstance(event_packet(encoded(data), data[0], data[1:]), FeedPacket)


def test_the_catch_up_floor_is_the_start_then_the_newest_forgotten_position():
    log = DeliveryLog(Clock())
    log.start("s1", 5)
    assert log.sockets["s1"].known_floor() == 5
    for position in range(6, 6 + RECENT_EVENTS_REMEMBERED + 3):
        log.write("s1", packet(position))
    assert log.sockets["s1"].known_floor() == 8  # 6, 7 and 8 forgotten: taken as written
    assert len(log.sockets["s1"].seen) == RECENT_EVENTS_REMEMBERED
    log.forget("s1")
    assert "s1" not in log.sockets


@pytest.mark.parametrize("offset, point", [("15", ResumePoint(15)), ("15+1", ResumePoint(15, frozenset({16}))),
                                           ("15+10.1.1295", ResumePoint(15, frozenset({25, 16, 1310}))),
                                           ("0+1", ResumePoint(0, frozenset({1})))])
def test_offsets_of_ours_read(offset, point):
    assert ResumePoint.parse(offset) == point


@pytest.mark.parametrize("offset", ["u2", "-1", "1.5", "9" * 20, 15, "١٢", "15+", "15+0", "15+A", "15+1..2",
                                    "+1", "15+" + ".".join("1" * (MAX_UNSETTLED + 1)), "15+" + "z" * 14, "15++1"])
def test_anything_else_is_not_an_offset(offset):
    with pytest.raises(ValueError):
        ResumePoint.parse(offset)
