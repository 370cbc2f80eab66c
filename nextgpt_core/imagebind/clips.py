"""ImageBind's clip sampling in time, shared by the video and audio preprocessing of the plugins."""

from __future__ import annotations

from fractions import Fraction

__all__ = ["clip_timepoints"]


def clip_timepoints(duration: float, clip_duration: float, clips_per_video: int) -> list[tuple[Fraction, Fraction]]:
    """pytorchvideo's ``ConstantClipsPerVideoSampler`` read out as ImageBind's ``get_clip_timepoints`` does.

    Args:
        duration: the media's length in seconds.
        clip_duration: each clip's length in seconds (ImageBind: 2).
        clips_per_video: clips to take (ImageBind: 5 for video, 3 for audio).

    Returns:
        ``clips_per_video`` ``(start, end)`` pairs in seconds, as exact ``Fraction`` values, evenly spread from 0 to
        ``duration - clip_duration`` (all ``(0, clip_duration)`` when the media is shorter than one clip).
    """
    max_start = Fraction(max(duration - clip_duration, 0))
    step = Fraction(max_start, max(clips_per_video - 1, 1))
    out: list[tuple[Fraction, Fraction]] = []
    index = 0
    while True:
        start = step * index
        out.append((start, start + clip_duration))
        index += 1
        if index >= clips_per_video or step * index > max_start:
            return out
