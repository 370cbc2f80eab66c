"""Retrieval as an output modality: a gallery indexed once with a modality's own encoder, and a decoder that
answers a signal run with the nearest gallery item.

- :func:`build_index` / :class:`GalleryIndex` (``nextgpt index build GALLERY --modality KEY``): the index folder,
  its encoder identity (refused for another encoder), exact and FAISS search.
- :class:`RetrievalDecoder`: the ``Decoder`` plugins register as ``<modality>/retrieval``.

Nothing here names a modality: the modality comes from the registry and the composition. The names load lazily
(``nextgpt --help`` imports :mod:`nextgpt_core.retrieval.cli`, which must not import torch or numpy).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "QUERY": "decoder",
    "RetrievalDecodeOptions": "decoder",
    "RetrievalDecoder": "decoder",
    "RetrievalDecoderConfig": "decoder",
    "EncoderIdentity": "index",
    "ExactSearch": "index",
    "FaissSearch": "index",
    "GalleryIndex": "index",
    "GalleryItem": "index",
    "build_index": "index",
    "encoder_identity": "index",
    "faiss_available": "index",
    "gallery_files": "index",
    "make_search": "index",
    "write_index": "index",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
