"""OpenAI-style messages -> a nextgpt :class:`~nextgpt_core.conversation.Conversation`."""

from __future__ import annotations

from typing import Any

from ..conversation import Conversation, Media, Text, Turn
from ..errors import ConversationError
from .dialect import PART_MODALITY
from .errors import ServingError
from .media import MediaGateway
from .schemas import (AudioURLPart, ChatMessage, FilePart, ImageURLPart, InputAudioPart, MediaPart, MediaURL, TextPart,
                      VideoURLPart)

__all__ = ["to_conversation"]


def to_conversation(messages: list[ChatMessage], gateway: MediaGateway) -> tuple[Conversation, list[str]]:
    """Build the conversation (media decoded and checked); returns it and notices (ignored system messages,
    names, image details).

    Consecutive messages of the same role are merged into one turn. An assistant message's ``audio`` (OpenAI's
    reply field, sent back as returned) is an input at the place of its ``audio_url`` part, or after the
    message's content when it has none. Raises :class:`ServingError` (400, 404, 413, 415)."""
    notices: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            notices.append(f"messages[{index}]: {message.role} messages are ignored (the composition sets the prompt)")
            continue
        if message.name:
            notices.append(f"messages[{index}].name is ignored")
        if message.refusal:
            raise ServingError(400, "unsupported_parameter", f"messages[{index}].refusal: this server makes no refusals; "
                               "send it as text", param=f"messages[{index}].refusal")
        if message.tool_calls:
            raise ServingError(400, "unsupported_parameter", f"messages[{index}].tool_calls: tools are not supported",
                               param=f"messages[{index}].tool_calls")
        if message.audio is not None and message.role != "assistant":
            raise ServingError(400, "invalid_content", f"messages[{index}].audio belongs to assistant messages; send a "
                               "user's audio as an input_audio part", param=f"messages[{index}].audio")
        used: set[str] = set()
        parts = _parts(message, index, gateway, notices, used)
        if message.audio is not None and message.audio.id not in used:
            parts.append(_audio_field(message, index, gateway))
        if not parts:
            raise ServingError(400, "empty_message", f"messages[{index}] has no content", param=f"messages[{index}]")
        if turns and turns[-1].role == message.role:
            turns[-1].parts.extend(parts)
        else:
            turns.append(Turn(message.role, parts))  # type: ignore[arg-type]
    if not turns or turns[-1].role != "user":
        raise ServingError(400, "invalid_messages", "the last message must be a user message", param="messages")
    return Conversation(turns), notices


def _parts(message: ChatMessage, index: int, gateway: MediaGateway, notices: list[str], used: set[str]) -> list[Any]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content.strip() else []
    out: list[Any] = []
    for j, part in enumerate(content):
        where = f"messages[{index}].content[{j}]"
        try:
            item = _part(part, where, gateway, notices, used)
        except ConversationError as exc:
            raise ServingError(400, "invalid_content", f"{where}: {exc}", param=where) from exc
        except ServingError as exc:
            if exc.param is None:
                exc.param = where
            raise
        if item is not None:
            out.append(item)
    return out


def _audio_field(message: ChatMessage, index: int, gateway: MediaGateway) -> Media:
    """An assistant message's ``audio``: its stored file (``id``), else its ``data``."""
    audio = message.audio
    assert audio is not None
    where = f"messages[{index}].audio"
    if gateway.known_file(audio.id):
        return gateway.from_file_id(audio.id, PART_MODALITY["audio_url"])
    if audio.data:
        key = PART_MODALITY["audio_url"]
        data = gateway.decode_base64(audio.data, f"{where}.data")
        return gateway.from_bytes(data, key, gateway.suffix_for(key, fmt=audio.format or None))
    raise ServingError(404, "file_not_found", f"{where}: no such audio {audio.id[:80]!r} (and no data)", param=where)


