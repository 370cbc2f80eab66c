"""The chat page at /ui, end to end: a real `nextgpt serve` (with an API key) on a free port, Debian's headless
Chromium driven by Playwright. The page asks for the key; its file picker offers exactly the files the model reads
(a .png can be sent as an image or a depth map). Turn 1 types a prompt, attaches a picture, asks for an image, and
checks the streamed reply shows the generated 32x32 picture scaled up by a whole factor with sharp pixels. Turn 2
(not streamed) asks for video and audio and checks that the browser can play them (the clip scaled up and
looping, the sound with its waveform drawn), and that the request carried the history with the generated image by
file id. Screenshots are saved next to the test's files (or in $NEXTGPT_SCREENSHOTS).

Under CI (CI=true) a missing browser or Playwright fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nextgpt_core.testing.servers import free_port, wait_for_health

pytestmark = pytest.mark.subprocess  # runs `nextgpt serve` in a child process

CHROMIUM = Path(os.environ.get("NEXTGPT_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "page-test-key"


@pytest.fixture()
def sync_playwright():
    """Playwright's sync API, or fail (CI) / skip (elsewhere) naming what is missing; checked before the server
    starts."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright as api
    except ImportError:
        problem = "the playwright package is not installed (it is in the `test` extra: `make test` installs it)"
    if problem is None and not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problem = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it under CI)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the browser for the chat page test: {problem}")
        pytest.skip(problem)
    return api


