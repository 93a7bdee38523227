"""Typed keys of the media app's state."""

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..shared.auth import TokenVerifier
from .settings import MediaSettings
from .signing import UrlSigner
from .store import AttachmentStore

SETTINGS = web.AppKey("settings", MediaSettings)
VERIFIER = web.AppKey("verifier", TokenVerifier)
SIGNER = web.AppKey("signer", UrlSigner)
STORE = web.AppKey("store", AttachmentStore)
STORAGE = web.AppKey("storage", object)  # a storage.Storage
INSPECTORS = web.AppKey("inspectors", ThreadPoolExecutor)
SPOOL_DIR = web.AppKey("spool_dir", object)  # pathlib.Path of in-progress uploads
