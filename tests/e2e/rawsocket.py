"""A raw engine.io/Socket.IO websocket, for frames no well-behaved client library would send."""

import json

import aiohttp


class RawSocket:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.http = http
        self.ws = ws

    @classmethod
    async def open(cls, base_url: str, token: str) -> "RawSocket":
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(base_url + "/socket.io/?EIO=4&transport=websocket")
        opened = await ws.receive_str(timeout=5)
        assert opened.startswith("0{"), opened
        await ws.send_str("40" + json.dumps({"token": token}))
        connected = await ws.receive_str(timeout=5)
        assert connected.startswith("40{"), connected
        return cls(http, ws)

    async def send_event(self, raw_json_array: str, ack_id: int = 1) -> None:
        await self.ws.send_str(f"42{ack_id}{raw_json_array}")

    async def receive_until_ack(self, ack_id: int = 1, timeout: float = 5) -> list | None:
        """The ack's arguments, or None when the server closed the socket instead."""
        while True:
            message = await self.ws.receive(timeout=timeout)
            if message.type != aiohttp.WSMsgType.TEXT or message.data == "1":  # engine.io CLOSE
                return None
            if message.data == "2":  # engine.io ping
                await self.ws.send_str("3")
            elif message.data.startswith(f"43{ack_id}"):
                return json.loads(message.data[len(f"43{ack_id}"):])

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()
