"""A gallery indexed once in an encoder's embedding space, and nearest-neighbour search over it.

``build_index(gallery, encoder, ...)`` encodes every file of one modality in a folder with the composition's own
encoder for that modality (ImageBind's joint space for the ImageBind encoders), L2-normalises each embedding, and
writes an index folder (atomically)::

    manifest.json            format "nextgpt-gallery-index", modality, dim, its MediaIO, the gallery folder, every item (path
                             relative to the gallery, sha256, size), files skipped and why, the encoder's identity
    embeddings.safetensors   "embeddings": float32 (N, dim), row i = item i, unit norm

The **encoder identity** (:class:`EncoderIdentity`) is the component id and options, a fingerprint of its weights
(names, shapes, dtypes and a strided sample of every tensor's values) and a **probe**: the embedding of the
modality's own ``MediaIO.example()``. :meth:`GalleryIndex.check_encoder` recomputes both for the encoder a model
uses and refuses the index (one :class:`~nextgpt_core.errors.GalleryIndexError` line naming both encoders) when
either differs: other weights, or the same weights with other preprocessing, would put the queries in another space
than the gallery.

Search (:class:`ExactSearch`, the default) is one matrix product with every item and a top-k; :class:`FaissSearch`
(HNSW over inner products, from the optional ``faiss-cpu`` package: ``pip install 'nextgpt-core[ann]'``) answers
approximately for large galleries. ``benchmarks/retrieval.py`` measures both.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import GalleryIndexError, MediaError

__all__ = [
    "EMBEDDINGS_FILE",
    "FORMAT",
    "MANIFEST",
    "EncoderIdentity",
    "ExactSearch",
    "FaissSearch",
    "GalleryIndex",
    "GalleryItem",
    "build_index",
    "encoder_identity",
    "encoder_mismatch",
    "faiss_available",
    "gallery_files",
    "make_search",
    "write_index",
]

FORMAT = "nextgpt-gallery-index"
VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
#: how close the probe embeddings of the index's encoder and a model's encoder must be (cosine similarity)
PROBE_TOLERANCE = 1e-4


# ============================================================================================ encoder identity
@dataclass(frozen=True)
class EncoderIdentity:
    """What an index's embeddings depend on.

    Attributes:
        component: the encoder's component id (``"image/imagebind"``).
        target: its class (``"module:Class"``).
        options: its config, as JSON.
        fingerprint: sha256 over its state dict: every tensor's name, shape and a strided sample of its values.
        probe: the L2-normalised embedding of the modality's ``MediaIO.example()`` (empty when it has none).
    """

    component: str
    target: str
    options: dict[str, Any]
    fingerprint: str
    probe: tuple[float, ...] = ()

    def describe(self) -> str:
        """``component (fingerprint prefix)`` for messages."""
        return f"{self.component} ({self.target}, weights {self.fingerprint[:12]})"


def _fingerprint(module: torch.nn.Module, samples: int = 4096) -> str:
    """sha256 over every tensor's name, shape and a strided sample of its values as float16 (so the same weights
    held in float32 or float16, as ``modules_dtype`` may, give the same fingerprint)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        sample = flat[::step].to("cpu", torch.float32).numpy().astype("<f2")
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def encoder_identity(encoder: Any, component: str, media_io: Any = None) -> EncoderIdentity:
    """The :class:`EncoderIdentity` of ``encoder`` (an :class:`~nextgpt_core.interfaces.Encoder`)."""
    probe: tuple[float, ...] = ()
    example = media_io.example() if media_io is not None else None
    if example is not None:
        probe = tuple(float(v) for v in embed_items(encoder, [example])[0])
    cls = type(encoder)
    return EncoderIdentity(
        component=component,
        target=f"{cls.__module__}:{cls.__qualname__}",
        options=encoder.config.model_dump(mode="json"),
        fingerprint=_fingerprint(encoder),
        probe=probe,
    )


