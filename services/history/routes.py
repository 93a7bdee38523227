"""History's HTTP routes: the public REST API (user JWT, on PORT) and the internal one (a
caller's service token, on INTERNAL_PORT). The two tables are served by two listeners."""

from urllib.parse import urlencode

from aiohttp import web

from ..shared.auth import TokenVerifier, token_from_headers
from ..shared.errors import InvalidField, ParleyError, parse_model
from ..shared.fast_json import json_response
from ..shared.limits import MAX_REPLAY_EVENTS, MAX_USER_NAME_LENGTH
from ..shared.emoji import EMOJI_RULE, is_emoji
from ..shared.models import (CallParties, InternalMarkRead, InternalReaction, PartnersQuery, ReplayRequests, StoreMessage,
                             StoreMessages)
from ..shared.params import PageSize, cursor_param, limit_param, message_id, text_param, user_id_param
from ..shared.web import admits, json_body
from .app_keys import HANDLER, OPENAPI_JSON, RELAY, STORE, VERIFIER
from .models import EditMessage, UserProfile
from .store import Stored

public_routes = web.RouteTableDef()
internal_routes = web.RouteTableDef()

CONVERSATION_PAGE = PageSize(default=50, most=200)
CONVERSATIONS_PAGE = PageSize(default=100, most=500)
SYNC_PAGE = PageSize(default=100, most=500)
# A recovering socket is replayed at most RECOVERY_MAX_EVENTS (a gateway setting) changes.
REPLAY_PAGE = PageSize(default=1000, most=MAX_REPLAY_EVENTS)
SEARCH_PAGE = PageSize(default=20, most=100)
USERS_PAGE = PageSize(default=100, most=1000)
MAX_QUERY_LENGTH = 256


def current_user(request: web.Request) -> str:
    verifier: TokenVerifier = request.app[VERIFIER]
    return verifier.user_id(token_from_headers(request.headers))


def path_user_id(request: web.Request) -> str:
    return user_id_param(request.match_info["userId"], "userId")


def with_next_link(request: web.Request, body: object, has_more: bool, cursor_name: str, cursor: str | None):
    """A JSON answer; when there is more, `Link: <...>; rel="next"` points at the next page."""
    response = json_response(body)
    if has_more and cursor is not None:
        query = {**request.query, cursor_name: cursor}
        response.headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
    return response


# --- public --------------------------------------------------------------------------------


