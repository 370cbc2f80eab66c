"""The IMU branch declared through the core's public API: official keys at full size (meta device), its linear
window stem and direct positional embedding, strict shared loading, the x5 logit scale kept but bypassed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nextgpt_core.imagebind import ImageBindCheckpoint, build_branch, embed_branch, official_shapes, official_totals
from nextgpt_imu.encoders import ImageBindIMUEncoder


def test_huge_branch_has_exactly_the_official_keys_shapes_and_order() -> None:
    ours = {k: tuple(v.shape) for k, v in build_branch("imu", "huge", device="meta").state_dict().items()}
    official = official_shapes("imu")
    assert len(official) == 93
    assert list(ours) == list(official) and ours == official


def test_huge_geometry_and_totals() -> None:
    b = build_branch("imu", "huge", device="meta")
    assert (sum(p.numel() for p in b.parameters()), sum(x.numel() for x in b.buffers())) == official_totals()["imu"]
    spec = b.spec
    assert (spec.dim, spec.num_blocks, spec.num_heads, spec.out_dim) == (512, 6, 8, 1024)
    assert spec.item_shape == (6, 2000) and spec.grid == (250,) and spec.num_tokens == 251
    rates = [getattr(block.drop_path, "p", 0.0) for block in b.modality_trunks["imu"].blocks]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.7)
    assert isinstance(b.modality_heads["imu"][2], torch.nn.Dropout) and b.modality_heads["imu"][2].p == 0.5


def test_stem_windows_are_eight_samples_channel_major() -> None:
    """Window ``j`` of the stem sees samples ``8j .. 8j+7`` of every channel, channel by channel (ImageBind's
    ``unfold(-1, 8, 8).permute(0, 2, 1, 3)``): changing one sample changes exactly one token."""
    torch.manual_seed(0)
    stem = build_branch("imu", "tiny").modality_preprocessors["imu"].imu_stem
    x = torch.randn(1, 6, 2000)
    with torch.no_grad():
        base = stem(x)
        y = x.clone()
        y[0, 4, 8 * 17 + 3] += 1.0
        changed = (stem(y) - base).abs().sum(-1)[0]
    assert base.shape == (1, 250, 32)
    assert changed.nonzero().flatten().tolist() == [17]
    window = x[0, :, 8 * 17 : 8 * 18].reshape(-1)  # (6, 8) -> 48, channel-major
    with torch.no_grad():
        torch.testing.assert_close(stem.norm_layer(stem.proj(window)), base[0, 17])


def test_logit_scale_kept_but_bypassed_and_eval_is_deterministic() -> None:
    encoder = ImageBindIMUEncoder.from_options({"size": "tiny"})
    buffer = encoder.modality_postprocessors["imu"][1].log_logit_scale
    assert math.isclose(buffer.item(), math.log(5.0), rel_tol=1e-6)
    x = torch.randn(2, 6, 2000)
    with torch.no_grad():
        out = encoder(x)
        torch.testing.assert_close(out, encoder(x), rtol=0, atol=0)  # no drop-path, no head dropout at eval
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))
        torch.testing.assert_close(embed_branch(encoder, "imu", x, logit_scale=True), 5.0 * out[:, 0], rtol=1e-5, atol=1e-5)


def test_wrong_length_is_one_clear_error() -> None:
    encoder = ImageBindIMUEncoder.from_options({"size": "tiny"})
    with pytest.raises(ValueError, match="nominal length"):
        encoder(torch.randn(1, 6, 1000))
    with pytest.raises(ValueError, match=r"\(6, 2000\)"):
        encoder(torch.randn(1, 3, 2000))


def test_loads_strictly_and_shares_one_frozen_branch(tmp_path: Path) -> None:
    ImageBindCheckpoint.clear_cache()
    torch.manual_seed(2)
    state = build_branch("imu", "tiny").state_dict()
    torch.save(state, tmp_path / "ib.pth")
    try:
        a = ImageBindIMUEncoder.from_options({"size": "tiny", "checkpoint": str(tmp_path / "ib.pth")})
        b = ImageBindIMUEncoder.from_options({"size": "tiny", "checkpoint": str(tmp_path / "ib.pth"), "num_clips": 3})
        key = "modality_preprocessors.imu.pos_embed"
        torch.testing.assert_close(a.state_dict()[key], state[key], rtol=0, atol=0)
        assert a.state_dict()[key].data_ptr() == b.state_dict()[key].data_ptr()
    finally:
        ImageBindCheckpoint.clear_cache()
