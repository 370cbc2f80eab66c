"""Training on the REAL tiny plugins (image, video, audio): frozen parts stay frozen and in eval mode in every
stage, and a run killed after its last checkpoint then resumed ends bitwise equal to an uninterrupted run, with one
metrics row per step.

The kill is simulated in-process by stopping the run two steps after its last checkpoint (``max_steps``): what
is on disk then is what ``kill -9`` leaves (a complete ``step-k``, metrics rows of later steps);
``test_cli_kill_9_then_resume`` does it with a real SIGKILL on the ``nextgpt train`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nextgpt_registry import Registry

from nextgpt_core import NextGPT
from nextgpt_core.composition import resolve_composition
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.training.data import MediaLoader, read_dataset
from nextgpt_core.training.synthetic import make_synthetic_dataset
from nextgpt_core.training.targets import TargetCache, build_decoders, cache_targets
from nextgpt_core.training.trainable import apply_stage
from nextgpt_core.training.trainer import TrainConfig, Trainer

REAL = ["image", "video", "audio"]


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture(scope="module")
def data(real_registry, tmp_path_factory):
    """Synthetic toy-world media (2 per modality): 6 captioning samples (media in) and 6 generation samples (targets
    out), with the generation targets cached by the real tiny decoders (stage 1 trains no L2 and ignores them)."""
    root = tmp_path_factory.mktemp("real-data")
    ds = make_synthetic_dataset(root / "data", 2, seed=3, registry=real_registry)
    loaded = read_dataset(ds.jsonl, media_root=ds.media, registry=real_registry)
    assert loaded.report.kept == 12, loaded.report.summary()
    samples = list(loaded.samples)
    targets = [t for s in samples for t in s.targets]
    cache_targets(targets, build_decoders(resolve_composition("tiny", real_registry)), root / "cache")
    return {  # every stage reads both kinds, so that every encoder runs in every stage
        1: samples,
        2: samples,
        3: samples,
        "targets": TargetCache(root / "cache"),
        "root": root,
        "jsonl": ds.jsonl,
        "media": ds.media,
    }


def _config(out: Path, stage: int, **kw) -> TrainConfig:
    base = dict(stage=stage, steps=8, batch_size=2, lr=1e-2, warmup_steps=1, seed=11, checkpoint_every=3,
                output_dir=out, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _run(registry, data, out, stage, *, resume=False, **kw):
    model = NextGPT.from_composition("tiny", registry=registry)
    trainer = Trainer(model, data[stage], data["targets"] if stage > 1 else None, _config(out, stage, **kw),
                      MediaLoader(registry), resume=resume)
    result = trainer.train()
    trainer.trainable.merge()
    return model, trainer, result


def _trained_tensors(model) -> dict[str, torch.Tensor]:
    """Everything a checkpoint of any stage holds: projectors, LoRA tensors, the added tokens' rows."""
    out = {f"in.{n}": p.detach().clone() for n, p in model.input_projectors.named_parameters()}
    out.update({f"out.{n}": p.detach().clone() for n, p in model.output_projectors.named_parameters()})
    out.update({f"llm.{n}": p.detach().clone() for n, p in model.llm.named_parameters() if "lora_" in n})
    ids = torch.tensor(model.tokens.new_ids)
    out["embed_rows"] = model.llm.get_input_embeddings().weight[ids].detach().clone()
    out["head_rows"] = model.llm.get_output_embeddings().weight[ids].detach().clone()
    return out


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_no_decoder_or_encoder_parameter_trains_in_any_stage(real_registry, stage):
    """After apply_stage, no parameter of a loaded real decoder (SD UNet/VAE/CLIP, ZeroScope, AudioLDM) or of an
    encoder requires grad; the decoders were frozen through the public Decoder.freeze()."""
    model = NextGPT.from_composition("tiny", registry=real_registry)
    model.load_decoders()
    for decoder in model.decoders.values():  # as a user's code might leave them
        for module in decoder.torch_modules():
            module.requires_grad_(True).train()
    assert sum(p.requires_grad for m in model.decoders["image"].torch_modules() for p in m.parameters()) > 0
    apply_stage(model, stage)
    for key, decoder in model.decoders.items():
        modules = decoder.torch_modules()
        assert modules, key  # the loaded pipeline's modules are listed
        assert not [p for m in modules for p in m.parameters() if p.requires_grad], key
        assert not [m for top in modules for m in top.modules() if m.training], key
    assert not [n for n, p in model.encoders.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_frozen_parts_run_in_eval_mode_while_training(real_registry, data, tmp_path, stage):
    """During training (one epoch: every sample) every module that runs a forward is in eval mode unless the stage trains it: the
    ImageBind branches (the audio one has DropPath 0.1), the LLM's frozen layers; the trained projectors and the
    LoRA branches run in train mode."""
    model = NextGPT.from_composition("tiny", registry=real_registry)
    seen: dict[str, bool] = {}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, module.training)  # the mode of its first forward (returns None: args unchanged)
        return hook

    trainer = Trainer(model, data[stage], data["targets"] if stage > 1 else None,
                      _config(tmp_path, stage, steps=6, checkpoint_every=None, save_final=False), MediaLoader(real_registry))
    handles = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if n]  # LoRA wrapped now
    trainer.train()
    for h in handles:
        h.remove()
    encoders = {n: t for n, t in seen.items() if n.startswith("encoders.")}
    assert encoders and not any(encoders.values()), [n for n, t in encoders.items() if t][:5]
    assert any(n.startswith("encoders.audio") for n in encoders)  # the audio branch did run
    llm_base = {n: t for n, t in seen.items() if n.startswith("llm.") and "lora_" not in n}
    assert llm_base and not any(llm_base.values()), [n for n, t in llm_base.items() if t][:5]
    trained = {n: t for n, t in seen.items() if n.startswith(("input_projectors.", "output_projectors."))}
    wanted = {1: "input_projectors.", 2: "output_projectors.", 3: ("input_projectors.", "output_projectors.")}[stage]
    assert trained and all(t == n.startswith(wanted) for n, t in trained.items()), trained
    lora = {n: t for n, t in seen.items() if "lora_" in n}
    assert (stage == 3) == bool(lora) and all(lora.values())


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_kill_then_resume_is_bitwise_equal(real_registry, data, tmp_path, stage, capsys):
    """Uninterrupted 8 steps vs a run stopped after step 5 (checkpoint at 3, rows 4-5 logged: what kill -9 leaves)
    then resumed: the same losses and trained tensors, bit for bit; metrics.jsonl has each step once; the resumed
    run says from which step."""
    model_a, _, result_a = _run(real_registry, data, tmp_path / "a", stage)
    _run(real_registry, data, tmp_path / "b", stage, max_steps=5)
    assert [r["step"] for r in _metrics(tmp_path / "b")] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (tmp_path / "b").glob("step-*")) == ["step-3"]
    capsys.readouterr()
    model_b, _, result_b = _run(real_registry, data, tmp_path / "b", stage, resume=True)
    err = capsys.readouterr().err
    assert f"resumed from {tmp_path / 'b' / 'step-3'} at step 3 of 8" in err
    assert "dropped 2 metrics row(s)" in err
    assert result_b.start_step == 3 and result_b.losses == result_a.losses[3:]
    a, b = _trained_tensors(model_a), _trained_tensors(model_b)
    assert set(a) == set(b)
    assert [n for n in a if not torch.equal(a[n], b[n])] == []
    assert any(n.startswith("llm.") for n in a) == (stage == 3)
    rows_a, rows_b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in rows_b] == list(range(1, 9))
    keys = ("loss", "lm", "l2", "lr", "epoch")
    assert [{k: r[k] for k in keys} for r in rows_b] == [{k: r[k] for k in keys} for r in rows_a]


