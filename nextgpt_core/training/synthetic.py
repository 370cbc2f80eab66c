"""Small synthetic captioned datasets for tests, examples and benchmarks, drawn from the toy world.

:func:`make_synthetic_dataset` draws items from the installed plugins' toy-world parts
(:class:`~nextgpt_core.toy.contract.ToyModality`, gathered by :class:`~nextgpt_core.toy.world.ToyWorld`): each
part renders an item of its own in-memory media type with exact attributes and its canonical caption, and the
modality's ``MediaIO`` (``ModalitySpec.media_io`` in the registry) writes it. This module names no modality and
imports no plugin: whatever toy-world parts are installed can be drawn. Only training combinations are drawn (a
part's held-out combinations never are: synthetic data is training data).

Written under ``folder``:

* ``media/<key>_<i>.<ext>``: the files (``ext``: the modality's ``output_extension``, else its first extension);
* ``synthetic.jsonl`` (our format): per item one captioning sample, and per item of a modality that can be
  generated one generation sample;
* one X-caption file per modality (``{"caption", "<id field>", "<key>_name"}`` rows): the official name where the
  official release has one (:data:`XCAPTION_FILES`: ``cc3m.json``, ``webvid.json``, ``audiocap.json``), else
  ``xcaption_<key>.json``.

Everything is a deterministic function of ``seed`` (and of the installed parts): the same arguments give
byte-identical dataset files and the same decoded media. Captions are the parts' captions, e.g. ``"a large red
circle on the left on a white background"`` or ``"a beeping high sine tone going up"``: compositional, so a model
can learn them from the pixels and samples.

Example:
    >>> import tempfile
    >>> ds = make_synthetic_dataset(tempfile.mkdtemp(), n_per_modality=2)
    >>> all(len(items) == 2 for items in ds.items.values()), sorted(ds.xcaption) == sorted(ds.items)
    (True, True)
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "XCAPTION_FILES",
    "SyntheticDataset",
    "SyntheticItem",
    "make_synthetic_dataset",
    "xcaption_layout",
]

#: The official X-caption pair files (data about the official NExT-GPT release, not about our plugins): modality
#: -> (file name, the row's id field). Every other modality gets ``xcaption_<key>.json`` with an ``id`` field.
XCAPTION_FILES: dict[str, tuple[str, str]] = {
    "image": ("cc3m.json", "id"),
    "video": ("webvid.json", "id"),
    "audio": ("audiocap.json", "audio_id"),
}


def xcaption_layout(key: str) -> tuple[str, str, str]:
    """``(file name, id field, name field)`` of modality ``key``'s X-caption file: the official ones of
    :data:`XCAPTION_FILES`, else ``("xcaption_<key>.json", "id", "<key>_name")``."""
    name, id_field = XCAPTION_FILES.get(key, (f"xcaption_{key}.json", "id"))
    return name, id_field, f"{key}_name"


@dataclass(frozen=True)
class SyntheticItem:
    """One synthetic media file: ``modality``, its ``caption``, its ``path`` (under the media folder) and the
    toy-world attributes it was rendered from (``{"shape": "circle", "colour": "red", ...}``; the part's
    :meth:`~nextgpt_core.toy.contract.ToyModality.caption` of them is ``caption``)."""

    modality: str
    caption: str
    path: Path
    attributes: dict[str, str]


@dataclass
class SyntheticDataset:
    """What :func:`make_synthetic_dataset` wrote.

    Attributes:
        root: the folder; media: ``root/media`` (the media root of every dataset file).
        jsonl: ``root/synthetic.jsonl``: for every item one captioning sample (user: media + prompt, assistant:
            caption), then, if its modality can be generated, one generation sample (user: a request naming the
            caption, assistant: text + a ``generate`` target with the caption and the item's file).
        xcaption: modality -> its X-caption file (``cc3m.json`` / ``webvid.json`` / ``audiocap.json`` /
            ``xcaption_<key>.json``).
        items: modality -> the items, in order.
        skipped: modality -> why it was not made (its plugin or its toy-world part is not installed, or does not
            load).
    """

    root: Path
    media: Path
    jsonl: Path
    xcaption: dict[str, Path] = field(default_factory=dict)
    items: dict[str, list[SyntheticItem]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class _Skip(Exception):
    pass


def _load(registry: Any, key: str) -> tuple[Any, Any, str]:
    """``(toy-world part, MediaIO, file suffix)`` of ``key``, or :class:`_Skip` saying why not."""
    from nextgpt_registry import RegistryError, resolve_target

    from ..errors import ConfigError
    from ..toy.world import ToyWorld

    if key not in registry.modalities:
        raise _Skip(f"{key} skipped: no installed plugin provides the modality {key!r} "
                    f"(installed: {', '.join(registry.modalities) or 'none'})")
    if key not in registry.toy_worlds:
        raise _Skip(f"{key} skipped: the plugin of {key!r} registers no toy-world part (nextgpt_register_toy_world)")
    spec = registry.modality(key)
    try:
        part = ToyWorld.installed(registry, keys=[key]).parts[key]
        io = resolve_target(spec.media_io)()
    except (ConfigError, RegistryError, ImportError) as exc:
        raise _Skip(f"{key} skipped: its plugin does not load ({exc})") from exc
    suffix = spec.output_extension or (spec.extensions[0] if spec.extensions else "")
    return part, io, suffix


def make_synthetic_dataset(
    folder: str | os.PathLike[str],
    n_per_modality: int = 8,
    seed: int = 0,
    modalities: Iterable[str] | None = None,
    *,
    registry: Any = None,
    combinations: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
    caption_prompt: str = "generate a caption",
) -> SyntheticDataset:
    """Write ``n_per_modality`` captioned toy-world items per modality under ``folder/media`` and the dataset files.

    Args:
        folder: output folder (created).
        n_per_modality: items per modality. The modality's training combinations cycle in a seeded order, so with
            ``n`` at least their number every training caption occurs (and none twice before all have).
        seed: everything (the order of the combinations, every rendering's variation) derives from it; each
            modality draws from its own generator, so adding or skipping one does not change the others.
        modalities: modality keys; ``None``: every modality of ``registry`` with a toy-world part (registration
            order). One whose plugin or toy-world part is not installed (or fails to load) is skipped and said in
            ``skipped``.
        registry: the plugins to draw from (default: the installed ones, :func:`~nextgpt_core.plugins.get_registry`).
        combinations: per modality, the attribute dicts to draw from instead of every training combination (e.g. a
            subset, for a measurement whose held-out renderings must show the captions it trained on).
        caption_prompt: the user's instruction of the captioning samples in ``synthetic.jsonl``.

    Returns:
        :class:`SyntheticDataset` with the paths written.

    Raises:
        ValueError: ``combinations`` names a held-out combination, or one the part does not have.
    """
    from ..toy.world import phrasings

    if registry is None:
        from ..plugins import get_registry

        registry = get_registry()
    root = Path(folder)
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    out = SyntheticDataset(root=root, media=media, jsonl=root / "synthetic.jsonl")
    keys = list(modalities) if modalities is not None else [k for k in registry.modalities if k in registry.toy_worlds]
    parts: dict[str, Any] = {}
    for key in keys:
        try:
            part, io, suffix = _load(registry, key)
        except _Skip as exc:
            out.skipped[key] = str(exc)
            continue
        parts[key] = part
        combos = _training_combinations(part, (combinations or {}).get(key))
        rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
        order = [combos[i] for i in rng.permutation(len(combos))]
        items = []
        for i in range(n_per_modality):
            attrs = order[i % len(order)]
            path = Path(io.write(part.render(attrs, rng), media / f"{key}_{i:04d}{suffix}"))
            items.append(SyntheticItem(key, part.caption(attrs), path, dict(attrs)))
        out.items[key] = items
        name, id_field, name_field = xcaption_layout(key)
        rows = [{"caption": it.caption, id_field: f"{key}_{i}", name_field: it.path.name} for i, it in enumerate(items)]
        out.xcaption[key] = root / name
        (root / name).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    with open(out.jsonl, "w", encoding="utf-8") as fh:
        for key, items in out.items.items():
            part = parts[key]
            requests = phrasings(part.generate_requests, "train") or ("Show me {caption}.",)
            answer = (part.generate_answers or ("Here is {caption}.",))[0]
            for i, it in enumerate(items):
                rel = it.path.relative_to(media).as_posix()
                fh.write(json.dumps({"id": f"{key}_{i}_caption", "turns": [
                    {"role": "user", "parts": [{"media": rel, "modality": key}, {"text": caption_prompt}]},
                    {"role": "assistant", "parts": [{"text": it.caption}]}]}) + "\n")
                if not part.can_generate:
                    continue
                fh.write(json.dumps({"id": f"{key}_{i}_generate", "turns": [
                    {"role": "user", "parts": [{"text": requests[0].format(caption=it.caption)}]},
                    {"role": "assistant", "parts": [{"text": answer.format(caption=it.caption)},
                                                    {"generate": key, "caption": it.caption, "media": rel}]}]})
                         + "\n")
    return out


def _training_combinations(part: Any, wanted: Sequence[Mapping[str, str]] | None) -> list[dict[str, str]]:
    """The combinations to draw: ``wanted`` (checked: the part's own, none held out) or every training one."""
    from ..toy.contract import attributes_key

    every = part.combinations()
    if wanted is None:
        return [c for c in every if not part.held_out(c)]
    known = {attributes_key(c) for c in every}
    out = []
    for attrs in wanted:
        if attributes_key(attrs) not in known:
            raise ValueError(f"{part.key}: {dict(attrs)} is not a combination of its toy-world part")
        if part.held_out(attrs):
            raise ValueError(f"{part.key}: {part.caption(attrs)!r} is held out; synthetic data is training data")
        out.append(dict(attrs))
    if not out:
        raise ValueError(f"{part.key}: no combinations to draw from")
    return out
