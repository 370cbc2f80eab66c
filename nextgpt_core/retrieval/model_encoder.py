"""The encoder a composition gives a modality, built exactly as :meth:`NextGPT.from_composition` builds it (same
class, options, derived seed and dtype), without the LLM or the decoders: what ``nextgpt index build`` embeds a
gallery with, so that the model's retrieval decoder accepts the index."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["composition_encoder"]


def composition_encoder(composition: Any, modality: str, registry: Any = None) -> tuple[Any, str, Any, Any]:
    """``(encoder, component id, MediaIO, ModalitySpec)`` of ``modality`` in ``composition`` (a name, path or object;
    ``registry``: the installed plugins by default).

    Raises:
        ConfigError: the composition does not read ``modality`` (no encoder).
    """
    from nextgpt_registry import resolve_target

    from ..composition import resolve_composition
    from ..model import _build
    from ..plugins import get_registry

    registry = registry or get_registry()
    resolved = resolve_composition(composition, registry)
    comp = resolved.composition
    m = resolved.modalities.get(modality)
    if m is None or m.encoder is None:
        readers = [k for k, r in resolved.modalities.items() if r.encoder is not None]
        raise ConfigError(f"composition {comp.name!r} has no encoder for {modality!r}; it reads {', '.join(readers) or 'nothing'}")
    encoder = _build(m.encoder, comp.seed, f"{modality}/encoder").freeze()
    if comp.modules_dtype != "float32":
        encoder.to(getattr(torch, comp.modules_dtype))
    encoder.to(comp.device)
    spec = registry.modality(modality)
    return encoder, m.encoder.id, resolve_target(spec.media_io)(), spec
