"""Every refusal of the API is one 400 naming the problem, before any work: an unknown content part type is named
as such, a field this server does not support is named (never silently ignored), a streamed request whose
signal-token budget is too small gets its 400 before the stream starts, and errors the model raises carry a
documented code (never a class name)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def client(image_model, make_client):
    return make_client(image_model, workers=1)


@pytest.mark.parametrize("part,message", [
    ({"type": "hologram_url", "hologram_url": {"url": "x"}},
     "messages.0.content.0: unknown content part type 'hologram_url'; a part's type is one of text, image_url, video_url"),
    ({"text": "no type"}, "messages.0.content.0: a content part needs a 'type'"),
    ({"type": "text"}, "messages.0.content.0.text: Field required"),
])
def test_a_bad_content_part_is_named(client, part, message):
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [part]}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(message), error
    assert "content.str" not in error["message"] and "tagged-union" not in error["message"]


def test_content_of_the_wrong_type(client):
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": 5}]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "messages.0.content: should be a string or a list of content parts"


@pytest.mark.parametrize("stream", [True, False])
def test_a_budget_that_cannot_hold_the_wanted_runs_is_a_400_before_any_stream(client, image_model, stream):
    runs = len(image_model.tokens.signals["image"])
    body = {"messages": [{"role": "user", "content": "draw"}], "modalities": ["image"], "max_tokens": runs - 1,
            "stream": stream}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "max_tokens_too_small" and error["param"] == "max_tokens"
    assert f"max_new_tokens {runs - 1} cannot hold the wanted runs ({runs} signal tokens: image {runs})" in error["message"]
    body["max_tokens"] = runs + 2
    ok = client.post("/v1/chat/completions", json=body)
    assert ok.status_code == 200


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize("extra,param", [
    ({"foo": 1}, "foo"),                                   # not an OpenAI field at all
    ({"presence_penalty": 0.5}, "presence_penalty"),       # an OpenAI field we do not implement, set to do something
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"n": 2}, "n"),
    ({"audio": {"format": "wav"}}, "audio"),               # this model (image only) makes no audio
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_an_unsupported_field_is_a_400_naming_it(client, extra, param):
    error = error_of(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **extra}))
    assert error["param"] == param and error["message"].startswith(f"{param}:"), error
    assert error["code"] in ("unsupported_parameter", "unsupported_modality", "invalid_request")


@pytest.mark.parametrize("message,param", [
    ({"role": "user", "content": [{"type": "text", "text": "x", "foo": 1}]}, "messages.0.content.0.foo"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "size": 3}}]}, "messages.0.content.0.image_url.size"),
    ({"role": "user", "content": "x", "weight": 2}, "messages.0.weight"),
])
def test_an_unknown_nested_field_is_named(client, message, param):
    error = error_of(client.post("/v1/chat/completions", json={"messages": [message]}))
    assert error["code"] == "unsupported_parameter" and error["param"] == param, error


def test_neutral_values_pass_and_descriptive_fields_are_notices(client):
    from .media_samples import data_url, png_bytes

    body = {"messages": [{"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes()), "detail": "high"}}]}],
            "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False, "tools": [], "n": 1,
            "user": "u-1", "metadata": {"k": "v"}, "max_tokens": 4, "seed": 1}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    notices = " | ".join(response.json()["notices"])
    for word in ("user:", "metadata:", "messages[0].name", "detail 'high' has no effect"):
        assert word in notices, notices


def test_a_prompt_over_the_context_is_context_length_exceeded(client):
    error = error_of(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]}))
    assert error["code"] == "context_length_exceeded" and "context budget" in error["message"]
    assert "Error" not in error["code"]
