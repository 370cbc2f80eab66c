"""The ImageBind thermal encoder: the ``thermal`` branch (declared in :mod:`nextgpt_thermal.branch`) on one
single-channel image."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from . import branch as _branch  # noqa: F401 - registers the thermal branch before any config is validated
from .preprocess import preprocess_thermal

__all__ = ["ImageBindThermalEncoder", "ImageBindThermalEncoderConfig"]


class ImageBindThermalEncoderConfig(ImageBindEncoderConfig):
    """ImageBind thermal branch (its fixed x10 logit scale kept in the model, skipped in the output).

    Attributes:
        size: ``"huge"`` (768-d, 12 blocks, 12 heads, out 1024), ``"tiny"`` (32-d, out 32) or ``"toy"``.
        checkpoint: ``imagebind_huge.pth`` (its ``thermal`` branch loads strictly), or ``None`` (random init).
        image_size: side of the square image fed to the branch (224 for ImageBind; 32 for ``toy``).
        normalize: ``"full_range"`` (8-bit / 255, 16-bit / 65535, floats as they are) or ``"min_max"`` (each
            image stretched to 0..1, for raw radiometric counts).
    """

    modality: Literal["thermal"] = "thermal"
    clips: Literal[False] = False
    image_size: int = Field(default=224, ge=8, le=1024)
    normalize: Literal["full_range", "min_max"] = "full_range"


class ImageBindThermalEncoder(ImageBindEncoder):
    """``preprocess``: thermal image ``(H, W)`` -> ``(1, image_size, image_size)`` intensities; ``forward``:
    ``(B, 1, 224, 224)`` -> ``(B, 1, out_dim)`` (one L2-normalised token per image)."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindThermalEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        c = self.config
        return preprocess_thermal(media, c.image_size, normalize=c.normalize)  # type: ignore[attr-defined]
