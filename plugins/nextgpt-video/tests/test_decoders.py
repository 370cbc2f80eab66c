"""Text-to-video decoders (ZeroScope / TextToVideoSDPipeline, AnimateDiff): conformance, the pipeline's own negative
for "", frame counts and fps, options, full-size description without weights, local folders, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nextgpt_core.errors import CheckpointError, ConditioningError, ConfigError, WeightsNotFoundError  # noqa: E402
from nextgpt_core.language_model import derived_seed  # noqa: E402
from nextgpt_core.testing.mixins import DecoderTesterMixin  # noqa: E402
from nextgpt_video.decoders import (  # noqa: E402
    AnimateDiffDecodeOptions,
    AnimateDiffVideoDecoder,
    VideoDecodeOptions,
    ZeroScopeVideoDecoder,
)
from nextgpt_video.media import Video  # noqa: E402

FAST = {"num_inference_steps": 2, "num_frames": 2, "height": 32, "width": 32}
DECODERS = [ZeroScopeVideoDecoder, AnimateDiffVideoDecoder]


def tiny(cls: type, **extra: Any) -> Any:
    """The tiny options of ``cls`` (a folder given as ``path`` keeps the tiny dims but loads instead of building)."""
    options = {**cls.tiny_options, **extra}
    if "path" in extra:
        options["tiny"] = False
    return cls.from_options(options)


def cond(decoder: Any, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {c.name: torch.randn(batch, c.length, c.dim, generator=g) for c in decoder.conditioning_inputs}


def frames(videos: list[Video]) -> np.ndarray:
    return np.stack([v.frames for v in videos])


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
class _VideoConformance(DecoderTesterMixin):
    """The mixin compares outputs with ``np.asarray``; a ``Video`` dataclass is not an array (its generated
    ``__eq__`` compares the frame arrays ambiguously), so runs hand the mixin the frames."""

    def run(self, decoder: Any) -> list[Any]:
        return [v.frames for v in super().run(decoder)]


class TestZeroScopeConformance(_VideoConformance):
    component_class = ZeroScopeVideoDecoder

    def get_init_dict(self) -> dict[str, Any]:
        return dict(ZeroScopeVideoDecoder.tiny_options)

    def get_decode_options(self) -> dict[str, Any]:
        return dict(FAST)


class TestAnimateDiffConformance(_VideoConformance):
    component_class = AnimateDiffVideoDecoder

    def get_init_dict(self) -> dict[str, Any]:
        return dict(AnimateDiffVideoDecoder.tiny_options)

    def get_decode_options(self) -> dict[str, Any]:
        return dict(FAST)


# ---------------------------------------------------------------------------------------------- declared inputs
def test_full_size_configs_describe_the_real_models_without_weights() -> None:
    zs = ZeroScopeVideoDecoder.from_options({"path": "/nowhere"})
    ad = AnimateDiffVideoDecoder.from_options({"path": "/nowhere"})
    assert zs.conditioning_inputs[0].name == "prompt_embeds"
    assert zs.conditioning_inputs[0].shape == (77, 1024)  # OpenCLIP ViT-H (cerspense/zeroscope_v2_576w)
    assert ad.conditioning_inputs[0].shape == (77, 768)  # CLIP ViT-L/14 (SD-1.5 base of AnimateDiff v1-5-2)
    assert not zs.is_loaded and not ad.is_loaded


def test_tiny_builds_have_different_conditioning_dims() -> None:
    zs, ad = tiny(ZeroScopeVideoDecoder), tiny(AnimateDiffVideoDecoder)
    assert zs.conditioning_inputs[0].shape == (77, 48) and ad.conditioning_inputs[0].shape == (77, 32)
    with pytest.raises(ConditioningError, match=r"expected \(B, 77, 48\)"):
        zs(cond(ad), **FAST)


def test_tiny_builds_are_the_real_classes() -> None:
    from diffusers import AnimateDiffPipeline, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel, UNetMotionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    zs, ad = tiny(ZeroScopeVideoDecoder).load(), tiny(AnimateDiffVideoDecoder).load()
    assert type(zs.pipe) is TextToVideoSDPipeline and isinstance(zs.pipe.unet, UNet3DConditionModel)
    assert type(ad.pipe) is AnimateDiffPipeline and isinstance(ad.pipe.unet, UNetMotionModel)
    for d in (zs, ad):
        assert isinstance(d.pipe.text_encoder, CLIPTextModel) and isinstance(d.pipe.tokenizer, CLIPTokenizer)
        assert d.pipe.text_encoder.config.max_position_embeddings == 77 == d.pipe.tokenizer.model_max_length
        assert d.pipe.unet.config.cross_attention_dim == d.conditioning_inputs[0].dim
        assert type(d.pipe.scheduler) is DDIMScheduler
    assert zs.pipe.scheduler.config.beta_schedule == "scaled_linear" and ad.pipe.scheduler.config.beta_schedule == "linear"


def test_zeroscope_does_not_log_the_deprecation_notice() -> None:
    from diffusers import TextToVideoSDPipeline

    records: list[logging.LogRecord] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Grab()
    logging.getLogger("diffusers").addHandler(handler)
    try:
        decoder = tiny(ZeroScopeVideoDecoder).load()
        assert not [r for r in records if "deprecated" in r.getMessage()]
        p = decoder.pipe
        TextToVideoSDPipeline(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet, scheduler=p.scheduler)
        assert [r for r in records if "deprecated" in r.getMessage()], "control: the notice is logged without the filter"
    finally:
        logging.getLogger("diffusers").removeHandler(handler)


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
    c = cond(decoder, batch=2)
    ours = decoder(c, generator=torch.Generator().manual_seed(3), **FAST)
    args = dict(num_inference_steps=2, num_frames=2, height=32, width=32, guidance_scale=7.5, output_type="np")
    with torch.no_grad():
        # one "" per row: diffusers mis-reshapes a single string negative when only prompt_embeds (batch > 1) is given
        theirs = pipe(prompt_embeds=c["prompt_embeds"], negative_prompt=["", ""], generator=torch.Generator().manual_seed(3), **args)
        zero = pipe(
            prompt_embeds=c["prompt_embeds"], negative_prompt_embeds=torch.zeros_like(c["prompt_embeds"]),
            generator=torch.Generator().manual_seed(3), **args,
        )
    expected = (np.clip(np.asarray(theirs.frames), 0, 1) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(frames(ours), expected)
    assert not np.array_equal(np.asarray(theirs.frames), np.asarray(zero.frames)), "the negative must matter"


# ---------------------------------------------------------------------------------------------- outputs and options
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_output_is_seeded(cls: type) -> None:
    decoder = tiny(cls)
    c = cond(decoder, batch=2)
    a, again, other = (decoder(c, generator=torch.Generator().manual_seed(s), **FAST) for s in (0, 0, 1))
    np.testing.assert_array_equal(frames(a), frames(again))
    assert not np.array_equal(frames(a), frames(other))
    assert not np.array_equal(a[0].frames, a[1].frames)  # rows differ (different conditioning)


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_videos_have_the_requested_frames_size_and_fps(cls: type) -> None:
    decoder = tiny(cls)
    out = decoder(cond(decoder, batch=2), **{**FAST, "num_frames": 3, "height": 40, "width": 48}, fps=12.5)
    assert len(out) == 2
    for video in out:
        assert isinstance(video, Video) and video.frames.dtype == np.uint8
        assert video.frames.shape == (3, 40, 48, 3) and video.fps == 12.5
    default_fps = decoder(cond(decoder), **FAST)[0]
    assert default_fps.fps == 8.0 and default_fps.frames.shape == (2, 32, 32, 3)


def test_options_defaults_are_next_gpt_legacy_and_bounded() -> None:
    o = VideoDecodeOptions()
    assert (o.guidance_scale, o.num_inference_steps, o.height, o.width, o.num_frames, o.fps) == (7.5, 40, 320, 576, 16, 8.0)
    a = AnimateDiffDecodeOptions()
    assert (a.guidance_scale, a.num_inference_steps, a.height, a.width, a.num_frames, a.fps) == (7.5, 40, None, None, 16, 8.0)
    zs, ad = tiny(ZeroScopeVideoDecoder), tiny(AnimateDiffVideoDecoder)
    for bad in ({"num_frames": 0}, {"fps": 0}, {"height": 33}, {"num_inference_steps": 0}, {"frames": 2}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            zs.make_options(bad)
    assert zs.make_options({"num_frames": 64}).num_frames == 64
    with pytest.raises(ConfigError, match="num_frames"):
        ad.make_options({"num_frames": 33})  # AnimateDiff's motion modules hold 32 positions
    assert not zs.is_loaded and not ad.is_loaded


# ---------------------------------------------------------------------------------------------- local folders
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_loads_a_saved_pipeline_from_a_local_folder(cls: type, tmp_path: Path) -> None:
    built = tiny(cls).load()
    built.pipe.save_pretrained(tmp_path / "pipe")
    loaded = tiny(cls, path=str(tmp_path / "pipe"))
    torch.testing.assert_close(loaded.unconditional()["prompt_embeds"], built.unconditional()["prompt_embeds"], rtol=0, atol=0)
    assert loaded.pipe is not built.pipe and type(loaded.pipe) is type(built.pipe)
    c = cond(built, batch=2)
    a = built(c, generator=torch.Generator().manual_seed(5), **FAST)
    b = loaded(c, generator=torch.Generator().manual_seed(5), **FAST)
    assert_same_media(frames(a), frames(b))


def test_animatediff_from_an_sd15_base_folder_and_a_motion_adapter_folder(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    built = tiny(AnimateDiffVideoDecoder)
    with torch.random.fork_rng(devices=[]):  # the same draws as the tiny build: its base and adapter, unmerged
        torch.manual_seed(derived_seed(0, "AnimateDiffVideoDecoder"))
        parts = built.tiny_parts()
    adapter = parts.pop("motion_adapter")
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(
        tmp_path / "sd15"
    )
    adapter.save_pretrained(tmp_path / "adapter")
    loaded = tiny(AnimateDiffVideoDecoder, path=str(tmp_path / "sd15"), motion_adapter_path=str(tmp_path / "adapter"))
    c = cond(built, batch=1)
    a = built(c, generator=torch.Generator().manual_seed(2), **FAST)
    b = loaded(c, generator=torch.Generator().manual_seed(2), **FAST)
    assert loaded.pipe.scheduler.config.beta_schedule == "linear"
    assert_same_media(frames(a), frames(b))


def test_missing_motion_adapter_folder_is_weights_not_found(tmp_path: Path) -> None:
    tiny(AnimateDiffVideoDecoder).load().pipe.save_pretrained(tmp_path / "pipe")
    decoder = tiny(AnimateDiffVideoDecoder, tiny=False, path=str(tmp_path / "pipe"), motion_adapter_path=str(tmp_path / "no-adapter"))
    with pytest.raises(WeightsNotFoundError, match="no-adapter"):
        decoder.load()


def test_folder_of_another_width_is_rejected(tmp_path: Path) -> None:
    tiny(ZeroScopeVideoDecoder).load().pipe.save_pretrained(tmp_path / "zs")
    with pytest.raises(CheckpointError, match=r"77x48.*77x1024"):
        ZeroScopeVideoDecoder.from_options({"path": str(tmp_path / "zs")}).load()  # full-size default declares 1024


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_missing_folder_is_weights_not_found_naming_it(cls: type, tmp_path: Path) -> None:
    decoder = cls.from_options({"path": str(tmp_path / "no-such-video-model")})
    with pytest.raises(WeightsNotFoundError, match="no-such-video-model"):
        decoder.unconditional()
    assert not decoder.is_loaded


# ---------------------------------------------------------------------------------------------- stage-2 text targets
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_encode_text_is_the_pipelines_own_prompt_encoding(cls: type) -> None:
    decoder = tiny(cls)
    captions = ["a dog runs on the beach", "timelapse of clouds over mountains"]
    targets = decoder.encode_text(captions)["prompt_embeds"]
    pipe, tok = decoder.pipe, decoder.pipe.tokenizer
    ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(targets, pipe.text_encoder(ids)[0], rtol=0, atol=0)
        ref, _ = pipe.encode_prompt(captions, torch.device("cpu"), 1, False)
    torch.testing.assert_close(targets, ref, rtol=0, atol=0)
    ours = decoder({"prompt_embeds": targets}, generator=torch.Generator().manual_seed(3), **FAST)
    args = dict(num_inference_steps=2, num_frames=2, height=32, width=32, guidance_scale=7.5, output_type="np")
    with torch.no_grad():
        theirs = pipe(prompt=captions, negative_prompt=["", ""], generator=torch.Generator().manual_seed(3), **args)
    expected = (np.clip(np.asarray(theirs.frames), 0, 1) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(frames(ours), expected)
