"""Depth-map files for nextgpt: single-channel PNG (8/16-bit) and ``.npy`` in, 16-bit PNG (or ``.npy``) out.

The in-memory type is a float32 ``np.ndarray (H, W)`` holding the depth **in the file's own units** (no scaling
on read or write): a 16-bit Kinect/NYU-D/SUN RGB-D PNG gives millimetres, 0 meaning "no measurement".
:func:`nextgpt_depth.preprocess.preprocess_depth` converts units to metres (``depth_scale``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaIO

__all__ = ["DepthIO", "MAX_PIXELS"]

#: Largest depth map (width x height) accepted by :meth:`DepthIO.read`.
MAX_PIXELS = 40_000_000


def _check_depth(media: Any) -> np.ndarray:
    array = np.asarray(media)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0 or not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)):
        raise MediaError(f"a depth map must be a real (H, W) array, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _png_to_array(img: Image.Image, name: str) -> np.ndarray:
    """A loaded PIL image -> float32 ``(H, W)``; RGB(A) only when its colour channels are equal (grey as RGB)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "L", "F"):
        return np.asarray(img).astype(np.float32)
    if img.mode in ("LA", "La"):
        return np.asarray(img.getchannel(0)).astype(np.float32)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0].astype(np.float32)
        raise MediaError(f"{name!r} is a colour image; a depth map must be single-channel (a colour-mapped visualisation cannot be inverted)")
    raise MediaError(f"{name!r} has PNG mode {img.mode}; expected a single-channel 8- or 16-bit depth map")


class DepthIO(MediaIO):
    """Reads depth maps into float32 ``(H, W)`` and writes them as 16-bit greyscale PNG.

    Read:
      - PNG, 8- or 16-bit greyscale: the stored integers, as float32. An RGB/RGBA PNG is accepted only if its three
        colour channels are identical (a grey map saved as RGB; channel 0 is used); a real colour image (e.g. a
        colour-mapped visualisation) raises ``MediaError``.
      - ``.npy``: a 2-D (or ``(H, W, 1)``) real array, as float32 (no pickles).
      - Missing, empty, unreadable, truncated or over :data:`MAX_PIXELS` -> one ``MediaError`` naming the file.

    Write: ``.npy`` stores float32 exactly; any other suffix writes a 16-bit PNG of ``round(depth)`` clipped to
    ``[0, 65535]`` — lossless for integer-valued maps such as millimetres; NaN/inf become 0 (no measurement).
    """

    def read(self, path: Path) -> np.ndarray:
        """Decode ``path`` -> float32 ``(H, W)`` in the file's units."""
        path = Path(path)
        name = str(path)
        if not path.is_file():
            raise MediaError(f"depth file not found: {name!r}" if not path.is_dir() else f"{name!r} is a folder, not a depth file")
        if path.stat().st_size == 0:
            raise MediaError(f"{name!r} is empty (0 bytes)")
        try:
            if path.suffix.lower() == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                with Image.open(path) as img:
                    if img.format != "PNG":
                        raise MediaError(f"{name!r} is a {img.format} image; depth maps are read from PNG or .npy")
                    if img.width * img.height > MAX_PIXELS:
                        raise MediaError(f"{name!r} is {img.width}x{img.height}; depth maps are limited to {MAX_PIXELS} pixels")
                    img.load()
                    array = _png_to_array(img, name)
        except MediaError:
            raise
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{name!r} is not a readable depth map ({msg})") from exc
        try:
            depth = _check_depth(array)
        except MediaError as exc:
            raise MediaError(f"{name!r}: {exc}") from exc
        if depth.size > MAX_PIXELS:
            raise MediaError(f"{name!r} holds {depth.size} values; depth maps are limited to {MAX_PIXELS} pixels")
        return depth

    def write(self, media: Any, path: Path) -> Path:
        """Write ``media`` (real ``(H, W)``) as ``.npy`` (exact float32) or a 16-bit greyscale PNG (rounded)."""
        depth = _check_depth(media)
        path = Path(path)
        if path.suffix.lower() == ".npy":
            with open(path, "wb") as fh:
                np.save(fh, depth)
            return path
        values = np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        values = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
        Image.fromarray(values).save(path, format="PNG")  # uint16 -> mode "I;16"
        return path

    def to_bytes(self, media: Any) -> bytes:
        """Canonical form: ``b"DEPTH <H>x<W>\\n"`` + float32 little-endian values (C order)."""
        depth = _check_depth(media)
        return f"DEPTH {depth.shape[0]}x{depth.shape[1]}\n".encode() + depth.astype("<f4", copy=False).tobytes()

    def example(self) -> np.ndarray:
        """A 48x64 synthetic room in millimetres: a floor-to-wall ramp 1500..4000 mm with a box at 1200 mm."""
        h, w = 48, 64
        y = np.arange(h, dtype=np.float32)[:, None]
        depth = np.repeat(4000.0 - (y / (h - 1)) * 2500.0, w, axis=1)
        depth[20:36, 16:32] = 1200.0
        return np.rint(depth).astype(np.float32)
