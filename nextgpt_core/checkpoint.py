"""One checkpoint format for everything trained: a folder with a manifest, one subfolder per component.

```
manifest.json                          format, version, composition (name and settings), parts, files
                                       (path -> sha256), metadata
input_projectors/<key|shared>/         config.json + model.safetensors  (Component.save_pretrained)
output_projectors/<key>/<conditioning>/config.json + model.safetensors
lora/adapter.safetensors + config.json LoRA tensors of the LLM (peft names)
token_rows/rows.safetensors + config.json
                                       the added tokens' rows of the input embedding and the LM head
embeddings/embeddings.safetensors + config.json
                                       optional, not written by default: the FULL input-embedding and LM-head
                                       matrices (a release that trained them whole, e.g. the official v0 delta)
```
Only trained parts are written; the frozen LLM, encoders and decoders are referenced by the composition. The
folder is written to a temporary sibling and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

from .errors import CheckpointError
from .folders import CHECKPOINT as CHECKPOINT_FOLDER
from .interfaces import Component, load_state_strict
from .lora import lora_state_dict
from .serialization import atomic_directory, read_safetensors, sha256_file, write_safetensors

if TYPE_CHECKING:
    from .model import NextGPT

__all__ = ["OPTIONAL_PARTS", "PARTS", "load_checkpoint", "read_manifest", "save_checkpoint"]

FORMAT = "nextgpt-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
PARTS = ("input_projectors", "output_projectors", "lora", "token_rows")
#: parts written only when asked for by name (``parts=[..., "embeddings"]``)
OPTIONAL_PARTS = ("embeddings",)


def save_checkpoint(
    model: "NextGPT",
    directory: "str | os.PathLike[str]",
    *,
    parts: Iterable[str] = PARTS,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the chosen trainable ``parts`` of ``model`` to ``directory`` atomically; returns the path.

    An existing checkpoint at ``directory`` is replaced when ``overwrite`` (else refused); a folder that is not a
    nextgpt checkpoint, or holds files its manifest does not list, is never replaced
    (:class:`~nextgpt_core.folders.OutputFolderError`).

    ``parts`` are names of :data:`PARTS` (the default) and :data:`OPTIONAL_PARTS`: ``"embeddings"`` writes the
    whole input-embedding and LM-head matrices ``(V, H)`` (for weights trained whole; ``token_rows`` covers the
    usual case, where only the added rows change).
    """
    parts = list(parts)
    unknown = [p for p in parts if p not in PARTS + OPTIONAL_PARTS]
    if unknown:
        raise CheckpointError(f"unknown checkpoint part(s) {unknown}; parts: {', '.join(PARTS + OPTIONAL_PARTS)}")
    directory = Path(directory)
    with atomic_directory(directory, CHECKPOINT_FOLDER, overwrite=overwrite) as tmp:
        if "input_projectors" in parts:
            for name, proj in model.input_projectors.items():
                proj.save_pretrained(tmp / "input_projectors" / name)
        if "output_projectors" in parts:
            for key, projs in model.output_projectors.items():
                for name, proj in projs.items():
                    proj.save_pretrained(tmp / "output_projectors" / key / name)
        if "lora" in parts:
            lora = lora_state_dict(model.llm)
            if lora:
                (tmp / "lora").mkdir()
                write_safetensors(lora, tmp / "lora" / "adapter.safetensors")
                (tmp / "lora" / "config.json").write_text(model.composition.lora.model_dump_json(indent=2))
        if "token_rows" in parts and model.tokens.added:
            ids = torch.tensor(model.tokens.new_ids)
            rows = {"ids": ids, "embed_tokens": model.llm.get_input_embeddings().weight[ids]}
            head = model.llm.get_output_embeddings()
            if head is not None and head.weight.data_ptr() != model.llm.get_input_embeddings().weight.data_ptr():
                rows["lm_head"] = head.weight[ids]
            (tmp / "token_rows").mkdir()
            write_safetensors(rows, tmp / "token_rows" / "rows.safetensors")
            (tmp / "token_rows" / "config.json").write_text(json.dumps({"tokens": model.tokens.added}, indent=2))
        if "embeddings" in parts:
            write_embeddings(model, tmp)
        files = {
            str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "composition": model.composition.name,
            "composition_settings": model.composition.model_dump(mode="json"),
            "parts": parts,
            "files": files,
            "metadata": metadata or {},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def read_manifest(directory: "str | os.PathLike[str]", *, verify: bool = True) -> dict[str, Any]:
    """Read and (by default) verify a checkpoint's manifest: every listed file present with its hash."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; not a nextgpt checkpoint")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: malformed ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path}: version {manifest.get('version')!r}, this nextgpt reads {VERSION}")
    unknown = [p for p in manifest.get("parts", []) if p not in PARTS + OPTIONAL_PARTS]
    if unknown:
        raise CheckpointError(f"{path}: unknown part(s) {unknown}; this nextgpt reads {', '.join(PARTS + OPTIONAL_PARTS)}")
    if verify:
        for rel, digest in manifest.get("files", {}).items():
            file = directory / rel
            if not file.is_file():
                raise CheckpointError(f"{directory}: {rel} is listed in the manifest but missing")
            if sha256_file(file) != digest:
                raise CheckpointError(f"{directory}: {rel} does not match its sha256 in the manifest (corrupt or edited)")
    return manifest


def load_checkpoint(model: "NextGPT", directory: "str | os.PathLike[str]") -> dict[str, Any]:
    """Load a checkpoint into ``model`` strictly: a part the model does not have, a class or shape mismatch, or a
    token whose id differs is an error (nothing is silently skipped). Returns the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    root = directory / "input_projectors"
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if sub.name not in model.input_projectors:
                raise CheckpointError(f"{sub}: the model has no input projector {sub.name!r} (has {', '.join(model.input_projectors)})")
            _load_into(model.input_projectors[sub.name], sub)
    root = directory / "output_projectors"
    if root.is_dir():
        for key_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if key_dir.name not in model.output_projectors:
                raise CheckpointError(f"{key_dir}: the model generates no {key_dir.name!r}")
            for sub in sorted(p for p in key_dir.iterdir() if p.is_dir()):
                projs = model.output_projectors[key_dir.name]
                if sub.name not in projs:
                    raise CheckpointError(f"{sub}: modality {key_dir.name!r} has no output projector for {sub.name!r}")
                _load_into(projs[sub.name], sub)
    lora_file = directory / "lora" / "adapter.safetensors"
    if lora_file.is_file():
        state = read_safetensors(lora_file)
        own = lora_state_dict(model.llm)
        if not own:
            raise CheckpointError(f"{lora_file}: the checkpoint has LoRA weights but the composition has `lora.enabled = false`")
        _check_same_keys(own, state, str(lora_file))
        model.llm.load_state_dict(state, strict=False)
    embeddings_file = directory / "embeddings" / EMBEDDINGS_FILE
    if embeddings_file.is_file():
        _load_embeddings(model, directory / "embeddings")
    rows_file = directory / "token_rows" / "rows.safetensors"
    if rows_file.is_file():
        config = json.loads((directory / "token_rows" / "config.json").read_text())
        if config.get("tokens") != model.tokens.added:
            raise CheckpointError(
                f"{rows_file}: added tokens differ from the model's ({config.get('tokens')} vs {model.tokens.added})"
            )
        rows = read_safetensors(rows_file)
        ids = rows["ids"]
        with torch.no_grad():
            emb = model.llm.get_input_embeddings().weight
            _check_rows(rows["embed_tokens"], emb, ids, str(rows_file))
            emb[ids] = rows["embed_tokens"].to(emb.dtype)
            if "lm_head" in rows:
                head = model.llm.get_output_embeddings().weight
                _check_rows(rows["lm_head"], head, ids, str(rows_file))
                head[ids] = rows["lm_head"].to(head.dtype)
    return manifest


EMBEDDINGS_FILE = "embeddings.safetensors"


def write_embeddings(model: "NextGPT", root: Path, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``root/embeddings/``: ``embed_tokens`` ``(V, H)`` and, when untied, ``lm_head`` ``(V, H)`` (the model's
    own, or ``tensors`` with those keys), plus ``config.json`` with the added tokens and the shapes."""
    if tensors is None:
        emb = model.llm.get_input_embeddings().weight
        tensors = {"embed_tokens": emb.detach()}
        head = model.llm.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != emb.data_ptr():
            tensors["lm_head"] = head.weight.detach()
    write_embedding_files(root, tensors, model.tokens.added)


def write_embedding_files(root: Path, tensors: dict[str, torch.Tensor], added: dict[str, int]) -> None:
    """The ``embeddings`` part from tensors alone (the official converter writes it without building the LLM)."""
    folder = root / "embeddings"
    folder.mkdir()
    write_safetensors(tensors, folder / EMBEDDINGS_FILE)
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    (folder / "config.json").write_text(json.dumps({"tokens": added, "shapes": shapes}, indent=2))


def _load_embeddings(model: "NextGPT", folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    where = str(folder / EMBEDDINGS_FILE)
    if config.get("tokens") != model.tokens.added:
        raise CheckpointError(f"{where}: added tokens differ from the model's ({config.get('tokens')} vs {model.tokens.added})")
    tensors = read_safetensors(folder / EMBEDDINGS_FILE)
    emb = model.llm.get_input_embeddings().weight
    head_module = model.llm.get_output_embeddings()
    targets = {"embed_tokens": emb}
    if head_module is not None and head_module.weight.data_ptr() != emb.data_ptr():
        targets["lm_head"] = head_module.weight
    missing, unexpected = sorted(set(targets) - set(tensors)), sorted(set(tensors) - set(targets))
    shapes = [f"{k} {tuple(tensors[k].shape)} vs model {tuple(targets[k].shape)}"
              for k in set(targets) & set(tensors) if tensors[k].shape != targets[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{where}: embedding matrices do not fit: missing {missing}, unexpected {unexpected}, mis-shaped {shapes}")
    with torch.no_grad():
        for name, weight in targets.items():
            weight.copy_(tensors[name].to(weight.dtype))


def _load_into(component: Component, directory: Path) -> None:
    loaded = Component.from_pretrained(directory)
    if type(loaded) is not type(component) or loaded.config != component.config:
        raise CheckpointError(
            f"{directory}: holds a {type(loaded).__name__} {loaded.config.model_dump()} but the composition builds "
            f"a {type(component).__name__} {component.config.model_dump()}"
        )
    load_state_strict(component, loaded.state_dict(), where=str(directory))  # type: ignore[arg-type,attr-defined]


def _check_same_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> None:
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{where}: LoRA keys do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}, mis-shaped {shapes[:5]}")


def _check_rows(rows: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, where: str) -> None:
    if rows.shape != (ids.shape[0], weight.shape[1]) or int(ids.max()) >= weight.shape[0]:
        raise CheckpointError(f"{where}: token rows {tuple(rows.shape)} do not fit a {tuple(weight.shape)} matrix")
