"""preprocess_video == ImageBind's load_and_transform_video_data (clip timing, frame picks, scale, crops)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from nextgpt_core.errors import MediaError
from nextgpt_video.media import Video
from nextgpt_video.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    clip_frame_indices,
    clip_timepoints,
    preprocess_video,
    spatial_crop_offsets,
)

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def _indexed(t: int, fps: float, h: int = 12, w: int = 18) -> Video:
    """Frame i is flat grey with value 2*i (so the picked frame index can be read back from the output)."""
    frames = np.broadcast_to((2 * np.arange(t, dtype=np.uint8))[:, None, None, None], (t, h, w, 3)).copy()
    return Video(frames=frames, fps=fps)


def _picked_indices(out: torch.Tensor) -> list[list[int]]:
    """Invert the normalisation of the red channel at the center pixel -> frame indices per clip (crop 1)."""
    red = out[1::3, 0, :, 112, 112] * CLIP_STD[0] + CLIP_MEAN[0]  # (clips, 2)
    return (red * 255 / 2).round().long().tolist()


def test_shape_and_dtype() -> None:
    out = preprocess_video(_indexed(80, 8.0))
    assert out.shape == (15, 3, 2, 224, 224) and out.dtype == torch.float32


def test_ten_second_video_frames_per_clip() -> None:
    # 80 frames at 8 fps = 10 s: starts 0,2,4,6,8; clip i holds frames [16i, 16i+16); first and last are kept
    assert _picked_indices(preprocess_video(_indexed(80, 8.0))) == [[16 * i, 16 * i + 15] for i in range(5)]


def test_six_second_video_overlapping_clips() -> None:
    # 48 frames = 6 s: max start 4, step 1 -> starts 0..4 s -> frames [8i, 8i+16)
    assert _picked_indices(preprocess_video(_indexed(48, 8.0))) == [[8 * i, 8 * i + 15] for i in range(5)]


def test_video_shorter_than_a_clip() -> None:
    # 10 frames = 1.25 s: all five clips are [0, 2] s -> frames 0..9 -> picks 0 and 9 (ImageBind behaviour)
    assert _picked_indices(preprocess_video(_indexed(10, 8.0))) == [[0, 9]] * 5
    assert _picked_indices(preprocess_video(_indexed(1, 8.0))) == [[0, 0]] * 5


def test_flat_frames_give_exact_normalised_values() -> None:
    out = preprocess_video(_indexed(80, 8.0))
    expected = ((torch.tensor(2.0 * 15) / 255.0) - MEAN) / STD
    torch.testing.assert_close(out[0, :, 1], expected.expand(3, 224, 224), rtol=0, atol=1e-6)


def test_clip_timepoints_arithmetic() -> None:
    assert clip_timepoints(10.0) == [(Fraction(2 * i), Fraction(2 * i + 2)) for i in range(5)]
    assert clip_timepoints(1.0) == [(Fraction(0), Fraction(2))] * 5
    starts = [s for s, _ in clip_timepoints(7.5)]
    assert starts == [Fraction(5.5) * i / 4 for i in range(5)] and len(starts) == 5
    # NTSC: ceil(fps * start) on floats, like decord/pytorchvideo
    fps = 30000 / 1001
    s, e = clip_timepoints(300 / fps)[1]
    assert clip_frame_indices(300, fps, s, e) == [int(np.ceil(fps * float(s))), int(np.ceil(fps * float(e))) - 1]


def test_crops_cover_left_center_right() -> None:
    # 224 x 448 frames whose red channel encodes the column index // 2 (no rescale needed: short side is 224)
    frames = np.zeros((4, 224, 448, 3), np.uint8)
    frames[..., 0] = (np.arange(448) // 2).astype(np.uint8)[None, None, :]
    out = preprocess_video(Video(frames=frames, fps=2.0))
    col = (out[:3, 0, 0, 0, :] * CLIP_STD[0] + CLIP_MEAN[0]) * 255  # (3 crops, 224 columns)
    first_cols = col[:, 0].round().long().tolist()
    last_cols = col[:, -1].round().long().tolist()
    assert first_cols == [0, 112 // 2, 224 // 2]          # x offsets 0, 112, 224
    assert last_cols == [223 // 2, 335 // 2, 447 // 2]    # right crop ends at the right edge
    assert spatial_crop_offsets(224, 448) == [(0, 0), (0, 112), (0, 224)]


def test_crops_cover_top_center_bottom_for_portrait() -> None:
    assert spatial_crop_offsets(400, 224) == [(0, 0), (88, 0), (176, 0)]
    frames = np.zeros((2, 400, 224, 3), np.uint8)
    frames[..., 1] = (np.arange(400) // 2).astype(np.uint8)[None, :, None]
    out = preprocess_video(Video(frames=frames, fps=1.0))
    row0 = ((out[:3, 1, 0, 0, 0] * CLIP_STD[1] + CLIP_MEAN[1]) * 255).round().long().tolist()
    assert row0 == [0, 44, 88]


def test_short_side_scale_matches_interpolate() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
    out = preprocess_video(Video(frames=frames, fps=1.0))
    x = torch.from_numpy(frames[[0, 1]]).permute(3, 0, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(224, 398), mode="bilinear", align_corners=False)  # floor(160/90*224)
    x = (x - MEAN[:, :, :, None].view(3, 1, 1, 1)) / STD.view(3, 1, 1, 1)
    torch.testing.assert_close(out[1], x[:, :, :, 87:311], rtol=0, atol=1e-6)  # center x = ceil((398-224)/2) = 87


def test_bad_input() -> None:
    with pytest.raises(MediaError):
        preprocess_video(Video(frames=np.zeros((3, 4, 4), np.uint8), fps=8.0))
    with pytest.raises(MediaError):
        preprocess_video(Video(frames=np.zeros((3, 4, 4, 3), np.uint8), fps=0.0))
