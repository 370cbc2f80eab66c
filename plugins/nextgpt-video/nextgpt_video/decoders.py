"""Video decoders: diffusers text-to-video pipelines fed with ``prompt_embeds`` (NExT-GPT's text-to-video side).

- :class:`ZeroScopeVideoDecoder`: ``TextToVideoSDPipeline`` + ``UNet3DConditionModel`` (NExT-GPT legacy's
  ``cerspense/zeroscope_v2_576w``; also ModelScope ``text-to-video-ms-1.7b``). Conditioning ``prompt_embeds``
  ``(B, 77, 1024)``: OpenCLIP ViT-H text states. DDIM scheduler.
- :class:`AnimateDiffVideoDecoder`: ``AnimateDiffPipeline`` (an SD-1.5 ``UNet2DConditionModel`` + a
  ``MotionAdapter``). Conditioning ``prompt_embeds`` ``(B, 77, 768)``: CLIP ViT-L/14 text states.

The conditioning width is the config field ``cross_attention_dim`` (full-size default per class), so a full-size
decoder is described without weights. With ``tiny = true`` (instead of a ``path``) a tiny random-init instance of
the real classes is built (77-position CLIP text encoder + offline CLIP BPE tokenizer, 2-block VAE and UNet,
32x32 px) with ``cross_attention_dim`` 48 (ZeroScope, 1024-d family) / 32 (AnimateDiff, 768-d family), from
``tiny_options``.

Outputs are :class:`nextgpt_video.media.Video` (uint8 frames ``(T, H, W, 3)``, ``fps`` from the options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from nextgpt_core.diffusers_decoder import (
    CLIPTextDecoder,
    DiffusersDecoderConfig,
)
from nextgpt_core.tiny_clip import tiny_clip_text_parts
from nextgpt_core.tiny_diffusion import tiny_autoencoder_kl, tiny_unet_2d
from nextgpt_core.errors import WeightsNotFoundError
from nextgpt_core.interfaces import ComponentConfig, DecodeOptions

from .media import Video

__all__ = [
    "AnimateDiffDecodeOptions",
    "AnimateDiffDecoderConfig",
    "AnimateDiffVideoDecoder",
    "VideoDecodeOptions",
    "ZeroScopeDecoderConfig",
    "ZeroScopeVideoDecoder",
    "frames_to_uint8",
]


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in ``[0, 1]`` ``(T, H, W, 3)`` -> uint8, rounded as diffusers' ``numpy_to_pil`` does."""
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------- options
class VideoDecodeOptions(DecodeOptions):
    """Per-request options; defaults are NExT-GPT legacy's ``generate_videos`` (guidance 7.5, 40 steps, 320x576,
    16 frames) and the demo's saving rate (8 fps).

    Attributes:
        guidance_scale: classifier-free guidance weight (``<= 1`` turns guidance off).
        num_inference_steps: denoising steps.
        height, width: frame size in pixels (multiples of 8); ``None`` = the model's own size.
        num_frames: frames to generate (``T``).
        fps: frame rate stamped on the returned :class:`Video`.
    """

    guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
    num_inference_steps: int = Field(default=40, ge=1, le=1000)
    height: int | None = Field(default=320, ge=8, le=4096, multiple_of=8)
    width: int | None = Field(default=576, ge=8, le=4096, multiple_of=8)
    num_frames: int = Field(default=16, ge=1, le=256)
    fps: float = Field(default=8.0, gt=0.0, le=240.0)


class AnimateDiffDecodeOptions(VideoDecodeOptions):
    """AnimateDiff options: as :class:`VideoDecodeOptions`, but the size defaults to the base model's own (512x512
    for SD-1.5 bases) and at most 32 frames (the motion modules' ``motion_max_seq_length``)."""

    height: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    width: int | None = Field(default=None, ge=8, le=4096, multiple_of=8)
    num_frames: int = Field(default=16, ge=1, le=32)


