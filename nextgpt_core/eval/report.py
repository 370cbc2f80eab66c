"""Writing an evaluation's results: ``results.json`` (every figure, its interval, the samples, the protocol) and
``report.md`` (a table, and a grid of examples as one PNG)."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["write_grid", "write_results"]


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
    payload = {k: v for k, v in results.items() if not k.startswith("_")}
    payload["protocol"] = protocol
    payload["versions"] = _versions()
    payload["commit"] = _commit()
    payload["machine"] = {"platform": platform.platform()}
    json_path = out / "results.json"
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
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
