"""Over-long data costs nothing: a huge caption or text is a skipped row (never echoed), and a sample whose text
cannot fit the context is set aside before training (it aborted the whole run after gigabytes), from its
characters alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app
from nextgpt_core.training.data import MAX_CAPTION_CHARS, read_dataset


def _rows(folder, extra):
    from nextgpt_fake.media import FakeImageIO

    FakeImageIO().write(np.zeros((8, 8), dtype=np.float32), folder / "m.fimg")
    rows = [
        {"id": "gen", "turns": [{"role": "user", "parts": [{"text": "show me"}]},
                                {"role": "assistant", "parts": [{"generate": "fake_image", "caption": "a red square"}]}]},
        {"id": "cap", "turns": [{"role": "user", "parts": [{"media": "m.fimg"}, {"text": "caption"}]},
                                {"role": "assistant", "parts": [{"text": "a red square"}]}]},
        extra,
    ]
    path = folder / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_huge_caption_is_a_skipped_row_and_never_printed(tmp_path, registry):
    huge = "a cat " * 2_000_000  # 12 MB
    path = _rows(tmp_path, {"id": "huge", "turns": [
        {"role": "user", "parts": [{"text": "draw"}]},
        {"role": "assistant", "parts": [{"generate": "fake_image", "caption": huge}]}]})
    loaded = read_dataset(path, registry=registry, require_target_media=False)
    assert [s.sample_id for s in loaded.samples] == ["gen", "cap"]
    problem = loaded.report.problems[0]
    assert problem.kind == "too_long" and f"captions are limited to {MAX_CAPTION_CHARS:,}" in problem.message
    assert len(str(problem)) < 300
    result = CliRunner().invoke(app, ["cache-targets", "--data", str(path), "--out", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output[-500:]
    assert len(result.stderr) < 2_000 and "a cat a cat" not in result.stderr


def test_a_sample_longer_than_the_context_is_set_aside_before_training(tmp_path, registry):
    long_text = "word " * 200_000  # 1 MB: under the reader's cap, far over the tiny model's context
    path = _rows(tmp_path, {"id": "long", "turns": [
        {"role": "user", "parts": [{"media": "m.fimg"}, {"text": "caption"}]},
        {"role": "assistant", "parts": [{"text": long_text}]}]})
    args = ["train", "--stage", "1", "--data", str(path), "--steps", "2", "--batch-size", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output[-800:]
    assert "data: skipped 1 sample(s) longer than the context limit of" in result.stderr and "(first: long)" in result.stderr
    assert "trained 2 steps" in result.stdout
    failed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run2"), "--on-error", "fail"])
    assert failed.exit_code == 2
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "sample long: its text alone needs more than the context limit" in lines[0]


def test_build_example_refuses_before_tokenizing(registry, tiny_model, monkeypatch):
    from nextgpt_core.errors import DatasetError
    from nextgpt_core.conversation import Conversation
    from nextgpt_core.training.collate import build_example
    from nextgpt_core.training.data import TrainingSample

    sample = TrainingSample(conversation=Conversation().user("x" * 400_000).assistant("ok"), targets=[],
                            sample_id="big", source=("mem", 0))
    monkeypatch.setattr(tiny_model.tokenizer, "encode", lambda *a, **k: pytest.fail("tokenized"))
    with pytest.raises(DatasetError, match=r"sample big: at least \d+ positions \(its text alone\)"):
        build_example(tiny_model, sample)
