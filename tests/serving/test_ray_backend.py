"""`nextgpt serve --backend ray`: the model split into Ray Serve deployments (the language stage, one per decoder) on
a local Ray with 2 CPUs, `tiny` with the real image plugin. The same requests give the same replies as the
in-process server (same seed: same text, usage and image bytes, streamed or not, and through the Images API); a
text-only reply never reaches the decoder; a decoder replica killed during a call is restarted by Serve and the
call retried; a cancelled request skips its decoders."""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (make install installs it)")

from .media_samples import data_url, png_bytes, user  # noqa: E402

pytestmark = pytest.mark.subprocess  # a local Ray cluster: several processes


@pytest.fixture(scope="module")
def ray_model(image_registry):
    """The Ray application for `tiny` with the image plugin (replicas load the plugins this env names)."""
    from ray import serve
    import ray

    from nextgpt_core.serving import ray_backend

    saved = os.environ.get("NEXTGPT_LOAD_PLUGINS")
    os.environ["NEXTGPT_LOAD_PLUGINS"] = "image"
    try:
        model = ray_backend.deploy("tiny", num_cpus=2, registry=image_registry)
    finally:
        if saved is None:
            os.environ.pop("NEXTGPT_LOAD_PLUGINS", None)
        else:
            os.environ["NEXTGPT_LOAD_PLUGINS"] = saved
    yield model
    serve.shutdown()
    ray.shutdown()


def replies(client, body: dict) -> dict:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def essence(reply: dict) -> tuple:
    """What must be equal between the two servers: text, media bytes, finish, usage, seed."""
    message = reply["choices"][0]["message"]
    content = message["content"]
    if isinstance(content, str):
        parts = (("text", content),)
    else:
        parts = tuple((p["type"], p["text"] if p["type"] == "text" else base64.b64decode(p[p["type"]]["url"].split(",", 1)[1]))
                      for p in content)
    return parts, reply["choices"][0]["finish_reason"], reply["usage"], reply["seed"]


def test_the_ray_server_answers_as_the_in_process_server(ray_model, image_model, make_client, tmp_path):
    ray_client = make_client(ray_model, media_dir=tmp_path / "ray")
    local_client = make_client(image_model, media_dir=tmp_path / "local")
    assert ray_client.get("/v1/models").json()["data"][0]["output_modalities"] == ["text", "image"]
    bodies = [
        {"messages": user("Draw."), "modalities": ["text", "image"], "seed": 3, "max_tokens": 8},
        {"messages": user("What is this?", {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes())}}),
         "seed": 5, "max_tokens": 12},
    ]
    for body in bodies:
        assert essence(replies(ray_client, body)) == essence(replies(local_client, body))
    # the history idiom through Ray: the reply sent back as returned
    first = replies(ray_client, bodies[0])
    history = {"messages": [*bodies[0]["messages"], first["choices"][0]["message"], *user("Again.")], "seed": 4, "max_tokens": 8}
    assert essence(replies(ray_client, history)) == essence(replies(local_client, history))
    # streamed: the same text and media
    streamed = ray_client.post("/v1/chat/completions", json={**bodies[0], "stream": True}).text
    plain = replies(local_client, bodies[0])["choices"][0]["message"]["content"]
    assert '"modality":"image"' in streamed and plain[-1]["image_url"]["url"].split(",", 1)[1] in streamed
    # the Images API
    images = [c.post("/v1/images/generations", json={"prompt": "a red square", "seed": 2}).json()["data"][0]["b64_json"]
              for c in (ray_client, local_client)]
    assert images[0] == images[1]


def test_a_text_only_reply_never_reaches_a_decoder(ray_model, image_model):
    from nextgpt_core import Conversation

    decoder = ray_model.decoder_handles["image"]
    before = decoder.stats.remote().result()["calls"]
    prompt = Conversation.from_prompt("Tell me something.")
    local = image_model.generate(prompt, seed=11, max_new_tokens=10)
    assert not local.media  # this seed writes text only (so the check below means something)
    reply = ray_model.generate(prompt, seed=11, max_new_tokens=10)
    assert reply.text == local.text and not reply.media
    assert decoder.stats.remote().result()["calls"] == before
    ray_model.generate(prompt, want=["image"], seed=11, max_new_tokens=10)
    assert decoder.stats.remote().result()["calls"] == before + 1


