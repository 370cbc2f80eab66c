"""lm_loss / l2_loss / signal_l2_losses: hand-checked values, the inference path of the projectors, gradients to
the stage's parts, a real L2 going down under SGD, padding-invariant losses."""

from __future__ import annotations

import pytest
import torch

from nextgpt_core import NextGPT
from nextgpt_core.training.collate import build_example, collate_batch
from nextgpt_core.training.losses import (
    MissingTargetError,
    l2_loss,
    lm_loss,
    signal_hidden_states,
    signal_l2_losses,
)
from nextgpt_core.training.trainable import apply_stage

from .test_collate import stage1_sample, stage2_sample, two_target_sample


def random_targets(model, sample, seed=0):
    """``{target_id: {conditioning name: (T, D)}}`` shaped like each projector's output."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in sample.targets:
        out[t.target_id] = {
            name: torch.randn(*proj.output_shape, generator=g) for name, proj in model.output_projectors[t.modality].items()
        }
    return out


@pytest.fixture()
def fresh_model(registry):
    """A model of its own: apply_stage changes requires_grad and adds row hooks."""
    return NextGPT.from_composition("tiny", registry=registry)


def test_l2_loss_by_hand():
    pred = torch.tensor([[[3.0, 4.0], [1.0, 1.0]], [[0.0, 0.0], [2.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]])
    # per-token norms: 5, 0, 1, 2 -> mean 2
    assert torch.allclose(l2_loss(pred, target), torch.tensor(2.0))
    x = torch.randn(2, 5, 7)
    assert l2_loss(x, x.clone()) == 0
    manual = torch.stack([torch.linalg.vector_norm(a - b) for a, b in zip(x.reshape(-1, 7), torch.zeros(10, 7))]).mean()
    assert torch.allclose(l2_loss(x, torch.zeros_like(x)), manual)
    with pytest.raises(ValueError, match="differ in shape"):
        l2_loss(x, x[:, :3])


def test_lm_loss_matches_hugging_face(tiny_model):
    ex = build_example(tiny_model, stage2_sample())
    with torch.no_grad():
        out = tiny_model.llm(inputs_embeds=ex.inputs_embeds, labels=ex.labels)
        assert torch.allclose(lm_loss(out.logits, ex.labels), out.loss, atol=1e-6)
        logits = torch.randn(2, 4, 5)
        labels = torch.tensor([[-100, 1, -100, 3], [-100, -100, 4, -100]])
        expected = torch.nn.functional.cross_entropy(
            torch.stack([logits[0, 0], logits[0, 2], logits[1, 1]]), torch.tensor([1, 3, 4])
        )
        assert torch.allclose(lm_loss(logits, labels), expected)


def test_signal_l2_follows_inference_path(tiny_model):
    """Each modality's loss is the L2 of decode_run's projector outputs (hidden at the span + signal embeddings)
    against the cached targets; two-input decoders compare both inputs (summed)."""
    model = tiny_model
    sample = two_target_sample()
    ex = build_example(model, sample)
    targets = random_targets(model, sample)
    with torch.no_grad():
        out = model.llm(inputs_embeds=ex.inputs_embeds, output_hidden_states=True)
        hidden = signal_hidden_states(model, out)
        losses = signal_l2_losses(model, hidden, ex, targets)
        assert set(losses) == {"fake_image", "fake_audio"}
        embed = model.llm.get_input_embeddings()
        for span, target in zip(ex.signal_spans, sample.targets):
            ids = torch.tensor(model.tokens.signals[span.modality])
            h = hidden[:, span.start : span.end]
            expected = sum(
                l2_loss(proj(h, embed(ids)[None]), targets[target.target_id][name][None])
                for name, proj in model.output_projectors[span.modality].items()
            )
            assert torch.allclose(losses[span.modality], expected)
        assert len(model.output_projectors["fake_audio"]) == 2
        # perfect targets give 0
        perfect = {
            t.target_id: {
                name: proj(hidden[:, s.start : s.end], embed(torch.tensor(model.tokens.signals[s.modality]))[None])[0]
                for name, proj in model.output_projectors[s.modality].items()
            }
            for s, t in zip(ex.signal_spans, sample.targets)
        }
        assert all(float(v) < 1e-5 for v in signal_l2_losses(model, hidden, ex, perfect).values())


def test_missing_target_names_it(tiny_model):
    sample = stage2_sample("a blue circle")
    ex = build_example(tiny_model, sample)
    tid = sample.targets[0].target_id
    with torch.no_grad():
        hidden = signal_hidden_states(tiny_model, tiny_model.llm(inputs_embeds=ex.inputs_embeds, output_hidden_states=True))
        with pytest.raises(MissingTargetError, match=tid) as info:
            signal_l2_losses(tiny_model, hidden, ex, {})
        assert "a blue circle" in str(info.value)
        with pytest.raises(MissingTargetError, match="prompt_embeds"):
            signal_l2_losses(tiny_model, hidden, ex, {tid: {"other": torch.zeros(4, 16)}})
        with pytest.raises(ValueError, match="projector gives"):
            signal_l2_losses(tiny_model, hidden, ex, {tid: {"prompt_embeds": torch.zeros(3, 16)}})


def grads(module):
    return [p.grad for p in module.parameters()]


def test_stage1_gradient_reaches_input_projector(fresh_model, fake_files):
    model = fresh_model
    trainable = apply_stage(model, 1)
    ex = build_example(model, stage1_sample(fake_files["image"]))
    loss = lm_loss(model.llm(inputs_embeds=ex.inputs_embeds).logits, ex.labels)
    loss.backward()
    gs = grads(model.input_projectors["fake_image"])
    assert gs and all(g is not None and g.abs().sum() > 0 for g in gs)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in {m for m, _ in trainable.named_parameters()})


def test_stage2_gradient_reaches_output_projector_and_l2_goes_down(fresh_model):
    model = fresh_model
    trainable = apply_stage(model, 2)
    sample = stage2_sample()
    targets = random_targets(model, sample, seed=1)
    params = [p for _, p in trainable.named_parameters()]
    opt = torch.optim.SGD(params, lr=0.05)
    history = []
    for step in range(8):
        opt.zero_grad(set_to_none=True)
        ex = build_example(model, sample)
        out = model.llm(inputs_embeds=ex.inputs_embeds, output_hidden_states=True)
        l2 = signal_l2_losses(model, signal_hidden_states(model, out), ex, targets)["fake_image"]
        loss = lm_loss(out.logits, ex.labels) + l2
        loss.backward()
        if step == 0:
            gs = grads(model.output_projectors["fake_image"])
            assert any(g is not None and g.abs().sum() > 0 for g in gs)
            assert all(p.grad is None for p in model.input_projectors.parameters())
        opt.step()
        history.append(float(l2.detach()))
    assert history[-1] < 0.8 * history[0], history


def test_padded_batch_losses_equal_unpadded(tiny_model, fake_files):
    model = tiny_model
    samples = [stage1_sample(fake_files["image"]), stage2_sample(), two_target_sample()]
    examples = [build_example(model, s) for s in samples]
    targets = {k: v for s in samples for k, v in random_targets(model, s, seed=2).items()}
    batch = collate_batch(examples)
    with torch.no_grad():
        out = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, output_hidden_states=True)
        hidden = signal_hidden_states(model, out)
        pooled = signal_l2_losses(model, hidden, batch, targets)
        assert set(pooled) == {"fake_image", "fake_audio"}
        per_row_image = []
        for i, ex in enumerate(examples):
            alone = model.llm(inputs_embeds=ex.inputs_embeds, output_hidden_states=True)
            assert torch.allclose(lm_loss(out.logits[i : i + 1], batch.labels[i : i + 1]), lm_loss(alone.logits, ex.labels), atol=1e-5)
            single = signal_l2_losses(model, signal_hidden_states(model, alone), ex, targets)
            for key, value in single.items():
                # this row's spans read from the padded batch give the same loss
                row_ex = type(ex)(ex.inputs_embeds, ex.input_ids, ex.labels, ex.signal_spans)
                padded = signal_l2_losses(model, hidden[i : i + 1], row_ex, targets)[key]
                assert torch.allclose(padded, value, atol=1e-5)
            if "fake_image" in single:
                per_row_image.append(single["fake_image"])
        # one image span per row: the pooled loss is the mean over rows
        assert torch.allclose(pooled["fake_image"], torch.stack(per_row_image).mean(), atol=1e-5)
