"""``RetrievalDecoder``: an output modality answered from a local gallery instead of a generator.

The LLM's signal tokens go through an output projector into ``query_embeds`` ``(B, 1, dim)``: a point of the
modality encoder's embedding space (ImageBind's joint space). The decoder returns, for each row, the gallery item
whose indexed embedding is nearest (cosine similarity), read with the modality's own ``MediaIO``, wrapped in a
:class:`~nextgpt_core.interfaces.DecodedItem` whose ``details`` say which file, its score and the next neighbours.
It is a decoder like any other: a plugin registers it under its modality (``image/retrieval``) and a composition
chooses it, alone or beside a generator (``extra_decoders``).

Stage 2 trains its projector against the encoder's embedding of each sample's target media
(:attr:`RetrievalDecoder.targets_from_media`): the data formats already name the media (``image_name``,
``output_image``), and the model's encoder is the one the index was built with.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..errors import ConfigError, GalleryIndexError, MediaError, WeightsNotFoundError
from ..interfaces import ComponentConfig, ConditioningInput, DecodedItem, DecodeOptions, Decoder
from .index import GalleryIndex, encoder_identity, make_search

__all__ = ["QUERY", "RetrievalDecodeOptions", "RetrievalDecoder", "RetrievalDecoderConfig"]

#: the name of the one conditioning input
QUERY = "query_embeds"


class RetrievalDecoderConfig(ComponentConfig):
    """Options of a :class:`RetrievalDecoder`.

    Attributes:
        index: the index folder ``nextgpt index build`` wrote (``GALLERY/.nextgpt-index/<modality>`` by default).
        dim: the query size; read from the index when unset (set it only to assert it).
        search: ``"exact"`` (every item, the default) or ``"faiss-hnsw"`` (approximate; needs ``faiss-cpu``).
    """

    index: str
    dim: int | None = Field(default=None, ge=1)
    search: Literal["exact", "faiss-hnsw"] = "exact"


class RetrievalDecodeOptions(DecodeOptions):
    """``top_k``: how many neighbours the item's ``details`` list (the item itself is the nearest)."""

    top_k: int = Field(default=3, ge=1, le=100)


def _manifest(config: RetrievalDecoderConfig) -> dict[str, Any]:
    return GalleryIndex.read_manifest(config.index)


class RetrievalDecoder(Decoder):
    """``{"query_embeds": (B, 1, dim)}`` -> ``B`` :class:`DecodedItem` s: the nearest gallery item of each query.

    ``details``: ``{"gallery_item": path relative to the gallery, "file": absolute path, "score": cosine,
    "neighbours": [{"gallery_item", "score"}, ... top_k], "search": "exact" | "faiss-hnsw", "index": folder}``.
    Seeds do not matter: retrieval is deterministic.
    """

    config_class: ClassVar[type[ComponentConfig]] = RetrievalDecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = RetrievalDecodeOptions
    #: stage 2 trains the output projector against the modality encoder's embedding of the target media
    targets_from_media: ClassVar[bool] = True
    #: retrieval draws nothing at random: the same query gives the same item whatever the seed
    seeded: ClassVar[bool] = False

    def __init__(self, config: RetrievalDecoderConfig) -> None:
        super().__init__(config)
        self._index: GalleryIndex | None = None
        self._search: Any = None
        self._media_io: Any = None
        self._checked: str | None = None  # fingerprint of the encoder the index was checked against
        self._lock = threading.Lock()

    @classmethod
    def conditioning_inputs_of(cls, config: RetrievalDecoderConfig) -> tuple[ConditioningInput, ...]:  # type: ignore[override]
        """One input, ``query_embeds`` ``(1, dim)``; ``dim`` from the index's manifest unless given."""
        dim = config.dim
        try:
            found = int(_manifest(config)["dim"])
        except GalleryIndexError:
            if dim is None:
                raise
            found = dim
        if dim is not None and dim != found:
            raise ConfigError(f"retrieval decoder: dim {dim}, but the index {config.index!r} holds {found}-d embeddings")
        return (ConditioningInput(QUERY, 1, found, "a point of the encoder's embedding space"),)

    @classmethod
    def check_local_files(cls, config: RetrievalDecoderConfig, *, require: bool = False) -> None:  # type: ignore[override]
        """The index folder's manifest is there and well formed (``require``: a missing one is an error)."""
        try:
            _manifest(config)
        except GalleryIndexError as exc:
            if Path(config.index).exists():
                raise ConfigError(str(exc)) from exc
            if require:
                raise WeightsNotFoundError(str(exc)) from exc

    # -- the encoder the queries live with
    def attach_encoder(self, encoder: Any, *, component: str, media_io: Any) -> None:
        """Check the index against the model's encoder of this modality (once per encoder) and keep its ``MediaIO``.

        Raises:
            GalleryIndexError: the index was built with another encoder (one line naming both).
        """
        self._media_io = media_io
        if encoder is None:
            return
        index = self._open()
        identity = encoder_identity(encoder, component, media_io)
        if self._checked != identity.fingerprint:
            index.check_encoder(identity)
            self._checked = identity.fingerprint

    # -- lifecycle
    def _open(self) -> GalleryIndex:
        with self._lock:
            if self._index is None:
                self._index = GalleryIndex.open(self.config.index)  # type: ignore[attr-defined]
            return self._index

    def _load(self) -> None:
        index = self._open()
        self._search = make_search(index.embeddings, self.config.search)  # type: ignore[attr-defined]
        if self._media_io is None:  # used alone, not through a model: the reader the index was built with
            from nextgpt_registry import resolve_target

            self._media_io = resolve_target(index.manifest["media_io"])()

    def _unload(self) -> None:
        self._search = None

    def encode_unconditional(self) -> dict[str, torch.Tensor]:
        """Retrieval has no classifier-free guidance: the "empty" query is the zero vector."""
        return {QUERY: torch.zeros(1, 1, self._open().dim)}

    def generate(self, conditioning: dict[str, torch.Tensor], negative: dict[str, torch.Tensor], *,
                 generator: torch.Generator | None, options: DecodeOptions) -> list[Any]:  # type: ignore[override]
        index, k = self._open(), options.top_k  # type: ignore[attr-defined]
        queries = conditioning[QUERY][:, 0].float().cpu().numpy()
        scores, ids = self._search.search(queries, k)
        out = []
        for row_scores, row_ids in zip(scores, ids):
            best = int(row_ids[0])
            path = index.item_path(best)
            if not path.is_file():
                raise MediaError(f"gallery item {index.items[best].path!r} (in the index {str(index.folder)!r}) is no "
                                 "longer there; rebuild the index with `nextgpt index build`")
            media = self._media_io.read(path)
            neighbours = [{"gallery_item": index.items[int(i)].path, "score": round(float(s), 6)}
                          for s, i in zip(row_scores, row_ids) if int(i) >= 0]
            out.append(DecodedItem(media, {
                "gallery_item": index.items[best].path, "file": str(path), "score": round(float(row_scores[0]), 6),
                "neighbours": neighbours, "search": self._search.name, "index": str(index.folder),
            }))
        return out
