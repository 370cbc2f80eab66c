"""Stable Diffusion image decoders (SD-1.5, SD-2): conformance, the pipeline's own negative for "", sizes, options,
full-size description without weights, loading a saved pipeline from a local folder, errors."""

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

from nextgpt_core.errors import CheckpointError, ConditioningError, ConfigError, WeightsNotFoundError  # noqa: E402
from nextgpt_core.interfaces import ConditioningInput  # noqa: E402
from nextgpt_core.testing.mixins import DecoderTesterMixin  # noqa: E402
from nextgpt_image.decoders import (  # noqa: E402
    ImageDecodeOptions,
    StableDiffusion2ImageDecoder,
    StableDiffusionImageDecoder,
)

FAST = {"num_inference_steps": 2}
DECODERS = [StableDiffusionImageDecoder, StableDiffusion2ImageDecoder]


def tiny(cls: type, **extra: Any) -> Any:
    """The tiny options of ``cls`` (a folder given as ``path`` keeps the tiny dims but loads instead of building)."""
    options = {**cls.tiny_options, **extra}
    if "path" in extra:
        options["tiny"] = False
    return cls.from_options(options)


def cond(decoder: Any, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {c.name: torch.randn(batch, c.length, c.dim, generator=g) for c in decoder.conditioning_inputs}


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images])


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """The tiny models are faster on one thread (and immune to OpenMP spinning on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_media(a: np.ndarray, b: np.ndarray) -> None:
    """Two separately built/loaded instances of the same weights: equal up to one uint8 level on a few values
    (float32 kernels may sum in another order on another instance; a value on a rounding edge flips)."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"max diff {diff.max()}, {(diff > 0).mean():.2%} differ"


# ---------------------------------------------------------------------------------------------- conformance
class TestStableDiffusionConformance(DecoderTesterMixin):
    component_class = StableDiffusionImageDecoder

    def get_init_dict(self) -> dict[str, Any]:
        return dict(StableDiffusionImageDecoder.tiny_options)

    def get_decode_options(self) -> dict[str, Any]:
        return dict(FAST)


class TestStableDiffusion2Conformance(DecoderTesterMixin):
    component_class = StableDiffusion2ImageDecoder

    def get_init_dict(self) -> dict[str, Any]:
        return dict(StableDiffusion2ImageDecoder.tiny_options)

    def get_decode_options(self) -> dict[str, Any]:
        return dict(FAST)


# ---------------------------------------------------------------------------------------------- declared inputs
def test_full_size_configs_describe_the_real_models_without_weights() -> None:
    sd15 = StableDiffusionImageDecoder.from_options({"path": "/nowhere"})
    sd2 = StableDiffusion2ImageDecoder.from_options({"path": "/nowhere"})
    assert sd15.conditioning_inputs == (ConditioningInput("prompt_embeds", 77, 768, sd15.conditioning_inputs[0].description),)
    assert sd15.conditioning_inputs[0].shape == (77, 768)  # CLIP ViT-L/14 (runwayml/stable-diffusion-v1-5)
    assert sd2.conditioning_inputs[0].shape == (77, 1024)  # OpenCLIP ViT-H (stabilityai/stable-diffusion-2)
    assert not sd15.is_loaded and not sd2.is_loaded and sd15.pipe is None


def test_tiny_builds_have_different_conditioning_dims() -> None:
    sd15, sd2 = tiny(StableDiffusionImageDecoder), tiny(StableDiffusion2ImageDecoder)
    assert sd15.conditioning_inputs[0].shape == (77, 32)
    assert sd2.conditioning_inputs[0].shape == (77, 48)
    # conditioning fit for one family (e.g. an SD-1.5 output projector's (B, 77, 32)) is rejected by the other
    with pytest.raises(ConditioningError, match=r"expected \(B, 77, 48\)"):
        sd2(cond(sd15), **FAST)
    with pytest.raises(ConditioningError, match=r"expected \(B, 77, 32\)"):
        sd15(cond(sd2), **FAST)


