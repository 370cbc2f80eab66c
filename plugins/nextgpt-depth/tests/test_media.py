"""DepthIO: MediaIO conformance, 8/16-bit PNG, .npy, grey-as-RGB, colour and corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.testing.mixins import MediaIOTesterMixin
from nextgpt_depth import media as depth_media
from nextgpt_depth.media import DepthIO


class TestDepthIOConformancePNG(MediaIOTesterMixin):
    io_class = DepthIO
    suffix = ".png"

    def get_dummy_media(self) -> np.ndarray:
        return DepthIO().example()


class TestDepthIOConformanceNPY(MediaIOTesterMixin):
    io_class = DepthIO
    suffix = ".npy"

    def get_dummy_media(self) -> np.ndarray:
        return DepthIO().example() / 1000.0 + 0.0005  # metres, not integers: .npy keeps float32 exactly


def test_example_is_integer_millimetres() -> None:
    d = DepthIO().example()
    assert d.dtype == np.float32 and d.shape == (48, 64)
    assert np.array_equal(d, np.rint(d)) and d.min() >= 1000 and d.max() <= 4000


def test_png_is_16_bit(tmp_path: Path) -> None:
    path = DepthIO().write(DepthIO().example(), tmp_path / "d.png")
    with Image.open(path) as img:
        assert img.mode.startswith("I;16") or img.mode == "I"
        assert np.asarray(img).max() == 4000


def test_reads_8_bit_and_grey_rgb(tmp_path: Path) -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB").save(tmp_path / "rgb.png")
    for name in ("l.png", "rgb.png"):
        d = DepthIO().read(tmp_path / name)
        assert d.dtype == np.float32 and d.shape == (6, 8)
        np.testing.assert_array_equal(d, grey.astype(np.float32))


def test_colour_png_is_rejected(tmp_path: Path) -> None:
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb, "RGB").save(tmp_path / "colourmap.png")
    with pytest.raises(MediaError, match="colourmap.png.*single-channel"):
        DepthIO().read(tmp_path / "colourmap.png")


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "depth.png"
    path.write_text("0 1 2\n3 4 5\n")
    with pytest.raises(MediaError, match="depth.png") as info:
        DepthIO().read(path)
    assert "\n" not in str(info.value)


def test_bad_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(MediaError, match="cube.npy"):
        DepthIO().read(tmp_path / "cube.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MediaError, match="obj.npy"):
        DepthIO().read(tmp_path / "obj.npy")


def test_png_write_rounds_and_clips(tmp_path: Path) -> None:
    d = np.array([[-5.0, 1.4, 1.6], [70000.0, np.nan, 2.0]], np.float32)
    back = DepthIO().read(DepthIO().write(d, tmp_path / "r.png"))
    np.testing.assert_array_equal(back, np.array([[0, 1, 2], [65535, 0, 2]], np.float32))


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DepthIO().write(DepthIO().example(), tmp_path / "big.png")
    monkeypatch.setattr(depth_media, "MAX_PIXELS", 10)
    with pytest.raises(MediaError, match="big.png.*limited"):
        DepthIO().read(path)


def test_to_bytes_canonical() -> None:
    io = DepthIO()
    d = io.example()
    assert io.to_bytes(d) == io.to_bytes(d.astype(np.float64)) == io.to_bytes(d[..., None])
    assert io.to_bytes(d) != io.to_bytes(d.T.copy())
