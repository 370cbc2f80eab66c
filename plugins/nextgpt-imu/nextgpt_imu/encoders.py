"""The ImageBind IMU encoder: the ``imu`` branch (declared in :mod:`nextgpt_imu.branch`) on 5-second windows."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from nextgpt_core.imagebind import ImageBindEncoder, ImageBindEncoderConfig, branch_spec
from nextgpt_core.interfaces import ComponentConfig

from . import branch as _branch  # noqa: F401 - registers the imu branch before any config is validated
from .preprocess import IMAGEBIND_RATE, IMAGEBIND_SECONDS, preprocess_imu

__all__ = ["ImageBindIMUEncoder", "ImageBindIMUEncoderConfig"]


class ImageBindIMUEncoderConfig(ImageBindEncoderConfig):
    """ImageBind IMU branch (its fixed x5 logit scale kept in the model, skipped in the output).

    Attributes:
        size: ``"huge"`` (512-d, 6 blocks, 8 heads, out 1024), ``"tiny"`` (32-d, out 32) or ``"toy"`` (200 samples).
        checkpoint: ``imagebind_huge.pth`` (its ``imu`` branch loads strictly), or ``None`` (random init).
        sample_rate, clip_seconds: the window fed to the branch; ``sample_rate x clip_seconds`` must be the branch's
            sample count (2000 = 400 Hz x 5 s; the toy's 200 = 40 Hz x 5 s).
        num_clips: 1 (the centred window, the paper's protocol) or more evenly spread windows whose embeddings are
            averaged (``clips`` follows: true when ``num_clips > 1``).
    """

    modality: Literal["imu"] = "imu"
    clips: bool = False
    sample_rate: float = Field(default=IMAGEBIND_RATE, gt=0, le=100_000)
    clip_seconds: float = Field(default=IMAGEBIND_SECONDS, gt=0, le=3600)
    num_clips: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="before")
    @classmethod
    def _clips_from_count(cls, data: Any) -> Any:
        if isinstance(data, dict) and "clips" not in data:
            data = {**data, "clips": int(data.get("num_clips", 1)) > 1}
        return data

    @model_validator(mode="after")
    def _fits_the_branch(self) -> "ImageBindIMUEncoderConfig":
        if self.clips != (self.num_clips > 1):
            raise ValueError(f"clips must be {self.num_clips > 1} with num_clips = {self.num_clips}")
        want = branch_spec(self.modality, self.size).item_shape[1]
        have = round(self.sample_rate * self.clip_seconds)
        if have != want:
            raise ValueError(f"sample_rate {self.sample_rate:g} x clip_seconds {self.clip_seconds:g} = {have} samples, "
                             f"but the imu branch at size {self.size!r} takes {want}")
        return self


class ImageBindIMUEncoder(ImageBindEncoder):
    """``preprocess``: an :class:`~nextgpt_imu.media.IMU` -> ``(6, 2000)`` (or ``(num_clips, 6, 2000)``);
    ``forward``: ``(B, [V,] 6, 2000)`` -> ``(B, 1, out_dim)`` (one L2-normalised token per recording)."""

    config_class: ClassVar[type[ComponentConfig]] = ImageBindIMUEncoderConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        c = self.config
        return preprocess_imu(media, sample_rate=c.sample_rate, clip_seconds=c.clip_seconds, num_clips=c.num_clips)  # type: ignore[attr-defined]
