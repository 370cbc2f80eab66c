"""The chat page at /ui, end to end: a real `nextgpt serve` on a free port, Debian's headless Chromium driven by
Playwright. Turn 1 types a prompt, attaches a picture, asks for an image, and checks the streamed reply shows an
<img> served from /v1/files with a non-zero natural width. Turn 2 (not streamed) asks for video and audio and
checks that the browser can play them, and that the request carried the history with the generated image by file
id. Screenshots are saved next to the test's files (or in $NEXTGPT_SCREENSHOTS).

Under CI (CI=true) a missing browser or Playwright fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.subprocess  # runs `nextgpt serve` in a child process

CHROMIUM = Path(os.environ.get("NEXTGPT_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    """`nextgpt serve` on `tiny` with the real image, video and audio plugins; yields its base URL, stops it afterwards."""
    port = _free_port()
    env = dict(os.environ, NEXTGPT_LOAD_PLUGINS="image,video,audio", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextgpt_core.cli", "serve", "--composition", "tiny", "--port", str(port),
         "--media-dir", str(tmp_path / "media"), "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}): {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as answer:
                    if json.load(answer)["status"] == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /health in 45 s: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
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
            page.wait_for_selector("body[data-ready=true]", timeout=10_000)
            assert "tiny" in page.inner_text("#model")
            page.fill("#prompt", "What is in this picture? Then draw one like it.")
            page.set_input_files("#attach", str(picture))
            assert page.inner_text("#attachments").strip().startswith("gradient.png")
            page.check("#want-image")
            assert page.is_checked("#stream")
            page.click("#send")

            # the reply: streamed into an assistant bubble, then an <img> from /v1/files that the browser decoded
            page.wait_for_selector(".message.assistant:not(.pending) .meta", timeout=40_000)
            image = page.locator(".message.assistant img[data-modality=image]").first
            src = image.get_attribute("src")
            assert src.startswith("/v1/files/file-") and src.endswith("/content"), src
            page.wait_for_function(
                "() => { const i = document.querySelector('.message.assistant img'); return i && i.complete && i.naturalWidth > 0; }",
                timeout=10_000,
            )
            width = image.evaluate("img => img.naturalWidth")
            # the user's picture went up through /v1/files too, and shows in the user's bubble
            sent = page.locator(".message.user img[data-modality=image]").first
            assert sent.get_attribute("src").startswith("/v1/files/file-")
            assert sent.evaluate("img => img.naturalWidth") == 64
            first_image = src.split("/")[3]
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
                assert player.get_attribute("src").startswith("/v1/files/file-")
                player.evaluate("el => new Promise((ok, bad) => { if (el.readyState >= 1) ok(); "
                                "el.onloadedmetadata = ok; el.onerror = () => bad(new Error('cannot play ' + el.src)); })")
                assert player.evaluate("el => el.duration") > 0, kind
            body = sent_bodies[-1]
            assert body["stream"] is False and sorted(body["modalities"]) == ["audio", "text", "video"]
            assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
            refed = [part["media"] for part in body["messages"][1]["content"] if part["type"] == "media"]
            assert {"modality": "image", "file_id": first_image} in refed
            page.screenshot(path=str(shots / "chat_page_turn2.png"), full_page=True)

            # a file no modality reads: the upload is refused, one error shows, the text stays in the composer
            notes = tmp_path / "notes.txt"
            notes.write_text("not media")
            page.set_input_files("#attach", str(notes))
            page.fill("#prompt", "and this?")
            page.click("#send")
            error = page.wait_for_selector(".message.error", timeout=10_000)
            assert "notes.txt" in error.inner_text() and page.input_value("#prompt") == "and this?"
            assert page.locator(".message.user").count() == 2 and page.locator(".message.assistant").count() == 2
            problems = [p for p in problems if "415" not in p]  # the browser logs the refused upload itself
            assert not problems, problems
            assert not outside, f"the page reached outside the server: {outside}"
        finally:
            browser.close()

    assert width == 32  # the tiny image decoder's 32x32 PNG
    assert (shots / "chat_page.png").stat().st_size > 0