@pytest.fixture()
def server(tmp_path):
    """`nextgpt serve` on `tiny` with the real image, video, audio and depth plugins and an API key; yields its base
    URL, stops it afterwards."""
    port = free_port()
    env = dict(os.environ, NEXTGPT_LOAD_PLUGINS="image,video,audio,depth", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               NEXTGPT_API_KEY=API_KEY)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextgpt_core.cli", "serve", "--composition", "tiny", "--port", str(port),
         "--media-dir", str(tmp_path / "media"), "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc, timeout=45, log=tmp_path / "server.log")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the server started above, nothing else
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_chat_page_sends_a_picture_and_shows_the_generated_image(sync_playwright, server, tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    picture = tmp_path / "gradient.png"
    Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)).save(picture)
    shots = Path(os.environ.get("NEXTGPT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
            outside: list[str] = []
            page.on("request", lambda req: None if req.url.startswith((server, "data:", "blob:")) else outside.append(req.url))

            page.goto(f"{server}/ui")
            # the server wants a key: the page asks for it, then loads the model card with it
            page.wait_for_selector("#key-form:not([hidden])", timeout=10_000)
            page.fill("#key", API_KEY)
            page.click("#key-form button")
            page.wait_for_selector("body[data-ready=true]", timeout=10_000)
            assert "tiny" in page.inner_text("#model")
            # the picker offers exactly what the model reads (suffixes and MIME types of every input modality)
            accept = set(page.get_attribute("#attach", "accept").split(","))
            assert {".png", ".jpg", ".mp4", ".wav", ".npy", "image/png", "video/mp4", "audio/wav"} <= accept
            assert not any(a.endswith("/*") for a in accept) and "" not in accept
            # a .png may be an image or a depth map: the chip asks, the image first
            page.set_input_files("#attach", str(picture))
            assert page.inner_text("#attachments").strip().startswith("gradient.png")
            assert page.eval_on_selector(".chip select.as-modality", "s => [...s.options].map(o => o.value)") == ["image", "depth"]
            page.fill("#prompt", "What is in this picture? Then draw one like it.")
            page.check("#want-image")
            assert page.is_checked("#stream")
            page.click("#send")

            # the reply: streamed into an assistant bubble, then the generated picture (inline, as the API sends
            # it), decoded by the browser and shown at a whole multiple of its size with sharp pixels
            page.wait_for_selector(".message.assistant:not(.pending) .meta", timeout=40_000)
            image = page.locator(".message.assistant img[data-modality=image]").first
            src = image.get_attribute("src")
            assert src.startswith("data:image/png;base64,"), src[:40]
            page.wait_for_function(
                "() => { const i = document.querySelector('.message.assistant img'); return i && i.complete && i.dataset.scale; }",
                timeout=10_000,
            )
            width = image.evaluate("img => img.naturalWidth")
            shown = image.evaluate("img => img.getBoundingClientRect().width")
            scale = int(image.get_attribute("data-scale"))
            assert scale >= 4 and abs(shown - width * scale) < 1.5, (width, shown, scale)
            assert image.evaluate("img => getComputedStyle(img).imageRendering") in ("pixelated", "crisp-edges")
            first_image = image.get_attribute("data-file-id")
            assert first_image.startswith("file-")
            # the user's picture went up through /v1/files too (as an image), and shows in the user's bubble
            sent = page.locator(".message.user img[data-modality=image]").first
            assert sent.get_attribute("data-file-id").startswith("file-")
            assert sent.evaluate("img => img.naturalWidth") == 64
            page.screenshot(path=str(shots / "chat_page.png"), full_page=True)

            # turn 2, not streamed: video and audio; the history goes along, generated image included by file id
            sent_bodies: list[dict] = []
            page.on("request", lambda req: sent_bodies.append(json.loads(req.post_data))
                    if req.url.endswith("/v1/chat/completions") else None)
            page.uncheck("#want-image")
            page.check("#want-video")
            page.check("#want-audio")
            page.uncheck("#stream")
            page.fill("#prompt", "Now a clip and a sound.")
            page.keyboard.press("Enter")
            page.wait_for_function("() => document.querySelectorAll('.message.assistant .meta').length === 2",
                                   timeout=40_000)
            second = page.locator(".message.assistant").nth(1)
            for kind in ("video", "audio"):
                player = second.locator(f"{kind}[data-modality={kind}]").first
                assert player.get_attribute("src").startswith(f"data:{kind}/")
                player.evaluate("el => new Promise((ok, bad) => { if (el.readyState >= 1) ok(); "
                                "el.onloadedmetadata = ok; el.onerror = () => bad(new Error('cannot play ' + el.src)); })")
                assert player.evaluate("el => el.duration") > 0, kind
            clip = second.locator("video[data-modality=video]").first
            page.wait_for_function("() => document.querySelectorAll('.message.assistant video[data-scale]').length === 1", timeout=10_000)
            assert clip.evaluate("v => v.loop && v.muted && v.autoplay") and int(clip.get_attribute("data-scale")) >= 4
            page.wait_for_selector(".message.assistant canvas.waveform[data-drawn=true]", timeout=10_000)
            body = sent_bodies[-1]
            assert body["stream"] is False and sorted(body["modalities"]) == ["audio", "text", "video"]
            assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
            assert {"type": "image_url", "image_url": {"url": first_image}} in body["messages"][1]["content"]
            assert body["messages"][0]["content"][0]["type"] == "image_url"  # the upload, by file id
            page.screenshot(path=str(shots / "chat_page_turn2.png"), full_page=True)

            # a file no modality reads is refused when picked; a readable type with unreadable bytes is refused by
            # the server at upload: one error line, the typed text stays in the composer
            notes = tmp_path / "notes.txt"
            notes.write_text("not media")
            page.set_input_files("#attach", str(notes))
            assert "notes.txt" in page.inner_text("#status") and page.inner_text("#attachments").strip() == ""
            broken = tmp_path / "broken.png"
            broken.write_bytes(b"not a png")
            page.set_input_files("#attach", str(broken))
            page.fill("#prompt", "and this?")
            page.click("#send")
            error = page.wait_for_selector(".message.error", timeout=10_000)
            assert "broken.png" in error.inner_text() and page.input_value("#prompt") == "and this?"
            assert page.locator(".message.user").count() == 2 and page.locator(".message.assistant").count() == 2
            problems = [p for p in problems if "400" not in p and "401" not in p]  # the browser logs refusals itself
            assert not problems, problems
            assert not outside, f"the page reached outside the server: {outside}"
        finally:
            browser.close()

    assert width == 32  # the tiny image decoder's 32x32 PNG, shown 256 px wide
    assert (shots / "chat_page.png").stat().st_size > 0
