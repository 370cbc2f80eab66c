"""nextgpt over HTTP: an OpenAI-compatible API (chat completions with media parts, streaming, files) served by
FastAPI + uvicorn (the ``serve`` extra), and the ``nextgpt serve`` command.

    >>> from nextgpt_core.serving import ServeConfig
    >>> ServeConfig(media_dir="/tmp/m").capacity   # requests running + waiting before a 429
    10

``create_app(model, config)`` builds the app around one loaded :class:`~nextgpt_core.NextGPT`; the request and
response shapes are in docs/serving.md. Importing this package imports neither torch nor FastAPI.
"""

from __future__ import annotations

from typing import Any

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(model: Any, config: ServeConfig) -> Any:
    """The FastAPI app serving ``model`` (a loaded ``NextGPT``) with ``config``'s limits (see :mod:`.app`)."""
    from .app import create_app as _create

    return _create(model, config)
