"""The open ImageBind table: a branch declared through the public API (here a made-up ``sonar`` branch, a 1-D
``linear`` stem like the IMU's and a 2-D one) gets what the built-in branches get: meta-device builds, strict loading
of its keys from a shared checkpoint, one shared frozen branch, clip averaging; bad declarations are one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch

from nextgpt_core.errors import CheckpointError, ConfigError
from nextgpt_core.imagebind import (
    BUILTIN_BRANCHES,
    BranchSpec,
    ImageBindCheckpoint,
    ImageBindEncoder,
    ImageBindEncoderConfig,
    branch_spec,
    build_branch,
    register_branch,
    registered_branches,
)
from nextgpt_core.interfaces import ComponentConfig
from nextgpt_core.testing import EncoderTesterMixin

SONAR = {
    "big": BranchSpec("sonar", 64, 3, 4, 128, (2, 64, 64), (8, 8), (8, 8), True, False, True, 0.0, 3.0,
                      stem_name="sonar_stem", item_layout="(2, 64, 64)"),
    "small": BranchSpec("sonar", 16, 1, 2, 16, (2, 64, 64), (8, 8), (8, 8), True, False, True, 0.0, 3.0,
                        stem_name="sonar_stem", item_layout="(2, 64, 64)"),
}
PING = {"small": BranchSpec("ping", 16, 1, 2, 16, (3, 96), (4,), (4,), True, False, True, 0.0, None, stem="linear",
                            stem_name="ping_stem", pos_embed="direct", head_dropout=0.1)}
register_branch("sonar", SONAR)
register_branch("ping", PING)


class SonarConfig(ImageBindEncoderConfig):
    modality: Literal["sonar"] = "sonar"
    size: str = "small"


class SonarEncoder(ImageBindEncoder):
    """A plugin's encoder over its own branch: ``preprocess`` any array -> ``(2, 64, 64)`` (or clips of it)."""

    config_class: ClassVar[type[ComponentConfig]] = SonarConfig

    def preprocess(self, media: Any) -> torch.Tensor:
        shape = ((3,) if self.config.clips else ()) + (2, 64, 64)
        return torch.from_numpy(np.resize(np.asarray(media, dtype=np.float32), shape).copy())


class TestSonarEncoder(EncoderTesterMixin):
    component_class = SonarEncoder

    def get_dummy_media(self) -> list[Any]:
        rng = np.random.default_rng(0)
        return [rng.standard_normal(500), rng.standard_normal((9, 9))]


class TestSonarEncoderClips(TestSonarEncoder):
    def get_init_dict(self) -> dict[str, Any]:
        return {"clips": True}


def test_the_core_registers_only_the_shared_branches_and_plugins_add_theirs() -> None:
    assert BUILTIN_BRANCHES == ("vision", "audio", "depth")
    assert {"vision", "audio", "depth", "sonar", "ping"} <= set(registered_branches())
    assert branch_spec("sonar", "big").out_dim == 128


def test_meta_build_has_the_declared_keys_and_shapes() -> None:
    branch = build_branch("sonar", "big", device="meta")
    state = branch.state_dict()
    assert all(t.is_meta for t in state.values())
    assert tuple(state["modality_preprocessors.sonar.sonar_stem.proj.weight"].shape) == (64, 2, 8, 8)
    assert tuple(state["modality_preprocessors.sonar.pos_embedding_helper.pos_embed"].shape) == (1, 65, 64)
    assert tuple(state["modality_heads.sonar.2.weight"].shape) == (128, 64)
    assert tuple(state["modality_postprocessors.sonar.1.log_logit_scale"].shape) == ()
    ping = list(build_branch("ping", "small", device="meta").state_dict())
    assert ping[:3] == ["modality_preprocessors.ping.pos_embed", "modality_preprocessors.ping.cls_token",
                        "modality_preprocessors.ping.ping_stem.proj.weight"]
    assert "modality_heads.ping.3.weight" in ping and not any(k.startswith("modality_postprocessors.ping") for k in ping)


def test_a_linear_stem_branch_encodes_windows() -> None:
    class Ping(ImageBindEncoder):
        def preprocess(self, media: Any) -> torch.Tensor:  # pragma: no cover - not used
            raise NotImplementedError

    encoder = Ping.from_options({"modality": "ping", "size": "small"})
    out = encoder(torch.randn(2, 3, 96))
    assert out.shape == (2, 1, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))


@pytest.fixture()
def sonar_file(tmp_path: Path):
    ImageBindCheckpoint.clear_cache()
    torch.manual_seed(3)
    state = {**build_branch("vision", "tiny").state_dict(), **build_branch("sonar", "small").state_dict()}
    path = tmp_path / "bound.pth"
    torch.save(state, path)
    yield path, state
    ImageBindCheckpoint.clear_cache()


def test_strict_shared_loading(sonar_file) -> None:
    path, state = sonar_file
    a = SonarEncoder.from_options({"checkpoint": str(path)})
    b = SonarEncoder.from_options({"checkpoint": str(path), "clips": True})
    key = "modality_trunks.sonar.blocks.0.attn.in_proj_weight"
    torch.testing.assert_close(a.state_dict()[key], state[key], rtol=0, atol=0)
    assert a.state_dict()[key].data_ptr() == b.state_dict()[key].data_ptr()  # one frozen branch
    x = torch.randn(1, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x[:, None]), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="sonar branch.*mis-shaped"):
        SonarEncoder.from_options({"checkpoint": str(path), "size": "big"})


def test_bad_declarations_and_choices_are_one_line() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        BranchSpec("bad", 30, 1, 4, 8, (1, 16, 16), (4, 4), (4, 4), True, False, True, 0.0, None)
    with pytest.raises(ValueError, match="one entry per axis"):
        BranchSpec("bad", 8, 1, 2, 8, (1, 16, 16), (4,), (4,), True, False, True, 0.0, None)
    with pytest.raises(ValueError, match="lower-case identifier"):
        BranchSpec("Bad.Name", 8, 1, 2, 8, (1, 16, 16), (4, 4), (4, 4), True, False, True, 0.0, None)
    with pytest.raises(ValueError, match="already registered"):
        register_branch("sonar", {"small": SONAR["big"]})
    with pytest.raises(ValueError, match="spec is for branch 'sonar'"):
        register_branch("other", {"small": SONAR["small"]})
    register_branch("sonar", SONAR)  # the same again: a no-op
    with pytest.raises(ConfigError, match="unknown ImageBind branch 'lidar'; registered: vision, audio, depth") as info:
        ImageBindEncoder.make_config({"modality": "lidar"})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown ImageBind size 'huge' for branch 'sonar'; choose from \['big', 'small'\]"):
        SonarEncoder.from_options({"size": "huge"})
