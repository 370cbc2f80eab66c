"""The bounded queue (429) and the request timeout (504) on a live server, with the image decoder replaced by one
that blocks until the test lets it go (a decoder that cannot be interrupted)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .media_samples import user


class BlockingDecoder:
    """Wraps the image decoder's ``generate``: signals ``entered``, waits for ``release``, then decodes."""

    def __init__(self, decoder) -> None:
        self.inner = decoder.generate
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.finished = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(60), "the test never released the decoder"
        out = self.inner(*args, **kwargs)
        self.finished += 1
        return out


@pytest.fixture()
def blocking(image_model, monkeypatch):
    decoder = image_model.decoders["image"]
    gate = BlockingDecoder(decoder)
    monkeypatch.setattr(decoder, "generate", gate)
    yield gate
    gate.release.set()


def wait_until(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def image_request(seed: int) -> dict:
    return {"messages": user("Draw."), "modalities": ["image"], "seed": seed, "max_tokens": 6}


def test_full_queue_answers_429_and_recovers(image_model, live_server, blocking):
    server = live_server(image_model, workers=1, max_queue=1, timeout_s=60)
    engine = server.app.state.engine
    with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/chat/completions", json=image_request(1))
        assert blocking.entered.wait(30)  # the one worker is inside the decoder
        second = pool.submit(client.post, "/v1/chat/completions", json=image_request(2))
        wait_until(lambda: engine.stats()["waiting"] == 1)
        refused = client.post("/v1/chat/completions", json=image_request(3))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
        assert refused.headers["retry-after"] == "1"
        assert client.get("/health").json() == {"status": "ok", "model": "tiny", "running": 1, "waiting": 1, "capacity": 2}
        blocking.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        again = client.post("/v1/chat/completions", json=image_request(3))
        assert again.status_code == 200 and any(p["type"] == "image_url" for p in again.json()["choices"][0]["message"]["content"])


def test_timeout_answers_504_and_discards_the_late_result(image_model, live_server, blocking):
    server = live_server(image_model, workers=1, max_queue=0, timeout_s=3.0)
    engine, store = server.app.state.engine, server.app.state.store
    with httpx.Client(base_url=server.url, timeout=60) as client:
        started = time.monotonic()
        late = client.post("/v1/chat/completions", json=image_request(7))
        assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
        assert time.monotonic() - started < 10
        assert blocking.entered.is_set() and blocking.finished == 0  # the decoder was running and still is
        # it keeps its worker and its slot until it really ends: a new request is refused meanwhile
        assert client.post("/v1/chat/completions", json=image_request(8)).status_code == 429
        blocking.release.set()
        wait_until(lambda: engine.stats() == {"running": 0, "waiting": 0, "capacity": 1})
        assert blocking.finished == 1 and engine.discarded == 1
        assert len(store) == 0 and not any(store.root.glob("file-*"))  # the finished image was never stored
        # a stream that times out ends with an error event, then [DONE]
        blocking.release.clear()
        streamed = client.post("/v1/chat/completions", json={**image_request(9), "stream": True})
        events = [line for line in streamed.text.split("\n\n") if line]
        assert streamed.status_code == 200 and '"code":"timeout"' in events[-2] and events[-1] == "data: [DONE]"
        blocking.release.set()
        wait_until(lambda: engine.stats()["running"] == 0)
        assert len(store) == 0
        ok = client.post("/v1/chat/completions", json={"messages": user("Hello"), "seed": 1, "max_tokens": 6})
        assert ok.status_code == 200
