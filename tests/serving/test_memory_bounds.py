"""Memory is bounded before the work: a tiny file that would decode to gigabytes is refused from what its container
reports, and the process that refuses it does not grow (peak RSS measured in a child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _black_video(path: Path, width: int, height: int, frames: int, fps: int) -> Path:
    """An H.264 MP4 of black frames, encoded frame by frame (a few KB; gigabytes once decoded)."""
    import av
    import numpy as np

    black = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            black.pts = i
            for packet in stream.encode(black):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def hd_video(tmp_path_factory) -> Path:
    """1080p, 10 s at 10 fps: about 10 KB on disk, 622 MB of RGB frames decoded."""
    return _black_video(tmp_path_factory.mktemp("hd") / "hd.mp4", 1920, 1080, 100, 10)


_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from types import SimpleNamespace
    from fastapi.testclient import TestClient
    from nextgpt_registry import Registry, resolve_target
    from nextgpt_core.plugins import DEFAULT_PLUGINS
    from nextgpt_core.serving import ServeConfig, create_app

    def peak_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    class Readers:
        def __init__(self, registry):
            self.registry = registry
            self._io = {k: resolve_target(s.media_io)() for k, s in registry.modalities.items()}
            self.composition = SimpleNamespace(name="readers", generation=SimpleNamespace(max_new_tokens=8))
        def input_modalities(self): return list(self.registry.modalities)
        def output_modalities(self): return []
        def media_io(self, key): return self._io[key]

    video, media_dir = Path(sys.argv[1]), sys.argv[2]
    app = create_app(Readers(Registry.load(DEFAULT_PLUGINS, allow=["video"])), ServeConfig(media_dir=media_dir))
    with TestClient(app) as client:
        client.get("/health")
        before = peak_mib()
        with open(video, "rb") as fh:
            response = client.post("/v1/files", files={"file": ("hd.mp4", fh, "video/mp4")}, data={"purpose": "user_data"})
        after = peak_mib()
    print(json.dumps({"status": response.status_code, "body": response.json(), "grew_mib": after - before}))
""")


def test_a_small_file_that_decodes_to_gigabytes_is_refused_before_decoding(hd_video, tmp_path):
    assert hd_video.stat().st_size < 100_000
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "video", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(hd_video), str(tmp_path / "media")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 413, result
    assert "would take 593 MiB once decoded; the limit is 512 MiB per media input" in result["body"]["error"]["message"]
    # decoding it (the old way: every frame, then a stacked copy) grew the process by over 1 GB
    assert result["grew_mib"] < 100, result


def test_the_reader_refuses_from_the_container_before_decoding(hd_video, monkeypatch):
    from nextgpt_video import media as video_media
    from nextgpt_video.media import VideoIO

    from nextgpt_core.errors import MediaError

    extent = VideoIO().probe(hd_video)
    assert (extent.seconds, extent.pixels, extent.decoded_bytes) == (10.0, 1920 * 1080, 100 * 1920 * 1080 * 3)
    monkeypatch.setattr(video_media, "MAX_DECODED_BYTES", 100 << 20)
    decoded = []
    real = video_media.np.empty
    monkeypatch.setattr(video_media.np, "empty", lambda *a, **k: decoded.append(a) or real(*a, **k))
    with pytest.raises(MediaError, match=r"its container reports about 100 frames of 1920x1080 \(0.6 GiB decoded\)"):
        VideoIO().read(hd_video)
    assert decoded == [], "a frame buffer was allocated before the limit was checked"


def test_uploads_take_an_admission_slot(media_registry, make_client):
    """`POST /v1/files` decodes the file: it is admitted like a chat request, so a full server answers 429."""
    from .conftest import ReaderOnlyModel
    from .media_samples import png_bytes

    client = make_client(ReaderOnlyModel(media_registry), workers=1, max_queue=0)
    engine = client.app.state.engine
    held = engine.admit()
    full = client.post("/v1/files", files={"file": ("a.png", png_bytes(), "image/png")})
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    held.release()
    ok = client.post("/v1/files", files={"file": ("a.png", png_bytes(), "image/png")})
    assert ok.status_code == 200, ok.text
    assert engine.stats()["waiting"] == 0
    again = engine.admit()  # the upload gave its slot back (capacity 1: this would be a 429 otherwise)
    again.release()
