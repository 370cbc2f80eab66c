"""The ImageBind image encoder: the vision branch of ImageBind-huge (official NExT-GPT v0), one token per image."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_image

__all__ = ["ImageBindImageEncoder", "ImageBindImageEncoderConfig"]


class ImageBindImageEncoderConfig(ImageBindEncoderConfig):
    """ImageBind vision branch for single images (``size``: ``huge`` or ``tiny``; ``checkpoint``: imagebind_huge.pth)."""

    modality: Literal["vision"] = "vision"
    clips: Literal[False] = False


class ImageBindImageEncoder(ImageBindEncoder):
    """``preprocess``: ``PIL.Image`` -> ``(3, 224, 224)`` (ImageBind's bicubic resize, center crop, CLIP norm);
    ``forward``: ``(B, 3, 224, 224)`` -> ``(B, 1, out_dim)`` (1024 at ``huge``), L2-normalised."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindImageEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        return preprocess_image(media)
