"""ImageBind's per-modality branches: preprocessor -> trunk -> head -> postprocessor, and the open table of them.

A branch is a module holding four ``ModuleDict`` s with one entry each, so its ``state_dict`` keys are exactly the
official ones: ``modality_preprocessors.<m>.*``, ``modality_trunks.<m>.*``, ``modality_heads.<m>.*``,
``modality_postprocessors.<m>.*``. What a branch is (stem, width, depth, heads, head, postprocessing, the key prefix
``<m>``) is one :class:`BranchSpec`; :func:`register_branch` adds a branch name with its specs per size to the open
table :data:`SIZES`. The core registers the three branches several plugins share (``vision`` for images and
videos, ``audio``, ``depth``); a plugin registers any other (ImageBind's ``thermal`` and ``imu`` come from the
``nextgpt-thermal`` and ``nextgpt-imu`` plugins) and then gets everything these get: the shared frozen branch of
:class:`~nextgpt_core.imagebind.ImageBindEncoder`, meta-device builds, strict loading of the official keys, clip
averaging. The built-in ones:

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
import re
import threading
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .layers import LogitScale, Normalize, SelectToken, layer_norm
from .trunk import Trunk

__all__ = [
    "BRANCH_PREFIXES",
    "BUILTIN_BRANCHES",
    "SIZES",
    "BranchSpec",
    "ImageBindBranch",
    "branch_sizes",
    "branch_spec",
    "build_branch",
    "embed_branch",
    "register_branch",
    "registered_branches",
]

#: the branches the core registers itself, because several plugins share them (vision: images and videos)
BUILTIN_BRANCHES: tuple[str, ...] = ("vision", "audio", "depth")
#: the four module groups of every branch, in ImageBind's order
BRANCH_PREFIXES: tuple[str, ...] = (
    "modality_preprocessors",
    "modality_trunks",
    "modality_heads",
    "modality_postprocessors",
)


@dataclass(frozen=True)
class BranchSpec:
    """Everything that fixes one branch's architecture (and so its official keys and shapes).

    Attributes:
        modality: the branch name, which is also the official key prefix ``<m>`` of ``modality_trunks.<m>.*``
            (``"vision"``, ``"audio"``, ``"thermal"``, ...): lower case, no dots.
        dim, num_blocks, num_heads: trunk width ``D``, depth and heads (``D`` divisible by the heads).
        out_dim: embedding size ``E`` after the head.
        item_shape: the nominal item, channels first (vision as a 2-frame clip ``(3, 2, 224, 224)``, IMU ``(6, 2000)``).
        kernel, stride: the stem's patch kernel and stride over ``item_shape[1:]`` (3-D for vision, 2-D for
            pictures and spectrograms, 1-D for time series).
        stem_norm: a ``LayerNorm`` (torch default eps) after the patch projection (every branch but vision).
        pre_ln: a ``LayerNorm`` before the first block (vision).
        add_bias_kv: learned extra key/value in attention (every branch but vision).
        drop_path: last block's stochastic-depth rate (training only).
        logit_scale: the fixed logit scale of the postprocessor (audio 20, depth 5, thermal 10, imu 5; vision none):
            the postprocessor is ``Normalize`` alone when ``None``, else ``Sequential(Normalize, LogitScale)``.
        stem: ``"conv"``: a bias-free ``Conv2d`` / ``Conv3d`` (by ``len(kernel)``) over patches; ``"linear"``: the
            last axis cut into windows of ``kernel[0]`` samples, each window's ``C x kernel`` values (channel-major)
            through a bias-free ``Linear`` (ImageBind's IMU stem).
        stem_name: the stem's attribute, part of the keys (``rgbt_stem``; ``depth_stem``; ``imu_stem``).
        pos_embed: ``"helper"``: ``pos_embedding_helper.pos_embed`` (square grids interpolate); ``"direct"``: a
            ``pos_embed`` parameter of the preprocessor itself, registered before ``cls_token`` (ImageBind's IMU).
        head_dropout: a ``Dropout`` of this rate between the cls-token pick and the projection (the IMU head), which
            moves the projection's key from ``2.weight`` to ``3.weight``; ``None``: no dropout layer.
        item_layout: how error messages describe one item (default: built from ``item_shape``).
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
    stem: str = "conv"
    stem_name: str = "rgbt_stem"
    pos_embed: str = "helper"
    head_dropout: float | None = None
    item_layout: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.modality):
            problems.append(f"the branch name must be a lower-case identifier without dots, got {self.modality!r}")
        if min(self.dim, self.num_blocks, self.num_heads, self.out_dim) < 1 or self.dim % self.num_heads:
            problems.append(f"dim {self.dim} must be a positive multiple of num_heads {self.num_heads}")
        if self.stem not in ("conv", "linear"):
            problems.append(f"stem must be 'conv' or 'linear', got {self.stem!r}")
        if self.pos_embed not in ("helper", "direct"):
            problems.append(f"pos_embed must be 'helper' or 'direct', got {self.pos_embed!r}")
        spatial = len(self.item_shape) - 1
        if len(self.kernel) != spatial or len(self.stride) != spatial or spatial < 1:
            problems.append(f"kernel {self.kernel} and stride {self.stride} must each have one entry per axis of "
                            f"item_shape {self.item_shape} after the channels")
        elif self.stem == "conv" and spatial not in (2, 3):
            problems.append(f"a 'conv' stem patches 2-D or 3-D items, got item_shape {self.item_shape}")
        elif self.stem == "linear" and (spatial != 1 or self.kernel != self.stride):
            problems.append(f"a 'linear' stem cuts a (C, T) item into windows with stride = kernel, got "
                            f"item_shape {self.item_shape}, kernel {self.kernel}, stride {self.stride}")
        elif any(k > n for k, n in zip(self.kernel, self.item_shape[1:])):
            problems.append(f"kernel {self.kernel} is larger than item_shape {self.item_shape}")
        if not _IDENT.match(self.stem_name):
            problems.append(f"stem_name must be an identifier, got {self.stem_name!r}")
        if problems:
            raise ValueError(f"BranchSpec {self.modality!r}: " + "; ".join(problems))

    @property
    def grid(self) -> tuple[int, ...]:
        """Patch layout of the nominal item: vision ``(1, 16, 16)``, audio ``(12, 19)``, depth ``(14, 14)``, imu ``(250,)``."""
        spatial = self.item_shape[1:]
        return tuple((n - k) // s + 1 for n, k, s in zip(spatial, self.kernel, self.stride))

    @property
    def num_tokens(self) -> int:
        """1 cls token + ``prod(grid)`` patches (vision 257, audio 229, depth and thermal 197, imu 251)."""
        return 1 + math.prod(self.grid)

    @property
    def item_ndims(self) -> tuple[int, ...]:
        """The numbers of dimensions one item may have: ``len(item_shape)``, and one less for a 3-D (temporal)
        conv stem, which repeats a single picture into a clip."""
        n = len(self.item_shape)
        return (n - 1, n) if self.stem == "conv" and len(self.kernel) == 3 else (n,)

    def describe_item(self) -> str:
        """One item's layout for messages: ``item_layout``, else e.g. ``(6, 2000)``."""
        return self.item_layout or str(tuple(self.item_shape))


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_VISION_ITEM = "(3, H, W) or (3, 2, H, W)"


def _specs(vision: tuple[int, int, int], audio: tuple[int, int, int], depth: tuple[int, int, int], out: int) -> dict[str, BranchSpec]:
    return {
        "vision": BranchSpec("vision", *vision, out, (3, 2, 224, 224), (2, 14, 14), (2, 14, 14), False, True, False, 0.0, None,
                             item_layout=_VISION_ITEM),
        "audio": BranchSpec("audio", *audio, out, (1, 128, 204), (16, 16), (10, 10), True, False, True, 0.1, 20.0),
        "depth": BranchSpec("depth", *depth, out, (1, 224, 224), (16, 16), (16, 16), True, False, True, 0.0, 5.0,
                            stem_name="depth_stem", item_layout="(1, H, W)"),
    }


def _toy_specs(dim: int, blocks: int, heads: int, out: int) -> dict[str, BranchSpec]:
    """The toy world's branches: ImageBind's layout on 32x32 pictures (4x4 patches, 8x8 grid) and depth maps, and
    on the official 128x204 fbank with 16x16 patches (8x12 grid); drop-path 0 (the toy trains them from scratch)."""
    return {
        "vision": BranchSpec("vision", dim, blocks, heads, out, (3, 2, 32, 32), (2, 4, 4), (2, 4, 4), False, True, False, 0.0, None,
                             item_layout=_VISION_ITEM),
        "audio": BranchSpec("audio", dim, blocks, heads, out, (1, 128, 204), (16, 16), (16, 16), True, False, True, 0.0, 20.0),
        "depth": BranchSpec("depth", dim, blocks, heads, out, (1, 32, 32), (4, 4), (4, 4), True, False, True, 0.0, 5.0,
                            stem_name="depth_stem", item_layout="(1, H, W)"),
    }


#: ``SIZES[size][branch]`` -> :class:`BranchSpec`: the open table every branch is built from. The core registers
#: ``vision``, ``audio`` and ``depth`` at ``huge`` (``imagebind_huge``), ``tiny`` (tests) and ``toy`` (the toy world,
#: :mod:`nextgpt_core.toy`); :func:`register_branch` adds a plugin's branch at the sizes it defines.
SIZES: dict[str, dict[str, BranchSpec]] = {}
_TABLE_LOCK = threading.Lock()


def register_branch(name: str, sizes: Mapping[str, BranchSpec]) -> None:
    """Add the ImageBind branch ``name`` to the open table, with its :class:`BranchSpec` per size.

    A plugin calls this when its encoder module is imported (before its encoder config is validated)::

        register_branch("thermal", {"huge": BranchSpec("thermal", 768, 12, 12, 1024, ...), "tiny": ...})

    Args:
        name: the branch name = official key prefix (``modality_trunks.<name>.*``).
        sizes: ``{size: spec}``; each spec's ``modality`` must be ``name``. Size names are free (``huge``,
            ``tiny``, ``toy`` by convention).

    Registering the same specs again is a no-op (a module imported twice); different specs for a size the name
    already has raise ``ValueError`` naming both.
    """
    if not sizes:
        raise ValueError(f"register_branch({name!r}): give at least one size")
    for size, spec in sizes.items():
        if not isinstance(spec, BranchSpec):
            raise TypeError(f"register_branch({name!r}): size {size!r} is a {type(spec).__name__}, not a BranchSpec")
        if spec.modality != name:
            raise ValueError(f"register_branch({name!r}): the {size!r} spec is for branch {spec.modality!r}")
    with _TABLE_LOCK:
        for size, spec in sizes.items():
            have = SIZES.get(size, {}).get(name)
            if have is not None and have != spec:
                raise ValueError(f"ImageBind branch {name!r} at size {size!r} is already registered with another spec: "
                                 f"{have} vs {spec}")
        for size, spec in sizes.items():
            SIZES.setdefault(size, {})[name] = spec


def registered_branches() -> list[str]:
    """Every registered branch name (at any size), in registration order."""
    with _TABLE_LOCK:
        return list(dict.fromkeys(name for table in SIZES.values() for name in table))


def branch_sizes(name: str) -> list[str]:
    """The sizes branch ``name`` is registered at."""
    with _TABLE_LOCK:
        return [size for size, table in SIZES.items() if name in table]


for _size, _table in {
    "huge": _specs(vision=(1280, 32, 16), audio=(768, 12, 12), depth=(384, 12, 8), out=1024),
    "tiny": _specs(vision=(32, 2, 2), audio=(32, 2, 2), depth=(32, 2, 2), out=32),
    "toy": _toy_specs(dim=96, blocks=3, heads=4, out=64),
}.items():
    for _name, _spec in _table.items():
        register_branch(_name, {_size: _spec})


def branch_spec(modality: str, size: str = "huge") -> BranchSpec:
    """The :class:`BranchSpec` of branch ``modality`` at ``size``; ``ValueError`` names the choices otherwise."""
    with _TABLE_LOCK:
        spec = SIZES.get(size, {}).get(modality)
    if spec is not None:
        return spec
    known = registered_branches()
    if modality not in known:
        raise ValueError(f"unknown ImageBind branch {modality!r}; registered: {', '.join(known)} "
                         "(a plugin registers its own with nextgpt_core.imagebind.register_branch)")
    raise ValueError(f"unknown ImageBind size {size!r} for branch {modality!r}; choose from {branch_sizes(modality)}")


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
    """Patch projection (+ optional ``LayerNorm``): ``(N, *item)`` -> ``(N, n_patches, D)`` (ImageBind's ``PatchEmbedGeneric``).

    ``stem = "conv"``: ``(N, C, [T,] H, W)`` through a bias-free ``Conv2d`` / ``Conv3d`` (vision: ``proj`` = repeat a
    picture to a clip, then the ``Conv3d``; key ``proj.1.weight``). ``stem = "linear"``: ``(N, C, T)`` cut along
    ``T`` into ``T // k`` windows of ``k`` samples, each window's values channel-major (``C x k``) through a bias-free
    ``Linear`` (ImageBind's IMU stem). Keys: ``proj.weight`` (or ``proj.1.weight``), ``norm_layer.{weight,bias}``
    when ``stem_norm``.
    """

    def __init__(self, spec: BranchSpec) -> None:
        super().__init__()
        channels = spec.item_shape[0]
        self.linear_window = spec.kernel[0] if spec.stem == "linear" else None
        if spec.stem == "linear":
            self.proj: nn.Module = nn.Linear(channels * spec.kernel[0], spec.dim, bias=False)
        elif len(spec.kernel) == 3:
            conv = nn.Conv3d(channels, spec.dim, kernel_size=spec.kernel, stride=spec.stride, bias=False)
            self.proj = nn.Sequential(_RepeatToClip(spec.item_shape[1]), conv)
        else:
            self.proj = nn.Conv2d(channels, spec.dim, kernel_size=spec.kernel, stride=spec.stride, bias=False)
        self.norm_layer = nn.LayerNorm(spec.dim) if spec.stem_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear_window is not None:
            k = self.linear_window
            # (N, C, T) -> (N, C, T // k, k) -> (N, T // k, C, k) -> (N, T // k, C * k)
            windows = x.unfold(-1, k, k).permute(0, 2, 1, 3)
            x = self.proj(windows.reshape(windows.shape[0], windows.shape[1], -1))
        else:
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
    """Stem, cls token, positional embedding (ImageBind's ``RGBDTPreprocessor`` / ``AudioPreprocessor`` /
    ``ThermalPreprocessor`` / ``IMUPreprocessor``).

    ``(N, *item)`` -> ``(N, 1 + n_patches, D)``. Keys: ``cls_token`` ``(1, 1, D)``, ``<stem_name>.*`` and either
    ``pos_embedding_helper.pos_embed`` (``pos_embed = "helper"``) or ``pos_embed`` before ``cls_token``
    (``"direct"``, the IMU layout; no interpolation there: the window count is fixed).
    """

    def __init__(self, spec: BranchSpec) -> None:
        super().__init__()
        self.stem_name = spec.stem_name
        self.direct = spec.pos_embed == "direct"
        if self.direct:  # registered first: the official order is pos_embed, cls_token, imu_stem.*
            self.pos_embed = nn.Parameter(torch.empty(1, spec.num_tokens, spec.dim))
        self.cls_token = nn.Parameter(torch.empty(1, 1, spec.dim))
        self.add_module(self.stem_name, PatchStem(spec))
        if not self.direct:
            self.pos_embedding_helper = PositionalEmbedding(spec.num_tokens, spec.dim)
        with torch.no_grad():  # OpenCLIP-style init, as ImageBind: N(0, 1) * D**-0.5 (the IMU's pos_embed: N(0, 0.01))
            scale = spec.dim**-0.5
            if self.direct:
                nn.init.normal_(self.pos_embed, std=0.01)
            else:
                nn.init.normal_(self.pos_embedding_helper.pos_embed).mul_(scale)
            nn.init.normal_(self.cls_token).mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.direct:
            if tokens.shape[1] != self.pos_embed.shape[1]:
                raise ValueError(f"{tokens.shape[1] - 1} patches, but this branch has positions for "
                                 f"{self.pos_embed.shape[1] - 1}: the item must have the branch's nominal length")
            return tokens + self.pos_embed
        return tokens + self.pos_embedding_helper.for_tokens(tokens.shape[1] - 1)


# ---------------------------------------------------------------------------------------------- the branch
def _head(spec: BranchSpec) -> nn.Sequential:
    # LayerNorm(eps 1e-6) -> cls token -> [Dropout] -> Linear(D, E, bias=False); keys 0.weight, 0.bias, 2.weight
    # (3.weight with the IMU head's dropout)
    dropout = [nn.Dropout(spec.head_dropout)] if spec.head_dropout is not None else []
    return nn.Sequential(layer_norm(spec.dim), SelectToken(0), *dropout, nn.Linear(spec.dim, spec.out_dim, bias=False))


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
