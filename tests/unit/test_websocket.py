"""The engine.io socket queue of the gateway's websocket transport."""

import asyncio

from engineio import packet

from services.gateway.websocket import PacketQueue, websocket_frame


class Output:
    """Records what the queue hands over, as a socket's websocket output would write it."""

    def __init__(self):
        self.sent: list[str] = []

    def send(self, pkt: packet.Packet) -> None:
        self.sent.append(pkt.encode())


def message(text: str) -> packet.Packet:
    return packet.Packet(packet.MESSAGE, data=text)


async def test_before_a_websocket_it_is_a_queue_for_long_polling():
    queue = PacketQueue()
    await queue.put(message("a"))
    queue.put_nowait(message("b"))
    assert not queue.empty() and queue.qsize() == 2
    assert (await queue.get()).data == "a"
    queue.task_done()
    assert queue.get_nowait().data == "b"
    queue.task_done()
    await asyncio.wait_for(queue.join(), 1)
    assert queue.empty()


async def test_once_attached_queued_packets_go_first_then_each_at_once():
    queue, output = PacketQueue(), Output()
    queue.put_nowait(packet.Packet(packet.OPEN, {"sid": "s"}))
    queue.put_nowait(message("early"))

    assert queue.attach(output) is True
    await queue.put(message("late"))

    assert output.sent == ['0{"sid":"s"}', "4early", "4late"]
    assert queue.empty() and queue.qsize() == 0
    await asyncio.wait_for(queue.join(), 1)  # nothing is left for a writer to finish


async def test_told_to_stop_before_the_websocket_opened_it_never_attaches():
    queue, output = PacketQueue(), Output()
    queue.put_nowait(message("a"))
    queue.put_nowait(None)
    assert queue.attach(output) is False
    assert output.sent == ["4a"]


def test_frames_carry_their_length_in_the_form_rfc_6455_asks():
    assert websocket_frame("4hi") == b"\x81\x03" + b"4hi"
    assert websocket_frame(b"\x01\x02") == b"\x82\x02\x01\x02"
    assert websocket_frame("x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert websocket_frame("é" * 40000)[:10] == b"\x81\x7f" + (80000).to_bytes(8, "big")
