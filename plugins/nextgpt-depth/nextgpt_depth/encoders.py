"""The ImageBind depth encoder: the depth branch on a single-channel disparity map (input only)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_depth

__all__ = ["ImageBindDepthEncoder", "ImageBindDepthEncoderConfig"]


class ImageBindDepthEncoderConfig(ImageBindEncoderConfig):
    """ImageBind depth branch (the x5 logit scale bypassed, as for audio).

    Attributes:
        depth_scale: file units per metre (1000: millimetres, Kinect-style 16-bit PNGs).
        is_disparity: the maps already hold disparity (no depth-to-disparity conversion).
        image_size: side of the square map fed to the branch (224 for ImageBind; 32 for ``toy``).
    """

    modality: Literal["depth"] = "depth"
    clips: Literal[False] = False
    depth_scale: float = Field(default=1000.0, gt=0)
    is_disparity: bool = False
    image_size: int = Field(default=224, ge=8, le=1024)


class ImageBindDepthEncoder(ImageBindEncoder):
    """``preprocess``: depth map ``(H, W)`` -> ``(1, 224, 224)`` disparity; ``forward``: ``(B, 1, 224, 224)`` ->
    ``(B, 1, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindDepthEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        c = self.config
        return preprocess_depth(media, c.image_size, depth_scale=c.depth_scale, is_disparity=c.is_disparity)  # type: ignore[attr-defined]
