"""The API against `tiny` with the real image plugin: chat with media in and out in the OpenAI / vLLM-Omni dialect
(generated images as `image_url` parts of `message.content`), files, streaming, models, health, the chat page
route, and the OpenAPI schema against what is served."""

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


def decode_data_url(url: str) -> tuple[str, bytes]:
    head, data = url.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64"), head
    return head[len("data:"):-len(";base64")], base64.b64decode(data)


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def images_of(message: dict) -> list[dict]:
    assert isinstance(message["content"], list), message
    return [p["image_url"] for p in message["content"] if p["type"] == "image_url"]


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == "tiny" and card["input_modalities"] == ["text", "image"] and card["output_modalities"] == ["text", "image"]
    assert card["input_formats"]["image"]["by_suffix"] is True and ".png" in card["input_formats"]["image"]["extensions"]
    assert "image/png" in card["input_formats"]["image"]["mime_types"]
    assert client.get("/v1/models/tiny").json() == card
    missing = client.get("/v1/models/gpt-4o")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    health = client.get("/health").json()
    assert health == {"status": "ok", "model": "tiny", "running": 0, "waiting": 0, "capacity": 10}


def test_a_generated_image_is_an_inline_image_url_part(client, image_model):
    reply = chat(client, user("Describe it, then draw one.", {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes())}}),
                 modalities=["text", "image"], seed=5)
    message = reply["choices"][0]["message"]
    assert reply["object"] == "chat.completion" and reply["model"] == "tiny" and reply["seed"] == 5
    assert set(message) == {"role", "content"} and message["role"] == "assistant"
    (image,) = images_of(message)
    mime, data = decode_data_url(image["url"])  # inline by default, as vLLM-Omni answers
    assert mime == image["mime_type"] == "image/png" and png_pixels(data).shape == (32, 32, 3)
    assert client.get(f"/v1/files/{image['file_id']}/content").content == data  # the stored file is the same PNG
    meta = client.get(f"/v1/files/{image['file_id']}").json()
    assert meta["purpose"] == "output" and meta["modality"] == "image" and meta["mime_type"] == "image/png"
    assert all(p["type"] in ("text", "image_url") for p in message["content"])
    # the same request through the Python API gives the same reply
    from nextgpt_core import Conversation, Media

    picture = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    direct = image_model.generate(Conversation().user("Describe it, then draw one.", Media(modality="image", data=picture)),
                                  want=["image"], seed=5, max_new_tokens=8)
    texts = [p["text"] for p in message["content"] if p["type"] == "text"]
    assert " ".join(texts).strip() == direct.text
    assert np.array_equal(np.asarray(direct.media[0].data), png_pixels(data))
    usage = reply["usage"]
    assert usage["completion_tokens"] == len(direct.token_ids) and usage["prompt_tokens"] == direct.prompt_tokens > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")


def test_media_format_url_gives_the_files_absolute_url(client):
    reply = chat(client, user("Draw."), modalities=["image"], seed=2, media_format="url")
    (image,) = images_of(reply["choices"][0]["message"])
    assert image["url"] == f"http://testserver/v1/files/{image['file_id']}/content"
    inline = chat(client, user("Draw."), modalities=["image"], seed=2)
    (same,) = images_of(inline["choices"][0]["message"])
    assert client.get(image["url"]).content == decode_data_url(same["url"])[1]


def test_a_text_only_reply_has_string_content(client):
    reply = chat(client, user("Hello there."), seed=9, max_tokens=6)
    message = reply["choices"][0]["message"]
    assert isinstance(message["content"], str) and "audio" not in message


def test_upload_then_refer_by_file_id_url_and_file_part(client):
    uploaded = client.post("/v1/files", files={"file": ("pic.png", png_bytes(), "image/png")}, data={"purpose": "vision"})
    assert uploaded.status_code == 200, uploaded.text
    record = uploaded.json()
    assert record["object"] == "file" and record["modality"] == "image" and record["filename"] == "pic.png"
    assert client.get(record["url"]).content == png_bytes()
    ways = [
        {"type": "image_url", "image_url": {"url": record["url"]}},
        {"type": "image_url", "image_url": {"url": f"http://elsewhere:1234{record['url']}"}},  # this server's URL, any host
        {"type": "image_url", "image_url": {"url": record["id"]}},
        {"type": "file", "file": {"file_id": record["id"]}},
        {"type": "media", "media": {"modality": "image", "file_id": record["id"]}},
        {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes())}},
    ]
    texts = {chat(client, user("What is this?", part), seed=1)["choices"][0]["message"]["content"] for part in ways}
    assert len(texts) == 1  # the same image however it is referred to


