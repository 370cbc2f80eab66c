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
