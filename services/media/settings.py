"""Everything the media service reads from its environment."""

from pydantic import Field

from ..shared.settings import DEV_URL_SIGNING_SECRET, JwtSettings, PostgresSettings, ServiceSettings

MEGABYTE = 1024 * 1024


class MediaSettings(ServiceSettings, PostgresSettings, JwtSettings):
    port: int = 8300
    internal_port: int = 8301
    # The same database as history (which owns the schema and its migrations); media writes only
    # the `attachments` table, a few statements an upload: a small pool.
    db_pool_max_size: int = 5
    # Where the bytes go: `file:///var/lib/parley/media` (or `file://.run/media`, relative to the
    # working directory: `make run`'s default), or `s3://bucket` (with S3_ENDPOINT_URL for any
    # S3-compatible store; credentials from the usual AWS_* variables or the pod's role).
    storage_url: str = "file://.run/media"
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    # The store's credentials; empty: botocore's own chain (AWS_* variables, the pod's role).
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # Files larger than this go to S3 in parts of this size (S3's minimum part is 5 MB).
    s3_part_bytes: int = Field(default=8 * MEGABYTE, ge=5 * MEGABYTE)
    # The largest file one upload may carry (the 25 MB).
    max_attachment_bytes: int = 25 * MEGABYTE
    # Images larger than this many pixels are refused (a decompression bomb: a small PNG that
    # decodes to gigabytes). 50 MP is a large phone photo and 200 MB of RGBA at most.
    max_image_pixels: int = 50_000_000
    # A zip whose entries would unpack to more than this (or at a ratio beyond MAX_ZIP_RATIO) is refused.
    max_zip_unpacked_bytes: int = 500 * MEGABYTE
    max_zip_ratio: int = 100
    # The longest side of an image's thumbnail, in pixels.
    thumbnail_pixels: int = 320
    # Threads that inspect and re-encode uploads (Pillow releases the GIL while decoding), so
    # the event loop never does that work; more uploads at once wait for a thread.
    inspect_threads: int = 2
    # Download links: the key that signs them, and how long one stays valid.
    url_signing_secret: str = DEV_URL_SIGNING_SECRET
    signed_url_seconds: int = Field(default=300, ge=10, le=86400)
    # Uploads never sent are removed after this long; the sweeper looks every SWEEP_SECONDS.
    unsent_ttl_seconds: float = 24 * 3600
    sweep_seconds: float = 600

    def secret_settings(self) -> dict[str, str]:
        return {"JWT_SECRET": self.jwt_secret, "URL_SIGNING_SECRET": self.url_signing_secret}
