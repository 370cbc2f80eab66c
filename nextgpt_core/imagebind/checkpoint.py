"""One shared reader for ``imagebind_huge.pth`` (or a ``.safetensors`` file with its key names): each encoder takes
only its own branch.

The file (about 4.8 GB, every branch of ImageBind-huge) is opened once per process and path with
``torch.load(path, mmap=True, weights_only=True)``: tensors stay memory-mapped until a branch copies them into its
module. Branches nobody asked for (``text``, ``thermal``, ``imu`` in a NExT-GPT setup) are reported by
:meth:`ImageBindCheckpoint.unused` as information, never as an error.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import ClassVar, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, WeightsNotFoundError
from ..interfaces import load_state_strict
from .branches import BRANCH_PREFIXES

__all__ = ["ImageBindCheckpoint"]


def _branch_of(key: str) -> str | None:
    """``"modality_trunks.audio.blocks.0..."`` -> ``"audio"``; ``None`` for a key outside every branch."""
    group, _, rest = key.partition(".")
    modality, _, tail = rest.partition(".")
    return modality if group in BRANCH_PREFIXES and modality and tail else None


class ImageBindCheckpoint:
    """The tensors of one ImageBind checkpoint file, grouped by branch.

    Use :meth:`open` (cached per path), not the constructor::

        ckpt = ImageBindCheckpoint.open("ckpt/imagebind_huge.pth")
        ckpt.load_branch(encoder, "audio")      # strict: missing / unexpected / mis-shaped keys are errors
        ckpt.unused()                           # e.g. ["text", "thermal", "imu"]

    Raises (from :meth:`open`):
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: the file is not a PyTorch state dict of ImageBind branch tensors.
    """

    _cache: ClassVar[dict[tuple[str, int, int], "ImageBindCheckpoint"]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, state: Mapping[str, torch.Tensor]) -> None:
        self.path = path
        self._branches: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            self._branches.setdefault(_branch_of(key) or "", {})[key] = tensor
        self._requested: set[str] = set()
        self._lock = threading.Lock()

    # -- opening
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "ImageBindCheckpoint":
        """The checkpoint at ``path``, read once per process (re-read if the file changed on disk)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"ImageBind checkpoint not found: {path} (nextgpt never downloads weights; put imagebind_huge.pth there)"
            )
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with cls._cache_lock:
            cached = cls._cache.get(key)
            if cached is None:
                for old in [k for k in cls._cache if k[0] == key[0]]:
                    del cls._cache[old]
                cached = cls._cache[key] = cls(path, _read(path))
        return cached

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every opened checkpoint (the memory maps close once no module refers to their tensors)."""
        with cls._cache_lock:
            cls._cache.clear()

    # -- what is in it
    @property
    def modalities(self) -> list[str]:
        """The branches present in the file, in file order (``["vision", "text", "audio", ...]`` for the official one)."""
        return [m for m in self._branches if m]

    def branch_state(self, modality: str) -> dict[str, torch.Tensor]:
        """The tensors of one branch, under their full official names (``modality_trunks.audio.blocks.0...``).

        Marks the branch as used. ``CheckpointError`` if the file has no such branch.
        """
        if modality not in self.modalities:
            raise CheckpointError(f"{self.path}: no {modality!r} branch (the file has {self.modalities})")
        with self._lock:
            self._requested.add(modality)
        return dict(self._branches[modality])

    def load_branch(self, module: nn.Module, modality: str) -> None:
        """Copy the ``modality`` branch into ``module`` strictly.

        ``module``'s ``state_dict`` must have exactly the branch's keys and shapes (an
        :class:`~nextgpt_core.imagebind.ImageBindBranch` or :class:`~nextgpt_core.imagebind.ImageBindEncoder` of
        the matching size); otherwise ``CheckpointError`` lists the missing, unexpected and mis-shaped keys.
        Values are cast to the module's dtype.
        """
        load_state_strict(module, self.branch_state(modality), where=f"{self.path} ({modality} branch)")

    def unused(self) -> list[str]:
        """Branches in the file that no caller has asked for, in file order (information, not an error)."""
        with self._lock:
            return [m for m in self.modalities if m not in self._requested]

    def __repr__(self) -> str:
        return f"ImageBindCheckpoint({str(self.path)!r}, branches={self.modalities}, unused={self.unused()})"


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":  # the same key names in safetensors (the toy world's weights)
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure to parse means "not a checkpoint"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {first[:200]})") from exc
        return _check_state(path, state)
    try:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:  # legacy (non-zip) serialisation cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means "not a checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {first[:200]})") from exc
    return _check_state(path, state)


def _check_state(path: Path, state: object) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict of tensors (got {type(state).__name__})")
    foreign = sorted(k for k in state if _branch_of(k) is None)
    if foreign or not state:
        raise CheckpointError(
            f"{path}: not an ImageBind checkpoint: keys outside every modality_<group>.<branch> prefix: "
            f"{foreign[:8]}{' ...' if len(foreign) > 8 else ''}"
            if foreign
            else f"{path}: empty state dict, not an ImageBind checkpoint"
        )
    return dict(state)
