"""Weights manifests: a list of the files a composition's weights consist of, with their SHA-256.

A composition may name one (``weights_manifest = "${COMPOSITION_DIR}/manifest.json"``); it is checked before
anything loads, so a missing, truncated or altered weights file is one error that names the file and says how to
rebuild it, instead of a library traceback from deep inside a loader. The toy world writes one
(``nextgpt_core.toy``); nothing here is specific to it.

The manifest is JSON: ``{"files": {"relative/path": "<sha256 hex>", ...}, "rebuild": "<command>"}`` (other keys
are ignored here); paths are relative to the manifest's folder and may not leave it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Mapping

from .errors import CheckpointError, WeightsNotFoundError
from .serialization import sha256_file

__all__ = ["verify_weights_manifest", "write_weights_manifest"]

_VERIFIED: dict[tuple[str, int], None] = {}
_LOCK = threading.Lock()


def _stamp(folder: Path, files: Mapping[str, str]) -> int:
    """A cheap fingerprint of the files' sizes and modification times (to skip re-hashing in one process)."""
    total = 0
    for rel in sorted(files):
        st = (folder / rel).stat()
        total = hash((total, rel, st.st_size, st.st_mtime_ns))
    return total


def verify_weights_manifest(manifest: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file the manifest lists against its SHA-256; return the listed ``{relative path: sha256}``.

    Raises:
        WeightsNotFoundError: the manifest or a listed file is missing (the message names it and the rebuild
            command).
        CheckpointError: the manifest is malformed, a path leaves its folder, or a file's content differs.
    """
    path = Path(manifest)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights manifest not found: {str(path)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable weights manifest ({type(exc).__name__}: {exc})") from exc
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise CheckpointError(f"{path}: a weights manifest needs \"files\": {{relative path: sha256}}")
    rebuild = data.get("rebuild")
    hint = f"; rebuild it with `{rebuild}`" if isinstance(rebuild, str) and rebuild else ""
    folder = path.resolve().parent
    for rel in files:
        target = (folder / rel).resolve()
        if folder not in target.parents:
            raise CheckpointError(f"{path}: listed file {rel!r} is outside the manifest's folder")
        if not target.is_file():
            raise WeightsNotFoundError(f"weights file missing: {str(folder / rel)!r} (listed in {path}){hint}")
    key = (str(folder), _stamp(folder, files))
    with _LOCK:
        if key in _VERIFIED:
            return dict(files)
    for rel, digest in files.items():
        if sha256_file(folder / rel) != digest:
            raise CheckpointError(f"weights file corrupted: {str(folder / rel)!r} does not match its sha256 in {path}{hint}")
    with _LOCK:
        _VERIFIED[key] = None
    return dict(files)


def write_weights_manifest(folder: str | os.PathLike[str], files: list[str], *, rebuild: str = "",
                           extra: Mapping[str, object] | None = None, name: str = "manifest.json") -> Path:
    """Hash ``files`` (relative to ``folder``) and write ``folder/name``: ``{"files": ..., "rebuild": ...,
    **extra}``. Returns the manifest's path."""
    folder = Path(folder)
    payload = {**(extra or {}), "rebuild": rebuild, "files": {rel: sha256_file(folder / rel) for rel in sorted(files)}}
    out = folder / name
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return out
