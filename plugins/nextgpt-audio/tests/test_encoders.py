"""The ImageBind audio encoder (3 clips averaged) through the core's conformance mixin."""

import numpy as np
from nextgpt_audio.encoders import ImageBindAudioEncoder
from nextgpt_audio.media import Audio, AudioIO

from nextgpt_core.testing import EncoderTesterMixin


class TestImageBindAudioEncoder(EncoderTesterMixin):
    component_class = ImageBindAudioEncoder

    def get_init_dict(self):
        return {"size": "tiny"}

    def get_dummy_media(self):
        noise = np.random.default_rng(0).uniform(-0.3, 0.3, 44100).astype(np.float32)
        return [AudioIO().example(), Audio(noise, 44100)]


def test_three_clips_in_one_token_out():
    encoder = ImageBindAudioEncoder.from_options({"size": "tiny"}).freeze()
    x = encoder.preprocess(AudioIO().example())
    assert x.shape == (3, 1, 128, 204)
    assert encoder(x[None]).shape == (1, 1, 32)
