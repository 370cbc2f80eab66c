"""The toy world's build, phase by phase: wall time, CPU time, steps and samples per second.

Reads the ``manifest.json`` that ``nextgpt toy build`` wrote (every phase's facts are recorded by the run itself,
in its worker processes, one torch thread each) and writes ``docs/benchmarks/toy_world.json`` plus a markdown table.
Run it on a world you built:

    .venv/bin/python benchmarks/toy_world.py build/toy-world     # default: the built-in world in the package

Samples per step come from the recipe's settings in the manifest (batch sizes); a phase made of several trainings
(a decoder: autoencoder, then denoiser, then vocoder) lists each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    settings = manifest["settings"]
    batch = {
        "encoders": settings["encoders"]["batch_size"],
        "language": settings["language"]["batch_size"],
        "stage1": settings["stage1"]["batch_size"],
        "stage2": settings["stage2"]["batch_size"],
        "stage3": settings["stage3"]["batch_size"],
    }
    rows = []
    for name, facts in manifest["phases"].items():
        row = {"phase": name, "wall_s": facts.get("wall_seconds"), "cpu_s": facts.get("cpu_seconds")}
        steps = facts.get("steps")
        if steps and name in batch and facts.get("wall_seconds"):
            row["steps"] = steps
            row["samples_per_s"] = round(steps * batch[name] / facts["wall_seconds"], 2)
        parts = {k: v for k, v in facts.items() if isinstance(v, dict) and "steps" in v and "seconds" in v}
        if parts:
            row["trainings"] = {k: {"steps": v["steps"], "seconds": v["seconds"], "final_loss": v.get("final_loss")}
                                for k, v in parts.items()}
        rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    world = Path(argv[1]) if len(argv) > 1 else ROOT / "nextgpt_core" / "compositions" / "toy"
    manifest = json.loads((world / "manifest.json").read_text())
    rows = _rows(manifest)
    out = {"world": str(world), "commit": manifest.get("commit"), "machine": manifest.get("machine"),
           "versions": manifest.get("versions"), "total_wall_s": manifest.get("wall_seconds"), "phases": rows}
    target = ROOT / "docs" / "benchmarks" / "toy_world.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"toy world build: {manifest.get('wall_seconds', 0) / 60:.1f} min wall in all (commit {manifest.get('commit')})\n")
    print("| phase | wall s | CPU s | steps | samples/s | trainings |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        trainings = "; ".join(f"{k} {v['steps']} steps {v['seconds']} s" for k, v in r.get("trainings", {}).items())
        print(f"| {r['phase']} | {r['wall_s']} | {r['cpu_s']} | {r.get('steps', '')} | {r.get('samples_per_s', '')} | {trainings} |")
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
