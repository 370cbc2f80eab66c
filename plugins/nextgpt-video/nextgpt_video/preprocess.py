"""ImageBind's video preprocessing (``imagebind/data.py::load_and_transform_video_data``), without torchvision.

ImageBind reads the file with pytorchvideo's ``EncodedVideoDecord`` and, per video::

    clips   = ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=5)   # 5 (start, end) in seconds
    for each clip: frames = video.get_clip(start, end)                           # (C, T, H, W) float 0..255
                   UniformTemporalSubsample(2) ; / 255.0
    ShortSideScale(224) (bilinear) ; NormalizeVideo(CLIP mean/std) ; SpatialCrop(224, num_crops=3)
    -> 15 views (clip-major: clip 0 crops 0,1,2, clip 1 crops 0,1,2, ...) stacked to (15, 3, 2, 224, 224)

The exact arithmetic (pytorchvideo at the commit ImageBind pins, 6cdc929; checked in ``clip_sampling.py``,
``encoded_video_decord.py``, ``transforms/functional.py`` and ImageBind's ``data.py``), reproduced here:

- **Duration** (decord): ``duration = T / fps`` (float), ``fps`` the stream's average frame rate.
- **Clip timing** (``ConstantClipsPerVideoSampler``): ``max_start = Fraction(max(duration - 2, 0))``,
  ``step = max_start / max(clips - 1, 1)``; clip ``i`` spans ``[step * i, step * i + 2]`` for ``i = 0..4``. All 5
  clips are always produced. A video of 2 s or less gives 5 identical clips ``[0, 2]``; a video shorter than
  10 s gives overlapping clips (e.g. 6 s: starts 0, 1, 2, 3, 4).
- **Frames of a clip** (``EncodedVideoDecord.get_clip``): indices ``range(ceil(fps * start), min(ceil(fps * end),
  T))`` (float products, as decord's float fps times the Fraction times).
- **Temporal subsample** (``uniform_temporal_subsample``): of the clip's ``t`` frames keep
  ``torch.linspace(0, t - 1, 2).clamp(0, t - 1).long()`` = its first and last frame (``[0, 0]`` if ``t == 1``).
- **Scale** (``short_side_scale``): shorter side -> 224, longer -> ``floor(long / short * 224)``,
  ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialias), after dividing by 255.
- **Normalise**: ``(x - mean) / std`` per channel, CLIP mean/std, float32.
- **Spatial crops** (ImageBind's ``uniform_crop``): offsets ``ceil((h - 224) / 2)``, ``ceil((w - 224) / 2)``; if
  ``h > w`` crops 0/1/2 are top/center/bottom (``y = 0``, center, ``h - 224``), otherwise left/center/right
  (``x = 0``, center, ``w - 224``). No extra center crop. A square video gives three identical crops.

Differences that remain: frames come from PyAV (FFmpeg's decoder + swscale RGB conversion) rather than decord
(also FFmpeg-based); a clip with no frames (which makes ImageBind crash) raises ``MediaError`` instead.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from nextgpt_core.errors import MediaError
from nextgpt_core.imagebind.clips import clip_timepoints as imagebind_clip_timepoints

from .media import Video

__all__ = ["CLIP_MEAN", "CLIP_STD", "clip_frame_indices", "clip_timepoints", "preprocess_video", "spatial_crop_offsets"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_timepoints(duration: float, clip_duration: float = 2, clips_per_video: int = 5) -> list[tuple[Fraction, Fraction]]:
    """ImageBind's 5 clips of ``clip_duration`` seconds over ``duration``: ``(start, end)`` pairs in seconds, exact
    ``Fraction`` values (:func:`nextgpt_core.imagebind.clips.clip_timepoints`)."""
    return imagebind_clip_timepoints(duration, clip_duration, clips_per_video)


def clip_frame_indices(num_frames: int, fps: float, start: Fraction, end: Fraction, samples: int = 2) -> list[int]:
    """Frame indices ImageBind feeds for the clip ``[start, end]``: decord's ``get_clip`` range, then
    ``UniformTemporalSubsample(samples)``. Empty if the clip holds no frame."""
    first = math.ceil(fps * start)
    stop = min(math.ceil(fps * end), num_frames)
    t = stop - first
    if t <= 0:
        return []
    picks = torch.linspace(0, t - 1, samples).clamp(0, t - 1).long().tolist()
    return [first + p for p in picks]


def spatial_crop_offsets(height: int, width: int, size: int = 224, num_crops: int = 3) -> list[tuple[int, int]]:
    """``(y, x)`` offsets of ImageBind's ``SpatialCrop``: left/center/right, or top/center/bottom if ``h > w``."""
    if num_crops not in (1, 3):
        raise ValueError("num_crops must be 1 or 3 (as ImageBind's SpatialCrop)")
    out = []
    for idx in ([0, 1, 2] if num_crops == 3 else [1]):
        y = int(math.ceil((height - size) / 2))
        x = int(math.ceil((width - size) / 2))
        if height > width:
            y = 0 if idx == 0 else (height - size if idx == 2 else y)
        else:
            x = 0 if idx == 0 else (width - size if idx == 2 else x)
        out.append((y, x))
    return out


def preprocess_video(
    video: Video,
    *,
    size: int = 224,
    clip_duration: int = 2,
    clips_per_video: int = 5,
    num_crops: int = 3,
) -> torch.Tensor:
    """One video -> ImageBind vision input, as ``load_and_transform_video_data`` (see the module docstring).

    Args:
        video: ``Video(frames uint8 (T, H, W, 3), fps)``.
        size: crop side (224).
        clip_duration: seconds per clip (2); also the frames kept per clip, as in ImageBind.
        clips_per_video: temporal clips (5).
        num_crops: spatial crops per clip (3, or 1 = center only).

    Returns:
        float32 ``(clips_per_video * num_crops, 3, clip_duration, size, size)`` = ``(15, 3, 2, 224, 224)``.

    Raises:
        MediaError: malformed frames, a non-positive fps, or a clip that holds no frame.
    """
    frames = np.asarray(video.frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise MediaError(f"preprocess_video expects uint8 frames (T>=1, H, W, 3), got {frames.dtype} {frames.shape}")
    fps = float(video.fps)
    if not (fps > 0 and math.isfinite(fps)):
        raise MediaError(f"preprocess_video needs a positive fps, got {video.fps!r}")
    num_frames = frames.shape[0]
    duration = float(num_frames) / fps
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None, None]
    views = []
    for start, end in clip_timepoints(duration, clip_duration, clips_per_video):
        idx = clip_frame_indices(num_frames, fps, start, end, samples=clip_duration)
        if not idx:
            raise MediaError(f"video clip [{float(start):.3f}, {float(end):.3f}] s holds no frame ({num_frames} frames at {fps} fps)")
        clip = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(3, 0, 1, 2).to(torch.float32)  # (C, T, H, W)
        clip = clip / 255.0
        _, _, h, w = clip.shape
        if w < h:
            new_h, new_w = int(math.floor((float(h) / w) * size)), size
        else:
            new_h, new_w = size, int(math.floor((float(w) / h) * size))
        clip = F.interpolate(clip, size=(new_h, new_w), mode="bilinear", align_corners=False)
        clip = clip.sub_(mean).div_(std)
        for y, x in spatial_crop_offsets(new_h, new_w, size, num_crops):
            views.append(clip[:, :, y : y + size, x : x + size])
    return torch.stack(views, dim=0).contiguous()
