"""FSDP2 and DeepSpeed ZeRO-2 really run: 2 CPU processes over gloo, launched by `accelerate launch` with the
configs in docs/accelerate/, end where single-process training ends.

Each engine test launches this module (``python -m tests.training.test_engines WORKDIR OUT``) under
``accelerate launch --config_file docs/accelerate/<engine>_cpu.yaml``. In each of the 2 processes it

1. trains stage 1, then stage 2 from stage 1's checkpoint, then stage 3 from stage 2's, interrupted after its
   step-2 checkpoint and resumed (the Python API). The batches mix modalities (image, audio and depth inputs; image
   and audio outputs), a global batch of 3 splits 2 + 1 and every process accumulates in micro-batches of 1 (so
   process 1 runs a weight-0 filler each step, and DeepSpeed accumulates 2 micro-batches itself);
2. runs the documented command, ``nextgpt train --stage 3 --micro-batch-size 1 ...`` (the CLI's own function, in
   the launched process, as ``-m nextgpt_core.cli`` would).

The test runs the same in one process and compares the logged losses and every tensor of the final checkpoints
(written by each engine's own gathering: the distributed-checkpoint full state dict for FSDP2).

Tolerances: the API chain uses Adam's eps 1e-4 (as test_multiprocess.py: gradients that are zero in exact
arithmetic are rounding noise that eps 1e-8 scales up to full updates); losses and weights agree within 1e-5 after
4 AdamW steps (measured: ~1e-6). The CLI uses the official eps 1e-8: losses within 1e-5, weights within 2e-4 (that
noise after 3 steps at lr 5e-4; measured ~4e-5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nextgpt_core.testing.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["a red square", "a blue circle", "a green star", "a small dot", "a big moon", "two lines"]
STEPS = 4
STAGES = (1, 2, 3)


# ---------------------------------------------------------------------------------------------- data
def write_media(folder: Path) -> None:
    """One fake image, sound and depth map per caption (the fake plugin's own writers)."""
    from nextgpt_fake.media import FakeAudioIO, FakeImageIO

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(CAPTIONS)):
        FakeImageIO().write(np.full((8, 8), (i + 1) / 8, dtype=np.float32), folder / f"i{i}.fimg")
        FakeAudioIO().write(np.sin(np.arange(32, dtype=np.float32) * (i + 1) / 4), folder / f"a{i}.faud")
        FakeImageIO().write(np.eye(8, dtype=np.float32) * (i + 1) / 8, folder / f"d{i}.fimg")


def stage_samples(folder: Path, stage: int) -> list:
    """Mixed-modality samples of a stage: stage 1 reads image / audio / depth media and writes their caption, stage
    2 writes a caption's image or audio signal run, stage 3 reads media and answers with a signal run."""
    from nextgpt_core.conversation import Conversation, Media, Text, Turn
    from nextgpt_core.training.data import Target, TrainingSample

    out = []
    for i, caption in enumerate(CAPTIONS):
        kind = ("fake_image", "i"), ("fake_audio", "a"), ("fake_depth", "d")
        modality, prefix = kind[i % 3]
        media = Media(modality=modality, path=folder / f"{prefix}{i}.{'faud' if prefix == 'a' else 'fimg'}")
        target = "fake_image" if i % 2 == 0 else "fake_audio"
        if stage == 1:
            turns = [Turn("user", [media, Text("what is this?")]), Turn("assistant", [Text(caption)])]
            targets = []
        elif stage == 2:
            turns = [Turn("user", [Text(caption)]), Turn("assistant", [Text(caption)])]
            targets = [Target(target, caption, None, 1, 1)]
        else:
            turns = [Turn("user", [media, Text(f"make {caption}")]), Turn("assistant", [Text("here:")])]
            targets = [Target(target, caption, None, 1, 1)]
        out.append(TrainingSample(Conversation(turns), targets, ("mem", i), f"s{stage}-{i}"))
    return out


def chain(workdir: Path, out: Path) -> dict:
    """Train stages 1, 2, 3 (each from the previous stage's last checkpoint; stage 3 stopped after step 2 and
    resumed) into ``out/s<k>``; returns ``{stage: logged losses}`` and what the engine said it was."""
    from nextgpt_core import NextGPT
    from nextgpt_core.plugins import get_registry
    from nextgpt_core.training.data import MediaLoader
    from nextgpt_core.training.trainer import TrainConfig, Trainer

    from tests.training.test_trainer import random_targets

    registry = get_registry()
    losses: dict[int, list[float]] = {}
    engine = None
    previous = None
    for stage in STAGES:
        data = stage_samples(workdir / "media", stage)
        runs = [dict(max_steps=2), dict(resume=True)] if stage == 3 else [dict()]
        losses[stage] = []
        for extra in runs:
            resume = extra.pop("resume", False)
            model = NextGPT.from_composition("tiny", registry=registry, checkpoint=previous)
            config = TrainConfig(stage=stage, steps=STEPS, batch_size=3, micro_batch_size=1, lr=1e-2, eps=1e-4,
                                 warmup_steps=1, seed=5, checkpoint_every=2, output_dir=out / f"s{stage}",
                                 progress=False, **extra)
            trainer = Trainer(model, data, random_targets(model, data, seed=stage), config, MediaLoader(registry),
                              resume=resume)
            result = trainer.train()
            losses[stage] += result.losses
            engine = trainer.engine.to_dict()
        previous = out / f"s{stage}" / f"step-{STEPS}"
    return {"losses": losses, "engine": engine}


