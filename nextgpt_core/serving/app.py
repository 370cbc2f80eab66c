"""The FastAPI app: routes, error bodies, the body-size limit, the API key, streaming (server-sent events).

Routes: ``POST /v1/chat/completions``, ``POST /v1/images/generations``, ``POST /v1/files``, ``GET /v1/files``,
``GET|DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``GET /health``, ``GET /ui`` (the chat page, ``static/index.html``) and ``/ui/static/*``. Shapes: docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..conversation import Conversation, Media
from ..errors import ContextLengthError, ConversationError, MediaError, NextGPTError
from .config import ServeConfig
from .dialect import audio_object, media_part, reply_message
from .engine import Engine, Job, wait_result
from .errors import ServingError, error_body
from .files import FileStore
from .media import MediaGateway
from .messages import to_conversation
from .schemas import (ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Delta, ErrorResponse,
                      FileDeleted, FileList, FileObject, Health, ImageGenerationRequest, ImagesResponse, ModelCard, ModelList, describe_validation_error,
                      unsupported_settings)

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 429, 500, 504)
}
#: paths served without the API key: liveness, the chat page (it asks for the key) and the schema
OPEN_PATHS = ("/health", "/ui", "/ui/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def _error(status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, param), status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes (by ``Content-Length`` or as it streams in) -> 413 JSON."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or {}).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _error(413, "request_too_large", f"the request body is over the limit of {self.limit} bytes")(scope, receive, send)
            return
        seen = 0
        started = over = answered = False
        too_large = f"the request body is over the limit of {self.limit} bytes"

        async def counted_receive() -> dict:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise ServingError(413, "request_too_large", too_large)
            return message

        async def answer_413() -> None:
            nonlocal answered
            if not answered:
                answered = True
                await _error(413, "request_too_large", too_large)(scope, receive, send)

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if over:  # whatever the app answers to the cut body (FastAPI: 400 "error parsing the body"), it is a 413
                if message["type"] == "http.response.start":
                    await answer_413()
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except ServingError:
            if started or not over:
                raise
            await answer_413()


class ApiKey:
    """ASGI middleware: with a key set, a request outside :data:`OPEN_PATHS` (and ``/ui/static/``) needs
    ``Authorization: Bearer <key>``; the key is compared in constant time (``hmac.compare_digest``). Else 401
    ``invalid_api_key``."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _is_open(scope.get("path", "")):
            header = dict(scope.get("headers") or {}).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                what = "a wrong API key" if header else "no API key"
                response = _error(401, "invalid_api_key", f"this server needs `Authorization: Bearer <key>`; the request "
                                  f"carried {what}", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/ui/static/")


def model_error(exc: NextGPTError) -> ServingError:
    """The HTTP error of an input error the model raised: ``context_length_exceeded`` (the prompt does not fit),
    ``invalid_media`` (a media file the model could not read), ``invalid_conversation`` (any other conversation
    problem), ``invalid_request`` (anything else)."""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, ContextLengthError):
        code, param = "context_length_exceeded", "messages"
    elif isinstance(exc, MediaError):
        code, param = "invalid_media", "messages"
    elif isinstance(exc, ConversationError):
        code, param = "invalid_conversation", "messages"
    else:
        code, param = "invalid_request", None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ServingError(400, code, text, param)


