"""Typed keys of the history app's state."""

from aiohttp import web

from ..shared.auth import TokenVerifier
from .group_handler import GroupHandler
from .group_store import GroupStore
from .handler import HistoryHandler
from .push_relay import PushRelay
from .push_store import PushStore
from .settings import HistorySettings
from .store import MessageStore

SETTINGS = web.AppKey("settings", HistorySettings)
VERIFIER = web.AppKey("verifier", TokenVerifier)
OPENAPI_JSON = web.AppKey("openapi_json", bytes)  # the document /openapi.json serves, read once

# Messages and profiles: the store stores; the handler decides and tells the clients.
STORE = web.AppKey("store", MessageStore)
HANDLER = web.AppKey("handler", HistoryHandler)

# Groups, likewise.
GROUPS = web.AppKey("groups", GroupStore)
GROUP_HANDLER = web.AppKey("group_handler", GroupHandler)

# Push notifications (issue 18): subscriptions, mutes and the setting; the relay to the job stream.
PUSH = web.AppKey("push", PushStore)
RELAY = web.AppKey("relay", PushRelay)
