"""The toy world as a whole: the installed plugins' parts, their splits, and seeded renderings.

:class:`ToyWorld` gathers every installed :class:`~nextgpt_core.toy.contract.ToyModality` (through the registry's
``nextgpt_register_toy_world`` hook), splits each part's combinations into the training and the held-out sets, and
splits every list of request phrasings into those training may use and those only evaluation uses. It names no
modality: whatever plugins are installed make up the world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConfigError
from .contract import Attributes, ToyModality, attributes_key

__all__ = ["HELD_OUT_PHRASINGS", "ToyItem", "ToyWorld", "phrasings"]

#: how many phrasings at the end of each request list only evaluation uses
HELD_OUT_PHRASINGS = 2


def phrasings(options: Sequence[str], split: str) -> tuple[str, ...]:
    """The phrasings of ``options`` for ``split``: ``"train"`` (all but the last :data:`HELD_OUT_PHRASINGS`),
    ``"eval"`` (the last ones) or ``"all"``. A list too short to hold any out is used whole by both."""
    if split == "all" or len(options) <= HELD_OUT_PHRASINGS:
        return tuple(options)
    if split == "train":
        return tuple(options[:-HELD_OUT_PHRASINGS])
    if split == "eval":
        return tuple(options[-HELD_OUT_PHRASINGS:])
    raise ValueError(f"split must be 'train', 'eval' or 'all', got {split!r}")


@dataclass(frozen=True)
class ToyItem:
    """One rendered item: its modality, attributes, caption, the media, and its id (``<key>-<combination>-<render>``)."""

    modality: str
    attributes: dict[str, str]
    caption: str
    media: Any
    item_id: str


class ToyWorld:
    """The installed parts of the toy world, keyed by modality (registration order).

    Build it with :meth:`installed` (from the plugin registry) or from parts directly (tests).
    """

    def __init__(self, parts: Iterable[ToyModality]) -> None:
        self.parts: dict[str, ToyModality] = {}
        for part in parts:
            if part.key in self.parts:
                raise ConfigError(f"two toy-world parts for modality {part.key!r}")
            self.parts[part.key] = part
        self._combos: dict[str, list[dict[str, str]]] = {}

    @classmethod
    def installed(cls, registry: Any = None, keys: Iterable[str] | None = None) -> "ToyWorld":
        """The parts registered by installed plugins (``keys``: only those modalities, in that order).

        Raises:
            ConfigError: a requested modality has no part, or a part's class does not match its registration.
        """
        from nextgpt_registry import resolve_target

        if registry is None:
            from ..plugins import get_registry

            registry = get_registry()
        wanted = list(keys) if keys is not None else [k for k in registry.modalities if k in registry.toy_worlds]
        parts = []
        for key in wanted:
            if key not in registry.toy_worlds:
                raise ConfigError(f"modality {key!r} has no toy-world part; installed parts: {', '.join(registry.toy_worlds) or '(none)'}")
            part_class = resolve_target(registry.toy_worlds[key].target)
            if not (isinstance(part_class, type) and issubclass(part_class, ToyModality)):
                raise ConfigError(f"toy-world part of {key!r} ({registry.toy_worlds[key].target}) is not a ToyModality")
            part = part_class()
            if part.key != key:
                raise ConfigError(f"toy-world part {registry.toy_worlds[key].target} is for {part.key!r}, registered for {key!r}")
            parts.append(part)
        return cls(parts)

    # ------------------------------------------------------------------ combinations
    def combinations(self, key: str, split: str = "all") -> list[dict[str, str]]:
        """The combinations of ``key`` in ``split``: ``"train"`` (not held out), ``"held_out"`` or ``"all"``."""
        if key not in self._combos:
            self._combos[key] = self.parts[key].combinations()
        combos = self._combos[key]
        if split == "all":
            return list(combos)
        held = [self.parts[key].held_out(c) for c in combos]
        if split == "train":
            return [c for c, h in zip(combos, held) if not h]
        if split == "held_out":
            return [c for c, h in zip(combos, held) if h]
        raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}")

    def held_out_fraction(self, key: str) -> float:
        """The share of ``key``'s captions that are held out."""
        return len(self.combinations(key, "held_out")) / max(1, len(self.combinations(key)))

    def is_held_out(self, key: str, attrs: Attributes) -> bool:
        """Whether ``attrs`` of modality ``key`` is a held-out combination."""
        return self.parts[key].held_out(attrs)

    def render(self, key: str, combos: Sequence[Attributes], renders: int, seed: int, tag: str = "") -> list[ToyItem]:
        """``renders`` seeded renderings of each combination (combination-major order); the same arguments give
        the same items in any process."""
        part = self.parts[key]
        index = {attributes_key(c): i for i, c in enumerate(self.combinations(key))}
        rng = np.random.default_rng([seed, _stable(key), _stable(tag)])
        out = []
        for c in combos:
            for r in range(renders):
                media = part.render(c, rng)
                out.append(ToyItem(key, dict(c), part.caption(c), media, f"{key}-{index[attributes_key(c)]:04d}-{tag}{r}"))
        return out

    def training_captions(self) -> list[str]:
        """Every caption of every part that training may see (held-out combinations excluded)."""
        return [part.caption(c) for key, part in self.parts.items() for c in self.combinations(key, "train")]


def _stable(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8"))
