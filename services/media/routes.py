"""Media's public routes: upload, the authenticated download routes, and the signed content links.

`POST /api/attachments` streams the one file part to a spool file (counting bytes: past
MAX_ATTACHMENT_BYTES it stops at once with 413 and keeps nothing), inspects it in a worker
thread (inspect.py), stores the cleaned bytes and the thumbnail, then the row. Any failure
removes what was written. `GET /api/attachments/<id>` (and `/thumbnail`) checks that the asker
may see it and redirects to a signed link (signing.py), which `.../content` serves with the
stored type, `Content-Disposition`, `nosniff`, a sandboxing CSP, and single byte ranges.
"""

import asyncio
import contextlib
import logging
import re
import secrets
from pathlib import Path
from urllib.parse import quote, unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..shared.attachments import attachment_json
from ..shared.auth import token_from_headers
from ..shared.errors import ErrorCode, InvalidField, NotFound, ParleyError
from ..shared.fast_json import json_response
from ..shared.limits import MAX_ATTACHMENT_NAME_LENGTH, valid_attachment_id
from .app_keys import INSPECTORS, SETTINGS, SIGNER, SPOOL_DIR, STORAGE, STORE, VERIFIER
from .inspect import IMAGE_TYPES, THUMBNAIL_TYPE, Inspected, Limits, Refused, inspect_upload
from .storage import StorageUnavailable

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

READ_CHUNK_BYTES = 64 * 1024
# Spooled bytes are written to disk in blocks of this size (one thread hop per block).
FLUSH_BYTES = 1024 * 1024
# A multipart body's boundaries and part headers, beyond the file itself.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
UNSAFE_NAME_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\"\\/]")


def too_large(limit: int) -> ParleyError:
    return ParleyError(
        f"file: an attachment may be at most {limit} bytes", code=ErrorCode.PAYLOAD_TOO_LARGE, status=413
    )


@routes.post("/api/attachments")
async def upload(request: web.Request) -> web.Response:
    app = request.app
    user_id = app[VERIFIER].user_id(token_from_headers(request.headers))
    limit = app[SETTINGS].max_attachment_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD_BYTES:
        raise too_large(limit)
    part = await file_part(request)
    attachment_id = secrets.token_hex(16)
    spool: Path = app[SPOOL_DIR] / attachment_id
    written: list[str] = []
    try:
        size = await spool_part(part, spool, limit)
        if size == 0:
            raise InvalidField("file", "is empty")
        inspected = await asyncio.get_running_loop().run_in_executor(
            app[INSPECTORS], inspect_upload, spool, inspection_limits(app)
        )
        return json_response(attachment_json(await keep(app, user_id, attachment_id, part, inspected, written)),
                             status=201)
    except Refused as exc:
        raise InvalidField("file", str(exc)) from None
    except BaseException:
        for key in written:  # stored bytes without a row would never be swept
            try:
                await app[STORAGE].delete(key)
            except StorageUnavailable:
                log.warning("upload %s failed and its stored key %s could not be removed", attachment_id, key)
        raise
    finally:
        await asyncio.to_thread(remove_spool, spool)


async def file_part(request: web.Request):
    """The body's first part, which must be a file named `file`."""
    try:
        reader = await request.multipart()
        part = await reader.next()
    except (ValueError, KeyError, AssertionError, HttpProcessingError):  # aiohttp's parse errors, each kind
        part = None
    if part is None or getattr(part, "name", None) != "file" or not getattr(part, "filename", None):
        raise InvalidField("file", "send multipart/form-data whose first part is the file, named 'file'")
    return part


async def spool_part(part, spool: Path, limit: int) -> int:
    size = 0
    pending = bytearray()
    handle = await asyncio.to_thread(open, spool, "wb")
    try:
        while chunk := await read_chunk(part):
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            pending += chunk
            if len(pending) >= FLUSH_BYTES:
                await asyncio.to_thread(handle.write, bytes(pending))
                pending.clear()
        await asyncio.to_thread(handle.write, bytes(pending))
    finally:
        await asyncio.to_thread(handle.close)
    return size


async def keep(app: web.Application, user_id: str, attachment_id: str, part, inspected: Inspected,
               written: list[str]):
    storage = app[STORAGE]
    key = f"{attachment_id[:2]}/{attachment_id}"
    await storage.put(key, inspected.path, inspected.content_type)
    written.append(key)
    thumbnail_key, thumbnail_size = None, None
    if inspected.thumbnail is not None:
        thumbnail_key = key + ".thumbnail"
        await storage.put(thumbnail_key, inspected.thumbnail, THUMBNAIL_TYPE)
        written.append(thumbnail_key)
        thumbnail_size = (await asyncio.to_thread(inspected.thumbnail.stat)).st_size
    return await app[STORE].add({
        "id": attachment_id, "uploader_id": user_id, "name": safe_name(part.filename), "size": inspected.size,
        "content_type": inspected.content_type, "width": inspected.width, "height": inspected.height,
        "storage_key": key, "thumbnail_key": thumbnail_key, "thumbnail_size": thumbnail_size,
    })


