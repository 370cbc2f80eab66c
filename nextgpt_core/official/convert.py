"""``nextgpt convert official``: the released v0 delta (``pytorch_model.pt``) -> a nextgpt checkpoint.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary
pickled objects. Every official key is mapped (:mod:`.keymap`) and checked against what the composition builds
(:mod:`.layout`): any missing, unexpected or mis-shaped key is listed and nothing is written (the official loader's
``strict=False`` silently dropped them). The checkpoint is issue A's format (manifest with sha256 per file, written
atomically): ``input_projectors/shared``, ``output_projectors/<modality>/<input>``, ``lora``, and ``embeddings``
for the full ``embed_tokens`` / ``lm_head`` matrices the release trained.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nextgpt_registry import resolve_target

from ..checkpoint import FORMAT, MANIFEST, VERSION, write_embedding_files
from ..errors import CheckpointError, WeightsNotFoundError
from ..folders import CHECKPOINT, check_output_folder
from ..interfaces import CONFIG_FILE, WEIGHTS_FILE
from ..serialization import atomic_directory, sha256_file, write_safetensors
from .keymap import OFFICIAL_OUTPUT_PROJECTORS, map_key, stage_one_two_keys
from .layout import TrainedLayout

__all__ = ["ConversionReport", "convert_official", "map_official", "read_official_file"]

_LIST = 20  # names listed per kind of problem in one error


def read_official_file(path: "str | os.PathLike[str]") -> dict[str, torch.Tensor]:
    """``{name: tensor}`` from a ``torch.save`` file, with ``weights_only=True`` (memory-mapped when possible).

    Raises:
        WeightsNotFoundError: no such file.
        CheckpointError: not a PyTorch checkpoint, truncated, holding Python objects other than tensors, or not a
            flat mapping of names to tensors.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; --delta is the released pytorch_model.pt file")
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not zipfile.is_zipfile(path):
        if head == b"PK\x03\x04":  # a zip archive's first entry but no central directory at the end: cut short
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint: a truncated torch.save file ({path.stat().st_size:,} bytes, "
                "the zip archive's end is missing); download or copy it again"
            )
        if not head.startswith(b"\x80"):  # neither torch.save's zip nor a legacy pickle
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) torch.save format
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else type(exc).__name__)
        raise CheckpointError(
            f"{path}: refused to load: it is not a plain tensor checkpoint for torch.load(weights_only=True) ({first})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or not a torch.save file: {first})") from exc
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a mapping of parameter names to tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not name -> tensor: {bad[:5]}")
    return state


def _listing(kind: str, items: list[str]) -> str:
    more = f" ... and {len(items) - _LIST} more" if len(items) > _LIST else ""
    return f"{len(items)} {kind}: {', '.join(items[:_LIST])}{more}"


def map_official(
    state: dict[str, torch.Tensor], layout: TrainedLayout, *, where: str = "<delta>",
    modality_of: dict[str, str] | None = None,
) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """Map official names to the layout's groups, strictly.

    Returns:
        ``(part, group) -> {nextgpt name: tensor}``, covering every tensor of ``layout`` exactly once.

    Raises:
        CheckpointError: a stage-1/2 file, or any missing, unexpected (unmapped, duplicate, or for a part the
            composition does not have) or mis-shaped key, all listed in one message.
    """
    stage12 = stage_one_two_keys(state)
    if stage12:
        raise CheckpointError(
            f"{where}: a stage-1/2 checkpoint ({stage12[0]!r}: saved without the LoRA wrapper); convert the released "
            "stage-3 delta, whose names start with 'llama_model.base_model.model.'"
        )
    modality_of = modality_of or OFFICIAL_OUTPUT_PROJECTORS
    out: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    source: dict[tuple[str, str, str], str] = {}
    unexpected: list[str] = []
    shapes: list[str] = []
    for name, tensor in state.items():
        target = map_key(name, modality_of)
        if target is None:
            unexpected.append(name)
            continue
        part, group, key = target
        if part == "output_projectors":
            try:
                full = layout.output_group(group)
            except ValueError as exc:
                raise CheckpointError(f"{where}: {exc}") from exc
            if full is None:
                unexpected.append(f"{name} (the composition generates no {group!r})")
                continue
            group = full
        expected = layout.groups.get((part, group), {})
        if key not in expected:
            unexpected.append(name)
            continue
        if (part, group, key) in source:
            unexpected.append(f"{name} (duplicate of {source[(part, group, key)]})")
            continue
        source[(part, group, key)] = name
        if tuple(tensor.shape) != expected[key]:
            shapes.append(f"{name} {tuple(tensor.shape)} vs {expected[key]}")
            continue
        out.setdefault((part, group), {})[key] = tensor
    missing = [
        f"{part}/{group}:{key}" if group else f"{part}:{key}"
        for (part, group), tensors in layout.groups.items()
        for key in tensors
        if (part, group, key) not in source
    ]
    if missing or unexpected or shapes:
        problems = [_listing(k, v) for k, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if v]
        raise CheckpointError(f"{where}: does not load strictly into composition {layout.composition.name!r}: " + "; ".join(problems))
    return out


