"""Typed keys of the notifier app's state."""

from aiohttp import web

from .consumer import Consumer
from .settings import NotifierSettings

SETTINGS = web.AppKey("settings", NotifierSettings)
CONSUMER = web.AppKey("consumer", Consumer)
