"""ImageBind in the core: official keys and shapes at full size (meta device), the tiny forward contract, the
NExT-GPT postprocessing and clip order, and the shared checkpoint loader."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch

import nextgpt_core.imagebind as ib
from nextgpt_core.errors import CheckpointError, WeightsNotFoundError
from nextgpt_core.imagebind import (
    ImageBindCheckpoint,
    ImageBindEncoder,
    ImageBindEncoderConfig,
    build_branch,
)
from nextgpt_core.interfaces import ComponentConfig
from nextgpt_core.testing import EncoderTesterMixin

TSV = Path(ib.__file__).parent / "imagebind_huge.tsv"  # copy of the reference key list (reference/keys/)
BRANCHES = ("vision", "audio", "depth")
ITEMS = {  # one item per branch at the real geometry
    "image": ("vision", (3, 224, 224)),
    "video_clip": ("vision", (3, 2, 224, 224)),
    "audio": ("audio", (1, 128, 204)),
    "depth": ("depth", (1, 224, 224)),
}


# ---------------------------------------------------------------------------------------------- tiny subclasses
class _Tiny(ImageBindEncoder):
    """Test encoder: ``preprocess`` resizes any numeric array to the item shape (deterministic)."""

    item_shape: ClassVar[tuple[int, ...]] = (1, 128, 204)

    def preprocess(self, media: Any) -> torch.Tensor:
        shape = ((4,) if self.config.clips else ()) + self.item_shape
        return torch.from_numpy(np.resize(np.asarray(media, dtype=np.float32), shape).copy())


class TinyAudioConfig(ImageBindEncoderConfig):
    modality: Literal["audio"] = "audio"
    size: Literal["huge", "tiny"] = "tiny"


class TinyAudioEncoder(_Tiny):
    config_class: ClassVar[type[ComponentConfig]] = TinyAudioConfig


class TinyVideoConfig(ImageBindEncoderConfig):
    modality: Literal["vision"] = "vision"
    size: Literal["huge", "tiny"] = "tiny"
    clips: bool = True


class TinyVideoEncoder(_Tiny):
    config_class: ClassVar[type[ComponentConfig]] = TinyVideoConfig
    item_shape = (3, 2, 224, 224)


def tiny(modality: str, seed: int = 0, **options: Any) -> _Tiny:
    torch.manual_seed(seed)
    return _Tiny(ImageBindEncoderConfig(modality=modality, size="tiny", **options)).eval()


# ---------------------------------------------------------------------------------------------- full size vs the TSV
def _tsv() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, int]]]:
    shapes: dict[str, tuple[int, ...]] = {}
    totals: dict[str, tuple[int, int]] = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("# per-modality totals"):
            for m, params, buf in re.findall(r"(\w+) ([\d,]+)(?: \[\+([\d,]+)\])? \(\d+ keys\)", line):
                totals[m] = (int(params.replace(",", "")), int((buf or "0").replace(",", "")))
        elif line and not line.startswith("#"):
            name, shape, _ = line.split("\t")
            shapes[name] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return shapes, totals


@pytest.mark.parametrize("modality", BRANCHES)
def test_huge_branch_has_exactly_the_official_keys_and_shapes(modality: str) -> None:
    shapes, _ = _tsv()
    official = {k: v for k, v in shapes.items() if k.split(".")[1] == modality}
    branch = build_branch(modality, "huge", device="meta")
    ours = {k: tuple(v.shape) for k, v in branch.state_dict().items()}
    assert sorted(set(official) - set(ours)) == [], "missing"
    assert sorted(set(ours) - set(official)) == [], "extra"
    assert {k: (ours[k], official[k]) for k in ours if ours[k] != official[k]} == {}
    assert list(ours) == list(official)  # even the order (module registration order of the official code)


@pytest.mark.parametrize("modality", BRANCHES)
def test_huge_branch_parameter_totals_match_the_tsv(modality: str) -> None:
    _, totals = _tsv()
    branch = build_branch(modality, "huge", device="meta")
    params = sum(p.numel() for p in branch.parameters())
    buffers = sum(b.numel() for b in branch.buffers())
    assert (params, buffers) == totals[modality]
    encoder_cfg = ImageBindEncoderConfig(modality=modality)
    assert ImageBindEncoder.output_dim_of(encoder_cfg) == 1024


def test_huge_logit_scale_buffers_are_persistent() -> None:
    for modality in ("audio", "depth"):
        branch = build_branch(modality, "huge", device="meta")
        key = f"modality_postprocessors.{modality}.1.log_logit_scale"
        assert key in branch.state_dict() and key not in dict(branch.named_parameters())


# ---------------------------------------------------------------------------------------------- tiny forward
@pytest.mark.parametrize("item", sorted(ITEMS))
def test_tiny_forward_shape_and_unit_norm(item: str) -> None:
    modality, shape = ITEMS[item]
    encoder = tiny(modality)
    with torch.no_grad():
        out = encoder(torch.randn(2, *shape))
    assert out.shape == (2, 1, 32) == (2, 1, encoder.output_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))


def test_image_is_a_repeated_two_frame_clip() -> None:
    encoder = tiny("vision")
    image = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(image), encoder(image.unsqueeze(2).repeat(1, 1, 2, 1, 1)))
        assert not torch.allclose(encoder(image), encoder(torch.stack([image, torch.zeros_like(image)], dim=2)))


@pytest.mark.parametrize("modality", BRANCHES)
def test_tiny_init_is_deterministic_under_manual_seed(modality: str) -> None:
    a, b, c = tiny(modality, seed=3), tiny(modality, seed=3), tiny(modality, seed=4)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0)
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_clips_are_normalised_then_averaged_without_renormalising(modality: str) -> None:
    shape = ITEMS["video_clip" if modality == "vision" else "audio"][1]
    clips = tiny(modality, clips=True)
    single = _Tiny(ImageBindEncoderConfig(modality=modality, size="tiny")).eval()
    single.load_state_dict(clips.state_dict())
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        out = clips(x)
        per_view = torch.stack([single(x[:, v]) for v in range(3)], dim=1)  # (B, V, 1, E), each unit norm
    assert out.shape == (2, 1, 32)
    torch.testing.assert_close(out, per_view.mean(dim=1), rtol=1e-5, atol=1e-6)
    assert (out.norm(dim=-1) < 1 - 1e-4).all(), "the official code does not renormalise after averaging"


@pytest.mark.parametrize(("modality", "scale"), [("audio", 20.0), ("depth", 5.0)])
def test_logit_scale_is_kept_but_bypassed(modality: str, scale: float) -> None:
    encoder = tiny(modality)
    buffer = encoder.modality_postprocessors[modality][1].log_logit_scale
    assert buffer.shape == () and math.isclose(buffer.item(), math.log(scale), rel_tol=1e-6)
    x = torch.randn(2, *ITEMS[modality][1])
    with torch.no_grad():
        out = encoder(x)
        raw = ib.embed_branch(encoder, modality, x, logit_scale=True)  # upstream ImageBind's output
        torch.testing.assert_close(raw, scale * out[:, 0], rtol=1e-5, atol=1e-5)
        buffer.fill_(math.log(2.0))
        torch.testing.assert_close(encoder(x), out, rtol=0, atol=0)


def test_drop_path_is_progressive_and_identity_at_eval() -> None:
    trunk = build_branch("audio", "huge", device="meta").modality_trunks["audio"]
    rates = [getattr(b.drop_path, "p", 0.0) for b in trunk.blocks]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.1) and rates == sorted(rates)
    encoder = tiny("audio")
    x = torch.randn(2, *ITEMS["audio"][1])
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), encoder(x), rtol=0, atol=0)


def test_forward_rejects_wrong_item_layout() -> None:
    with pytest.raises(ValueError, match=r"\(1, 128, 204\)"):
        tiny("audio")(torch.randn(2, 3, 1, 128, 204))  # clips given, but clips=False
    with pytest.raises(ValueError, match="vision"):
        tiny("vision")(torch.randn(2, 1, 224, 224))  # one channel
    with pytest.raises(ValueError, match="frames"):
        tiny("vision")(torch.randn(1, 3, 3, 224, 224))


# ---------------------------------------------------------------------------------------------- checkpoint loader
@pytest.fixture()
def fake_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny ImageBind file with the vision, text, audio, depth and imu branches (text and imu fake)."""
    ImageBindCheckpoint.clear_cache()
    state: dict[str, torch.Tensor] = {}
    torch.manual_seed(11)
    for modality in ("vision", "audio", "depth"):
        state.update(build_branch(modality, "tiny").state_dict())
        if modality == "vision":
            state["modality_trunks.text.blocks.0.attn.in_proj_weight"] = torch.randn(6, 2)
    state["modality_heads.imu.0.weight"] = torch.randn(4)
    path = tmp_path / "imagebind_tiny.pth"
    torch.save(state, path)
    yield path, state
    ImageBindCheckpoint.clear_cache()


