"""Generic projectors, usable by any modality (registered as ``linear``, ``mlp``, ``linear-out``, ``transformer``).

Input projectors map encoder features into the LLM embedding space; output projectors map signal-token hidden
states into one decoder conditioning input. The ``transformer`` output projector keeps the official NExT-GPT
parameter names (``fc``, ``tfm``, ``model``, ``query_embs``) so its released weights load.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from .interfaces import ComponentConfig, InputProjector, InputProjectorConfig, OutputProjector, OutputProjectorConfig

__all__ = [
    "LinearInputProjector",
    "LinearInputProjectorConfig",
    "LinearOutputProjector",
    "MLPInputProjector",
    "MLPInputProjectorConfig",
    "TransformerOutputProjector",
    "TransformerOutputProjectorConfig",
]


class LinearInputProjectorConfig(InputProjectorConfig):
    """``tokens``: LLM tokens made from each encoder token (1: the official ``llama_proj``)."""

    tokens: int = Field(default=1, ge=1, le=256)


class LinearInputProjector(InputProjector):
    """One ``nn.Linear(in_dim, tokens * out_dim)`` per encoder token (official v0 ``llama_proj``: 1024 -> 4096, one
    token per item, ``tokens = 1``). With ``tokens = k`` each encoder token becomes ``k`` LLM tokens (a soft prompt
    of ``k`` positions that a small frozen LLM reads like ``k`` words).

    ``(B, n, in_dim)`` -> ``(B, n * tokens, out_dim)``.
    """

    config_class: ClassVar[type[ComponentConfig]] = LinearInputProjectorConfig

    def __init__(self, config: LinearInputProjectorConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.in_dim, config.tokens * config.out_dim)  # type: ignore[arg-type, operator]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = self.proj(features)  # (B, n, tokens * out_dim)
        return y.reshape(y.shape[0], -1, self.config.out_dim)  # type: ignore[attr-defined]


class MLPInputProjectorConfig(InputProjectorConfig):
    """Two-layer GELU MLP; ``hidden_dim`` defaults to ``out_dim``."""

    hidden_dim: int | None = None


class MLPInputProjector(InputProjector):
    """``Linear(in_dim, hidden) -> GELU -> Linear(hidden, out_dim)`` per token: ``(B, n, in_dim)`` -> ``(B, n, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = MLPInputProjectorConfig

    def __init__(self, config: MLPInputProjectorConfig) -> None:
        super().__init__(config)
        hidden = config.hidden_dim or config.out_dim
        self.net = nn.Sequential(nn.Linear(config.in_dim, hidden), nn.GELU(), nn.Linear(hidden, config.out_dim))  # type: ignore[arg-type]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class LinearOutputProjector(OutputProjector):
    """A per-token ``Linear(in_dim, out_dim)`` then a ``Linear(N, out_len)`` across tokens.

    ``(B, N, in_dim)`` -> ``(B, out_len, out_dim)``. A cheap baseline for the transformer projector.
    """

    def __init__(self, config: OutputProjectorConfig) -> None:
        super().__init__(config)
        self.fc = nn.Linear(config.in_dim, config.out_dim)  # type: ignore[arg-type]
        self.token_mix = nn.Linear(config.num_signal_tokens, config.out_len)  # type: ignore[arg-type]

    def forward(self, hidden: torch.Tensor, signal_embeds: torch.Tensor) -> torch.Tensor:
        x = self.fc(self.combine(hidden, signal_embeds))  # (B, N, out_dim)
        return self.token_mix(x.transpose(1, 2)).transpose(1, 2)


class TransformerOutputProjectorConfig(OutputProjectorConfig):
    """The official ``TextFcLayer(mode='transformer')``; defaults are the official sizes.

    ``d_model`` 512, 4 heads, 4 encoder + 4 decoder layers, feed-forward 2048, pre-norm, dropout 0.
    ``query_init`` is ``"randn"`` (official legacy) or ``"zeros"`` (official new code).
    """

    d_model: int = 512
    num_heads: int = 4
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dim_feedforward: int = 2048
    dropout: float = 0.0
    query_init: Literal["randn", "zeros"] = "randn"


class TransformerOutputProjector(OutputProjector):
    """``fc`` (in_dim -> d_model), ``tfm`` (``nn.Transformer``, src = N signal tokens, tgt = ``out_len`` learned
    ``query_embs``), ``model`` (d_model -> out_dim).

    ``(B, N, in_dim)``, ``(B, N, in_dim)`` -> ``(B, out_len, out_dim)``.
    """

    config_class: ClassVar[type[ComponentConfig]] = TransformerOutputProjectorConfig

    def __init__(self, config: TransformerOutputProjectorConfig) -> None:
        super().__init__(config)
        self.fc = nn.Linear(config.in_dim, config.d_model)  # type: ignore[arg-type]
        with warnings.catch_warnings():  # "enable_nested_tensor ... norm_first": irrelevant here
            warnings.simplefilter("ignore", UserWarning)
            self.tfm = nn.Transformer(
                d_model=config.d_model,
                nhead=config.num_heads,
                num_encoder_layers=config.num_encoder_layers,
                num_decoder_layers=config.num_decoder_layers,
                dim_feedforward=config.dim_feedforward,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
        init = torch.randn if config.query_init == "randn" else torch.zeros
        self.query_embs = nn.Parameter(init(1, config.out_len, config.d_model))  # type: ignore[arg-type]
        self.model = nn.Linear(config.d_model, config.out_dim)  # type: ignore[arg-type]

    def forward(self, hidden: torch.Tensor, signal_embeds: torch.Tensor) -> torch.Tensor:
        src = self.fc(self.combine(hidden, signal_embeds))  # (B, N, d_model)
        tgt = self.query_embs.expand(src.shape[0], -1, -1)  # (B, out_len, d_model)
        return self.model(self.tfm(src, tgt))  # (B, out_len, out_dim)
