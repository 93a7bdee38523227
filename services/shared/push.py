"""Web Push (issue 18), as history and the notifier both need it: the rules a subscription must
follow, the VAPID key pair's encodings, and the shape of a notification job on the stream.

Keys are base64url without padding, as browsers give them (`PushSubscription.toJSON()`) and take
them (`applicationServerKey`): the VAPID public key is an uncompressed P-256 point (65 bytes),
its private key the 32-byte scalar; a subscription's `p256dh` is the browser's P-256 point and
`auth` its 16-byte secret (RFC 8291).
"""

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from redis.exceptions import ResponseError

from .errors import InvalidField
from .keys import PUSH_CONSUMER_GROUP
from .limits import GROUP_ID_RULE, USER_ID_RULE, valid_group_id, valid_user_id

MAX_SUBSCRIPTIONS_PER_USER = 10
MAX_ENDPOINT_LENGTH = 2048
# The push services of the browsers people use (Chrome/Edge via FCM, Firefox, Safari, Windows):
# a subscription's endpoint must be one of these hosts or under one of them. The notifier POSTs
# to whatever endpoint a user stored, so an open list would let a user aim it at any server.
DEFAULT_PUSH_HOSTS = ("fcm.googleapis.com", "push.services.mozilla.com", "notify.windows.com", "push.apple.com")
ENDPOINT_RULE = "must be an https URL of a browser push service"


def b64url_decode(value: object, field: str, size: int) -> bytes:
    if not isinstance(value, str) or not value.isascii() or len(value) > 2 * size + 4:
        raise InvalidField(field, f"must be base64url of {size} bytes")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidField(field, f"must be base64url of {size} bytes") from None
    if len(raw) != size:
        raise InvalidField(field, f"must be base64url of {size} bytes")
    return raw


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def p256_point(value: object, field: str) -> ec.EllipticCurvePublicKey:
    """An uncompressed P-256 public key (65 bytes), checked to be on the curve."""
    raw = b64url_decode(value, field, 65)
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise InvalidField(field, "must be a P-256 public key (uncompressed point)") from None


def endpoint_allowed(endpoint: str, push_hosts: tuple[str, ...], allow_loopback: bool) -> bool:
    """https to a push service host (or a subdomain of one); http://127.0.0.1 only when
    `allow_loopback` (tests and DEV_MODE: the push receiver the tests start)."""
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or not host:
        return False
    if allow_loopback and parts.scheme == "http" and host == "127.0.0.1":
        return True
    if parts.scheme != "https":
        return False
    try:
        ipaddress.ip_address(host)
        return False  # never an IP literal: push services are named hosts
    except ValueError:
        pass
    return any(host == allowed or host.endswith("." + allowed) for allowed in push_hosts)


@dataclass(frozen=True)
class Subscription:
    endpoint: str
    p256dh: str
    auth: str


def parse_subscription(body: object, push_hosts: tuple[str, ...], allow_loopback: bool) -> Subscription:
    """`{endpoint, keys: {p256dh, auth}}` (what `PushSubscription.toJSON()` gives), checked."""
    if not isinstance(body, dict):
        raise InvalidField("body", "must be an object {endpoint, keys: {p256dh, auth}}")
    endpoint = parse_endpoint(body, push_hosts, allow_loopback)
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise InvalidField("keys", "must be an object {p256dh, auth}")
    point = p256_point(keys.get("p256dh"), "p256dh")
    auth = b64url_decode(keys.get("auth"), "auth", 16)
    # Stored as decoded and encoded again: base64 decoders that skip stray characters (the
    # push library's does) then read exactly the key that was checked.
    return Subscription(endpoint, _point(point), b64url(auth))


def parse_endpoint(body: object, push_hosts: tuple[str, ...], allow_loopback: bool) -> str:
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if (not isinstance(endpoint, str) or not 1 <= len(endpoint) <= MAX_ENDPOINT_LENGTH or not endpoint.isascii()
            or any(ch <= " " for ch in endpoint) or not endpoint_allowed(endpoint, push_hosts, allow_loopback)):
        raise InvalidField("endpoint", ENDPOINT_RULE)
    return endpoint


def parse_push_hosts(setting: str) -> tuple[str, ...]:
    return tuple(host.strip().lower() for host in setting.split(",") if host.strip())


# --- conversations ---------------------------------------------------------------------------

CONVERSATION_RULE = "must be 'user:<userId>' or 'group:<groupId>'"


def parse_conversation(value: str) -> tuple[str, str]:
    """A conversation's id in a path: ('user', partner id) or ('group', group id)."""
    kind, _, target = value.partition(":")
    if kind == "user" and valid_user_id(target):
        return kind, target
    if kind == "group" and valid_group_id(target):
        return kind, target
    raise InvalidField("conversationId", f"{CONVERSATION_RULE} ({USER_ID_RULE}; a group id {GROUP_ID_RULE})")


# --- VAPID keys ------------------------------------------------------------------------------

def vapid_public_key(private_key: str) -> str:
    """The public key (uncompressed point, base64url) of a base64url VAPID private key."""
    scalar = b64url_decode(private_key, "VAPID_PRIVATE_KEY", 32)
    key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    return _point(key.public_key())


def generate_vapid_keys() -> tuple[str, str]:
    """A new (private, public) pair, base64url: `parley dev` and the tests make their own."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url(private), _point(key.public_key())


def _point(public_key: ec.EllipticCurvePublicKey) -> str:
    return b64url(public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


# --- the job stream ----------------------------------------------------------------------

async def ensure_group(client: redis.asyncio.Redis, stream: str) -> None:
    """The notifiers' consumer group, and the stream with it (both idempotent)."""
    try:
        await client.xgroup_create(stream, PUSH_CONSUMER_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
