"""The ImageBind IMU encoder through the core's conformance mixin, clip averaging and its options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextgpt_core.errors import ConfigError
from nextgpt_core.testing import EncoderTesterMixin
from nextgpt_imu.encoders import ImageBindIMUEncoder
from nextgpt_imu.media import IMU, IMUIO


def _walk(seconds: float, rate: float, seed: int) -> IMU:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = rng.normal(0, 0.2, (t.size, 6))
    samples[:, 2] += 9.81 + 1.5 * np.sin(2 * np.pi * 2 * t)
    return IMU(samples.astype(np.float32), rate)


class TestImageBindIMUEncoder(EncoderTesterMixin):
    component_class = ImageBindIMUEncoder

    def get_init_dict(self):
        return {"size": "tiny"}

    def get_dummy_media(self):
        return [IMUIO().example(), _walk(3.0, 100.0, 1)]  # 6 s at 400 Hz, 3 s at 100 Hz


class TestImageBindIMUEncoderClips(EncoderTesterMixin):
    component_class = ImageBindIMUEncoder

    def get_init_dict(self):
        return {"size": "tiny", "num_clips": 3}

    def get_dummy_media(self):
        return [_walk(12.0, 400.0, 2), _walk(7.0, 200.0, 3)]


def test_clips_are_averaged_unit_embeddings() -> None:
    torch.manual_seed(0)
    clips = ImageBindIMUEncoder.from_options({"size": "tiny", "num_clips": 3})
    single = ImageBindIMUEncoder.from_options({"size": "tiny"})
    single.load_state_dict(clips.state_dict())
    recording = _walk(15.0, 400.0, 4)
    recording.samples[2000:4000] *= -3.0  # three different 5-second stretches: three different embeddings
    recording.samples[4000:] = 0.0
    x = clips.preprocess(recording)
    assert x.shape == (3, 6, 2000) and clips.config.clips
    with torch.no_grad():
        out = clips(x[None])
        per_clip = torch.stack([single(x[v][None]) for v in range(3)])
    torch.testing.assert_close(out, per_clip.mean(0), rtol=1e-5, atol=1e-6)
    assert out.norm() < 1 - 1e-4  # averaged after normalising, not renormalised


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="2000 samples, but the imu branch at size 'toy' takes 200"):
        ImageBindIMUEncoder.from_options({"size": "toy"})
    with pytest.raises(ConfigError, match="clips must be"):
        ImageBindIMUEncoder.from_options({"size": "tiny", "num_clips": 2, "clips": False})
    assert ImageBindIMUEncoder.from_options({"size": "toy", "sample_rate": 40}).output_dim == 64