@public_routes.get("/api/messages/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    me = current_user(request)
    limit = limit_param(request.query, CONVERSATIONS_PAGE)
    before = cursor_param(request.query, "before")
    conversations, next_cursor = await request.app[STORE].list_conversations(me, before, limit)
    return with_next_link(request, conversations, next_cursor is not None, "before", next_cursor)


@public_routes.get("/api/messages/sync")
async def sync(request: web.Request) -> web.Response:
    me = current_user(request)
    after = cursor_param(request.query, "after")
    if after is None:
        raise InvalidField("after", "is required: the id of the last message you have")
    limit = limit_param(request.query, SYNC_PAGE)
    return json_response(await request.app[STORE].sync(me, after, limit))


@public_routes.get("/api/messages/search")
async def search(request: web.Request) -> web.Response:
    me = current_user(request)
    query = text_param(request.query.get("q", ""), "q", low=1, high=MAX_QUERY_LENGTH)
    limit = limit_param(request.query, SEARCH_PAGE)
    before = cursor_param(request.query, "before")
    messages, has_more = await request.app[STORE].search(me, query, before, limit)
    return with_next_link(request, messages, has_more, "before", messages[-1]["_id"] if messages else None)


@public_routes.put("/api/messages/read/{userId}")
async def mark_read(request: web.Request) -> web.Response:
    me = current_user(request)
    partner = path_user_id(request)
    count, up_to = await request.app[HANDLER].mark_read(me, partner)
    return json_response({"message": "Messages marked as read", "count": count, "upTo": up_to})


@public_routes.delete("/api/messages/{messageId}")
async def delete_message(request: web.Request) -> web.Response:
    me = current_user(request)
    deleted = await request.app[HANDLER].delete_message(me, message_id(request.match_info["messageId"]))
    return json_response({"message": "Message deleted", **deleted})


@public_routes.put("/api/messages/{messageId}")
async def edit_message(request: web.Request) -> web.Response:
    me = current_user(request)
    target = message_id(request.match_info["messageId"])
    payload = parse_model(EditMessage, await json_body(request))
    return json_response(await request.app[HANDLER].edit_message(me, target, payload.text))


def path_emoji(request: web.Request) -> str:
    """The `{emoji}` path segment, percent-decoded by the router: exactly one emoji."""
    emoji = request.match_info["emoji"]
    if not is_emoji(emoji):
        raise InvalidField("emoji", EMOJI_RULE)
    return emoji


@public_routes.put("/api/messages/{messageId}/reactions/{emoji}")
async def react(request: web.Request) -> web.Response:
    return await set_reaction(request, add=True)


@public_routes.delete("/api/messages/{messageId}/reactions/{emoji}")
async def unreact(request: web.Request) -> web.Response:
    return await set_reaction(request, add=False)


async def set_reaction(request: web.Request, add: bool) -> web.Response:
    me = current_user(request)
    target, emoji = message_id(request.match_info["messageId"]), path_emoji(request)
    reactions = await request.app[HANDLER].set_reaction(me, target, emoji, add=add)
    return json_response({"messageId": str(target), "reactions": reactions})


@public_routes.get("/api/messages/{userId}")
async def conversation_page(request: web.Request) -> web.Response:
    me = current_user(request)
    partner = path_user_id(request)
    limit = limit_param(request.query, CONVERSATION_PAGE)
    before = cursor_param(request.query, "before")
    messages, has_more = await request.app[STORE].fetch_page(me, partner, before, limit)
    return with_next_link(request, messages, has_more, "before", messages[0]["_id"] if messages else None)


@public_routes.get("/api/users/lookup")
async def lookup_user(request: web.Request) -> web.Response:
    current_user(request)
    user_name = text_param(request.query.get("userName", ""), "userName", low=1, high=MAX_USER_NAME_LENGTH)
    return json_response(await request.app[STORE].find_user(user_name=user_name))


@public_routes.get("/api/users/{userId}")
async def get_user(request: web.Request) -> web.Response:
    current_user(request)
    return json_response(await request.app[STORE].find_user(user_id=path_user_id(request)))


@public_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_JSON], content_type="application/json")


# --- internal ------------------------------------------------------------------------------


@internal_routes.post("/internal/messages")
@admits("gateway")
async def store_message(request: web.Request) -> web.Response:
    payload = parse_model(StoreMessage, await json_body(request))
    [result] = await request.app[STORE].create_messages([payload])
    request.app[RELAY].wake()
    if isinstance(result, ParleyError):
        raise result
    return json_response(stored_json(result))


@internal_routes.post("/internal/messages/batch")
@admits("gateway")
async def store_messages(request: web.Request) -> web.Response:
    """The gateway's group commit: the messages its sockets sent meanwhile, in one statement.

    Answers one result per message, in order: `{"message", "created"}` (and `recipients`, the
    other members, for a group message created now) or `{"error", "status"}`.
    """
    payload = parse_model(StoreMessages, await json_body(request))
    results = await request.app[STORE].create_messages(list(payload.messages))
    request.app[RELAY].wake()  # notifications for those who are not looking (push_relay.py)
    return json_response({"results": [
        {"error": result.body(), "status": result.status} if isinstance(result, ParleyError) else stored_json(result)
        for result in results
    ]})


def stored_json(stored: Stored) -> dict:
    answer = {"message": stored.message, "created": stored.created}
    if stored.recipients is not None:
        answer["recipients"] = stored.recipients
    return answer