# ---------------------------------------------------------------------------------------------- shared base
class _TextToVideoDecoder(CLIPTextDecoder):
    """Shared parts: one ``prompt_embeds`` input from the config, negatives = the pipeline's encoding of ``""``,
    ``output_type="np"`` frames turned into :class:`Video`."""

    options_class: ClassVar[type[DecodeOptions]] = VideoDecodeOptions
    tiny_options: ClassVar[dict[str, Any]] = {}

    def generate(
        self,
        conditioning: dict[str, torch.Tensor],
        negative: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | None,
        options: VideoDecodeOptions,  # type: ignore[override]
    ) -> list[Video]:
        """``{"prompt_embeds": (B, 77, dim)}`` + negatives -> ``B`` :class:`Video` of ``num_frames`` uint8 frames
        ``(T, H, W, 3)`` at ``options.fps``."""
        dtype = self.torch_dtype
        out = self.call_pipeline(
            conditioning["prompt_embeds"].to(dtype),
            negative["prompt_embeds"].to(dtype),
            generator=generator,
            options=options,
            output_type="np",
            height=options.height,
            width=options.width,
            num_frames=options.num_frames,
        )
        frames = np.asarray(out.frames)  # (B, T, H, W, 3) float in [0, 1]
        return [Video(frames=frames_to_uint8(row), fps=float(options.fps)) for row in frames]


# ---------------------------------------------------------------------------------------------- ZeroScope
class ZeroScopeDecoderConfig(DiffusersDecoderConfig):
    """ZeroScope decoder config. Defaults describe ``cerspense/zeroscope_v2_576w``.

    Attributes:
        cross_attention_dim: width of each ``prompt_embeds`` token (1024 = OpenCLIP ViT-H; the tiny build: 48).
        text_length: tokens per prompt (77, CLIP's context).
    """

    cross_attention_dim: int = Field(default=1024, ge=2)
    text_length: int = Field(default=77, ge=2)


