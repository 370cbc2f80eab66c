"""The ImageBind depth encoder: the depth branch on a single-channel disparity map (input only)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_depth

__all__ = ["ImageBindDepthEncoder", "ImageBindDepthEncoderConfig"]


class ImageBindDepthEncoderConfig(ImageBindEncoderConfig):
    """ImageBind depth branch (the x5 logit scale bypassed, as for audio)."""

    modality: Literal["depth"] = "depth"
    clips: Literal[False] = False


class ImageBindDepthEncoder(ImageBindEncoder):
    """``preprocess``: depth map ``(H, W)`` -> ``(1, 224, 224)`` disparity; ``forward``: ``(B, 1, 224, 224)`` ->
    ``(B, 1, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindDepthEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        return preprocess_depth(media)