def test_tiny_builds_are_the_real_classes_with_each_familys_scheduler_and_text_encoder() -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd15, sd2 = tiny(StableDiffusionImageDecoder).load(), tiny(StableDiffusion2ImageDecoder).load()
    for d in (sd15, sd2):
        p = d.pipe
        assert type(p) is StableDiffusionPipeline and p.safety_checker is None
        assert isinstance(p.unet, UNet2DConditionModel) and isinstance(p.vae, AutoencoderKL)
        assert isinstance(p.text_encoder, CLIPTextModel) and isinstance(p.tokenizer, CLIPTokenizer)
        assert p.text_encoder.config.max_position_embeddings == 77 == p.tokenizer.model_max_length
        assert p.unet.config.cross_attention_dim == p.text_encoder.config.hidden_size == d.conditioning_inputs[0].dim
    assert type(sd15.pipe.scheduler) is PNDMScheduler and sd15.pipe.scheduler.config.skip_prk_steps
    assert type(sd2.pipe.scheduler) is DDIMScheduler and sd2.pipe.scheduler.config.prediction_type == "v_prediction"
    assert sd15.pipe.text_encoder.config.hidden_act == "quick_gelu" and sd2.pipe.text_encoder.config.hidden_act == "gelu"
    assert sd2.pipe.unet.config.use_linear_projection and not sd15.pipe.unet.config.use_linear_projection


