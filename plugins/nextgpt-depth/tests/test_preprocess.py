"""preprocess_depth: depth (mm) -> disparity (Omnivore/ImageBind convention) -> shorter side 224 -> center crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextgpt_core.errors import MediaError
from nextgpt_depth.preprocess import KINECT_V1_BASELINE, KINECT_V1_FOCAL, depth_to_disparity, preprocess_depth

BF = KINECT_V1_BASELINE * KINECT_V1_FOCAL


def test_shape_and_constant_depth() -> None:
    out = preprocess_depth(np.full((480, 640), 2000.0, np.float32))  # 2 m everywhere
    assert out.shape == (1, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 224, 224), BF / 2.0), rtol=1e-6, atol=0)


def test_disparity_conversion_and_clipping() -> None:
    d = np.array([[1000.0, 4000.0], [0.0, 1e9]])
    disp = depth_to_disparity(d)
    np.testing.assert_allclose(disp, [[BF / 1.0, BF / 4.0], [BF / 0.01, BF / 50.0]], rtol=1e-6)
    np.testing.assert_allclose(depth_to_disparity(d / 1000.0, depth_scale=1.0), disp, rtol=1e-6)


def test_nearer_is_larger_and_crop_is_central() -> None:
    depth = np.full((224, 448), 4000.0, np.float32)
    depth[:, 112:336] = 1000.0  # the middle half is near: the center crop must see only it
    out = preprocess_depth(depth)
    torch.testing.assert_close(out, torch.full((1, 224, 224), BF / 1.0), rtol=1e-6, atol=0)


def test_portrait_and_small_maps() -> None:
    assert preprocess_depth(np.full((300, 120), 1500.0, np.float32)).shape == (1, 224, 224)
    assert preprocess_depth(np.full((10, 10, 1), 1500.0, np.float32)).shape == (1, 224, 224)


def test_already_disparity() -> None:
    disp = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    torch.testing.assert_close(preprocess_depth(disp, is_disparity=True)[0], torch.from_numpy(disp), rtol=0, atol=0)


def test_bad_input() -> None:
    with pytest.raises(MediaError):
        preprocess_depth(np.zeros((2, 3, 4), np.float32))