def test_a_reply_sent_back_as_returned_keeps_its_media(client, image_model):
    from nextgpt_core import Conversation

    first = chat(client, user("Draw."), modalities=["image"], seed=3)
    message = first["choices"][0]["message"]
    history = [{"role": "system", "content": "be brief"}, *user("Draw."), message, *user("Again, differently.")]
    cache = image_model.encoder_cache
    before = cache.misses
    second = chat(client, history, seed=3)
    assert any("system messages are ignored" in n for n in second["notices"])
    assert cache.misses == before + 1  # the generated image went through the image encoder as an input
    # exactly the conversation the Python API builds with add_response
    reply = image_model.generate("Draw.", want=["image"], seed=3, max_new_tokens=8)
    again = image_model.generate(Conversation().user("Draw.").add_response(reply).user("Again, differently."),
                                 seed=3, max_new_tokens=8)
    assert second["choices"][0]["message"]["content"] == again.text
    assert second["usage"]["prompt_tokens"] == again.prompt_tokens
    # a stored file that is gone: the part's inline data is used instead
    (image,) = images_of(message)
    assert client.delete(f"/v1/files/{image['file_id']}").json()["deleted"] is True
    third = chat(client, history, seed=3)
    assert third["choices"][0]["message"]["content"] == again.text
    without_media = [*user("Draw."), {"role": "assistant", "content": "ok"}, *user("Again, differently.")]
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
    streamed = client.post("/v1/chat/completions", json={**fields, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    # with include_usage: a last chunk with empty choices and the usage of the whole request
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    chunks = chunks[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    text = "".join(d["content"] for d in deltas if isinstance(d.get("content"), str))
    media = [p for d in deltas if isinstance(d.get("content"), list) for p in d["content"]]
    assert all(c["modality"] == ("image" if isinstance(d.get("content"), list) else "text")
               for c, d in zip(chunks, deltas) if "content" in d)
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"] and last["seed"] == 11
    plain_content = plain["choices"][0]["message"]["content"]
    assert text.strip() == " ".join(p["text"] for p in plain_content if p["type"] == "text")
    assert len(media) == len(images_of(plain["choices"][0]["message"])) == 1
    assert decode_data_url(media[0]["image_url"]["url"])[1] == decode_data_url(images_of(plain["choices"][0]["message"])[0]["url"])[1]
    # media come after the text of the LLM and before the final chunk
    kinds = ["media" if isinstance(d.get("content"), list) else "final" if c["choices"][0]["finish_reason"] else "text"
             for c, d in zip(chunks[1:], deltas[1:])]
    assert kinds[-1] == "final" and kinds[-2] == "media"
    # without include_usage there is no usage chunk
    bare = parse_sse(client.post("/v1/chat/completions", json={**fields, "stream": True}).text)
    assert bare[-2]["choices"][0]["finish_reason"] and all(c["choices"] for c in bare[:-1])


def test_stop_ends_the_reply_text(client):
    fields = {"messages": user("Tell me a long story."), "seed": 21, "max_tokens": 24}
    full = chat(client, **{k: v for k, v in fields.items() if k != "messages"}, messages=fields["messages"])
    text = full["choices"][0]["message"]["content"]
    # a stop string from the middle of the reply (tiny's random weights write no words: two clean characters)
    at = next(i for i in range(len(text) // 2, len(text) - 1) if not {"\ufffd", " "} & set(text[i:i + 2]))
    stop = text[at:at + 2]
    expected = text[: text.index(stop)].strip()
    assert expected and len(expected) < len(text) - 2, (text, stop)
    stopped = chat(client, fields["messages"], seed=21, max_tokens=24, stop=[stop, "never-in-the-text"])
    assert stopped["choices"][0]["message"]["content"] == expected
    assert stopped["choices"][0]["finish_reason"] == "stop"
    streamed = parse_sse(client.post("/v1/chat/completions", json={**fields, "stop": stop, "stream": True}).text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed[:-1]).strip() == expected


def test_openapi_schema_matches_what_is_served(client):
    from nextgpt_core.serving.schemas import ChatCompletion, FileList, FileObject, Health, ImagesResponse, ModelCard, ModelList

    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/chat/completions", "/v1/images/generations", "/v1/files", "/v1/files/{file_id}",
            "/v1/files/{file_id}/content", "/v1/models", "/v1/models/{model_name}", "/health"} <= set(paths)
    assert {"get", "delete"} <= set(paths["/v1/files/{file_id}"]) and {"get", "post"} <= set(paths["/v1/files"])
    ok = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/ChatCompletion") and "text/event-stream" in ok
    assert paths["/v1/chat/completions"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    parts = schema["components"]["schemas"]["ChatMessage"]["properties"]["content"]
    names = set(json.dumps(parts).replace('"', " ").replace("/", " ").split())
    assert {"TextPart", "ImageURLPart", "VideoURLPart", "AudioURLPart", "InputAudioPart", "FilePart", "MediaPart"} <= names
    # every answer validates (strictly: no unknown fields) against the model its schema names
    reply = chat(client, user("Draw."), modalities=["image"], seed=4)
    file_id = images_of(reply["choices"][0]["message"])[0]["file_id"]
    images = client.post("/v1/images/generations", json={"prompt": "a picture", "seed": 1}).json()
    for model, body in [(ChatCompletion, reply), (Health, client.get("/health").json()), (ModelList, client.get("/v1/models").json()),
                        (ModelCard, client.get("/v1/models/tiny").json()), (FileObject, client.get(f"/v1/files/{file_id}").json()),
                        (FileList, client.get("/v1/files").json()), (ImagesResponse, images)]:
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
