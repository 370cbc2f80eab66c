"""IMU preprocessing for ImageBind's IMU branch.

ImageBind ships **no** IMU transform (its ``imagebind/data.py`` has none; ImageBind issues #48, #66 and #131 ask for
one). What fixes the input is the model and the paper: ``IMUPreprocessor(img_size=[6, 2000], kernel_size=8)`` takes
a ``6 x 2000`` tensor, and the paper says "We extract the IMU signal consisting of accelerometer and gyroscope
measurements across the X, Y, and Z axes. We use 5 second clips resulting in 2K time step IMU readings" (section
3.3) and, for inference, "we sample fixed length clips of 5 seconds, centered around time-stamps ... For each clip,
we get a 6x2000 dimensional input" (appendix B.1). So 400 samples per second. :func:`preprocess_imu` therefore:

1. resamples the recording linearly to ``sample_rate`` (400 Hz) when it was taken at another rate;
2. takes the ``clip_seconds`` (5 s) window centred on the recording's middle, or, with ``num_clips > 1``, that many
   windows spread evenly from start to end (ImageBind's clip sampler for audio and video,
   :func:`nextgpt_core.imagebind.clips.clip_timepoints`), averaged by the encoder;
3. holds the first / last reading to fill a recording shorter than a window (centred), and puts channels first:
   ``(6, 2000)``: ``acc_x, acc_y, acc_z`` (m/s^2) then ``gyro_x, gyro_y, gyro_z`` (rad/s), as they were recorded.
   No scaling or normalisation is documented, so none is applied.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from nextgpt_core.errors import MediaError
from nextgpt_core.imagebind.clips import clip_timepoints

from .media import IMU, _as_imu

__all__ = ["IMAGEBIND_RATE", "IMAGEBIND_SECONDS", "preprocess_imu", "resample"]

IMAGEBIND_RATE = 400.0
IMAGEBIND_SECONDS = 5.0


def resample(imu: IMU, rate: float) -> np.ndarray:
    """``imu`` linearly resampled to ``rate`` Hz: float32 ``(T', 6)`` over the same span (``T'`` = the samples that
    fit: ``floor((T - 1) * rate / imu.rate) + 1``). Unchanged when the rates agree."""
    if math.isclose(imu.sample_rate, rate, rel_tol=1e-9):
        return imu.samples
    source = np.arange(imu.samples.shape[0], dtype=np.float64) / imu.sample_rate
    count = int(math.floor(source[-1] * rate + 1e-9)) + 1
    target = np.arange(count, dtype=np.float64) / rate
    return np.stack([np.interp(target, source, imu.samples[:, c]) for c in range(6)], axis=1).astype(np.float32)


def _window(samples: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` rows from ``start``, holding the edge readings outside the recording: ``(length, 6)``."""
    index = np.clip(np.arange(start, start + length), 0, samples.shape[0] - 1)
    return samples[index]


def preprocess_imu(
    media: Any,
    *,
    sample_rate: float = IMAGEBIND_RATE,
    clip_seconds: float = IMAGEBIND_SECONDS,
    num_clips: int = 1,
) -> torch.Tensor:
    """One IMU recording -> ImageBind IMU input.

    Args:
        media: an :class:`~nextgpt_imu.media.IMU` (or a ``(T, 6)`` array at 400 Hz).
        sample_rate: the branch's rate (400 Hz; the toy world's 40 Hz).
        clip_seconds: the window (5 s).
        num_clips: 1: the centred window; more: evenly spread windows.

    Returns:
        float32 ``(6, N)`` with ``N = round(sample_rate * clip_seconds)`` (2000), or ``(num_clips, 6, N)``.
    """
    try:
        imu = _as_imu(media)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything that is not an IMU recording
        raise MediaError(f"an IMU recording is an IMU or a (T, 6) array, got {type(media).__name__} ({exc})") from exc
    length = int(round(sample_rate * clip_seconds))
    samples = resample(imu, sample_rate)
    total = samples.shape[0]
    if num_clips == 1:
        starts = [(total - length) // 2]  # centred; negative when short: the edges are held on both sides
    else:
        starts = [int(round(float(start) * sample_rate)) for start, _ in clip_timepoints(total / sample_rate, clip_seconds, num_clips)]
        starts += [starts[-1]] * (num_clips - len(starts))
    windows = np.stack([_window(samples, start, length).T for start in starts])
    out = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    return out[0] if num_clips == 1 else out
