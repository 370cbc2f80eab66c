"""docs/serving.md's curl and OpenAI-SDK examples, run against a live `nextgpt serve` (the real command, in a
child process, `tiny` with the image plugin) on a free port. Also checks the command's start-up and shutdown."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nextgpt_core.testing.servers import free_port, wait_for_health
from .media_samples import png_bytes

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "serving.md"
EXAMPLE = re.compile(r"<!-- example: (curl|python) -->\n```(?:sh|python)\n(.*?)```", re.S)

pytestmark = pytest.mark.subprocess


def examples(kind: str) -> list[str]:
    found = [code for k, code in EXAMPLE.findall(DOC.read_text()) if k == kind]
    assert found, f"no {kind} examples in {DOC}"
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`nextgpt serve --composition tiny --host 127.0.0.1 --port <free>` in a child process."""
    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    exe = Path(sys.executable).with_name("nextgpt")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "nextgpt_core.cli"]
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "image", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(folder / "server.log", "w+")
    process = subprocess.Popen(
        [*command, "serve", "--composition", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--media-dir", str(folder / "media"), "--workers", "2"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base, process, timeout=180, log=folder / "server.log")
    work = folder / "work"
    work.mkdir()
    (work / "picture.png").write_bytes(png_bytes(48, 40))
    yield {"base": base, "port": port, "work": work, "media": folder / "media"}
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=30) == 0, "nextgpt serve did not exit cleanly on Ctrl-C"
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def run(command: list[str], served: dict, code: str) -> str:
    result = subprocess.run(command, input=code.replace("127.0.0.1:8000", f"127.0.0.1:{served['port']}"), cwd=served["work"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"example failed ({result.returncode}):\n{code}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-2000:]}"
    return result.stdout


def test_the_command_serves_the_composition(served):
    models = httpx.get(f"{served['base']}/v1/models").json()
    assert models["data"][0]["id"] == "tiny" and models["data"][0]["output_modalities"] == ["text", "image"]


def test_curl_examples(served):
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed: the curl examples of docs/serving.md cannot be checked (apt-get install curl)")
    first, second = examples("curl")
    out = run(["bash", "-e"], served, first)
    assert '"status":"ok"' in out and '"id":"tiny"' in out
    for name in ("generated.png", "circle.png"):
        assert (served["work"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    out = run(["bash", "-e"], served, second)
    assert '"object":"chat.completion"' in out and '"object":"chat.completion.chunk"' in out
    assert '"modality":"image"' in out and '"image_url":{"url":"http://127.0.0.1:' in out
    assert '"choices":[],"usage":{"prompt_tokens":' in out  # stream_options.include_usage
    assert '"deleted":true' in out and '"object":"list"' in out


def test_openai_sdk_examples(served):
    first, second = examples("python")
    out = run([sys.executable, "-"], served, first)
    assert "model: tiny" in out and re.search(r"saved image image/png \d+ bytes", out)
    assert re.search(r"usage: \d+ \+ \d+ = \d+", out) and re.search(r"second reply: (stop|length) \d+ prompt tokens", out)
    assert "images: [True, True]" in out
    assert (served["work"] / "drawn.png").read_bytes()[:4] == b"\x89PNG"
    out = run([sys.executable, "-"], served, second)
    assert re.search(r"uploaded: file-[0-9a-f]{32} image", out)
    assert "media ready: http://127.0.0.1:" in out and re.search(r"finish: (stop|length) seed: 3", out)
    assert re.search(r"usage: \d+", out) and "left: [" in out
    uploaded = re.search(r"uploaded: (file-[0-9a-f]{32})", out).group(1)
    assert uploaded not in out.split("left:")[1]  # deleted
    # everything the examples wrote on the server side is inside its media folder
    assert len(list(served["media"].glob("file-*.json"))) >= 6