def _url_part(ref: MediaURL, modality: str, where: str, gateway: MediaGateway, notices: list[str], used: set[str]) -> Media:
    gateway.spec(modality)  # a modality the model does not read is named before the URL is looked at
    if ref.detail not in (None, "auto"):
        notices.append(f"{where}: detail {ref.detail!r} has no effect (media are encoded at the encoder's resolution)")
    if ref.file_id and gateway.known_file(ref.file_id):  # a reply's part sent back: its stored file
        used.add(ref.file_id)
        return gateway.from_file_id(ref.file_id, modality)
    media = _from_url(ref.url, modality, where, gateway)
    if media.path is not None:
        used.add(media.path.stem)
    return media


def _part(part: Any, where: str, gateway: MediaGateway, notices: list[str], used: set[str]) -> Text | Media | None:
    if isinstance(part, TextPart):
        return Text(part.text) if part.text.strip() else None
    if isinstance(part, ImageURLPart):
        return _url_part(part.image_url, PART_MODALITY["image_url"], where, gateway, notices, used)
    if isinstance(part, VideoURLPart):
        return _url_part(part.video_url, PART_MODALITY["video_url"], where, gateway, notices, used)
    if isinstance(part, AudioURLPart):
        return _url_part(part.audio_url, PART_MODALITY["audio_url"], where, gateway, notices, used)
    if isinstance(part, InputAudioPart):
        key = PART_MODALITY["input_audio"]
        data = gateway.decode_base64(part.input_audio.data, f"{where} input_audio.data")
        return gateway.from_bytes(data, key, gateway.suffix_for(key, fmt=part.input_audio.format))
    if isinstance(part, FilePart):
        ref = part.file
        if ref.file_id:
            used.add(ref.file_id)
            return gateway.from_file_id(ref.file_id)
        if ref.file_data:
            mime, data = gateway.parse_data_url(ref.file_data, f"{where} file.file_data")
            key = gateway.modality_for_name(ref.filename) if ref.filename else gateway.modality_for_mime(mime or "")
            return gateway.from_bytes(data, key, gateway.suffix_for(key, mime=mime, filename=ref.filename))
        raise ServingError(400, "invalid_content", f"{where}: a file part needs file_id or file_data")
    if isinstance(part, MediaPart):
        ref = part.media
        if ref.file_id and gateway.known_file(ref.file_id):  # a reply's part sent back (it may also hold data)
            if ref.url and gateway.own_file_id(ref.url) not in (None, ref.file_id):
                raise ServingError(400, "invalid_content", f"{where}: file_id and url name different files")
            used.add(ref.file_id)
            return gateway.from_file_id(ref.file_id, ref.modality)
        if ref.data:
            if ref.data.startswith("data:"):
                mime, data = gateway.parse_data_url(ref.data, f"{where} media.data")
                return gateway.from_bytes(data, ref.modality, gateway.suffix_for(ref.modality, fmt=ref.format, mime=mime))
            data = gateway.decode_base64(ref.data, f"{where} media.data")
            return gateway.from_bytes(data, ref.modality, gateway.suffix_for(ref.modality, fmt=ref.format))
        if ref.file_id:
            return gateway.from_file_id(ref.file_id, ref.modality)  # unknown: 404 file_not_found
        if ref.url:
            return _from_url(ref.url, ref.modality, where, gateway)
        raise ServingError(400, "invalid_content", f"{where}: a media part needs data, file_id or url")
    raise ServingError(400, "invalid_content", f"{where}: unsupported part")  # pragma: no cover - pydantic rejects first


def _from_url(url: str, modality: str, where: str, gateway: MediaGateway) -> Media:
    if url.strip().startswith("data:"):
        mime, data = gateway.parse_data_url(url, where)
        return gateway.from_bytes(data, modality, gateway.suffix_for(modality, mime=mime))
    file_id = gateway.own_file_id(url)
    if file_id is None:
        raise ServingError(400, "unsupported_url",
                           f"{where}: only data: URLs and this server's /v1/files/<id> URLs are accepted (nothing is fetched)")
    return gateway.from_file_id(file_id, modality)
