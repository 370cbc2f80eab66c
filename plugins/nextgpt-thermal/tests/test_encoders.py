"""The ImageBind thermal encoder through the core's conformance mixin, and its options."""

from __future__ import annotations

import numpy as np
import pytest

from nextgpt_core.errors import ConfigError
from nextgpt_core.testing import EncoderTesterMixin
from nextgpt_thermal.encoders import ImageBindThermalEncoder
from nextgpt_thermal.media import ThermalIO


class TestImageBindThermalEncoder(EncoderTesterMixin):
    component_class = ImageBindThermalEncoder

    def get_init_dict(self):
        return {"size": "tiny"}

    def get_dummy_media(self):
        ramp = (np.arange(40 * 30, dtype=np.float64).reshape(30, 40) * 50).astype(np.uint16)
        return [ThermalIO().example(), ramp]


def test_one_unit_token_per_image() -> None:
    encoder = ImageBindThermalEncoder.from_options({"size": "tiny"})
    x = encoder.preprocess(ThermalIO().example())
    assert x.shape == (1, 224, 224)
    out = encoder(x[None])
    assert out.shape == (1, 1, 32)
    np.testing.assert_allclose(out.norm().item(), 1.0, rtol=1e-5)


def test_eight_and_sixteen_bit_of_one_scene_encode_alike() -> None:
    encoder = ImageBindThermalEncoder.from_options({"size": "tiny"})
    eight = ThermalIO().example()
    sixteen = eight.astype(np.uint16) * 257  # the same intensities in 16 bits
    np.testing.assert_allclose(encoder.preprocess(eight).numpy(), encoder.preprocess(sixteen).numpy(), atol=1e-6)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="normalize"):
        ImageBindThermalEncoder.from_options({"size": "tiny", "normalize": "zscore"})
    with pytest.raises(ConfigError, match="unknown ImageBind size 'small'.*huge, tiny, toy|choose from"):
        ImageBindThermalEncoder.from_options({"size": "small"})
    with pytest.raises(ConfigError, match="modality"):
        ImageBindThermalEncoder.from_options({"size": "tiny", "modality": "depth"})
