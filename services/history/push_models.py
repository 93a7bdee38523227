"""The payloads of push notifications' routes (issue 18); also their OpenAPI schemas."""

from datetime import datetime

from pydantic import Field

from ..shared.models import WireModel
from ..shared.push import MAX_ENDPOINT_LENGTH


class PushKeys(WireModel):
    p256dh: str = Field(description="The browser's P-256 public key, base64url (65 bytes)")
    auth: str = Field(description="The browser's auth secret, base64url (16 bytes)")


class PushSubscriptionIn(WireModel):
    """What `PushSubscription.toJSON()` gives: `{endpoint, keys: {p256dh, auth}}` (parsed by
    services/shared/push.py, which names the field at fault)."""

    endpoint: str = Field(max_length=MAX_ENDPOINT_LENGTH, description="https URL of a browser push service")
    keys: PushKeys


class PushEndpoint(WireModel):
    endpoint: str = Field(max_length=MAX_ENDPOINT_LENGTH)


class Mute(WireModel):
    """`{until?}`: muted until then (ISO 8601 with a time zone), or until unmuted when absent or null."""

    until: datetime | None = None


class NotificationSettings(WireModel):
    hide_text: bool = Field(alias="hideText", description="Notifications say \"New message\" instead of the text")
