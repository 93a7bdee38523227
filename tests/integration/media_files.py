"""Files the media tests upload, made here (nothing binary is checked in)."""

import io
import zipfile

from PIL import Image

GPS_IFD = 0x8825
# The ELF header of a Linux executable: what `filetype` knows as application/x-elf.
ELF_HEADER = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 100


def jpeg_with_gps(width: int = 1200, height: int = 800) -> bytes:
    """A photo carrying a GPS position (the EXIF a phone writes), to prove it is stripped."""
    image = Image.new("RGB", (width, height), (200, 120, 40))
    exif = Image.Exif()
    exif[0x010F] = "ParleyCam"  # Make
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 128, 255, 200)).save(out, format="PNG")
    return out.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A small PNG (one colour compresses to almost nothing) that decodes to side^2 pixels."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG")
    return out.getvalue()


def zip_bomb(unpacked_bytes: int = 200 * 1024 * 1024) -> bytes:
    """A zip of one entry of zeros: ~200 KB packed, 200 MB unpacked (a ratio of ~1000)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as entry:
            block = b"\x00" * (1024 * 1024)
            for _ in range(unpacked_bytes // len(block)):
                entry.write(block)
    return out.getvalue()


def small_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", "hello from a zip " * 20)
    return out.getvalue()


SVG_WITH_SCRIPT = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
