"""Limits and safety (issue E item 2): upload size, media duration and resolution, bad base64, unsupported types,
malformed JSON, path traversal in file ids; each a 4xx JSON error, and the server keeps serving after each.
The bounded queue (429) and the timeout (504) are in test_queue_timeout.py."""

from __future__ import annotations

import base64
import json
import os

import pytest

from .conftest import ReaderOnlyModel
from .media_samples import data_url, mp4_bytes, png_bytes, user, wav_bytes


@pytest.fixture()
def readers(media_registry, make_client):
    """An app over the real image, video and audio readers with small limits (nothing is generated)."""
    return make_client(ReaderOnlyModel(media_registry), max_upload_bytes=200_000, max_media_seconds=2.0, max_media_pixels=5_000)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
    assert "\n" not in body["error"]["message"]
    return body["error"]


def still_serving(client) -> None:
    assert client.get("/health").json()["status"] == "ok"


def upload(client, name, data, mime="application/octet-stream", **form):
    return client.post("/v1/files", files={"file": (name, data, mime)}, data=form)


def chat(client, *parts, **fields):
    return client.post("/v1/chat/completions", json={"messages": user("hi", *parts), **fields})


def test_upload_size(readers):
    assert upload(readers, "ok.png", png_bytes(40, 30)).status_code == 200
    big = os.urandom(250_000)
    assert_error(upload(readers, "big.png", big, "image/png"), 413, "upload_too_large")
    still_serving(readers)
    # an inline media part over the limit
    assert_error(chat(readers, {"type": "input_audio", "input_audio": {"data": base64.b64encode(big).decode(), "format": "wav"}}),
                 413, "upload_too_large")
    # a body over the whole-body limit is refused from its Content-Length, before it is read
    huge = b"x" * (readers.app.state.config.max_body_bytes + 1)
    assert_error(readers.post("/v1/files", content=huge, headers={"content-type": "application/octet-stream"}), 413, "request_too_large")
    still_serving(readers)


def test_media_duration(readers, tmp_path):
    assert upload(readers, "short.wav", wav_bytes(1.0)).status_code == 200
    assert_error(upload(readers, "long.wav", wav_bytes(3.0)), 413, "media_too_long")
    assert_error(chat(readers, {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes(3.0)).decode(), "format": "wav"}}),
                 413, "media_too_long")
    assert upload(readers, "short.mp4", mp4_bytes(tmp_path, frames=4)).status_code == 200  # 1 s at 4 fps
    assert_error(upload(readers, "long.mp4", mp4_bytes(tmp_path, frames=12)), 413, "media_too_long")  # 3 s
    assert_error(chat(readers, {"type": "media", "media": {"modality": "video", "data": base64.b64encode(mp4_bytes(tmp_path, 12)).decode(), "format": "mp4"}}),
                 413, "media_too_long")
    still_serving(readers)


def test_media_resolution(readers):
    assert upload(readers, "small.png", png_bytes(70, 70)).status_code == 200  # 4900 pixels
    assert_error(upload(readers, "large.png", png_bytes(80, 70)), 413, "media_too_large")
    assert_error(chat(readers, {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes(80, 70))}}), 413, "media_too_large")
    still_serving(readers)


def test_bad_base64_bad_data_urls_and_corrupt_media(readers):
    assert_error(chat(readers, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not*base64@@"}}), 400, "invalid_base64")
    assert_error(chat(readers, {"type": "input_audio", "input_audio": {"data": "abc", "format": "wav"}}), 400, "invalid_base64")
    assert_error(chat(readers, {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}), 400, "invalid_data_url")
    assert_error(chat(readers, {"type": "image_url", "image_url": {"url": data_url("image/png", b"not a png at all")}}), 400, "invalid_media")
    assert_error(upload(readers, "broken.png", png_bytes()[:40]), 400, "invalid_media")
    error = assert_error(upload(readers, "noise.wav", os.urandom(2000)), 400, "invalid_media")
    assert str(readers.app.state.store.root) not in error["message"]  # no server paths in messages
    assert_error(chat(readers, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}), 400, "unsupported_url")
    still_serving(readers)


def test_unsupported_types(readers):
    assert_error(upload(readers, "notes.txt", b"hello"), 415, "unsupported_media_type")
    assert_error(upload(readers, "blob", b"hello", "text/plain"), 415, "unsupported_media_type")
    assert_error(chat(readers, {"type": "image_url", "image_url": {"url": data_url("image/tiff", png_bytes())}}), 415, "unsupported_media_type")
    assert_error(chat(readers, {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes(0.5)).decode(), "format": "exe"}}),
                 415, "unsupported_media_type")
    assert_error(chat(readers, {"type": "media", "media": {"modality": "smell", "data": "AAAA"}}), 400, "unsupported_modality")
    assert_error(chat(readers, {"type": "hologram", "hologram": {}}), 400, "invalid_request")
    still_serving(readers)


