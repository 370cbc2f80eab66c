"""Request and response bodies of the API (pydantic; FastAPI builds the OpenAPI schema from these).

The shapes follow OpenAI's chat completions, images and files APIs and vLLM-Omni's multimodal replies (generated
images and videos as ``image_url`` / ``video_url`` parts of ``message.content``, audio as OpenAI's
``message.audio``); what nextgpt adds (``media`` parts of any registered modality, ``modalities`` naming any
output modality, ``media_format``, ``seed``, ``notices``) is documented in docs/serving.md.

Request bodies forbid unknown fields: a field this server does not know is a 400 ``unsupported_parameter`` naming
it, never silently ignored. OpenAI fields that we do not implement are declared here and checked by
:func:`unsupported_settings`: their neutral value is accepted, any other is a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AudioURLPart", "ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest", "ChatMessage", "ContentPart",
    "ErrorResponse", "FileDeleted", "FileList", "FileObject", "Health", "ImageGenerationRequest", "ImagesResponse",
    "ImageURLPart", "MediaPart", "MediaRef", "MediaURL", "MessageAudio", "ModelCard", "ModelList", "PART_TYPES",
    "VideoURLPart", "describe_validation_error", "unsupported_settings",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- content parts
class TextPart(_Body):
    """``{"type": "text", "text": "..."}``."""

    type: Literal["text"]
    text: str


class MediaURL(_Body):
    """The object of an ``image_url`` / ``video_url`` / ``audio_url`` part.

    ``url``: a ``data:<mime>;base64,...`` URL, this server's ``/v1/files/{id}/content`` URL (any host), or a bare
    file id. ``file_id`` (nextgpt, in replies): the stored file; when a reply's part is sent back, the stored file
    is used (the ``url`` only when that file is gone). ``mime_type`` (nextgpt, in replies). ``produced_by`` and
    ``details`` (nextgpt, in replies): which decoder made the item (generation or retrieval) and what it reported;
    accepted and not used when a reply is sent back. ``detail`` (OpenAI, images): ``auto`` is what is done;
    ``low`` / ``high`` have no effect and add a notice.
    """

    url: str
    file_id: Optional[str] = None
    mime_type: Optional[str] = None
    produced_by: Optional[str] = None
    details: Optional[dict[str, Any]] = None
    detail: Optional[str] = None


class ImageURLPart(_Body):
    """``{"type": "image_url", "image_url": {"url": ...}}``: an image (input, or generated in a reply)."""

    type: Literal["image_url"]
    image_url: MediaURL


class VideoURLPart(_Body):
    """``{"type": "video_url", "video_url": {"url": ...}}``: a video (input, or generated in a reply)."""

    type: Literal["video_url"]
    video_url: MediaURL


class AudioURLPart(_Body):
    """``{"type": "audio_url", "audio_url": {"url": ...}}``: an audio clip (input, or generated in a reply, where
    it marks the place of ``message.audio`` among the parts)."""

    type: Literal["audio_url"]
    audio_url: MediaURL


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
    it is plain base64), ``file_id`` or ``url`` (this server's file URL). In a reply (a modality with no OpenAI part
    type): ``modality``, ``file_id``, ``url``, ``mime_type``, ``produced_by`` / ``details`` (which decoder made
    it), and ``data`` (base64) unless the request asked for ``media_format: "url"``.
    """

    modality: str
    data: Optional[str] = None
    format: Optional[str] = None
    file_id: Optional[str] = None
    url: Optional[str] = None
    mime_type: Optional[str] = None
    produced_by: Optional[str] = None
    details: Optional[dict[str, Any]] = None


class MediaPart(_Body):
    """``{"type": "media", "media": {...}}``: nextgpt's part for any modality, in requests and replies."""

    type: Literal["media"]
    media: MediaRef


ContentPart = Annotated[
    Union[TextPart, ImageURLPart, VideoURLPart, AudioURLPart, InputAudioPart, FilePart, MediaPart],
    Field(discriminator="type"),
]
#: the ``type`` of every content part a request may hold
PART_TYPES = ("text", "image_url", "video_url", "audio_url", "input_audio", "file", "media")


class MessageAudio(_Body):
    """OpenAI's ``message.audio`` of a reply (``id``, base64 ``data``, ``format``, ``expires_at``, ``transcript``).
    Sent back in an assistant message, ``id`` (the stored file's id) names the audio; ``data`` is used when that
    file is gone."""

    id: str
    data: Optional[str] = None
    format: Optional[str] = None
    expires_at: Optional[int] = None
    transcript: Optional[str] = None


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


