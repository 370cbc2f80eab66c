"""The thermal branch declared through the core's public API: official keys at full size (meta device), strict
loading from a shared checkpoint, the shared frozen branch, the x10 logit scale kept but bypassed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nextgpt_core.errors import CheckpointError
from nextgpt_core.imagebind import (
    ImageBindCheckpoint,
    branch_sizes,
    build_branch,
    embed_branch,
    official_shapes,
    official_totals,
    register_branch,
    registered_branches,
)
from nextgpt_thermal import branch
from nextgpt_thermal.encoders import ImageBindThermalEncoder


def test_huge_branch_has_exactly_the_official_keys_shapes_and_order() -> None:
    ours = {k: tuple(v.shape) for k, v in build_branch("thermal", "huge", device="meta").state_dict().items()}
    official = official_shapes("thermal")
    assert len(official) == 177
    assert list(ours) == list(official) and ours == official


def test_huge_parameter_totals_and_output_size() -> None:
    b = build_branch("thermal", "huge", device="meta")
    assert (sum(p.numel() for p in b.parameters()), sum(x.numel() for x in b.buffers())) == official_totals()["thermal"]
    spec = b.spec
    assert (spec.dim, spec.num_blocks, spec.num_heads, spec.out_dim, spec.num_tokens) == (768, 12, 12, 1024, 197)
    assert ImageBindThermalEncoder.output_dim_of(ImageBindThermalEncoder.make_config({})) == 1024


def test_registered_in_the_open_table() -> None:
    assert "thermal" in registered_branches() and branch_sizes("thermal") == ["huge", "tiny", "toy"]
    register_branch("thermal", branch.SIZES)  # importing twice is a no-op
    with pytest.raises(ValueError, match="already registered"):
        register_branch("thermal", {"tiny": branch.SIZES["toy"]})


def test_logit_scale_is_kept_but_bypassed() -> None:
    encoder = ImageBindThermalEncoder.from_options({"size": "tiny"})
    buffer = encoder.modality_postprocessors["thermal"][1].log_logit_scale
    assert math.isclose(buffer.item(), math.log(10.0), rel_tol=1e-6)
    x = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        out = encoder(x)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))
        torch.testing.assert_close(embed_branch(encoder, "thermal", x, logit_scale=True), 10.0 * out[:, 0], rtol=1e-5, atol=1e-5)


@pytest.fixture()
def checkpoint(tmp_path: Path):
    """A tiny ImageBind file with vision and thermal branches (the official file's layout, tiny widths)."""
    ImageBindCheckpoint.clear_cache()
    torch.manual_seed(5)
    state = {**build_branch("vision", "tiny").state_dict(), **build_branch("thermal", "tiny").state_dict()}
    path = tmp_path / "imagebind_tiny.pth"
    torch.save(state, path)
    yield path, state
    ImageBindCheckpoint.clear_cache()


def test_loads_strictly_and_shares_one_frozen_branch(checkpoint) -> None:
    path, state = checkpoint
    a = ImageBindThermalEncoder.from_options({"size": "tiny", "checkpoint": str(path)})
    b = ImageBindThermalEncoder.from_options({"size": "tiny", "checkpoint": str(path), "normalize": "min_max"})
    key = "modality_trunks.thermal.blocks.0.attn.in_proj_weight"
    torch.testing.assert_close(a.state_dict()[key], state[key], rtol=0, atol=0)
    assert a.state_dict()[key].data_ptr() == b.state_dict()[key].data_ptr()
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert ImageBindCheckpoint.open(path).unused() == ["vision"]


def test_a_file_of_another_size_is_refused_naming_the_keys(checkpoint) -> None:
    path, _ = checkpoint
    with pytest.raises(CheckpointError, match=r"thermal branch.*mis-shaped"):
        ImageBindCheckpoint.open(path).load_branch(build_branch("thermal", "huge", device="meta"), "thermal")