def encoder_mismatch(stored: EncoderIdentity, identity: EncoderIdentity) -> str | None:
    """Why embeddings made with the encoder ``stored`` do not live in ``identity``'s space (``None``: they do):
    other weights (fingerprint), or the same weights embedding the probe item otherwise (preprocessing options)."""
    if identity.fingerprint != stored.fingerprint:
        return "other weights"
    if stored.probe and identity.probe:
        a, b = np.asarray(stored.probe), np.asarray(identity.probe)
        cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)) if len(a) == len(b) else 0.0
        if len(a) != len(b) or cosine < 1 - PROBE_TOLERANCE:
            return "the same weights but another embedding of the probe item (other preprocessing options)"
    return None


@torch.no_grad()
def embed_items(encoder: Any, media: Sequence[Any], batch_size: int = 16) -> np.ndarray:
    """``encoder``'s embedding of each media item (its tokens averaged), L2-normalised: float32 ``(n, dim)``."""
    param = next(encoder.parameters(), None)
    out = []
    for start in range(0, len(media), batch_size):
        x = torch.stack([encoder.preprocess(m) for m in media[start : start + batch_size]])
        if param is not None:
            x = x.to(param.device, param.dtype if x.is_floating_point() else x.dtype)
        feats = encoder(x).float().mean(dim=1)
        out.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, encoder.output_dim), np.float32)