class ZeroScopeVideoDecoder(_TextToVideoDecoder):
    """ZeroScope / ModelScope text-to-video over ``TextToVideoSDPipeline``: ``{"prompt_embeds": (B, 77, 1024)}``
    -> ``B`` :class:`Video`.

    The pipeline lives under ``diffusers.pipelines.deprecated`` in 0.42; its construction notice is silenced. The
    tiny build copies the full-size geometry where it matters (``UNet3DConditionModel`` with cross-attention and
    temporal blocks, GELU OpenCLIP-style text encoder padding with ``"!"``, ZeroScope's DDIM config).
    """

    config_class: ClassVar[type[ComponentConfig]] = ZeroScopeDecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = VideoDecodeOptions
    tiny_options: ClassVar[dict[str, Any]] = {"tiny": True, "cross_attention_dim": 48}
    #: ``scheduler/scheduler_config.json`` of zeroscope_v2_576w
    scheduler_config: ClassVar[dict[str, Any]] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }

    @property
    def pipeline_class(self) -> Any:  # type: ignore[override]
        from diffusers import TextToVideoSDPipeline

        return TextToVideoSDPipeline

    def build_tiny(self) -> Any:
        """A tiny ``TextToVideoSDPipeline`` of the real classes (32x32 px by default)."""
        from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

        dim = self.config.cross_attention_dim  # type: ignore[attr-defined]
        text_encoder, tokenizer = tiny_clip_text_parts(dim, length=self.config.text_length, pad_token="!", hidden_act="gelu")  # type: ignore[attr-defined]
        unet = UNet3DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=dim,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        pipe = TextToVideoSDPipeline(
            vae=tiny_autoencoder_kl(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=DDIMScheduler(**self.scheduler_config),
        )
        return pipe


# ---------------------------------------------------------------------------------------------- AnimateDiff
class AnimateDiffDecoderConfig(DiffusersDecoderConfig):
    """AnimateDiff decoder config. Defaults describe an SD-1.5 base + ``guoyww/animatediff-motion-adapter-v1-5-2``.

    Attributes:
        path: a saved ``AnimateDiffPipeline`` folder, or an SD-1.5 pipeline folder combined with
            ``motion_adapter_path``.
        motion_adapter_path: local folder of a saved ``MotionAdapter``; when given, it is loaded into the base at
            ``path`` and the scheduler becomes AnimateDiff's recipe (DDIM, linear betas, ``linspace`` spacing).
        cross_attention_dim: width of each ``prompt_embeds`` token (768 = CLIP ViT-L/14; the tiny build: 32).
        text_length: tokens per prompt (77, CLIP's context).
    """

    motion_adapter_path: str | None = None
    cross_attention_dim: int = Field(default=768, ge=2)
    text_length: int = Field(default=77, ge=2)


class AnimateDiffVideoDecoder(_TextToVideoDecoder):
    """AnimateDiff text-to-video over ``AnimateDiffPipeline``: ``{"prompt_embeds": (B, 77, 768)}`` -> ``B``
    :class:`Video` (at most 32 frames).

    The tiny build: a 2-block ``UNet2DConditionModel`` + a matching ``MotionAdapter`` (``motion_max_seq_length``
    32 as the real v1-5-2), combined by the pipeline into a ``UNetMotionModel``; quick-GELU CLIP text encoder.
    """

    config_class: ClassVar[type[ComponentConfig]] = AnimateDiffDecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = AnimateDiffDecodeOptions
    tiny_options: ClassVar[dict[str, Any]] = {"tiny": True, "cross_attention_dim": 32}
    #: the scheduler of diffusers' AnimateDiff recipe on an SD-1.5 base
    scheduler_config: ClassVar[dict[str, Any]] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "linear",
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "linspace",
    }

    @property
    def pipeline_class(self) -> Any:  # type: ignore[override]
        from diffusers import AnimateDiffPipeline

        return AnimateDiffPipeline

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Skip the IP-adapter parts; with ``motion_adapter_path``, load the adapter from that local folder."""
        kwargs: dict[str, Any] = {"feature_extractor": None, "image_encoder": None}
        adapter_path = self.config.motion_adapter_path  # type: ignore[attr-defined]
        if adapter_path is not None:
            from diffusers import MotionAdapter

            folder = Path(adapter_path)
            if not (folder / "config.json").is_file():
                raise WeightsNotFoundError(
                    f"{type(self).__name__}: no motion adapter at {str(folder)!r} (config.json missing); "
                    "nextgpt never downloads weights, give a local folder"
                )
            kwargs["motion_adapter"] = MotionAdapter.from_pretrained(folder, local_files_only=True, dtype=self.torch_dtype)
        return kwargs

    def _load(self) -> None:
        super()._load()
        if self.config.path is not None and self.config.motion_adapter_path is not None:  # type: ignore[attr-defined]
            from diffusers import DDIMScheduler

            self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config, **self.scheduler_config)

    def tiny_parts(self) -> dict[str, Any]:
        """The parts of the tiny build, before the pipeline merges ``unet`` (2-D) and ``motion_adapter`` into a
        ``UNetMotionModel``: ``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``motion_adapter``, ``scheduler``.
        Under the same seed they are the tiny build's weights (an SD-1.5-style base plus its adapter)."""
        from diffusers import DDIMScheduler, MotionAdapter

        dim = self.config.cross_attention_dim  # type: ignore[attr-defined]
        text_encoder, tokenizer = tiny_clip_text_parts(
            dim, length=self.config.text_length, pad_token="<|endoftext|>", hidden_act="quick_gelu"  # type: ignore[attr-defined]
        )
        unet = tiny_unet_2d(dim)
        adapter = MotionAdapter(
            block_out_channels=(8, 16),
            motion_layers_per_block=1,
            motion_num_attention_heads=2,
            motion_norm_num_groups=4,
            motion_max_seq_length=32,
        )
        return {
            "vae": tiny_autoencoder_kl(),
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "unet": unet,
            "motion_adapter": adapter,
            "scheduler": DDIMScheduler(**self.scheduler_config),
        }

    def build_tiny(self) -> Any:
        """A tiny ``AnimateDiffPipeline`` of the real classes (32x32 px by default)."""
        from diffusers import AnimateDiffPipeline

        return AnimateDiffPipeline(**self.tiny_parts())
