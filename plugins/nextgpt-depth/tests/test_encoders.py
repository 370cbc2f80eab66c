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
