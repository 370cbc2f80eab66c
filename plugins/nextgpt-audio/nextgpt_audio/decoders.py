"""Audio decoders: AudioLDM (the NExT-GPT v0 decoder) and AudioLDM2, fed with conditioning embeddings.

Both wrap the real diffusers pipelines (``AudioLDMPipeline``, ``AudioLDM2Pipeline``) through
:class:`nextgpt_core.diffusers_decoder.DiffusersDecoder`: weights come from a local folder only (``path``), or, with
``tiny = true``, a tiny random-init instance of the real classes is built (tests, the ``tiny`` composition).

Conditioning inputs (per item ``(length, dim)``; ``B`` is the batch):

- :class:`AudioLDMAudioDecoder`: ``prompt_embeds (B, 1, 512)`` (AudioLDM-l-full CLAP text projection; tiny: 32),
  reshaped to the pipeline's 2-D ``(B, 512)``.
- :class:`AudioLDM2AudioDecoder`: ``prompt_embeds (B, S, 1024)`` (flan-T5-large sequence, ``S = prompt_length``,
  default 77; tiny: dim 32) and ``generated_prompt_embeds (B, 8, 768)`` (GPT-2 sequence; tiny: dim 16).

Output: one :class:`~nextgpt_audio.media.Audio` per row, mono float32 samples ``(n,)`` at the vocoder's rate
(16 kHz), ``n = int(audio_length_in_s * 16000)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from nextgpt_core.diffusers_decoder import DiffusersDecoder, DiffusersDecoderConfig, check_captions, folder_config
from nextgpt_core.errors import ConfigError
from nextgpt_core.interfaces import ComponentConfig, ConditioningInput, DecodeOptions

from .media import Audio

__all__ = [
    "AudioLDM2AudioDecoder",
    "AudioLDM2DecodeOptions",
    "AudioLDM2DecoderConfig",
    "AudioLDMAudioDecoder",
    "AudioLDMDecodeOptions",
    "AudioLDMDecoderConfig",
]


# ---------------------------------------------------------------------------------------------- shared
class AudioLDMDecodeOptions(DecodeOptions):
    """Per-request options of :class:`AudioLDMAudioDecoder`; defaults are the official NExT-GPT ones
    (``generate_audios(guidance_scale=7.5, num_inference_steps=40, audio_length_in_s=5.0)``; the Gradio demo used
    50 steps and 1–9 s).

    Attributes:
        guidance_scale: classifier-free guidance weight; ``<= 1`` disables guidance (the negative is unused).
        num_inference_steps: denoising steps.
        audio_length_in_s: output length in seconds; the waveform has ``int(audio_length_in_s * 16000)`` samples.
    """

    guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
    num_inference_steps: int = Field(default=40, ge=1, le=1000)
    audio_length_in_s: float = Field(default=5.0, gt=0.0, le=60.0)


class AudioLDM2DecodeOptions(AudioLDMDecodeOptions):
    """Per-request options of :class:`AudioLDM2AudioDecoder`: the same fields and official NExT-GPT defaults as
    :class:`AudioLDMDecodeOptions` (the AudioLDM2 pipeline's own defaults, 3.5 / 200 steps / 10.24 s, are not used)."""


def _tiny_vae_vocoder_scheduler() -> tuple[Any, Any, Any]:
    """The tiny AutoencoderKL (3 blocks, vae_scale_factor 4, 4 latent channels), SpeechT5HifiGan (64 mel bins,
    hop 160, 16 kHz: the real geometry) and the AudioLDM DDIM scheduler (real betas)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    vae = AutoencoderKL(
        block_out_channels=[16, 32, 32],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        in_channels=1,
        out_channels=1,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=64,
            sampling_rate=16000,
            upsample_initial_channel=64,  # halves per stage: must stay >= 2**len(upsample_rates)
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[10, 8, 4, 4, 4],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return vae, vocoder, scheduler


def _tiny_roberta_tokenizer(model_max_length: int) -> Any:
    """A byte-level BPE ``RobertaTokenizer`` built offline: ``<s> <pad> </s> <unk> <mask>`` (ids 0–4, pad 1 as in
    RoBERTa/CLAP) followed by the 256 byte symbols, no merges (vocab 261). Any text tokenises."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    symbols = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + sorted(ByteLevel.alphabet())
    return RobertaTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[], model_max_length=model_max_length)