def test_malformed_json_and_bad_fields(readers):
    for body in (b"{not json", b"", b"[1, 2", "{\"messages\": [}".encode()):
        assert_error(readers.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"}), 400, "invalid_json")
    assert_error(readers.post("/v1/chat/completions", json={"messages": []}), 400, "invalid_request")
    assert_error(readers.post("/v1/chat/completions", json={"messages": user("x"), "seed": -1}), 400, "invalid_request")
    assert_error(readers.post("/v1/chat/completions", json={"messages": user("x"), "modalities": ["smell"]}), 400, "unsupported_modality")
    assert_error(readers.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "x"}]}), 400, "invalid_messages")
    assert_error(readers.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": user("x")}), 404, "model_not_found")
    assert_error(readers.get("/v1/nothing"), 404, "not_found")
    still_serving(readers)


def test_no_file_id_reaches_outside_the_media_folder(readers, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (tmp_path / "file-" ).mkdir(exist_ok=True)
    store = readers.app.state.store
    good = upload(readers, "ok.png", png_bytes()).json()["id"]
    probes = [
        "../secret.png", "..%2Fsecret.png", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fsecret.png", "/etc/passwd",
        f"{good}/../../secret.png", f"{good[:-1]}%00", "file-" + "0" * 31 + "/", "file-" + "g" * 32, good.upper(),
        f"{good}.json", "file-..", "..",
    ]
    for probe in probes:
        for path in (f"/v1/files/{probe}", f"/v1/files/{probe}/content"):
            response = readers.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert response.content != secret.read_bytes()
            # what still lies under /v1/files/ once the client normalised it (an encoded `..%2F` does) names no file
            sent = response.request.url.raw_path.decode()
            expected = "file_not_found" if sent.startswith("/v1/files/") else "not_found"
            assert response.json()["error"]["code"] == expected, (path, sent, response.json())
            if "%2F" in probe or "%2f" in probe:
                assert expected == "file_not_found"
            assert readers.delete(path).status_code in (404, 405)
    for probe in ("../secret.png", "../../etc/passwd", str(secret), "file-../../x"):
        for part in ({"type": "file", "file": {"file_id": probe}}, {"type": "media", "media": {"modality": "image", "file_id": probe}},
                     {"type": "image_url", "image_url": {"url": f"/v1/files/{probe}/content"}}):
            response = chat(readers, part)
            assert response.status_code in (400, 404) and "error" in response.json(), (probe, part, response.text)
    # an upload's client file name never becomes a path
    named = upload(readers, "../../../escape.png", png_bytes()).json()
    assert named["filename"] == "escape.png"
    assert not (tmp_path / "escape.png").exists() and not any(tmp_path.glob("**/escape.png"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != secret]
    assert written and all(p.resolve().is_relative_to(store.root) for p in written)
    assert json.loads((store.root / f"{good}.json").read_text())["id"] == good
    still_serving(readers)


def test_a_body_without_length_is_cut_at_the_limit(readers):
    limit = readers.app.state.config.max_body_bytes

    def chunks():  # sent chunked: no Content-Length to refuse it by
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    for path, kind in (("/v1/chat/completions", "application/json"), ("/v1/files", "multipart/form-data; boundary=b")):
        assert_error(readers.post(path, content=chunks(), headers={"content-type": kind}), 413, "request_too_large")
    still_serving(readers)