@pytest.mark.subprocess
def test_cli_kill_9_then_resume(data, tmp_path):
    """`nextgpt train --stage 3` on the real plugins, killed with SIGKILL after its step-8 checkpoint, then
    `--resume`: the final checkpoint's tensors equal an uninterrupted run's bit for bit, metrics.jsonl holds each
    step once with the uninterrupted values, and the resumed run says from which step."""
    from nextgpt_core.serialization import read_safetensors

    steps = 60
    args = ["train", "--stage", "3", "--data", str(data["jsonl"]), "--media-root", str(data["media"]),
            "--targets", str(data["root"] / "cache"), "--steps", str(steps), "--checkpoint-every", "4",
            "--batch-size", "2", "--seed", "5"]
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": ",".join(REAL), "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nextgpt_core.cli", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed / "step-8").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate(timeout=60)[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, err[-2000:]  # killed, not finished
    last = max(int(p.name.split("-")[1]) for p in killed.glob("step-*"))
    assert 8 <= last < steps

    # the uninterrupted run and the resumption run as processes like the killed one (same thread count: a
    # different one changes float sums in the last bits, and the comparison below is exact)
    cli = [sys.executable, "-m", "nextgpt_core.cli", *args]
    whole = subprocess.run([*cli, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed = subprocess.run([*cli, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {killed / f'step-{last}'} at step {last} of {steps}" in resumed.stderr
    final_a, final_b = tmp_path / "whole" / f"step-{steps}", killed / f"step-{steps}"
    files = sorted(p.relative_to(final_a) for p in final_a.rglob("*.safetensors") if "trainer_state" not in p.parts)
    assert {"lora", "input_projectors", "output_projectors", "token_rows"} <= {f.parts[0] for f in files}
    for rel in files:
        a, b = read_safetensors(final_a / rel), read_safetensors(final_b / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    rows_a, rows_b = _metrics(tmp_path / "whole"), _metrics(killed)
    assert [r["step"] for r in rows_b] == list(range(1, steps + 1))
    assert [(r["loss"], r["lm"], r["l2"]) for r in rows_b] == [(r["loss"], r["lm"], r["l2"]) for r in rows_a]
