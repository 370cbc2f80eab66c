"""The ImageBind depth encoder through the core's conformance mixin."""

import numpy as np
from nextgpt_depth.encoders import ImageBindDepthEncoder
from nextgpt_depth.media import DepthIO

from nextgpt_core.testing import EncoderTesterMixin


class TestImageBindDepthEncoder(EncoderTesterMixin):
    component_class = ImageBindDepthEncoder

    def get_init_dict(self):
        return {"size": "tiny"}

    def get_dummy_media(self):
        return [DepthIO().example(), np.full((30, 40), 2500.0, dtype=np.float32)]


def test_one_unit_token_per_map():
    encoder = ImageBindDepthEncoder.from_options({"size": "tiny"}).freeze()
    x = encoder.preprocess(DepthIO().example())
    assert x.shape == (1, 224, 224)
    out = encoder(x[None])
    assert out.shape == (1, 1, 32)
    np.testing.assert_allclose(out.norm().item(), 1.0, rtol=1e-5)


def test_units_are_options():
    metres = np.full((30, 40), 2.5, dtype=np.float32)
    millimetres = metres * 1000
    in_mm = ImageBindDepthEncoder.from_options({"size": "tiny"})
    in_m = ImageBindDepthEncoder.from_options({"size": "tiny", "depth_scale": 1.0})
    np.testing.assert_allclose(in_mm.preprocess(millimetres).numpy(), in_m.preprocess(metres).numpy(), rtol=1e-6)
