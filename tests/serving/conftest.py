"""Fixtures of the serving tests: a `tiny` model with the real image plugin (image in and out, built once), apps
around it with chosen limits, a live uvicorn server on a free port, and small media files made here."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from nextgpt_core.testing.servers import free_port

REAL_IMAGE = ["image"]


@pytest.fixture(scope="session")
def image_registry():
    from nextgpt_registry import Registry

    from nextgpt_core.plugins import DEFAULT_PLUGINS

    return Registry.load(DEFAULT_PLUGINS, allow=REAL_IMAGE)


@pytest.fixture(scope="session")
def image_model(image_registry):
    """`tiny` with the real image plugin only: image inputs and outputs, fast (2 denoising steps, 32x32)."""
    from nextgpt_core import NextGPT

    model = NextGPT.from_composition("tiny", registry=image_registry)
    model.load_decoders()
    return model


@pytest.fixture(scope="session")
def av_model(media_registry):
    """`tiny` with the real image, video and audio plugins: every OpenAI part type in and out (built once)."""
    from nextgpt_core import NextGPT

    model = NextGPT.from_composition("tiny", registry=media_registry)
    model.load_decoders()
    return model


@pytest.fixture(scope="session")
def media_registry():
    """The real image, video and audio plugins (their readers; for limits that need a duration)."""
    from nextgpt_registry import Registry

    from nextgpt_core.plugins import DEFAULT_PLUGINS

    return Registry.load(DEFAULT_PLUGINS, allow=["image", "video", "audio"])


class ReaderOnlyModel:
    """Stands in for a model where only reading inputs is exercised (limits are checked before generation):
    the real registry and each modality's real ``MediaIO``; generating is an error."""

    def __init__(self, registry) -> None:
        from nextgpt_registry import resolve_target

        self.registry = registry
        self._io = {k: resolve_target(s.media_io)() for k, s in registry.modalities.items()}
        self.composition = SimpleNamespace(name="readers", generation=SimpleNamespace(max_new_tokens=8))

    def input_modalities(self):
        return list(self.registry.modalities)

    def output_modalities(self):
        return []

    def media_io(self, key):
        return self._io[key]

    def generate(self, *a, **k):  # pragma: no cover - a failing limit must stop the request before this
        raise AssertionError("a request over a limit reached generation")


@pytest.fixture()
def make_client(tmp_path):
    """``make_client(model, **ServeConfig fields) -> TestClient`` (closed at the end of the test)."""
    from fastapi.testclient import TestClient

    from nextgpt_core.serving import ServeConfig, create_app

    clients = []

    def make(model, **limits):
        limits.setdefault("media_dir", tmp_path / "media")
        client = TestClient(create_app(model, ServeConfig(**limits)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


class LiveServer:
    """uvicorn serving ``app`` in a thread on a free port (``url``); ``stop()`` shuts it down."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def live_server(tmp_path):
    """``live_server(model, **ServeConfig fields) -> LiveServer`` (stopped at the end of the test)."""
    from nextgpt_core.serving import ServeConfig, create_app

    servers = []

    def start(model, **limits):
        limits.setdefault("media_dir", tmp_path / "media")
        server = LiveServer(create_app(model, ServeConfig(**limits)))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
