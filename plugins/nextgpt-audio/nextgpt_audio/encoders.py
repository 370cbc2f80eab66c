"""The ImageBind audio encoder: 3 clips of 2 s as 128-bin log-mel fbanks, averaged (official NExT-GPT v0)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

import torch

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig
from nextgpt_core.interfaces import ComponentConfig

from .preprocess import preprocess_audio

__all__ = ["ImageBindAudioEncoder", "ImageBindAudioEncoderConfig"]


class ImageBindAudioEncoderConfig(ImageBindEncoderConfig):
    """ImageBind audio branch (clips averaged; the x20 logit scale bypassed as in the official encoder).

    Attributes:
        clips_per_video: clips of 2 s (3 for ImageBind; a sound of 2 s or less gives identical clips).
    """

    modality: Literal["audio"] = "audio"
    clips: Literal[True] = True
    clips_per_video: int = Field(default=3, ge=1, le=64)


class ImageBindAudioEncoder(ImageBindEncoder):
    """``preprocess``: :class:`~nextgpt_audio.media.Audio` -> ``(3, 1, 128, 204)``; ``forward``:
    ``(B, 3, 1, 128, 204)`` -> ``(B, 1, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindAudioEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        return preprocess_audio(media, clips_per_video=self.config.clips_per_video)  # type: ignore[attr-defined]
