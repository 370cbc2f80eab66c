"""Smoke tests of the training benchmarks: each script runs end to end in its --quick setting and writes a report
whose figures are consistent (both variants measured, the built-in checks passed, ratios of the medians)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

pytest.importorskip("nextgpt_image", reason="the real plugins are not installed (make install)")


def run_quick(script: str, out: Path, *extra: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--out", str(out), *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_training_targets_quick(tmp_path):
    report = run_quick("training_targets.py", tmp_path / "targets.json")
    res = report["results"]
    cached, recomputed = res["samples_per_s"]["cached"], res["samples_per_s"]["recomputed"]
    assert cached["n"] == recomputed["n"] == 1 and cached["median"] > 0 and recomputed["median"] > 0
    assert res["ratio_cached_over_recomputed_of_medians"] == pytest.approx(cached["median"] / recomputed["median"])
    # one stage-2 sample per modality, so one encode_text call per sample in the one recomputed step
    assert res["cache_targets"] == 3 and res["encode_text_calls_per_round_median"] == 3
    (row,) = report["rounds"]
    assert row["cached"]["losses"] == pytest.approx(row["recomputed"]["losses"], rel=1e-4)
    assert report["git"]["commit"] and report["machine"]["cpus"]


def test_training_memory_quick(tmp_path):
    report = run_quick("training_memory.py", tmp_path / "memory.json", "--jobs", "2")
    runs = {r["config"]: r for r in report["runs"]}
    assert set(runs) == {"off", "on"}
    assert runs["off"]["decoder_layers_checkpointed"] == 0 and runs["on"]["decoder_layers_checkpointed"] == 2
    assert runs["on"]["loss"] == pytest.approx(runs["off"]["loss"], rel=1e-5)
    for r in runs.values():
        assert r["step_peak_above_before_kib"] > 0
        assert r["peak_rss_during_step_kib"] >= r["rss_before_step_kib"]
    res = report["results"]["glibc_default"]
    peaks = {c: res[c]["step_peak_above_before_mib"]["median"] for c in ("off", "on")}
    assert res["ratio_step_peak_on_over_off"] == pytest.approx(peaks["on"] / peaks["off"])
    assert report["model"]["llm"]["layers"] == 2 and report["model"]["llm"]["params"] > 0
