"""The optional denoising loss (stages 2 and 3): the frozen SD decoder's own diffusion loss on the target image,
conditioned on the projected signal states. Real image plugin (tiny SD-1.5 of the real diffusers classes)."""

from __future__ import annotations

import json

import pytest
import torch
from nextgpt_registry import Registry
from PIL import Image

from nextgpt_core import NextGPT
from nextgpt_core.errors import ConfigError
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.training.data import MediaLoader, read_dataset
from nextgpt_core.training.synthetic import make_synthetic_dataset
from nextgpt_core.training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=["image", "audio"])


def test_decoder_loss_is_per_target_seeded_and_reaches_only_the_conditioning(real_registry):
    decoder = NextGPT.from_composition("tiny", registry=real_registry).decoders["image"]
    cond = decoder.encode_text(["a red square", "a blue circle"])["prompt_embeds"].clone().requires_grad_(True)
    images = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (40, 50), (0, 0, 255))]
    first = decoder.denoising_loss({"prompt_embeds": cond}, images, generator=torch.Generator().manual_seed(0))
    again = decoder.denoising_loss({"prompt_embeds": cond}, images, generator=torch.Generator().manual_seed(0))
    other = decoder.denoising_loss({"prompt_embeds": cond}, images, generator=torch.Generator().manual_seed(1))
    assert first.shape == (2,) and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)
    first.sum().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert all(p.grad is None for p in decoder.pipe.unet.parameters())
    assert all(p.grad is None for p in decoder.pipe.vae.parameters())
    with pytest.raises(ValueError, match="2 conditionings for 1 target"):
        decoder.denoising_loss({"prompt_embeds": cond}, images[:1])


def _stage2(real_registry, tmp_path, *, denoise_weight, l2_weight, modalities=("image",)):
    synth = make_synthetic_dataset(tmp_path / "data", 4, modalities=modalities, registry=real_registry)
    samples = []
    for key in modalities:
        samples += read_dataset(synth.xcaption[key], task="generate", media_root=synth.media,
                                registry=real_registry).samples
    model = NextGPT.from_composition("tiny", registry=real_registry)
    targets = {}
    for s in samples:
        for t in s.targets:
            targets[t.target_id] = {k: v[0] for k, v in model.decoders[t.modality].encode_text([t.caption]).items()}
    config = TrainConfig(stage=2, steps=2, batch_size=2, lr=1e-2, warmup_steps=1, seed=3, progress=False,
                         save_final=False, output_dir=tmp_path / "run", denoise_weight=denoise_weight,
                         l2_weight=l2_weight)
    return model, Trainer(model, samples, targets, config, MediaLoader(real_registry))


def _projector(model):
    return {k: v.detach().clone() for k, v in model.output_projectors["image"]["prompt_embeds"].state_dict().items()}


def test_trainer_adds_the_denoising_loss_and_it_trains_the_projector(real_registry, tmp_path):
    # with the L2 off, only the denoising loss reaches the output projector: it must move
    model, trainer = _stage2(real_registry, tmp_path, denoise_weight=1.0, l2_weight=0.0)
    before = _projector(model)
    result = trainer.train()
    after = _projector(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(r["denoise"]) for r in rows] == [["image"], ["image"]]
    for row, loss in zip(rows, result.losses):
        assert row["loss"] == pytest.approx(row["lm"] + row["denoise"]["image"], rel=1e-5) and row["loss"] == loss
    # and without it (both weights 0) the projector's gradient is exactly zero: only AdamW's weight decay moves it
    # (every trained parameter gets a gradient each step, zero when no loss reaches it: the same graph on every
    # process of a distributed run, docs/training.md)
    model0, trainer0 = _stage2(real_registry, tmp_path / "off", denoise_weight=0.0, l2_weight=0.0)
    before0 = _projector(model0)
    trainer0.train()
    after0 = _projector(model0)
    rows0 = [json.loads(line) for line in (tmp_path / "off" / "run" / "metrics.jsonl").read_text().splitlines()]
    decayed = dict(before0)
    for row in rows0:
        decayed = {k: v * (1 - row["lr"] * trainer0.config.weight_decay) for k, v in decayed.items()}
    assert all(torch.allclose(decayed[k], after0[k], rtol=1e-6, atol=0) for k in before0)
    assert any(not torch.equal(before0[k], after0[k]) for k in before0)  # the decay is there (it is not skipped)


def test_a_decoder_without_a_denoising_loss_is_one_clear_error(real_registry, tmp_path):
    with pytest.raises(ConfigError, match="'audio' decoder .* has no denoising loss"):
        _stage2(real_registry, tmp_path, denoise_weight=1.0, l2_weight=1.0, modalities=("image", "audio"))
