"""Request and response bodies of the API (pydantic; FastAPI builds the OpenAPI schema from these).

The shapes follow OpenAI's chat completions and files APIs; what nextgpt adds (media parts, ``modalities`` naming
any registered output modality, ``media_format``, ``seed`` and ``notices`` in the reply) is documented in
docs/serving.md.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest", "ChatMessage", "ContentPart", "ErrorResponse",
    "FileObject", "Health", "MediaPart", "MediaRef", "ModelCard", "ModelList", "PART_TYPES", "describe_validation_error",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------------------- content parts
class TextPart(_Body):
    """``{"type": "text", "text": "..."}``."""

    type: Literal["text"]
    text: str


class ImageURL(_Body):
    """``url``: a ``data:image/...;base64,...`` URL, this server's ``/v1/files/{id}/content`` URL, or a file id."""

    url: str
    detail: Optional[str] = None


class ImageURLPart(_Body):
    """``{"type": "image_url", "image_url": {"url": ...}}``: an image input."""

    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Body):
    """Base64 audio bytes and their ``format`` (a suffix of the audio modality: ``wav``, ``mp3``, ``flac``...)."""

    data: str
    format: str


class InputAudioPart(_Body):
    """``{"type": "input_audio", "input_audio": {"data": ..., "format": "wav"}}``: an audio input."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Body):
    """OpenAI's file part: an uploaded ``file_id`` (or ``file_data``, a data URL, with ``filename``)."""

    file_id: Optional[str] = None
    file_data: Optional[str] = None
    filename: Optional[str] = None


class FilePart(_Body):
    """``{"type": "file", "file": {"file_id": "file-..."}}``: an uploaded file of any input modality."""

    type: Literal["file"]
    file: FileRef


class MediaRef(_Body):
    """A media item of any registered modality.

    In a request: ``modality`` and exactly one of ``data`` (base64, or a data URL; ``format`` names the suffix when
    it is plain base64), ``file_id`` or ``url`` (this server's file URL). In a reply: ``modality``, ``file_id``,
    ``url``, ``mime_type``, and ``data`` (base64) when the request asked for ``media_format: "b64_json"``.
    """

    modality: str
    data: Optional[str] = None
    format: Optional[str] = None
    file_id: Optional[str] = None
    url: Optional[str] = None
    mime_type: Optional[str] = None


class MediaPart(_Body):
    """``{"type": "media", "media": {...}}``: nextgpt's part for any modality, in requests and replies."""

    type: Literal["media"]
    media: MediaRef


ContentPart = Annotated[Union[TextPart, ImageURLPart, InputAudioPart, FilePart, MediaPart], Field(discriminator="type")]
#: the ``type`` of every content part a request may hold
PART_TYPES = ("text", "image_url", "input_audio", "file", "media")


def _clean_loc(loc: tuple) -> list[str]:
    """A pydantic error location without the union-branch labels (``str``, ``list[tagged-union[...]]``) and the
    discriminator tag it inserts, as the client wrote the body: ``messages.0.content.0.text``."""
    out: list[str] = []
    skip_tag = False
    for i, part in enumerate(loc):
        if part == "body" and i == 0:
            continue
        if isinstance(part, str) and ("[" in part or part in ("str", "list", "int", "float", "bool", "none")):
            skip_tag = skip_tag or "tagged-union" in part
            continue
        if skip_tag and isinstance(part, str):
            skip_tag = False  # the discriminator value pydantic puts before the part's own fields
            continue
        out.append(str(part))
    return out


