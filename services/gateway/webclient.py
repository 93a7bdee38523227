"""The web chat client: its page and files, socket.io-client from npm, and development sign-in."""

import logging
from pathlib import Path

from aiohttp import web

from ..shared.auth import issue_dev_token
from ..shared.fast_json import json_response
from ..shared.errors import InvalidField, NotFound, ServiceUnavailable
from .app_keys import HISTORY, SETTINGS

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MODULES = Path(__file__).parent / "webclient" / "node_modules"
SOCKET_IO_CLIENT = Path("socket.io-client") / "dist" / "socket.io.min.js"
DEMO_USERS_SHOWN = 20
# The page runs only its own files: no inline script, nothing framed, nothing leaked in Referer.
# Avatars are the social app's image URLs, wherever they are hosted.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def setup_web_client(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/vendor/socket.io.min.js", socket_io_client)
    app.router.add_static("/static", STATIC_DIR, append_version=True)
    if app[SETTINGS].dev_mode:
        app.router.add_get("/dev/users", dev_users)
        app.router.add_post("/dev/session", dev_session)
    vendor = socket_io_client_path(app)
    if not vendor.exists():
        log.warning("web client: %s is missing; run `npm ci` in services/gateway/webclient", vendor)


def socket_io_client_path(app: web.Application) -> Path:
    return Path(app[SETTINGS].webclient_modules or DEFAULT_MODULES) / SOCKET_IO_CLIENT


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def socket_io_client(request: web.Request) -> web.FileResponse:
    path = socket_io_client_path(request.app)
    if not path.exists():
        raise ServiceUnavailable("The web client's socket.io-client is not installed (npm ci)")
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


async def dev_users(request: web.Request) -> web.Response:
    """Development only: the directory's first users, to sign in as with one click."""
    users = await request.app[HISTORY].call(
        "GET", "/internal/users", params={"limit": str(DEMO_USERS_SHOWN)}, idempotent=True, route="/internal/users"
    )
    return json_response(users)


async def dev_session(request: web.Request) -> web.Response:
    """Development only: a token for a user name, signed with the development key (DEV_MODE only)."""
    try:
        body = await request.json()
        user_name = str(body["userName"])
    except (ValueError, KeyError, TypeError):
        raise InvalidField("userName", "is required") from None
    users = await request.app[HISTORY].call(
        "GET", "/internal/users", params={"userName": user_name}, idempotent=True, route="/internal/users"
    )
    if not users:
        raise NotFound("No such user")
    profile = users[0]
    return json_response({"user": profile, "token": issue_dev_token(profile["_id"], request.app[SETTINGS])})