def describe_validation_error(errors: list[dict]) -> tuple[str, str, str]:
    """``(where, message, code)`` of the most specific problem in a request body's validation errors: the deepest
    one, so a list of parts with an unknown part ``type`` is named as such, not as "content: should be a string".
    ``code`` is ``unsupported_parameter`` for a field this server does not know, else ``invalid_request``."""
    if not errors:
        return "", "invalid", "invalid_request"
    unknown = [e for e in errors if e.get("type") == "extra_forbidden"]
    if unknown:  # an unknown field is named first: it is the likeliest reason for the rest
        where = ".".join(_clean_loc(tuple(unknown[0].get("loc", ()))))
        return where, "this field is not supported by this server (see docs/serving.md)", "unsupported_parameter"

    def depth(err: dict) -> tuple[int, int]:
        return len(_clean_loc(tuple(err.get("loc", ())))), err.get("type") != "string_type"

    err = max(errors, key=depth)
    where = ".".join(_clean_loc(tuple(err.get("loc", ()))))
    kind = err.get("type")
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        return where, f"unknown content part type {tag!r}; a part's type is one of {', '.join(PART_TYPES)}", "invalid_request"
    if kind == "union_tag_not_found":
        return where, f"a content part needs a 'type' (one of {', '.join(PART_TYPES)})", "invalid_request"
    if where.endswith("content") and kind in ("string_type", "list_type"):
        return where, "should be a string or a list of content parts", "invalid_request"
    return where, str(err.get("msg", "invalid")), "invalid_request"


class ChatMessage(_Body):
    """One message. ``content`` is a string or a list of parts; an assistant message may carry an earlier reply's
    media (its ``image_url`` / ``video_url`` / ``audio_url`` / ``media`` parts and its ``audio``, as returned): they
    are re-fed as inputs. ``system`` / ``developer`` messages are ignored with a notice, and so is ``name``.
    ``refusal`` and ``tool_calls`` are accepted only empty (this server makes neither)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None
    audio: Optional[MessageAudio] = None
    name: Optional[str] = None
    refusal: Optional[str] = None
    tool_calls: Optional[list[Any]] = None


class StreamOptions(_Body):
    """``include_usage``: one more chunk before ``[DONE]`` with ``usage`` and an empty ``choices``."""

    include_usage: bool = False


class AudioOutput(_Body):
    """OpenAI's ``audio`` request field. ``format``: the audio writer's format (``wav``); ``voice`` has no effect
    (nextgpt's audio decoder makes sounds, not a voice) and adds a notice."""

    format: Optional[str] = None
    voice: Optional[Any] = None


# ---------------------------------------------------------------------------------------------- the request
#: OpenAI fields this server does not implement, and the values that ask for nothing (accepted; any other -> 400)
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logprobs": (False,), "top_logprobs": (0,),
    "logit_bias": ({},), "tools": ([],), "tool_choice": ("none",), "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},), "functions": ([],), "reasoning_effort": (), "prediction": (),
    "web_search_options": (), "function_call": ("none",), "verbosity": (), "service_tier": ("auto", "default"),
}
#: OpenAI fields that only describe the caller: accepted, with a notice saying that nothing is done with them
DESCRIPTIVE = ("user", "metadata", "store", "safety_identifier", "prompt_cache_key")


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``. Unknown fields are a 400 ``unsupported_parameter``."""

    model: Optional[str] = Field(default=None, description="The served model id (see /v1/models); optional.")
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: Optional[list[str]] = Field(
        default=None, description='Outputs the reply must contain besides text, e.g. ["text", "image"].')
    seed: Optional[int] = Field(default=None, ge=0, lt=2**31, description="Same seed, same reply.")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    n: Optional[int] = Field(default=None, description="Only 1.")
    stop: Union[str, list[str], None] = Field(default=None, description="Up to 4 strings that end the reply text.")
    audio: Optional[AudioOutput] = None
    media_format: Literal["url", "b64_json"] = Field(
        default="b64_json", description="b64_json (default): generated media inline as data: URLs; url: as URLs of /v1/files.")
    # OpenAI fields without an effect here (see NEUTRAL / DESCRIPTIVE)
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    logit_bias: Optional[dict[str, Any]] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[dict[str, Any]] = None
    functions: Optional[list[Any]] = None
    function_call: Optional[Any] = None
    reasoning_effort: Optional[Any] = None
    prediction: Optional[Any] = None
    web_search_options: Optional[Any] = None
    verbosity: Optional[Any] = None
    service_tier: Optional[str] = None
    user: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None
    store: Optional[bool] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None


def unsupported_settings(body: BaseModel) -> tuple[str | None, list[str]]:
    """``(the first field set to a value this server cannot honour, or None; notices)`` for a request: a field
    of ``NEUTRAL`` must hold one of its neutral values; one of ``DESCRIPTIVE`` only adds a notice."""
    notices = []
    for name, neutral in NEUTRAL.items():
        value = getattr(body, name, None)
        if value is not None and value not in neutral:
            return name, notices
    for name in DESCRIPTIVE:
        if getattr(body, name, None) not in (None, False):
            notices.append(f"{name}: accepted and not used by this server")
    return None, notices


class ImageGenerationRequest(_Body):
    """``POST /v1/images/generations`` (OpenAI's Images API): the prompt goes through the whole model (the LLM
    answers it and asks for an image; the image decoder draws it)."""

    prompt: str = Field(min_length=1)
    model: Optional[str] = None
    n: int = Field(default=1, ge=1, le=10)
    size: Optional[str] = Field(default=None, description='"auto" or the decoder\'s own size, e.g. "32x32".')
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Optional[Literal["png"]] = None
    seed: Optional[int] = Field(default=None, ge=0, lt=2**31, description="nextgpt: image i uses seed + i.")
    quality: Optional[Literal["auto", "standard"]] = None
    style: Optional[Any] = None
    background: Optional[Literal["auto"]] = None
    moderation: Optional[Any] = None
    output_compression: Optional[Any] = None
    user: Optional[str] = None


# ---------------------------------------------------------------------------------------------- replies
ReplyPart = Union[TextPart, ImageURLPart, VideoURLPart, AudioURLPart, MediaPart]


class ReplyMessage(BaseModel):
    """The assistant's reply. ``content``: the text (a string) when the reply holds no media, else the parts in the
    order the model produced them (text, ``image_url``, ``video_url``, ``audio_url``, ``media``). ``audio``:
    OpenAI's audio object for the reply's (first) generated audio."""

    role: Literal["assistant"] = "assistant"
    content: Union[str, list[ReplyPart]]
    audio: Optional[MessageAudio] = None


class Choice(BaseModel):
    """The one choice; ``finish_reason`` is ``stop`` (end of reply or a stop string) or ``length`` (budget)."""

    index: int = 0
    message: ReplyMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    """``prompt_tokens``: positions of the prompt in the LLM's input (media items count their projected tokens);
    ``completion_tokens``: ids the LLM generated, signal tokens included; ``total_tokens``: their sum."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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
    """A streamed piece: ``role`` (first chunk), ``content`` (a text piece, or a list holding one generated media
    part), ``audio`` (with an ``audio_url`` part: OpenAI's audio object)."""

    role: Optional[Literal["assistant"]] = None
    content: Union[str, list[ReplyPart], None] = None
    audio: Optional[MessageAudio] = None


