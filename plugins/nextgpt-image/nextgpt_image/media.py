"""Image files for nextgpt: PNG / JPEG / WebP in, PNG out. The in-memory type is an RGB ``PIL.Image.Image``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaExtent, MediaIO

__all__ = ["ImageIO", "MAX_PIXELS", "READ_FORMATS"]

#: Largest image accepted by :meth:`ImageIO.read` (width x height); larger files raise ``MediaError``.
MAX_PIXELS = 40_000_000
#: PIL modes of single-channel images wider than 8 bits (16-bit PNG depth maps, 32-bit TIFF): refused, not flattened.
WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}
#: Container formats :meth:`ImageIO.read` accepts (as PIL names them).
READ_FORMATS = ("PNG", "JPEG", "WEBP")


def _as_rgb_image(media: Any) -> Image.Image:
    """A PIL image (any mode) or a uint8 array ``(H, W, 3)`` / ``(H, W)`` -> RGB ``PIL.Image.Image``."""
    if isinstance(media, Image.Image):
        return media if media.mode == "RGB" else media.convert("RGB")
    array = np.asarray(media)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise MediaError(f"expected a PIL image or a uint8 (H, W, 3) array, got {array.dtype} {array.shape}")
    return Image.fromarray(array).convert("RGB")


class ImageIO(MediaIO):
    """Reads PNG / JPEG / WebP into an RGB ``PIL.Image.Image`` and writes PNG.

    ``read`` decodes the whole file (so a truncated or garbage file fails there), converts to RGB exactly as
    ImageBind's loader does (``Image.open(f).convert("RGB")``: alpha is dropped, no EXIF rotation) and rejects
    images over :data:`MAX_PIXELS`. Every failure is a one-line ``MediaError`` naming the file.
    """

    def read(self, path: Path) -> Image.Image:
        """Decode ``path`` -> RGB ``PIL.Image.Image`` of size ``(W, H)``."""
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"image file not found: {str(path)!r}" if not path.is_dir() else f"{str(path)!r} is a folder, not an image file")
        try:
            with Image.open(path) as img:
                if img.format not in READ_FORMATS:
                    raise MediaError(f"{str(path)!r} is a {img.format} image; expected one of {', '.join(READ_FORMATS)}")
                if img.mode in WIDE_MODES:
                    raise MediaError(
                        f"{str(path)!r} is a {WIDE_MODES[img.mode]} single-channel image (mode {img.mode}), which "
                        "reading as RGB would cut to 8 bits; a depth or other map goes to the modality that reads it "
                        "(e.g. depth=PATH), a picture should be saved as 8-bit"
                    )
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise MediaError(f"{str(path)!r} is {w}x{h} pixels; images are limited to {MAX_PIXELS} pixels")
                img.load()
                rgb = img.convert("RGB")
        except MediaError:
            raise
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError...
            raise MediaError(f"{str(path)!r} is not a readable PNG/JPEG/WebP image ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
        return rgb

    def probe(self, path: Path) -> MediaExtent:
        """Size from the image header (PIL opens lazily: no pixel decoded); decoded size as RGB."""
        path = Path(path)
        if not path.is_file():
            self.read(path)  # the same one-line error as reading
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Exception as exc:  # UnidentifiedImageError, OSError, DecompressionBombError
            raise MediaError(f"{str(path)!r} is not a readable PNG/JPEG/WebP image ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
        return MediaExtent(pixels=w * h, decoded_bytes=w * h * 3)

    def write(self, media: Any, path: Path) -> Path:
        """Encode ``media`` (PIL image or uint8 ``(H, W, 3)`` array) at ``path``: a lossless RGB PNG, or JPEG
        (quality 95) / lossless WebP when the suffix asks for one."""
        path = Path(path)
        suffix = path.suffix.lower()
        image = _as_rgb_image(media)
        if suffix in (".jpg", ".jpeg"):
            image.save(path, format="JPEG", quality=95)
        elif suffix == ".webp":
            image.save(path, format="WEBP", lossless=True)
        else:
            image.save(path, format="PNG")
        return path

    def to_bytes(self, media: Any) -> bytes:
        """Canonical form: ``b"RGB <W>x<H>\\n"`` followed by the raw RGB bytes (row-major, 3 bytes per pixel)."""
        img = _as_rgb_image(media)
        return f"RGB {img.width}x{img.height}\n".encode() + img.tobytes()

    def example(self) -> Image.Image:
        """A 96x64 RGB test card: horizontal red ramp, vertical green ramp, a blue square and a white circle."""
        h, w = 64, 96
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        rgb[..., 0] = (x * 255 // (w - 1)).astype(np.uint8)
        rgb[..., 1] = (y * 255 // (h - 1)).astype(np.uint8)
        rgb[8:24, 8:24, 2] = 255
        rgb[(x - 64) ** 2 + (y - 36) ** 2 < 14**2] = 255
        return Image.fromarray(rgb, "RGB")
