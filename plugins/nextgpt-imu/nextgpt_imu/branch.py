"""ImageBind's IMU branch, declared through the core's public API (the official key prefix is ``imu``).

ImageBind-huge (``imagebind_model.py``: ``imu_embed_dim=512``, ``imu_num_blocks=6``, ``imu_num_heads=8``,
``imu_kernel_size=8``, ``imu_drop_path=0.7``; ``IMUPreprocessor(img_size=[6, 2000])``): six channels x 2000
samples cut into 250 windows of 8 samples, each window's 48 values through a bias-free ``Linear(48, 512)`` and a
``LayerNorm`` (``imu_stem``), a ``pos_embed`` of 1 + 250 positions held by the preprocessor itself, 6 blocks with
the extra attention key/value, a head with a ``Dropout(0.5)`` before its ``Linear(512, 1024)`` (key ``3.weight``)
and a fixed x5 logit scale that NExT-GPT-style encoders skip. ``tiny`` keeps the geometry at 32-d (tests); ``toy``
is the toy world's 5 s at 40 Hz (200 samples, 25 windows).
"""

from nextgpt_core.imagebind import BranchSpec, register_branch

#: the branch name, which is also the key prefix of ``imagebind_huge.pth`` (``modality_trunks.imu.*``)
BRANCH = "imu"


def _spec(dim: int, blocks: int, heads: int, out: int, samples: int, drop_path: float, head_dropout: float) -> BranchSpec:
    return BranchSpec(
        BRANCH, dim, blocks, heads, out,
        item_shape=(6, samples), kernel=(8,), stride=(8,),
        stem_norm=True, pre_ln=False, add_bias_kv=True, drop_path=drop_path, logit_scale=5.0,
        stem="linear", stem_name="imu_stem", pos_embed="direct", head_dropout=head_dropout,
        item_layout=f"(6, {samples})",
    )


SIZES = {
    "huge": _spec(512, 6, 8, 1024, samples=2000, drop_path=0.7, head_dropout=0.5),
    "tiny": _spec(32, 2, 2, 32, samples=2000, drop_path=0.7, head_dropout=0.5),
    # trained from scratch on CPU: no stochastic depth, and a zero-rate dropout that keeps the official key layout
    "toy": _spec(96, 3, 4, 64, samples=200, drop_path=0.0, head_dropout=0.0),
}

register_branch(BRANCH, SIZES)
