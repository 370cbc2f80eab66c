"""One loaded model serves concurrent requests safely (issue E item 3): per-request decoder pipelines (their
schedulers keep state), per-request sampling and hidden-state records. 20 concurrent requests with distinct
seeds each return exactly what the same request returns alone."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch
from PIL import Image

from .media_samples import user


def test_decoder_calls_never_share_the_scheduler(image_model):
    decoder = image_model.decoders["image"]
    shared = decoder.pipe
    spec = decoder.conditioning_inputs[0]
    cond = {spec.name: torch.randn(1, spec.length, spec.dim, generator=torch.Generator().manual_seed(1))}
    options = {"num_inference_steps": 4, "height": 32, "width": 32}
    seen = []
    inner = decoder.generate

    def spy(*args, **kwargs):
        seen.append((decoder.pipe, decoder.pipe.scheduler))
        return inner(*args, **kwargs)

    decoder.generate = spy
    try:
        with ThreadPoolExecutor(1) as one:  # one at a time (on a worker thread, as the server runs them)
            alone = list(one.map(lambda s: np.asarray(decoder(cond, generator=torch.Generator().manual_seed(s), **options)[0]), range(6)))
        together: list = [None] * 6
        barrier = threading.Barrier(6)

        def run(s: int) -> None:
            barrier.wait()
            together[s] = np.asarray(decoder(cond, generator=torch.Generator().manual_seed(s), **options)[0])

        threads = [threading.Thread(target=run, args=(s,)) for s in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        del decoder.generate
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    # each call ran on its own pipeline with its own scheduler; the shared one was never stepped
    assert len({id(p) for p, _ in seen}) == len({id(s) for _, s in seen}) == 12
    assert all(p is not shared and s is not shared.scheduler for p, s in seen)
    assert decoder.pipe is shared and shared.scheduler.num_inference_steps is None
    assert all(p.unet is shared.unet for p, _ in seen)  # the weights are shared, not copied


def request(i: int) -> dict:
    """Distinct seeds; every other request asks for an image."""
    body = {"messages": user(f"Request number {i}: tell me something."), "seed": 1000 + i, "max_tokens": 10,
            "media_format": "url"}
    if i % 2 == 0:
        body["modalities"] = ["text", "image"]
    return body


def outcome(client: httpx.Client, reply: dict) -> tuple:
    message = reply["choices"][0]["message"]
    content = message["content"]
    if isinstance(content, str):
        return content, reply["usage"]["completion_tokens"], reply["choices"][0]["finish_reason"], ()
    text = " ".join(p["text"] for p in content if p["type"] == "text")
    images = tuple(np.asarray(Image.open(io.BytesIO(client.get(p["image_url"]["url"]).content))).tobytes()
                   for p in content if p["type"] == "image_url")
    return text, reply["usage"]["completion_tokens"], reply["choices"][0]["finish_reason"], images


def test_twenty_concurrent_requests_equal_each_request_alone(image_model, live_server):
    server = live_server(image_model, workers=4, max_queue=16, timeout_s=300)
    with httpx.Client(base_url=server.url, timeout=300) as client:
        alone = []
        for i in range(20):
            response = client.post("/v1/chat/completions", json=request(i))
            assert response.status_code == 200, response.text
            alone.append(outcome(client, response.json()))
        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(lambda i: client.post("/v1/chat/completions", json=request(i)), range(20)))
        assert [r.status_code for r in replies] == [200] * 20
        together = [outcome(client, r.json()) for r in replies]
    assert sum(1 for o in alone if o[3]) >= 10  # the image requests did decode images
    for i, (a, b) in enumerate(zip(alone, together)):
        assert a == b, f"request {i} differs when run among others"
    assert len({o[0] for o in alone}) > 10  # distinct seeds, distinct replies (the comparison is not vacuous)
