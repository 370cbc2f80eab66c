"""The ImageBind video encoder: the vision branch on 2-frame clips, 15 views (5 clips x 3 crops) averaged."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

import torch

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_video

__all__ = ["ImageBindVideoEncoder", "ImageBindVideoEncoderConfig"]


class ImageBindVideoEncoderConfig(ImageBindEncoderConfig):
    """ImageBind vision branch for videos (clips averaged).

    Attributes:
        image_size: crop side (224 for ImageBind; 32 for ``toy``).
        clips_per_video: temporal clips of 2 s (5 for ImageBind; a video of 2 s or less gives identical clips).
        num_crops: spatial crops per clip (3 for ImageBind, or 1 = the center).
    """

    modality: Literal["vision"] = "vision"
    clips: Literal[True] = True
    image_size: int = Field(default=224, ge=8, le=1024)
    clips_per_video: int = Field(default=5, ge=1, le=64)
    num_crops: Literal[1, 3] = 3


class ImageBindVideoEncoder(ImageBindEncoder):
    """``preprocess``: :class:`~nextgpt_video.media.Video` -> ``(V, 3, 2, S, S)``, ``V = clips_per_video *
    num_crops`` (ImageBind: ``(15, 3, 2, 224, 224)``: its clip sampler, short-side scale, 3 spatial crops);
    ``forward``: ``(B, V, 3, 2, S, S)`` -> ``(B, 1, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindVideoEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        c = self.config
        return preprocess_video(media, size=c.image_size, clips_per_video=c.clips_per_video, num_crops=c.num_crops)  # type: ignore[attr-defined]
