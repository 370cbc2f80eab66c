"""Depth preprocessing for ImageBind's depth branch.

ImageBind ships **no** depth transform: its repository (``imagebind/data.py``) has loaders for vision, text, audio
and video only; the model fixes the input as one channel ``[1, 224, 224]`` (``imagebind_model.py``: depth
``RGBDTPreprocessor(img_size=[1, 224, 224])``, ``Conv2d(in_channels=1, kernel_size=16)``). The paper says depth is
converted to **disparity** for scale normalisation, and the conversion its authors point to (ImageBind issue #69
-> Omnivore issue #12, used for SUN RGB-D / NYU-D) is::

    depth_m   = depth / 1000                       # Kinect/SUN RGB-D 16-bit PNGs store millimetres
    depth_m   = clip(depth_m, 0.01, 50)
    disparity = baseline * focal_length / depth_m  # Kinect v1: baseline 0.075 m, focal 518.857901 px

That is the closest documented convention, and what :func:`preprocess_depth` does, followed by the spatial
handling ImageBind uses for images: resize the shorter side to 224 and center-crop 224 (bilinear, antialiased when
shrinking — depth is a smooth field; bicubic would overshoot at edges). No mean/std normalisation is documented
for the disparity input, so none is applied. Pixels with no measurement (0) become the farthest disparity
(``baseline * focal / 50``), as the clip implies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nextgpt_core.errors import MediaError

__all__ = ["KINECT_V1_BASELINE", "KINECT_V1_FOCAL", "depth_to_disparity", "preprocess_depth"]

KINECT_V1_BASELINE = 0.075
KINECT_V1_FOCAL = 518.857901


def depth_to_disparity(
    depth: Any,
    *,
    depth_scale: float = 1000.0,
    baseline: float = KINECT_V1_BASELINE,
    focal_length: float = KINECT_V1_FOCAL,
    min_depth: float = 0.01,
    max_depth: float = 50.0,
) -> np.ndarray:
    """float32 ``(H, W)`` depth in file units (``depth_scale`` units per metre) -> float32 ``(H, W)`` disparity."""
    array = np.asarray(depth, dtype=np.float64)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise MediaError(f"a depth map must be (H, W), got {np.asarray(depth).shape}")
    metres = np.nan_to_num(array / depth_scale, nan=0.0, posinf=max_depth, neginf=0.0)
    metres = np.clip(metres, min_depth, max_depth)
    return (baseline * focal_length / metres).astype(np.float32)


def preprocess_depth(
    depth: Any,
    size: int = 224,
    *,
    depth_scale: float = 1000.0,
    baseline: float = KINECT_V1_BASELINE,
    focal_length: float = KINECT_V1_FOCAL,
    is_disparity: bool = False,
) -> torch.Tensor:
    """One depth map -> ImageBind depth input.

    Args:
        depth: float ``(H, W)`` (or ``(H, W, 1)``) depth in file units, e.g. millimetres from a 16-bit PNG.
        size: output side (224).
        depth_scale: file units per metre (1000 for millimetres, 1 for metres).
        baseline, focal_length: the stereo constants of the disparity conversion (Kinect v1 by default).
        is_disparity: ``depth`` already holds disparity; only resize/crop it.

    Returns:
        float32 ``(1, size, size)`` disparity.
    """
    if is_disparity:
        disparity = np.asarray(depth, dtype=np.float32)
        if disparity.ndim == 3 and disparity.shape[2] == 1:
            disparity = disparity[..., 0]
        if disparity.ndim != 2 or disparity.size == 0:
            raise MediaError(f"a disparity map must be (H, W), got {disparity.shape}")
    else:
        disparity = depth_to_disparity(depth, depth_scale=depth_scale, baseline=baseline, focal_length=focal_length)
    h, w = disparity.shape
    new_h, new_w = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    x = torch.from_numpy(np.ascontiguousarray(disparity))[None, None]
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=new_h < h)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return x[0, :, top : top + size, left : left + size].contiguous()
