"""The web chat client: its page and files, its npm packages (socket.io-client, emoji-picker-element
and its emoji data), and development sign-in."""

import base64
import functools
import hashlib
import json
import logging
import re
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
EMOJI_PICKER = Path("emoji-picker-element")
# Each file served under /vendor/, from the packages `npm ci` installed: an exact list, no path parameter.
VENDOR_FILES = {
    "/vendor/socket.io.min.js": SOCKET_IO_CLIENT,
    # picker.js imports "./database.js": both under one folder, as in the package.
    "/vendor/emoji-picker/picker.js": EMOJI_PICKER / "picker.js",
    "/vendor/emoji-picker/database.js": EMOJI_PICKER / "database.js",
    # The picker's emoji list, served here: its default is a CDN, which connect-src 'self' forbids.
    "/vendor/emoji-data.json": Path("emoji-picker-element-data") / "en" / "emojibase" / "data.json",
}
DEMO_USERS_SHOWN = 20
# The page runs only its own files: no inline script, nothing framed, nothing leaked in Referer.
# Avatars are the social app's image URLs, wherever they are hosted. The one inline style let
# through is the emoji picker's own stylesheet, by its hash (see picker_style_hash). The picker
# also lays out its grid through `style` attributes (columns, skin-tone and tab offsets): those
# are admitted with style-src-attr 'unsafe-inline', which lets no `<style>` element, stylesheet or
# script in, and this client writes user text only through textContent (no markup to style).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'{picker_style}; style-src-attr 'unsafe-inline'; "
    "img-src 'self' https: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# How emoji-picker-element 1.29 writes its stylesheet (picker.js): a `<style>` element in its
# shadow root holding `baseStyles + EXTRA_STYLES`. Under style-src 'self' that element would be
# refused and the picker drawn unstyled, so the page's policy admits exactly that text by hash.
_BASE_STYLES = re.compile(r'^var baseStyles = ("(?:[^"\\]|\\.)*");$', re.MULTILINE)
_FONT_FAMILY = re.compile(r"^const FONT_FAMILY = ((?:'[^']*'\s*\+\s*)*'[^']*');", re.MULTILINE)


def setup_web_client(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/sw.js", service_worker)
    for route in VENDOR_FILES:
        app.router.add_get(route, vendor_file)
    app.router.add_static("/static", STATIC_DIR, append_version=True)
    if app[SETTINGS].dev_mode:
        app.router.add_get("/dev/users", dev_users)
        app.router.add_post("/dev/session", dev_session)
    for route in VENDOR_FILES:
        if not (vendor := vendor_path(app, route)).exists():
            log.warning("web client: %s is missing; run `npm ci` in services/gateway/webclient", vendor)


def modules_dir(app: web.Application) -> Path:
    return Path(app[SETTINGS].webclient_modules or DEFAULT_MODULES)


def vendor_path(app: web.Application, route: str) -> Path:
    return modules_dir(app) / VENDOR_FILES[route]


@functools.cache
def picker_style_hash(picker_js: Path) -> str | None:
    """The CSP source (`'sha256-...'`) of the picker's inline stylesheet, read from its picker.js;
    None (the picker then draws unstyled, and this says why) when the file is missing or changed shape."""
    try:
        source = picker_js.read_text(encoding="utf-8")
    except OSError:
        return None
    base, font = _BASE_STYLES.search(source), _FONT_FAMILY.search(source)
    if base is None or font is None:
        log.warning("web client: cannot find the emoji picker's stylesheet in %s; it will be unstyled", picker_js)
        return None
    font_family = "".join(re.findall(r"'([^']*)'", font.group(1)))
    text = json.loads(base.group(1)) + ":host{--emoji-font-family:" + font_family + "}"
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def page_headers(app: web.Application) -> dict[str, str]:
    picker_style = picker_style_hash(vendor_path(app, "/vendor/emoji-picker/picker.js"))
    return {"Content-Security-Policy": CSP.format(picker_style=f" {picker_style}" if picker_style else ""),
            **PAGE_HEADERS}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=page_headers(request.app))


async def service_worker(request: web.Request) -> web.FileResponse:
    """The push notifications' service worker (issue 18), at the root so its scope is the page."""
    return web.FileResponse(STATIC_DIR / "sw.js", headers={"Content-Type": "text/javascript",
                                                           "Cache-Control": "no-cache"})


async def vendor_file(request: web.Request) -> web.FileResponse:
    path = vendor_path(request.app, request.match_info.route.resource.canonical)
    if not path.exists():
        raise ServiceUnavailable("The web client's npm packages are not installed (npm ci)")
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
