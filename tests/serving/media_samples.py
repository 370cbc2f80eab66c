"""Small media files and request pieces made in the tests (no files are shipped)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    import soundfile

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    buf = io.BytesIO()
    soundfile.write(buf, tone, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def mp4_bytes(tmp: Path, frames: int, fps: float = 4.0) -> bytes:
    from nextgpt_video.media import Video, VideoIO

    data = np.zeros((frames, 32, 32, 3), dtype=np.uint8)
    data[:, 8:24, 8:24] = 200
    return VideoIO().write(Video(data, fps), tmp / f"clip{frames}.mp4").read_bytes()


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user(*parts) -> list[dict]:
    """One user message with these content parts (strings become text parts)."""
    return [{"role": "user", "content": [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]}]
