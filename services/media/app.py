"""The media service: owns attachments (issue 16): uploads, their bytes in storage, downloads.

Uploads are heavy (25 MB bodies, image decoding), so they never run on a gateway: the gateway
streams the body through (services/gateway/media_forward.py) and media spools it to disk,
inspects it in worker threads and writes it to STORAGE_URL. It verifies users' tokens itself.
Its internal listener serves probes and metrics only: no service calls media.
"""

import asyncio
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
from aiohttp import web

from ..shared.auth import TokenVerifier
from ..shared.errors import ParleyError, error_middleware
from ..shared.tasks import cancel_and_wait
from ..shared.web import READINESS, create_base_app
from .app_keys import INSPECTORS, SETTINGS, SIGNER, SPOOL_DIR, STORAGE, STORE, VERIFIER
from .routes import routes
from .settings import MediaSettings
from .signing import UrlSigner
from .storage import open_storage
from .store import AttachmentStore

log = logging.getLogger(__name__)
# Rows the sweeper handles per pass (the next pass takes the rest).
SWEEP_BATCH = 500


def create_app(settings: MediaSettings) -> web.Application:
    # A whole upload, multipart framing included, may come in; media counts the file itself.
    app = create_base_app("media", settings.caller_tokens(), [error_middleware],
                          client_max_size=settings.max_attachment_bytes + 1024 * 1024)
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(settings, dev_mode=settings.dev_mode)
    app[SIGNER] = UrlSigner(settings.url_signing_secret, settings.signed_url_seconds)
    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(sweeper)
    app.add_routes(routes)
    return app


async def resources(app: web.Application):
    settings = app[SETTINGS]
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=0, max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds,
    )
    storage = await open_storage(settings.storage_url, settings.s3_endpoint_url, settings.s3_region,
                                 settings.s3_part_bytes, settings.s3_access_key_id, settings.s3_secret_access_key)
    spool = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="parley-media-"))
    app[STORE] = AttachmentStore(pool)
    app[STORAGE] = storage
    app[SPOOL_DIR] = spool
    app[INSPECTORS] = ThreadPoolExecutor(settings.inspect_threads, thread_name_prefix="inspect")
    app[READINESS].add("postgres", app[STORE].ping)
    app[READINESS].add("storage", storage.ping)
    yield
    app[INSPECTORS].shutdown(wait=True, cancel_futures=True)
    await storage.close()
    await asyncio.to_thread(shutil.rmtree, spool, True)
    await asyncio.wait_for(pool.close(), timeout=10)


async def sweep(app: web.Application) -> int:
    """Removes unsent uploads older than UNSENT_TTL_SECONDS and those of deleted messages:
    their bytes first, then the row (a crash between leaves a row the next pass retries)."""
    rows = await app[STORE].expired(app[SETTINGS].unsent_ttl_seconds, SWEEP_BATCH)
    for row in rows:
        for key in (row["storage_key"], row["thumbnail_key"]):
            if key is not None:
                await app[STORAGE].delete(key)
        await app[STORE].remove(row["id"])
    return len(rows)


async def sweeper(app: web.Application):
    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].sweep_seconds)
            try:
                removed = await sweep(app)
                if removed:
                    log.info("swept %d attachment(s)", removed)
            except (ParleyError, OSError) as exc:
                log.warning("sweep skipped: %r", exc)

    task = asyncio.create_task(sweep_forever())
    yield
    await cancel_and_wait([task])
