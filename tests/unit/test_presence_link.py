"""The gateway's presence link keeps going after an error no call path expects."""

import asyncio

from prometheus_client import CollectorRegistry, Gauge

from services.gateway.presence_link import PresenceLink


class PresenceStandIn:
    """Presence's internal API as the link calls it: the first heartbeat's answer is not the JSON
    asked for (what aiohttp raises then is no ParleyError); then it answers, and records resyncs."""

    def __init__(self):
        self.heartbeats = 0
        self.resynced = asyncio.Event()

    async def call(self, method: str, path: str, **kwargs):
        if path == "/internal/presence/heartbeat":
            self.heartbeats += 1
            if self.heartbeats == 1:
                raise ValueError("Attempt to decode JSON with unexpected mimetype: text/html")
            return {"resync": False}
        if method == "PUT":
            self.resynced.set()
            return {"accepted": True}
        return {"accepted": True}


async def test_a_heartbeat_that_fails_unexpectedly_is_followed_by_a_resync():
    presence = PresenceStandIn()
    registry = CollectorRegistry()
    in_sync = Gauge("parley_test_presence_in_sync", "", registry=registry)
    link = PresenceLink(presence, "node-a", heartbeat_seconds=0.01, sockets={"sid1": "u1"}, in_sync=in_sync)
    link.start()
    try:
        await asyncio.wait_for(presence.resynced.wait(), 5)
    finally:
        await link.stop()
    assert presence.heartbeats >= 2
    assert registry.get_sample_value("parley_test_presence_in_sync") == 1