# ---------------------------------------------------------------------------------------------- unconditional
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_unconditional_is_the_pipelines_own_negative_for_empty_prompt(cls: type) -> None:
    decoder = tiny(cls)
    uncond = decoder.unconditional()["prompt_embeds"]
    pipe, tok = decoder.pipe, decoder.pipe.tokenizer
    ids = tok([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids[0, :2].tolist() == [tok.bos_token_id, tok.eos_token_id] and set(ids[0, 2:].tolist()) == {tok.pad_token_id}
    with torch.no_grad():
        torch.testing.assert_close(uncond, pipe.text_encoder(ids)[0], rtol=0, atol=0)
    # end to end: our cached negative gives exactly what the pipeline does with negative_prompt="" (one per row:
    # diffusers mis-reshapes a single string negative when only prompt_embeds of batch > 1 is given)
    c = cond(decoder, batch=2)
    ours = decoder(c, generator=torch.Generator().manual_seed(3), **FAST)
    with torch.no_grad():
        theirs = pipe(
            prompt_embeds=c["prompt_embeds"], negative_prompt=["", ""], generator=torch.Generator().manual_seed(3),
            num_inference_steps=2, guidance_scale=7.5, output_type="pil",
        ).images
    np.testing.assert_array_equal(pixels(ours), pixels(theirs))
    # and the negative matters (guidance on)
    with torch.no_grad():
        zero_neg = pipe(
            prompt_embeds=c["prompt_embeds"], negative_prompt_embeds=torch.zeros_like(c["prompt_embeds"]),
            generator=torch.Generator().manual_seed(3), num_inference_steps=2, output_type="pil",
        ).images
    assert not np.array_equal(pixels(ours), pixels(zero_neg))


# ---------------------------------------------------------------------------------------------- outputs and options
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_outputs_are_rgb_pil_images_of_the_requested_size(cls: type) -> None:
    decoder = tiny(cls)
    default = decoder(cond(decoder), **FAST)
    assert isinstance(default[0], Image.Image) and default[0].mode == "RGB" and default[0].size == (32, 32)
    sized = decoder(cond(decoder, batch=2), height=48, width=40, **FAST)
    assert len(sized) == 2 and all(im.size == (40, 48) for im in sized)  # PIL size is (width, height)


def test_options_defaults_are_next_gpt_legacy_and_bounded() -> None:
    opts = ImageDecodeOptions()
    assert (opts.guidance_scale, opts.num_inference_steps, opts.height, opts.width) == (7.5, 40, None, None)
    decoder = tiny(StableDiffusionImageDecoder)
    for bad in ({"num_inference_steps": 0}, {"height": 36}, {"width": 0}, {"guidance_scale": -1.0}, {"steps": 2}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            decoder.make_options(bad)
    assert not decoder.is_loaded  # options are validated before anything loads


def test_guidance_scale_changes_the_output() -> None:
    decoder = tiny(StableDiffusionImageDecoder)
    c = cond(decoder)
    a = decoder(c, generator=torch.Generator().manual_seed(0), guidance_scale=1.0, **FAST)
    b = decoder(c, generator=torch.Generator().manual_seed(0), guidance_scale=7.5, **FAST)
    assert not np.array_equal(pixels(a), pixels(b))


def test_pipeline_dtype_is_honoured() -> None:
    decoder = tiny(StableDiffusionImageDecoder, dtype="bfloat16")
    out = decoder(cond(decoder), **FAST)  # float32 conditioning is cast to the pipeline's dtype
    assert decoder.pipe.unet.dtype == torch.bfloat16 and decoder.unconditional()["prompt_embeds"].dtype == torch.bfloat16
    assert out[0].size == (32, 32)


# ---------------------------------------------------------------------------------------------- local folders
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_loads_a_saved_pipeline_from_a_local_folder(cls: type, tmp_path: Path) -> None:
    built = tiny(cls).load()
    built.pipe.save_pretrained(tmp_path / "pipe")
    loaded = tiny(cls, path=str(tmp_path / "pipe"))
    assert not loaded.is_loaded
    torch.testing.assert_close(loaded.unconditional()["prompt_embeds"], built.unconditional()["prompt_embeds"], rtol=0, atol=0)
    assert loaded.pipe is not built.pipe and loaded.pipe.safety_checker is None
    assert type(loaded.pipe.scheduler) is type(built.pipe.scheduler)
    c = cond(built, batch=2)
    a = built(c, generator=torch.Generator().manual_seed(5), **FAST)
    b = loaded(c, generator=torch.Generator().manual_seed(5), **FAST)
    assert_same_media(pixels(a), pixels(b))


def test_folder_of_the_other_family_is_rejected(tmp_path: Path) -> None:
    tiny(StableDiffusionImageDecoder).load().pipe.save_pretrained(tmp_path / "sd15")
    wrong = tiny(StableDiffusion2ImageDecoder, tiny=False, path=str(tmp_path / "sd15"))
    with pytest.raises(CheckpointError, match=r"77x32.*77x48"):
        wrong.load()


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_missing_folder_is_weights_not_found_naming_it(cls: type, tmp_path: Path) -> None:
    decoder = cls.from_options({"path": str(tmp_path / "no-such-sd")})  # construction is cheap, never loads
    with pytest.raises(WeightsNotFoundError, match="no-such-sd"):
        decoder.unconditional()
    assert not decoder.is_loaded


# ---------------------------------------------------------------------------------------------- stage-2 text targets
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_encode_text_is_the_pipelines_own_prompt_encoding(cls: type) -> None:
    decoder = tiny(cls)
    captions = ["a photo of a cat", "an oil painting of a lighthouse at dusk"]
    targets = decoder.encode_text(captions)["prompt_embeds"]
    pipe, tok = decoder.pipe, decoder.pipe.tokenizer
    ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(targets, pipe.text_encoder(ids)[0], rtol=0, atol=0)  # CLIP last_hidden_state
        ref, _ = pipe.encode_prompt(captions, torch.device("cpu"), 1, False)
    torch.testing.assert_close(targets, ref, rtol=0, atol=0)
    # end to end: feeding the target gives what the pipeline generates for prompt=caption
    ours = decoder({"prompt_embeds": targets}, generator=torch.Generator().manual_seed(3), **FAST)
    with torch.no_grad():
        theirs = pipe(
            prompt=captions, negative_prompt=["", ""], generator=torch.Generator().manual_seed(3),
            num_inference_steps=2, guidance_scale=7.5, output_type="pil",
        ).images
    np.testing.assert_array_equal(pixels(ours), pixels(theirs))


def test_encode_text_rejects_a_bare_string_and_no_captions() -> None:
    decoder = tiny(StableDiffusionImageDecoder)
    with pytest.raises(TypeError, match="single string"):
        decoder.encode_text("a cat")
    with pytest.raises(ValueError, match="at least one"):
        decoder.encode_text([])
