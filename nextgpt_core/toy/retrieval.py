"""Retrieval beside generation in the toy world (``nextgpt toy retrieval``): galleries, indexes, a trained query.

For every generated modality whose plugin registers a ``<key>/retrieval`` decoder, this adds retrieval as a second
way to answer, with the project's own commands, on a built world (``nextgpt toy build``; its ``work/`` folder
holds the training files):

1. **gallery**: one rendering of every combination of the modality (held-out ones included: retrieval must be able
   to return what was asked), written through the plugin's ``MediaIO`` to ``OUT/gallery/<key>/``;
2. **index**: ``nextgpt index build`` with the world's own encoder of the modality (ImageBind's joint space);
3. **compose**: ``OUT/toy-retrieval.toml``, the world's composition plus a ``<key>/retrieval`` extra decoder per
   modality with a ``linear-out`` output projector (its query);
4. **stage2**: ``nextgpt cache-targets`` with this composition on the world's stage-2 files (the generators'
   caption targets, and the encoder's embedding of every target media file, once), then ``nextgpt train --stage 2``
   from the world's checkpoint on them: the query projector learns the encoder's embedding of each sample's target
   media (``targets_from_media``), the generators' projectors their caption targets, as in the world's own stage 2;
5. **package**: the trained checkpoint as ``OUT/nextgpt``, named by the composition.

``nextgpt eval --composition OUT/toy-retrieval.toml --variant model --variant retrieval`` then scores generation
and retrieval on the same held-out samples (docs/toy-world.md). No modality is named here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["build_retrieval"]


def _run(args: list[str], log: Path) -> None:
    command = [sys.executable, "-m", "nextgpt_core.cli", *args]
    env = {**os.environ, "TQDM_MININTERVAL": "5"}
    with open(log, "a", encoding="utf-8") as sink:
        sink.write("$ nextgpt " + " ".join(args) + "\n")
        sink.flush()
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        from ..errors import ConfigError

        raise ConfigError(f"`nextgpt {args[0]}` failed with exit code {done.returncode}; see {log}")


def build_retrieval(
    world: Path,
    out: Path,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Add retrieval to the built toy world ``world`` in the new folder ``out`` (see the module docstring).

    Returns the facts written to ``OUT/retrieval.json`` (gallery sizes, index and training facts, seconds).

    Raises:
        ConfigError: ``world`` is not a built world with its ``work/`` folder, ``out`` is not new or empty, or no
            installed plugin offers a retrieval decoder for a modality the world generates.
    """
    from ..errors import ConfigError
    from ..plugins import get_registry
    from .world import ToyWorld

    world, out = Path(world).resolve(), Path(out).resolve()
    data = world / "work" / "data"
    if not (world / "toy.toml").is_file() or not (world / "manifest.json").is_file() or not (data / "media").is_dir():
        raise ConfigError(f"{world}: not a built toy world with its work/ folder (build one with `make toy-world`)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: not empty; give a new folder")
    registry = get_registry()
    toy = ToyWorld.installed(registry, keys=json.loads((world / "manifest.json").read_text(encoding="utf-8"))["modalities"])
    keys = [k for k, p in toy.parts.items() if p.can_generate and f"{k}/retrieval" in registry.components]
    if not keys:
        raise ConfigError("no installed plugin offers a retrieval decoder for a modality this world generates")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "retrieval.log"
    facts: dict[str, Any] = {"world": str(world), "modalities": keys, "steps": steps, "batch_size": batch_size,
                             "lr": lr, "seed": seed}
    started = time.perf_counter()

    # 1-2. a gallery of every combination, and its index made with the world's own encoder
    from nextgpt_registry import resolve_target

    for key in keys:
        part, spec = toy.parts[key], registry.modality(key)
        media_io = resolve_target(spec.media_io)()
        folder = out / "gallery" / key
        folder.mkdir(parents=True)
        combos = toy.combinations(key)
        for index, attrs in enumerate(combos):
            rng = np.random.default_rng([seed, index, sum(map(ord, key))])
            media_io.write(part.render(attrs, rng), folder / f"{key}_{index:04d}{spec.output_extension or spec.extensions[0]}")
        say(f"gallery/{key}: {len(combos)} items")
        _run(["index", "build", str(folder), "--modality", key, "--composition", str(world / "toy.toml"),
              "--out", str(out / "index" / key)], log)
        facts[f"gallery_{key}"] = len(combos)

    # 3. the composition: the world's, its paths made absolute, plus a retrieval decoder per modality
    text = (world / "toy.toml").read_text(encoding="utf-8").replace("${COMPOSITION_DIR}", str(world))
    text = text.replace('name = "toy"', 'name = "toy-retrieval"', 1)
    text += "".join(
        f'\n[[modalities.{k}.extra_decoders]]\ndecoder = {{ id = "{k}/retrieval", options = {{ index = '
        f'"${{COMPOSITION_DIR}}/index/{k}" }} }}\noutput_projector = "linear-out"\n' for k in keys)
    composition = out / "toy-retrieval.toml"
    composition.write_text(text, encoding="utf-8")

    # 4. stage 2 from the world's checkpoint, on the world's stage-2 files, with its targets cached once: the
    # generators' caption encodings and each target media file's embedding by the encoder (the queries' targets)
    files = [a for k in toy.parts if toy.parts[k].can_generate for a in ("--data", str(data / f"xcaption_{k}.json"))]
    _run(["cache-targets", *files, "--media-root", str(data / "media"), "--composition", str(composition),
          "--out", str(out / "targets-s2")], log)
    from ..training.targets import TargetCache

    facts["target_media"] = TargetCache(out / "targets-s2").media_counts()
    _run(["train", "--stage", "2", *files, "--media-root", str(data / "media"), "--composition", str(composition),
          "--checkpoint", str(world / "nextgpt"), "--targets", str(out / "targets-s2"),
          "--out", str(out / "stage2"), "--steps", str(steps), "--batch-size", str(batch_size), "--lr", str(lr),
          "--seed", str(seed + 20), "--checkpoint-every", str(steps)], log)
    rows = [json.loads(r) for r in (out / "stage2" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    tenth = max(1, len(rows) // 10)
    facts["stage2"] = {"steps": len(rows), "first_loss": round(sum(r["loss"] for r in rows[:tenth]) / tenth, 4),
                       "final_loss": round(sum(r["loss"] for r in rows[-tenth:]) / tenth, 4)}

    # 5. the trained parts as the composition's checkpoint
    from ..model import NextGPT

    model = NextGPT.from_composition(composition, checkpoint=out / "stage2" / f"step-{steps}")
    model.save_checkpoint(out / "nextgpt", recipe="nextgpt_core.toy.retrieval", stage=2, steps=steps)
    lines = [line for line in text.splitlines() if not line.startswith(("checkpoint =", "weights_manifest ="))]
    at = next(i for i, line in enumerate(lines) if line.startswith("seed"))
    lines.insert(at, 'checkpoint = "${COMPOSITION_DIR}/nextgpt"')
    composition.write_text("\n".join(lines) + "\n", encoding="utf-8")
    facts["seconds"] = round(time.perf_counter() - started, 1)
    (out / "retrieval.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    say(f"wrote {composition}")
    return facts
