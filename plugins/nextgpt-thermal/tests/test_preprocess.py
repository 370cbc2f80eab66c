"""preprocess_thermal: the vision transform on one channel (shorter side 224 bicubic, centre crop), ToTensor scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nextgpt_core.errors import MediaError
from nextgpt_thermal.preprocess import intensities, preprocess_thermal


def test_shape_and_full_range_scaling() -> None:
    out = preprocess_thermal(np.full((480, 640), 51, np.uint8))
    assert out.shape == (1, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 224, 224), 51 / 255), rtol=1e-5, atol=1e-6)
    sixteen = preprocess_thermal(np.full((480, 640), 13107, np.uint16))
    torch.testing.assert_close(sixteen, torch.full((1, 224, 224), 0.2), rtol=1e-5, atol=1e-6)


def test_matches_resize_of_the_8_bit_image_then_to_tensor() -> None:
    """Against ImageBind's picture order (PIL Resize on the 8-bit image, CenterCrop, ToTensor): within 1.5 8-bit steps
    on a thermal-like scene (smooth warm bodies; on pixel noise PIL's 8-bit resize also clips between its passes)."""
    y, x = np.mgrid[0:300, 0:400].astype(np.float64)
    scene = 40 + 0.1 * y + 170 * np.exp(-(((x - 120) / 30) ** 2 + ((y - 150) / 60) ** 2)) + 90 * np.exp(-(((x - 300) / 15) ** 2 + ((y - 80) / 15) ** 2))
    image = np.clip(np.rint(scene), 0, 255).astype(np.uint8)
    ours = preprocess_thermal(image)[0].numpy()
    pil = Image.fromarray(image, "L").resize((298, 224), Image.BICUBIC)  # int(224 * 400 / 300) = 298
    left = int(round((298 - 224) / 2.0))
    reference = np.asarray(pil, dtype=np.float32)[:, left : left + 224] / 255.0
    assert np.abs(ours - reference).max() <= 1.5 / 255  # PIL rounds to 8 bits after each of its two passes


def test_centre_crop_keeps_the_middle() -> None:
    image = np.zeros((224, 448), np.uint8)
    image[:, 112:336] = 200  # the middle half is hot: the centre crop must see only it
    torch.testing.assert_close(preprocess_thermal(image), torch.full((1, 224, 224), 200 / 255), rtol=1e-5, atol=1e-6)


def test_min_max_stretches_raw_counts() -> None:
    raw = np.array([[27000, 28000], [29000, 31000]], np.uint16)
    np.testing.assert_allclose(intensities(raw, "min_max"), [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(intensities(np.full((3, 3), 7, np.uint16), "min_max"), np.zeros((3, 3)))


def test_bad_input() -> None:
    with pytest.raises(MediaError):
        preprocess_thermal(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(MediaError, match="NaN"):
        preprocess_thermal(np.full((4, 4), np.nan, np.float32))
