"""Image decoders: Stable Diffusion pipelines fed with ``prompt_embeds`` (NExT-GPT's text-to-image side).

Two registry-swappable classes over the same diffusers pipeline (``diffusers.StableDiffusionPipeline``):

- :class:`StableDiffusionImageDecoder`: the SD-1.5 family (NExT-GPT legacy, ``runwayml/stable-diffusion-v1-5``).
  Conditioning ``prompt_embeds`` ``(B, 77, 768)``: CLIP ViT-L/14 text ``last_hidden_state``. PNDM scheduler.
- :class:`StableDiffusion2ImageDecoder`: the SD-2 family (NExT-GPT "v1.5" code, ``stabilityai/stable-diffusion-2``).
  Conditioning ``prompt_embeds`` ``(B, 77, 1024)``: OpenCLIP ViT-H text states. DDIM, ``v_prediction``.

A composition swaps one for the other by its component id (plus the folder it points at). The conditioning width
comes from the config field ``cross_attention_dim`` (full-size default per class), so a full-size decoder is
described without loading weights. With ``tiny = true`` (instead of a ``path``) the decoder builds a tiny
random-init instance of the real classes (CLIP text encoder with 77 positions and an offline CLIP BPE tokenizer,
a 2-block VAE, a 2-block UNet) with ``cross_attention_dim`` 32 (SD-1.5) / 48 (SD-2), from ``tiny_options``.

Outputs are ``PIL.Image.Image`` (RGB), one per conditioning row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from nextgpt_core.diffusers_decoder import (
    CLIPTextDecoder,
    DiffusersDecoderConfig,
    quiet_library_notices,
)
from nextgpt_core.tiny_clip import tiny_clip_text_parts
from nextgpt_core.tiny_diffusion import tiny_autoencoder_kl, tiny_unet_2d
from nextgpt_core.interfaces import ComponentConfig, DecodeOptions

__all__ = [
    "ImageDecodeOptions",
    "StableDiffusion2DecoderConfig",
    "StableDiffusion2ImageDecoder",
    "StableDiffusionDecoderConfig",
    "StableDiffusionImageDecoder",
]


# ---------------------------------------------------------------------------------------------- options
class ImageDecodeOptions(DecodeOptions):
    """Per-request options; defaults are NExT-GPT legacy's ``generate_images`` (guidance 7.5, 40 steps).

    Attributes:
        guidance_scale: classifier-free guidance weight (``<= 1`` turns guidance off).
        num_inference_steps: denoising steps.
        height, width: output size in pixels (multiples of 8); ``None`` = the model's own size (512 for SD-1.5,
            768 for SD-2, 32 for the tiny builds).
    """

    guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
    num_inference_steps: int = Field(default=40, ge=1, le=1000)
    height: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    width: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)


# ---------------------------------------------------------------------------------------------- configs
class StableDiffusionDecoderConfig(DiffusersDecoderConfig):
    """SD-1.5 decoder config. Defaults describe ``runwayml/stable-diffusion-v1-5``.

    Attributes:
        cross_attention_dim: width of each ``prompt_embeds`` token (768 = CLIP ViT-L/14; the tiny build: 32).
        text_length: tokens per prompt (77 = CLIP's context; also the tiny text encoder's positions).
    """

    cross_attention_dim: int = Field(default=768, ge=2)
    text_length: int = Field(default=77, ge=2)


class StableDiffusion2DecoderConfig(StableDiffusionDecoderConfig):
    """SD-2 decoder config. Defaults describe ``stabilityai/stable-diffusion-2`` (OpenCLIP ViT-H: 1024; tiny: 48)."""

    cross_attention_dim: int = Field(default=1024, ge=2)


# ---------------------------------------------------------------------------------------------- decoders
class StableDiffusionImageDecoder(CLIPTextDecoder):
    """SD-1.5 over ``diffusers.StableDiffusionPipeline``: ``{"prompt_embeds": (B, 77, 768)}`` -> ``B`` PIL images.

    Unconditional conditioning: the pipeline's encoding of ``""`` (``(1, 77, 768)``). Loading a real folder skips
    the safety checker and the feature extractor. The tiny build copies the full-size geometry where it matters
    (PNDM scheduler with SD-1.5's config, quick-GELU CLIP, cross-attention UNet blocks), at 32x32 px.
    """

    config_class: ClassVar[type[ComponentConfig]] = StableDiffusionDecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = ImageDecodeOptions
    #: options of the tiny random-init build used by tests and the ``tiny`` composition
    tiny_options: ClassVar[dict[str, Any]] = {"tiny": True, "cross_attention_dim": 32}

    #: the full-size model's scheduler class and config (``scheduler/scheduler_config.json`` of the folder)
    scheduler_name: ClassVar[str] = "PNDMScheduler"
    scheduler_config: ClassVar[dict[str, Any]] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
    }
    #: text encoder flavour of the family: OpenAI CLIP (quick GELU, pads with EOS)
    text_hidden_act: ClassVar[str] = "quick_gelu"
    text_pad_token: ClassVar[str] = "<|endoftext|>"
    #: SD-2 UNets use linear projections in their transformer blocks
    use_linear_projection: ClassVar[bool] = False

    @property
    def pipeline_class(self) -> Any:  # type: ignore[override]
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Skip the safety checker, its feature extractor and the IP-adapter image encoder (never downloaded)."""
        return {"safety_checker": None, "feature_extractor": None, "image_encoder": None, "requires_safety_checker": False}

    def build_tiny(self) -> Any:
        """A tiny ``StableDiffusionPipeline`` of the real classes (about 0.1M parameters, 32x32 px, no safety checker)."""
        import diffusers
        from diffusers import StableDiffusionPipeline

        dim = self.config.cross_attention_dim  # type: ignore[attr-defined]
        text_encoder, tokenizer = tiny_clip_text_parts(
            dim, length=self.config.text_length, pad_token=self.text_pad_token, hidden_act=self.text_hidden_act  # type: ignore[attr-defined]
        )
        unet = tiny_unet_2d(dim, use_linear_projection=self.use_linear_projection)
        vae = tiny_autoencoder_kl()
        scheduler = getattr(diffusers, self.scheduler_name)(**self.scheduler_config)
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        return pipe

    def generate(
        self,
        conditioning: dict[str, torch.Tensor],
        negative: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | None,
        options: ImageDecodeOptions,  # type: ignore[override]
    ) -> list[Any]:
        """``{"prompt_embeds": (B, 77, dim)}`` + negatives of the same shape -> ``B`` RGB ``PIL.Image.Image``."""
        dtype = self.torch_dtype
        out = self.call_pipeline(
            conditioning["prompt_embeds"].to(dtype),
            negative["prompt_embeds"].to(dtype),
            generator=generator,
            options=options,
            output_type="pil",
            height=options.height,
            width=options.width,
        )
        return list(out.images)


    #: min-SNR-gamma weighting of the denoising loss (NExT-GPT's new code: 5 for images; 0 turns it off)
    snr_gamma: ClassVar[float] = 5.0

    def denoising_loss(
        self,
        conditioning: dict[str, torch.Tensor],
        targets: Sequence[Any],
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The UNet's diffusion loss on the target images, conditioned on ``{"prompt_embeds": (S, 77, dim)}``.

        Each target (a PIL image) is resized to the UNet's native size (``sample_size x vae_scale_factor``: 512 for
        SD-1.5, 32 for tiny) and encoded by the frozen VAE; noise at a random training timestep (a
        ``DDPMScheduler`` from the pipeline's scheduler config) is added, and the UNet's prediction is compared with
        its training target (the noise, or the velocity for v-prediction models such as SD-2) by MSE, weighted by
        min-SNR-gamma. Gradients reach ``conditioning`` only. Returns ``(S,)`` float32.
        """
        import numpy as np
        import torch.nn.functional as F
        from diffusers import DDPMScheduler

        self.load()
        pipe = self.pipe
        unet, vae = pipe.unet, pipe.vae
        unet.requires_grad_(False)
        vae.requires_grad_(False)
        cond = conditioning["prompt_embeds"]
        if cond.shape[0] != len(targets):
            raise ValueError(f"denoising_loss: {cond.shape[0]} conditionings for {len(targets)} target images")
        size = int(unet.config.sample_size) * int(pipe.vae_scale_factor)
        pixels = []
        for image in targets:
            rgb = image.convert("RGB").resize((size, size), resample=3)  # bicubic
            pixels.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
        dtype, device = self.torch_dtype, self.device
        x = torch.stack(pixels).to(device, dtype)  # (S, 3, size, size) in [-1, 1]
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(generator) * vae.config.scaling_factor
        with quiet_library_notices():
            schedule = DDPMScheduler.from_config(pipe.scheduler.config)
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(device)
        t = torch.randint(0, schedule.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(device)
        noisy = schedule.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=cond.to(device, dtype)).sample
        velocity = schedule.config.prediction_type == "v_prediction"
        wanted = schedule.get_velocity(latents, noise, t) if velocity else noise
        per_item = F.mse_loss(pred.float(), wanted.float(), reduction="none").mean(dim=(1, 2, 3))  # (S,)
        if self.snr_gamma:
            alphas = schedule.alphas_cumprod.to(device)[t].float()
            snr = alphas / (1 - alphas)
            clipped = torch.clamp(snr, max=self.snr_gamma)
            per_item = per_item * (clipped / (snr + 1) if velocity else clipped / snr)
        return per_item


class StableDiffusion2ImageDecoder(StableDiffusionImageDecoder):
    """SD-2 over ``diffusers.StableDiffusionPipeline``: ``{"prompt_embeds": (B, 77, 1024)}`` -> ``B`` PIL images.

    Same contract as :class:`StableDiffusionImageDecoder`; the family differs in the text encoder (OpenCLIP ViT-H,
    GELU, pads with ``"!"``), the UNet (linear projections) and the scheduler (DDIM, ``v_prediction``), which the
    tiny build copies. Default size 768 px with the real weights.
    """

    config_class: ClassVar[type[ComponentConfig]] = StableDiffusion2DecoderConfig
    tiny_options: ClassVar[dict[str, Any]] = {"tiny": True, "cross_attention_dim": 48}
    scheduler_name: ClassVar[str] = "DDIMScheduler"
    scheduler_config: ClassVar[dict[str, Any]] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "clip_sample": False,
        "prediction_type": "v_prediction",
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }
    text_hidden_act: ClassVar[str] = "gelu"
    text_pad_token: ClassVar[str] = "!"
    use_linear_projection: ClassVar[bool] = True
