"""ThermalIO: MediaIO conformance for 8-bit PNG, 16-bit PNG and .npy; TIFF, grey JPEG, colour and corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_core.testing.mixins import MediaIOTesterMixin
from nextgpt_thermal import media as thermal_media
from nextgpt_thermal.media import ThermalIO

SIXTEEN = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 13 + 27000).astype(np.uint16)  # radiometric-like


class TestThermalIO8Bit(MediaIOTesterMixin):
    io_class = ThermalIO
    suffix = ".png"

    def get_dummy_media(self):
        return ThermalIO().example()


class TestThermalIO16Bit(MediaIOTesterMixin):
    io_class = ThermalIO
    suffix = ".png"

    def get_dummy_media(self):
        return SIXTEEN.copy()


class TestThermalIONpy(MediaIOTesterMixin):
    io_class = ThermalIO
    suffix = ".npy"

    def get_dummy_media(self):
        return np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)


def test_bit_depth_is_kept(tmp_path: Path) -> None:
    io = ThermalIO()
    assert io.read(io.write(io.example(), tmp_path / "a.png")).dtype == np.uint8
    back = io.read(io.write(SIXTEEN, tmp_path / "b.png"))
    assert back.dtype == np.uint16 and np.array_equal(back, SIXTEEN)
    Image.fromarray(SIXTEEN).save(tmp_path / "c.tif")
    assert np.array_equal(io.read(tmp_path / "c.tif"), SIXTEEN)


def test_grey_jpeg_saved_as_rgb_is_read_as_one_channel(tmp_path: Path) -> None:
    grey = ThermalIO().example()
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB").save(tmp_path / "llvip.jpg", quality=95)
    back = ThermalIO().read(tmp_path / "llvip.jpg")
    assert back.dtype == np.uint8 and back.shape == grey.shape
    assert np.abs(back.astype(int) - grey.astype(int)).mean() < 3  # JPEG loss only


def test_colour_image_is_refused(tmp_path: Path) -> None:
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200  # an "ironbow" false-colour rendering cannot be inverted
    Image.fromarray(rgb, "RGB").save(tmp_path / "ironbow.png")
    with pytest.raises(MediaError, match="ironbow.png.*colour") as info:
        ThermalIO().read(tmp_path / "ironbow.png")
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "text.png").write_text("not an image\n")
    with pytest.raises(MediaError, match="text.png"):
        ThermalIO().read(tmp_path / "text.png")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(MediaError, match="cube.npy"):
        ThermalIO().read(tmp_path / "cube.npy")
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(MediaError, match="nan.npy.*NaN"):
        ThermalIO().read(tmp_path / "nan.npy")
    Image.new("L", (8, 8)).save(tmp_path / "pic.gif")
    with pytest.raises(MediaError, match="GIF"):
        ThermalIO().read(tmp_path / "pic.gif")
    path = ThermalIO().write(ThermalIO().example(), tmp_path / "big.png")
    monkeypatch.setattr(thermal_media, "MAX_PIXELS", 10)
    with pytest.raises(MediaError, match="big.png.*limited"):
        ThermalIO().read(path)


def test_to_bytes_tells_bit_depths_apart() -> None:
    io = ThermalIO()
    eight = io.example()
    assert io.to_bytes(eight) == io.to_bytes(eight[..., None])
    assert io.to_bytes(eight) != io.to_bytes(eight.astype(np.uint16))
    assert io.to_bytes(eight) != io.to_bytes(eight.T.copy())
