"""Audio media for nextgpt: the in-memory type (and, below it, the file reader/writer)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Audio"]


@dataclass
class Audio:
    """Decoded audio: ``samples`` float32 in [-1, 1], ``(n,)`` mono or ``(n, channels)``; ``sample_rate`` in Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / self.sample_rate
