"""The server's settings and limits (no torch, no FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

__all__ = ["ServeConfig"]

MIB = 1 << 20


@dataclass(frozen=True)
class ServeConfig:
    """Limits and folders of one server.

    Attributes:
        media_dir: the only folder the server reads media from and writes media to (uploads, generated media).
        max_upload_bytes: largest media file, uploaded (``POST /v1/files``) or inline (base64 in a message).
        max_media_seconds: longest video or audio accepted as input.
        max_media_pixels: largest image / video frame / depth map accepted as input (width x height).
        max_decoded_bytes: largest decoded size of one media input (a video's frames, an audio's samples), checked
            from the file's header / container before it is decoded (``MediaIO.probe``) and on the decoded object.
        workers: requests generating at the same time on the one model (threads).
        max_queue: requests admitted beyond ``workers``, waiting for a worker; one more is answered 429.
        timeout_s: a request still unanswered this long after admission is answered 504 (its generation is
            cancelled between steps; a decoder already running finishes in the background, its result discarded).
        max_new_tokens: upper bound on a request's ``max_tokens`` (``None``: the composition's budget).
        model_id: the model id of ``/v1/models`` (default: the composition's name).
        api_key: when set, every ``/v1/...`` request must carry ``Authorization: Bearer <api_key>`` (compared in
            constant time); ``/health``, the chat page and the OpenAPI schema stay open.
    """

    media_dir: Path | str
    max_upload_bytes: int = 20 * MIB
    max_media_seconds: float = 60.0
    max_media_pixels: int = 4096 * 4096
    max_decoded_bytes: int = 512 * MIB
    workers: int = 2
    max_queue: int = 8
    timeout_s: float = 120.0
    max_new_tokens: int | None = None
    model_id: str | None = None
    api_key: str | None = field(default=None, repr=False)
    extra_body_bytes: int = field(default=1 * MIB, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "media_dir", Path(self.media_dir))
        for name in ("max_upload_bytes", "workers", "max_media_pixels", "max_decoded_bytes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"serve: {name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ConfigError(f"serve: max_queue must be 0 or more, got {self.max_queue}")
        for name in ("max_media_seconds", "timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"serve: {name} must be positive, got {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("serve: api_key must not be empty")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"serve: max_new_tokens must be at least 1, got {self.max_new_tokens}")

    @property
    def capacity(self) -> int:
        """Requests admitted at once (running + waiting); the next one gets 429."""
        return self.workers + self.max_queue

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: one upload, or a JSON body holding one base64 media part (4/3 of its bytes)."""
        return self.max_upload_bytes * 4 // 3 + self.extra_body_bytes
