"""The plugin author kit run on the fake plugin's parts and the core's generic projectors."""

from __future__ import annotations

import numpy as np
from nextgpt_fake.decoder import FakeDecoder
from nextgpt_fake.encoder import FakeEncoder
from nextgpt_fake.media import FakeAudioIO, FakeImageIO

from nextgpt_core.projectors import (
    LinearInputProjector,
    LinearOutputProjector,
    MLPInputProjector,
    TransformerOutputProjector,
)
from nextgpt_core.testing import (
    DecoderTesterMixin,
    EncoderTesterMixin,
    InputProjectorTesterMixin,
    MediaIOTesterMixin,
    OutputProjectorTesterMixin,
)


class TestFakeEncoder(EncoderTesterMixin):
    component_class = FakeEncoder

    def get_init_dict(self):
        return {"in_features": 16, "enc_dim": 6, "n_tokens": 2}

    def get_dummy_media(self):
        return [np.linspace(0, 1, 20, dtype=np.float32), np.ones((4, 4), dtype=np.float32)]


class TestFakeDecoderTwoInputs(DecoderTesterMixin):
    component_class = FakeDecoder

    def get_init_dict(self):
        return {
            "inputs": [{"name": "prompt_embeds", "length": 3, "dim": 8}, {"name": "pooled_embeds", "length": 1, "dim": 6}],
            "output_shape": [5],
        }

    def get_decode_options(self):
        return {"num_inference_steps": 2, "guidance_scale": 2.0}


class TestFakeDecoderLoadsOnce(DecoderTesterMixin):
    component_class = FakeDecoder

    def test_load_is_idempotent(self):
        decoder = self.make()
        decoder.unconditional()
        decoder.unconditional()
        decoder(self.conditioning(decoder))
        assert decoder.load_calls == 1


class TestFakeImageIO(MediaIOTesterMixin):
    io_class = FakeImageIO
    suffix = ".fimg"

    def get_dummy_media(self):
        return np.arange(12, dtype=np.float32).reshape(3, 4)


class TestFakeAudioIO(MediaIOTesterMixin):
    io_class = FakeAudioIO
    suffix = ".faud"

    def get_dummy_media(self):
        return np.sin(np.arange(50, dtype=np.float32))


class TestLinearInputProjector(InputProjectorTesterMixin):
    component_class = LinearInputProjector

    def get_init_dict(self):
        return {"in_dim": 6, "out_dim": 10}


class TestMLPInputProjector(InputProjectorTesterMixin):
    component_class = MLPInputProjector

    def get_init_dict(self):
        return {"in_dim": 6, "out_dim": 10, "hidden_dim": 7}


class TestTransformerOutputProjector(OutputProjectorTesterMixin):
    component_class = TransformerOutputProjector

    def get_init_dict(self):
        return {"in_dim": 12, "num_signal_tokens": 4, "out_len": 5, "out_dim": 7, "d_model": 16, "num_heads": 2,
                "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 24}


class TestLinearOutputProjector(OutputProjectorTesterMixin):
    component_class = LinearOutputProjector

    def get_init_dict(self):
        return {"in_dim": 12, "num_signal_tokens": 3, "out_len": 2, "out_dim": 5}


def test_official_transformer_projector_names_and_shapes():
    """Parameter names of the official TextFcLayer (so released weights load) at the official image size."""
    import torch

    with torch.device("meta"):
        proj = TransformerOutputProjector.from_options({"in_dim": 4096, "num_signal_tokens": 4, "out_len": 77, "out_dim": 768})
    names = dict(proj.named_parameters())
    assert tuple(names["fc.weight"].shape) == (512, 4096)
    assert tuple(names["query_embs"].shape) == (1, 77, 512)
    assert tuple(names["model.weight"].shape) == (768, 512)
    assert "tfm.encoder.layers.3.self_attn.in_proj_weight" in names and "tfm.decoder.layers.3.multihead_attn.out_proj.weight" in names
    assert "tfm.decoder.norm.weight" in names


def test_official_output_projector_parameter_counts():
    """Full-size `transformer` projectors have exactly the official per-modality counts (issue B item 3)."""
    import torch

    expected = {(4, 77, 768): 31_958_784, (24, 77, 1024): 32_090_112, (8, 1, 512): 31_788_544}  # image, video, audio
    for (n_signal, out_len, out_dim), count in expected.items():
        with torch.device("meta"):
            proj = TransformerOutputProjector.from_options(
                {"in_dim": 4096, "num_signal_tokens": n_signal, "out_len": out_len, "out_dim": out_dim}
            )
        assert sum(p.numel() for p in proj.parameters()) == count, (n_signal, out_len, out_dim)
