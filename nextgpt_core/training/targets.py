"""Stage-2 targets, computed once and read from disk: each caption's embedding by the decoder's own text encoder,
and, for a decoder with ``targets_from_media`` (a retrieval decoder), the modality encoder's embedding of each
target media file.

Layout of a target cache folder (written atomically)::

    manifest.json                        composition, decoder id per modality, conditioning shapes, counts; "media":
                                         per modality the encoder's identity, dim and every embedded file (path,
                                         sha256, size)
    <modality>/<target_id>.safetensors   one tensor per conditioning input name, each (length, dim)
    media-embeddings/<modality>.safetensors  "embeddings": float32 (N, dim), row i = the manifest's media item i:
                                         its tokens averaged, L2-normalised (what a gallery index holds)

``target_id`` is :func:`nextgpt_core.training.data.target_id` (modality + caption), so the trainer finds a
sample's targets without re-encoding anything. A media embedding is found by the file's sha256: a file changed
since caching is not found (:meth:`TargetCache.media_target` answers ``None`` and the loss embeds it as it now is),
and embeddings made with another encoder (weights fingerprint, probe embedding: the gallery index's
:class:`~nextgpt_core.retrieval.index.EncoderIdentity`) are refused in one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch

from ..errors import CheckpointError, DatasetError, MediaError
from ..folders import TARGET_CACHE, check_output_folder
from ..serialization import atomic_directory, read_safetensors, sha256_file, write_safetensors

if TYPE_CHECKING:
    from ..model import NextGPT

__all__ = ["MEDIA_FOLDER", "TargetCache", "build_decoders", "caption_decoders", "cache_targets", "media_target_encoders"]

MANIFEST = "manifest.json"
FORMAT = "nextgpt-target-cache"
#: the folder of a cache holding the target media embeddings, one safetensors file per modality
MEDIA_FOLDER = "media-embeddings"


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


def media_target_encoders(resolved: Any, registry: Any = None) -> dict[str, tuple[Any, str, Any]]:
    """``{modality: (encoder, component id, MediaIO)}`` for every modality one of whose decoders (the first or an
    extra one) takes its stage-2 targets from the target media (``targets_from_media``: a retrieval decoder) and
    that has an encoder, built exactly as the model builds it (what :func:`cache_targets` embeds the media with)."""
    from nextgpt_registry import resolve_target

    from ..retrieval.model_encoder import composition_encoder

    out: dict[str, tuple[Any, str, Any]] = {}
    for key, modality in resolved.modalities.items():
        if not modality.can_generate or modality.encoder is None:
            continue
        if any(getattr(resolve_target(r.decoder.target), "targets_from_media", False) for r in modality.routes.values()):
            encoder, component, media_io, _ = composition_encoder(resolved.composition, key, registry)
            out[key] = (encoder, component, media_io)
    return out


def _embed_media(files: Mapping[str, Path], encoder: Any, media_io: Any, batch_size: int) -> torch.Tensor:
    """The encoder's embedding of each file (tokens averaged, L2-normalised), float32 ``(N, dim)`` in order."""
    import numpy as np

    from ..retrieval.index import embed_items

    rows = []
    paths = list(files.values())
    for start in range(0, len(paths), batch_size):
        media = []
        for path in paths[start : start + batch_size]:
            try:
                media.append(media_io.read(path))
            except MediaError as exc:
                raise DatasetError(f"target media {str(path)!r} cannot be read ({exc})") from exc
        rows.append(embed_items(encoder, media, batch_size))
    return torch.from_numpy(np.concatenate(rows).astype(np.float32))


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
    media_encoders: Mapping[str, tuple[Any, str, Any]] | None = None,
    media_batch_size: int = 16,
) -> dict[str, int]:
    """Encode every distinct ``(modality, caption)`` target once with its decoder and write the cache folder; with
    ``media_encoders``, also embed every distinct target media file of those modalities once.

    Args:
        targets: objects with ``modality``, ``caption`` and ``target_id`` (``training.data.Target``; its
            ``media_path`` is read for the modalities of ``media_encoders``).
        decoders: ``{modality: Decoder}`` (each must implement ``encode_text``).
        out: the cache folder, written atomically: absent, empty, or (with ``overwrite``) a target cache holding
            only its own files (anything else is refused before any caption is encoded,
            :class:`~nextgpt_core.folders.OutputFolderError`).
        batch_size: captions per ``encode_text`` call.
        progress: called with the number of captions done after each batch.
        inputs: the paths the caller read (dataset file, media root): ``out`` may not be or hold one.
        media_encoders: ``{modality: (encoder, component id, MediaIO)}`` (:func:`media_target_encoders`): the
            modalities whose target media are embedded, each file once (by content), with that encoder.
        media_batch_size: media files per encoder call.

    Returns:
        ``{modality: number of cached caption targets}`` (the media embeddings are counted in the manifest's
        ``media``; :meth:`TargetCache.media_counts`).

    Raises:
        DatasetError: a target of a modality the composition cannot generate, or a target media file the modality's
            ``MediaIO`` cannot read.
    """
    inputs = tuple(inputs)
    check_output_folder(out, TARGET_CACHE, overwrite=overwrite, inputs=inputs)
    unique: dict[str, dict[str, str]] = {}
    media_targets = set(decoders) - set(caption_decoders(decoders))
    media_encoders = dict(media_encoders or {})
    media_files: dict[str, dict[str, Path]] = {}  # {modality: {sha256: path}}, the first path of each content
    seen: set[tuple[str, Path]] = set()
    for target in targets:
        path = getattr(target, "media_path", None)
        if target.modality in media_encoders and path is not None and (target.modality, Path(path)) not in seen:
            seen.add((target.modality, Path(path)))
            media_files.setdefault(target.modality, {}).setdefault(sha256_file(Path(path)), Path(path))
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
        media: dict[str, Any] = {}
        if media_files:
            (tmp / MEDIA_FOLDER).mkdir()
        for modality, files in media_files.items():
            from ..retrieval.index import encoder_identity

            encoder, component, media_io = media_encoders[modality]
            embeddings = _embed_media(files, encoder, media_io, media_batch_size)
            write_safetensors({"embeddings": embeddings}, tmp / MEDIA_FOLDER / f"{modality}.safetensors")
            identity = encoder_identity(encoder, component, media_io)
            media[modality] = {
                "encoder": {**asdict(identity), "probe": list(identity.probe)},
                "dim": int(embeddings.shape[1]),
                "items": [{"path": str(p), "sha256": sha, "size": p.stat().st_size} for sha, p in files.items()],
            }
        manifest = {
            "format": FORMAT,
            "composition": composition,
            "decoders": {k: type(d).__name__ for k, d in decoders.items() if k in unique},
            "shapes": shapes,
            "counts": counts,
            **({"media": media} if media else {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


class TargetCache(Mapping[str, dict[str, torch.Tensor]]):
    """Read-only ``{target_id: {conditioning name: (length, dim)}}`` over a cache folder, loaded lazily; and the
    cached target media embeddings (:meth:`media_target`)."""

    def __init__(self, folder: "str | os.PathLike[str]") -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise CheckpointError(f"{self.folder}: no {MANIFEST}; not a target cache (run `nextgpt cache-targets`)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self._files = {p.stem: p for p in self.folder.glob("*/*.safetensors") if p.parent.name != MEDIA_FOLDER}
        media = self.manifest.get("media") or {}
        #: ``{modality: {sha256: row}}`` of the cached target media embeddings
        self._media_rows: dict[str, dict[str, int]] = {
            key: {item["sha256"]: i for i, item in enumerate(info["items"])} for key, info in media.items()}
        self._media: dict[str, torch.Tensor] = {}
        self._checked: dict[str, int] = {}  # modality -> id() of the encoder the embeddings were checked against
        self._digests: dict[Path, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256)
        self.media_hits = 0
        self.media_misses = 0

    def __getitem__(self, target_id: str) -> dict[str, torch.Tensor]:
        try:
            return read_safetensors(self._files[target_id])
        except KeyError:
            raise KeyError(target_id) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    # -- target media embeddings (decoders with ``targets_from_media``)
    def media_counts(self) -> dict[str, int]:
        """``{modality: number of target media files embedded}`` (empty for a cache without them)."""
        return {key: len(rows) for key, rows in self._media_rows.items()}

    def check_media_encoder(self, model: NextGPT, key: str) -> None:
        """Refuse the cached ``key`` media embeddings unless ``model``'s encoder of ``key`` made them (its weights'
        fingerprint and its embedding of the probe item; checked once per encoder).

        Raises:
            CheckpointError: another encoder, or none (one line naming both).
        """
        from ..retrieval.index import EncoderIdentity, encoder_identity, encoder_mismatch

        info = self.manifest["media"][key]
        stored = EncoderIdentity(**{**info["encoder"], "probe": tuple(info["encoder"].get("probe", ()))})
        encoder = model.encoders[key] if key in model.encoders else None
        if encoder is None:
            raise CheckpointError(f"target cache {str(self.folder)!r} holds {key} target media embedded with "
                                  f"{stored.describe()}, but this model has no {key} encoder")
        if self._checked.get(key) == id(encoder):
            return
        component = model.resolved.modalities[key].encoder.id  # type: ignore[union-attr]
        identity = encoder_identity(encoder, component, model.media_io(key))
        problem = encoder_mismatch(stored, identity)
        if problem:
            raise CheckpointError(
                f"target cache {str(self.folder)!r}: its {key} target media were embedded with encoder "
                f"{stored.describe()}, not with this model's {identity.describe()} ({problem}); run `nextgpt "
                "cache-targets` again with this composition"
            )
        self._checked[key] = id(encoder)

    def media_target(self, model: NextGPT, key: str, path: "str | os.PathLike[str]") -> torch.Tensor | None:
        """The cached stage-2 target of a media-target input: the encoder's embedding of the file at ``path``,
        ``(1, dim)`` float32 on CPU, as :meth:`NextGPT.media_target` computes it; ``None`` when the cache holds no
        ``key`` media embeddings or not this file's content (changed or added since caching: the caller embeds it).

        Raises:
            CheckpointError: the cached embeddings were made with another encoder than ``model``'s.
        """
        rows = self._media_rows.get(key)
        if rows is None:
            return None
        self.check_media_encoder(model, key)
        row = rows.get(self._sha256(Path(path)))
        if row is None:
            self.media_misses += 1
            return None
        self.media_hits += 1
        if key not in self._media:
            self._media[key] = read_safetensors(self.folder / MEDIA_FOLDER / f"{key}.safetensors")["embeddings"]
        return self._media[key][row : row + 1].float().clone()

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        known = self._digests.get(path)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = sha256_file(path)
        self._digests[path] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest
