"""The gateway's HTTP side: `/api/*` forwarded to history, CORS, and per-user REST rate limits."""

import asyncio
import logging

import aiohttp
from aiohttp import web

from ..shared.auth import token_from_headers
from ..shared.fast_json import json_response
from ..shared.errors import InvalidField, ServiceUnavailable, Unauthorized
from .app_keys import CHAT, HISTORY, REST_LIMITER, SETTINGS, VERIFIER

log = logging.getLogger(__name__)

FORWARDED_REQUEST_HEADERS = ("Cookie", "Authorization", "Content-Type", "Accept")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Link", "Retry-After")
MAX_PRESENCE_IDS = 100  # as presence: 100 ids fit in the 8 KB request line


async def forward_api(request: web.Request) -> web.Response:
    """Clients need one origin: `/api/*` goes to history as it came (never `/internal/*`)."""
    request.app[REST_LIMITER].check(rate_limit_key(request))
    body = await request.read()
    history = request.app[HISTORY]
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
    headers.update(history.headers())
    try:
        async with history.session.request(
            request.method, history.base_url + request.path_qs, data=body or None, headers=headers
        ) as answer:
            payload = await answer.read()
            out_headers = {name: answer.headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in answer.headers}
            return web.Response(status=answer.status, body=payload, headers=out_headers)
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
        log.warning("forwarding %s %s failed: %r", request.method, request.path, exc)
        raise ServiceUnavailable("The history service is unavailable") from None


async def presence_of(request: web.Request) -> web.Response:
    """`GET /api/presence?ids=a,b`: which of these users, of those the asker may see, are online now."""
    user_id = request.app[VERIFIER].user_id(token_from_headers(request.headers))
    request.app[REST_LIMITER].check(rate_limit_key(request))
    ids = [part.strip() for part in request.query.get("ids", "").split(",") if part.strip()]
    if not ids or len(ids) > MAX_PRESENCE_IDS or any(len(i) > 64 or "\x00" in i for i in ids):
        raise InvalidField("ids", f"must be 1 to {MAX_PRESENCE_IDS} comma-separated user ids")
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