def write_jsonl(folder: Path) -> Path:
    """The CLI's dataset: stage-3 rows with media in and an image or audio signal run out (our JSONL)."""
    rows = []
    for i, caption in enumerate(CAPTIONS):
        media = f"media/a{i}.faud" if i % 3 == 1 else f"media/i{i}.fimg"
        target = "fake_image" if i % 2 == 0 else "fake_audio"
        rows.append({"id": f"r{i}", "turns": [
            {"role": "user", "parts": [{"media": media}, {"text": f"make {caption}"}]},
            {"role": "assistant", "parts": [{"text": "here:"}, {"generate": target, "caption": caption}]},
        ]})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli_args(workdir: Path, out: Path) -> list[str]:
    """``nextgpt train`` as docs/training.md shows it, stage 3 with gradient accumulation and a checkpoint."""
    return ["train", "--stage", "3", "--data", str(workdir / "data.jsonl"), "--media-root", str(workdir),
            "--targets", str(workdir / "cache"), "--steps", "3", "--batch-size", "3", "--micro-batch-size", "1",
            "--checkpoint-every", "2", "--seed", "3", "--out", str(out)]


def checkpoint_tensors(step_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's safetensors files, keyed by file and name."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(step_dir.rglob("*.safetensors")):
        for name, value in load_file(path).items():
            out[f"{path.relative_to(step_dir)}:{name}"] = value
    return out


def _worker(workdir: Path, out: Path) -> None:
    """What each launched process runs (``python -m tests.training.test_engines WORKDIR OUT``)."""
    torch.set_num_threads(1)
    result = chain(workdir, out)
    import torch.distributed as dist

    from nextgpt_core.cli import app

    app(cli_args(workdir, out / "cli"), standalone_mode=False)  # the command, in this launched process
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------- launching
def launch(config: str, args: list[str], cwd: Path = ROOT, timeout: int = 600) -> tuple[subprocess.CompletedProcess, float]:
    """``accelerate launch --config_file docs/accelerate/<config> <args>`` (2 CPU processes), on a free port; the
    DeepSpeed op build is kept in build/torch-extensions."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEXTGPT_LOAD_PLUGINS": "fake",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / "build" / "torch-extensions")),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(ROOT / "build" / "test-plugins"),
                                                      os.environ.get("PYTHONPATH", "")) if p)}
    accelerate = Path(sys.executable).with_name("accelerate")
    started = time.perf_counter()
    proc = subprocess.run([str(accelerate), "launch", "--config_file", str(ROOT / "docs" / "accelerate" / config),
                           "--main_process_port", str(free_port()), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - started


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float) -> float:
    assert sorted(got) == sorted(want)
    worst = 0.0
    for name, value in want.items():
        if value.is_floating_point():
            diff = float((got[name] - value).abs().max()) if value.numel() else 0.0
            assert diff <= atol, f"{name}: differs by {diff}"
            worst = max(worst, diff)
        else:
            assert torch.equal(got[name], value), name
    return worst


@pytest.fixture(scope="module")
def single(tmp_path_factory, registry):
    """The same chain and command in one process (the reference)."""
    from typer.testing import CliRunner

    from nextgpt_core.cli import app

    workdir = tmp_path_factory.mktemp("engines")
    write_media(workdir / "media")
    write_jsonl(workdir)
    runner = CliRunner()
    cached = runner.invoke(app, ["cache-targets", "--data", str(workdir / "data.jsonl"), "--media-root",
                                 str(workdir), "--out", str(workdir / "cache")])
    assert cached.exit_code == 0, cached.output
    alone = runner.invoke(app, cli_args(workdir, workdir / "single" / "cli"))
    assert alone.exit_code == 0, alone.output
    return workdir, chain(workdir, workdir / "single")


ENGINES = {"fsdp": ("fsdp_cpu.yaml", "fsdp2"), "deepspeed": ("deepspeed_zero2_cpu.yaml", "deepspeed")}


def _run_engine_chain(kind: str, single) -> None:
    workdir, ref = single
    config, name = ENGINES[kind]
    out = workdir / kind
    proc, seconds = launch(config, ["-m", "tests.training.test_engines", str(workdir), str(out)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"{kind}: 2-process chain of stages 1-3 (+ resume) in {seconds:.1f} s")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ref["engine"]["name"] == "single"
    for got in ranks:
        assert got["engine"]["name"] == name and got["engine"]["processes"] == 2 and got["engine"]["device"] == "cpu"
        for stage in STAGES:
            # the global batch's losses, the same on both processes and as alone
            assert got["losses"][str(stage)] == pytest.approx(ref["losses"][stage], abs=1e-5), stage
    assert ranks[0]["losses"] == ranks[1]["losses"]
    # the log and every step's state.json name the engine actually used
    state = json.loads((out / "s3" / f"step-{STEPS}" / "trainer_state" / "state.json").read_text())
    assert state["engine"]["name"] == name and state["engine"]["processes"] == 2
    for stage in STAGES:
        want = checkpoint_tensors(workdir / "single" / f"s{stage}" / f"step-{STEPS}")
        got = checkpoint_tensors(out / f"s{stage}" / f"step-{STEPS}")
        worst = _assert_close(got, want, atol=1e-5)
        print(f"{kind}: stage {stage} checkpoint tensors within {worst:.2e} of one process")
    # the documented command: the same losses, checkpoints and engine named in the log and in state.json
    def losses(run: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    cli, alone = out / "cli", workdir / "single" / "cli"
    assert losses(cli) == pytest.approx(losses(alone), abs=1e-5)
    assert [json.loads(x)["processes"] for x in (cli / "metrics.jsonl").read_text().splitlines()] == [2, 2, 2]
    worst = _assert_close(checkpoint_tensors(cli / "step-3"), checkpoint_tensors(alone / "step-3"), atol=2e-4)
    print(f"{kind}: the CLI's stage-3 checkpoint within {worst:.2e} of one process")
    for step in (2, 3):
        state = json.loads((cli / f"step-{step}" / "trainer_state" / "state.json").read_text())
        assert state["engine"]["name"] == name and state["engine"]["processes"] == 2
    described = {"fsdp": "engine: fsdp2, 2 processes on cpu (gloo)",
                 "deepspeed": "engine: deepspeed ZeRO-2, 2 processes on cpu (gloo)"}[kind]
    assert proc.stderr.count(described) == 4 + 1  # the API runs (stage 3 twice) and the command, once each
    # every stage trained its part between its step-2 and step-4 checkpoints (equal untouched models prove nothing)
    for stage, part in ((1, "input_projectors/"), (2, "output_projectors/"), (3, "lora/")):
        before = checkpoint_tensors(out / f"s{stage}" / "step-2")
        after = checkpoint_tensors(out / f"s{stage}" / f"step-{STEPS}")
        assert any(k.startswith(part) and not torch.equal(before[k], after[k]) for k in after), stage
    return out


def _resume_alone(folder: Path, out: Path, single_dir: Path):
    """Copy a 2-process run's stage-3 folder without its last step and resume it in one process."""
    import shutil

    from nextgpt_core import NextGPT
    from nextgpt_core.plugins import get_registry
    from nextgpt_core.training.data import MediaLoader
    from nextgpt_core.training.trainer import TrainConfig, Trainer

    from tests.training.test_trainer import random_targets

    shutil.copytree(folder, out)
    shutil.rmtree(out / f"step-{STEPS}")
    metrics = out / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:2]))
    data = stage_samples(single_dir / "media", 3)
    model = NextGPT.from_composition("tiny", checkpoint=single_dir / "single" / "s2" / f"step-{STEPS}")
    config = TrainConfig(stage=3, steps=STEPS, batch_size=3, micro_batch_size=1, lr=1e-2, eps=1e-4, warmup_steps=1,
                         seed=5, checkpoint_every=2, output_dir=out, progress=False)
    return Trainer(model, data, random_targets(model, data, seed=3), config, MediaLoader(get_registry()), resume=True)