def create_app(model: Any, config: ServeConfig) -> FastAPI:
    """The app serving ``model`` (one loaded ``NextGPT``, shared by every request) within ``config``'s limits.

    ``app.state`` holds ``model``, ``config``, ``store`` (:class:`FileStore`), ``gateway`` (:class:`MediaGateway`)
    and ``engine`` (:class:`Engine`).
    """
    model_id = config.model_id or model.composition.name
    store = FileStore(config.media_dir)
    gateway = MediaGateway(model, store, config)
    engine = Engine(config)
    outputs = list(model.output_modalities())
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="nextgpt",
        version="0.1.0",
        description="Any-to-any multimodal chat (the NExT-GPT method), OpenAI-compatible. See docs/serving.md.",
        responses=_ERRORS,
    )
    app.state.model, app.state.config, app.state.store = model, config, store
    app.state.gateway, app.state.engine = gateway, engine
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    if config.api_key is not None:
        app.add_middleware(ApiKey, key=config.api_key)

    # -- errors: always {"error": {...}}, 4xx for the client's mistakes
    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return _error(exc.status, exc.code, str(exc), exc.param, headers)

    @app.exception_handler(NextGPTError)
    async def _nextgpt_error(request: Request, exc: NextGPTError) -> JSONResponse:
        err = model_error(exc)
        return _error(err.status, err.code, str(err), err.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            return _error(400, "invalid_json", "the body is empty: expected a JSON object")
        if first.get("type") == "json_invalid":
            return _error(400, "invalid_json", f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": "))
        where, message, code = describe_validation_error(errors)
        return _error(400, code, f"{where or 'body'}: {message}", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and request.url.path.startswith("/v1/files/"):
            # an id with a (decoded) slash in it, e.g. ..%2Fsecret.png, matches no route: it names no file
            return _error(404, "file_not_found", "no such file (file ids look like file-<32 hex digits>)")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); the server keeps serving")

    # -- service
    def card() -> dict[str, Any]:
        formats = {}
        for key in gateway.inputs:
            spec = model.registry.modality(key)
            formats[key] = {"extensions": list(spec.extensions), "mime_types": list(spec.mime_types),
                            "by_suffix": bool(spec.detect_by_extension)}
        return {"id": model_id, "object": "model", "created": created, "owned_by": "nextgpt",
                "input_modalities": ["text", *gateway.inputs], "output_modalities": ["text", *outputs],
                "input_formats": formats}

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness and load (open even with an API key)."""
        return {"status": "ok", "model": model_id, **{k: v for k, v in engine.stats().items()}}

    @app.get("/v1/models", response_model=ModelList, tags=["service"])
    async def models() -> dict[str, Any]:
        """The one served model."""
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_name:path}", response_model=ModelCard, tags=["service"])
    async def model_card(model_name: str) -> dict[str, Any]:
        """The served model's card (404 ``model_not_found`` for any other id)."""
        if model_name != model_id:
            raise ServingError(404, "model_not_found", f"model {model_name[:80]!r} is not served here; served: {model_id!r}", "model")
        return card()

    # -- files
    @app.post("/v1/files", response_model=FileObject, tags=["files"])
    async def upload(
        file: UploadFile = File(..., description="The media file."),
        purpose: str = Form("user_data"),
        modality: Optional[str] = Form(None, description="Which input modality it is (default: from its suffix / type)."),
    ) -> dict[str, Any]:
        """Upload a media file; it is read once with its modality's reader (a corrupt file fails here). Reading it
        takes an admission slot like a chat request (429 when the server is full), so uploads cannot decode more
        media at once than the server admits requests."""
        job = engine.admit()  # 429 when full
        try:
            record = await run_in_threadpool(
                gateway.store_upload, file.file, filename=file.filename or "upload", content_type=file.content_type,
                modality=modality, purpose=purpose[:64],
            )
        finally:
            job.release()
        return record.to_json()

    @app.get("/v1/files", response_model=FileList, response_model_exclude_none=True, tags=["files"])
    async def list_files(
        purpose: Optional[str] = Query(None, description="Only files of this purpose (user_data, output...)."),
        limit: int = Query(10000, ge=1, le=10000),
        order: str = Query("desc", pattern="^(asc|desc)$", description="By creation time."),
        after: Optional[str] = Query(None, description="A file id: the page starts after it."),
    ) -> dict[str, Any]:
        """The stored files (uploads and generated media), newest first by default, ``limit`` per page."""
        records = [r for r in store.records() if purpose is None or r.purpose == purpose]
        if order == "desc":
            records.reverse()
        if after is not None:
            ids = [r.id for r in records]
            if after not in ids:
                raise ServingError(404, "file_not_found", f"after: no such file {after[:80]!r}", "after")
            records = records[ids.index(after) + 1:]
        page = records[:limit]
        return {"object": "list", "data": [r.to_json() for r in page], "has_more": len(records) > limit,
                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}

    @app.get("/v1/files/{file_id}", response_model=FileObject, tags=["files"])
    async def file_metadata(file_id: str) -> dict[str, Any]:
        """A file's metadata."""
        return store.get(file_id).to_json()

    @app.delete("/v1/files/{file_id}", response_model=FileDeleted, tags=["files"])
    async def delete_file(file_id: str) -> dict[str, Any]:
        """Delete a file (its bytes and metadata); its id is unknown afterwards."""
        record = store.delete(file_id)
        return {"id": record.id, "object": "file", "deleted": True}

    @app.get("/v1/files/{file_id}/content", tags=["files"],
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}})
    async def file_content(file_id: str) -> FileResponse:
        """A file's bytes, with its MIME type."""
        record = store.get(file_id)
        return FileResponse(store.path(record), media_type=record.mime_type)

    # -- the chat page (its files belong to the page; a missing page is a 404)
    @app.get("/ui", include_in_schema=False)
    async def ui() -> FileResponse:
        page = STATIC / "index.html"
        if not page.is_file():
            raise ServingError(404, "not_found", "the chat page is not installed")
        return FileResponse(page, media_type="text/html")

    app.mount("/ui/static", StaticFiles(directory=STATIC, check_dir=False), name="ui-static")

    # -- chat
    @app.post("/v1/chat/completions", response_model=ChatCompletion, response_model_exclude_none=True, tags=["chat"],
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "A chat.completion, or with stream=true server-sent chat.completion.chunk events."}})
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        """Answer the last user message with text and, as ``modalities`` asks, generated media."""
        want, stop, notices = _check_request(body, model_id, outputs, model)
        max_new = _max_new_tokens(body.max_completion_tokens or body.max_tokens, model, config)
        _check_budget(model, want, max_new)
        job = engine.admit()  # 429 when full
        deadline = time.monotonic() + config.timeout_s
        try:
            conversation, more = await run_in_threadpool(to_conversation, body.messages, gateway)
        except BaseException:
            job.release()
            raise
        notices += more
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        params = {"want": want, "seed": body.seed, "max_new_tokens": max_new, "temperature": body.temperature,
                  "top_p": body.top_p, "stop": stop}
        inline = body.media_format == "b64_json"
        base_url = str(request.base_url)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(job, conversation, params, notices, completion_id, model_id, inline, base_url, include_usage,
                        deadline, model, gateway, engine),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        def work(job: Job) -> Any:
            response = model.generate(conversation, should_stop=job.should_stop, **params)
            if job.cancelled.is_set() or response.cancelled:
                return None
            return response, [gateway.store_output(m) for m in response.media]

        engine.submit(job, work)
        result = await wait_result(job, deadline - time.monotonic())
        if result is None:
            raise ServingError(504, "timeout", "the request was cancelled before it finished")
        response, records = result
        message = reply_message(response, records, store, inline=inline, base_url=base_url)
        return {
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "finish_reason": _finish_reason(response, model, max_new), "message": message}],
            "usage": _usage(response), "seed": response.seed, "notices": [*notices, *response.notices],
        }

    # -- images (OpenAI's Images API), through the whole model
    @app.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True, tags=["images"])
    async def images(body: ImageGenerationRequest, request: Request) -> Any:
        """Text to image through the whole model: the prompt is a user turn, the reply must hold an image (the LLM
        writes its signal tokens, the output projector and the image decoder make it). ``n`` images use seeds
        ``seed``, ``seed + 1``, ..."""
        key = "image"
        if body.model not in (None, "", model_id):
            raise ServingError(404, "model_not_found", f"model {body.model!r} is not served here; served: {model_id!r}", "model")
        if key not in outputs:
            raise ServingError(400, "unsupported_modality", f"this model does not generate images; it generates: text, "
                               f"{', '.join(outputs) or '(nothing else)'}", "model")
        options = model.resolved.modalities[key].decode_options
        native = f"{options['width']}x{options['height']}" if "width" in options and "height" in options else None
        if body.size not in (None, "auto", native):
            raise ServingError(400, "unsupported_parameter", f"size: this model makes {native or 'images of one size'} "
                               "images; give \"auto\" or that size", "size")
        for name in ("style", "moderation", "output_compression"):
            if getattr(body, name) is not None:
                raise ServingError(400, "unsupported_parameter", f"{name}: not supported by this server", name)
        notices = ["user: accepted and not used by this server"] if body.user else []
        max_new = _max_new_tokens(None, model, config)
        _check_budget(model, [key], max_new)
        seed = body.seed if body.seed is not None else random.SystemRandom().randrange(2**31)
        job = engine.admit()
        deadline = time.monotonic() + config.timeout_s

        def work(job: Job) -> Any:
            made = []
            for i in range(body.n):
                response = model.generate(Conversation.from_prompt(body.prompt), want=[key], seed=(seed + i) % 2**31,
                                          max_new_tokens=max_new, should_stop=job.should_stop)
                if job.cancelled.is_set() or response.cancelled:
                    return None
                made.append(next(m for m in response.media if m.modality == key))
            return [gateway.store_output(m) for m in made]

        engine.submit(job, work)
        records = await wait_result(job, deadline - time.monotonic())
        if records is None:
            raise ServingError(504, "timeout", "the request was cancelled before it finished")
        base_url = str(request.base_url).rstrip("/")
        data = []
        for record in records:
            if body.response_format == "url":
                data.append({"url": base_url + f"/v1/files/{record.id}/content", "file_id": record.id})
            else:
                part = media_part(store, record, True, base_url)
                data.append({"b64_json": part[part["type"]]["url"].split(",", 1)[1], "file_id": record.id})
        return {"created": int(time.time()), "data": data, "output_format": "png", "seed": seed, "notices": notices}

    return app