def _tiny_t5_tokenizer(model_max_length: int = 512) -> Any:
    """A Unigram ``T5Tokenizer`` built offline: ``<pad> </s> <unk>`` (ids 0–2, as in T5), ``▁``, a–z, 0–9 and a few
    punctuation marks (vocab 43, no extra ids). ``""`` tokenises to ``[</s>]``."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,'"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def _eval(*modules: torch.nn.Module) -> None:
    # modules built directly start in train mode (dropout on); from_pretrained gives eval mode
    for m in modules:
        m.eval().requires_grad_(False)


class _AudioDecoderBase(DiffusersDecoder):
    """Shared: load-time shape checks, the minimum audio length, the pipeline call and the ``Audio`` output."""

    def _check_length(self, seconds: float) -> None:
        vocoder = self.pipe.vocoder.config
        minimum = float(np.prod(vocoder.upsample_rates)) / vocoder.sampling_rate * self.pipe.vae_scale_factor
        if seconds < minimum:
            raise ConfigError(
                f"invalid decode options for {type(self).__name__}: audio_length_in_s: {seconds} is below the "
                f"pipeline's minimum {minimum:g} s"
            )

    def _to_audio(self, waveforms: np.ndarray) -> list[Audio]:
        rate = int(self.pipe.vocoder.config.sampling_rate)
        return [Audio(samples=np.ascontiguousarray(w, dtype=np.float32).reshape(-1), sample_rate=rate) for w in waveforms]


# ---------------------------------------------------------------------------------------------- AudioLDM
class AudioLDMDecoderConfig(DiffusersDecoderConfig):
    """Options of :class:`AudioLDMAudioDecoder` (plus ``path``, ``dtype``, ``offload``, ``seed``, ``progress``).

    Attributes:
        embed_dim: CLAP text projection size, the ``dim`` of ``prompt_embeds``. ``None``: 512 (AudioLDM-l-full)
            with a ``path``, 32 for the tiny build. Checked against the loaded pipeline.
        normalize_embeds: L2-normalise the conditioning before feeding the pipeline. AudioLDM normally feeds
            L2-normalised CLAP ``text_embeds`` (and so does this decoder's negative, the pipeline's encoding of
            ``""``), but the official NExT-GPT feeds the output projector's tensor **as is** at inference (its
            training targets are the normalised embeddings), so the default ``False`` is the official behaviour.
    """

    embed_dim: int | None = Field(default=None, ge=1)
    normalize_embeds: bool = False


class AudioLDMAudioDecoder(_AudioDecoderBase):
    """AudioLDM (``AudioLDMPipeline``, AudioLDM-l-full in NExT-GPT v0) fed with a CLAP text embedding.

    Conditioning: ``{"prompt_embeds": (B, 1, D)}`` (``D`` = 512 real, 32 tiny; the output projector yields one
    token), reshaped to the pipeline's 2-D ``(B, D)`` (it is fed to the UNet as ``class_labels``). Negative: the
    pipeline's own encoding of ``""`` (CLAP text model + projection, L2-normalised), ``(1, 1, D)``.
    Output: ``B`` mono :class:`Audio` of ``int(audio_length_in_s * 16000)`` samples at 16 kHz.

    A real folder needs all six parts (``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``scheduler``,
    ``vocoder``): the pipeline casts the embeddings to ``text_encoder.dtype``, and ``""`` is encoded with the
    tokenizer and text encoder.
    """

    config_class: ClassVar[type[ComponentConfig]] = AudioLDMDecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = AudioLDMDecodeOptions
    config: AudioLDMDecoderConfig

    REAL_DIM: ClassVar[int] = 512
    TINY_DIM: ClassVar[int] = 32

    @property
    def pipeline_class(self) -> Any:  # type: ignore[override]
        from diffusers import AudioLDMPipeline  # deprecated in diffusers 0.42 (logs a notice), still shipped

        return AudioLDMPipeline

    @classmethod
    def embed_dim_of(cls, config: AudioLDMDecoderConfig) -> int:
        """``D``: the configured ``embed_dim``, else 32 for the tiny build and 512 (AudioLDM-l-full) otherwise."""
        if config.embed_dim is not None:
            return config.embed_dim
        return cls.TINY_DIM if config.tiny else cls.REAL_DIM

    @classmethod
    def conditioning_inputs_of(cls, config: AudioLDMDecoderConfig) -> tuple[ConditioningInput, ...]:  # type: ignore[override]
        return (
            ConditioningInput(
                "prompt_embeds", 1, cls.embed_dim_of(config), "CLAP text embedding (text_embeds), fed as the 2-D (B, D)"
            ),
        )

    def build_tiny(self) -> Any:
        """Real classes at tiny size: ``ClapTextModelWithProjection`` (hidden 16, 1 layer, projection ``D``),
        a byte-level ``RobertaTokenizer`` (``model_max_length = D``, as the real 512/512), ``UNet2DConditionModel``
        (blocks 32/64, ``simple_projection`` class embedding of ``D``, concatenated), a 3-block ``AutoencoderKL``,
        ``SpeechT5HifiGan`` (64 mels, 16 kHz) and ``DDIMScheduler``. About 1.1M parameters."""
        from diffusers import AudioLDMPipeline, UNet2DConditionModel
        from transformers import ClapTextConfig, ClapTextModelWithProjection

        dim = self.embed_dim_of(self.config)
        # the pipeline pads "" to max_length = D (prompt_embeds.shape[1]); RoBERTa positions start at pad_id + 1
        tokenizer = _tiny_roberta_tokenizer(model_max_length=dim)
        text_encoder = ClapTextModelWithProjection(
            ClapTextConfig(
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=1,
                vocab_size=len(tokenizer),
                max_position_embeddings=dim + 2,
                projection_dim=dim,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=(32, 64),  # AudioLDM attends to its own hidden states: equal to the block widths
            class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=dim,
            class_embeddings_concat=True,
        )
        vae, vocoder, scheduler = _tiny_vae_vocoder_scheduler()
        _eval(text_encoder, unet, vae, vocoder)
        return AudioLDMPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder
        )

    @classmethod
    def folder_problems(cls, folder: Path, config: AudioLDMDecoderConfig) -> list[str]:  # type: ignore[override]
        """The CLAP text encoder's ``projection_dim`` and the UNet's class-embedding input against ``embed_dim``."""
        dim = cls.embed_dim_of(config)
        found = {
            "text_encoder projection_dim": folder_config(folder, "text_encoder").get("projection_dim"),
            "unet projection_class_embeddings_input_dim":
                folder_config(folder, "unet").get("projection_class_embeddings_input_dim"),
        }
        return [f"{k} is {v}, the config's embed_dim is {dim}" for k, v in found.items() if isinstance(v, int) and v != dim]

    def pipeline_problems(self) -> list[str]:
        """The CLAP text projection and the UNet's class-embedding input against ``embed_dim``."""
        dim = self.embed_dim_of(self.config)
        found = {
            "text_encoder.projection_dim": getattr(self.pipe.text_encoder.config, "projection_dim", None),
            "unet.projection_class_embeddings_input_dim": self.pipe.unet.config.projection_class_embeddings_input_dim,
        }
        return [f"{k} is {v}, not embed_dim={dim}" for k, v in found.items() if v != dim]

    def _clap_embeds(self, captions: list[str], max_length: int) -> torch.Tensor:
        """``(B, D)``: what ``AudioLDMPipeline._encode_prompt`` computes for ``captions`` (the pipeline has no public
        encoder of prompts): the tokenizer padded and cut to ``max_length``, the CLAP text model's ``text_embeds``,
        L2-normalised, in the text encoder's dtype, on :attr:`execution_device`."""
        pipe, device = self.pipe, self.execution_device
        tokens = pipe.tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        embeds = pipe.text_encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)).text_embeds
        return F.normalize(embeds, dim=-1).to(dtype=pipe.text_encoder.dtype, device=device)

    def encode_unconditional(self) -> dict[str, torch.Tensor]:
        """The pipeline's own encoding of ``""`` (its ``_encode_prompt`` negative branch: tokenizer padded to
        ``max_length = D``, CLAP ``text_embeds``, L2-normalised), as ``{"prompt_embeds": (1, 1, D)}``."""
        return {"prompt_embeds": self._clap_embeds([""], self.embed_dim_of(self.config)).unsqueeze(1)}

    def encode_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The stage-2 L2 targets: ``{"prompt_embeds": (len(texts), 1, D)}`` on CPU, what the pipeline's
        ``_encode_prompt`` computes for ``prompt=texts`` (tokenizer padded to ``max_length``, CLAP ``text_embeds``,
        **L2-normalised**, as the official NExT-GPT targets), one token per caption; ``[""]`` gives
        :meth:`unconditional`. (At inference the official model feeds the projector output unnormalised: see
        ``normalize_embeds``.)"""
        captions = check_captions(texts)
        self.load()
        with torch.no_grad():
            embeds = self._clap_embeds(captions, self.pipe.tokenizer.model_max_length)  # (B, D), normalised
        out = {"prompt_embeds": embeds.detach().unsqueeze(1).cpu()}
        self._check(out, batch=len(captions), what="encode_text()")
        return out

    def generate(
        self,
        conditioning: dict[str, torch.Tensor],
        negative: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | None,
        options: AudioLDMDecodeOptions,  # type: ignore[override]
    ) -> list[Audio]:
        """``{"prompt_embeds": (B, 1, D)}`` and the negative ``(B, 1, D)`` -> ``B`` :class:`Audio`.

        Both are reshaped to ``(B, D)``; ``normalize_embeds`` L2-normalises the positive only (the negative is
        already normalised by the pipeline)."""
        self._check_length(options.audio_length_in_s)
        dtype = self.pipe.text_encoder.dtype
        cond = conditioning["prompt_embeds"][:, 0, :].to(dtype)
        if self.config.normalize_embeds:
            cond = F.normalize(cond, dim=-1)
        out = self.call_pipeline(
            cond,
            negative["prompt_embeds"][:, 0, :].to(dtype),
            generator=generator,
            options=options,
            output_type="np",
            audio_length_in_s=options.audio_length_in_s,
        )
        return self._to_audio(out.audios)


# ---------------------------------------------------------------------------------------------- AudioLDM2
class AudioLDM2DecoderConfig(DiffusersDecoderConfig):
    """Options of :class:`AudioLDM2AudioDecoder` (plus ``path``, ``dtype``, ``offload``, ``seed``, ``progress``).

    Attributes:
        prompt_length: ``S``, the fixed length of the T5 sequence ``prompt_embeds``. Conditioning inputs have fixed
            shapes, and the pipeline's T5 tokenisation has no fixed length (it pads to the longest prompt of the
            batch and pads the negative ``""`` to the positive's length), so the decoder fixes one. Default 77: the
            query count NExT-GPT's output projectors already use for their text-encoder targets (SD, ZeroScope),
            longer than the T5 encoding of nearly every audio caption. The positive is fully attended (mask of
            ones); the negative is ``""`` padded to ``S`` with its T5 mask, i.e. exactly what the pipeline computes
            for ``""`` next to a positive of T5 length ``S``. Projector training targets should be T5 encodings
            padded to ``S`` the same way.
        prompt_dim: T5 ``d_model``, the ``dim`` of ``prompt_embeds``. ``None``: 1024 (flan-t5-large) with a
            ``path``, 32 for the tiny build.
        generated_length: ``G``, length of ``generated_prompt_embeds`` = GPT-2 ``max_new_tokens`` (8, as the real
            pipeline generates).
        generated_dim: GPT-2 hidden size, the ``dim`` of ``generated_prompt_embeds``. ``None``: 768 with a
            ``path``, 16 for the tiny build.
    """

    prompt_length: int = Field(default=77, ge=1)
    prompt_dim: int | None = Field(default=None, ge=1)
    generated_length: int = Field(default=8, ge=1)
    generated_dim: int | None = Field(default=None, ge=1)


class AudioLDM2AudioDecoder(_AudioDecoderBase):
    """AudioLDM2 (``AudioLDM2Pipeline``) fed with its two conditioning sequences.

    Conditioning:

    - ``prompt_embeds (B, S, T)``: the flan-T5 sequence (``T`` = 1024 real, 32 tiny), the UNet's second
      cross-attention (``encoder_hidden_states_1``), masked with ones (all ``S`` positions attended);
    - ``generated_prompt_embeds (B, G, P)``: the GPT-2 sequence (``G`` = 8, ``P`` = 768 real, 16 tiny), the UNet's
      first cross-attention, unmasked.

    Negative: what the pipeline computes for ``""`` (T5 encoding padded to ``S`` with its mask, and the GPT-2
    generation from the projected CLAP + T5 encodings of ``""``), ``(1, S, T)`` and ``(1, G, P)``; its T5 mask
    ``(1, S)`` is kept by the decoder (``negative_attention_mask``) and fed with the negative.

    A real folder loads every part but ``feature_extractor`` (used only to re-score several waveforms against a
    text prompt, which embeddings never do): computing the negative needs the CLAP ``text_encoder`` (a full
    ``ClapModel``: its audio tower is loaded too), ``projection_model``, both tokenizers and the GPT-2
    ``language_model``. A folder saved without them does not load here. The text-to-speech variant (a VITS
    ``text_encoder_2``) is not supported.
    """

    config_class: ClassVar[type[ComponentConfig]] = AudioLDM2DecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = AudioLDM2DecodeOptions
    config: AudioLDM2DecoderConfig

    REAL_DIMS: ClassVar[tuple[int, int]] = (1024, 768)  # (T5 d_model, GPT-2 hidden)
    TINY_DIMS: ClassVar[tuple[int, int]] = (32, 16)
    #: GPT-2 positions the pipeline prepends before generating: [sos, CLAP, eos] + [sos1, T5 (S), eos1]
    PROJECTION_EXTRA: ClassVar[int] = 5

    def __init__(self, config: AudioLDM2DecoderConfig) -> None:
        super().__init__(config)
        #: ``(1, S)`` long: the T5 attention mask of the negative ``""`` (set by :meth:`encode_unconditional`)
        self.negative_attention_mask: torch.Tensor | None = None

    @property
    def pipeline_class(self) -> Any:  # type: ignore[override]
        from diffusers import AudioLDM2Pipeline

        return AudioLDM2Pipeline

    @classmethod
    def dims_of(cls, config: AudioLDM2DecoderConfig) -> tuple[int, int]:
        """``(T, P)``: T5 and GPT-2 sizes, configured or the defaults (tiny with ``tiny = true``, real otherwise)."""
        default = cls.TINY_DIMS if config.tiny else cls.REAL_DIMS
        return (config.prompt_dim or default[0], config.generated_dim or default[1])

    @classmethod
    def conditioning_inputs_of(cls, config: AudioLDM2DecoderConfig) -> tuple[ConditioningInput, ...]:  # type: ignore[override]
        t5_dim, gpt_dim = cls.dims_of(config)
        return (
            ConditioningInput("prompt_embeds", config.prompt_length, t5_dim, "flan-T5 encoder sequence (all attended)"),
            ConditioningInput(
                "generated_prompt_embeds", config.generated_length, gpt_dim, "GPT-2 generated hidden states"
            ),
        )

    #: parts the pipeline accepts as ``None`` (saved as ``[null, null]`` in ``model_index.json``)
    OPTIONAL_PARTS: ClassVar[tuple[str, ...]] = (
        "text_encoder",
        "projection_model",
        "tokenizer",
        "tokenizer_2",
        "feature_extractor",
    )

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """``feature_extractor=None`` (skipped: scoring only), plus ``None`` for every optional part the folder's
        ``model_index.json`` records as ``[null, null]`` (diffusers refuses to load such a folder unless they are
        named). A folder without the text parts then loads, and the load-time check names what is missing."""
        kwargs: dict[str, Any] = {"feature_extractor": None}
        try:
            index = json.loads((Path(self.config.path) / "model_index.json").read_text())  # type: ignore[arg-type]
        except (OSError, ValueError, TypeError):
            return kwargs
        for part in self.OPTIONAL_PARTS:
            entry = index.get(part)
            if isinstance(entry, list) and all(e is None for e in entry):
                kwargs[part] = None
        return kwargs

    def build_tiny(self) -> Any:
        """Real classes at tiny size: ``ClapModel`` (text hidden 16, HTSAT audio tower 2 stages, projection 8),
        a byte-level ``RobertaTokenizer`` (max length 16), ``T5EncoderModel`` (d_model ``T``, 2 layers), a Unigram
        ``T5Tokenizer``, ``GPT2Model`` (hidden ``P``, 2 layers), ``AudioLDM2ProjectionModel(8, T, P)``,
        ``AudioLDM2UNet2DConditionModel`` (blocks 32/64, cross-attention ``[None, P, T]``), a 3-block
        ``AutoencoderKL``, ``SpeechT5HifiGan`` (64 mels, 16 kHz), ``DDIMScheduler``; no feature extractor."""
        from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
        from transformers import (
            ClapAudioConfig,
            ClapConfig,
            ClapModel,
            ClapTextConfig,
            GPT2Config,
            GPT2Model,
            T5Config,
            T5EncoderModel,
        )

        t5_dim, gpt_dim = self.dims_of(self.config)
        clap_dim = 8
        tokenizer = _tiny_roberta_tokenizer(model_max_length=16)
        tokenizer_2 = _tiny_t5_tokenizer()
        text_cfg = ClapTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(tokenizer),
            max_position_embeddings=16 + 2,
            projection_dim=clap_dim,
        )
        audio_cfg = ClapAudioConfig(
            window_size=4,
            spec_size=64,
            num_mel_bins=16,
            patch_embeds_hidden_size=8,
            depths=(1, 1),
            num_attention_heads=(2, 2),
            hidden_size=16,
            num_hidden_layers=2,
            projection_dim=clap_dim,
        )
        text_encoder = ClapModel(
            ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=clap_dim)
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(vocab_size=len(tokenizer_2), d_model=t5_dim, d_ff=37, d_kv=8, num_heads=2, num_layers=2)
        )
        longest = self.config.prompt_length + self.PROJECTION_EXTRA + self.config.generated_length
        language_model = GPT2Model(
            GPT2Config(
                n_embd=gpt_dim,
                n_head=2,
                n_layer=2,
                vocab_size=100,
                bos_token_id=0,
                eos_token_id=0,
                n_positions=longest,
                max_new_tokens=self.config.generated_length,
            )
        )
        projection_model = AudioLDM2ProjectionModel(
            text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim, langauge_model_dim=gpt_dim
        )
        unet = AudioLDM2UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            # per block: [self-attention, <- generated (GPT-2) embeds, <- T5 embeds + mask]
            cross_attention_dim=([None, gpt_dim, t5_dim],) * 2,
        )
        vae, vocoder, scheduler = _tiny_vae_vocoder_scheduler()
        _eval(text_encoder, text_encoder_2, language_model, projection_model, unet, vae, vocoder)
        return AudioLDM2Pipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            projection_model=projection_model,
            language_model=language_model,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            feature_extractor=None,
            unet=unet,
            scheduler=scheduler,
            vocoder=vocoder,
        )

    @classmethod
    def folder_problems(cls, folder: Path, config: AudioLDM2DecoderConfig) -> list[str]:  # type: ignore[override]
        """T5's ``d_model`` against ``prompt_dim``, the GPT-2's width against ``generated_dim`` and its positions
        against ``prompt_length + generated_length + 4``."""
        t5_dim, gpt_dim = cls.dims_of(config)
        t5, gpt = folder_config(folder, "text_encoder_2"), folder_config(folder, "language_model")
        problems = []
        if t5 and t5.get("model_type") not in (None, "t5"):
            problems.append(f"text_encoder_2 is {t5.get('model_type')!r}; only T5 is supported")
        if isinstance(t5.get("d_model"), int) and t5["d_model"] != t5_dim:
            problems.append(f"prompt_dim (text_encoder_2 d_model) is {t5['d_model']}, configured {t5_dim}")
        width = gpt.get("n_embd", gpt.get("hidden_size"))
        if isinstance(width, int) and width != gpt_dim:
            problems.append(f"generated_dim (language_model hidden size) is {width}, configured {gpt_dim}")
        positions = gpt.get("n_positions", gpt.get("max_position_embeddings"))
        longest = config.prompt_length + cls.PROJECTION_EXTRA + config.generated_length - 1
        if isinstance(positions, int) and longest > positions:
            problems.append(f"prompt_length + generated_length + 4 = {longest} exceeds the language model's {positions} positions")
        return problems

    def pipeline_problems(self) -> list[str]:
        """The parts needed to encode ``""``, a T5 ``text_encoder_2``, the two hidden sizes against
        ``prompt_dim`` / ``generated_dim``, and the language model's positions against the lengths."""
        pipe, config = self.pipe, self.config
        missing = [p for p in ("text_encoder", "projection_model", "tokenizer", "tokenizer_2") if getattr(pipe, p, None) is None]
        if missing:
            return [f"it lacks {missing}, needed to encode the unconditional \"\""]
        if pipe.text_encoder_2.config.model_type != "t5":
            return [f"text_encoder_2 is {pipe.text_encoder_2.config.model_type!r}; only T5 is supported"]
        t5_dim, gpt_dim = self.dims_of(config)
        found = {
            "prompt_dim (text_encoder_2 hidden size)": (pipe.text_encoder_2.config.d_model, t5_dim),
            "generated_dim (language_model hidden size)": (pipe.language_model.config.hidden_size, gpt_dim),
        }
        bad = [f"{k} is {got}, configured {want}" for k, (got, want) in found.items() if got != want]
        longest = config.prompt_length + self.PROJECTION_EXTRA + config.generated_length - 1
        positions = pipe.language_model.config.max_position_embeddings
        if longest > positions:
            bad.append(f"prompt_length + generated_length + 4 = {longest} exceeds the language model's {positions} positions")
        return bad

    def encode_unconditional(self) -> dict[str, torch.Tensor]:
        """What ``AudioLDM2Pipeline.encode_prompt`` computes as the negative for ``""`` next to a positive of T5
        length ``S``, step by step:

        1. CLAP: ``tokenizer([""])`` padded to ``tokenizer.model_max_length``, ``get_text_features`` (pooled),
           as ``(1, 1, clap_dim)`` with mask ``ones(1, 1)``;
        2. T5: ``tokenizer_2([""])`` padded to ``S``, ``text_encoder_2(...)[0]`` ``(1, S, T)`` and its mask ``(1, S)``;
        3. ``projection_model`` -> ``(1, S + 5, P)`` and mask; 4. ``G`` GPT-2 steps, each appending the last
           position's final hidden state -> ``(1, G, P)``.

        Step 4 reimplements the pipeline's ``generate_language_model``: with transformers 5 that method calls
        ``language_model._update_model_kwargs_for_generation``, which ``GPT2Model`` (the class the real folders
        name) no longer has. It recomputes the full sequence each step (no cache; same positions and mask), which
        matches the pipeline's cached loop run with a ``GPT2LMHeadModel``.

        Returns ``{"prompt_embeds": (1, S, T), "generated_prompt_embeds": (1, G, P)}``; the T5 mask is kept in
        :attr:`negative_attention_mask`.
        """
        embeds, mask = self._encode_captions([""])
        self.negative_attention_mask = mask
        return embeds

    def encode_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The stage-2 L2 targets: ``{"prompt_embeds": (len(texts), S, T), "generated_prompt_embeds": (len(texts),
        G, P)}`` on CPU; ``[""]`` gives :meth:`unconditional`.

        Per caption, what ``AudioLDM2Pipeline.encode_prompt`` computes for it as a prompt, with the T5 side at the
        decoder's fixed length ``S``: the T5 tokens padded (with T5's pad token) or cut (keeping ``</s>``) to ``S``
        and encoded with their mask (the encoder's states at the padded positions included: the decoder attends to
        all ``S``), then the CLAP + T5 projection and ``G`` GPT-2 steps from that padded sequence, as in
        :meth:`encode_unconditional`. This equals the pipeline's encoding of the caption inside a batch whose
        longest prompt has ``S`` T5 tokens (the pipeline pads a batch to its longest prompt). Each row depends on
        its own caption only.
        """
        captions = check_captions(texts)
        self.load()
        embeds, _ = self._encode_captions(captions)
        out = {k: v.detach().cpu() for k, v in embeds.items()}
        self._check(out, batch=len(captions), what="encode_text()")
        return out

    def _encode_captions(self, captions: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Steps 1-4 of :meth:`encode_unconditional` for a batch of captions: the conditioning dict and the T5
        attention mask ``(B, S)`` (long)."""
        pipe, config = self.pipe, self.config
        device = self.execution_device
        batch = len(captions)
        with torch.no_grad():
            clap_in = pipe.tokenizer(
                captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
            )
            clap = pipe.text_encoder.get_text_features(
                clap_in.input_ids.to(device), attention_mask=clap_in.attention_mask.to(device)
            )
            clap = getattr(clap, "pooler_output", clap)[:, None, :]  # transformers 5: an output object
            clap_mask = torch.ones(batch, 1, dtype=torch.long, device=device)

            t5_in = pipe.tokenizer_2(
                captions, padding="max_length", max_length=config.prompt_length, truncation=True, return_tensors="pt"
            )
            t5_mask = t5_in.attention_mask.to(device)
            t5 = pipe.text_encoder_2(t5_in.input_ids.to(device), attention_mask=t5_mask)[0]

            projected = pipe.projection_model(
                hidden_states=clap, hidden_states_1=t5, attention_mask=clap_mask, attention_mask_1=t5_mask
            )
            embeds, mask = projected.hidden_states, projected.attention_mask
            for _ in range(config.generated_length):
                out = pipe.language_model(
                    inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, return_dict=True
                )
                embeds = torch.cat([embeds, out.hidden_states[-1][:, -1:, :]], dim=1)
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            generated = embeds[:, -config.generated_length :, :]
        return (
            {
                "prompt_embeds": t5.to(pipe.text_encoder_2.dtype),
                "generated_prompt_embeds": generated.to(pipe.language_model.dtype),
            },
            t5_mask.long(),
        )

    def generate(
        self,
        conditioning: dict[str, torch.Tensor],
        negative: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | None,
        options: AudioLDM2DecodeOptions,  # type: ignore[override]
    ) -> list[Audio]:
        """``{"prompt_embeds": (B, S, T), "generated_prompt_embeds": (B, G, P)}`` and negatives of the same shapes
        -> ``B`` :class:`Audio`. The positive T5 mask is ``ones(B, S)``; the negative's is
        :attr:`negative_attention_mask` expanded to ``(B, S)``."""
        self._check_length(options.audio_length_in_s)
        pipe = self.pipe
        prompt = conditioning["prompt_embeds"].to(pipe.text_encoder_2.dtype)
        batch, length = prompt.shape[:2]
        neg_mask = self.negative_attention_mask
        if neg_mask is None:  # pragma: no cover - set at load
            neg_mask = torch.ones(1, length, dtype=torch.long)
        out = self.call_pipeline(
            prompt,
            negative["prompt_embeds"].to(pipe.text_encoder_2.dtype),
            generator=generator,
            options=options,
            output_type="np",
            attention_mask=torch.ones(batch, length, dtype=torch.long, device=prompt.device),
            generated_prompt_embeds=conditioning["generated_prompt_embeds"].to(pipe.language_model.dtype),
            negative_attention_mask=neg_mask.to(prompt.device).expand(batch, length),
            negative_generated_prompt_embeds=negative["generated_prompt_embeds"].to(pipe.language_model.dtype),
            max_new_tokens=self.config.generated_length,
            audio_length_in_s=options.audio_length_in_s,
        )
        return self._to_audio(out.audios)
