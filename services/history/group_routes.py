"""History's group routes: the public REST API of issue 15 (user JWT) and the gateway's member
lookup for typing (internal). Thin: parse, call the group handler or store, shape the answer."""

from aiohttp import web

from ..shared.errors import InvalidField, parse_model
from ..shared.fast_json import json_response
from ..shared.limits import GROUP_ID_RULE, valid_group_id
from ..shared.params import cursor_param, limit_param
from ..shared.web import admits, json_body
from .app_keys import GROUP_HANDLER, GROUPS
from .group_models import AddMembers, CreateGroup, SetRole, UpdateGroup
from .routes import CONVERSATION_PAGE, current_user, path_user_id, with_next_link

public_group_routes = web.RouteTableDef()
internal_group_routes = web.RouteTableDef()


def group_id_param(request: web.Request) -> int:
    value = request.match_info["groupId"]
    if not valid_group_id(value):
        raise InvalidField("groupId", GROUP_ID_RULE)
    return int(value)


@public_group_routes.post("/api/groups")
async def create_group(request: web.Request) -> web.Response:
    me = current_user(request)
    payload = parse_model(CreateGroup, await json_body(request))
    return json_response(await request.app[GROUP_HANDLER].create_group(me, payload), status=201)


@public_group_routes.get("/api/groups/{groupId}")
async def get_group(request: web.Request) -> web.Response:
    me = current_user(request)
    return json_response(await request.app[GROUPS].group(me, group_id_param(request)))


@public_group_routes.patch("/api/groups/{groupId}")
async def update_group(request: web.Request) -> web.Response:
    me = current_user(request)
    group_id = group_id_param(request)
    payload = parse_model(UpdateGroup, await json_body(request))
    return json_response(await request.app[GROUP_HANDLER].update_group(me, group_id, payload))


@public_group_routes.post("/api/groups/{groupId}/members")
async def add_members(request: web.Request) -> web.Response:
    me = current_user(request)
    group_id = group_id_param(request)
    payload = parse_model(AddMembers, await json_body(request))
    return json_response(await request.app[GROUP_HANDLER].add_members(me, group_id, list(payload.user_ids)))


@public_group_routes.delete("/api/groups/{groupId}/members/{userId}")
async def remove_member(request: web.Request) -> web.Response:
    me = current_user(request)
    group_id, user_id = group_id_param(request), path_user_id(request)
    await request.app[GROUP_HANDLER].remove_member(me, group_id, user_id)
    return json_response({"message": "Member removed", "groupId": str(group_id), "userId": user_id})


@public_group_routes.put("/api/groups/{groupId}/members/{userId}")
async def set_role(request: web.Request) -> web.Response:
    me = current_user(request)
    group_id, user_id = group_id_param(request), path_user_id(request)
    payload = parse_model(SetRole, await json_body(request))
    return json_response(await request.app[GROUP_HANDLER].set_role(me, group_id, user_id, payload.role))


@public_group_routes.get("/api/groups/{groupId}/messages")
async def group_page(request: web.Request) -> web.Response:
    me = current_user(request)
    group_id = group_id_param(request)
    limit = limit_param(request.query, CONVERSATION_PAGE)
    before = cursor_param(request.query, "before")
    messages, has_more = await request.app[GROUPS].fetch_page(me, group_id, before, limit)
    return with_next_link(request, messages, has_more, "before", messages[0]["_id"] if messages else None)


@public_group_routes.put("/api/groups/{groupId}/read")
async def mark_group_read(request: web.Request) -> web.Response:
    me = current_user(request)
    count, up_to = await request.app[GROUP_HANDLER].mark_read(me, group_id_param(request))
    return json_response({"count": count, "upTo": up_to})


@internal_group_routes.get("/internal/groups/{groupId}/members")
@admits("gateway")
async def group_members(request: web.Request) -> web.Response:
    """The member ids now: the gateway checks and fans out typing with it (cached a few seconds)."""
    return json_response({"memberIds": await request.app[GROUPS].member_ids(group_id_param(request))})
