"""The server's media folder: uploaded and generated files under random ids, nothing else readable or writable.

A file id is ``file-`` plus 32 hex digits, made by the server (``uuid4``); a request's id must match that exactly
before any path is built, so ``../``, ``/``, ``%2F`` or NUL in an id can never reach the file system. Files live at
``<media_dir>/<id><suffix>`` with their metadata in ``<media_dir>/<id>.json``; the suffix is one the server chose
from the modality's registered extensions (checked again on every read), never the client's file name.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ServingError
from .schemas import FileObject

__all__ = ["FILE_ID", "FileRecord", "FileStore"]

#: the only form a file id takes
FILE_ID = re.compile(r"file-[0-9a-f]{32}")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


@dataclass(frozen=True)
class FileRecord:
    """One stored file: ``id``, size in ``bytes``, ``created_at`` (Unix seconds), the client's ``filename``
    (display only), ``purpose`` (``"user_data"``, ``"output"``...), ``modality``, ``mime_type``, ``suffix`` and
    ``created_ns`` (the creation time in nanoseconds, which orders the files of one second)."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    modality: str
    mime_type: str
    suffix: str
    created_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        """The API's view of the record: :class:`~nextgpt_core.serving.schemas.FileObject` (the OpenAI file object
        plus ``modality``, ``mime_type`` and the ``url`` of the content), as a dict."""
        return FileObject(id=self.id, bytes=self.bytes, created_at=self.created_at, filename=self.filename,
                          purpose=self.purpose, modality=self.modality, mime_type=self.mime_type,
                          url=content_url(self.id)).model_dump()


def content_url(file_id: str) -> str:
    """The path serving a file's bytes."""
    return f"/v1/files/{file_id}/content"


class FileStore:
    """Stores and finds files inside one folder (thread-safe; files are written to a temporary name, then renamed)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".incoming"
        self._tmp.mkdir(exist_ok=True)
        self._lock = threading.Lock()

    # -- writing
    def temp_path(self, suffix: str) -> Path:
        """A fresh path for a file being received (inside the folder, removed by :meth:`discard` or moved by
        :meth:`add_path`)."""
        return self._tmp / f"{uuid.uuid4().hex}{self._check_suffix(suffix)}"

    def copy_stream(self, source: BinaryIO, target: Path, limit: int) -> int:
        """Copy ``source`` into ``target`` in blocks; over ``limit`` bytes -> 413 (``target`` removed)."""
        size = 0
        with open(target, "wb") as out:
            while block := source.read(1 << 20):
                size += len(block)
                if size > limit:
                    out.close()
                    self.discard(target)
                    raise ServingError(413, "upload_too_large", f"the file is over the upload limit of {limit} bytes")
                out.write(block)
        return size

    def add_path(self, path: Path, *, filename: str, purpose: str, modality: str, mime_type: str) -> FileRecord:
        """Move a received file (from :meth:`temp_path`) in under a new id."""
        path = Path(path)
        suffix = self._check_suffix(path.suffix)
        file_id = f"file-{uuid.uuid4().hex}"
        now = time.time_ns()
        record = FileRecord(id=file_id, bytes=path.stat().st_size, created_at=now // 10**9,
                            filename=_display_name(filename), purpose=purpose, modality=modality,
                            mime_type=mime_type, suffix=suffix, created_ns=now)
        with self._lock:
            meta = self.root / f"{file_id}.json"
            tmp_meta = self._tmp / f"{file_id}.json"
            tmp_meta.write_text(json.dumps(asdict(record)))
            os.replace(path, self.root / f"{file_id}{suffix}")
            os.replace(tmp_meta, meta)
        return record

    def discard(self, path: Path) -> None:
        """Remove a temporary file (no error if it is gone)."""
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass

    # -- reading
    def get(self, file_id: str) -> FileRecord:
        """The record of ``file_id``; a malformed or unknown id -> 404."""
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            raise ServingError(404, "file_not_found", f"no such file: {str(file_id)[:80]!r} (file ids look like file-<32 hex digits>)")
        meta = self.root / f"{file_id}.json"
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            raise ServingError(404, "file_not_found", f"no such file: {file_id!r}") from None
        record = FileRecord(**data)
        if record.id != file_id:
            raise ServingError(404, "file_not_found", f"no such file: {file_id!r}")
        return record

    def path(self, record: FileRecord) -> Path:
        """Where a record's bytes are (always directly inside the folder)."""
        path = self.root / f"{record.id}{self._check_suffix(record.suffix)}"
        if path.parent != self.root or not path.is_file():
            raise ServingError(404, "file_not_found", f"no such file: {record.id!r}")
        return path

    def records(self) -> list[FileRecord]:
        """Every stored file's record, oldest first."""
        out = []
        for meta in self.root.glob("file-*.json"):
            try:
                out.append(self.get(meta.stem))
            except ServingError:  # removed meanwhile, or not one of ours
                continue
        return sorted(out, key=lambda r: (r.created_ns or r.created_at * 10**9, r.id))

    def delete(self, file_id: str) -> FileRecord:
        """Remove a file and its metadata (404 when unknown). A request already reading it may then fail."""
        with self._lock:
            record = self.get(file_id)
            path = self.root / f"{record.id}{self._check_suffix(record.suffix)}"
            (self.root / f"{record.id}.json").unlink(missing_ok=True)  # metadata first: the id is gone at once
            path.unlink(missing_ok=True)
        return record

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("file-*.json"))

    @staticmethod
    def _check_suffix(suffix: str) -> str:
        if not _SUFFIX.fullmatch(suffix or ""):
            raise ServingError(415, "unsupported_media_type", f"unsupported file suffix {suffix!r}")
        return suffix


def _display_name(name: str) -> str:
    """The client's file name, for display only: the last path component, printable, at most 255 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    return "".join(ch for ch in base if ch.isprintable())[:255] or "upload"
