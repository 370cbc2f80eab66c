"""The OpenAI / vLLM-Omni dialect of generated media: which content part carries which modality, and a reply's
``message`` (``content`` parts, ``audio``) built from a :class:`~nextgpt_core.conversation.Response` and the
files its media were stored as.

- an image is an ``image_url`` part, a video a ``video_url`` part, an audio clip an ``audio_url`` part plus
  OpenAI's ``message.audio`` (for the first audio of a reply); any other modality a ``media`` part (nextgpt);
- a part's ``url`` is a ``data:`` URL (``media_format: "b64_json"``, the default) or the absolute URL of the file
  (``media_format: "url"``); every part also names its ``file_id`` (nextgpt), so a reply sent back as returned is
  re-fed from the stored file.
"""

from __future__ import annotations

import base64
from typing import Any, Sequence

from ..conversation import Media, Text
from .files import FileRecord, FileStore, content_url

__all__ = ["AUDIO_EXPIRES_S", "PART_MODALITY", "URL_PART", "audio_object", "media_part", "reply_message"]

#: OpenAI's part type for a modality's media (a modality not named here travels as a ``media`` part)
URL_PART = {"image": "image_url", "video": "video_url", "audio": "audio_url"}
#: the modality an OpenAI part type carries (``input_audio`` too)
PART_MODALITY = {**{v: k for k, v in URL_PART.items()}, "input_audio": "audio"}
#: ``message.audio.expires_at`` = creation + this (as OpenAI and vLLM-Omni); the file itself is kept until deleted
AUDIO_EXPIRES_S = 24 * 3600


def _data_url(store: FileStore, record: FileRecord) -> str:
    data = base64.b64encode(store.path(record).read_bytes()).decode("ascii")
    return f"data:{record.mime_type};base64,{data}"


def media_part(store: FileStore, record: FileRecord, inline: bool, base_url: str,
               source: Media | None = None) -> dict[str, Any]:
    """The content part of one stored generated file: ``{"type": "image_url", "image_url": {"url", "file_id",
    "mime_type"}}`` (``video_url``, ``audio_url`` alike), or for another modality ``{"type": "media", "media":
    {"modality", "file_id", "url", "mime_type"[, "data"]}}``. ``inline``: ``url`` is a data URL; else the file's
    absolute URL under ``base_url``. ``source``: the generated part; when it says which decoder made it, the inner
    object also has ``produced_by`` and the decoder's ``details`` (nextgpt; never the server's file paths)."""
    kind = URL_PART.get(record.modality)
    absolute = base_url.rstrip("/") + content_url(record.id)
    if kind is None:
        media: dict[str, Any] = {"modality": record.modality, "file_id": record.id, "url": absolute,
                                 "mime_type": record.mime_type}
        if inline:
            media["data"] = base64.b64encode(store.path(record).read_bytes()).decode("ascii")
        return {"type": "media", "media": {**media, **_provenance(source)}}
    url = _data_url(store, record) if inline else absolute
    return {"type": kind, kind: {"url": url, "file_id": record.id, "mime_type": record.mime_type, **_provenance(source)}}


def _provenance(source: Media | None) -> dict[str, Any]:
    """``produced_by`` and ``details`` of a generated part (generation or retrieval), without the server's paths."""
    if source is None or not source.produced_by:
        return {}
    out: dict[str, Any] = {"produced_by": source.produced_by}
    details = {k: v for k, v in (source.details or {}).items() if k != "file"}
    if details:
        out["details"] = details
    return out


def audio_object(store: FileStore, record: FileRecord, transcript: str = "") -> dict[str, Any]:
    """OpenAI's ``message.audio`` for a stored audio file: ``id`` (the file id, which names it when the message is
    sent back), ``data`` (base64 bytes), ``format`` (the suffix), ``expires_at``, ``transcript``."""
    return {"id": record.id, "data": base64.b64encode(store.path(record).read_bytes()).decode("ascii"),
            "format": record.suffix.lstrip("."), "expires_at": record.created_at + AUDIO_EXPIRES_S,
            "transcript": transcript}


def reply_message(response: Any, records: Sequence[FileRecord], store: FileStore, *, inline: bool,
                  base_url: str) -> dict[str, Any]:
    """The ``message`` of a chat completion: ``content`` is the reply text when it holds no media, else its parts
    in order; ``audio`` is set when it generated audio (the first one; every audio also has its ``audio_url``
    part in ``content``)."""
    if not records:
        return {"role": "assistant", "content": response.text}
    by_media = dict(zip(map(id, response.media), records))
    content: list[dict[str, Any]] = []
    audio = None
    for part in response.parts:
        if isinstance(part, Text):
            if part.text.strip():
                content.append({"type": "text", "text": part.text})
            continue
        record = by_media[id(part)]
        content.append(media_part(store, record, inline, base_url, part))
        if record.modality == "audio" and audio is None:
            audio = audio_object(store, record)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if audio is not None:
        message["audio"] = audio
    return message
