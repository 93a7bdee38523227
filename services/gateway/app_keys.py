"""Typed keys of a gateway node's app state."""

import socketio
from aiohttp import web

from ..shared.auth import TokenVerifier
from ..shared.internal import InternalClient
from .chat import ChatHandler
from .metrics import GatewayMetrics
from .ratelimit import RateLimiter
from .history_api import HistoryApi
from .settings import GatewaySettings

SETTINGS = web.AppKey("settings", GatewaySettings)
SIO = web.AppKey("sio", socketio.AsyncServer)
CHAT = web.AppKey("chat", ChatHandler)
HISTORY = web.AppKey("history", InternalClient)
HISTORY_API = web.AppKey("history_api", HistoryApi)
MEDIA_API = web.AppKey("media_api", "MediaApi")  # media_forward.MediaApi
PRESENCE = web.AppKey("presence", InternalClient)
VERIFIER = web.AppKey("verifier", TokenVerifier)
REST_LIMITER = web.AppKey("rest_limiter", RateLimiter)
METRICS = web.AppKey("metrics", GatewayMetrics)
