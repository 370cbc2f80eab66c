"""AudioLDM / AudioLDM2 decoders over tiny random-init instances of the real diffusers/transformers classes.

Every decode runs 1 s of audio with 2 denoising steps. The references are the real pipelines themselves: the
decoders must give exactly what ``AudioLDMPipeline`` / ``AudioLDM2Pipeline`` give when they encode ``""``
themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nextgpt_audio.decoders import (
    AudioLDM2AudioDecoder,
    AudioLDM2DecodeOptions,
    AudioLDMAudioDecoder,
    AudioLDMDecodeOptions,
)
from nextgpt_audio.media import Audio
from nextgpt_core.errors import ConditioningError, ConfigError, WeightsNotFoundError
from nextgpt_core.testing.mixins import DecoderTesterMixin

FAST = {"num_inference_steps": 2, "audio_length_in_s": 1.0}


def _cond(decoder: Any, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {c.name: torch.randn(batch, c.length, c.dim, generator=g) for c in decoder.conditioning_inputs}


def _assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float noise relative to the signal's scale (tiny random vocoders give ~1e-11 amplitudes)."""
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def _samples(audios: list[Audio]) -> np.ndarray:
    assert all(isinstance(a, Audio) and a.sample_rate == 16000 for a in audios)
    assert all(a.samples.dtype == np.float32 and a.samples.ndim == 1 for a in audios)
    return np.stack([a.samples for a in audios])


class _AudioConformance(DecoderTesterMixin):
    """The core's decoder contract; ``run`` returns the sample arrays so the mixin can compare them."""

    def get_init_dict(self) -> dict[str, Any]:
        return {"tiny": True}

    def get_decode_options(self) -> dict[str, Any]:
        return dict(FAST)

    def run(self, decoder: Any) -> list[np.ndarray]:  # type: ignore[override]
        return list(_samples(super().run(decoder)))

    def test_generates_one_item_per_row_and_is_seeded(self) -> None:
        # the mixin's version compares np.asarray(media) of the raw outputs; Audio (a dataclass over an ndarray,
        # no __array__) would make that comparison vacuous, so the same checks run here on the samples
        decoder = self.make()
        out = _samples(decoder(self.conditioning(decoder), generator=torch.Generator().manual_seed(0), **FAST))
        again = _samples(decoder(self.conditioning(decoder), generator=torch.Generator().manual_seed(0), **FAST))
        other = _samples(decoder(self.conditioning(decoder), generator=torch.Generator().manual_seed(1), **FAST))
        assert out.shape == (self.batch, 16000)
        np.testing.assert_array_equal(out, again)
        assert not np.array_equal(out[0], other[0]), "the generator seed must matter"


class TestAudioLDMConformance(_AudioConformance):
    component_class = AudioLDMAudioDecoder


class TestAudioLDM2Conformance(_AudioConformance):
    component_class = AudioLDM2AudioDecoder


