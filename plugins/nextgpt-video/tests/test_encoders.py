"""The ImageBind video encoder (15 views averaged) through the core's conformance mixin."""

import numpy as np
from nextgpt_video.encoders import ImageBindVideoEncoder
from nextgpt_video.media import Video, VideoIO

from nextgpt_core.testing import EncoderTesterMixin


class TestImageBindVideoEncoder(EncoderTesterMixin):
    component_class = ImageBindVideoEncoder

    def get_init_dict(self):
        return {"size": "tiny"}

    def get_dummy_media(self):
        still = Video(np.full((6, 36, 48, 3), 90, dtype=np.uint8), fps=3.0)
        return [VideoIO().example(), still]


def test_views_are_averaged_not_renormalised():
    encoder = ImageBindVideoEncoder.from_options({"size": "tiny"}).freeze()
    x = encoder.preprocess(VideoIO().example())
    assert x.shape == (15, 3, 2, 224, 224)
    out = encoder(x[None])
    assert out.shape == (1, 1, 32) and out.norm().item() <= 1.0 + 1e-6
