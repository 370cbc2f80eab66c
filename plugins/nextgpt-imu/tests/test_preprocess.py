"""preprocess_imu: 400 Hz, the centred 5-second window, edges held, channels first; evenly spread clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextgpt_core.errors import MediaError
from nextgpt_imu.media import IMU
from nextgpt_imu.preprocess import preprocess_imu, resample


def _ramp(seconds: float, rate: float) -> IMU:
    t = np.arange(int(round(seconds * rate))) / rate
    return IMU(np.stack([t * (c + 1) for c in range(6)], axis=1).astype(np.float32), rate)


def test_centred_five_second_window_channels_first() -> None:
    imu = _ramp(9.0, 400.0)  # 3600 samples: the window starts at 800
    out = preprocess_imu(imu)
    assert out.shape == (6, 2000) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(imu.samples[800:2800].T.copy()))


def test_other_rates_are_resampled_to_400_hz() -> None:
    out = preprocess_imu(_ramp(6.0, 100.0))
    # a linear ramp survives linear resampling: channel c at 400 Hz sample k is (c + 1) * time
    times = (np.arange(2000) + (int(np.floor((600 - 1) * 4 + 1e-9)) + 1 - 2000) // 2) / 400.0
    np.testing.assert_allclose(out[2].numpy(), 3 * times, rtol=1e-5, atol=1e-5)
    assert resample(_ramp(1.0, 400.0), 400.0) is not None


def test_short_recordings_hold_their_edges() -> None:
    imu = _ramp(1.0, 400.0)  # 400 samples in a 2000-sample window: 800 held on each side
    out = preprocess_imu(imu).numpy()
    np.testing.assert_array_equal(out[:, :800], np.repeat(imu.samples[:1].T, 800, axis=1))
    np.testing.assert_array_equal(out[:, 800:1200], imu.samples.T)
    np.testing.assert_array_equal(out[:, 1200:], np.repeat(imu.samples[-1:].T, 800, axis=1))


def test_clips_spread_from_start_to_end() -> None:
    imu = _ramp(15.0, 400.0)
    out = preprocess_imu(imu, num_clips=3)
    assert out.shape == (3, 6, 2000)
    for clip, start in zip(out, (0, 2000, 4000)):  # starts at 0, 5 and 10 s
        torch.testing.assert_close(clip, torch.from_numpy(imu.samples[start : start + 2000].T.copy()))


def test_not_an_imu() -> None:
    with pytest.raises(MediaError, match="IMU"):
        preprocess_imu(np.zeros((10, 3)))
