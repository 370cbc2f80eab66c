"""ImageBind's vision preprocessing, without torchvision.

ImageBind (``imagebind/data.py::load_and_transform_vision_data``) applies, to ``Image.open(f).convert("RGB")``::

    Resize(224, interpolation=BICUBIC)  ->  CenterCrop(224)  ->  ToTensor()  ->  Normalize(CLIP mean, CLIP std)

:func:`preprocess_image` reproduces each step with PIL and torch, bit for bit:

- ``Resize(224)`` on a PIL image: the shorter side becomes ``224`` and the longer side ``int(224 * long / short)``
  (truncated), resampled by ``PIL.Image.resize(..., BICUBIC)`` (what torchvision calls for PIL input).
- ``CenterCrop(224)``: top ``int(round((h - 224) / 2))``, left ``int(round((w - 224) / 2))`` (Python rounding).
- ``ToTensor``: uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` divided by 255.
- ``Normalize``: ``(x - mean) / std`` with float32 CLIP mean ``(0.48145466, 0.4578275, 0.40821073)`` and std
  ``(0.26862954, 0.26130258, 0.27577711)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from nextgpt_core.errors import MediaError

__all__ = ["CLIP_MEAN", "CLIP_STD", "preprocess_image", "resize_shorter_side", "center_crop_box"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_shorter_side(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output ``(width, height)``: shorter side ``size``, longer side truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's ``CenterCrop(size)`` box ``(left, top, right, bottom)`` for an image at least ``size`` square."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def preprocess_image(image: Any, size: int = 224) -> torch.Tensor:
    """One image -> ImageBind vision input.

    Args:
        image: a ``PIL.Image.Image`` (any mode; converted to RGB like ImageBind) or a uint8 array ``(H, W, 3)``.
        size: output side (224 for ImageBind).

    Returns:
        float32 tensor ``(3, size, size)``, CLIP-normalised.

    Raises:
        MediaError: not an image, or an empty one.
    """
    if isinstance(image, Image.Image):
        img = image if image.mode == "RGB" else image.convert("RGB")
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise MediaError(f"preprocess_image expects a PIL image or a uint8 (H, W, 3) array, got {array.dtype} {array.shape}")
        img = Image.fromarray(array, "RGB")
    if img.width < 1 or img.height < 1:
        raise MediaError(f"cannot preprocess an empty {img.width}x{img.height} image")
    new_size = resize_shorter_side(img.width, img.height, size)
    if new_size != img.size:
        img = img.resize(new_size, Image.BICUBIC)
    img = img.crop(center_crop_box(img.width, img.height, size))
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(mean).div_(std)
