"""CLIPImageEncoder: conformance, unit-norm output, OpenAI preprocessing, loading from a local folder, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nextgpt_core.errors import CheckpointError, ConfigError, MediaError, WeightsNotFoundError  # noqa: E402
from nextgpt_core.testing.mixins import EncoderTesterMixin  # noqa: E402
from nextgpt_image.clip_encoder import CLIP_FULL_SIZE, CLIPImageEncoder  # noqa: E402

TINY: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "patch_size": 14,
    "projection_dim": 16,
}
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def image(seed: int, size: tuple[int, int] = (200, 150), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode)


def tiny(seed: int = 0, **extra: Any) -> CLIPImageEncoder:
    torch.manual_seed(seed)
    return CLIPImageEncoder.from_options({**TINY, **extra})  # type: ignore[return-value]


def encode(encoder: CLIPImageEncoder, images: list[Image.Image]) -> torch.Tensor:
    with torch.no_grad():
        return encoder(torch.stack([encoder.preprocess(m) for m in images]))


class TestCLIPImageEncoder(EncoderTesterMixin):
    component_class = CLIPImageEncoder

    def get_init_dict(self) -> dict[str, Any]:
        return dict(TINY)

    def get_dummy_media(self) -> list[Any]:
        return [image(0), image(1, (224, 300)), image(2, (64, 64))]


class TestCLIPPatchTokens(EncoderTesterMixin):
    component_class = CLIPImageEncoder

    def get_init_dict(self) -> dict[str, Any]:
        return {**TINY, "tokens": "patches"}

    def get_dummy_media(self) -> list[Any]:
        return [image(0), image(1, (300, 224))]


def test_pooled_output_is_one_unit_norm_token() -> None:
    out = encode(tiny(), [image(0), image(1)])
    assert out.shape == (2, 1, 16) == (2, 1, CLIPImageEncoder.output_dim_of(tiny().config))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))
    assert not torch.allclose(out[0], out[1])


def test_patch_tokens_shape() -> None:
    encoder = tiny(tokens="patches")
    out = encode(encoder, [image(0)])
    assert out.shape == (1, (224 // 14) ** 2, 32) and encoder.output_dim == 32


def test_seeded_init_is_deterministic() -> None:
    a, b = tiny(3), tiny(3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.visual_projection.weight, tiny(4).model.visual_projection.weight)


def test_full_size_default_is_vit_l14() -> None:
    config = CLIPImageEncoder.make_config({})
    assert CLIPImageEncoder.output_dim_of(config) == 768 == CLIP_FULL_SIZE["projection_dim"]
    assert CLIPImageEncoder.output_dim_of(CLIPImageEncoder.make_config({"tokens": "patches"})) == 1024


def test_preprocess_is_openai_clip() -> None:
    encoder = tiny()
    img = image(5, (224, 224))  # no resize / crop: only rescale + normalise
    expected = (np.asarray(img, dtype=np.float32) / 255.0 - OPENAI_MEAN) / OPENAI_STD
    x = encoder.preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    # resize the shortest edge then centre-crop: a 448 x 224 image keeps its middle half
    wide = Image.new("RGB", (448, 224), (255, 0, 0))
    wide.paste((0, 0, 255), (112, 0, 336, 224))
    assert torch.allclose(encoder.preprocess(wide), encoder.preprocess(Image.new("RGB", (224, 224), (0, 0, 255))), atol=1e-5)
    # non-RGB input is converted
    assert encoder.preprocess(image(6, mode="RGBA")).shape == (3, 224, 224)


def test_bad_media_is_a_media_error() -> None:
    encoder = tiny()
    with pytest.raises(MediaError, match=r"expects a PIL\.Image\.Image, got numpy\.ndarray") as info:
        encoder.preprocess(np.zeros((224, 224, 3), dtype=np.uint8))
    assert "\n" not in str(info.value)
    with pytest.raises(MediaError, match="expects a PIL"):
        encoder.preprocess("cat.png")


def test_loads_from_local_folder(tmp_path: Path) -> None:
    reference = tiny(7)
    reference.model.save_pretrained(tmp_path / "clip")
    reference.processor.save_pretrained(tmp_path / "clip")
    loaded = CLIPImageEncoder.from_options({"path": str(tmp_path / "clip")})
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    media = [image(0), image(1, (100, 300))]
    out = encode(loaded, media)
    torch.testing.assert_close(out, encode(reference, media), rtol=0, atol=0)
    assert out.shape[-1] == loaded.output_dim == CLIPImageEncoder.output_dim_of(loaded.config) == 16
    # the same weights straight through transformers
    with torch.no_grad():
        direct = reference.model(pixel_values=torch.stack([reference.preprocess(m) for m in media])).image_embeds
    torch.testing.assert_close(out[:, 0], torch.nn.functional.normalize(direct, dim=-1))
    patches = CLIPImageEncoder.make_config({"path": str(tmp_path / "clip"), "tokens": "patches"})
    assert CLIPImageEncoder.output_dim_of(patches) == 32


def test_loads_vision_tower_of_a_full_clip_model(tmp_path: Path) -> None:
    """The layout of openai/clip-vit-large-patch14: a CLIPModel checkpoint; the text tower is ignored."""
    from transformers import CLIPConfig, CLIPModel

    reference = tiny(8)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    full = CLIPModel(CLIPConfig(vision_config=reference.model.config.to_dict(), text_config=text, projection_dim=16))
    full.vision_model.load_state_dict(reference.model.vision_model.state_dict())
    full.visual_projection.load_state_dict(reference.model.visual_projection.state_dict())
    full.save_pretrained(tmp_path / "full")  # no preprocessor_config.json: OpenAI's settings are used
    loaded = CLIPImageEncoder.from_options({"path": str(tmp_path / "full")})
    assert CLIPImageEncoder.output_dim_of(loaded.config) == 16
    media = [image(3)]
    # same weights (checked exactly); the outputs may differ in the last float bit (another memory layout)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))
    torch.testing.assert_close(encode(loaded, media), encode(reference, media), rtol=0, atol=1e-6)


def test_missing_folder_is_weights_not_found(tmp_path: Path) -> None:
    options = {"path": str(tmp_path / "no-such-clip")}
    with pytest.raises(WeightsNotFoundError, match="no-such-clip"):
        CLIPImageEncoder.from_options(options)
    with pytest.raises(WeightsNotFoundError, match="no-such-clip"):
        CLIPImageEncoder.output_dim_of(CLIPImageEncoder.make_config(options))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="empty"):
        CLIPImageEncoder.from_options({"path": str(tmp_path / "empty")})


def test_folder_without_weights_is_weights_not_found(tmp_path: Path) -> None:
    tiny().model.config.save_pretrained(tmp_path / "cfg-only")
    with pytest.raises(WeightsNotFoundError, match="cfg-only"):
        CLIPImageEncoder.from_options({"path": str(tmp_path / "cfg-only")})


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="leave"):
        CLIPImageEncoder.make_config({"path": "/x", "hidden_size": 8})
    with pytest.raises(ConfigError, match="multiple of num_attention_heads"):
        CLIPImageEncoder.make_config({**TINY, "num_attention_heads": 5})
    with pytest.raises(ConfigError, match="tokens"):
        CLIPImageEncoder.make_config({"tokens": "all"})
    with pytest.raises(ConfigError, match="feature_layer"):
        CLIPImageEncoder.make_config({**TINY, "feature_layer": 7})


def test_checkpoint_of_another_model_is_rejected(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in TINY.items() if k != "projection_dim"})).save_pretrained(tmp_path / "noproj")
    with pytest.raises(CheckpointError, match="visual_projection"):
        CLIPImageEncoder.from_options({"path": str(tmp_path / "noproj")})


def test_weights_that_do_not_fit_the_config_are_named(tmp_path: Path) -> None:
    import json

    tiny().model.save_pretrained(tmp_path / "bad")
    config = json.loads((tmp_path / "bad" / "config.json").read_text())
    (tmp_path / "bad" / "config.json").write_text(json.dumps({**config, "projection_dim": 8}))
    with pytest.raises(CheckpointError, match=r"mis-shaped \['visual_projection.weight: file \(16, 32\) vs config \(8, 32\)'\]"):
        CLIPImageEncoder.from_options({"path": str(tmp_path / "bad")})
