"""Typed keys of the presence app's state."""

from aiohttp import web

from .announcer import PresenceAnnouncer
from .settings import PresenceSettings
from .store import PresenceStore

SETTINGS = web.AppKey("settings", PresenceSettings)
STORE = web.AppKey("store", PresenceStore)
ANNOUNCER = web.AppKey("announcer", PresenceAnnouncer)
