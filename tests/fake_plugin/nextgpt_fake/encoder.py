"""A fake encoder: flatten, resample to ``in_features``, ``Linear`` + ``tanh``, L2-normalise per token."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from nextgpt_core.interfaces import ComponentConfig, Encoder


class FakeEncoderConfig(ComponentConfig):
    in_features: int = Field(default=16, ge=1)
    enc_dim: int = Field(default=12, ge=1)
    n_tokens: int = Field(default=1, ge=1)


class FakeEncoder(Encoder):
    """``preprocess``: any numeric array -> ``(in_features,)``; ``forward``: ``(B, in_features)`` -> ``(B, n_tokens, enc_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = FakeEncoderConfig

    def __init__(self, config: FakeEncoderConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.in_features, config.enc_dim * config.n_tokens)

    @classmethod
    def output_dim_of(cls, config: FakeEncoderConfig) -> int:  # type: ignore[override]
        return config.enc_dim

    def preprocess(self, media: Any) -> torch.Tensor:
        flat = np.asarray(media, dtype=np.float32).reshape(-1)
        n = self.config.in_features
        resampled = np.interp(np.linspace(0, len(flat) - 1, n), np.arange(len(flat)), flat) if len(flat) > 1 else np.full(n, flat[0] if len(flat) else 0.0)
        return torch.from_numpy(resampled.astype(np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.proj(x)).view(x.shape[0], self.config.n_tokens, self.config.enc_dim)
        return nn.functional.normalize(y, dim=-1)
