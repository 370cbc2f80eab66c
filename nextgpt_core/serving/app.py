"""The FastAPI app: routes, error bodies, the body-size limit, streaming (server-sent events).

Routes: ``POST /v1/chat/completions``, ``POST /v1/files``, ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``GET /v1/models``, ``GET /health``, ``GET /ui`` (the chat page, ``static/index.html``) and ``/ui/static/*``.
Shapes: docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..conversation import Media, Text
from ..errors import NextGPTError
from .config import ServeConfig
from .engine import Engine, Job, wait_result
from .errors import ServingError, error_body
from .files import FileStore
from .media import MediaGateway
from .messages import to_conversation
from .schemas import ChatCompletion, ChatCompletionRequest, ErrorResponse, FileObject, Health, ModelList, describe_validation_error

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 429, 500, 504)
}


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

    # -- errors: always {"error": {...}}, 4xx for the client's mistakes
    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return _error(exc.status, exc.code, str(exc), exc.param, headers)

    @app.exception_handler(NextGPTError)
    async def _nextgpt_error(request: Request, exc: NextGPTError) -> JSONResponse:
        return _error(400, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            return _error(400, "invalid_json", "the body is empty: expected a JSON object")
        if first.get("type") == "json_invalid":
            return _error(400, "invalid_json", f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": "))
        where, message = describe_validation_error(errors)
        return _error(400, "invalid_request", f"{where or 'body'}: {message}", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); the server keeps serving")

    # -- service
    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness and load."""
        return {"status": "ok", "model": model_id, **{k: v for k, v in engine.stats().items()}}

    @app.get("/v1/models", response_model=ModelList, tags=["service"])
    async def models() -> dict[str, Any]:
        """The one served model."""
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "nextgpt",
                                            "input_modalities": ["text", *gateway.inputs],
                                            "output_modalities": ["text", *outputs]}]}

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

    @app.get("/v1/files/{file_id}", response_model=FileObject, tags=["files"])
    async def file_metadata(file_id: str) -> dict[str, Any]:
        """A file's metadata."""
        return store.get(file_id).to_json()

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
        want = _check_request(body, model_id, outputs)
        max_new = _max_new_tokens(body, model, config)
        check = getattr(model, "check_request", None)
        if check is not None:  # the request's settings fail here, as a 400, and never after a stream started
            check(want=want, max_new_tokens=max_new)
        job = engine.admit()  # 429 when full
        deadline = time.monotonic() + config.timeout_s
        try:
            conversation, notices = await run_in_threadpool(to_conversation, body.messages, gateway)
        except BaseException:
            job.release()
            raise
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        params = {"want": want, "seed": body.seed, "max_new_tokens": max_new, "temperature": body.temperature,
                  "top_p": body.top_p}
        if body.stream:
            return StreamingResponse(
                _stream(job, conversation, params, notices, completion_id, model_id, body.media_format == "b64_json",
                        deadline, model, gateway, engine, request),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        def work(job: Job) -> Any:
            response = model.generate(conversation, should_stop=job.should_stop, **params)
            if job.cancelled.is_set():
                return None
            return response, [gateway.store_output(m) for m in response.media]

        engine.submit(job, work)
        response, records = await wait_result(job, deadline - time.monotonic())
        inline = body.media_format == "b64_json"
        parts, media = [], []
        by_media = dict(zip(map(id, response.media), records))
        for part in response.parts:
            if isinstance(part, Text):
                parts.append({"type": "text", "text": part.text})
            else:
                item = gateway.part_json(by_media[id(part)], inline, part)
                parts.append(item)
                media.append(item)
        return {
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "finish_reason": _finish_reason(response, model, max_new),
                         "message": {"role": "assistant", "content": response.text, "media": media, "parts": parts}}],
            "usage": {"completion_tokens": len(response.token_ids)},
            "seed": response.seed, "notices": [*notices, *response.notices],
        }

    return app


def _check_request(body: ChatCompletionRequest, model_id: str, outputs: list[str]) -> list[str]:
    if body.model not in (None, "", model_id):
        raise ServingError(404, "model_not_found", f"model {body.model!r} is not served here; served: {model_id!r}", "model")
    want: list[str] = []
    for key in body.modalities or []:
        if key == "text":
            continue
        if key not in outputs:
            raise ServingError(400, "unsupported_modality",
                               f"cannot generate {key!r}; this model generates: text, {', '.join(outputs) or '(nothing else)'}", "modalities")
        if key not in want:
            want.append(key)
    return want


def _max_new_tokens(body: ChatCompletionRequest, model: Any, config: ServeConfig) -> int:
    budget = model.composition.generation.max_new_tokens
    cap = config.max_new_tokens or budget
    asked = body.max_completion_tokens or body.max_tokens
    return min(asked, cap) if asked else min(budget, cap)


def _finish_reason(response: Any, model: Any, max_new: int) -> str:
    if response.cancelled:
        return "cancelled"
    eos = model.tokenizer.eos_token_id
    if len(response.token_ids) >= max_new and (not response.token_ids or response.token_ids[-1] != eos):
        return "length"
    return "stop"


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _stream(job: Job, conversation: Any, params: dict[str, Any], notices: list[str], completion_id: str,
                  model_id: str, inline: bool, deadline: float, model: Any, gateway: MediaGateway, engine: Engine,
                  request: Request) -> AsyncIterator[bytes]:
    """Server-sent events: a role chunk, text deltas as generated, each media part as its decoder finishes, a
    final chunk (finish_reason, seed, notices, usage), ``[DONE]``. A timeout or failure after the stream has
    started is an ``{"error": ...}`` event before ``[DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    def emit(kind: str, value: Any) -> None:
        if not job.cancelled.is_set():
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def on_media(media: Media) -> None:
        if not job.cancelled.is_set():
            emit("media", gateway.part_json(gateway.store_output(media), inline, media))

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
        yield chunk({"role": "assistant", "content": ""})
        while True:
            remaining = deadline - time.monotonic()
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout=max(remaining, 0.0))
            except asyncio.TimeoutError:
                job.cancel()
                yield _sse(error_body(504, "timeout", f"the request took longer than {engine.config.timeout_s:g} s and was cancelled"))
                break
            if kind == "text":
                yield chunk({"content": value})
            elif kind == "media":
                yield chunk({"media": [value]})
            elif kind == "error":
                exc = value
                if isinstance(exc, ServingError):
                    body = error_body(exc.status, exc.code, str(exc))
                elif isinstance(exc, NextGPTError):
                    body = error_body(400, type(exc).__name__, str(exc))
                else:
                    body = error_body(500, "internal_error", f"internal error ({type(exc).__name__})")
                yield _sse(body)
                break
            else:
                response = value
                yield chunk({}, _finish_reason(response, model, params["max_new_tokens"]), seed=response.seed,
                            notices=[*notices, *response.notices], usage={"completion_tokens": len(response.token_ids)})
                delivered = True
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not delivered:
            job.cancel()  # a client that went away (or a timeout) stops the generation
