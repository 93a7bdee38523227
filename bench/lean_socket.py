"""A minimal Socket.IO-over-websocket client for the load generator, as light as it can be.

The generator shares the machine's two cores with the system it measures, so every cycle it
spends is taken from the gateways. This speaks just what the generator needs: the HTTP upgrade,
unfragmented text frames (masked, as RFC 6455 requires of a client), engine.io's open packet
and pings, and Socket.IO's connect. Each complete text frame goes to `on_frame` from the
protocol's `data_received`, with no task or coroutine resumed per frame.
"""

import asyncio
import base64
import json
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame, masked. The XOR runs on whole integers, not byte by byte."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return header + mask + masked


class LeanSocket(asyncio.Protocol):
    def __init__(self, on_frame: Callable[["LeanSocket", str], None]):
        self.on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.connected = asyncio.get_running_loop().create_future()
        self.next_ack = 0
        self._auth = ""

    @classmethod
    async def open(cls, url: str, token: str, on_frame: Callable[["LeanSocket", str], None]) -> "LeanSocket":
        """Connected as far as Socket.IO's CONNECT answer; frames then go to `on_frame`."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, socket = await loop.create_connection(lambda: cls(on_frame), parts.hostname, parts.port or 80)
        socket._auth = "40" + json.dumps({"token": token})
        key = base64.b64encode(os.urandom(16)).decode()
        socket.transport.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await asyncio.wait_for(socket.connected, 30)
        return socket

    def send_text(self, text: str) -> None:
        self.transport.write(client_frame(OPCODE_TEXT, text.encode()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OPCODE_CLOSE, b""))
            self.transport.close()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("connection lost before Socket.IO connected"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status_line:
                self.connected.set_exception(ConnectionError(status_line.decode(errors="replace")))
                self.transport.close()
                return
            self.upgraded = True
        self._read_frames()

    def _read_frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start: start + length])
            del buffer[: start + length]
            if opcode == OPCODE_TEXT:
                self._text(payload.decode())
            elif opcode == OPCODE_PING:
                self.transport.write(client_frame(OPCODE_PONG, payload))
            elif opcode == OPCODE_CLOSE:
                self.transport.close()
                return

    def _text(self, text: str) -> None:
        if text == "2":  # engine.io ping
            self.send_text("3")
        elif not self.connected.done():
            if text.startswith("0"):  # engine.io OPEN: now Socket.IO's CONNECT
                self.send_text(self._auth)
            elif text.startswith("40"):
                self.connected.set_result(None)
            elif text.startswith("44"):
                self.connected.set_exception(ConnectionError(text))
        else:
            self.on_frame(self, text)
