"""The toy world's training files, written in the official NExT-GPT formats by a MosIT-style builder.

:func:`write_training_data` renders every item the dialogues mention (through each plugin's ``MediaIO``) and
writes, under one folder:

- ``xcaption_<key>.json`` per modality: X-caption pairs, the official ``cc3m`` / ``webvid`` / ``audiocap`` layout
  (``{"caption", "id", "<key>_name"}``): stage 1 reads them with ``--task caption``, stage 2 with ``--task
  generate``;
- ``t2m_<key>.json`` per generated modality: the official T2M instruction layout (``mm_name``, a human request and
  a gpt answer with ``caption`` and ``output_modality``);
- ``mosit.json``: multi-turn, modality-switching dialogues in the official MosIT layout (``<key>_list`` of
  ``{"<key>_name", "caption"}``, media as inline tags ``<Image>name</Image>`` in the human and gpt turns);
- ``media/<key>/...``: the files, named by item.

Only training combinations and training phrasings appear (the held-out ones are for evaluation alone). Everything
is a deterministic function of the settings and the seed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..training.data import mosit_generated_name
from .contract import attributes_key
from .dialogues import Dialogue, Given, Made, make_dialogues
from .world import ToyWorld

__all__ = ["TrainingFiles", "write_training_data"]


@dataclass
class TrainingFiles:
    """What :func:`write_training_data` wrote: the folder, the media root and each file by role."""

    root: Path
    media_root: Path
    xcaption: dict[str, Path] = field(default_factory=dict)
    t2m: dict[str, Path] = field(default_factory=dict)
    mosit: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)


class _MediaWriter:
    """Renders items to files once per (modality, combination, render index); names are stable."""

    def __init__(self, world: ToyWorld, registry: Any, root: Path, seed: int, variants: int) -> None:
        self.world, self.root, self.seed, self.variants = world, root, seed, variants
        self.io = {key: registry.modality(key) for key in world.parts}
        self._writers: dict[str, Any] = {}
        self.index = {key: {attributes_key(c): i for i, c in enumerate(world.combinations(key))} for key in world.parts}
        self.written: dict[str, str] = {}
        self.rng = np.random.default_rng(seed)

    def _io(self, key: str) -> Any:
        if key not in self._writers:
            from nextgpt_registry import resolve_target

            self._writers[key] = resolve_target(self.io[key].media_io)()
        return self._writers[key]

    def name(self, key: str, attrs: Mapping[str, str], *, generated: bool = False) -> str:
        """A file (relative to the media root) for a rendering of ``attrs``: one of ``variants`` per combination.

        ``generated``: the file an assistant turn makes, named as the official MosIT files name generated media
        (``mosit_i_*.jpg`` ...: the reader takes only such names in gpt turns as outputs), at the media root."""
        combo = self.index[key][attributes_key(attrs)]
        variant = int(self.rng.integers(self.variants))
        spec = self.io[key]
        suffix = spec.output_extension or spec.extensions[0]
        name = f"{key}/{key}_{combo:04d}_{variant}{suffix}"
        if generated:
            name = mosit_generated_name(key, f"{combo:04d}_{variant}") or name
        if name not in self.written:
            rng = np.random.default_rng([self.seed, combo, variant, sum(map(ord, key))])
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            self._io(key).write(self.world.parts[key].render(attrs, rng), path)
            self.written[name] = key
        return name


def _tag(key: str, name: str) -> str:
    return f"<{key.capitalize()}>{name}</{key.capitalize()}>"


def write_training_data(
    world: ToyWorld,
    out: str | os.PathLike[str],
    *,
    registry: Any = None,
    renders: Mapping[str, int] | None = None,
    dialogues: Mapping[str, int] | None = None,
    seed: int = 0,
    variants: int = 8,
    caption_prompt: str = "generate a caption",
    progress: Callable[[str], None] | None = None,
) -> TrainingFiles:
    """Write the training files of the toy world into ``out`` (created; must be empty or absent).

    Args:
        renders: X-caption rows per training combination, per modality (default 2).
        dialogues: MosIT dialogues per task (``describe``, ``generate``, ``convert``, ``edit``, ``multi``; default
            200 each) and ``t2m`` rows per generated modality (default 200).
        variants: distinct renderings per combination (files are shared between rows that draw the same one).
        caption_prompt: the stage-1 instruction of the X-caption rows (only used by the reader).

    Returns:
        :class:`TrainingFiles`.
    """
    if registry is None:
        from ..plugins import get_registry

        registry = get_registry()
    root = Path(out)
    media_root = root / "media"
    media_root.mkdir(parents=True, exist_ok=True)
    files = TrainingFiles(root=root, media_root=media_root)
    writer = _MediaWriter(world, registry, media_root, seed, variants)
    say = progress or (lambda line: None)
    renders = dict(renders or {})
    counts = {"describe": 200, "generate": 200, "convert": 200, "edit": 200, "multi": 200, "t2m": 200, **(dialogues or {})}

    # X-caption pairs: every training combination, `renders` rows each
    for key, part in world.parts.items():
        rows = []
        for attrs in world.combinations(key, "train"):
            for _ in range(renders.get(key, 2)):
                name = writer.name(key, attrs)
                rows.append({"caption": part.caption(attrs), "id": f"{key}-{len(rows)}", f"{key}_name": name})
        path = root / f"xcaption_{key}.json"
        _write_json(path, rows)
        files.xcaption[key] = path
        files.counts[f"xcaption_{key}"] = len(rows)
        say(f"xcaption_{key}.json: {len(rows)} rows")

    # T2M: a request, an answer and the made item, per generated modality
    for key, part in world.parts.items():
        if not part.can_generate or not part.generate_requests:
            continue
        rows = []
        only = ToyWorld([part])
        for d in make_dialogues(only, "generate", counts["t2m"], split="train", seed=seed + 1):
            (_, (request,)), (_, (answer, made)) = d.turns  # type: ignore[misc]
            assert isinstance(made, Made)
            rows.append({
                "mm_name": writer.name(key, made.attributes),
                "conversation": [
                    {"from": "human", "value": request, "input_modality": "text"},
                    {"from": "gpt", "value": answer, "caption": made.caption, "output_modality": key},
                ],
                "source_data": {},
            })
        path = root / f"t2m_{key}.json"
        _write_json(path, rows)
        files.t2m[key] = path
        files.counts[f"t2m_{key}"] = len(rows)
        say(f"t2m_{key}.json: {len(rows)} rows")

    # MosIT: multi-turn, modality-switching dialogues
    rows = []
    for task in ("describe", "generate", "convert", "edit", "multi"):
        made = make_dialogues(world, task, counts[task], split="train", seed=seed + 2)
        files.counts[f"mosit_{task}"] = len(made)
        rows += [_mosit_row(d, writer) for d in made]
    order = np.random.default_rng(seed).permutation(len(rows))
    rows = [rows[i] for i in order]
    files.mosit = root / "mosit.json"
    _write_json(files.mosit, rows)
    files.counts["media_files"] = len(writer.written)
    say(f"mosit.json: {len(rows)} dialogues; {len(writer.written)} media files")
    return files


def _mosit_row(dialogue: Dialogue, writer: _MediaWriter) -> dict[str, Any]:
    lists: dict[str, list[dict[str, str]]] = {}
    conversation = []
    for role, parts in dialogue.turns:
        words = []
        for part in parts:
            if isinstance(part, str):
                words.append(part)
                continue
            name = writer.name(part.modality, part.attributes, generated=isinstance(part, Made) and role == "assistant")
            if isinstance(part, (Made, Given)):
                lists.setdefault(f"{part.modality}_list", [])
                entry = {f"{part.modality}_name": name, "caption": part.caption}
                if entry not in lists[f"{part.modality}_list"]:
                    lists[f"{part.modality}_list"].append(entry)
            words.append(_tag(part.modality, name))
        conversation.append({"from": "human" if role == "user" else "gpt", "value": " ".join(words)})
    return {**lists, "conversation": conversation, "task": dialogue.task}


def _write_json(path: Path, rows: list[Any]) -> None:
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