def test_checkpoint_hands_out_branches_and_reports_unused(fake_checkpoint: tuple[Path, dict]) -> None:
    path, state = fake_checkpoint
    ckpt = ImageBindCheckpoint.open(path)
    assert ImageBindCheckpoint.open(str(path)) is ckpt  # read once per process
    assert ckpt.modalities == ["vision", "text", "audio", "depth", "imu"]
    assert ckpt.unused() == ckpt.modalities
    audio = ckpt.branch_state("audio")
    assert set(audio) == {k for k in state if k.split(".")[1] == "audio"}
    assert ckpt.unused() == ["vision", "text", "depth", "imu"]
    encoder = _Tiny(ImageBindEncoderConfig(modality="depth", size="tiny", checkpoint=str(path)))
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert ckpt.unused() == ["vision", "text", "imu"]


def test_encoder_loaded_from_checkpoint_computes_like_the_source_branch(fake_checkpoint: tuple[Path, dict]) -> None:
    path, state = fake_checkpoint
    source = build_branch("vision", "tiny").eval()
    source.load_state_dict({k: v for k, v in state.items() if k.split(".")[1] == "vision"})
    encoder = _Tiny(ImageBindEncoderConfig(modality="vision", size="tiny", checkpoint=str(path))).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x)[:, 0], source(x), rtol=0, atol=0)


