"""OpenAI-style messages -> a nextgpt :class:`~nextgpt_core.conversation.Conversation`."""

from __future__ import annotations

from typing import Any

from ..conversation import Conversation, Media, Text, Turn
from ..errors import ConversationError
from .errors import ServingError
from .media import MediaGateway
from .schemas import ChatMessage, FilePart, ImageURLPart, InputAudioPart, MediaPart, TextPart

__all__ = ["to_conversation"]

IMAGE, AUDIO = "image", "audio"  # the modalities OpenAI's own part types name


def to_conversation(messages: list[ChatMessage], gateway: MediaGateway) -> tuple[Conversation, list[str]]:
    """Build the conversation (media decoded and checked); returns it and notices (ignored system messages).

    Consecutive messages of the same role are merged into one turn. Raises :class:`ServingError` (400, 413, 415)."""
    notices: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            notices.append(f"messages[{index}]: {message.role} messages are ignored (the composition sets the prompt)")
            continue
        parts = _parts(message, index, gateway)
        if not parts:
            raise ServingError(400, "empty_message", f"messages[{index}] has no content", param=f"messages[{index}]")
        if turns and turns[-1].role == message.role:
            turns[-1].parts.extend(parts)
        else:
            turns.append(Turn(message.role, parts))  # type: ignore[arg-type]
    if not turns or turns[-1].role != "user":
        raise ServingError(400, "invalid_messages", "the last message must be a user message", param="messages")
    return Conversation(turns), notices


def _parts(message: ChatMessage, index: int, gateway: MediaGateway) -> list[Any]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content.strip() else []
    out: list[Any] = []
    for j, part in enumerate(content):
        where = f"messages[{index}].content[{j}]"
        try:
            item = _part(part, where, gateway)
        except ConversationError as exc:
            raise ServingError(400, "invalid_content", f"{where}: {exc}", param=where) from None
        except ServingError as exc:
            if exc.param is None:
                exc.param = where
            raise
        if item is not None:
            out.append(item)
    return out


def _part(part: Any, where: str, gateway: MediaGateway) -> Text | Media | None:
    if isinstance(part, TextPart):
        return Text(part.text) if part.text.strip() else None
    if isinstance(part, ImageURLPart):
        return _from_url(part.image_url.url, IMAGE, where, gateway)
    if isinstance(part, InputAudioPart):
        data = gateway.decode_base64(part.input_audio.data, f"{where} input_audio.data")
        return gateway.from_bytes(data, AUDIO, gateway.suffix_for(AUDIO, fmt=part.input_audio.format))
    if isinstance(part, FilePart):
        ref = part.file
        if ref.file_id:
            return gateway.from_file_id(ref.file_id)
        if ref.file_data:
            mime, data = gateway.parse_data_url(ref.file_data, f"{where} file.file_data")
            key = gateway.modality_for_name(ref.filename) if ref.filename else gateway.modality_for_mime(mime or "")
            return gateway.from_bytes(data, key, gateway.suffix_for(key, mime=mime, filename=ref.filename))
        raise ServingError(400, "invalid_content", f"{where}: a file part needs file_id or file_data")
    if isinstance(part, MediaPart):
        ref = part.media
        if bool(ref.data) == bool(ref.file_id or ref.url):
            raise ServingError(400, "invalid_content", f"{where}: a media part needs either data or file_id / url")
        if ref.file_id:
            if ref.url and gateway.own_file_id(ref.url) != ref.file_id:
                raise ServingError(400, "invalid_content", f"{where}: file_id and url name different files")
            return gateway.from_file_id(ref.file_id, ref.modality)
        if ref.url:
            return _from_url(ref.url, ref.modality, where, gateway)
        assert ref.data is not None
        if ref.data.startswith("data:"):
            mime, data = gateway.parse_data_url(ref.data, f"{where} media.data")
            return gateway.from_bytes(data, ref.modality, gateway.suffix_for(ref.modality, fmt=ref.format, mime=mime))
        data = gateway.decode_base64(ref.data, f"{where} media.data")
        return gateway.from_bytes(data, ref.modality, gateway.suffix_for(ref.modality, fmt=ref.format))
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
