"""`nextgpt serve` refuses bad options with one stderr line and exit code 2, before loading anything."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be 1-65535"),
        (["--workers", "0"], "workers must be at least 1"),
        (["--max-queue", "-1"], "max_queue must be 0 or more"),
        (["--timeout", "0"], "timeout_s must be positive"),
        (["--composition", "no-such-composition"], "no-such-composition"),
        (["--checkpoint", "/no/such/folder"], "checkpoint folder not found"),
        (["--api-key", " "], "api_key must not be empty"),
        (["--backend", "spark"], "--backend must be inprocess or ray"),
        (["--ray-replicas", "image=2"], "--ray-* options need --backend ray"),
        (["--backend", "ray", "--ray-replicas", "image=two"], "expected STAGE=NUMBER"),
        (["--backend", "ray", "--ray-gpus", "image=-1"], "num_gpus of 'image' must be at least 0"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(app, ["serve", "--media-dir", str(tmp_path / "m"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
