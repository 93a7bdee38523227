"""Typed keys of the history app's state."""

import asyncpg
from aiohttp import web

from ..shared.auth import TokenVerifier
from ..shared.notify import ClientNotifier
from .group_handler import GroupHandler
from .group_store import GroupStore
from .settings import HistorySettings
from .store import MessageStore

SETTINGS = web.AppKey("settings", HistorySettings)
POOL = web.AppKey("pool", asyncpg.Pool)
STORE = web.AppKey("store", MessageStore)
VERIFIER = web.AppKey("verifier", TokenVerifier)
NOTIFIER = web.AppKey("notifier", ClientNotifier)
GROUPS = web.AppKey("groups", GroupStore)
GROUP_HANDLER = web.AppKey("group_handler", GroupHandler)
