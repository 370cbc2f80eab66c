"""Stage-2 targets: each caption's embedding by the decoder's own text encoder, computed once and read from disk.

Layout of a target cache folder (written atomically)::

    manifest.json                     composition, decoder id per modality, conditioning shapes, counts
    <modality>/<target_id>.safetensors one tensor per conditioning input name, each (length, dim)

``target_id`` is :func:`nextgpt_core.training.data.target_id` (modality + caption), so the trainer finds a
sample's targets without re-encoding anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..errors import CheckpointError, DatasetError
from ..folders import TARGET_CACHE, check_output_folder
from ..serialization import atomic_directory, read_safetensors, write_safetensors

__all__ = ["TargetCache", "build_decoders", "caption_decoders", "cache_targets"]

MANIFEST = "manifest.json"
FORMAT = "nextgpt-target-cache"


def build_decoders(resolved: Any) -> dict[str, Any]:
    """The decoders of a resolved composition, without building the LLM or encoders (lazy: nothing loads yet)."""
    from nextgpt_registry import resolve_target

    decoders = {}
    for key, modality in resolved.modalities.items():
        if modality.can_generate:
            decoders[key] = resolve_target(modality.decoder.target).from_options(modality.decoder.options)
    return decoders


def caption_decoders(decoders: Mapping[str, Any]) -> dict[str, Any]:
    """The decoders whose stage-2 targets are caption encodings (a retrieval decoder's are the target media's
    embeddings, which the trainer takes from the encoder: nothing to cache)."""
    return {k: d for k, d in decoders.items() if not getattr(type(d), "targets_from_media", False)}


def cache_targets(
    targets: Iterable[Any],
    decoders: Mapping[str, Any],
    out: "str | os.PathLike[str]",
    *,
    composition: str = "",
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = True,
    inputs: Iterable[Any] = (),
) -> dict[str, int]:
    """Encode every distinct ``(modality, caption)`` target once with its decoder and write the cache folder.

    Args:
        targets: objects with ``modality``, ``caption`` and ``target_id`` (``training.data.Target``).
        decoders: ``{modality: Decoder}`` (each must implement ``encode_text``).
        out: the cache folder, written atomically: absent, empty, or (with ``overwrite``) a target cache holding
            only its own files (anything else is refused before any caption is encoded,
            :class:`~nextgpt_core.folders.OutputFolderError`).
        batch_size: captions per ``encode_text`` call.
        progress: called with the number of captions done after each batch.
        inputs: the paths the caller read (dataset file, media root): ``out`` may not be or hold one.

    Returns:
        ``{modality: number of cached targets}``.

    Raises:
        DatasetError: a target of a modality the composition cannot generate.
    """
    inputs = tuple(inputs)
    check_output_folder(out, TARGET_CACHE, overwrite=overwrite, inputs=inputs)
    unique: dict[str, dict[str, str]] = {}
    media_targets = set(decoders) - set(caption_decoders(decoders))
    for target in targets:
        if target.modality in media_targets:
            continue  # a retrieval decoder: trained against the encoder's embedding of the target media
        if target.modality not in decoders:
            raise DatasetError(
                f"target {(target.caption[:60] + '...') if len(target.caption) > 60 else target.caption!r} is "
                f"{target.modality!r}, which the composition does not generate "
                f"(generates: {', '.join(decoders) or 'nothing'})"
            )
        unique.setdefault(target.modality, {})[target.target_id] = target.caption
    counts: dict[str, int] = {}
    with atomic_directory(out, TARGET_CACHE, overwrite=overwrite, inputs=inputs) as tmp:
        shapes = {}
        for modality, items in unique.items():
            decoder = decoders[modality]
            shapes[modality] = {c.name: [c.length, c.dim] for c in decoder.conditioning_inputs}
            folder = tmp / modality
            folder.mkdir()
            ids, captions = list(items), list(items.values())
            for start in range(0, len(ids), batch_size):
                chunk = captions[start : start + batch_size]
                with torch.no_grad():
                    encoded = decoder.encode_text(chunk)
                for row, tid in enumerate(ids[start : start + batch_size]):
                    write_safetensors({name: t[row] for name, t in encoded.items()}, folder / f"{tid}.safetensors")
                if progress is not None:
                    progress(len(chunk))
            counts[modality] = len(ids)
        manifest = {
            "format": FORMAT,
            "composition": composition,
            "decoders": {k: type(d).__name__ for k, d in decoders.items() if k in unique},
            "shapes": shapes,
            "counts": counts,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


class TargetCache(Mapping[str, dict[str, torch.Tensor]]):
    """Read-only ``{target_id: {conditioning name: (length, dim)}}`` over a cache folder, loaded lazily."""

    def __init__(self, folder: "str | os.PathLike[str]") -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise CheckpointError(f"{self.folder}: no {MANIFEST}; not a target cache (run `nextgpt cache-targets`)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self._files = {p.stem: p for p in self.folder.glob("*/*.safetensors")}

    def __getitem__(self, target_id: str) -> dict[str, torch.Tensor]:
        try:
            return read_safetensors(self._files[target_id])
        except KeyError:
            raise KeyError(target_id) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)
