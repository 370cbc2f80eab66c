"""CLAPAudioEncoder: conformance, unit-norm output, fixed-shape preprocessing, loading from a local folder, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nextgpt_audio.clap_encoder import CLAP_FULL_SIZE, CLAPAudioEncoder, resample_mono  # noqa: E402
from nextgpt_audio.media import Audio  # noqa: E402
from nextgpt_core.errors import CheckpointError, ConfigError, MediaError, WeightsNotFoundError  # noqa: E402
from nextgpt_core.testing.mixins import EncoderTesterMixin  # noqa: E402

TINY: dict[str, Any] = {
    "patch_embeds_hidden_size": 8,
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 1, 2, 2],
    "projection_dim": 16,
}
ITEM_SHAPE = (1, 1001, 64)  # 10 s at 48 kHz, hop 480, 64 mel bins


def tone(freq: float, seconds: float, rate: int, channels: int = 0, seed: int = 0) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    mono = (0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    if channels:
        mono = np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)
    return Audio(samples=mono, sample_rate=rate)


def tiny(seed: int = 0) -> CLAPAudioEncoder:
    torch.manual_seed(seed)
    return CLAPAudioEncoder.from_options(TINY)  # type: ignore[return-value]


def encode(encoder: CLAPAudioEncoder, media: list[Audio]) -> torch.Tensor:
    with torch.no_grad():
        return encoder(torch.stack([encoder.preprocess(m) for m in media]))


class TestCLAPAudioEncoder(EncoderTesterMixin):
    component_class = CLAPAudioEncoder

    def get_init_dict(self) -> dict[str, Any]:
        return dict(TINY)

    def get_dummy_media(self) -> list[Any]:
        # different lengths, rates and channel counts; one longer than a clip
        return [tone(440, 1.0, 8_000), tone(1000, 2.5, 44_100, channels=2), tone(3000, 11.0, 16_000)]


def test_output_is_one_unit_norm_token() -> None:
    encoder = tiny()
    out = encode(encoder, [tone(440, 1.0, 48_000), tone(2000, 0.5, 22_050)])
    assert out.shape == (2, 1, 16) and out.shape[-1] == CLAPAudioEncoder.output_dim_of(encoder.config)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))
    assert not torch.allclose(out[0], out[1])


def test_items_have_one_shape_whatever_the_rate_length_and_channels() -> None:
    encoder = tiny()
    media = [
        tone(440, 0.3, 8_000),
        tone(440, 3.0, 44_100, channels=2),
        tone(440, 12.0, 48_000),
        Audio(np.zeros(1, np.float32), 16_000),
        tone(440, 1.0, 96_000, channels=6),
    ]
    for m in media:
        x = encoder.preprocess(m)
        assert tuple(x.shape) == ITEM_SHAPE and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_preprocess_is_deterministic_and_long_audio_keeps_its_first_clip() -> None:
    encoder = tiny()
    long = tone(700, 14.0, 48_000, seed=3)
    first = Audio(long.samples[: 10 * 48_000], 48_000)
    assert torch.equal(encoder.preprocess(long), encoder.preprocess(long))
    assert torch.equal(encoder.preprocess(long), encoder.preprocess(first))


def test_stereo_is_mixed_down_to_mono() -> None:
    encoder = tiny()
    mono = tone(440, 1.0, 48_000)
    stereo = Audio(np.stack([mono.samples * 0.5, mono.samples * 1.5], axis=1), 48_000)
    torch.testing.assert_close(encoder.preprocess(stereo), encoder.preprocess(mono))


def test_resampling() -> None:
    t = np.arange(8_000) / 8_000
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = resample_mono(x, 8_000, 48_000)
    assert y.shape == (48_000,) and y.dtype == np.float32
    expected = np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000)
    # away from the filter's edges the band-limited resampler reproduces the tone
    assert np.abs(y[2_000:-2_000] - expected[2_000:-2_000]).max() < 0.02
    assert resample_mono(x[:1], 16_000).shape == (3,)
    assert resample_mono(x, 48_000) is not None and resample_mono(x, 48_000).shape == x.shape


def test_seeded_init_is_deterministic() -> None:
    a, b = tiny(3), tiny(3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.audio_projection.linear1.weight, tiny(4).model.audio_projection.linear1.weight)


def test_full_size_default_is_htsat_tiny() -> None:
    config = CLAPAudioEncoder.make_config({})
    assert CLAPAudioEncoder.output_dim_of(config) == 512 == CLAP_FULL_SIZE["projection_dim"]
    assert tuple(config.dims()["depths"]) == (2, 2, 6, 2)


def test_bad_media_is_a_media_error() -> None:
    encoder = tiny()
    with pytest.raises(MediaError, match=r"expects a nextgpt_audio\.Audio, got numpy\.ndarray") as info:
        encoder.preprocess(np.zeros(48_000, np.float32))
    assert "\n" not in str(info.value)
    with pytest.raises(MediaError, match="empty"):
        encoder.preprocess(Audio(np.zeros(0, np.float32), 48_000))
    with pytest.raises(MediaError, match="sample_rate"):
        encoder.preprocess(Audio(np.zeros(10, np.float32), 0))
    with pytest.raises(MediaError, match="NaN"):
        encoder.preprocess(Audio(np.full(10, np.nan, np.float32), 48_000))
    with pytest.raises(MediaError, match="samples"):
        encoder.preprocess(Audio(np.zeros((2, 2, 2), np.float32), 48_000))


def test_loads_from_local_folder(tmp_path: Path) -> None:
    reference = tiny(7)
    reference.model.save_pretrained(tmp_path / "clap")
    reference.extractor.save_pretrained(tmp_path / "clap")
    loaded = CLAPAudioEncoder.from_options({"path": str(tmp_path / "clap")})
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    media = [tone(440, 1.0, 8_000), tone(880, 2.0, 44_100, channels=2)]
    out = encode(loaded, media)
    torch.testing.assert_close(out, encode(reference, media), rtol=0, atol=1e-6)
    assert out.shape[-1] == loaded.output_dim == CLAPAudioEncoder.output_dim_of(loaded.config) == 16
    with torch.no_grad():  # the same weights straight through transformers
        direct = reference.model(input_features=torch.stack([reference.preprocess(m) for m in media])).audio_embeds
    torch.testing.assert_close(out[:, 0], torch.nn.functional.normalize(direct, dim=-1))


def test_loads_audio_tower_of_a_full_clap_model(tmp_path: Path) -> None:
    """The layout of laion/clap-htsat-unfused: a ClapModel checkpoint; the text tower is ignored."""
    from transformers import ClapConfig, ClapModel

    reference = tiny(8)
    text = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 40}
    full = ClapModel(ClapConfig(text_config=text, audio_config=reference.model.config.to_dict(), projection_dim=16))
    full.audio_model.load_state_dict(reference.model.audio_model.state_dict())
    full.audio_projection.load_state_dict(reference.model.audio_projection.state_dict())
    full.save_pretrained(tmp_path / "full")  # no preprocessor_config.json: laion's settings are used
    loaded = CLAPAudioEncoder.from_options({"path": str(tmp_path / "full")})
    assert CLAPAudioEncoder.output_dim_of(loaded.config) == 16
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))
    media = [tone(300, 1.5, 16_000)]
    torch.testing.assert_close(encode(loaded, media), encode(reference, media), rtol=0, atol=1e-6)


def test_missing_folder_is_weights_not_found(tmp_path: Path) -> None:
    options = {"path": str(tmp_path / "no-such-clap")}
    with pytest.raises(WeightsNotFoundError, match="no-such-clap"):
        CLAPAudioEncoder.from_options(options)
    with pytest.raises(WeightsNotFoundError, match="no-such-clap"):
        CLAPAudioEncoder.output_dim_of(CLAPAudioEncoder.make_config(options))
    tiny().model.config.save_pretrained(tmp_path / "cfg-only")
    with pytest.raises(WeightsNotFoundError, match="cfg-only"):
        CLAPAudioEncoder.from_options({"path": str(tmp_path / "cfg-only")})


def test_fused_checkpoint_is_refused(tmp_path: Path) -> None:
    config = tiny().model.config
    config.enable_fusion = True
    config.save_pretrained(tmp_path / "fused")
    with pytest.raises(ConfigError, match="fused"):
        CLAPAudioEncoder.from_options({"path": str(tmp_path / "fused")})


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="leave"):
        CLAPAudioEncoder.make_config({"path": "/x", "projection_dim": 8})
    with pytest.raises(ConfigError, match="one entry per stage"):
        CLAPAudioEncoder.make_config({**TINY, "num_attention_heads": [1, 1]})
    with pytest.raises(ConfigError, match="multiple"):
        CLAPAudioEncoder.make_config({**TINY, "num_attention_heads": [3, 1, 1, 1]})


def test_checkpoint_of_another_model_is_rejected(tmp_path: Path) -> None:
    from transformers import ClapAudioModel

    ClapAudioModel(tiny().model.config).save_pretrained(tmp_path / "noproj")
    with pytest.raises(CheckpointError, match="not a CLAP audio checkpoint: .* weights missing"):
        CLAPAudioEncoder.from_options({"path": str(tmp_path / "noproj")})
