"""Typed keys of the presence app's state."""

from aiohttp import web

from .handler import PresenceHandler
from .settings import PresenceSettings

SETTINGS = web.AppKey("settings", PresenceSettings)
HANDLER = web.AppKey("handler", PresenceHandler)
