"""Writing an evaluation's results: ``results.json`` (every figure, its interval, the samples, the protocol) and
``report.md`` (a table, and a grid of examples as one PNG)."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["markdown_table", "metrics_table", "write_grid", "write_results"]


def _pct(entry: Any) -> str:
    if not entry:
        return "-"
    low, high = entry["ci95"]
    return f"{100 * entry['accuracy']:.1f}% [{100 * low:.0f}, {100 * high:.0f}] (n={entry['n']})"


def markdown_table(results: dict[str, Any], variants: Sequence[str]) -> str:
    """The results as a markdown table: one row per task, one column per variant, chance and model/ceiling."""
    head = ["task", *variants, "chance", "model / ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, entry in results["tasks"].items():
        chance = entry.get("chance")
        chance_text = "-" if chance is None or (isinstance(chance, float) and math.isnan(chance)) else f"{100 * chance:.2f}%"
        ratio = entry.get("model_over_ceiling")
        cells = [task, *[_pct(entry.get(v)) for v in variants], chance_text, "-" if ratio is None else f"{ratio:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def metrics_table(results: dict[str, Any]) -> str:
    """A paper suite's metrics as a markdown table: value, 95% bootstrap interval (per-sample metrics), n, and
    what the NExT-GPT paper reports where this project has the number (else why a metric was not run)."""
    paper = results.get("paper") or {}
    lines = ["| metric | value | 95% CI | n | kind | paper (NExT-GPT) |", "|---|---|---|---|---|---|"]
    for name, entry in results["metrics"].items():
        ci = entry.get("ci95")
        kind = entry.get("kind", "")
        if entry.get("value") is None:
            kind = f"not run: {entry.get('not_run', '?')}"
        cells = [name, _value(entry.get("value")), f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "-", str(entry.get("n", "-")),
                 kind, paper.get(name, "-")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paper_about(results: dict[str, Any], protocol: dict[str, Any], commit: Any) -> list[str]:
    data = results["data"]
    skipped = len(data.get("skipped_missing_media", []))
    lines = [
        f"Composition `{protocol.get('composition')}`, {data['selected']} of the {data['in_split']} items of "
        f"{data['dataset']} {data['split']} ({'all' if results.get('limit') is None else 'drawn with the seed'}), seed "
        f"{results['seed']}, commit {commit}. Request: `{protocol.get('prompt')}`. Corpus metrics have no interval; "
        "per-sample metrics give the mean and a 95% bootstrap interval.",
    ]
    if skipped:
        lines += ["", f"{skipped} items of the split have no media file in the data folder and were left out (results.json lists them)."]
    if results.get("no_output"):
        lines += ["", f"{len(results['no_output'])} requests made no item; the metrics are over the items made."]
    return lines


def write_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path, *, scale: int = 3, width: int = 900) -> Path:
    """One PNG: per row a caption line and the previews (uint8 ``(H, W, 3)``), each scaled by ``scale``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    blocks = []
    for caption, previews in rows:
        tiles = [Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST) for p in previews]
        h = max((t.height for t in tiles), default=0) + 16
        block = Image.new("RGB", (width, h), (255, 255, 255))
        ImageDraw.Draw(block).text((2, 1), caption[:150], fill=(0, 0, 0), font=font)
        x = 2
        for t in tiles:
            block.paste(t, (x, 14))
            x += t.width + 6
        blocks.append(block)
    grid = Image.new("RGB", (width, sum(b.height for b in blocks) or 1), (255, 255, 255))
    y = 0
    for b in blocks:
        grid.paste(b, (0, y))
        y += b.height
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG", optimize=True)
    return path


def write_results(results: dict[str, Any], out: Path, *, protocol: dict[str, Any], variants: Sequence[str],
                  grid: Path | None = None) -> tuple[Path, Path]:
    """``out/results.json`` and ``out/report.md``; returns both paths."""
    from ..toy.recipe import _commit, _versions

    out.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in results.items() if not k.startswith("_") and k != "metric_versions"}
    payload["protocol"] = protocol
    payload["versions"] = {**_versions(), **results.get("metric_versions", {})}
    payload["commit"] = _commit()
    payload["machine"] = {"platform": platform.platform()}
    json_path = out / "results.json"
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    if "metrics" in results:  # a paper suite (nextgpt_core.eval.paper)
        lines = [f"# `{results['suite']}` suite", "", *_paper_about(results, protocol, payload["commit"]), "",
                 metrics_table(results), "",
                 "Seconds: " + ", ".join(f"{k} {v}" for k, v in results.get("timings", {}).items()),
                 "", "The paper's numbers and how they were measured: docs/evaluation.md (the paper suites)."]
        md_path = out / "report.md"
        md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return json_path, md_path
    if results["suite"] == "toy":
        about = (f"Composition `{protocol.get('composition')}`, {results['per_task']} samples per task, seed "
                 f"{results['seed']}, commit {payload['commit']}. Accuracy: every attribute right; 95% Wilson intervals; "
                 "held-out combinations and phrasings only.")
    else:
        rows = sum(entry["model"]["n"] for entry in results["tasks"].values())
        about = (f"Composition `{protocol.get('composition')}`, {rows} rows of `{protocol.get('suite')}`, seed "
                 f"{results['seed']}, commit {payload['commit']}. Accuracy: every check of a row holds; 95% Wilson "
                 "intervals; the per-check rates are in results.json.")
    lines = [
        f"# `{results['suite']}` suite",
        "",
        about,
        "",
        markdown_table(results, variants),
        "",
        "Seconds per variant: " + ", ".join(f"{k} {v}" for k, v in results.get("timings", {}).items()),
    ]
    if grid is not None:
        lines += ["", f"![examples]({grid.name})"]
    md_path = out / "report.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path
