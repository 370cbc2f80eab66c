"""ImageIO: MediaIO conformance, formats, corrupt/oversized files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.testing.mixins import MediaIOTesterMixin
from nextgpt_image import media as image_media
from nextgpt_image.media import ImageIO


class TestImageIOConformance(MediaIOTesterMixin):
    io_class = ImageIO
    suffix = ".png"

    def get_dummy_media(self) -> Image.Image:
        return ImageIO().example()

    def assert_media_equal(self, a: Image.Image, b: Image.Image) -> None:
        assert a.mode == b.mode == "RGB" and a.size == b.size
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_example_has_structure() -> None:
    img = ImageIO().example()
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (64, 96, 3) and len(np.unique(arr.reshape(-1, 3), axis=0)) > 100


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("WEBP", ".webp"), ("PNG", ".png")])
def test_reads_jpeg_webp_png(tmp_path: Path, fmt: str, suffix: str) -> None:
    src = ImageIO().example()
    path = tmp_path / f"x{suffix}"
    src.save(path, format=fmt, quality=95)
    img = ImageIO().read(path)
    assert img.mode == "RGB" and img.size == src.size
    assert np.abs(np.asarray(img, dtype=int) - np.asarray(src, dtype=int)).mean() < 4


def test_rgba_and_grey_become_rgb(tmp_path: Path) -> None:
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "a.png")
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    a = ImageIO().read(tmp_path / "a.png")
    g = ImageIO().read(tmp_path / "g.png")
    assert a.mode == g.mode == "RGB"
    assert np.asarray(a)[0, 0].tolist() == [10, 20, 30]  # alpha dropped as PIL convert("RGB") does (ImageBind)
    assert np.asarray(g)[0, 0].tolist() == [77, 77, 77]


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(MediaError, match="notes.png") as info:
        ImageIO().read(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    ImageIO().example().resize((400, 300)).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MediaError, match="cut.jpg"):
        ImageIO().read(path)


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "x.bmp"
    ImageIO().example().save(path, format="BMP")
    with pytest.raises(MediaError, match="x.bmp"):
        ImageIO().read(path)


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ImageIO().write(ImageIO().example(), tmp_path / "big.png")
    monkeypatch.setattr(image_media, "MAX_PIXELS", 100)
    with pytest.raises(MediaError, match="big.png.*limited"):
        ImageIO().read(path)


def test_write_accepts_array_and_to_bytes_is_canonical(tmp_path: Path) -> None:
    arr = np.asarray(ImageIO().example())
    io = ImageIO()
    path = io.write(arr, tmp_path / "arr.png")
    assert io.to_bytes(arr) == io.to_bytes(Image.fromarray(arr)) == io.to_bytes(io.read(path))
    assert io.to_bytes(arr).startswith(b"RGB 96x64\n")
    other = arr.copy()
    other[0, 0, 0] ^= 1
    assert io.to_bytes(other) != io.to_bytes(arr)