def test_a_killed_decoder_replica_is_restarted_and_its_call_retried(ray_model, image_model):
    import torch

    from nextgpt_core.serving.ray_backend import PendingDecode

    decoder = ray_model.decoder_handles["image"]
    spec = image_model.decoders["image"].conditioning_inputs[0]
    conditioning = {spec.name: torch.randn(1, spec.length, spec.dim, generator=torch.Generator().manual_seed(0))}
    slow = PendingDecode("image", conditioning, seed=9, options={"num_inference_steps": 150})
    reference = np.asarray(ray_model._decode(PendingDecode("image", conditioning, seed=9, options={"num_inference_steps": 150})).data)
    old_pid = decoder.stats.remote().result()["pid"]
    retries = ray_model.decoder_retries
    result: dict = {}
    call = threading.Thread(target=lambda: result.setdefault("media", ray_model._decode(slow)))
    calls_before = decoder.stats.remote().result()["calls"]
    call.start()
    deadline = time.monotonic() + 60
    while decoder.stats.remote().result()["calls"] == calls_before:  # the call has reached the replica
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(old_pid, signal.SIGKILL)  # the replica dies in the middle of the decode
    call.join(timeout=240)
    assert not call.is_alive(), "the retried call did not finish"
    assert ray_model.decoder_retries == retries + 1
    assert np.array_equal(np.asarray(result["media"].data), reference)  # the retry gave the same picture
    assert decoder.stats.remote().result()["pid"] != old_pid  # Serve started a new replica


def test_a_cancelled_request_skips_its_decoders(ray_model):
    from nextgpt_core import Conversation

    decoder = ray_model.decoder_handles["image"]
    before = decoder.stats.remote().result()["calls"]
    reply = ray_model.generate(Conversation.from_prompt("Draw."), want=["image"], seed=3, max_new_tokens=8,
                               should_stop=lambda: True)  # e.g. the client went away at once
    assert reply.cancelled and not reply.media
    assert decoder.stats.remote().result()["calls"] == before


@pytest.mark.parametrize("name", ["tiny.yaml", "nextgpt-v0.yaml"])
def test_each_serve_config_file_builds_the_application(name):
    import yaml
    from ray.serve import Application

    from nextgpt_core.composition import builtin_compositions
    from nextgpt_core.serving.ray_backend import APP_NAME, build_app
    from nextgpt_core.serving.stages import LANGUAGE, StageSpec

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "ray" / name).read_text())
    (app,) = config["applications"]
    assert app["name"] == APP_NAME and app["import_path"] == "nextgpt_core.serving.ray_backend:build_app"
    args = app["args"]
    assert args["composition"] in builtin_compositions()
    assert set(args["stages"]) == {LANGUAGE, *args["outputs"]}
    assert all(StageSpec(**spec).replicas >= 1 for spec in args["stages"].values())  # no unknown keys
    assert isinstance(build_app(args), Application)


def test_the_command_attaches_to_a_running_application(ray_model, image_model, tmp_path):
    """`nextgpt serve --backend ray --ray-address <cluster>` (the real command, a second Ray driver) finds the
    application running and serves it; stopping it leaves the application running."""
    import subprocess
    import sys

    import httpx
    import ray

    from nextgpt_core.testing.servers import free_port, wait_for_health

    port = free_port()
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "image"}
    log = open(tmp_path / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "nextgpt_core.cli", "serve", "--backend", "ray", "--composition", "tiny",
         "--ray-address", ray.get_runtime_context().gcs_address, "--port", str(port), "--media-dir", str(tmp_path / "m")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, process, timeout=120, log=tmp_path / "server.log")
        body = {"messages": user("Draw."), "modalities": ["text", "image"], "seed": 3, "max_tokens": 8}
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120).json()
        from nextgpt_core import Conversation

        local = image_model.generate(Conversation.from_prompt("Draw."), want=["image"], seed=3, max_new_tokens=8)
        assert np.array_equal(_pixels(essence(reply)[0][-1][1]), np.asarray(local.media[0].data))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert ray_model.language.describe.remote().result()["outputs"] == ["image"]  # still running


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))
