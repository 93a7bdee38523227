"""Short-lived download links: `/api/attachments/<id>/content?variant=full&expires=<unix>&signature=<hmac>`.

The authenticated routes (`GET /api/attachments/<id>` and `.../thumbnail`) check membership and
redirect here; the link itself carries no user token (an `<img>` or a download manager can use
it), is valid for SIGNED_URL_SECONDS, and names one attachment and one variant. The signature
is HMAC-SHA256 over all three, compared in constant time.
"""

import hashlib
import hmac
import time
from urllib.parse import urlencode

from ..shared.attachments import API_PREFIX

VARIANTS = ("full", "thumbnail")


class UrlSigner:
    def __init__(self, secret: str, ttl_seconds: int, clock=time.time):
        self._key = secret.encode()
        self._ttl = ttl_seconds
        self._clock = clock

    def _signature(self, attachment_id: str, variant: str, expires: int) -> str:
        message = f"{attachment_id}\n{variant}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, attachment_id: str, variant: str) -> str:
        expires = int(self._clock()) + self._ttl
        query = urlencode(
            {"variant": variant, "expires": expires, "signature": self._signature(attachment_id, variant, expires)}
        )
        return f"{API_PREFIX}/{attachment_id}/content?{query}"

    def valid(self, attachment_id: str, variant: str, expires: str, signature: str) -> bool:
        if variant not in VARIANTS or not expires.isdigit() or len(expires) > 12:
            return False
        expected = self._signature(attachment_id, variant, int(expires))
        return hmac.compare_digest(expected, signature) and int(expires) >= self._clock()
