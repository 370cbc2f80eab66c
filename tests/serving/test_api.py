"""The API against `tiny` with the real image plugin: chat with media in and out, files, streaming, models,
health, the chat page route, and the OpenAPI schema against what is served."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from .media_samples import data_url, png_bytes, user


@pytest.fixture()
def client(image_model, make_client):
    return make_client(image_model, workers=2)


def chat(client, messages, **fields):
    response = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 8, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def pixels(client, part) -> np.ndarray:
    response = client.get(part["media"]["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == "tiny" and card["input_modalities"] == ["text", "image"] and card["output_modalities"] == ["text", "image"]
    health = client.get("/health").json()
    assert health == {"status": "ok", "model": "tiny", "running": 0, "waiting": 0, "capacity": 10}


def test_image_in_image_out_points_to_files(client, image_model):
    reply = chat(client, user("Describe it, then draw one.", {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes())}}),
                 modalities=["text", "image"], seed=5)
    message = reply["choices"][0]["message"]
    assert reply["object"] == "chat.completion" and reply["model"] == "tiny" and reply["seed"] == 5
    assert [p["media"]["modality"] for p in message["media"]] == ["image"]
    part = message["media"][0]
    assert part["media"]["url"] == f"/v1/files/{part['media']['file_id']}/content" and "data" not in part["media"]
    assert part in message["parts"]
    assert message["content"] == " ".join(p["text"] for p in message["parts"] if p["type"] == "text")
    assert pixels(client, part).shape == (32, 32, 3)
    meta = client.get(f"/v1/files/{part['media']['file_id']}").json()
    assert meta["purpose"] == "output" and meta["modality"] == "image" and meta["mime_type"] == "image/png"
    # the same request through the Python API gives the same reply
    from nextgpt_core import Conversation, Media
    from nextgpt_image.media import ImageIO

    image = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    direct = image_model.generate(Conversation().user("Describe it, then draw one.", Media(modality="image", data=image)),
                                  want=["image"], seed=5, max_new_tokens=8)
    assert direct.text == message["content"] and reply["usage"]["completion_tokens"] == len(direct.token_ids)
    assert np.array_equal(np.asarray(direct.media[0].data), pixels(client, part))
    assert ImageIO  # the plugin's reader wrote what was served


def test_upload_then_refer_by_file_id_url_and_file_part(client):
    uploaded = client.post("/v1/files", files={"file": ("pic.png", png_bytes(), "image/png")}, data={"purpose": "vision"})
    assert uploaded.status_code == 200, uploaded.text
    record = uploaded.json()
    assert record["object"] == "file" and record["modality"] == "image" and record["filename"] == "pic.png"
    assert client.get(record["url"]).content == png_bytes()
    ways = [
        {"type": "image_url", "image_url": {"url": record["url"]}},
        {"type": "image_url", "image_url": {"url": record["id"]}},
        {"type": "file", "file": {"file_id": record["id"]}},
        {"type": "media", "media": {"modality": "image", "file_id": record["id"]}},
        {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes())}},
    ]
    texts = {chat(client, user("What is this?", part), seed=1)["choices"][0]["message"]["content"] for part in ways}
    assert len(texts) == 1  # the same image however it is referred to


def test_b64_json_inlines_the_media(client):
    reply = chat(client, user("Draw."), modalities=["image"], seed=2, media_format="b64_json")
    part = reply["choices"][0]["message"]["media"][0]
    assert base64.b64decode(part["media"]["data"]) == client.get(part["media"]["url"]).content


def test_assistant_media_are_refed_and_system_is_a_notice(client, image_model):
    first = chat(client, user("Draw."), modalities=["image"], seed=3)
    message = first["choices"][0]["message"]
    history = [{"role": "system", "content": "be brief"}, *user("Draw."),
               {"role": "assistant", "content": message["parts"]}, *user("Again, differently.")]
    cache = image_model.encoder_cache
    before = cache.misses
    second = chat(client, history, seed=3)
    assert any("system messages are ignored" in n for n in second["notices"])
    assert cache.misses == before + 1  # the generated image went through the image encoder as an input
    without_media = [*user("Draw."), {"role": "assistant", "content": message["content"] or "ok"}, *user("Again, differently.")]
    before = cache.misses
    chat(client, without_media, seed=3)
    assert cache.misses == before


def parse_sse(text: str) -> list:
    events = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_stream_equals_the_plain_reply(client):
    fields = {"messages": user("Hello there, draw something."), "modalities": ["text", "image"], "seed": 11, "max_tokens": 12}
    plain = client.post("/v1/chat/completions", json=fields).json()
    streamed = client.post("/v1/chat/completions", json={**fields, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    media = [m for c in chunks for m in c["choices"][0]["delta"].get("media") or []]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"] and last["seed"] == 11
    assert text.strip() == plain["choices"][0]["message"]["content"]
    assert len(media) == len(plain["choices"][0]["message"]["media"]) == 1
    assert np.array_equal(pixels(client, media[0]), pixels(client, plain["choices"][0]["message"]["media"][0]))
    # media come after the text of the LLM and before the final chunk
    kinds = ["media" if c["choices"][0]["delta"].get("media") else "final" if c["choices"][0]["finish_reason"] else "text"
             for c in chunks[1:]]
    assert kinds[-1] == "final" and kinds[-2] == "media"


def test_openapi_schema_matches_what_is_served(client):
    from nextgpt_core.serving.schemas import ChatCompletion, FileObject, Health, ModelList

    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/chat/completions", "/v1/files", "/v1/files/{file_id}", "/v1/files/{file_id}/content", "/v1/models", "/health"} <= set(paths)
    ok = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/ChatCompletion") and "text/event-stream" in ok
    assert paths["/v1/chat/completions"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    parts = schema["components"]["schemas"]["ChatMessage"]["properties"]["content"]
    assert {"TextPart", "ImageURLPart", "InputAudioPart", "FilePart", "MediaPart"} <= set(json.dumps(parts).replace('"', " ").replace("/", " ").split())
    # every answer validates (strictly: no unknown fields) against the model its schema names
    reply = chat(client, user("Draw."), modalities=["image"], seed=4)
    for model, body in [(ChatCompletion, reply), (Health, client.get("/health").json()), (ModelList, client.get("/v1/models").json()),
                        (FileObject, client.get(f"/v1/files/{reply['choices'][0]['message']['media'][0]['media']['file_id']}").json())]:
        validated = model.model_validate(body).model_dump(exclude_none=True, mode="json")
        assert validated == body


def test_ui_route_serves_the_page_or_a_json_404(client, monkeypatch, tmp_path):
    import nextgpt_core.serving.app as app_module

    page = client.get("/ui")
    if (app_module.STATIC / "index.html").is_file():
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    monkeypatch.setattr(app_module, "STATIC", tmp_path / "no-page")
    missing = client.get("/ui")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/ui/static/nothing.js").status_code == 404
