"""Helpers for tests that start a server: a free local port, and waiting until ``/health`` answers.

A plugin's own tests that run ``nextgpt serve`` with their modality use the same two calls as the project's
(serving, web page, Ray front, multi-process training).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["free_port", "wait_for_health"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_health(base: str, process: Any, *, timeout: float, log: Path | None = None) -> None:
    """Poll ``{base}/health`` until it answers 200 with ``{"status": "ok"}``.

    Args:
        base: the server's base URL, e.g. ``"http://127.0.0.1:8765"``.
        process: the server's ``subprocess.Popen``; its exit ends the wait at once.
        timeout: seconds to wait.
        log: the server's log file; its last 3000 characters go into the failure message.

    Raises:
        AssertionError: the server exited, or did not answer within ``timeout`` (the message says which, with the
            log's tail).
    """
    import httpx

    def tail() -> str:
        return log.read_text(encoding="utf-8", errors="replace")[-3000:] if log is not None and log.exists() else ""

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{tail()}")
        try:
            answer = httpx.get(f"{base}/health", timeout=2)
            if answer.status_code == 200 and answer.json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not answer {base}/health in {timeout:.0f} s:\n{tail()}")
        time.sleep(0.25)
