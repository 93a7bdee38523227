"""The gateway's part of the OpenAPI document: its own route, and the history routes it forwards
(which history's fragment documents), and media's attachment routes it streams (media's fragment)."""

from ..shared.openapi import ONLINE, USER_IDS_QUERY, Fragment, public_operation
from .media_forward import MEDIA_ROUTES
from .rest import FORWARDED_ROUTES

PUBLIC_PATHS = {
    "/api/presence": {
        "get": public_operation("Which of these users are online now", {"200": ONLINE}, [USER_IDS_QUERY])
    },
}

FRAGMENT = Fragment("gateway", public=PUBLIC_PATHS, internal={}, forwarded=FORWARDED_ROUTES + MEDIA_ROUTES)
