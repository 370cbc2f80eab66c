"""The ImageBind image encoder: the vision branch of ImageBind-huge (official NExT-GPT v0), one token per image."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

import torch

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_image

__all__ = ["ImageBindImageEncoder", "ImageBindImageEncoderConfig"]


class ImageBindImageEncoderConfig(ImageBindEncoderConfig):
    """ImageBind vision branch for single images (``size``: ``huge``, ``tiny`` or ``toy``; ``checkpoint``:
    imagebind_huge.pth).

    Attributes:
        image_size: side of the square the image is resized and cropped to (224 for ImageBind; 32 for ``toy``).
    """

    modality: Literal["vision"] = "vision"
    clips: Literal[False] = False
    image_size: int = Field(default=224, ge=8, le=1024)


class ImageBindImageEncoder(ImageBindEncoder):
    """``preprocess``: ``PIL.Image`` -> ``(3, S, S)``, ``S = image_size`` (224: ImageBind's bicubic resize, center
    crop, CLIP norm); ``forward``: ``(B, 3, S, S)`` -> ``(B, 1, out_dim)`` (1024 at ``huge``), L2-normalised."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindImageEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        return preprocess_image(media, size=self.config.image_size)  # type: ignore[attr-defined]