def describe_validation_error(errors: list[dict]) -> tuple[str, str]:
    """``(where, message)`` of the most specific problem in a request body's validation errors: the deepest one,
    so a list of parts with an unknown part ``type`` is named as such, not as "content: should be a string"."""
    if not errors:
        return "", "invalid"
    def depth(err: dict) -> tuple[int, int]:
        return len(_clean_loc(tuple(err.get("loc", ())))), err.get("type") != "string_type"
    err = max(errors, key=depth)
    where = ".".join(_clean_loc(tuple(err.get("loc", ()))))
    kind = err.get("type")
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        return where, f"unknown content part type {tag!r}; a part's type is one of {', '.join(PART_TYPES)}"
    if kind == "union_tag_not_found":
        return where, f"a content part needs a 'type' (one of {', '.join(PART_TYPES)})"
    if where.endswith("content") and kind in ("string_type", "list_type"):
        return where, "should be a string or a list of content parts"
    return where, str(err.get("msg", "invalid"))


class ChatMessage(_Body):
    """One message. ``content`` is a string or a list of parts; assistant messages may carry earlier replies'
    media parts (they are re-fed as inputs). ``system`` / ``developer`` messages are ignored with a notice."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


# ---------------------------------------------------------------------------------------------- the request
class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``. Unknown OpenAI fields are ignored."""

    model: Optional[str] = Field(default=None, description="The served model id (see /v1/models); optional.")
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: Optional[list[str]] = Field(
        default=None, description='Outputs the reply must contain besides text, e.g. ["text", "image"].')
    seed: Optional[int] = Field(default=None, ge=0, lt=2**31, description="Same seed, same reply.")
    stream: bool = False
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    n: Optional[int] = Field(default=None, ge=1, le=1)
    media_format: Literal["url", "b64_json"] = Field(
        default="url", description="b64_json: generated media also inline as base64 (`media.data`).")


# ---------------------------------------------------------------------------------------------- replies
class ReplyMessage(BaseModel):
    """The assistant's reply: ``content`` is the text; ``media`` the generated media parts in order; ``parts``
    text and media interleaved as generated."""

    role: Literal["assistant"] = "assistant"
    content: str
    media: list[MediaPart]
    parts: list[Union[TextPart, MediaPart]]


class Choice(BaseModel):
    """The one choice."""

    index: int = 0
    message: ReplyMessage
    finish_reason: Literal["stop", "length", "cancelled"]


class Usage(BaseModel):
    """``completion_tokens``: the ids the LLM generated, signal tokens included (prompt counts are not reported)."""

    completion_tokens: int


class ChatCompletion(BaseModel):
    """``object: "chat.completion"``; ``seed`` is the seed used, ``notices`` what the client should know."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    seed: int
    notices: list[str]


class Delta(BaseModel):
    """A streamed piece: ``role`` (first chunk), ``content`` (text) or ``media`` (one finished media part)."""

    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None
    media: Optional[list[MediaPart]] = None


class ChunkChoice(BaseModel):
    """The one choice of a chunk; ``finish_reason`` on the last chunk only."""

    index: int = 0
    delta: Delta
    finish_reason: Optional[Literal["stop", "length", "cancelled"]] = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed reply (``data: {...}``); the last chunk carries ``seed``, ``notices``
    and ``usage``, then ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    seed: Optional[int] = None
    notices: Optional[list[str]] = None
    usage: Optional[Usage] = None


class FileObject(BaseModel):
    """OpenAI's file object plus ``modality``, ``mime_type`` and ``url`` (where the bytes are)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    modality: str
    mime_type: str
    url: str


class ModelCard(BaseModel):
    """The served model and the modalities it reads and writes."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "nextgpt"
    input_modalities: list[str]
    output_modalities: list[str]


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """``GET /health``: ``running`` and ``waiting`` requests, ``capacity`` before a 429."""

    status: Literal["ok"] = "ok"
    model: str
    running: int
    waiting: int
    capacity: int


class ErrorDetail(BaseModel):
    """What went wrong: ``message`` (one line), ``type``, ``code``, ``param``."""

    message: str
    type: str
    code: Optional[str] = None
    param: Optional[str] = None


class ErrorResponse(BaseModel):
    """Every error (4xx, 5xx) has this body."""

    error: ErrorDetail
