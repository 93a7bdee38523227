"""The gateway's HTTP side: the public API forwarded to history, CORS, and per-user REST rate limits.

Only the routes in `FORWARDED_ROUTES` reach history, each matched by the router on the decoded
path and forwarded to a URL built from its validated, quoted parameters: never the raw path.
A request line that spells a path in any way a server or a client library could normalise
differently (dot segments, encoded slashes, backslashes, double encoding, NUL, `;`, `//`) is
refused before routing by `raw_path_guard`.
"""

import asyncio
import logging
import re
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from ..shared.auth import token_from_headers
from ..shared.emoji import EMOJI_RULE, is_emoji
from ..shared.errors import ErrorCode, InvalidField, ServiceUnavailable, Unauthorized, error_response
from ..shared.fast_json import json_response
from ..shared.internal import REQUEST_ID_HEADER
from ..shared.logs import request_id_var
from ..shared.params import message_id, user_id_param, user_ids_param
from ..shared.push import parse_conversation
from .app_keys import CHAT, HISTORY_API, REST_LIMITER, SETTINGS, VERIFIER

log = logging.getLogger(__name__)

# History's public routes, as (method, route): the gateway forwards these and nothing else.
FORWARDED_ROUTES = (
    ("GET", "/api/messages/conversations"),
    ("GET", "/api/messages/sync"),
    ("GET", "/api/messages/search"),
    ("PUT", "/api/messages/read/{userId}"),
    ("DELETE", "/api/messages/{messageId}"),
    # Reactions and edits (issue 16).
    ("PUT", "/api/messages/{messageId}"),
    ("PUT", "/api/messages/{messageId}/reactions/{emoji}"),
    ("DELETE", "/api/messages/{messageId}/reactions/{emoji}"),
    ("GET", "/api/messages/{userId}"),
    ("GET", "/api/users/lookup"),
    ("GET", "/api/users/{userId}"),
    # Group conversations (issue 15).
    ("POST", "/api/groups"),
    ("GET", "/api/groups/{groupId}"),
    ("PATCH", "/api/groups/{groupId}"),
    ("POST", "/api/groups/{groupId}/members"),
    ("DELETE", "/api/groups/{groupId}/members/{userId}"),
    ("PUT", "/api/groups/{groupId}/members/{userId}"),
    ("GET", "/api/groups/{groupId}/messages"),
    ("PUT", "/api/groups/{groupId}/read"),
    # Push notifications (issue 18).
    ("GET", "/api/push/vapid-public-key"),
    ("POST", "/api/push/subscriptions"),
    ("DELETE", "/api/push/subscriptions"),
    ("GET", "/api/push/settings"),
    ("PUT", "/api/push/settings"),
    ("PUT", "/api/conversations/{conversationId}/mute"),
    ("DELETE", "/api/conversations/{conversationId}/mute"),
)
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Link", "Retry-After")

# In the path of a request line: an encoded dot, slash, backslash, NUL or percent (double
# encoding); a backslash, NUL or `;` as such; an empty segment; a `.` or `..` segment.
SUSPICIOUS_PATH = re.compile(r"%(2e|2f|5c|00|25)|[\\;\x00]|//|(^|/)\.{1,2}(/|$)", re.IGNORECASE)


def add_forwarded_routes(router: web.UrlDispatcher) -> None:
    for method, route in FORWARDED_ROUTES:
        router.add_route(method, route, forward_to(route))


def forward_to(route: str):
    async def forward(request: web.Request) -> web.Response:
        return await forward_api(request, upstream_path(route, request.match_info))

    return forward


def upstream_path(route: str, params: dict[str, str]) -> str:
    """The history path for a matched route: each parameter validated for its kind, then quoted."""
    checked = {}
    for name, value in params.items():
        if name == "messageId":
            value = str(message_id(value))
        elif name == "conversationId":
            parse_conversation(value)  # user:<id> or group:<id>
        elif name == "emoji":
            if not is_emoji(value):  # decoded by the router; quoted again below
                raise InvalidField("emoji", EMOJI_RULE)
        else:
            user_id_param(value, name)
        checked[name] = quote(value, safe="")
    return route.format(**checked)


async def forward_api(request: web.Request, path: str) -> web.Response:
    """To history with the user's identity (their token as a Bearer), never a service token."""
    request.app[REST_LIMITER].check(rate_limit_key(request))
    body = await request.read()
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
    if (token := token_from_headers(request.headers)) is not None:
        headers["Authorization"] = f"Bearer {token}"
    if (request_id := request_id_var.get()) is not None:
        headers[REQUEST_ID_HEADER] = request_id
    query = urlencode(list(request.query.items()))
    history = request.app[HISTORY_API]
    url = history.base_url + path + (f"?{query}" if query else "")
    try:
        async with history.session.request(request.method, url, data=body or None, headers=headers) as answer:
            payload = await answer.read()
            out_headers = {name: answer.headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in answer.headers}
            return web.Response(status=answer.status, body=payload, headers=out_headers)
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
        log.warning("forwarding %s %s failed: %r", request.method, request.match_info.route.resource.canonical, exc)
        raise ServiceUnavailable("The history service is unavailable") from None


@web.middleware
async def raw_path_guard(request: web.Request, handler) -> web.StreamResponse:
    """The outermost middleware: a path that could be normalised into another never reaches a route."""
    raw_path = request.raw_path.partition("?")[0]
    if SUSPICIOUS_PATH.search(raw_path):
        log.warning("refused a request path with dot segments or encoded separators")
        return error_response(400, "Malformed request path", ErrorCode.INVALID_PAYLOAD)
    return await handler(request)


async def presence_of(request: web.Request) -> web.Response:
    """`GET /api/presence?ids=a,b`: which of these users, of those the asker may see, are online now."""
    user_id = request.app[VERIFIER].user_id(token_from_headers(request.headers))
    request.app[REST_LIMITER].check(rate_limit_key(request))
    if not (ids := user_ids_param(request.query)):
        raise InvalidField("ids", "is required: comma-separated user ids")
    chat = request.app[CHAT]
    chat.presence_limiter.check(user_id)  # as watchPresence: the same history call
    visible = await chat.visible_to(user_id, set(ids))
    return json_response({"online": await chat.presence.online_among([i for i in ids if i in visible])})


def rate_limit_key(request: web.Request) -> str:
    """The user when the token is good (history will check it again), else the peer address."""
    try:
        return "user:" + request.app[VERIFIER].user_id(token_from_headers(request.headers))
    except Unauthorized:
        return "peer:" + (request.remote or "unknown")


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Credentials may be sent only from the allow-listed origins (`CORS_ORIGINS`)."""
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin_allowed(request.app, origin)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return json_response({"message": "Origin not allowed", "code": "forbidden"}, status=403)
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-Id"
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


def origin_allowed(app: web.Application, origin: str) -> bool:
    origins = app[SETTINGS].cors_origin_list
    return "*" in origins or origin in origins
