"""`GET /api/calls/ice-servers` (issue 17): the STUN and TURN servers a client's RTCPeerConnection
uses, with TURN credentials for this user that lapse by themselves.

The credentials are the TURN REST API's (draft-uberti-behave-turn-rest), which coturn verifies
with `use-auth-secret` and `static-auth-secret=TURN_SECRET`: the username is
`<unix expiry>:<userId>`, the credential base64(HMAC-SHA1(TURN_SECRET, username)). coturn needs no
call to us and no shared database: it recomputes the HMAC and refuses an expired username. A
leaked credential is good for TURN_CREDENTIAL_SECONDS at most, and names the user it was given to.
"""

import base64
import hashlib
import hmac
import time

from aiohttp import web

from ..shared.auth import token_from_headers
from ..shared.fast_json import json_response
from .app_keys import REST_LIMITER, SETTINGS, VERIFIER
from .rest import rate_limit_key
from .settings import GatewaySettings


def turn_credentials(secret: str, user_id: str, expires_at: int) -> tuple[str, str]:
    """(username, credential) as coturn's `use-auth-secret` checks them."""
    username = f"{expires_at}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers_for(settings: GatewaySettings, user_id: str, now: float) -> dict:
    """`{"iceServers": [{"urls": [stun...]}, {"urls": [turn...], "username", "credential"}]}`;
    without STUN_URLS or TURN_URLS (and TURN_SECRET), that entry is left out."""
    servers: list[dict] = []
    if settings.stun_url_list:
        servers.append({"urls": settings.stun_url_list})
    if settings.turn_url_list and settings.turn_secret:
        username, credential = turn_credentials(settings.turn_secret, user_id,
                                                int(now) + settings.turn_credential_seconds)
        servers.append({"urls": settings.turn_url_list, "username": username, "credential": credential})
    return {"iceServers": servers}


async def ice_servers(request: web.Request) -> web.Response:
    """Any signed-in user, for themselves (the username names them); rate-limited as REST is."""
    user_id = request.app[VERIFIER].user_id(token_from_headers(request.headers))
    request.app[REST_LIMITER].check(rate_limit_key(request))
    return json_response(ice_servers_for(request.app[SETTINGS], user_id, time.time()))
