"""Trainer: the loss goes down, only the stage's set changes, kill-and-resume equals an uninterrupted run, a crash
while checkpointing leaves the previous checkpoint, one metrics row per step, checkpoints load into a new model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nextgpt_core import NextGPT
from nextgpt_core.conversation import Conversation, Text, Turn
from nextgpt_core.training import trainer as trainer_module
from nextgpt_core.training.data import Target, TrainingSample
from nextgpt_core.training.trainer import STATE_DIR, TrainConfig, Trainer, find_latest_checkpoint

CAPTIONS = ["a red square", "a blue circle", "a green triangle", "a small dot", "a big star", "two lines"]


def samples() -> list[TrainingSample]:
    """Stage-2 samples as in test_collate: caption -> caption + a signal run (image or audio)."""
    out = []
    for i, caption in enumerate(CAPTIONS):
        modality = "fake_image" if i % 2 == 0 else "fake_audio"
        conv = Conversation([Turn("user", [Text(caption)]), Turn("assistant", [Text(caption)])])
        out.append(TrainingSample(conv, [Target(modality, caption, None, 1, 1)], ("mem", i), f"s{i}"))
    return out


def random_targets(model, items, seed=0):
    """``{target_id: {conditioning name: (T, D)}}`` shaped like each projector's output."""
    g = torch.Generator().manual_seed(seed)
    return {
        t.target_id: {
            name: torch.randn(*proj.output_shape, generator=g) for name, proj in model.output_projectors[t.modality].items()
        }
        for s in items
        for t in s.targets
    }


def new_model(registry):
    return NextGPT.from_composition("tiny", registry=registry)


def config(tmp, **kw):
    base = dict(stage=2, steps=6, batch_size=2, lr=1e-2, warmup_steps=1, seed=7, checkpoint_every=3,
                output_dir=tmp, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def trained_state(model) -> dict[str, torch.Tensor]:
    """The trainable parts as they would be saved: projectors and the added tokens' rows (merged)."""
    rows = getattr(model, "trainable_rows", None)
    if rows is not None:
        rows.merge()
    out = {f"out.{k}.{n}.{pn}": p.detach().clone() for k, projs in model.output_projectors.items()
           for n, proj in projs.items() for pn, p in proj.named_parameters()}
    out.update({f"in.{k}.{pn}": p.detach().clone() for k, proj in model.input_projectors.items()
                for pn, p in proj.named_parameters()})
    ids = torch.tensor(model.tokens.new_ids)
    out["embed_rows"] = model.llm.get_input_embeddings().weight[ids].detach().clone()
    out["head_rows"] = model.llm.get_output_embeddings().weight[ids].detach().clone()
    return out


def run(registry, tmp, *, resume=False, **kw):
    model = new_model(registry)
    data = samples()
    t = Trainer(model, data, random_targets(model, data), config(tmp, **kw), resume=resume)
    return model, t, t.train()


@pytest.fixture(scope="module")
def run_a(registry, tmp_path_factory):
    """Uninterrupted: 6 steps, checkpoints at 3 and 6."""
    tmp = tmp_path_factory.mktemp("run_a")
    model, t, result = run(registry, tmp)
    return {"dir": tmp, "model": model, "trainer": t, "result": result, "state": trained_state(model)}


def test_config_forbids_unknown_keys_and_has_official_defaults():
    with pytest.raises(ValueError):
        TrainConfig(stage=2, learning_rate=1e-3)
    c = TrainConfig()
    assert (c.lr, c.betas, c.eps, c.weight_decay, c.grad_clip) == (4e-4, (0.9, 0.95), 1e-8, 1e-3, 1.0)
    assert TrainConfig.official_lr(3) == 5e-4


def test_stage2_loss_decreases(registry, tmp_path):
    _, _, result = run(registry, tmp_path, steps=24, checkpoint_every=0, save_final=False, batch_size=3)
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < 0.8 * first, (first, last, result.losses)


def test_only_the_declared_set_changes(registry, tmp_path):
    model = new_model(registry)
    llm_before = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    rest_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(("llm.", "output_projectors."))}
    proj_before = {n: p.detach().clone() for n, p in model.output_projectors.named_parameters()}
    data = samples()
    t = Trainer(model, data, random_targets(model, data), config(tmp_path, checkpoint_every=0, save_final=False))
    t.train()
    t.trainable.merge()
    signal_ids = sorted(model.tokens.all_signal_ids)
    for name, before in llm_before.items():
        after = dict(model.llm.named_parameters())[name].detach()
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            keep = torch.ones(before.shape[0], dtype=torch.bool)
            keep[signal_ids] = False
            assert torch.equal(after[keep], before[keep]), f"{name}: a row outside the signal tokens changed"
            assert not torch.equal(after[signal_ids], before[signal_ids]), f"{name}: signal rows did not train"
        else:
            assert torch.equal(after, before), f"{name} changed"
    for name, before in rest_before.items():
        if name.startswith("trainable_rows."):
            continue
        assert torch.equal(dict(model.named_parameters())[name].detach(), before), f"{name} changed"
    changed = [n for n, p in model.output_projectors.named_parameters() if not torch.equal(p.detach(), proj_before[n])]
    assert changed, "output projectors did not train"
    counts = json.loads((tmp_path / "trainable.json").read_text())
    assert counts["trainable"] == t.trainable.trainable and counts["stage"]["number"] == 2


