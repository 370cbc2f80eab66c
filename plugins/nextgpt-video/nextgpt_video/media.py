"""Video media for nextgpt: the in-memory type (and, below it, the file reader/writer)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Video"]


@dataclass
class Video:
    """Decoded video: ``frames`` uint8 ``(T, H, W, 3)`` RGB, ``fps`` frames per second."""

    frames: np.ndarray
    fps: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames.shape[0] / self.fps if self.fps else 0.0