@pytest.mark.subprocess
def test_fsdp_stages_and_resume_equal_one_process(single):
    out = _run_engine_chain("fsdp", single)
    workdir, _ = single
    # an FSDP2 step (optimizer state by parameter name) resumes alone and ends where the single run ends
    trainer = _resume_alone(out / "s3", workdir / "fsdp-then-alone", workdir)
    assert trainer.engine.name == "single" and trainer.start_step == 2
    trainer.train()
    want = checkpoint_tensors(workdir / "single" / "s3" / f"step-{STEPS}")
    _assert_close(checkpoint_tensors(workdir / "fsdp-then-alone" / f"step-{STEPS}"), want, atol=1e-5)


@pytest.mark.subprocess
def test_deepspeed_stages_and_resume_equal_one_process(single):
    from nextgpt_core.errors import CheckpointError

    out = _run_engine_chain("deepspeed", single)
    workdir, _ = single
    # DeepSpeed's optimizer state is its per-process files: resuming it alone is refused, in one line
    with pytest.raises(CheckpointError) as refused:
        _resume_alone(out / "s3", workdir / "deepspeed-then-alone", workdir)
    message = str(refused.value)
    assert "\n" not in message and "deepspeed ZeRO-2, 2 processes on cpu (gloo)" in message
    assert "resume a DeepSpeed run with the same ZeRO stage and process count" in message
    assert "--checkpoint" in message


if __name__ == "__main__":  # each process of the launch above
    os.environ.setdefault("NEXTGPT_LOAD_PLUGINS", "fake")
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