@internal_routes.post("/internal/read")
@admits("gateway")
async def internal_mark_read(request: web.Request) -> web.Response:
    payload = parse_model(InternalMarkRead, await json_body(request))
    count, up_to = await request.app[HANDLER].mark_read(payload.reader_id, payload.partner_id)
    return json_response({"count": count, "upTo": up_to})


@internal_routes.post("/internal/reactions")
@admits("gateway")
async def internal_reaction(request: web.Request) -> web.Response:
    """A socket's `react` / `unreact`, on behalf of `userId`: answers `{messageId, reactions}` (theirs)."""
    payload = parse_model(InternalReaction, await json_body(request))
    target = int(payload.message_id)
    reactions = await request.app[HANDLER].set_reaction(payload.user_id, target, payload.emoji, add=payload.add)
    return json_response({"messageId": str(target), "reactions": reactions})


@internal_routes.post("/internal/calls/parties")
@admits("gateway")
async def call_parties(request: web.Request) -> web.Response:
    """A `callUser`'s two profiles, or why the caller may not call: as a 1:1 message, both must be known."""
    payload = parse_model(CallParties, await json_body(request))
    return json_response(await request.app[STORE].call_parties(payload.caller_id, payload.callee_id))


@internal_routes.put("/internal/users/{userId}")
@admits("admin")
async def upsert_user(request: web.Request) -> web.Response:
    body = await json_body(request)
    if isinstance(body, dict):
        body = {**body, "_id": request.match_info["userId"]}
    profile = parse_model(UserProfile, body)
    return json_response(await request.app[STORE].upsert_user(profile))


@internal_routes.get("/internal/users")
@admits("gateway", "admin")
async def list_users(request: web.Request) -> web.Response:
    """The directory (development sign-in), or the one profile with `?userName=`."""
    if "userName" in request.query:
        user_name = text_param(request.query["userName"], "userName", low=1, high=MAX_USER_NAME_LENGTH)
        return json_response([await request.app[STORE].find_user(user_name=user_name)])
    limit = limit_param(request.query, USERS_PAGE)
    return json_response(await request.app[STORE].list_users(limit))


@internal_routes.post("/internal/partners")
@admits("gateway", "presence")
async def partners_of_many(request: web.Request) -> web.Response:
    query = parse_model(PartnersQuery, await json_body(request))
    return json_response({"partners": await request.app[STORE].partner_ids_of_many(query.user_ids)})


@internal_routes.get("/internal/users/{userId}/replay")
@admits("gateway")
async def replay(request: web.Request) -> web.Response:
    """What the user's sockets heard after `after` (a change-feed position), for a socket that
    recovers its connection: `{"events": [[event, data, offset], ...], "hasMore": bool}`."""
    after = cursor_param(request.query, "after")
    if after is None:
        raise InvalidField("after", "is required: the feed position the socket has")
    limit = limit_param(request.query, REPLAY_PAGE)
    events, has_more = await request.app[HANDLER].replay(path_user_id(request), after, limit)
    return json_response({"events": events, "hasMore": has_more})


@internal_routes.post("/internal/replay")
@admits("gateway")
async def replay_many(request: web.Request) -> web.Response:
    """The replays of recovering sockets that arrived together: `{"requests": [{"userId", "after"}],
    "limit"}` answered `{"results": [{"events", "hasMore"}, ...]}` in order, each as
    `GET /internal/users/{userId}/replay` answers, with one statement of each kind for them all."""
    payload = parse_model(ReplayRequests, await json_body(request))
    results = await request.app[HANDLER].replay_many(
        [(each.user_id, message_id(each.after, "after")) for each in payload.requests], payload.limit)
    return json_response({"results": [{"events": events, "hasMore": has_more} for events, has_more in results]})


@internal_routes.get("/internal/feed/head")
@admits("gateway")
async def feed_head(request: web.Request) -> web.Response:
    """The change feed's settled head: `{"head": "123"}` (a new socket's starting point)."""
    return json_response({"head": str(await request.app[STORE].settled_head())})


@internal_routes.get("/internal/users/{userId}/partners")
@admits("gateway", "presence")
async def partners(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].partner_ids(path_user_id(request)))

