"""What a catch-up takes a socket to have missed, and what the live path skips after it."""

from services.gateway.catchup import RECENT_EVENTS_REMEMBERED, DeliveryLog


def test_a_feed_event_written_once_is_skipped_when_it_comes_again():
    log = DeliveryLog()
    log.start("s1", 10)
    assert log.admit("s1", "receiveMessage", [{"_id": "11"}, "11"]) is True
    assert log.admit("s1", "receiveMessage", [{"_id": "11"}, "11"]) is False
    # Same offset, another event (a message to oneself is both): written.
    assert log.admit("s1", "messageSent", [{"_id": "11"}, "11"]) is True
    # Not feed events: always written, never remembered.
    assert log.admit("s1", "userTyping", ["u2", None]) is True
    assert log.admit("s1", "messagesRead", [{"count": 1}]) is True
    assert log.sockets["s1"].seen == {("receiveMessage", 11), ("messageSent", 11)}


def test_the_floor_is_the_start_then_the_newest_forgotten_offset():
    log = DeliveryLog()
    log.start("s1", 5)
    assert log.sockets["s1"].known_floor() == 5
    for offset in range(6, 6 + RECENT_EVENTS_REMEMBERED + 3):
        log.admit("s1", "receiveMessage", [{}, str(offset)])
    assert log.sockets["s1"].known_floor() == 8  # 6, 7 and 8 forgotten: taken as written
    assert len(log.sockets["s1"].seen) == RECENT_EVENTS_REMEMBERED


def test_a_socket_without_a_known_start_starts_at_its_oldest_event():
    log = DeliveryLog()
    log.start("s1", None)
    assert log.sockets["s1"].known_floor() is None
    log.admit("s1", "receiveMessage", [{}, "40"])
    log.admit("s1", "receiveMessage", [{}, "42"])
    assert log.sockets["s1"].known_floor() == 40
    log.forget("s1")
    assert "s1" not in log.sockets
