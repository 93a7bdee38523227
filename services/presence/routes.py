"""Presence's internal routes: gateways report sockets and heartbeat; anyone asks who is online."""

from aiohttp import web

from ..shared.errors import InvalidField, parse_model
from ..shared.fast_json import json_response
from ..shared.models import Heartbeat, NodeSockets, PresenceEvents
from ..shared.web import admits, json_body
from ..shared.params import text_param
from .app_keys import ANNOUNCER, STORE

routes = web.RouteTableDef()

# 100 ids of up to 64 characters stay under the 8 KB request line a server accepts.
MAX_IDS = 100



@routes.post("/internal/presence/events")
@admits("gateway")
async def socket_events(request: web.Request) -> web.Response:
    batch = parse_model(PresenceEvents, await json_body(request))
    online, offline = await request.app[STORE].apply_events(batch.node_id, batch.connected, batch.disconnected)
    await request.app[ANNOUNCER].announce(online, offline)
    return json_response({"online": online, "offline": offline})


@routes.post("/internal/presence/heartbeat")
@admits("gateway")
async def heartbeat(request: web.Request) -> web.Response:
    beat = parse_model(Heartbeat, await json_body(request))
    was_alive = await request.app[STORE].heartbeat(beat.node_id)
    # A node we did not know alive (new, swept as dead, or Redis lost our state) must send
    # its full socket list, which makes the state converge again.
    return json_response({"resync": not was_alive})


@routes.put("/internal/presence/nodes/{nodeId}")
@admits("gateway")
async def replace_node(request: web.Request) -> web.Response:
    node_id = text_param(request.match_info["nodeId"], "nodeId", low=1, high=64)
    listing = parse_model(NodeSockets, await json_body(request))
    online, offline = await request.app[STORE].replace_node(node_id, listing.sockets)
    await request.app[ANNOUNCER].announce(online, offline)
    return json_response({"online": online, "offline": offline})


@routes.delete("/internal/presence/nodes/{nodeId}")
@admits("gateway")
async def node_left(request: web.Request) -> web.Response:
    node_id = text_param(request.match_info["nodeId"], "nodeId", low=1, high=64)
    offline = await request.app[STORE].forget_node(node_id)
    await request.app[ANNOUNCER].announce([], offline)
    return json_response({"offline": offline})


@routes.get("/internal/presence/online")
@admits("gateway")
async def online(request: web.Request) -> web.Response:
    return json_response({"online": await request.app[STORE].online_among(ids_param(request))})


@routes.get("/internal/presence/partners-online/{userId}")
@admits("gateway")
async def partners_online(request: web.Request) -> web.Response:
    user_id = text_param(request.match_info["userId"], "userId", low=1, high=64)
    partners = await request.app[ANNOUNCER].partners(user_id)
    return json_response({"online": await request.app[STORE].online_among(partners)})


def ids_param(request: web.Request) -> list[str]:
    """`?ids=a,b,c`: up to MAX_IDS user ids."""
    raw = request.query.get("ids", "")
    ids = [text_param(part, "ids", low=1, high=64) for part in raw.split(",") if part.strip()]
    if len(ids) > MAX_IDS:
        raise InvalidField("ids", f"at most {MAX_IDS} ids")
    return list(dict.fromkeys(ids))