# ============================================================================================ search
class ExactSearch:
    """Exact top-k by cosine similarity: ``(N, dim)`` unit rows, one matrix product per query batch."""

    name = "exact"

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``queries (Q, dim)`` (normalised here) -> ``(scores (Q, k), ids (Q, k))``, best first."""
        q = torch.nn.functional.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=-1)
        k = min(k, self.embeddings.shape[0])
        scores, ids = torch.topk(q @ self.embeddings.T, k, dim=1)
        return scores.numpy(), ids.numpy()


def faiss_available() -> bool:
    """Whether the optional ``faiss`` module imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissSearch:
    """Approximate top-k with FAISS's HNSW graph over inner products (unit rows: cosine similarity).

    Args:
        embeddings: ``(N, dim)`` unit rows.
        m: neighbours per graph node (32); ef_construction / ef_search: the build and query beam widths.
    """

    name = "faiss-hnsw"

    def __init__(self, embeddings: np.ndarray, *, m: int = 32, ef_construction: int = 80, ef_search: int = 64) -> None:
        try:
            import faiss
        except ImportError:
            raise GalleryIndexError("search = 'faiss-hnsw' needs the optional faiss-cpu package: "
                                    "pip install 'nextgpt-core[ann]' (or use search = 'exact')") from None
        data = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.index = faiss.IndexHNSWFlat(data.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.hnsw.efSearch = ef_search
        self.index.add(data)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``queries (Q, dim)`` (normalised here) -> ``(scores (Q, k), ids (Q, k))``, best first."""
        q = np.asarray(queries, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        scores, ids = self.index.search(np.ascontiguousarray(q), min(k, self.index.ntotal))
        return scores, ids


def make_search(embeddings: np.ndarray, kind: str = "exact") -> "ExactSearch | FaissSearch":
    """The searcher ``kind`` (``"exact"`` or ``"faiss-hnsw"``) over ``embeddings``."""
    if kind == "exact":
        return ExactSearch(embeddings)
    if kind == "faiss-hnsw":
        return FaissSearch(embeddings)
    raise GalleryIndexError(f"unknown search {kind!r}; choose 'exact' or 'faiss-hnsw'")


# ============================================================================================ the index
@dataclass(frozen=True)
class GalleryItem:
    """One indexed file: ``path`` relative to the gallery folder, its ``sha256`` and ``size`` when indexed."""

    path: str
    sha256: str
    size: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def gallery_files(gallery: Path, extensions: Iterable[str]) -> list[Path]:
    """Every file under ``gallery`` with one of ``extensions`` (lower-case, with the dot), sorted by relative path;
    hidden files and folders (``.nextgpt-index`` among them) are left out."""
    wanted = {e.lower() for e in extensions}
    found = []
    for root, dirs, files in os.walk(gallery):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(gallery).as_posix())


class GalleryIndex:
    """An index folder, read: ``modality``, ``items``, ``embeddings (N, dim)``, the encoder's identity.

    Use :meth:`open`. ``search(queries, k)`` answers with the searcher chosen by :meth:`searcher`.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], embeddings: np.ndarray) -> None:
        self.folder = folder
        self.manifest = manifest
        self.embeddings = embeddings
        self.modality: str = manifest["modality"]
        self.dim: int = int(manifest["dim"])
        self.items = [GalleryItem(**item) for item in manifest["items"]]
        self.identity = EncoderIdentity(**{**manifest["encoder"], "probe": tuple(manifest["encoder"].get("probe", ()))})
        gallery = Path(manifest["gallery"])
        self.gallery = gallery if gallery.is_absolute() else (folder / gallery).resolve()

    @staticmethod
    def read_manifest(folder: "str | os.PathLike[str]") -> dict[str, Any]:
        """``manifest.json`` of an index folder, checked for its form (no embeddings read)."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise GalleryIndexError(f"no gallery index at {str(folder)!r} (no {MANIFEST}); build one with "
                                    "`nextgpt index build GALLERY --modality KEY`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise GalleryIndexError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise GalleryIndexError(f"{path}: not a nextgpt gallery index (format {FORMAT!r} expected)")
        if manifest.get("version") != VERSION:
            raise GalleryIndexError(f"{path}: index version {manifest.get('version')!r}; this nextgpt reads {VERSION} "
                                    "(rebuild it with `nextgpt index build`)")
        try:
            if not (isinstance(manifest["modality"], str) and int(manifest["dim"]) > 0 and isinstance(manifest["items"], list)
                    and isinstance(manifest["media_io"], str)
                    and isinstance(manifest["gallery"], str) and isinstance(manifest["encoder"]["fingerprint"], str)):
                raise TypeError("wrong types")
        except (KeyError, TypeError, ValueError) as exc:
            raise GalleryIndexError(f"{path}: malformed gallery index manifest ({exc})") from exc
        return manifest

    @classmethod
    def open(cls, folder: "str | os.PathLike[str]") -> "GalleryIndex":
        """Read an index folder written by :func:`build_index` (manifest and embeddings, checked)."""
        from ..serialization import read_safetensors

        folder = Path(folder).resolve()
        manifest = cls.read_manifest(folder)
        try:
            tensors = read_safetensors(folder / EMBEDDINGS_FILE)
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable file
            raise GalleryIndexError(f"{folder / EMBEDDINGS_FILE}: cannot read the embeddings ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        embeddings = tensors.get("embeddings")
        n, dim = len(manifest["items"]), int(manifest["dim"])
        if embeddings is None or tuple(embeddings.shape) != (n, dim):
            got = None if embeddings is None else tuple(embeddings.shape)
            raise GalleryIndexError(f"{folder}: embeddings {got} do not match the manifest's {n} items x {dim}")
        return cls(folder, manifest, embeddings.float().numpy())

    def check_encoder(self, identity: EncoderIdentity) -> None:
        """Refuse the index unless ``identity`` (a model's encoder) is the encoder that built it.

        Raises:
            GalleryIndexError: other weights (fingerprint) or another embedding of the probe item.
        """
        problem = encoder_mismatch(self.identity, identity)
        if problem:
            raise GalleryIndexError(
                f"gallery index {str(self.folder)!r} was built with encoder {self.identity.describe()}, not with this "
                f"model's {identity.describe()} ({problem}); rebuild it with `nextgpt index build` for this composition"
            )

    def item_path(self, i: int) -> Path:
        """The gallery file of item ``i``."""
        return self.gallery / self.items[i].path


def write_index(
    out: "str | os.PathLike[str]",
    *,
    modality: str,
    gallery: Path,
    items: Sequence[GalleryItem],
    embeddings: np.ndarray,
    identity: EncoderIdentity,
    media_io: str,
    skipped: Sequence[tuple[str, str]] = (),
    facts: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an index folder atomically (see the module docstring); ``gallery`` is stored relative to ``out`` when
    ``out`` lies inside it, so the gallery and its index move together. ``media_io`` is the ``"module:Class"`` that
    reads the gallery's files (the retrieval decoder reads the items it returns with it)."""
    from ..folders import GALLERY_INDEX, atomic_directory
    from ..serialization import write_safetensors

    out_path = Path(os.path.abspath(out))
    gallery = gallery.resolve()
    try:
        stored = Path(os.path.relpath(gallery, out_path)).as_posix() if out_path.resolve().is_relative_to(gallery) else str(gallery)
    except ValueError:
        stored = str(gallery)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.shape[0] != len(items):
        raise ValueError(f"{embeddings.shape[0]} embeddings for {len(items)} items")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "modality": modality,
        "dim": int(embeddings.shape[1]),
        "media_io": media_io,
        "gallery": stored,
        "items": [asdict(i) for i in items],
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "encoder": {**asdict(identity), "probe": list(identity.probe)},
        **({"facts": dict(facts)} if facts else {}),
    }
    with atomic_directory(out_path, GALLERY_INDEX, overwrite=overwrite) as tmp:
        write_safetensors({"embeddings": torch.from_numpy(embeddings)}, tmp / EMBEDDINGS_FILE)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out_path


