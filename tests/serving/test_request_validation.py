"""Every refusal of the API is one 400 naming the problem, before any work: an unknown content part type is named
as such, and a streamed request whose signal-token budget is too small gets its 400 before the stream starts."""

from __future__ import annotations

import pytest


@pytest.fixture()
def client(image_model, make_client):
    return make_client(image_model, workers=1)


@pytest.mark.parametrize("part,message", [
    ({"type": "video_url", "video_url": {"url": "x"}},
     "messages.0.content.0: unknown content part type 'video_url'; a part's type is one of text, image_url"),
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
    assert f"max_new_tokens {runs - 1} cannot hold the wanted runs ({runs} signal tokens: image {runs})" in error["message"]
    body["max_tokens"] = runs + 2
    ok = client.post("/v1/chat/completions", json=body)
    assert ok.status_code == 200