@dataclass
class ConversionReport:
    """What one conversion did."""

    out: Path
    keys: int
    parameters: int
    groups: dict[str, int]  # "part/group" -> tensors written


def convert_official(
    delta: "str | os.PathLike[str]", out: "str | os.PathLike[str]", layout: TrainedLayout,
    *, modality_of: dict[str, str] | None = None, overwrite: bool = False,
) -> ConversionReport:
    """Read ``delta``, map it strictly onto ``layout`` and write a nextgpt checkpoint to ``out`` (atomically).

    ``out`` must be absent, empty, or (with ``overwrite``) a nextgpt checkpoint holding only its own files; it may
    not be the current folder, a parent of it, or hold ``delta`` (:class:`~nextgpt_core.folders.OutputFolderError`,
    raised before the file is read).

    The tensors keep the file's dtype (fp16 for the release); loading casts them to the model's.
    """
    check_output_folder(out, CHECKPOINT, overwrite=overwrite, inputs=[delta])
    state = read_official_file(delta)
    mapped = map_official(state, layout, where=str(delta), modality_of=modality_of)
    out = Path(out)
    comp = layout.composition
    with atomic_directory(out, CHECKPOINT, overwrite=overwrite, inputs=[delta]) as tmp:
        for (part, group), tensors in mapped.items():
            if part in ("input_projectors", "output_projectors"):
                component = layout.components[(part, group)]
                klass = resolve_target(component.target)
                folder = tmp / part / group
                folder.mkdir(parents=True)
                payload = {"target": component.target, "config": klass.make_config(component.options).model_dump(mode="json")}
                (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
                write_safetensors(tensors, folder / WEIGHTS_FILE)
            elif part == "lora":
                (tmp / "lora").mkdir()
                write_safetensors(tensors, tmp / "lora" / "adapter.safetensors")
                (tmp / "lora" / "config.json").write_text(comp.lora.model_dump_json(indent=2))
            elif part == "embeddings":
                write_embedding_files(tmp, tensors, layout.added)
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        parts = sorted({part for part, _ in mapped})
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "composition": comp.name,
            "composition_settings": comp.model_dump(mode="json"),
            "parts": parts,
            "files": files,
            "metadata": {
                "converted_from": str(Path(delta).expanduser().resolve()),
                "official_keys": len(state),
                "official_parameters": sum(t.numel() for t in state.values()),
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return ConversionReport(
        out=out,
        keys=len(state),
        parameters=sum(t.numel() for t in state.values()),
        groups={f"{p}/{g}" if g else p: len(t) for (p, g), t in mapped.items()},
    )


def layout_for(composition: Any, registry: Any = None) -> TrainedLayout:
    """The trained layout of a composition (built-in name, path or object), local paths unset -> stand-ins."""
    from ..composition import resolve_composition
    from ..hf_loading import quiet_transformers
    from .layout import trained_layout
    from .paths import load_with_stand_ins

    comp = load_with_stand_ins(composition)
    with quiet_transformers():
        return trained_layout(resolve_composition(comp, registry))