def _check_request(body: ChatCompletionRequest, model_id: str, outputs: list[str], model: Any) -> tuple[list[str], list[str], list[str]]:
    """``(wanted output modalities, stop strings, notices)``; a request this server cannot honour is a 400."""
    if body.model not in (None, "", model_id):
        raise ServingError(404, "model_not_found", f"model {body.model!r} is not served here; served: {model_id!r}", "model")
    bad, notices = unsupported_settings(body)
    if bad is not None:
        raise ServingError(400, "unsupported_parameter", f"{bad}: not supported by this server (only its neutral value "
                           "is accepted; see docs/serving.md)", bad)
    if body.n not in (None, 1):
        raise ServingError(400, "unsupported_parameter", "n: this server makes one choice per request", "n")
    if body.stream_options is not None and not body.stream:
        raise ServingError(400, "invalid_request", "stream_options: only allowed with stream: true", "stream_options")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4 or not all(stop):
        raise ServingError(400, "invalid_request", "stop: up to 4 non-empty strings", "stop")
    want: list[str] = []
    for key in body.modalities or []:
        if key == "text":
            continue
        if key not in outputs:
            raise ServingError(400, "unsupported_modality",
                               f"cannot generate {key!r}; this model generates: text, {', '.join(outputs) or '(nothing else)'}", "modalities")
        if key not in want:
            want.append(key)
    if body.audio is not None:
        key = "audio"
        if key not in outputs:
            raise ServingError(400, "unsupported_modality", "audio: this model does not generate audio", "audio")
        spec = model.registry.modality(key)
        written = (spec.output_extension or (spec.extensions[0] if spec.extensions else "")).lstrip(".")
        if body.audio.format not in (None, written):
            raise ServingError(400, "unsupported_parameter", f"audio.format: this model writes {written}", "audio.format")
        if body.audio.voice is not None:
            notices.append("audio.voice has no effect: the audio decoder makes sounds, not a chosen voice")
    return want, stop, notices


