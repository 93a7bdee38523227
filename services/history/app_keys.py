"""Typed keys of the history app's state."""

from aiohttp import web

from ..shared.auth import TokenVerifier
from .group_handler import GroupHandler
from .group_store import GroupStore
from .handler import HistoryHandler
from .settings import HistorySettings
from .store import MessageStore

SETTINGS = web.AppKey("settings", HistorySettings)
STORE = web.AppKey("store", MessageStore)
VERIFIER = web.AppKey("verifier", TokenVerifier)
HANDLER = web.AppKey("handler", HistoryHandler)
GROUPS = web.AppKey("groups", GroupStore)
GROUP_HANDLER = web.AppKey("group_handler", GroupHandler)
OPENAPI_JSON = web.AppKey("openapi_json", bytes)