def test_kill_and_resume_equals_uninterrupted(registry, tmp_path, run_a):
    _, first, r1 = run(registry, tmp_path, max_steps=3)
    assert r1.step == 3 and [p.name for p in r1.checkpoints] == ["step-3"]
    model_b, second, r2 = run(registry, tmp_path, resume=True)
    assert r2.resumed_from == tmp_path / "step-3" and r2.step == 6 and len(r2.losses) == 3
    assert r2.losses == pytest.approx(run_a["result"].losses[3:], abs=1e-6)
    state_b = trained_state(model_b)
    for name, a in run_a["state"].items():
        assert torch.allclose(state_b[name], a, atol=1e-6, rtol=0), name
    # same metrics rows for the steps both ran
    rows_a = [json.loads(x) for x in (run_a["dir"] / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows_b] == pytest.approx([r["loss"] for r in rows_a], abs=1e-6)


def test_crash_while_checkpointing_keeps_the_previous_one(registry, tmp_path, run_a, monkeypatch):
    real = trainer_module._write_trainer_state

    def crashing(state, directory):
        if state["step"] == 6:
            directory.mkdir(parents=True)
            (directory / "state.pt").write_bytes(b"half")
            raise RuntimeError("killed while writing")
        real(state, directory)

    monkeypatch.setattr(trainer_module, "_write_trainer_state", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        run(registry, tmp_path)
    monkeypatch.setattr(trainer_module, "_write_trainer_state", real)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".nextgpt-output.json", "metrics.jsonl", "step-3", "trainable.json"], names  # no step-6, no hidden temporaries
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step-3"
    assert (tmp_path / "step-3" / STATE_DIR / "state.pt").is_file()
    model, _, result = run(registry, tmp_path, resume=True)
    assert result.resumed_from == tmp_path / "step-3" and result.step == 6
    for name, a in run_a["state"].items():
        assert torch.allclose(trained_state(model)[name], a, atol=1e-6, rtol=0), name


def test_metrics_rows(run_a):
    rows = [json.loads(x) for x in (run_a["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert {"step", "loss", "lm", "l2", "lr", "samples_per_s"} <= set(r)
        assert set(r["l2"]) <= {"fake_image", "fake_audio"} and r["l2"]
        assert r["loss"] == pytest.approx(r["lm"] + sum(r["l2"].values()), rel=1e-5)
        assert r["samples_per_s"] > 0 and r["lr"] > 0
    assert sorted(p.name for p in run_a["dir"].glob("step-*")) == ["step-3", "step-6"]


def test_checkpoint_loads_with_the_trained_weights(registry, run_a):
    loaded = NextGPT.from_composition("tiny", registry=registry, checkpoint=run_a["dir"] / "step-6")
    state = trained_state(loaded)
    for name, a in run_a["state"].items():
        assert torch.equal(state[name], a), name
    fresh = trained_state(new_model(registry))
    assert not torch.equal(fresh["embed_rows"], state["embed_rows"])
    assert any(not torch.equal(fresh[n], state[n]) for n in state if n.startswith("out."))


def test_stage3_lora_kill_and_resume(registry, tmp_path):
    """Stage 3 (LoRA wrapped by apply_stage): resuming loads the LoRA tensors and ends where an uninterrupted run does."""
    kw = dict(stage=3, steps=4, checkpoint_every=2)

    def lora(model):
        return {n: p.detach().clone() for n, p in model.llm.named_parameters() if "lora_" in n}

    model_a, _, ra = run(registry, tmp_path / "a", **kw)
    run(registry, tmp_path / "b", max_steps=2, **kw)
    model_b, _, rb = run(registry, tmp_path / "b", resume=True, **kw)
    assert rb.resumed_from == tmp_path / "b" / "step-2" and rb.losses == pytest.approx(ra.losses[2:], abs=1e-6)
    la, lb = lora(model_a), lora(model_b)
    assert la and all(torch.allclose(la[n], lb[n], atol=1e-6, rtol=0) for n in la)
    sa, sb = trained_state(model_a), trained_state(model_b)
    assert all(torch.allclose(sa[n], sb[n], atol=1e-6, rtol=0) for n in sa)


def test_gradient_accumulation_equals_the_whole_batch(registry, tmp_path):
    """micro_batch_size=1 (two forward/backward passes per step, gradients added) ends where one pass over the
    batch of 2 ends: every micro-batch is normalised by the whole batch's token and span counts. Adam eps 1e-4:
    see test_multiprocess.py (exact-zero gradients are rounding noise that eps 1e-8 would blow up)."""
    whole_model, _, whole = run(registry, tmp_path / "whole", eps=1e-4, checkpoint_every=None, save_final=False)
    micro_model, _, micro = run(registry, tmp_path / "micro", eps=1e-4, checkpoint_every=None, save_final=False,
                                micro_batch_size=1)
    assert micro.losses == pytest.approx(whole.losses, abs=1e-5)
    a, b = trained_state(whole_model), trained_state(micro_model)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    fresh = trained_state(new_model(registry))
    assert any(not torch.allclose(fresh[n], a[n]) for n in a)  # the runs trained


def test_over_long_samples_are_cut_and_counted_not_fatal(registry, tmp_path, capsys):
    """A sample longer than max_length used to stop the run at its first step (and --resume replayed it): it is cut
    at the limit before embedding, the step trains on the rest, metrics.jsonl counts the cut samples per step."""
    model = new_model(registry)
    data = samples()
    lengths = [trainer_module.build_example(model, s).length for s in data]
    limit = min(lengths) - 1  # every sample is longer than this
    t = Trainer(model, data, random_targets(model, data), config(tmp_path, steps=3, checkpoint_every=None,
                                                                  max_length=limit), resume=False)
    result = t.train()
    assert result.step == 3 and all(math.isfinite(x) for x in result.losses)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["truncated"] for r in rows] == [2, 2, 2]
    assert f"6 sample(s) in this run were longer than the limit of {limit} positions" in capsys.readouterr().err
