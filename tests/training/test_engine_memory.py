"""docs/training.md's memory-per-process table is what benchmarks/engine_memory.py computes from the current
nextgpt-v0 parameter counts (built on the meta device), and the formulas rank the engines as they should."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("engine_memory", ROOT / "benchmarks" / "engine_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_process_formulas():
    m = _script()
    frozen, trained, n = 1000, 100, 4
    got = m.per_process(frozen, trained, root=50, layer=10, processes=n)
    assert got["ddp"] == 2 * frozen + 16 * trained
    assert got["zero2"] == 2 * frozen + 2 * trained + 14 * trained / n < got["zero1"] < got["ddp"]
    assert got["fsdp2"] == (2 * frozen + 16 * trained) / n + 2 * 50 + 4 * 10
    one = m.per_process(frozen, trained, root=0, layer=0, processes=1)
    assert one["ddp"] == one["zero1"] == one["zero2"] == one["fsdp2"]  # nothing to split across one process


def test_the_documented_table_is_the_computed_one():
    from nextgpt_registry import Registry

    from nextgpt_core.plugins import DEFAULT_PLUGINS

    m = _script()
    saved = json.loads((ROOT / "docs" / "benchmarks" / "engine_memory.json").read_text())
    counts = m.v0_counts(Registry.load(DEFAULT_PLUGINS, allow=["image", "video", "audio"]))  # the counts now (a changed composition or LLM makes the saved figures stale)
    doc = (ROOT / "docs" / "training.md").read_text()
    for row in saved["stages"]:
        now = counts[row["stage"]]
        assert {k: row[k] for k in now} == now, row["stage"]
        bytes_ = m.per_process(now["frozen"], now["trained"], now["root"], now["layer"], saved["processes"])
        gib = {k: round(v / m.GIB, 2) for k, v in bytes_.items()}
        assert gib == row["gib"]
        saved_ = {k: round((bytes_["ddp"] - v) / m.GIB, 2) for k, v in bytes_.items()}
        line = (f"| {row['stage']} | {row['trained']:,} | {gib['ddp']:.2f} | {gib['zero1']:.2f} (-{saved_['zero1']:.2f}) | "
                f"{gib['zero2']:.2f} (-{saved_['zero2']:.2f}) | {gib['fsdp2']:.2f} (-{saved_['fsdp2']:.2f}) |")
        assert line in doc, line
