"""A bounded LRU cache of encoder outputs keyed by (modality, encoder, content hash).

Encoders are frozen, so the features of a given file never change: re-sending a conversation (its history
included) encodes each media item once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

__all__ = ["EncoderCache"]


class EncoderCache:
    """Thread-safe LRU of ``(n_tokens, enc_dim)`` CPU tensors. ``max_items=0`` disables it."""

    def __init__(self, max_items: int = 256) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str]) -> torch.Tensor | None:
        """The cached features, or ``None`` (counts a hit or a miss)."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, str, str], value: torch.Tensor) -> None:
        """Store features (detached, on CPU), evicting the least recently used beyond ``max_items``."""
        if self.max_items <= 0:
            return
        with self._lock:
            self._items[key] = value.detach().cpu()
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
