"""One push to one browser: RFC 8291 encryption and RFC 8292 VAPID by pywebpush's parts (http_ece,
py_vapid), the HTTP request by aiohttp, the answer classified.

The encryption (an ECDH and AES-GCM per push) and the VAPID signature run in worker threads, so
the event loop only moves bytes. A VAPID token is signed once per push service origin and
reused until an hour before it expires (RFC 8292 allows 24 hours; we sign for 12).
"""

import asyncio
import enum
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException

from ..shared.push import Subscription, b64url

log = logging.getLogger(__name__)

VAPID_TOKEN_SECONDS = 12 * 3600
VAPID_RENEW_BEFORE_SECONDS = 3600


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # 2xx: the push service took it
    GONE = "gone"  # 404/410: the subscription expired or was unsubscribed; remove it
    REFUSED = "refused"  # another 4xx (too large, bad request): retrying cannot help
    RETRY = "retry"  # 429, 5xx, or no answer


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    status: int | None
    retry_after: float | None = None


def topic_of(conversation: str) -> str:
    """RFC 8030's Topic (at most 32 URL-safe base64 characters): one per conversation, so a
    push service holding an undelivered notification replaces it with the newer one."""
    return b64url(hashlib.sha256(conversation.encode()).digest()[:24])


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def classify(status: int, retry_after: str | None) -> Answer:
    if 200 <= status < 300:
        return Answer(Outcome.DELIVERED, status)
    if status in (404, 410):
        return Answer(Outcome.GONE, status)
    if status == 429 or status >= 500:
        return Answer(Outcome.RETRY, status, retry_after_seconds(retry_after))
    return Answer(Outcome.REFUSED, status)


class PushSender:
    def __init__(self, private_key: str, subject: str, ttl_seconds: int, timeout_seconds: float):
        self._vapid = Vapid02.from_raw(private_key.encode())
        self._subject = subject
        self._ttl = ttl_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._tokens: dict[str, tuple[float, str]] = {}  # origin -> (expires, Authorization header)
        self._tokens_lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                  connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        with self._tokens_lock:
            cached = self._tokens.get(origin)
            if cached is not None and cached[0] - now > VAPID_RENEW_BEFORE_SECONDS:
                return cached[1]
        expires = int(now) + VAPID_TOKEN_SECONDS
        header = self._vapid.sign({"aud": origin, "exp": expires, "sub": self._subject})["Authorization"]
        with self._tokens_lock:
            self._tokens[origin] = (expires, header)
        return header

    def _prepare(self, subscription: Subscription, payload: bytes) -> tuple[bytes, str]:
        """The encrypted body and the VAPID Authorization (in a worker thread)."""
        pusher = WebPusher({"endpoint": subscription.endpoint,
                            "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}})
        body = pusher.encode(payload, "aes128gcm")["body"]
        return body, self._authorization(subscription.endpoint)

    async def send(self, subscription: Subscription, payload: bytes, topic: str) -> Answer:
        try:
            body, authorization = await asyncio.to_thread(self._prepare, subscription, payload)
        except (ValueError, WebPushException) as exc:
            # Keys no push can be encrypted for (stored before they were checked, or by hand):
            # no retry helps, and the subscription is of no use, so it goes as a gone one does.
            log.warning("a subscription's keys are unusable (%s): removing it", exc)
            return Answer(Outcome.GONE, None)
        headers = {"TTL": str(self._ttl), "Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream",
                   "Topic": topic, "Urgency": "normal", "Authorization": authorization}
        try:
            async with self.session.post(subscription.endpoint, data=body, headers=headers,
                                         allow_redirects=False) as response:
                await response.read()
                return classify(response.status, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return Answer(Outcome.RETRY, None)
