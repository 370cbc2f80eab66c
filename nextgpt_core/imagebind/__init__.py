"""ImageBind's branches in plain torch, with the official parameter names, and the open table of them.

The core registers the vision, audio and depth branches; a plugin registers its own (:func:`register_branch` with a
:class:`BranchSpec` per size: stem, width, depth, heads, head, postprocessing, official key prefix), as the thermal
and IMU plugins do. Each plugin encoder builds one branch, optionally loaded strictly from the official
``imagebind_huge.pth`` through the process-wide :class:`ImageBindCheckpoint`.

- :class:`ImageBindEncoder` / :class:`ImageBindEncoderConfig`: the Encoder base; ``(B, [V,] *item)`` ->
  ``(B, 1, out_dim)`` L2-normalised, clip-averaged as NExT-GPT does.
- :class:`ImageBindCheckpoint`: ``open(path)`` once, ``load_branch(module, modality)``, ``branch_state``,
  ``unused()``.
- :func:`build_branch` / :class:`ImageBindBranch` / :func:`branch_spec` / :data:`SIZES`: the raw branches
  (``device="meta"`` to inspect full-size keys and shapes without memory).
- :func:`register_branch` / :func:`registered_branches` / :func:`branch_sizes`: the open table.
- :func:`official_shapes` / :func:`official_totals`: the official file's key list, to check a branch against.
"""

from .branches import (
    BRANCH_PREFIXES,
    BUILTIN_BRANCHES,
    SIZES,
    BranchSpec,
    ImageBindBranch,
    branch_sizes,
    branch_spec,
    build_branch,
    embed_branch,
    register_branch,
    registered_branches,
)
from .checkpoint import ImageBindCheckpoint
from .encoder import ImageBindEncoder, ImageBindEncoderConfig
from .layers import Block, DropPath, LogitScale, Mlp, Normalize, SelectToken
from .official import official_shapes, official_totals
from .trunk import Trunk

__all__ = [
    "BRANCH_PREFIXES",
    "BUILTIN_BRANCHES",
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
    "branch_sizes",
    "branch_spec",
    "build_branch",
    "embed_branch",
    "official_shapes",
    "official_totals",
    "register_branch",
    "registered_branches",
]
