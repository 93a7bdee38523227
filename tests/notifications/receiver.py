"""A push service for the tests: an HTTP server on 127.0.0.1 standing in for a browser vendor's.

Each subscription it hands out has a browser key pair and auth secret of its own, as a browser's
`pushManager.subscribe()` would. For each push it verifies what a real push service verifies
(the VAPID token: ES256 signature by the key in `k`, that key being the cluster's, `aud` its
origin, `exp` within 24 hours, a `sub`; RFC 8030 headers), then decrypts the body with the
subscription's private key (RFC 8291, aes128gcm) as the browser would. A test can script the
answers of an endpoint (500, 429 with Retry-After, 410) and hold requests open.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.shared.push import b64url, p256_point


@dataclass
class Browser:
    """One subscription: what `PushSubscription.toJSON()` gives, and the private half."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def subscription(self) -> dict:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                            serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)}}


@dataclass
class Push:
    endpoint: str
    payload: dict
    topic: str
    ttl: int
    received_at: float


@dataclass
class Attempt:
    endpoint: str
    status: int
    at: float


@dataclass
class PushReceiver:
    vapid_public_key: str
    pushes: list[Push] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why a request was not a valid push
    scripts: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    hold: asyncio.Event | None = None  # when set to an unset Event, valid pushes wait for it
    # Answers beyond the scripts: endpoint -> (status, headers), or None for a 201.
    chaos: Callable[[str], tuple[int, dict] | None] | None = None
    url: str = ""

    def __post_init__(self) -> None:
        self._browsers: dict[str, Browser] = {}
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_post("/push/{id}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> "PushReceiver":
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        await self._runner.cleanup()

    def new_browser(self) -> Browser:
        browser = Browser(f"{self.url}/push/{uuid.uuid4().hex}", ec.generate_private_key(ec.SECP256R1()),
                          os.urandom(16))
        self._browsers[browser.endpoint] = browser
        return browser

    def script(self, browser: Browser, *answers: tuple[int, dict]) -> None:
        """The next answers to this endpoint, in order (then 201 again)."""
        self.scripts.setdefault(browser.endpoint, []).extend(answers)

    def pushes_to(self, browser: Browser) -> list[Push]:
        return [push for push in self.pushes if push.endpoint == browser.endpoint]

    def message_ids_to(self, browser: Browser) -> list[str]:
        return [message_id for push in self.pushes_to(browser) for message_id in push.payload["messageIds"]]

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        """Until `predicate()` holds (checked on every push or attempt received)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not within {timeout} s; {len(self.pushes)} pushes, refused: {self.refused[:3]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _receive(self, request: web.Request) -> web.Response:
        endpoint = f"{self.url}{request.path}"
        body = await request.read()
        try:
            status, headers = self._answer(endpoint)
            if status < 300:
                push = self._verify(endpoint, request, body)
        except AssertionError as exc:
            self.refused.append(str(exc))
            self._changed.set()
            return web.Response(status=400, text=str(exc))
        self.attempts.append(Attempt(endpoint, status, time.monotonic()))
        if status >= 300:
            self._changed.set()
            return web.Response(status=status, headers=headers)
        self.pushes.append(push)
        self._changed.set()
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=201)

    def _answer(self, endpoint: str) -> tuple[int, dict]:
        assert endpoint in self._browsers, f"unknown endpoint {endpoint}"
        script = self.scripts.get(endpoint)
        if script:
            return script.pop(0)
        return (self.chaos(endpoint) if self.chaos is not None else None) or (201, {})

    def _verify(self, endpoint: str, request: web.Request, body: bytes) -> Push:
        browser = self._browsers[endpoint]
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        assert scheme == "vapid", "Authorization is not RFC 8292 vapid"
        parts = dict(part.strip().split("=", 1) for part in credentials.split(","))
        assert parts.get("k") == self.vapid_public_key, "VAPID key is not the cluster's"
        key = p256_point(parts["k"], "k")
        claims = jwt.decode(parts["t"], key, algorithms=["ES256"], audience=self.url,
                            options={"require": ["exp", "aud", "sub"]})
        assert claims["exp"] <= time.time() + 24 * 3600, "VAPID token valid for more than 24 hours"
        assert claims["sub"].startswith(("mailto:", "https:")), "VAPID sub is not a contact"
        assert request.headers.get("Content-Encoding") == "aes128gcm", "not aes128gcm"
        ttl = request.headers.get("TTL")
        assert ttl is not None and ttl.isdigit(), "no TTL"
        topic = request.headers.get("Topic", "")
        assert len(topic) <= 32 and all(c.isalnum() or c in "-_" for c in topic), "Topic is not RFC 8030's"
        plain = http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm")
        return Push(endpoint, json.loads(plain), topic, int(ttl), time.monotonic())