# ---------------------------------------------------------------------------------------------- shared
def test_options_defaults_are_official_nextgpt() -> None:
    for cls in (AudioLDMDecodeOptions, AudioLDM2DecodeOptions):
        opts = cls()
        assert (opts.guidance_scale, opts.num_inference_steps, opts.audio_length_in_s) == (7.5, 40, 5.0)
    decoder = AudioLDMAudioDecoder.from_options({"tiny": True})
    for bad in ({"num_inference_steps": 0}, {"audio_length_in_s": 0}, {"guidance_scale": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            decoder.make_options(bad)


def test_declared_shapes_tiny_and_real() -> None:
    (ldm,) = AudioLDMAudioDecoder.conditioning_inputs_of(AudioLDMAudioDecoder.make_config({"tiny": True}))
    assert (ldm.name, ldm.shape) == ("prompt_embeds", (1, 32))
    real = AudioLDMAudioDecoder.make_config({"path": "/nowhere"})
    assert AudioLDMAudioDecoder.conditioning_inputs_of(real)[0].shape == (1, 512)
    t5, gpt = AudioLDM2AudioDecoder.conditioning_inputs_of(AudioLDM2AudioDecoder.make_config({"tiny": True}))
    assert (t5.name, t5.shape, gpt.name, gpt.shape) == ("prompt_embeds", (77, 32), "generated_prompt_embeds", (8, 16))
    real2 = AudioLDM2AudioDecoder.make_config({"path": "/nowhere"})
    assert [c.shape for c in AudioLDM2AudioDecoder.conditioning_inputs_of(real2)] == [(77, 1024), (8, 768)]


@pytest.mark.parametrize("cls", [AudioLDMAudioDecoder, AudioLDM2AudioDecoder])
def test_missing_folder_is_weights_not_found(cls: Any, tmp_path: Path) -> None:
    decoder = cls.from_options({"path": str(tmp_path / "nope")})
    with pytest.raises(WeightsNotFoundError, match="nope"):
        decoder.unconditional()
    assert not decoder.is_loaded


def test_too_short_audio_is_a_config_error() -> None:
    decoder = AudioLDMAudioDecoder.from_options({"tiny": True})
    with pytest.raises(ConfigError, match="audio_length_in_s"):
        decoder(_cond(decoder, 1), num_inference_steps=2, audio_length_in_s=0.01)


# ---------------------------------------------------------------------------------------------- AudioLDM
def test_audioldm_unconditional_is_the_pipelines_negative_for_empty_prompt() -> None:
    decoder = AudioLDMAudioDecoder.from_options({"tiny": True})
    uncond = decoder.unconditional()["prompt_embeds"]
    assert uncond.shape == (1, 1, 32)
    pipe = decoder.pipe
    seen: list[torch.Tensor] = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a, k: seen.append(k["class_labels"]), with_kwargs=True)
    try:  # the pipeline encodes "" itself when given no negative (guidance on)
        pipe(prompt_embeds=torch.randn(1, 32), num_inference_steps=1, audio_length_in_s=1.0, guidance_scale=7.5)
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0][:1], uncond[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(uncond.norm(dim=-1), torch.ones(1, 1))  # CLAP text_embeds, L2-normalised


@pytest.mark.parametrize("normalize", [False, True])
def test_audioldm_feeds_the_2d_reshape_as_the_pipeline(normalize: bool) -> None:
    decoder = AudioLDMAudioDecoder.from_options({"tiny": True, "normalize_embeds": normalize})
    cond = _cond(decoder)
    out = _samples(decoder(cond, generator=torch.Generator().manual_seed(0), **FAST))
    flat = cond["prompt_embeds"].reshape(2, 32)  # (B, 1, D) -> the pipeline's 2-D (B, D)
    flat = F.normalize(flat, dim=-1) if normalize else flat
    ref = decoder.pipe(prompt_embeds=flat, generator=torch.Generator().manual_seed(0), guidance_scale=7.5, **FAST)
    _assert_close(out, ref.audios)  # the pipeline encodes "" for the whole batch itself: float noise only


def test_audioldm_output_length_follows_audio_length() -> None:
    decoder = AudioLDMAudioDecoder.from_options({"tiny": True})
    (audio,) = decoder(_cond(decoder, 1), generator=torch.Generator().manual_seed(0), num_inference_steps=2, audio_length_in_s=0.75)
    assert audio.samples.shape == (12000,) and audio.duration == 0.75


def test_audioldm_save_load_through_path(tmp_path: Path) -> None:
    built = AudioLDMAudioDecoder.from_options({"tiny": True})
    built.load().pipe.save_pretrained(tmp_path / "ldm")
    loaded = AudioLDMAudioDecoder.from_options({"path": str(tmp_path / "ldm"), "embed_dim": 32})
    torch.testing.assert_close(loaded.unconditional()["prompt_embeds"], built.unconditional()["prompt_embeds"], rtol=0, atol=0)
    cond = _cond(built)
    a = _samples(built(cond, generator=torch.Generator().manual_seed(3), **FAST))
    b = _samples(loaded(cond, generator=torch.Generator().manual_seed(3), **FAST))
    np.testing.assert_array_equal(a, b)
    # the real default (512) does not fit the tiny folder: a one-line error naming the field
    with pytest.raises(ConfigError, match="embed_dim=512"):
        AudioLDMAudioDecoder.from_options({"path": str(tmp_path / "ldm")}).load()


# ---------------------------------------------------------------------------------------------- AudioLDM2
def _pipeline_with_lm_head(decoder: AudioLDM2AudioDecoder) -> Any:
    """The decoder's pipeline with a GPT2LMHeadModel (same weights) as language model: the pipeline's own
    ``generate_language_model`` needs ``_update_model_kwargs_for_generation``, which GPT2Model lacks in
    transformers 5."""
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel(decoder.pipe.language_model.config).eval()
    lm.transformer.load_state_dict(decoder.pipe.language_model.state_dict())
    pipe = AudioLDM2Pipeline(**{**decoder.pipe.components, "language_model": lm})
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # the pipeline's own GPT-2 loop
def test_audioldm2_unconditional_is_the_pipelines_encoding_of_empty_prompt() -> None:
    decoder = AudioLDM2AudioDecoder.from_options({"tiny": True})
    uncond = decoder.unconditional()
    assert uncond["prompt_embeds"].shape == (1, 77, 32) and uncond["generated_prompt_embeds"].shape == (1, 8, 16)
    mask = decoder.negative_attention_mask
    assert mask is not None and mask.shape == (1, 77) and mask.sum() == 1  # "" is one T5 token (</s>)
    pipe = _pipeline_with_lm_head(decoder)
    embeds, masks, generated = pipe.encode_prompt(
        None,
        torch.device("cpu"),
        1,
        True,
        prompt_embeds=torch.zeros(1, 77, 32),
        generated_prompt_embeds=torch.zeros(1, 8, 16),
        attention_mask=torch.ones(1, 77, dtype=torch.long),
        max_new_tokens=8,
    )  # (2, ...): [negative for "", the placeholders]
    torch.testing.assert_close(uncond["prompt_embeds"], embeds[:1], rtol=0, atol=0)
    torch.testing.assert_close(mask, masks[:1], rtol=0, atol=0)
    torch.testing.assert_close(uncond["generated_prompt_embeds"], generated[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # the pipeline's own GPT-2 loop
def test_audioldm2_output_equals_the_pipeline_encoding_its_own_negative() -> None:
    decoder = AudioLDM2AudioDecoder.from_options({"tiny": True})
    cond = _cond(decoder)
    out = _samples(decoder(cond, generator=torch.Generator().manual_seed(0), **FAST))
    ref = _pipeline_with_lm_head(decoder)(
        prompt_embeds=cond["prompt_embeds"],
        attention_mask=torch.ones(2, 77, dtype=torch.long),
        generated_prompt_embeds=cond["generated_prompt_embeds"],
        max_new_tokens=8,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(0),
        **FAST,
    )
    _assert_close(out, ref.audios)


def test_audioldm2_rejects_a_misshaped_second_input_naming_it() -> None:
    decoder = AudioLDM2AudioDecoder.from_options({"tiny": True})
    names = [c.name for c in decoder.conditioning_inputs]
    assert names == ["prompt_embeds", "generated_prompt_embeds"]
    good = _cond(decoder)
    for bad in (good["generated_prompt_embeds"][:, :-1], good["generated_prompt_embeds"][..., :-1]):
        with pytest.raises(ConditioningError, match="'generated_prompt_embeds'"):
            decoder({**good, "generated_prompt_embeds": bad}, **FAST)
    with pytest.raises(ConditioningError, match="missing"):
        decoder({"prompt_embeds": good["prompt_embeds"]}, **FAST)
    assert not decoder.is_loaded  # rejected before any weights are built


def test_audioldm2_prompt_length_is_configurable() -> None:
    decoder = AudioLDM2AudioDecoder.from_options({"tiny": True, "prompt_length": 12, "generated_length": 4})
    assert [c.shape for c in decoder.conditioning_inputs] == [(12, 32), (4, 16)]
    uncond = decoder.unconditional()
    assert uncond["prompt_embeds"].shape == (1, 12, 32) and uncond["generated_prompt_embeds"].shape == (1, 4, 16)
    (audio,) = decoder(_cond(decoder, 1), generator=torch.Generator().manual_seed(0), **FAST)
    assert audio.samples.shape == (16000,)


def test_audioldm2_save_load_through_path(tmp_path: Path) -> None:
    built = AudioLDM2AudioDecoder.from_options({"tiny": True})
    built.load().pipe.save_pretrained(tmp_path / "ldm2")  # feature_extractor=None is written as [null, null]
    options = {"path": str(tmp_path / "ldm2"), "prompt_dim": 32, "generated_dim": 16}
    loaded = AudioLDM2AudioDecoder.from_options(options)
    for name, tensor in built.unconditional().items():
        torch.testing.assert_close(loaded.unconditional()[name], tensor, rtol=0, atol=0)
    cond = _cond(built)
    a = _samples(built(cond, generator=torch.Generator().manual_seed(3), **FAST))
    b = _samples(loaded(cond, generator=torch.Generator().manual_seed(3), **FAST))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="prompt_dim.*generated_dim"):  # real defaults 1024/768 do not fit
        AudioLDM2AudioDecoder.from_options({"path": str(tmp_path / "ldm2")}).load()


def test_audioldm2_folder_without_text_parts_is_rejected_naming_them(tmp_path: Path) -> None:
    from diffusers import AudioLDM2Pipeline

    built = AudioLDM2AudioDecoder.from_options({"tiny": True})
    stripped = AudioLDM2Pipeline(**{**built.load().pipe.components, "text_encoder": None, "projection_model": None})
    stripped.save_pretrained(tmp_path / "stripped")
    decoder = AudioLDM2AudioDecoder.from_options({"path": str(tmp_path / "stripped"), "prompt_dim": 32, "generated_dim": 16})
    with pytest.raises(ConfigError, match=r"lacks \['text_encoder', 'projection_model'\]"):
        decoder.load()
    assert not decoder.is_loaded and decoder.pipe is None


def test_audioldm2_dtype_is_honoured() -> None:
    decoder = AudioLDM2AudioDecoder.from_options({"tiny": True, "dtype": "bfloat16"})
    uncond = decoder.unconditional()
    assert decoder.pipe.unet.dtype == torch.bfloat16 and decoder.pipe.text_encoder_2.dtype == torch.bfloat16
    assert all(t.dtype == torch.bfloat16 for t in uncond.values())


# ---------------------------------------------------------------------------------------------- stage-2 text targets
def test_audioldm_encode_text_is_the_pipelines_normalised_clap_prompt_encoding() -> None:
    decoder = AudioLDMAudioDecoder.from_options({"tiny": True})
    captions = ["a dog barks twice", "rain falls on a tin roof"]
    targets = decoder.encode_text(captions)["prompt_embeds"]
    assert targets.shape == (2, 1, 32)
    pipe = decoder.pipe
    with torch.no_grad():
        ref = pipe._encode_prompt(captions, torch.device("cpu"), 1, False)  # (B, D): CLAP text_embeds, normalised
        ids = pipe.tokenizer(captions, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
        raw = pipe.text_encoder(ids.input_ids, attention_mask=ids.attention_mask).text_embeds
    torch.testing.assert_close(targets[:, 0], ref, rtol=0, atol=0)
    torch.testing.assert_close(targets[:, 0], F.normalize(raw, dim=-1), rtol=0, atol=0)
    torch.testing.assert_close(targets.norm(dim=-1), torch.ones(2, 1))  # the official targets are L2-normalised
    # end to end: feeding the target gives what the pipeline generates for prompt=caption
    out = _samples(decoder({"prompt_embeds": targets}, generator=torch.Generator().manual_seed(0), **FAST))
    ref_audio = pipe(prompt=captions, generator=torch.Generator().manual_seed(0), guidance_scale=7.5, **FAST)
    _assert_close(out, ref_audio.audios)


def _t5_caption_of(decoder: AudioLDM2AudioDecoder, n_tokens: int) -> str:
    """A caption the tiny T5 tokenizer turns into exactly ``n_tokens`` ids (``</s>`` included)."""
    tok = decoder.pipe.tokenizer_2
    for words in range(1, 4 * n_tokens):
        caption = " ".join(["ab"] * words)
        n = len(tok(caption).input_ids)
        if n == n_tokens:
            return caption
        for extra in ("a", "ab c"):
            if len(tok(f"{caption} {extra}").input_ids) == n_tokens:
                return f"{caption} {extra}"
    raise AssertionError(f"no caption of {n_tokens} T5 tokens")


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # the pipeline's own GPT-2 loop
def test_audioldm2_encode_text_is_the_pipelines_prompt_encoding_padded_to_s() -> None:
    decoder = AudioLDM2AudioDecoder.from_options({"tiny": True, "prompt_length": 12, "generated_length": 4})
    decoder.load()
    full = _t5_caption_of(decoder, 12)  # the batch's longest prompt: the pipeline pads the batch to S = 12
    captions = ["a cat", full]
    targets = decoder.encode_text(captions)
    assert targets["prompt_embeds"].shape == (2, 12, 32) and targets["generated_prompt_embeds"].shape == (2, 4, 16)
    pipe = _pipeline_with_lm_head(decoder)
    with torch.no_grad():
        embeds, mask, generated = pipe.encode_prompt(captions, torch.device("cpu"), 1, False, max_new_tokens=4)
    assert embeds.shape == (2, 12, 32) and mask[0].sum() < 12 and mask[1].sum() == 12
    torch.testing.assert_close(targets["prompt_embeds"], embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(targets["generated_prompt_embeds"], generated, rtol=1e-5, atol=1e-6)
    # a caption longer than S is cut to S (keeping </s>), as the tokenizer truncates
    long = decoder.encode_text([full + " and more words here"])
    assert long["prompt_embeds"].shape == (1, 12, 32)
