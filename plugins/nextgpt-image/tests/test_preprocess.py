"""preprocess_image == ImageBind's Resize(224, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize(CLIP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nextgpt_image.preprocess import CLIP_MEAN, CLIP_STD, center_crop_box, preprocess_image, resize_shorter_side

MEAN = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
STD = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)


def _reference(image: Image.Image, size: int = 224) -> torch.Tensor:
    """Hand-written ImageBind pipeline (torchvision semantics spelt out with PIL + numpy)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    arr = np.asarray(image)[top : top + size, left : left + size]
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    return (x - MEAN) / STD


def _random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_flat_colour_gives_normalised_colour_everywhere() -> None:
    colour = (200, 30, 90)
    out = preprocess_image(Image.new("RGB", (320, 240), colour))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = (torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255 - MEAN) / STD
    torch.testing.assert_close(out, expected.expand(3, 224, 224), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(224, 300), (300, 224), (640, 480), (97, 131), (225, 500), (1000, 227)])
def test_matches_hand_reference(size: tuple[int, int]) -> None:
    img = _random_image(*size)
    torch.testing.assert_close(preprocess_image(img), _reference(img), rtol=0, atol=0)


def test_matches_transformers_clip_processor() -> None:
    from transformers import CLIPImageProcessorPil

    proc = CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=Image.BICUBIC,
        image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    img = _random_image(333, 250, seed=3)
    theirs = torch.as_tensor(np.asarray(proc(img, return_tensors="np")["pixel_values"][0]))
    assert (preprocess_image(img) - theirs).abs().max() < 1e-5


def test_resize_and_crop_geometry() -> None:
    assert resize_shorter_side(640, 480, 224) == (298, 224)
    assert resize_shorter_side(480, 640, 224) == (224, 298)
    assert center_crop_box(225, 224, 224) == (0, 0, 224, 224)  # round(0.5) == 0 (Python rounding, as torchvision)
    assert center_crop_box(227, 224, 224) == (2, 0, 226, 224)  # round(1.5) == 2


def test_center_crop_keeps_the_middle() -> None:
    arr = np.zeros((224, 448, 3), np.uint8)
    arr[:, 112:336] = 255  # the middle half is white: the crop must be all white
    out = preprocess_image(arr)
    white = (1.0 - MEAN) / STD
    torch.testing.assert_close(out, white.expand(3, 224, 224), rtol=0, atol=0)


def test_non_rgb_inputs() -> None:
    grey = Image.new("L", (256, 256), 128)
    torch.testing.assert_close(preprocess_image(grey), preprocess_image(grey.convert("RGB")), rtol=0, atol=0)