def build_index(
    gallery: "str | os.PathLike[str]",
    encoder: Any,
    *,
    modality: str,
    component: str,
    media_io: Any,
    extensions: Iterable[str],
    out: "str | os.PathLike[str] | None" = None,
    batch_size: int = 16,
    overwrite: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Encode every ``modality`` file of ``gallery`` with ``encoder`` and write the index (default
    ``GALLERY/.nextgpt-index/<modality>``).

    Files ``media_io`` cannot read are skipped and listed in the manifest (``skipped``), never silently. Returns
    ``(index folder, facts)`` with ``items``, ``skipped``, ``seconds`` and ``items_per_second``.

    Raises:
        GalleryIndexError: ``gallery`` is not a folder, or holds no readable file of the modality.
    """
    gallery = Path(gallery)
    if not gallery.is_dir():
        raise GalleryIndexError(f"gallery {str(gallery)!r} is not a folder")
    files = gallery_files(gallery, extensions)
    if not files:
        raise GalleryIndexError(f"gallery {str(gallery)!r} holds no {modality} file ({', '.join(sorted(extensions))})")
    started = time.perf_counter()
    items: list[GalleryItem] = []
    skipped: list[tuple[str, str]] = []
    rows: list[np.ndarray] = []
    batch: list[tuple[Path, Any]] = []

    def flush() -> None:
        if batch:
            rows.append(embed_items(encoder, [m for _, m in batch], batch_size))
            for path, _ in batch:
                items.append(GalleryItem(path.relative_to(gallery).as_posix(), _sha256(path), path.stat().st_size))
            batch.clear()

    for done, path in enumerate(files, start=1):
        try:
            media = media_io.read(path)
            encoder.preprocess(media)  # a file the encoder cannot take is skipped like an unreadable one
        except MediaError as exc:
            skipped.append((path.relative_to(gallery).as_posix(), str(exc)))
            continue
        batch.append((path, media))
        if len(batch) >= batch_size:
            flush()
        if progress is not None:
            progress(done, len(files))
    flush()
    if not items:
        raise GalleryIndexError(f"gallery {str(gallery)!r}: none of its {len(files)} {modality} files could be read "
                                f"(first: {skipped[0][0]}: {skipped[0][1]})")
    embeddings = np.concatenate(rows)
    seconds = time.perf_counter() - started
    facts = {"items": len(items), "skipped": len(skipped), "seconds": round(seconds, 3),
             "items_per_second": round(len(items) / max(seconds, 1e-9), 2)}
    identity = encoder_identity(encoder, component, media_io)
    target = Path(out) if out is not None else gallery / ".nextgpt-index" / modality
    io_class = type(media_io)
    write_index(target, modality=modality, gallery=gallery, items=items, embeddings=embeddings, identity=identity,
                media_io=f"{io_class.__module__}:{io_class.__qualname__}", skipped=skipped, facts=facts, overwrite=overwrite)
    return target, facts
