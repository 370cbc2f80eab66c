"""VideoIO: MediaIO conformance, MP4/WebM/GIF reading, corrupt/oversized files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.testing.mixins import MediaIOTesterMixin
from nextgpt_video import media as video_media
from nextgpt_video.media import Video, VideoIO


def _blocks(t: int = 8, h: int = 32, w: int = 48) -> Video:
    """Black frames with a white bar moving 4 px per frame: survives H.264 yuv420p exactly (flat, 0/255 grey)."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        x0 = (i * 4) % w
        frames[i, :, x0 : x0 + 8] = 255
    return Video(frames=frames, fps=8.0)


def _encode(path: Path, video: Video, codec: str, fmt: str | None = None, pix_fmt: str = "yuv420p") -> Path:
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=Fraction(video.fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = video.frames.shape[2], video.frames.shape[1], pix_fmt
        for f in video.frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


class TestVideoIOConformance(MediaIOTesterMixin):
    io_class = VideoIO
    suffix = ".mp4"

    def get_dummy_media(self) -> Video:
        return _blocks()

    def assert_media_equal(self, a: Video, b: Video) -> None:
        assert a.fps == b.fps
        np.testing.assert_array_equal(a.frames, b.frames)


def test_example_moves() -> None:
    v = VideoIO().example()
    assert v.frames.dtype == np.uint8 and v.frames.shape == (16, 64, 96, 3) and v.fps == 8.0
    assert not np.array_equal(v.frames[0], v.frames[-1])


def test_example_roundtrips_closely(tmp_path: Path) -> None:
    io = VideoIO()
    v = io.example()
    back = io.read(io.write(v, tmp_path / "ex.mp4"))
    assert back.frames.shape == v.frames.shape and back.fps == v.fps
    assert np.abs(back.frames.astype(int) - v.frames).mean() < 2.0


def test_truncated_mp4(tmp_path: Path) -> None:
    path = VideoIO().write(VideoIO().example(), tmp_path / "cut.mp4")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MediaError, match="cut.mp4") as info:
        VideoIO().read(path)
    assert "\n" not in str(info.value)


def test_garbage_and_empty(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_text("not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ("junk.mp4", "empty.mp4"):
        with pytest.raises(MediaError, match=name):
            VideoIO().read(tmp_path / name)


def test_reads_webm_vp9(tmp_path: Path) -> None:
    v = _blocks(t=6)
    path = _encode(tmp_path / "x.webm", v, "libvpx-vp9", "webm")
    back = VideoIO().read(path)
    assert back.frames.shape == v.frames.shape and back.fps == pytest.approx(8.0)
    assert np.abs(back.frames.astype(int) - v.frames).mean() < 8


def test_reads_gif(tmp_path: Path) -> None:
    v = _blocks(t=5)
    path = tmp_path / "x.gif"
    images = [Image.fromarray(f) for f in v.frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)  # GIF delays are in 1/100 s
    back = VideoIO().read(path)
    assert back.frames.shape == v.frames.shape
    np.testing.assert_array_equal(back.frames, v.frames)
    assert back.fps == pytest.approx(10.0)


def test_frame_and_resolution_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = VideoIO().write(_blocks(), tmp_path / "long.mp4")
    monkeypatch.setattr(video_media, "MAX_FRAMES", 3)
    with pytest.raises(MediaError, match="long.mp4.*too long"):
        VideoIO().read(path)
    monkeypatch.setattr(video_media, "MAX_FRAMES", 100)
    monkeypatch.setattr(video_media, "MAX_FRAME_PIXELS", 100)
    with pytest.raises(MediaError, match="long.mp4.*limited"):
        VideoIO().read(path)


def test_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    v = Video(frames=np.full((3, 15, 21, 3), 255, np.uint8), fps=4.0)
    back = VideoIO().read(VideoIO().write(v, tmp_path / "odd.mp4"))
    assert back.frames.shape == (3, 16, 22, 3)


def test_fractional_fps_survives(tmp_path: Path) -> None:
    v = Video(frames=_blocks(t=4).frames, fps=30000 / 1001)
    back = VideoIO().read(VideoIO().write(v, tmp_path / "ntsc.mp4"))
    assert back.fps == pytest.approx(30000 / 1001, rel=1e-6)


def test_to_bytes_is_canonical() -> None:
    io = VideoIO()
    a, b = _blocks(), _blocks()
    assert io.to_bytes(a) == io.to_bytes(b)
    b.frames[0, 0, 0, 0] = 1
    assert io.to_bytes(a) != io.to_bytes(b)
    assert io.to_bytes(a) != io.to_bytes(Video(a.frames, 9.0))
    with pytest.raises(MediaError):
        io.to_bytes(Video(np.zeros((2, 4, 4), np.uint8), 8.0))


def test_same_frames_same_bytes(tmp_path) -> None:
    """Encoding is a function of the frames: x264's macroblock-tree lookahead (on by default) made two encodes of
    the same synthetic clip differ now and then in one process, so it is off (the settings x264 writes into the
    stream say so), and eight encodes give one byte string."""
    io = VideoIO()
    video = Video(frames=np.ascontiguousarray(io.example().frames[:8, 16:48, 16:48]), fps=8.0)
    blobs = {io.write(video, tmp_path / f"v{i}.mp4").read_bytes() for i in range(8)}
    assert len(blobs) == 1
    assert b"mbtree=0" in next(iter(blobs))
