"""ImageBind (vision, audio, depth branches) in plain torch, with the official parameter names.

Shared by the image, video, audio and depth plugins: each builds one branch, optionally loaded strictly from the
official ``imagebind_huge.pth`` through the process-wide :class:`ImageBindCheckpoint`.

- :class:`ImageBindEncoder` / :class:`ImageBindEncoderConfig`: the Encoder base; ``(B, [V,] *item)`` ->
  ``(B, 1, out_dim)`` L2-normalised, clip-averaged as NExT-GPT does.
- :class:`ImageBindCheckpoint`: ``open(path)`` once, ``load_branch(module, modality)``, ``branch_state``,
  ``unused()``.
- :func:`build_branch` / :class:`ImageBindBranch` / :func:`branch_spec` / :data:`SIZES`: the raw branches
  (``device="meta"`` to inspect full-size keys and shapes without memory).
"""

from .branches import BRANCH_PREFIXES, MODALITIES, SIZES, BranchSpec, ImageBindBranch, branch_spec, build_branch, embed_branch
from .checkpoint import ImageBindCheckpoint
from .encoder import ImageBindEncoder, ImageBindEncoderConfig
from .layers import Block, DropPath, LogitScale, Mlp, Normalize, SelectToken
from .trunk import Trunk

__all__ = [
    "BRANCH_PREFIXES",
    "MODALITIES",
    "SIZES",
    "Block",
    "BranchSpec",
    "DropPath",
    "ImageBindBranch",
    "ImageBindCheckpoint",
    "ImageBindEncoder",
    "ImageBindEncoderConfig",
    "LogitScale",
    "Mlp",
    "Normalize",
    "SelectToken",
    "Trunk",
    "branch_spec",
    "build_branch",
    "embed_branch",
]
