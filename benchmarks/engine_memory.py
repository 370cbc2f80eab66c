"""Memory per process of each training engine on the ``nextgpt-v0`` composition, computed from parameter and
optimizer-state counts (not measured: that needs the GPUs we do not have).

The counts are ``nextgpt params --composition nextgpt-v0``'s (built on the meta device, no weights): per stage, the
parameters of the training module (the LLM with its decoder layers, ImageBind's branches, the projectors and, in
stage 3, LoRA; the decoders are not on the training devices: the targets are cached) and what the stage trains.

Bytes, as the ZeRO paper counts mixed-precision training: a frozen parameter 2 (bf16); a trained one 16 (bf16
weight 2, bf16 gradient 2, fp32 master weight 4, Adam's two moments 8). With ``N`` processes:

* DDP:      ``2 F + 16 T`` (everything replicated);
* ZeRO-1:   ``2 F + 4 T + 12 T / N`` (optimizer state split);
* ZeRO-2:   ``2 F + 2 T + 14 T / N`` (gradients split too);
* FSDP2:    ``(2 F + 16 T) / N`` plus the units held whole while they run: the root unit (embeddings, LM head,
  ImageBind, projectors: everything outside the LLM's decoder layers, whole for the whole step) and two decoder
  layers (the one running and the one prefetched), at 2 bytes.

``F`` frozen and ``T`` trained parameters. Activations are left out (they depend on the batch and the sequence
length; ``--gradient-checkpointing`` cuts them, docs/training.md).

Run from the repository root (a few seconds)::

    .venv/bin/python benchmarks/engine_memory.py [--processes 8] [--out docs/benchmarks/engine_memory.json]

Writes the JSON and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "engine_memory.json"
GIB = 2**30
ENGINES = ("ddp", "zero1", "zero2", "fsdp2")


def per_process(frozen: int, trained: int, root: int, layer: int, processes: int) -> dict[str, float]:
    """Bytes per process of each engine (see the module docstring) for ``frozen`` and ``trained`` parameters, a root
    unit of ``root`` parameters and decoder layers of ``layer`` parameters, over ``processes`` processes."""
    n = processes
    return {
        "ddp": 2 * frozen + 16 * trained,
        "zero1": 2 * frozen + 4 * trained + 12 * trained / n,
        "zero2": 2 * frozen + 2 * trained + 14 * trained / n,
        "fsdp2": (2 * frozen + 16 * trained) / n + 2 * root + 2 * 2 * layer,
    }


def v0_counts(registry: Any = None) -> dict[int, dict[str, int]]:
    """Per stage: the training module's parameters, the trained ones, the root unit and one decoder layer
    (``registry``: the plugins to resolve the composition with; default: the installed ones)."""
    from nextgpt_core.composition import resolve_composition
    from nextgpt_core.hf_loading import quiet_transformers
    from nextgpt_core.official.layout import build_meta_llm, llm_config, token_plan
    from nextgpt_core.official.params import count_parameters
    from nextgpt_core.official.paths import load_with_stand_ins

    with quiet_transformers():  # the bundled full-size configs stand in for weight folders (as `nextgpt params`)
        resolved = resolve_composition(load_with_stand_ins("nextgpt-v0"), registry)
    report = count_parameters(resolved)
    _, rows = token_plan(resolved, llm_config(resolved.composition.llm))
    llm = build_meta_llm(resolved, rows, lora=True)
    layers = [m for m in llm.modules() if type(m).__name__ == "LlamaDecoderLayer"]
    layer_all = sum(p.numel() for p in layers[0].parameters())
    layer_lora = sum(p.numel() for n, p in layers[0].named_parameters() if "lora_" in n)
    llm_outside_layers = sum(p.numel() for p in llm.parameters()) - sum(
        p.numel() for m in layers for p in m.parameters())
    counted = [c for c in report.components if c.counted and c.role != "decoder"]
    out: dict[int, dict[str, int]] = {}
    for stage, trained in report.stages.items():
        with_lora = stage == 3
        module = sum(c.total for c in counted if c.role != "lora" or with_lora)
        rows_trained = next(c for c in counted if c.role == "llm").stages.get(stage, 0)  # extra row copies
        frozen = module - (trained - rows_trained)
        outside_llm = sum(c.total for c in counted if c.role not in ("llm", "lora"))
        out[stage] = {
            "module": module,
            "trained": trained,
            "frozen": frozen,
            "root": llm_outside_layers + outside_llm,
            "layer": layer_all - (0 if with_lora else layer_lora),
            "layers": len(layers),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    counts = v0_counts()
    rows: list[dict[str, Any]] = []
    for stage, c in counts.items():
        bytes_ = per_process(c["frozen"], c["trained"], c["root"], c["layer"], args.processes)
        rows.append({"stage": stage, **c, "gib": {k: round(v / GIB, 2) for k, v in bytes_.items()},
                     "saved_vs_ddp_gib": {k: round((bytes_["ddp"] - v) / GIB, 2) for k, v in bytes_.items()}})
    report = {"composition": "nextgpt-v0", "processes": args.processes,
              "bytes_per_parameter": {"frozen": 2, "trained": 16}, "stages": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"GiB per process, nextgpt-v0, {args.processes} processes (parameters and optimizer state; no activations)")
    print("| stage | trained | DDP | ZeRO-1 | ZeRO-2 | FSDP2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        g, s = r["gib"], r["saved_vs_ddp_gib"]
        print(f"| {r['stage']} | {r['trained']:,} | {g['ddp']:.2f} | {g['zero1']:.2f} (-{s['zero1']:.2f}) | "
              f"{g['zero2']:.2f} (-{s['zero2']:.2f}) | {g['fsdp2']:.2f} (-{s['fsdp2']:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
