"""ImageBind's thermal branch, declared through the core's public API (the official key prefix is ``thermal``).

ImageBind-huge (``imagebind_model.py``: ``thermal_embed_dim=768``, ``thermal_num_blocks=12``,
``thermal_num_heads=12``, ``thermal_kernel_size=16``, ``thermal_drop_path=0.0``): a one-channel 224x224 image cut
into 16x16 patches by a bias-free ``Conv2d`` with a ``LayerNorm`` (the stem is stored as ``rgbt_stem``), 1 + 14x14
= 197 tokens, 12 blocks with the extra attention key/value, the head's ``Linear(768, 1024)``, and a fixed x10 logit
scale that NExT-GPT-style encoders skip. ``tiny`` keeps the geometry at 32-d (tests); ``toy`` is the toy world's
32x32 images in 4x4 patches.
"""

from nextgpt_core.imagebind import BranchSpec, register_branch

#: the branch name, which is also the key prefix of ``imagebind_huge.pth`` (``modality_trunks.thermal.*``)
BRANCH = "thermal"


def _spec(dim: int, blocks: int, heads: int, out: int, side: int, patch: int) -> BranchSpec:
    return BranchSpec(
        BRANCH, dim, blocks, heads, out,
        item_shape=(1, side, side), kernel=(patch, patch), stride=(patch, patch),
        stem_norm=True, pre_ln=False, add_bias_kv=True, drop_path=0.0, logit_scale=10.0,
        stem_name="rgbt_stem", item_layout="(1, H, W)",
    )


SIZES = {
    "huge": _spec(768, 12, 12, 1024, side=224, patch=16),
    "tiny": _spec(32, 2, 2, 32, side=224, patch=16),
    "toy": _spec(96, 3, 4, 64, side=32, patch=4),
}

register_branch(BRANCH, SIZES)
