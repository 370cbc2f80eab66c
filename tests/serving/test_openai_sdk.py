"""The API through the official `openai` SDK (sync, async, streaming) against a live server: generated media where
a generic client looks for them (`image_url` / `video_url` parts of `message.content`, audio in `message.audio`),
the history idiom `messages.append(reply.choices[0].message)` keeping the generated media, usage, `GET
/v1/models/{id}`, the API key, `/v1/files` list and delete, and `POST /v1/images/generations`."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from .media_samples import data_url, mp4_bytes, png_bytes, wav_bytes

OPENAI_FINISH = {"stop", "length", "tool_calls", "content_filter", "function_call"}


def sdk(server, key: str = "unused", **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120, **options)


def decode(url: str) -> bytes:
    assert url.startswith("data:") and ";base64," in url, url[:40]
    return base64.b64decode(url.split(",", 1)[1])


def parts(message, kind: str) -> list[dict]:
    content = message.content
    return [] if isinstance(content, str) or content is None else [p[kind] for p in content if p["type"] == kind]


def text_of(message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in content if p["type"] == "text").strip()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_sdk_sync_image_reply_and_the_history_idiom(image_model, live_server):
    from nextgpt_core import Conversation, Media

    server = live_server(image_model)
    client = sdk(server)
    assert [m.id for m in client.models.list()] == ["tiny"]
    card = client.models.retrieve("tiny")
    assert card.id == "tiny" and card.model_extra["output_modalities"] == ["text", "image"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found"

    messages = [{"role": "user", "content": [{"type": "text", "text": "Draw a picture."},
                                             {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes())}}]}]
    reply = client.chat.completions.create(model="tiny", messages=messages, modalities=["text", "image"], seed=7, max_tokens=8)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason in OPENAI_FINISH and message.role == "assistant"
    (image,) = parts(message, "image_url")
    assert pixels(decode(image["url"])).shape == (32, 32, 3)
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    messages.append(reply.choices[0].message)  # the SDK idiom: the message object as returned
    messages.append({"role": "user", "content": "And now tell me about it."})
    second = client.chat.completions.create(model="tiny", messages=messages, seed=8, max_tokens=8)

    picture = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    conversation = Conversation().user("Draw a picture.", Media(modality="image", data=picture))
    first = image_model.generate(conversation, want=["image"], seed=7, max_new_tokens=8)
    assert np.array_equal(np.asarray(first.media[0].data), pixels(decode(image["url"])))
    again = image_model.generate(conversation.add_response(first).user("And now tell me about it."), seed=8, max_new_tokens=8)
    assert text_of(second.choices[0].message) == again.text
    assert second.usage.prompt_tokens == again.prompt_tokens  # the generated image took its place in the prompt
    alone = image_model.generate(Conversation().user("Draw a picture.", Media(modality="image", data=picture))
                                 .add_response(type(first)(parts=[p for p in first.parts if not hasattr(p, "modality")]))
                                 .user("And now tell me about it."), seed=8, max_new_tokens=8)
    assert alone.prompt_tokens < again.prompt_tokens  # without the image the prompt is shorter: the test can fail


def test_sdk_audio_and_video_in_and_out(av_model, live_server, tmp_path):
    from nextgpt_core import Conversation

    server = live_server(av_model)
    client = sdk(server)
    runs = sum(len(av_model.tokens.signals[k]) for k in ("audio", "video"))
    messages = [{"role": "user", "content": "Make a clip and a sound."}]
    reply = client.chat.completions.create(model="tiny", messages=messages, modalities=["text", "video", "audio"],
                                           audio={"voice": "alloy", "format": "wav"}, seed=5, max_tokens=runs + 4)
    message = reply.choices[0].message
    audio = message.audio
    assert audio.id.startswith("file-") and audio.transcript == "" and audio.expires_at > reply.created
    assert audio.model_extra["format"] == "wav" and base64.b64decode(audio.data)[:4] == b"RIFF"
    (clip,) = parts(message, "video_url")
    assert decode(clip["url"])[4:8] == b"ftyp" and clip["mime_type"] == "video/mp4"
    (sound,) = parts(message, "audio_url")
    assert sound["file_id"] == audio.id and decode(sound["url"]) == base64.b64decode(audio.data)
    assert any("voice has no effect" in n for n in reply.model_extra["notices"])

    messages.append(message)
    messages.append({"role": "user", "content": "Again."})
    second = client.chat.completions.create(model="tiny", messages=messages, seed=6, max_tokens=6)
    first = av_model.generate("Make a clip and a sound.", want=["video", "audio"], seed=5, max_new_tokens=runs + 4)
    again = av_model.generate(Conversation().user("Make a clip and a sound.").add_response(first).user("Again."),
                              seed=6, max_new_tokens=6)
    assert text_of(second.choices[0].message) == again.text and second.usage.prompt_tokens == again.prompt_tokens

    # the audio sent back by id alone (OpenAI's multi-turn form) is the same input as its audio_url part
    content = [p for p in message.content if p["type"] != "audio_url"]
    by_id = [messages[0], {"role": "assistant", "content": content, "audio": {"id": audio.id}}, messages[2]]
    third = client.chat.completions.create(model="tiny", messages=by_id, seed=6, max_tokens=6)
    assert third.usage.prompt_tokens == again.prompt_tokens

    # every OpenAI input part type reaches its modality: the same reply as nextgpt's own media parts
    wav, mp4 = wav_bytes(0.5), mp4_bytes(tmp_path, frames=4)
    openai_parts = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}},
                    {"type": "audio_url", "audio_url": {"url": data_url("audio/wav", wav)}},
                    {"type": "video_url", "video_url": {"url": data_url("video/mp4", mp4)}},
                    {"type": "text", "text": "What are these?"}]
    own_parts = [{"type": "media", "media": {"modality": "audio", "data": data_url("audio/wav", wav)}},
                 {"type": "media", "media": {"modality": "audio", "data": data_url("audio/wav", wav)}},
                 {"type": "media", "media": {"modality": "video", "data": data_url("video/mp4", mp4)}},
                 {"type": "text", "text": "What are these?"}]
    a = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": openai_parts}], seed=2, max_tokens=6)
    b = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": own_parts}], seed=2, max_tokens=6)
    assert text_of(a.choices[0].message) == text_of(b.choices[0].message) and a.usage.prompt_tokens == b.usage.prompt_tokens


def test_sdk_streaming_and_async(image_model, live_server):
    server = live_server(image_model, workers=2)
    client = sdk(server)
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "Hello, draw me something."}],
           "modalities": ["text", "image"], "max_tokens": 10}
    plain = client.chat.completions.create(**ask, seed=3)
    chunks = list(client.chat.completions.create(**ask, seed=3, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    deltas = [c.choices[0].delta for c in chunks[:-1]]
    text = "".join(d.content for d in deltas if isinstance(d.content, str))
    images = [p["image_url"]["url"] for d in deltas if isinstance(d.content, list) for p in d.content]
    assert text.strip() == text_of(plain.choices[0].message)
    assert [decode(u) for u in images] == [decode(p["url"]) for p in parts(plain.choices[0].message, "image_url")]
    assert chunks[-2].choices[0].finish_reason in OPENAI_FINISH

    async def run() -> list:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120) as aclient:
            replies = await asyncio.gather(*[aclient.chat.completions.create(**ask, seed=s) for s in (3, 4, 5)])
            stream = await aclient.chat.completions.create(**ask, seed=3, stream=True)
            streamed = "".join([c.choices[0].delta.content async for c in stream
                                if c.choices and isinstance(c.choices[0].delta.content, str)])
            return [*replies, streamed]

    *replies, streamed = asyncio.run(run())
    assert text_of(replies[0].choices[0].message) == text_of(plain.choices[0].message) and streamed.strip() == text.strip()
    for seed, reply in zip((4, 5), replies[1:]):
        alone = client.chat.completions.create(**ask, seed=seed)
        assert text_of(reply.choices[0].message) == text_of(alone.choices[0].message)


def test_sdk_errors_and_the_api_key(image_model, live_server, monkeypatch):
    import nextgpt_core.serving.app as app_module

    compared = []
    real = app_module.hmac.compare_digest
    monkeypatch.setattr(app_module.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    server = live_server(image_model, api_key="s3cret-key")
    assert httpx.get(f"{server.url}/health").status_code == 200  # open
    assert httpx.get(f"{server.url}/ui").status_code == 200  # the page asks for the key itself
    for key in ("wrong", "s3cret-key2", "s3cret-ke"):
        with pytest.raises(openai.AuthenticationError) as denied:
            sdk(server, key=key).models.list()
        assert denied.value.code == "invalid_api_key" and denied.value.status_code == 401
    plain = httpx.get(f"{server.url}/v1/files")
    assert plain.status_code == 401 and plain.headers["www-authenticate"] == "Bearer"
    assert compared  # the key was compared with hmac.compare_digest
    client = sdk(server, key="s3cret-key")
    assert [m.id for m in client.models.list()] == ["tiny"]
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(**ask, extra_body={"foo": 1})
    assert unknown.value.code == "unsupported_parameter" and unknown.value.param == "foo"
    with pytest.raises(openai.BadRequestError) as penalty:
        client.chat.completions.create(**ask, presence_penalty=0.5)
    assert penalty.value.code == "unsupported_parameter" and penalty.value.param == "presence_penalty"
    with pytest.raises(openai.NotFoundError) as wrong_model:
        client.chat.completions.create(**{**ask, "model": "gpt-4o"})
    assert wrong_model.value.code == "model_not_found"
    reply = client.chat.completions.create(**ask, stop=["zz"], seed=1)
    assert reply.choices[0].finish_reason in OPENAI_FINISH


def test_sdk_files_list_and_delete(image_model, live_server):
    server = live_server(image_model)
    client = sdk(server)
    made = [client.files.create(file=(f"p{i}.png", png_bytes(20 + i, 20), "image/png"), purpose="user_data") for i in range(3)]
    listed = client.files.list()
    assert [f.id for f in listed.data] == [f.id for f in reversed(made)]  # newest first
    assert [f.id for f in client.files.list(order="asc").data] == [f.id for f in made]
    page = client.files.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [f.id for f in client.files.list(limit=2)] == [f.id for f in reversed(made)]  # the SDK pages on by `after`
    assert client.files.list(purpose="output").data == []
    deleted = client.files.delete(made[1].id)
    assert deleted.deleted is True and deleted.id == made[1].id
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(made[1].id)
    assert gone.value.code == "file_not_found"
    with pytest.raises(openai.NotFoundError):
        client.files.delete(made[1].id)
    assert {f.id for f in client.files.list()} == {made[0].id, made[2].id}
    assert not list(server.app.state.store.root.glob(f"{made[1].id}*"))


def test_sdk_images_generate_through_the_whole_model(image_model, live_server):
    from nextgpt_core import Conversation

    server = live_server(image_model)
    client = sdk(server)
    result = client.images.generate(model="tiny", prompt="a red square", n=2, response_format="b64_json", extra_body={"seed": 3})
    assert len(result.data) == 2
    budget = image_model.composition.generation.max_new_tokens
    for i, item in enumerate(result.data):
        direct = image_model.generate(Conversation.from_prompt("a red square"), want=["image"], seed=3 + i, max_new_tokens=budget)
        assert np.array_equal(pixels(base64.b64decode(item.b64_json)), np.asarray(direct.media[0].data))
    assert not np.array_equal(pixels(base64.b64decode(result.data[0].b64_json)), pixels(base64.b64decode(result.data[1].b64_json)))
    linked = client.images.generate(prompt="a red square", response_format="url", size="32x32", extra_body={"seed": 3})
    assert httpx.get(linked.data[0].url).content == base64.b64decode(result.data[0].b64_json)
    with pytest.raises(openai.BadRequestError) as size:
        client.images.generate(prompt="a red square", size="1024x1024")
    assert size.value.code == "unsupported_parameter" and size.value.param == "size"
