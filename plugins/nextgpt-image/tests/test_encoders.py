"""The ImageBind image encoder through the core's conformance mixin, on real decoded images."""

import numpy as np
from nextgpt_image.encoders import ImageBindImageEncoder
from nextgpt_image.media import ImageIO
from PIL import Image

from nextgpt_core.testing import EncoderTesterMixin


class TestImageBindImageEncoder(EncoderTesterMixin):
    component_class = ImageBindImageEncoder

    def get_init_dict(self):
        return {"size": "tiny"}

    def get_dummy_media(self):
        return [ImageIO().example(), Image.fromarray(np.full((40, 60, 3), 200, dtype=np.uint8))]


def test_one_unit_token_per_image():
    encoder = ImageBindImageEncoder.from_options({"size": "tiny"}).freeze()
    out = encoder(encoder.preprocess(ImageIO().example())[None])
    assert out.shape == (1, 1, 32)
    np.testing.assert_allclose(out.norm(dim=-1).item(), 1.0, rtol=1e-5)
