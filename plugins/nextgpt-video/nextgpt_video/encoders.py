"""The ImageBind video encoder: the vision branch on 2-frame clips, 15 views (5 clips x 3 crops) averaged."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_video

__all__ = ["ImageBindVideoEncoder", "ImageBindVideoEncoderConfig"]


class ImageBindVideoEncoderConfig(ImageBindEncoderConfig):
    """ImageBind vision branch for videos (clips averaged)."""

    modality: Literal["vision"] = "vision"
    clips: Literal[True] = True


class ImageBindVideoEncoder(ImageBindEncoder):
    """``preprocess``: :class:`~nextgpt_video.media.Video` -> ``(15, 3, 2, 224, 224)`` (ImageBind's clip sampler,
    short-side scale, 3 spatial crops); ``forward``: ``(B, 15, 3, 2, 224, 224)`` -> ``(B, 1, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindVideoEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        return preprocess_video(media)
