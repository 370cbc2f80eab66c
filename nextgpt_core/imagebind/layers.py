"""The small layers every ImageBind branch is made of, with ImageBind's attribute names.

Written for nextgpt from the published architecture (facebookresearch/ImageBind, ``models/transformer.py`` and
``models/helpers.py``): the names (``attn``, ``norm_1``, ``mlp.fc1``, ``mlp.fc2``, ``norm_2``,
``log_logit_scale``) are kept so the official ``imagebind_huge.pth`` loads strictly. Shapes: ``N`` items,
``L`` tokens, ``D`` the branch width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Block", "DropPath", "LogitScale", "Mlp", "Normalize", "SelectToken", "layer_norm"]


def layer_norm(dim: int) -> nn.LayerNorm:
    """The trunk's and the heads' ``LayerNorm`` (``eps=1e-6``; the patch stems keep torch's ``1e-5``)."""
    return nn.LayerNorm(dim, eps=1e-6)


class DropPath(nn.Module):
    """Stochastic depth on the residual branch: drops whole items with probability ``p`` while training.

    Identity in eval mode (the only mode a frozen encoder runs in) and when ``p == 0``. No parameters.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, D)`` -> ``(N, L, D)``."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``fc1`` (D -> ratio*D), exact GELU, ``fc2`` (ratio*D -> D); ``(N, L, D)`` -> ``(N, L, D)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + drop(attn(norm_1(x)))`` then ``x + drop(mlp(norm_2(x)))``.

    ``attn`` is ``torch.nn.MultiheadAttention`` (keys ``in_proj_weight``, ``in_proj_bias``, ``out_proj.*`` and, for
    the audio/depth branches, ``bias_k``/``bias_v``: one extra learned key/value appended to every sequence).
    ``(N, L, D)`` -> ``(N, L, D)``; no attention mask (the vision, audio and depth branches attend fully).
    """

    def __init__(self, dim: int, num_heads: int, *, add_bias_kv: bool, drop_path: float = 0.0, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, bias=True, add_bias_kv=add_bias_kv, batch_first=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm_1 = layer_norm(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.norm_2 = layer_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class SelectToken(nn.Module):
    """Pools by picking one token (ImageBind's ``SelectElement``): ``(N, L, D)`` -> ``(N, D)``."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class Normalize(nn.Module):
    """L2-normalise along ``dim`` (default last): ``(..., E)`` -> ``(..., E)`` with unit norm."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, p=2, dim=self.dim)


class LogitScale(nn.Module):
    """Multiplies by ``min(exp(log_logit_scale), max_scale)`` (ImageBind's ``LearnableLogitScaling``).

    For the audio (x20) and depth (x5) branches the scale is fixed: ``log_logit_scale`` is a persistent 0-dim
    buffer (it is in ``imagebind_huge.pth``). ``(..., E)`` -> ``(..., E)``.
    """

    def __init__(self, init: float, *, learnable: bool = False, max_scale: float = 100.0) -> None:
        super().__init__()
        self.max_scale = max_scale
        value = torch.full((), math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_scale) * x
