"""What an upload really is, decided from its bytes, and the cleaned copy that gets stored.

Runs in a worker thread (blocking: file reads, Pillow's decoding and encoding), never on the loop.

- The type comes from the file's magic bytes (`filetype`), never from the client's name or
  header; plain text is what has no magic, decodes as UTF-8, holds no NUL and no markup.
- The allow-list: JPEG, PNG, GIF and WebP images, PDF, plain text, zip. Never SVG or HTML (a
  script runs when opened from our origin), never an executable. Anything else is refused.
- Images are decoded (a size checked against MAX_IMAGE_PIXELS first: a decompression bomb is
  refused before any pixel is decoded), turned upright, and re-encoded without their metadata:
  EXIF (GPS position, camera serial), XMP and comments never reach storage. A thumbnail (longest
  side THUMBNAIL_PIXELS) is written beside it.
- A zip is read from its central directory only (nothing is unpacked): one that claims to unpack
  to more than MAX_ZIP_UNPACKED_BYTES, or at a ratio beyond MAX_ZIP_RATIO, is a zip bomb.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import filetype
from PIL import Image, ImageOps

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
ALLOWED_TYPES = frozenset({*IMAGE_TYPES, "application/pdf", "text/plain", "application/zip"})
# Bytes read to decide whether a file without magic is plain text.
TEXT_SNIFF_BYTES = 64 * 1024
# Text holding any of these (case-insensitive) could be rendered as markup: refused.
MARKUP_MARKERS = (b"<svg", b"<html", b"<script", b"<!doctype", b"<?xml", b"<iframe", b"<body")
JPEG_QUALITY = 88


class Refused(Exception):
    """The upload is not acceptable; the message says why (shown to the client)."""


@dataclass(frozen=True)
class Inspected:
    content_type: str
    path: Path  # what to store: the cleaned image, or the upload itself
    size: int
    width: int | None = None
    height: int | None = None
    thumbnail: Path | None = None


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int
    max_zip_unpacked_bytes: int
    max_zip_ratio: int
    thumbnail_pixels: int


def inspect_upload(path: Path, limits: Limits) -> Inspected:
    content_type = detect_type(path)
    if content_type in IMAGE_TYPES:
        return clean_image(path, content_type, limits)
    if content_type == "application/zip":
        check_zip(path, limits)
    return Inspected(content_type, path, path.stat().st_size)


def detect_type(path: Path) -> str:
    kind = filetype.guess(str(path))
    if kind is None:
        if looks_like_plain_text(path):
            return "text/plain"
        raise Refused("This kind of file cannot be attached")
    if kind.mime not in ALLOWED_TYPES:
        raise Refused(f"Files of type {kind.mime} cannot be attached")
    return kind.mime


def looks_like_plain_text(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(TEXT_SNIFF_BYTES)
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the sniff's end
            return False
    lowered = head.lower()
    return not any(marker in lowered for marker in MARKUP_MARKERS)


def clean_image(path: Path, content_type: str, limits: Limits) -> Inspected:
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels  # Pillow's own bomb guard, as a second line
    try:
        with Image.open(path) as image:
            if image.format != IMAGE_TYPES[content_type]:
                raise Refused("The image's contents do not match its type")
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise Refused(f"Images may have at most {limits.max_image_pixels} pixels")
            animated = getattr(image, "is_animated", False)
            cleaned = path.with_name(path.name + ".clean")
            thumbnail = path.with_name(path.name + ".thumb")
            if animated:
                # Frames are re-encoded as they are (no upright turn: GIF and WebP carry no orientation).
                image.save(cleaned, format=image.format, save_all=True)
                first = image.copy()
            else:
                upright = ImageOps.exif_transpose(image)
                width, height = upright.size
                _save_without_metadata(upright, cleaned, image.format)
                first = upright
            _thumbnail(first, thumbnail, limits.thumbnail_pixels)
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused(f"Images may have at most {limits.max_image_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError):
        raise Refused("The image cannot be read") from None
    return Inspected(content_type, cleaned, cleaned.stat().st_size, width, height, thumbnail)


def _save_without_metadata(image: Image.Image, target: Path, image_format: str) -> None:
    """A fresh image of the pixels alone: no exif=, icc kept (colours), nothing else carried over."""
    options: dict = {}
    if image_format == "JPEG":
        image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
        options = {"quality": JPEG_QUALITY, "optimize": True}
    pixels = Image.new(image.mode, image.size)
    pixels.paste(image)
    if image.mode == "P" and image.getpalette() is not None:
        pixels.putpalette(image.getpalette())
        if "transparency" in image.info:
            options["transparency"] = image.info["transparency"]
    if icc := image.info.get("icc_profile"):
        options["icc_profile"] = icc
    pixels.save(target, format=image_format, **options)


def _thumbnail(image: Image.Image, target: Path, longest_side: int) -> None:
    """Always a PNG (transparency kept; a 320 px image is small either way), so its type is known."""
    small = image.copy()
    small.thumbnail((longest_side, longest_side))
    small.convert("RGBA" if small.mode in ("RGBA", "LA", "P", "PA") else "RGB").save(target, format="PNG", optimize=True)


THUMBNAIL_TYPE = "image/png"


def check_zip(path: Path, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise Refused("The zip file cannot be read") from None
    unpacked = sum(entry.file_size for entry in entries)
    packed = sum(entry.compress_size for entry in entries)
    if unpacked > limits.max_zip_unpacked_bytes or unpacked > limits.max_zip_ratio * max(packed, 1):
        raise Refused("The zip file would unpack to too much (a zip bomb?)")