def test_missing_checkpoint_is_weights_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "imagebind_huge.pth"
    with pytest.raises(WeightsNotFoundError, match=re.escape(str(path))) as info:
        _Tiny(ImageBindEncoderConfig(modality="audio", size="tiny", checkpoint=str(path)))
    assert "\n" not in str(info.value)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth: not a readable PyTorch checkpoint"):
        ImageBindCheckpoint.open(garbage)
    foreign = tmp_path / "foreign.pth"
    torch.save({"llama_proj.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match=r"not an ImageBind checkpoint.*llama_proj\.weight"):
        ImageBindCheckpoint.open(foreign)


def test_mismatched_branch_lists_missing_unexpected_and_misshaped(fake_checkpoint: tuple[Path, dict], tmp_path: Path) -> None:
    _, state = fake_checkpoint
    bad = {k: v for k, v in state.items() if k != "modality_heads.audio.2.weight"}
    bad["modality_heads.audio.9.weight"] = torch.zeros(1)
    bad["modality_preprocessors.audio.cls_token"] = torch.zeros(1, 1, 7)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as info:
        _Tiny(ImageBindEncoderConfig(modality="audio", size="tiny", checkpoint=str(path)))
    message = str(info.value)
    assert "audio branch" in message and "bad.pth" in message
    assert "missing ['modality_heads.audio.2.weight']" in message
    assert "unexpected ['modality_heads.audio.9.weight']" in message
    assert "modality_preprocessors.audio.cls_token: file (1, 1, 7) vs model (1, 1, 32)" in message
    with pytest.raises(CheckpointError, match="no 'thermal' branch"):
        ImageBindCheckpoint.open(path).branch_state("thermal")
    # a tiny file does not fit a huge branch
    with pytest.raises(CheckpointError, match="mis-shaped"):
        ImageBindCheckpoint.open(fake_checkpoint[0]).load_branch(build_branch("depth", "huge", device="meta"), "depth")


# ---------------------------------------------------------------------------------------------- conformance
class TestTinyImageBindAudioEncoder(EncoderTesterMixin):
    component_class = TinyAudioEncoder

    def get_dummy_media(self) -> list[Any]:
        rng = np.random.default_rng(0)
        return [rng.standard_normal(300), rng.standard_normal((5, 7))]


class TestTinyImageBindVideoEncoder(EncoderTesterMixin):
    component_class = TinyVideoEncoder

    def get_dummy_media(self) -> list[Any]:
        rng = np.random.default_rng(1)
        return [rng.standard_normal(1000), rng.standard_normal(999)]


def test_encoders_from_one_checkpoint_share_a_frozen_branch(fake_checkpoint: tuple[Path, dict]) -> None:
    """An image and a video encoder on the same file hold ONE vision branch (as the official single model does)."""
    path, state = fake_checkpoint

    class Images(ImageBindEncoder):
        def preprocess(self, media):  # pragma: no cover - not used here
            raise NotImplementedError

    image = Images.from_options({"modality": "vision", "size": "tiny", "checkpoint": str(path)})
    video = Images.from_options({"modality": "vision", "size": "tiny", "checkpoint": str(path), "clips": True})
    audio = Images.from_options({"modality": "audio", "size": "tiny", "checkpoint": str(path)})
    key = "modality_trunks.vision.blocks.0.attn.in_proj_weight"
    assert image.state_dict()[key].data_ptr() == video.state_dict()[key].data_ptr()
    torch.testing.assert_close(image.state_dict()[key], state[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in image.parameters()) and not image.training
    assert "modality_trunks.audio.blocks.0.attn.in_proj_weight" in audio.state_dict()
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(image(x), video(x[:, None]), rtol=0, atol=0)  # one view: same embedding
