"""Typed keys of the history app's state."""

from aiohttp import web

from ..shared.auth import TokenVerifier
from .handler import HistoryHandler
from .settings import HistorySettings
from .store import MessageStore

SETTINGS = web.AppKey("settings", HistorySettings)
STORE = web.AppKey("store", MessageStore)
VERIFIER = web.AppKey("verifier", TokenVerifier)
HANDLER = web.AppKey("handler", HistoryHandler)
OPENAPI_JSON = web.AppKey("openapi_json", bytes)
