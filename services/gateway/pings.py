"""engine.io's pings and ping timeouts for every socket of a node, from one timer wheel.

python-engineio keeps a socket alive with a task per socket (`AsyncSocket._send_ping`: created
at each answered ping, asleep for the ping interval, then sending the ping through three
coroutines), and checks for silent clients in a service task that visits every socket once per
ping timeout through its own `asyncio.wait_for` (a task, a timer and a cancellation per socket
visited). Idle, that was 10.4 gateway CPU-µs a socket a second (2.6 % of a core per gateway
for 2,500 sockets each; `python -m bench.idle_bench --sockets 10000`), a quarter of a core at
25,000 sockets, and a pending task with its coroutine per socket in memory. With the wheel:
2.96 CPU-µs a socket a second, 0.76 % of a core a gateway, and 25.4 -> 23.6 KiB a socket (same
command; bench/RESULTS.md "Idle sockets", table of each change).

Here one loop wakes every `tick` seconds: the sockets whose ping is due get it written straight
to their queue (`PacketQueue`: to the websocket at once, or for the next poll), and the sockets
pinged `ping_timeout` ago that have not answered are closed, as engine.io's check would
(`PING_TIMEOUT`, with a CLOSE packet). Buckets hold sockets by the tick they are due in; a
closed socket is dropped from the server's table when its bucket comes, as the service task did.

The seam: `EngineIoServer` (server.py) takes engine.io's `start_background_task(socket._send_ping)`
as "ping this socket later", and runs this loop as its `_service_task`. pyproject.toml pins
python-engineio exactly; tests/unit/test_library_seams.py names both.
"""

import asyncio
import logging
import math
import time

from engineio import packet as eio_packet

log = logging.getLogger(__name__)


class PingWheel:
    def __init__(self, server, tick: float):
        self.server = server  # engine.io's AsyncServer: ping_interval, ping_timeout, sockets, reason
        self.tick = tick
        self._pings: dict[int, list] = {}  # tick -> sockets whose ping is due then
        self._checks: dict[int, list] = {}  # tick -> sockets pinged `ping_timeout` before it
        self._done = math.floor(time.time() / tick)  # the last tick served
        self._ping = eio_packet.Packet(eio_packet.PING)  # one packet for all: never changed once made
        self._closings: set[asyncio.Task] = set()

    def _bucket(self, buckets: dict[int, list], delay: float) -> list:
        slot = max(math.ceil((time.time() + delay) / self.tick), self._done + 1)
        bucket = buckets.get(slot)
        if bucket is None:
            bucket = buckets[slot] = []
        return bucket

    def ping_later(self, socket) -> None:
        """`socket` answered its ping (or has just opened): its next ping in `ping_interval`."""
        self._bucket(self._pings, self.server.ping_interval).append(socket)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.tick)
                break
            except asyncio.TimeoutError:
                pass
            try:
                self.turn()
            except Exception:  # one bad socket must not end everyone's pings
                log.exception("ping wheel turn failed")

    def turn(self) -> None:
        """Serves every tick that has passed since the last turn."""
        now = math.floor(time.time() / self.tick)
        for slot in range(self._done + 1, now + 1):
            self._done = slot
            for socket in self._checks.pop(slot, ()):
                self._check(socket)
            for socket in self._pings.pop(slot, ()):
                self._send(socket)

    def _send(self, socket) -> None:
        if socket.closed:
            self._forget(socket)
        elif not socket.closing:
            socket.last_ping = time.time()
            socket.queue.put_nowait(self._ping)
            self._bucket(self._checks, self.server.ping_timeout).append(socket)

    def _check(self, socket) -> None:
        if socket.closed:
            self._forget(socket)
            return
        last_ping = socket.last_ping  # None once answered (engine.io's `schedule_ping`)
        if socket.closing or last_ping is None or time.time() - last_ping < self.server.ping_timeout:
            return
        task = asyncio.ensure_future(
            socket.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT))
        self._closings.add(task)
        task.add_done_callback(lambda done: self._closed(done, socket))

    def _closed(self, task: asyncio.Task, socket) -> None:
        self._closings.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("closing a silent socket failed: %r", task.exception())
        self._forget(socket)

    def _forget(self, socket) -> None:
        if self.server.sockets.get(socket.sid) is socket:
            del self.server.sockets[socket.sid]
