"""HTTP errors of the server: one status, one OpenAI-style JSON body."""

from __future__ import annotations

from typing import Any

from ..errors import NextGPTError

__all__ = ["ServingError", "error_body"]

_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
          415: "invalid_request_error", 429: "rate_limit_error", 504: "timeout_error"}


class ServingError(NextGPTError):
    """A request the server refuses: ``status`` (HTTP), ``code`` (machine-readable), the message (one line)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "code", "param"}}`` as OpenAI's API answers errors."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}
