"""Fault injection: a full disk (an injected OSError) or a process killed (SIGKILL) while `cache-targets` or
`train` writes; nothing a user had is lost, the error is one line, and the next run cleans up and succeeds."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["a red square", "a blue circle", "a green star", "a yellow moon"]


@pytest.fixture()
def data(tmp_path, registry):
    from nextgpt_fake.media import FakeImageIO

    rows = []
    for i, caption in enumerate(CAPTIONS):
        FakeImageIO().write(np.full((8, 8), i / 4, dtype=np.float32), tmp_path / f"m{i}.fimg")
        rows.append({"id": f"g{i}", "turns": [{"role": "user", "parts": [{"text": f"show {caption}"}]},
                                              {"role": "assistant", "parts": [{"generate": "fake_image", "caption": caption}]}]})
        rows.append({"id": f"c{i}", "turns": [{"role": "user", "parts": [{"media": f"m{i}.fimg"}, {"text": "caption"}]},
                                              {"role": "assistant", "parts": [{"text": caption}]}]})
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_during_cache_targets_loses_nothing(data, tmp_path, monkeypatch):
    from nextgpt_core.training import targets

    cache = tmp_path / "cache"
    assert CliRunner().invoke(app, ["cache-targets", "--data", str(data), "--out", str(cache)]).exit_code == 0
    before = _snapshot(cache)
    calls = {"n": 0}
    real = targets.write_safetensors

    def full(state, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(state, path)

    monkeypatch.setattr(targets, "write_safetensors", full)
    result = CliRunner().invoke(app, ["cache-targets", "--data", str(data), "--out", str(cache), "--overwrite"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "nothing was replaced" in lines[0]
    assert "Traceback" not in result.output
    assert _snapshot(cache) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")) == []


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from nextgpt_core.training import targets
    from nextgpt_core.cli import main

    kill_at, calls, real = int(os.environ["KILL_AT"]), [0], targets.write_safetensors
    def write(state, path):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real(state, path)
    targets.write_safetensors = write
    sys.argv = ["nextgpt", *sys.argv[1:]]
    main()
""")


@pytest.mark.parametrize("kill_at", [1, 3])
def test_cache_targets_killed_mid_write_keeps_the_old_cache(data, tmp_path, kill_at):
    cache = tmp_path / "cache"
    args = ["cache-targets", "--data", str(data), "--out", str(cache)]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = _snapshot(cache)
    env = {**os.environ, "KILL_AT": str(kill_at), "PYTHONPATH": os.pathsep.join([str(ROOT / "build" / "test-plugins"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", _KILLER, *args, "--overwrite"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-1000:]
    assert _snapshot(cache) == before, "a killed run changed the cache"
    assert any(p.name.startswith(".cache.nextgpt-tmp-") for p in tmp_path.iterdir()), "the kill left its temporary"
    again = CliRunner().invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert not any(p.name.startswith(".cache.") for p in tmp_path.iterdir()), "the next run cleans a dead run's leftovers"
    assert _snapshot(cache) == before  # same captions, same targets
