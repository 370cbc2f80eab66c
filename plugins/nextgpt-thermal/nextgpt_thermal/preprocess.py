"""Thermal preprocessing for ImageBind's thermal branch.

ImageBind ships **no** thermal transform: its repository (``imagebind/data.py``) loads vision, text, audio and video
only, and the model fixes the input as one channel ``[1, 224, 224]`` (``imagebind_model.py``: thermal
``ThermalPreprocessor(img_size=[1, 224, 224])``, ``Conv2d(in_channels=1, kernel_size=16, stride=16)``). The paper
(appendix A.1) says it uses "a single-channel image for the thermal data since it is the natural form in which
current infrared thermal sensors return data" (LLVIP, 8-14 um). So :func:`preprocess_thermal` applies what
ImageBind applies to pictures, on that one channel:

    intensity = values / 255 (8-bit) or / 65535 (16-bit)     # torchvision ToTensor's scaling; float kept as is
    shorter side -> 224 (bicubic), centre crop 224x224        # load_and_transform_vision_data's Resize, CenterCrop

and no mean / std normalisation (none is documented for thermal; the CLIP statistics are for RGB). The resize runs
on the float intensities (PIL mode ``F``), not on 8-bit values, so nothing is rounded, and clips bicubic's overshoot
to 0..1 as an 8-bit resize clips to 0..255; against a Resize on the 8-bit image followed by ToTensor the difference
is at most 1.5 8-bit steps on smooth scenes (PIL rounds after each of its two passes; tested). Raw radiometric 16-bit counts
fill only part of 0..65535: ``normalize = "min_max"`` stretches each image to 0..1 instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from nextgpt_core.errors import MediaError

__all__ = ["intensities", "preprocess_thermal"]


def intensities(image: Any, normalize: str = "full_range") -> np.ndarray:
    """``(H, W)`` (or ``(H, W, 1)``) thermal values -> float32 ``(H, W)`` intensities.

    ``normalize``: ``"full_range"`` divides ``uint8`` by 255 and ``uint16`` by 65535 and keeps floats as they are;
    ``"min_max"`` maps each image's own minimum to 0 and maximum to 1 (a constant image becomes 0).
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0 or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise MediaError(f"a thermal image must be a real (H, W) array, got {array.dtype} {array.shape}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise MediaError("a thermal image holds NaN or infinity")
    if normalize == "min_max":
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    if normalize != "full_range":
        raise ValueError(f"normalize must be 'full_range' or 'min_max', got {normalize!r}")
    if array.dtype == np.uint8:
        return values / 255.0
    if array.dtype == np.uint16:
        return values / 65535.0
    return values


def preprocess_thermal(image: Any, size: int = 224, *, normalize: str = "full_range") -> torch.Tensor:
    """One thermal image -> ImageBind thermal input, float32 ``(1, size, size)``.

    Args:
        image: ``(H, W)`` ``uint8`` / ``uint16`` / float values (what :class:`~nextgpt_thermal.media.ThermalIO` reads).
        size: output side (224; the toy world's 32).
        normalize: see :func:`intensities`.
    """
    values = intensities(image, normalize)
    bounded = normalize == "min_max" or np.issubdtype(np.asarray(image).dtype, np.integer)
    h, w = values.shape
    # torchvision's Resize(size) on the shorter side: the longer one is int(size * long / short)
    new_h, new_w = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    if (new_h, new_w) != (h, w):
        values = np.asarray(Image.fromarray(values, mode="F").resize((new_w, new_h), Image.BICUBIC), dtype=np.float32)
        if bounded:  # bicubic overshoots at edges; an 8-bit resize clips to 0..255, so clip to 0..1 here
            values = np.clip(values, 0.0, 1.0)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return torch.from_numpy(np.ascontiguousarray(values[top : top + size, left : left + size]))[None]
