"""The real `nextgpt` executable in child processes (the rest of the CLI tests run in-process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess
EXE = str(Path(sys.executable).with_name("nextgpt"))
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "build" / "test-plugins"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_plugins_and_help_never_import_torch():
    for args in (["--help"], ["plugins"]):
        proc = subprocess.run([EXE, *args], env=_env(PYTHONPROFILEIMPORTTIME="1", NEXTGPT_LOAD_PLUGINS="fake"),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "typer" in imported  # the import log is real
        assert ("nextgpt_registry" in imported) == (args == ["plugins"])  # --help does not even load the registry
        heavy = sorted(m for m in imported if m.split(".")[0] in {"torch", "transformers", "safetensors", "numpy"})
        assert not heavy, f"`nextgpt {' '.join(args)}` imported {heavy[:5]}"
    assert "fake_image" in subprocess.run([EXE, "plugins"], env=_env(NEXTGPT_LOAD_PLUGINS="fake"), capture_output=True, text=True).stdout


def test_demo_end_to_end_and_fake_plugin_stays_out_of_it(tmp_path):
    proc = subprocess.run([EXE, "demo", "--composition", "tiny", "--out", str(tmp_path / "a")], env=_env(NEXTGPT_LOAD_PLUGINS="fake"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a" / "reply" / "fake_image_0.fimg").is_file()
    # without the test folder on the path (as `make demo` runs), the fake plugin is invisible
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEXTGPT_LOAD_PLUGINS")}
    proc = subprocess.run([EXE, "plugins"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "fake" not in proc.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([EXE, "generate", "--composition", "tiny", "-p", "x", "-i", str(tmp_path / "missing.fimg")],
                          env=_env(NEXTGPT_LOAD_PLUGINS="fake"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: input file not found: '{tmp_path / 'missing.fimg'}'"]
