"""Attachments: upload throughput through a gateway to media, and the gateway's memory meanwhile.

A 25 MB upload must not hold 25 MB in a gateway (issue 16): the gateway streams it. This starts
history, media and one gateway (production settings, file:// storage under .run/bench), uploads
UPLOADS files of 25 MB one after another, and samples the gateway's resident memory (VmRSS from
/proc) every 10 ms throughout. Two cases: plain text (inspection reads 64 KB of it, so the number
is the path's, not Pillow's) and a PNG of noise just under 25 MB (media decodes, strips and
re-encodes it and makes a thumbnail: the gateway still only passes bytes through). Prints MB/s
and the gateway's RSS before and at its peak, per case.

    .venv/bin/python -m bench.media_bench [--uploads 8] [--cases text,image]
"""

import argparse
import asyncio
import io
import json
import os
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
from PIL import Image

from bench.measure import RESULTS_DIR, RUN_DIR, bench_database
from bench.stack import BENCH_JWT, bench_stack
from services.devtools.stores import ensure_database, find_stores, with_database
from services.history.migrations import apply_migrations
from services.shared.auth import issue_token

PROJECT_DIR = Path(__file__).resolve().parent.parent
DATABASE = bench_database("bench_media")
MB = 1024 * 1024
UPLOAD_BYTES = 25 * MB - 64 * 1024  # under MAX_ATTACHMENT_BYTES with the multipart framing
URL_SIGNING_SECRET = "bench-media-url-signing-secret-0123456789abcdef"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def prepare(url: str, user_id: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
        await connection.execute("INSERT INTO users (id, user_name) VALUES ($1, $1) ON CONFLICT DO NOTHING", user_id)
    finally:
        await connection.close()


def text_body() -> tuple[bytes, str, str]:
    return b"0123456789abcde\n" * (UPLOAD_BYTES // 16), "big.txt", "text/plain"


def image_body() -> tuple[bytes, str, str]:
    """An RGB PNG of random pixels (incompressible), as large as fits under the limit."""
    side = int((UPLOAD_BYTES * 0.97 / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    assert out.tell() <= UPLOAD_BYTES, out.tell()
    return out.getvalue(), "big.png", "image/png"


CASES = {"text": text_body, "image": image_body}


async def measure(gateway_url: str, gateway_pid: int, token: str, uploads: int, case: str) -> dict:
    body, filename, content_type = CASES[case]()
    samples: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(rss_kib(gateway_pid))
            await asyncio.sleep(0.01)

    before = rss_kib(gateway_pid)
    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for n in range(uploads):
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(body), filename=f"{n}-{filename}", content_type=content_type)
            async with session.post(f"{gateway_url}/api/attachments", data=form) as answer:
                assert answer.status == 201, await answer.text()
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    return {"case": case, "uploads": uploads, "bytes_each": len(body), "seconds": round(elapsed, 2),
            "mb_per_second": round(uploads * len(body) / MB / elapsed, 1),
            "gateway_rss_before_mib": round(before / 1024, 1), "gateway_rss_peak_mib": round(max(samples) / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--cases", default="text,image")
    args = parser.parse_args()
    stores = find_stores(RUN_DIR)
    user_id = "bench-uploader"
    try:
        url = ensure_database(with_database(stores.database_url, "postgres"), DATABASE)
        asyncio.run(prepare(url, user_id))
        stack = bench_stack({"DATABASE_URL": url, "REDIS_URL": stores.redis_url, "LOG_LEVEL": "WARNING",
                             "REDIS_PREFIX": f"bench-media-{uuid.uuid4().hex[:6]}",
                             "STORAGE_URL": f"file://{RUN_DIR / 'media'}", "URL_SIGNING_SECRET": URL_SIGNING_SECRET},
                            RUN_DIR / "logs", ["history", "presence", "media", "gateway-a"])
        stack.start()
        try:
            rows = [asyncio.run(measure(stack["gateway-a"].url, stack["gateway-a"].process.pid,
                                        issue_token(user_id, BENCH_JWT), args.uploads, case))
                    for case in args.cases.split(",")]
        finally:
            stack.stop()
    finally:
        stores.stop()
    print(f"\n{'case':>5} {'uploads':>7} {'MB each':>8} {'MB/s':>6} {'gateway RSS before':>19} {'gateway RSS peak':>17}")
    for row in rows:
        print(f"{row['case']:>5} {row['uploads']:>7} {row['bytes_each'] / MB:>8.1f} {row['mb_per_second']:>6} "
              f"{row['gateway_rss_before_mib']:>15} MiB {row['gateway_rss_peak_mib']:>13} MiB")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "media.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
