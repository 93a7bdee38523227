"""An attachment as clients see it, built in one place for the two services that answer with one:
media (the upload's 201) and history (each message's `attachments`).

`{"_id": "3f2a...", "name": "cat.jpg", "size": 48213, "contentType": "image/jpeg", "width": 800,
  "height": 600, "url": "/api/attachments/3f2a...", "thumbnailUrl": "/api/attachments/3f2a.../thumbnail"}`

`url` and `thumbnailUrl` are stable, authenticated routes (the user's token, as every API route):
media checks that the asker may see the attachment and redirects to a short-lived signed URL of
the bytes. A message stored today still shows its images next month, which an expiring URL
embedded in the message could not do.
"""

from typing import Any

from pydantic import Field

from .models import WireModel

API_PREFIX = "/api/attachments"


class AttachmentOut(WireModel):
    """An attachment (see the module's docstring); `width`, `height` and `thumbnailUrl` for images only."""

    id: str = Field(alias="_id")
    name: str
    size: int
    content_type: str = Field(alias="contentType")
    width: int | None = None
    height: int | None = None
    url: str
    thumbnail_url: str | None = Field(default=None, alias="thumbnailUrl")


def attachment_json(row: Any) -> dict:
    """An `AttachmentOut` from a row (or dict) with `id`, `name`, `size`, `content_type`, `width`,
    `height` and `has_thumbnail`; optional keys are left out rather than null."""
    attachment_id = row["id"]
    answer = {
        "_id": attachment_id,
        "name": row["name"],
        "size": row["size"],
        "contentType": row["content_type"],
        "url": f"{API_PREFIX}/{attachment_id}",
    }
    if row["width"] is not None:
        answer["width"] = row["width"]
        answer["height"] = row["height"]
    if row["has_thumbnail"]:
        answer["thumbnailUrl"] = f"{API_PREFIX}/{attachment_id}/thumbnail"
    return answer
