"""Attachments through the gateway: `/api/attachments*` streamed to the media service's public listener.

Why through the gateway rather than routed to media at the edge: clients keep one origin (the
`token` cookie, CORS and the web client's relative URLs work unchanged), the gateway's raw-path
guard and per-user REST limit apply as to every API route, and the edge configuration stays one
route. The cost is one extra hop of bytes, never memory: a body is passed on chunk by chunk
(`request.content` as an async generator to the client session, so at most a few chunks are
in flight, with back-pressure both ways), counted as it goes, and cut off past the upload limit;
downloads stream back the same way. A deployment that wants the hop gone can route
`/api/attachments` at the edge to media directly: media verifies the user's token itself and
the paths are the same.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from ..shared.auth import token_from_headers
from ..shared.errors import ErrorCode, NotFound, ParleyError, ServiceUnavailable
from ..shared.internal import REQUEST_ID_HEADER
from ..shared.limits import valid_attachment_id
from ..shared.logs import request_id_var
from .app_keys import MEDIA_API, REST_LIMITER, SETTINGS
from .rest import rate_limit_key

log = logging.getLogger(__name__)

MEDIA_ROUTES = (
    ("POST", "/api/attachments"),
    ("GET", "/api/attachments/{attachmentId}"),
    ("GET", "/api/attachments/{attachmentId}/thumbnail"),
    ("GET", "/api/attachments/{attachmentId}/content"),
)
CHUNK_BYTES = 64 * 1024
# The multipart framing around the file: the gateway lets this much more through than the file limit.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
REQUEST_HEADERS = ("Content-Type", "Content-Length", "Accept", "Range")
RESPONSE_HEADERS = (
    "Content-Type", "Content-Length", "Content-Range", "Content-Disposition", "Accept-Ranges", "Location",
    "Cache-Control", "Content-Security-Policy", "Retry-After",
)


class MediaApi:
    """A keep-alive client for media's PUBLIC listener. No total timeout (a 25 MB upload on a
    slow link takes a while); a connection that goes silent for READ_TIMEOUT is given up."""

    READ_TIMEOUT_SECONDS = 60.0

    def __init__(self, base_url: str, connect_timeout_seconds: float):
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_seconds,
                                          sock_read=self.READ_TIMEOUT_SECONDS),
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self.session.close()


def add_media_routes(router: web.UrlDispatcher) -> None:
    for method, route in MEDIA_ROUTES:
        router.add_route(method, route, forward_media)


async def forward_media(request: web.Request) -> web.StreamResponse:
    app = request.app
    app[REST_LIMITER].check(rate_limit_key(request))
    limit = app[SETTINGS].max_attachment_bytes + MULTIPART_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise too_large(app[SETTINGS].max_attachment_bytes)
    path = "/api/attachments"
    if (attachment_id := request.match_info.get("attachmentId")) is not None:
        if not valid_attachment_id(attachment_id):
            raise NotFound("No such attachment")
        path = request.match_info.route.resource.canonical.replace("{attachmentId}", quote(attachment_id, safe=""))
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    if (token := token_from_headers(request.headers)) is not None:
        headers["Authorization"] = f"Bearer {token}"
    if (request_id := request_id_var.get()) is not None:
        headers[REQUEST_ID_HEADER] = request_id
    query = urlencode(list(request.query.items()))
    media = app[MEDIA_API]
    url = media.base_url + path + (f"?{query}" if query else "")
    counter = BodyCounter(limit)
    body = counter.chunks(request) if request.method == "POST" else None
    try:
        async with media.session.request(request.method, url, data=body, headers=headers,
                                         allow_redirects=False) as answer:
            out = web.StreamResponse(status=answer.status, headers={
                name: answer.headers[name] for name in RESPONSE_HEADERS if name in answer.headers
            })
            out.headers["X-Content-Type-Options"] = "nosniff"
            out.headers.setdefault("Cache-Control", "no-store")
            await out.prepare(request)
            async for chunk in answer.content.iter_chunked(CHUNK_BYTES):
                await out.write(chunk)
            await out.write_eof()
            return out
    except (BodyTooLarge, aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
        if counter.exceeded:  # aiohttp may wrap the generator's exception in a connection error
            raise too_large(app[SETTINGS].max_attachment_bytes) from None
        log.warning("forwarding %s to media failed: %r", request.match_info.route.resource.canonical, exc)
        raise ServiceUnavailable("The media service is unavailable") from None


class BodyTooLarge(Exception):
    pass


class BodyCounter:
    """The request body chunk by chunk, stopping (BodyTooLarge, `exceeded`) once past `limit` bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.exceeded = False

    async def chunks(self, request: web.Request) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge
            yield chunk


def too_large(limit: int) -> ParleyError:
    return ParleyError(f"file: an attachment may be at most {limit} bytes", code=ErrorCode.PAYLOAD_TOO_LARGE,
                       status=413)