async def read_chunk(part) -> bytes:
    try:
        return await part.read_chunk(READ_CHUNK_BYTES)
    except ConnectionError:
        # The sender hung up mid-way (or a gateway cut it off): nothing is kept, nothing to log.
        raise InvalidField("file", "the upload was interrupted") from None


def inspection_limits(app: web.Application) -> Limits:
    settings = app[SETTINGS]
    return Limits(settings.max_image_pixels, settings.max_zip_unpacked_bytes, settings.max_zip_ratio,
                  settings.thumbnail_pixels)


def remove_spool(spool: Path) -> None:
    for suffix in ("", ".clean", ".thumb"):
        spool.with_name(spool.name + suffix).unlink(missing_ok=True)


def safe_name(filename: str) -> str:
    """The client's file name as a label only: its last path segment, no control characters or quotes.
    (Percent escapes are decoded first: aiohttp's client, and browsers for `"`, escape that way.)"""
    name = re.split(r"[/\\]", unquote(filename))[-1]
    name = UNSAFE_NAME_CHARACTERS.sub("_", name).strip(" .")
    return name[:MAX_ATTACHMENT_NAME_LENGTH] or "file"


@routes.get("/api/attachments/{attachmentId}")
async def download(request: web.Request) -> web.Response:
    return await redirect_to_content(request, "full")


@routes.get("/api/attachments/{attachmentId}/thumbnail")
async def thumbnail(request: web.Request) -> web.Response:
    return await redirect_to_content(request, "thumbnail")


async def redirect_to_content(request: web.Request, variant: str) -> web.Response:
    app = request.app
    user_id = app[VERIFIER].user_id(token_from_headers(request.headers))
    attachment_id = attachment_id_param(request)
    row = await app[STORE].visible(attachment_id, user_id)
    if row is None or (variant == "thumbnail" and row["thumbnail_key"] is None):
        raise NotFound("No such attachment")
    location = app[SIGNER].url(attachment_id, variant)
    if request.query.get("redirect") == "false":  # for clients that want the link itself
        return json_response({"url": location, "expiresIn": app[SETTINGS].signed_url_seconds})
    raise web.HTTPFound(location, headers={"Cache-Control": "no-store"})


@routes.get("/api/attachments/{attachmentId}/content")
async def content(request: web.Request) -> web.StreamResponse:
    app = request.app
    attachment_id = attachment_id_param(request)
    query = request.query
    variant = query.get("variant", "")
    if not app[SIGNER].valid(attachment_id, variant, query.get("expires", ""), query.get("signature", "")):
        raise ParleyError("This link is invalid or has expired", code=ErrorCode.FORBIDDEN, status=403)
    row = await app[STORE].get(attachment_id)
    if row is None:
        raise NotFound("No such attachment")
    if variant == "thumbnail":
        key, size, content_type = row["thumbnail_key"], row["thumbnail_size"], THUMBNAIL_TYPE
    else:
        key, size, content_type = row["storage_key"], row["size"], row["content_type"]
    headers = {
        "Content-Type": content_type + ("; charset=utf-8" if content_type == "text/plain" else ""),
        "Content-Disposition": disposition(row["name"], inline=content_type in IMAGE_TYPES or variant == "thumbnail"),
        "X-Content-Type-Options": "nosniff",
        # Whatever a browser makes of the bytes, no script runs and nothing loads with our origin.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": f"private, max-age={app[SETTINGS].signed_url_seconds}",
        "Accept-Ranges": "bytes",
    }
    span = byte_range(request.headers.get("Range"), size)
    if span == "unsatisfiable":
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = span if span is not None else (0, size - 1)
    status = 206 if span is not None else 200
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start + 1
    if not size:
        await response.prepare(request)
        await response.write_eof()
        return response
    # aclosing: a client that hangs up mid-way still gets the file (or S3 body) closed at once.
    async with contextlib.aclosing(app[STORAGE].read(key, start, end)) as chunks:
        # The first chunk before the headers: storage that is down is still a clear 503.
        first = await anext(chunks, b"")
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


def byte_range(header: str | None, size: int):
    """(start, end) of a single `bytes=` range; None to send everything (no header, or one we
    do not serve, such as several ranges); "unsatisfiable" for a range past the end."""
    if not header or (match := RANGE.match(header.strip())) is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        return (max(size - length, 0), size - 1) if length and size else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


def disposition(name: str, *, inline: bool) -> str:
    fallback = name.encode("ascii", "replace").decode().replace("?", "_")
    return f"{'inline' if inline else 'attachment'}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def attachment_id_param(request: web.Request) -> str:
    value = request.match_info["attachmentId"]
    if not valid_attachment_id(value):
        raise NotFound("No such attachment")
    return value
