"""Tiny random-init image-latent diffusion parts of the real diffusers classes, shared by tiny builds.

The Stable Diffusion image decoders and the AnimateDiff video decoder use the same tiny 2-D UNet; those and
ZeroScope use the same tiny ``AutoencoderKL`` (RGB <-> 4 latent channels, 2x down-sampling). Each call makes new
modules from the caller's current random state (callers seed it). Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["tiny_autoencoder_kl", "tiny_unet_2d"]


def tiny_autoencoder_kl() -> Any:
    """A tiny ``AutoencoderKL``: 3 -> 4 latent channels, blocks (8, 16), ``vae_scale_factor`` 2, 32 px samples."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        sample_size=32,
    )


def tiny_unet_2d(cross_attention_dim: int, *, use_linear_projection: bool = False) -> Any:
    """A tiny SD-style ``UNet2DConditionModel``: 4 latent channels, 16 px samples, blocks (8, 16) with
    cross-attention to ``(B, length, cross_attention_dim)`` conditioning."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
        use_linear_projection=use_linear_projection,
    )
