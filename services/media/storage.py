"""Where attachment bytes live: a directory (`file://...`) or an S3-compatible bucket (`s3://bucket`).

Both take a finished local file (the upload, spooled to disk and inspected first) and give the
bytes back as an async iterator of chunks, for a byte range, so neither ever holds a whole file
in memory. Blocking file calls run in a thread. S3 goes through aiobotocore (botocore's
signing and retries on aiohttp); a file larger than one part is sent as a multipart upload,
part by part, and the upload is aborted if any part fails, so no half object is left behind.

A store that is down (refused, timed out, answering errors) or a disk that fails is a
`StorageUnavailable` (503 `store_unavailable`), raised within seconds: S3 calls have short
connect timeouts and few retries, since a client waiting on an upload is better told to retry.
"""

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from ..shared.errors import StoreUnavailable

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
# S3 calls: a store that does not answer a connection within this long is down.
S3_CONNECT_TIMEOUT_SECONDS = 3.0
# A part of up to S3_PART_BYTES (8 MB) must go through within this long.
S3_READ_TIMEOUT_SECONDS = 30.0
# Attempts per call, the first included (botocore's "standard" mode retries throttling and 5xx).
S3_MAX_ATTEMPTS = 3


class StorageUnavailable(StoreUnavailable):
    def __init__(self) -> None:
        super().__init__("Attachment storage is unavailable, try again shortly")


@contextlib.asynccontextmanager
async def unavailable_on_failure(operation: str) -> AsyncIterator[None]:
    """Turns a storage failure into StorageUnavailable, logged once without the client's data."""
    try:
        yield
    except (BotoCoreError, ClientError, OSError) as exc:
        log.warning("storage %s failed: %r", operation, exc)
        raise StorageUnavailable() from None


class Storage(Protocol):
    async def put(self, key: str, path: Path, content_type: str) -> None: ...

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` inclusive."""
        ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class FileStorage:
    """Objects as files under a root directory; keys are our own (`ab/<id>`), never a client's."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    async def put(self, key: str, path: Path, content_type: str) -> None:
        target = self._path(key)

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(path, partial)
            os.replace(partial, target)  # readers see the whole file or none

        async with unavailable_on_failure("put"):
            await asyncio.to_thread(copy)

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        # Each chunk opens, reads and closes the file in one thread call: no handle outlives a
        # call, so a download cancelled at any point (the client gone) leaves no file open.
        path = self._path(key)

        def read_chunk(offset: int, size: int) -> bytes:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(size)

        offset = start
        while offset <= end:
            async with unavailable_on_failure("read"):
                chunk = await asyncio.to_thread(read_chunk, offset, min(CHUNK_BYTES, end - offset + 1))
            if not chunk:
                break
            offset += len(chunk)
            yield chunk

    async def delete(self, key: str) -> None:
        async with unavailable_on_failure("delete"):
            await asyncio.to_thread(self._path(key).unlink, True)

    async def ping(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None


class S3Storage:
    def __init__(self, bucket: str, client, exit_stack, part_bytes: int):
        self.bucket = bucket
        self._client = client
        self._exit = exit_stack
        self._part_bytes = part_bytes

    @classmethod
    async def open(cls, bucket: str, endpoint_url: str, region: str, part_bytes: int,
                   access_key_id: str = "", secret_access_key: str = "") -> "S3Storage":
        session = get_session()
        credentials = ({"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
                       if access_key_id else {})
        config = AioConfig(connect_timeout=S3_CONNECT_TIMEOUT_SECONDS, read_timeout=S3_READ_TIMEOUT_SECONDS,
                           retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS})
        context = session.create_client("s3", endpoint_url=endpoint_url or None, region_name=region, config=config,
                                        **credentials)
        client = await context.__aenter__()
        return cls(bucket, client, context, part_bytes)

    async def put(self, key: str, path: Path, content_type: str) -> None:
        async with unavailable_on_failure("put"):
            await self._put(key, path, content_type)

    async def _put(self, key: str, path: Path, content_type: str) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= self._part_bytes:
            body = await asyncio.to_thread(path.read_bytes)
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
            return
        started = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        upload_id = started["UploadId"]
        try:
            parts = []
            handle = await asyncio.to_thread(open, path, "rb")
            try:
                number = 1
                while chunk := await asyncio.to_thread(handle.read, self._part_bytes):
                    answer = await self._client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
            finally:
                await asyncio.to_thread(handle.close)
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(BotoCoreError, ClientError):  # the store's own expiry rules take the rest
                await self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        async with unavailable_on_failure("read"):
            answer = await self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK_BYTES):
                yield chunk

    async def delete(self, key: str) -> None:
        async with unavailable_on_failure("delete"):
            await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def ping(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._exit.__aexit__(None, None, None)


async def open_storage(storage_url: str, endpoint_url: str = "", region: str = "us-east-1",
                       part_bytes: int = 8 * 1024 * 1024, access_key_id: str = "",
                       secret_access_key: str = "") -> Storage:
    """The storage a `STORAGE_URL` names; a scheme other than `file` or `s3` is refused."""
    parsed = urlparse(storage_url)
    if parsed.scheme == "file":
        return FileStorage(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        return await S3Storage.open(parsed.netloc, endpoint_url, region, part_bytes, access_key_id,
                                    secret_access_key)
    raise ValueError(f"STORAGE_URL must be file://<directory> or s3://<bucket>, not {storage_url!r}")
