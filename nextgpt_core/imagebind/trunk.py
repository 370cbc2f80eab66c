"""The transformer trunk every ImageBind branch shares (ImageBind's ``SimpleTransformer``), batch-first.

State-dict names as in ImageBind: ``pre_transformer_layer.0.*`` (a ``LayerNorm`` in the vision branch only; an
``Identity`` elsewhere) and ``blocks.<i>.*``. ImageBind transposes to sequence-first around the blocks
(``EinOpsRearrange``, no parameters); this trunk stays batch-first, which is the same computation.
"""

from __future__ import annotations

from torch import nn

from .layers import Block, layer_norm

__all__ = ["Trunk"]


class Trunk(nn.Module):
    """``num_blocks`` pre-norm blocks of width ``dim``: ``(N, L, dim)`` -> ``(N, L, dim)``.

    Args:
        dim: token width ``D``.
        num_blocks: depth.
        num_heads: attention heads (``dim`` must divide by it).
        pre_ln: a ``LayerNorm(eps=1e-6)`` before the first block (vision: yes; audio, depth: no).
        add_bias_kv: the learned extra key/value of ``nn.MultiheadAttention`` (audio, depth: yes; vision: no).
        drop_path: the last block's stochastic-depth rate; rates grow linearly from 0 over the blocks (ImageBind's
            "progressive" schedule). Identity at eval.
    """

    def __init__(
        self, dim: int, num_blocks: int, num_heads: int, *, pre_ln: bool, add_bias_kv: bool, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        rates = [drop_path * i / (num_blocks - 1) if num_blocks > 1 else 0.0 for i in range(num_blocks)]
        self.pre_transformer_layer = nn.Sequential(layer_norm(dim) if pre_ln else nn.Identity())
        self.blocks = nn.Sequential(
            *(Block(dim, num_heads, add_bias_kv=add_bias_kv, drop_path=rates[i]) for i in range(num_blocks))
        )
        self.post_transformer_layer = nn.Identity()
        self.apply(_init_weights)

    def forward(self, tokens):  # type: ignore[no-untyped-def]
        """``(N, L, D)`` -> ``(N, L, D)``."""
        return self.post_transformer_layer(self.blocks(self.pre_transformer_layer(tokens)))


def _init_weights(m: nn.Module) -> None:
    # ImageBind's "jax" init for the trunk: xavier-uniform linear weights, zero biases, unit LayerNorms.
    # (The attention's fused in_proj is initialised by nn.MultiheadAttention itself: xavier-uniform, zero bias.)
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
