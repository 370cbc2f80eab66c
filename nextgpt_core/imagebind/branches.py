"""ImageBind's per-modality branches (vision, audio, depth): preprocessor -> trunk -> head -> postprocessor.

A branch is a module holding four ``ModuleDict`` s with one entry each, so its ``state_dict`` keys are exactly the
official ones: ``modality_preprocessors.<m>.*``, ``modality_trunks.<m>.*``, ``modality_heads.<m>.*``,
``modality_postprocessors.<m>.*``. Geometry and widths come from :data:`SIZES`:

- vision: an image ``(3, 224, 224)`` (repeated to 2 frames) or a 2-frame clip ``(3, 2, 224, 224)``;
  ``Conv3d`` kernel = stride = ``(2, 14, 14)``; 1 cls + 1x16x16 patches = 257 tokens.
- audio: a log-mel fbank ``(1, 128, 204)``; ``Conv2d`` kernel 16, stride 10, ``LayerNorm``; 1 + 12x19 = 229 tokens.
- depth: a disparity map ``(1, 224, 224)``; ``Conv2d`` kernel = stride = 16, ``LayerNorm``; 1 + 14x14 = 197 tokens.

``huge`` is ``imagebind_huge`` (vision 1280-d / 32 blocks / 16 heads, audio 768 / 12 / 12, depth 384 / 12 / 8,
out 1024); ``tiny`` keeps the geometry with 32-d, 2-block, 2-head trunks and out 32, for fast tests; ``toy`` is the
toy world's (32x32 pictures and depth maps in 4x4 patches, the fbank in 16x16 patches; 96-d, 3 blocks, out 64).
Other square vision sizes interpolate the positional embedding bicubically, as ImageBind does (depth too, which
upstream ImageBind cannot; audio must be 128x204).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .layers import LogitScale, Normalize, SelectToken, layer_norm
from .trunk import Trunk

__all__ = [
    "BRANCH_PREFIXES",
    "MODALITIES",
    "SIZES",
    "BranchSpec",
    "ImageBindBranch",
    "branch_spec",
    "build_branch",
    "embed_branch",
]

#: the branches nextgpt implements (ImageBind also has text, thermal and imu)
MODALITIES: tuple[str, ...] = ("vision", "audio", "depth")
#: the four module groups of every branch, in ImageBind's order
BRANCH_PREFIXES: tuple[str, ...] = (
    "modality_preprocessors",
    "modality_trunks",
    "modality_heads",
    "modality_postprocessors",
)


@dataclass(frozen=True)
class BranchSpec:
    """Everything that fixes one branch's architecture.

    Attributes:
        modality: ``"vision"``, ``"audio"`` or ``"depth"``.
        dim, num_blocks, num_heads: trunk width ``D``, depth and heads.
        out_dim: embedding size ``E`` after the head.
        item_shape: the nominal item (vision as a 2-frame clip ``(3, 2, 224, 224)``).
        kernel, stride: patch-conv kernel and stride (3-D for vision, 2-D otherwise).
        stem_norm: a ``LayerNorm`` (torch default eps) after the patch conv (audio, depth).
        pre_ln: a ``LayerNorm`` before the first block (vision).
        add_bias_kv: learned extra key/value in attention (audio, depth).
        drop_path: last block's stochastic-depth rate (training only).
        logit_scale: the fixed logit scale of the postprocessor (audio 20, depth 5; vision none).
    """

    modality: str
    dim: int
    num_blocks: int
    num_heads: int
    out_dim: int
    item_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    stem_norm: bool
    pre_ln: bool
    add_bias_kv: bool
    drop_path: float
    logit_scale: float | None

    @property
    def grid(self) -> tuple[int, ...]:
        """Patch layout of the nominal item: vision ``(1, 16, 16)``, audio ``(12, 19)``, depth ``(14, 14)``."""
        spatial = self.item_shape[1:]
        return tuple((n - k) // s + 1 for n, k, s in zip(spatial, self.kernel, self.stride))

    @property
    def num_tokens(self) -> int:
        """1 cls token + ``prod(grid)`` patches (257 / 229 / 197)."""
        return 1 + math.prod(self.grid)


def _specs(vision: tuple[int, int, int], audio: tuple[int, int, int], depth: tuple[int, int, int], out: int) -> dict[str, BranchSpec]:
    return {
        "vision": BranchSpec("vision", *vision, out, (3, 2, 224, 224), (2, 14, 14), (2, 14, 14), False, True, False, 0.0, None),
        "audio": BranchSpec("audio", *audio, out, (1, 128, 204), (16, 16), (10, 10), True, False, True, 0.1, 20.0),
        "depth": BranchSpec("depth", *depth, out, (1, 224, 224), (16, 16), (16, 16), True, False, True, 0.0, 5.0),
    }


def _toy_specs(dim: int, blocks: int, heads: int, out: int) -> dict[str, BranchSpec]:
    """The toy world's branches: ImageBind's layout on 32x32 pictures (4x4 patches, 8x8 grid) and depth maps, and
    on the official 128x204 fbank with 16x16 patches (8x12 grid); drop-path 0 (the toy trains them from scratch)."""
    return {
        "vision": BranchSpec("vision", dim, blocks, heads, out, (3, 2, 32, 32), (2, 4, 4), (2, 4, 4), False, True, False, 0.0, None),
        "audio": BranchSpec("audio", dim, blocks, heads, out, (1, 128, 204), (16, 16), (16, 16), True, False, True, 0.0, 20.0),
        "depth": BranchSpec("depth", dim, blocks, heads, out, (1, 32, 32), (4, 4), (4, 4), True, False, True, 0.0, 5.0),
    }


#: ``SIZES[size][modality]`` -> :class:`BranchSpec`; (dim, blocks, heads) per branch, then the output size.
#: ``toy`` is the toy world's (:mod:`nextgpt_core.toy`): 32x32 pictures, trained here from scratch.
SIZES: dict[str, dict[str, BranchSpec]] = {
    "huge": _specs(vision=(1280, 32, 16), audio=(768, 12, 12), depth=(384, 12, 8), out=1024),
    "tiny": _specs(vision=(32, 2, 2), audio=(32, 2, 2), depth=(32, 2, 2), out=32),
    "toy": _toy_specs(dim=96, blocks=3, heads=4, out=64),
}


def branch_spec(modality: str, size: str = "huge") -> BranchSpec:
    """The :class:`BranchSpec` of ``modality`` at ``size``; ``ValueError`` names the choices otherwise."""
    if size not in SIZES:
        raise ValueError(f"unknown ImageBind size {size!r}; choose from {sorted(SIZES)}")
    if modality not in SIZES[size]:
        raise ValueError(f"unknown ImageBind branch {modality!r}; choose from {list(MODALITIES)}")
    return SIZES[size][modality]


# ---------------------------------------------------------------------------------------------- preprocessors
class _RepeatToClip(nn.Module):
    """Image -> 2-frame clip (ImageBind's ``PadIm2Video(pad_type="repeat")``).

    ``(N, C, H, W)`` -> ``(N, C, frames, H, W)`` (the image repeated); a ``(N, C, 1, H, W)`` clip is repeated too;
    a ``(N, C, frames, H, W)`` clip passes unchanged.
    """

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.dim() != 5:
            raise ValueError(f"vision input must be (N, 3, H, W) or (N, 3, T, H, W), got {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.expand(-1, -1, self.frames, -1, -1)
        elif x.shape[2] != self.frames:
            raise ValueError(f"vision clips must have 1 or {self.frames} frames, got {x.shape[2]} in {tuple(x.shape)}")
        return x


class PatchStem(nn.Module):
    """Patch conv (+ optional ``LayerNorm``): ``(N, C, [T,] H, W)`` -> ``(N, n_patches, D)`` (ImageBind's ``PatchEmbedGeneric``).

    Keys: ``proj.weight`` (audio, depth) or ``proj.1.weight`` (vision: ``proj`` = repeat-to-clip, ``Conv3d``),
    ``norm_layer.{weight,bias}`` when ``stem_norm``.
    """

    def __init__(self, spec: BranchSpec) -> None:
        super().__init__()
        channels = spec.item_shape[0]
        if len(spec.kernel) == 3:
            conv = nn.Conv3d(channels, spec.dim, kernel_size=spec.kernel, stride=spec.stride, bias=False)
            self.proj: nn.Module = nn.Sequential(_RepeatToClip(spec.item_shape[1]), conv)
        else:
            self.proj = nn.Conv2d(channels, spec.dim, kernel_size=spec.kernel, stride=spec.stride, bias=False)
        self.norm_layer = nn.LayerNorm(spec.dim) if spec.stem_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class PositionalEmbedding(nn.Module):
    """Learned positional embedding ``pos_embed`` ``(1, 1 + n_patches, D)`` (ImageBind's ``SpatioTemporalPosEmbeddingHelper``).

    ``for_tokens(n)`` returns it for ``n`` patches; a different square patch count is interpolated bicubically
    from the 2-D grid (the cls position is kept).
    """

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, dim))

    def for_tokens(self, n_patches: int) -> torch.Tensor:
        """``(1, 1 + n_patches, D)``."""
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        have = grid.shape[1]
        if n_patches == have:
            return self.pos_embed
        side, new_side = math.isqrt(have), math.isqrt(n_patches)
        if side * side != have or new_side * new_side != n_patches:
            raise ValueError(f"cannot fit {have} positional embeddings to {n_patches} patches (only square grids interpolate)")
        dim = grid.shape[-1]
        dtype = grid.dtype
        grid = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid.float(), size=(new_side, new_side), mode="bicubic").to(dtype)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, n_patches, dim)], dim=1)


class TokenPreprocessor(nn.Module):
    """Stem, cls token, positional embedding (ImageBind's ``RGBDTPreprocessor`` / ``AudioPreprocessor``).

    ``(N, *item)`` -> ``(N, 1 + n_patches, D)``. Keys: ``cls_token`` ``(1, 1, D)``, ``<stem_name>.*`` (``rgbt_stem``
    for vision and audio, ``depth_stem`` for depth), ``pos_embedding_helper.pos_embed``.
    """

    def __init__(self, spec: BranchSpec) -> None:
        super().__init__()
        self.stem_name = "depth_stem" if spec.modality == "depth" else "rgbt_stem"
        self.add_module(self.stem_name, PatchStem(spec))
        self.pos_embedding_helper = PositionalEmbedding(spec.num_tokens, spec.dim)
        self.cls_token = nn.Parameter(torch.empty(1, 1, spec.dim))
        with torch.no_grad():  # OpenCLIP-style init, as ImageBind: N(0, 1) * D**-0.5
            scale = spec.dim**-0.5
            nn.init.normal_(self.pos_embedding_helper.pos_embed).mul_(scale)
            nn.init.normal_(self.cls_token).mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.for_tokens(tokens.shape[1] - 1)


# ---------------------------------------------------------------------------------------------- the branch
def _head(spec: BranchSpec) -> nn.Sequential:
    # LayerNorm(eps 1e-6) -> cls token -> Linear(D, E, bias=False); keys 0.weight, 0.bias, 2.weight
    return nn.Sequential(layer_norm(spec.dim), SelectToken(0), nn.Linear(spec.dim, spec.out_dim, bias=False))


def _postprocessor(spec: BranchSpec) -> nn.Module:
    # vision: Normalize; audio/depth: Sequential(Normalize, fixed LogitScale) -> key 1.log_logit_scale
    if spec.logit_scale is None:
        return Normalize(dim=-1)
    return nn.Sequential(Normalize(dim=-1), LogitScale(spec.logit_scale, learnable=False))


class ImageBindBranch(nn.Module):
    """One ImageBind branch: ``(N, *item)`` -> ``(N, out_dim)`` L2-normalised embeddings.

    Holds ``modality_preprocessors``, ``modality_trunks``, ``modality_heads`` and ``modality_postprocessors``
    (``ModuleDict`` s with the single key ``spec.modality``), so ``state_dict()`` has the official key names.
    Build with :func:`build_branch`; ``forward`` is :func:`embed_branch` (the NExT-GPT postprocessing: normalise,
    no logit scale).
    """

    def __init__(self, spec: BranchSpec) -> None:
        super().__init__()
        self.spec = spec
        m = spec.modality
        self.modality_preprocessors = nn.ModuleDict({m: TokenPreprocessor(spec)})
        self.modality_trunks = nn.ModuleDict(
            {m: Trunk(spec.dim, spec.num_blocks, spec.num_heads, pre_ln=spec.pre_ln, add_bias_kv=spec.add_bias_kv, drop_path=spec.drop_path)}
        )
        self.modality_heads = nn.ModuleDict({m: _head(spec)})
        self.modality_postprocessors = nn.ModuleDict({m: _postprocessor(spec)})

    def forward(self, x: torch.Tensor, *, logit_scale: bool = False) -> torch.Tensor:
        """``(N, *item)`` -> ``(N, out_dim)``; see :func:`embed_branch`."""
        return embed_branch(self, self.spec.modality, x, logit_scale=logit_scale)


def build_branch(modality: str, size: str = "huge", *, device: str | torch.device | None = None) -> ImageBindBranch:
    """Build the ``modality`` branch at ``size`` (randomly initialised; deterministic under ``torch.manual_seed``).

    ``device="meta"`` builds it without allocating memory (to check keys, shapes and parameter counts).
    """
    spec = branch_spec(modality, size)
    if device is None:
        return ImageBindBranch(spec)
    with torch.device(device):
        return ImageBindBranch(spec)


def embed_branch(module: nn.Module, modality: str, x: torch.Tensor, *, logit_scale: bool = False) -> torch.Tensor:
    """Run ``module``'s ``modality`` branch: ``(N, *item)`` -> ``(N, out_dim)``.

    ``module`` is anything holding ImageBind's four ``ModuleDict`` s (an :class:`ImageBindBranch` or an
    :class:`~nextgpt_core.imagebind.ImageBindEncoder`). The postprocessor's ``Normalize`` is always applied; the
    fixed logit scale (audio x20, depth x5) only with ``logit_scale=True`` (upstream ImageBind's raw output).
    NExT-GPT skips it: its ImageBind copy (``NExT-GPT-Lagacy/code/model/ImageBind/models/imagebind_model.py``)
    calls only ``modality_postprocessors[AUDIO][0]``.
    """
    tokens = module.modality_preprocessors[modality](x)
    tokens = module.modality_trunks[modality](tokens)
    pooled = module.modality_heads[modality](tokens)
    post = module.modality_postprocessors[modality]
    if isinstance(post, nn.Sequential) and not logit_scale:
        post = post[0]
    return post(pooled)
