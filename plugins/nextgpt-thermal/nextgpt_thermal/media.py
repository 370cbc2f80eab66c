"""Thermal-image files for nextgpt: grey 8/16-bit PNG and TIFF, JPEG and ``.npy`` in; PNG (or ``.npy``) out.

The in-memory type is an ``np.ndarray (H, W)`` that keeps the file's sample type: ``uint8`` (8-bit files, JPEG),
``uint16`` (16-bit PNG / TIFF, e.g. radiometric counts) or ``float32`` (a ``.npy`` of intensities). The dtype is
what :func:`nextgpt_thermal.preprocess.preprocess_thermal` scales by (8-bit / 255, 16-bit / 65535). Thermal cameras
give one channel; a 3-channel file is accepted only when it is grey (its channels agree within JPEG noise, as the
LLVIP infrared JPEGs do); a colour-mapped visualisation ("ironbow") cannot be inverted and is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaIO

__all__ = ["GREY_TOLERANCE", "MAX_PIXELS", "ThermalIO"]

#: Largest thermal image (width x height) accepted by :meth:`ThermalIO.read`.
MAX_PIXELS = 40_000_000
#: how far the three channels of a "grey" colour file may differ (JPEG's chroma noise), in 8-bit steps
GREY_TOLERANCE = 12
_FORMATS = {"PNG", "TIFF", "JPEG", "MPO"}


def _check_thermal(media: Any) -> np.ndarray:
    array = np.asarray(media)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise MediaError(f"a thermal image must be a single-channel (H, W) array, got {array.dtype} {array.shape}")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise MediaError("a thermal image holds NaN or infinity")
        return np.ascontiguousarray(values)
    raise MediaError(f"a thermal image must hold numbers, got {array.dtype}")


def _grey(img: Image.Image, name: str) -> np.ndarray:
    """A loaded PIL image -> ``uint8`` / ``uint16`` / ``float32`` ``(H, W)``."""
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.uint16)
    if img.mode == "I":  # 16-bit PNGs open as "I" in some Pillow versions; wider values are refused
        values = np.asarray(img)
        if values.min() < 0 or values.max() > 65535:
            raise MediaError(f"{name!r} holds 32-bit values outside 0..65535; save thermal images as 8- or 16-bit")
        return values.astype(np.uint16)
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)
    if img.mode in ("LA", "La"):
        return np.asarray(img.getchannel(0), dtype=np.uint8)
    if img.mode in ("RGB", "RGBA", "YCbCr", "CMYK"):
        rgb = np.asarray(img.convert("RGB")).astype(np.int16)
        spread = int((rgb.max(axis=2) - rgb.min(axis=2)).max())
        if spread > GREY_TOLERANCE:
            raise MediaError(f"{name!r} is a colour image (channels differ by up to {spread}); a thermal image is "
                             "single-channel, and a colour-mapped visualisation cannot be inverted")
        return np.rint(rgb.mean(axis=2)).astype(np.uint8)
    raise MediaError(f"{name!r} has image mode {img.mode}; expected a single-channel 8- or 16-bit thermal image")


class ThermalIO(MediaIO):
    """Reads thermal images into ``(H, W)`` arrays of the file's sample type; writes 8/16-bit grey PNG or ``.npy``.

    Read:
      - PNG / TIFF, 8- or 16-bit grey: the stored integers (``uint8`` / ``uint16``); JPEG: ``uint8``. A 3-channel
        file is taken as grey when its channels agree within :data:`GREY_TOLERANCE` (their mean, rounded); a
        colour image raises ``MediaError``.
      - ``.npy``: a 2-D (or ``(H, W, 1)``) real array (no pickles): ``uint8`` / ``uint16`` kept, anything else as
        ``float32`` (intensities, 0..1 unless the encoder's ``normalize = "min_max"``).
      - Missing, empty, unreadable, truncated or over :data:`MAX_PIXELS` -> one ``MediaError`` naming the file.

    Write: ``.npy`` keeps the array exactly; any other suffix writes a grey PNG (8-bit for ``uint8``, 16-bit for
    ``uint16``; ``float32`` intensities are clipped to 0..1 and stored as 16-bit).
    """

    def read(self, path: Path) -> np.ndarray:
        """Decode ``path`` -> ``(H, W)`` ``uint8`` / ``uint16`` / ``float32``."""
        path = Path(path)
        name = str(path)
        if not path.is_file():
            raise MediaError(f"thermal file not found: {name!r}" if not path.is_dir() else f"{name!r} is a folder, not a thermal image")
        if path.stat().st_size == 0:
            raise MediaError(f"{name!r} is empty (0 bytes)")
        try:
            if path.suffix.lower() == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                with Image.open(path) as img:
                    if img.format not in _FORMATS:
                        raise MediaError(f"{name!r} is a {img.format} image; thermal images are read from PNG, TIFF, JPEG or .npy")
                    if img.width * img.height > MAX_PIXELS:
                        raise MediaError(f"{name!r} is {img.width}x{img.height}; thermal images are limited to {MAX_PIXELS} pixels")
                    img.load()
                    array = _grey(img, name)
        except MediaError:
            raise
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{name!r} is not a readable thermal image ({msg})") from exc
        try:
            thermal = _check_thermal(array)
        except MediaError as exc:
            raise MediaError(f"{name!r}: {exc}") from exc
        if thermal.size > MAX_PIXELS:
            raise MediaError(f"{name!r} holds {thermal.size} values; thermal images are limited to {MAX_PIXELS} pixels")
        return thermal

    def write(self, media: Any, path: Path) -> Path:
        """Write ``media`` as ``.npy`` (exact) or a grey PNG (8-bit ``uint8``, 16-bit otherwise)."""
        thermal = _check_thermal(media)
        path = Path(path)
        if path.suffix.lower() == ".npy":
            with open(path, "wb") as fh:
                np.save(fh, thermal)
            return path
        if thermal.dtype == np.float32:
            thermal = np.rint(np.clip(thermal, 0.0, 1.0) * 65535.0).astype(np.uint16)
        Image.fromarray(thermal).save(path, format="PNG")  # uint8 -> "L", uint16 -> "I;16"
        return path

    def to_bytes(self, media: Any) -> bytes:
        """Canonical form: ``b"THERMAL <dtype> <H>x<W>\\n"`` + little-endian values (C order)."""
        thermal = _check_thermal(media)
        dtype = thermal.dtype.newbyteorder("<")
        header = f"THERMAL {thermal.dtype.name} {thermal.shape[0]}x{thermal.shape[1]}\n".encode()
        return header + thermal.astype(dtype, copy=False).tobytes()

    def example(self) -> np.ndarray:
        """A 48x64 8-bit night street: a cool road (60) with a warm person-shaped blob (200) and a hot lamp (250)."""
        h, w = 48, 64
        y, x = np.mgrid[0:h, 0:w]
        image = np.full((h, w), 60.0) + 10.0 * (y / (h - 1))
        image[((x - 24) / 5.0) ** 2 + ((y - 28) / 12.0) ** 2 <= 1.0] = 200.0
        image[(x - 50) ** 2 + (y - 8) ** 2 <= 9] = 250.0
        return np.rint(image).astype(np.uint8)