def _max_new_tokens(asked: int | None, model: Any, config: ServeConfig) -> int:
    budget = model.composition.generation.max_new_tokens
    cap = config.max_new_tokens or budget
    return min(asked, cap) if asked else min(budget, cap)


def _check_budget(model: Any, want: list[str], max_new: int) -> None:
    """The model's own checks of the request settings, as a 400 ``max_tokens_too_small`` before any work (and
    before a stream starts)."""
    check = getattr(model, "check_request", None)
    if check is not None:
        try:
            check(want=want, max_new_tokens=max_new)
        except ConversationError as exc:
            raise ServingError(400, "max_tokens_too_small", str(exc).splitlines()[0], "max_tokens") from exc


def _finish_reason(response: Any, model: Any, max_new: int) -> str:
    """``length`` when the budget ran out before the end of the reply, else ``stop``."""
    eos = model.tokenizer.eos_token_id
    if len(response.token_ids) >= max_new and (not response.token_ids or response.token_ids[-1] != eos):
        return "length"
    return "stop"


def _usage(response: Any) -> dict[str, int]:
    prompt = int(response.prompt_tokens or 0)
    completion = len(response.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _stream(job: Job, conversation: Any, params: dict[str, Any], notices: list[str], completion_id: str,
                  model_id: str, inline: bool, base_url: str, include_usage: bool, deadline: float, model: Any,
                  gateway: MediaGateway, engine: Engine) -> AsyncIterator[bytes]:
    """Server-sent events: a role chunk, text deltas as generated, each media part as its decoder finishes (a
    ``content`` list of one part; audio also as ``delta.audio``), a final chunk (finish_reason, seed, notices,
    usage), with ``include_usage`` a usage chunk with empty ``choices``, ``[DONE]``. A timeout or failure after
    the stream has started is an ``{"error": ...}`` event before ``[DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    created = int(time.time())
    store = gateway.store

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, modality: str | None = None, **extra: Any) -> bytes:
        """One ``chat.completion.chunk`` event, validated by its model (``delta`` None: no choices). The fields
        given are sent (``finish_reason`` always, as null until the last chunk), none of the unset optional ones."""
        choices = [] if delta is None else [ChunkChoice(index=0, delta=Delta(**delta), finish_reason=finish)]
        if modality is not None:
            extra["modality"] = modality
        body = ChatCompletionChunk(id=completion_id, object="chat.completion.chunk", created=created, model=model_id,
                                   choices=choices, **extra)
        return _sse(body.model_dump(mode="json", exclude_unset=True))

    def emit(kind: str, value: Any) -> None:
        if not job.cancelled.is_set():
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def on_media(media: Media) -> None:
        if job.cancelled.is_set():
            return
        record = gateway.store_output(media)
        delta: dict[str, Any] = {"content": [media_part(store, record, inline, base_url, media)]}
        if record.modality == "audio":
            delta["audio"] = audio_object(store, record)
        emit("media", (record.modality, delta))

    def work(job: Job) -> Any:
        try:
            response = model.generate(conversation, should_stop=job.should_stop, on_text=lambda t: emit("text", t),
                                      on_media=on_media, **params)
            emit("done", response)
        except BaseException as exc:  # reported as an error event
            emit("error", exc)
            raise

    engine.submit(job, work)
    delivered = False
    try:
        yield chunk({"role": "assistant", "content": ""}, modality="text")
        while True:
            remaining = deadline - time.monotonic()
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout=max(remaining, 0.0))
            except asyncio.TimeoutError:
                job.cancel()
                yield _sse(error_body(504, "timeout", f"the request took longer than {engine.config.timeout_s:g} s and was cancelled"))
                break
            if kind == "text":
                yield chunk({"content": value}, modality="text")
            elif kind == "media":
                modality, delta = value
                yield chunk(delta, modality=modality)
            elif kind == "error":
                exc = value
                if isinstance(exc, NextGPTError):
                    err = model_error(exc)
                    body = error_body(err.status, err.code, str(err), err.param)
                else:
                    body = error_body(500, "internal_error", f"internal error ({type(exc).__name__})")
                yield _sse(body)
                break
            else:
                response = value
                if response.cancelled:
                    yield _sse(error_body(504, "timeout", "the request was cancelled before it finished"))
                    break
                usage = _usage(response)
                yield chunk({}, _finish_reason(response, model, params["max_new_tokens"]), seed=response.seed,
                            notices=[*notices, *response.notices], usage=usage)
                if include_usage:
                    yield chunk(None, usage=usage)
                delivered = True
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not delivered:
            job.cancel()  # a client that went away (or a timeout) stops the generation
