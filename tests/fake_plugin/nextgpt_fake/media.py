"""Fake media files: a float32 numpy array saved with ``numpy.save`` under a custom suffix."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaIO

MAX_BYTES = 1 << 20


class _FakeIO(MediaIO):
    shape_rank: tuple[int, ...] = (1, 2)

    def read(self, path: Path) -> np.ndarray:
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"media file not found: {str(path)!r}")
        if path.stat().st_size > MAX_BYTES:
            raise MediaError(f"{str(path)!r} is {path.stat().st_size} bytes; fake media are limited to {MAX_BYTES}")
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise MediaError(f"{str(path)!r} is not a readable fake media file ({type(exc).__name__})") from None
        if array.ndim not in self.shape_rank or not np.issubdtype(array.dtype, np.number):
            raise MediaError(f"{str(path)!r} holds a {array.ndim}-D {array.dtype} array; expected {self.shape_rank}-D numbers")
        return array.astype(np.float32)

    def write(self, media: np.ndarray, path: Path) -> Path:
        path = Path(path)
        with open(path, "wb") as fh:
            np.save(fh, np.asarray(media, dtype=np.float32))
        return path

    def to_bytes(self, media: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, np.asarray(media, dtype=np.float32))
        return buf.getvalue()


class FakeImageIO(_FakeIO):
    """``.fimg``: a 2-D (or 1-D) float array."""

    def example(self) -> np.ndarray:
        return np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)


class FakeAudioIO(_FakeIO):
    """``.faud``: a 1-D float array."""

    shape_rank = (1,)

    def example(self) -> np.ndarray:
        return np.sin(np.linspace(0, 6.28, 32)).astype(np.float32)
