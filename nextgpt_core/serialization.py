"""Low-level file helpers: atomic directory writes (:func:`nextgpt_core.folders.atomic_directory`, re-exported
here), safetensors IO and content hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import torch

from .errors import CheckpointError
from .folders import atomic_directory

__all__ = ["atomic_directory", "read_safetensors", "sha256_file", "write_safetensors"]


def write_safetensors(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Save tensors (made contiguous and detached, shared storage cloned) as safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file on CPU; a missing or corrupt file raises :class:`CheckpointError`."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
