"""`nextgpt cache-targets` and `nextgpt train` on the fake plugin, in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nextgpt_core.cli import app

CAPTIONS = ["a red square", "a blue circle", "a green star", "a yellow moon"]


@pytest.fixture()
def dataset(tmp_path, registry):
    from nextgpt_fake.media import FakeImageIO

    rows = []
    for i, caption in enumerate(CAPTIONS):
        FakeImageIO().write(np.full((8, 8), i / 4, dtype=np.float32), tmp_path / f"m{i}.fimg")
        rows.append({"id": f"s{i}", "turns": [
            {"role": "user", "parts": [{"text": f"show me {caption}"}]},
            {"role": "assistant", "parts": [{"text": "here:"}, {"generate": "fake_image", "caption": caption}]},
        ]})
        rows.append({"id": f"c{i}", "turns": [
            {"role": "user", "parts": [{"media": f"m{i}.fimg"}, {"text": "generate a caption"}]},
            {"role": "assistant", "parts": [{"text": caption}]},
        ]})
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cache_targets_then_train_stage_2(dataset, tmp_path, registry):
    from nextgpt_core import NextGPT
    from nextgpt_core.training.data import target_id
    from nextgpt_core.training.targets import TargetCache

    runner = CliRunner()
    result = runner.invoke(app, ["cache-targets", "--data", str(dataset), "--out", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    cache = TargetCache(tmp_path / "cache")
    assert len(cache) == len(CAPTIONS)
    model = NextGPT.from_composition("tiny", registry=registry)
    decoder = model.decoders["fake_image"]
    expected = decoder.encode_text([CAPTIONS[0]])
    got = cache[target_id("fake_image", CAPTIONS[0])]
    for spec in decoder.conditioning_inputs:
        torch.testing.assert_close(got[spec.name], expected[spec.name][0])

    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(dataset), "--stage", "2", "--targets", str(tmp_path / "cache"),
                                 "--out", str(out), "--steps", "4", "--checkpoint-every", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "step-2").is_dir() and (out / "step-4").is_dir() and (out / "trainable.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    trained = NextGPT.from_composition("tiny", registry=registry, checkpoint=out / "step-4")
    before = model.output_projectors["fake_image"]["prompt_embeds"].fc.weight
    after = trained.output_projectors["fake_image"]["prompt_embeds"].fc.weight
    assert not torch.equal(before, after)


def test_train_needs_targets_for_stage_2(dataset, tmp_path, registry):
    result = CliRunner().invoke(app, ["train", "--data", str(dataset), "--stage", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: stages 2 and 3 need --targets (run `nextgpt cache-targets` first)"]


def test_stage_1_trains_without_targets(dataset, tmp_path, registry):
    out = tmp_path / "run1"
    result = CliRunner().invoke(app, ["train", "--data", str(dataset), "--stage", "1", "--out", str(out), "--steps", "2"])
    assert result.exit_code == 0, result.output
    text = (out / "trainable.json").read_text()
    assert "input_projectors.fake_image" in text and "output_projectors.fake_image" not in text


@pytest.mark.subprocess
def test_the_same_command_under_accelerate_launch_two_processes(dataset, tmp_path, registry):
    """`accelerate launch --multi_gpu --num_processes 2` runs the same train command on CPU (gloo): each process
    takes half of every global batch, the logged global losses equal the single-process run's, and rank 0 writes
    one checkpoint that loads."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from nextgpt_core import NextGPT

    args = ["train", "--data", str(dataset), "--stage", "1", "--steps", "2", "--batch-size", "4", "--seed", "5"]
    single = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output

    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nextgpt_core.cli", *args,
         "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in rows] == [2, 2]  # one row per step, written once (rank 0)
    ref = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in ref] == [1, 1]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], abs=1e-5)
    NextGPT.from_composition("tiny", registry=registry, checkpoint=tmp_path / "two" / "step-2")


def test_stages_chain_through_checkpoint(dataset, tmp_path, registry):
    """Stage 2 starts from stage 1's weights with --checkpoint: the input projectors stage 1 trained (and stage 2
    does not train) reach stage 2's checkpoint unchanged; a missing folder is one error line."""
    from nextgpt_core import NextGPT

    runner = CliRunner()
    s1 = runner.invoke(app, ["train", "--data", str(dataset), "--stage", "1", "--steps", "2", "--out", str(tmp_path / "s1")])
    assert s1.exit_code == 0, s1.output
    assert runner.invoke(app, ["cache-targets", "--data", str(dataset), "--out", str(tmp_path / "cache")]).exit_code == 0
    s2 = runner.invoke(app, ["train", "--data", str(dataset), "--stage", "2", "--steps", "2", "--targets",
                             str(tmp_path / "cache"), "--checkpoint", str(tmp_path / "s1" / "step-2"),
                             "--out", str(tmp_path / "s2")])
    assert s2.exit_code == 0, s2.output
    fresh = NextGPT.from_composition("tiny", registry=registry)
    after1 = NextGPT.from_composition("tiny", registry=registry, checkpoint=tmp_path / "s1" / "step-2")
    after2 = NextGPT.from_composition("tiny", registry=registry, checkpoint=tmp_path / "s2" / "step-2")
    w0, w1, w2 = (m.input_projectors["fake_image"].state_dict() for m in (fresh, after1, after2))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # stage 1 trained it
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # stage 2 carried it
    bad = runner.invoke(app, ["train", "--data", str(dataset), "--stage", "1", "--checkpoint", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "s3")])
    assert bad.exit_code == 2 and "--checkpoint" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(("args", "message"), [
    (["--micro-batch-size", "0"], "--micro-batch-size 0: Input should be greater than or equal to 1"),
    (["--denoise-weight", "-1"], "--denoise-weight -1.0: Input should be greater than or equal to 0"),
    (["--steps", "0"], "--steps 0: Input should be greater than or equal to 1"),
    (["--log-with", "nope"], "unknown tracker 'nope'"),
])
def test_bad_training_settings_are_one_error_line(dataset, tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "--data", str(dataset), "--stage", "1", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_generate_with_a_stage_3_checkpoint_as_the_docs_show(dataset, tmp_path, registry):
    """docs/training.md: `nextgpt train --stage 3 ...` then `nextgpt generate --checkpoint runs/s3/step-...` with
    the default composition (`tiny`, `lora.enabled = false`): the LLM is wrapped with the LoRA settings the
    checkpoint records, and the reply is the trained model's."""
    from nextgpt_core import NextGPT

    runner = CliRunner()
    assert runner.invoke(app, ["cache-targets", "--data", str(dataset), "--out", str(tmp_path / "cache")]).exit_code == 0
    s3 = runner.invoke(app, ["train", "--data", str(dataset), "--stage", "3", "--steps", "2", "--targets",
                             str(tmp_path / "cache"), "--out", str(tmp_path / "s3")])
    assert s3.exit_code == 0, s3.output
    manifest = json.loads((tmp_path / "s3" / "step-2" / "manifest.json").read_text())
    assert manifest["composition_settings"]["lora"]["enabled"] is True
    out = tmp_path / "reply"
    result = runner.invoke(app, ["generate", "--composition", "tiny", "--checkpoint", str(tmp_path / "s3" / "step-2"), "--prompt",
                                 "show me a red square", "--want", "fake_image", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "error" not in result.output and (out / "reply.txt").is_file()
    trained = NextGPT.from_composition("tiny", registry=registry, checkpoint=tmp_path / "s3" / "step-2")
    assert trained.has_lora
    expected = trained.generate("show me a red square", want=["fake_image"], seed=3)
    assert f"reply: {expected.text}" in result.stdout