class ChunkChoice(BaseModel):
    """The one choice of a chunk; ``finish_reason`` on the last chunk only."""

    index: int = 0
    delta: Delta
    finish_reason: Optional[Literal["stop", "length"]] = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed reply (``data: {...}``). ``modality`` (as vLLM-Omni): what the chunk
    carries (``text`` or a media modality). The chunk with ``finish_reason`` also carries ``seed``, ``notices`` and
    ``usage``; with ``stream_options.include_usage`` one more chunk has ``usage`` and empty ``choices``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    modality: Optional[str] = None
    seed: Optional[int] = None
    notices: Optional[list[str]] = None
    usage: Optional[Usage] = None


class ImageData(BaseModel):
    """One generated image: ``b64_json`` (PNG bytes, base64) or ``url``; ``file_id`` (nextgpt) the stored file."""

    b64_json: Optional[str] = None
    url: Optional[str] = None
    file_id: str
    revised_prompt: Optional[str] = None


class ImagesResponse(BaseModel):
    """``POST /v1/images/generations``: ``data`` holds ``n`` images; ``seed`` (nextgpt) the seed of the first."""

    created: int
    data: list[ImageData]
    output_format: Literal["png"] = "png"
    seed: int
    notices: list[str]


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


class FileList(BaseModel):
    """``GET /v1/files``: one page of files (``has_more``: pass the last id as ``after`` for the next)."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: Optional[str] = None
    last_id: Optional[str] = None
    has_more: bool


class FileDeleted(BaseModel):
    """``DELETE /v1/files/{id}``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool


class InputFormat(BaseModel):
    """What one input modality reads: file suffixes and MIME types; ``by_suffix``: an upload is taken for this
    modality from its suffix (else only when ``modality`` names it, e.g. a depth map, which is also a PNG)."""

    extensions: list[str]
    mime_types: list[str]
    by_suffix: bool


class ModelCard(BaseModel):
    """The served model, the modalities it reads and writes, and (nextgpt) the files each input modality reads."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "nextgpt"
    input_modalities: list[str]
    output_modalities: list[str]
    input_formats: dict[str, InputFormat]


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
