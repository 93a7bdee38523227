"""Presence's internal routes: gateways report sockets and heartbeat; anyone asks who is online."""

from aiohttp import web

from ..shared.errors import parse_model
from ..shared.fast_json import json_response
from ..shared.limits import MAX_NODE_ID_LENGTH
from ..shared.models import Heartbeat, NodeSockets, PartnersQuery, PresenceEvents
from ..shared.params import text_param, user_id_param, user_ids_param
from ..shared.web import admits, json_body
from .app_keys import HANDLER

routes = web.RouteTableDef()


@routes.post("/internal/presence/events")
@admits("gateway")
async def socket_events(request: web.Request) -> web.Response:
    batch = parse_model(PresenceEvents, await json_body(request))
    online, offline, accepted = await request.app[HANDLER].sockets_changed(
        batch.node_id, batch.connected, batch.disconnected)
    return json_response({"online": online, "offline": offline, "accepted": accepted})


@routes.post("/internal/presence/heartbeat")
@admits("gateway")
async def heartbeat(request: web.Request) -> web.Response:
    beat = parse_model(Heartbeat, await json_body(request))
    return json_response({"resync": await request.app[HANDLER].heartbeat(beat.node_id)})


@routes.put("/internal/presence/nodes/{nodeId}")
@admits("gateway")
async def replace_node(request: web.Request) -> web.Response:
    listing = parse_model(NodeSockets, await json_body(request))
    online, offline, accepted = await request.app[HANDLER].node_resynced(node_id_param(request), listing.sockets)
    return json_response({"online": online, "offline": offline, "accepted": accepted})


@routes.delete("/internal/presence/nodes/{nodeId}")
@admits("gateway")
async def node_left(request: web.Request) -> web.Response:
    return json_response({"offline": await request.app[HANDLER].node_left(node_id_param(request))})


@routes.get("/internal/presence/online")
@admits("gateway")
async def online(request: web.Request) -> web.Response:
    return json_response({"online": await request.app[HANDLER].online_among(user_ids_param(request.query))})


@routes.get("/internal/presence/partners-online/{userId}")
@admits("gateway")
async def partners_online(request: web.Request) -> web.Response:
    user_id = user_id_param(request.match_info["userId"], "userId")
    return json_response({"online": await request.app[HANDLER].partners_online(user_id)})


@routes.post("/internal/presence/partners-online")
@admits("gateway")
async def partners_online_of_many(request: web.Request) -> web.Response:
    """`{"userIds": [...]}` -> `{"online": {userId: [partners online]}}`: what the sockets that
    connect together are told in `onlineUsers`, in one call (a connect storm's)."""
    query = parse_model(PartnersQuery, await json_body(request))
    return json_response({"online": await request.app[HANDLER].partners_online_of_many(query.user_ids)})


def node_id_param(request: web.Request) -> str:
    return text_param(request.match_info["nodeId"], "nodeId", low=1, high=MAX_NODE_ID_LENGTH)

