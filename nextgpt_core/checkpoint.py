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
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

from .errors import CheckpointError
from .folders import CHECKPOINT as CHECKPOINT_FOLDER
from .interfaces import CONFIG_FILE, WEIGHTS_FILE, Component, _target_of, load_state_strict
from .lora import lora_state_dict
from .serialization import atomic_directory, read_safetensors, sha256_file, write_safetensors

if TYPE_CHECKING:
    from .model import NextGPT

__all__ = ["OPTIONAL_PARTS", "PARTS", "confined_path", "load_checkpoint", "read_manifest", "save_checkpoint"]

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
    state: "Mapping[str, torch.Tensor] | None" = None,
    token_rows: "Mapping[str, torch.Tensor] | None" = None,
) -> Path:
    """Write the chosen trainable ``parts`` of ``model`` to ``directory`` atomically; returns the path.

    ``state`` and ``token_rows`` write given tensors instead of reading them from ``model``, for a model whose
    parameters are sharded (FSDP2: its modules hold DTensor shards): ``state`` maps ``model.state_dict()`` names
    of the projectors and LoRA tensors to full tensors; ``token_rows`` is ``{"ids", "embed_tokens"[, "lm_head"]}``
    (:meth:`~nextgpt_core.training.trainable.TrainableSet.export_rows`).

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
                _save_component(proj, tmp / "input_projectors" / name, _under(state, f"input_projectors.{name}."))
        if "output_projectors" in parts:
            for key, projs in model.output_projectors.items():
                for name, proj in projs.items():
                    _save_component(proj, tmp / "output_projectors" / key / name,
                                    _under(state, f"output_projectors.{key}.{name}."))
        if "lora" in parts:
            lora = lora_state_dict(model.llm) if state is None else {
                k: v for k, v in (_under(state, "llm.") or {}).items() if "lora_" in k}
            if lora:
                (tmp / "lora").mkdir()
                write_safetensors(lora, tmp / "lora" / "adapter.safetensors")
                (tmp / "lora" / "config.json").write_text(model.composition.lora.model_dump_json(indent=2))
        if "token_rows" in parts and model.tokens.added:
            if token_rows is not None:
                rows = dict(token_rows)
            else:
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


def _save_component(component: Component, directory: Path, state_dict: "dict[str, torch.Tensor] | None") -> None:
    """``component.save_pretrained(directory)``, with the given tensors when there are some (a component class that
    overrides ``save_pretrained`` without ``state_dict`` still saves as before when nothing is sharded)."""
    if state_dict is None:
        component.save_pretrained(directory)
    else:
        component.save_pretrained(directory, state_dict=state_dict)


def _under(state: "Mapping[str, torch.Tensor] | None", prefix: str) -> "dict[str, torch.Tensor] | None":
    """The entries of ``state`` below ``prefix``, the prefix removed (``None`` when ``state`` is)."""
    if state is None:
        return None
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


_DIGEST = re.compile(r"^[0-9a-f]{64}$")
#: folders a checkpoint may hold besides its parts, listed and hashed in the manifest but not loaded into the model
EXTRA_FOLDERS = ("trainer_state",)


def add_to_manifest(directory: "str | os.PathLike[str]", files: Iterable[str]) -> None:
    """List more files (relative paths inside :data:`EXTRA_FOLDERS`) in ``directory``'s manifest with their sha256,
    so that they are verified with the rest (the trainer's state next to a ``step-<k>`` checkpoint)."""
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    for rel in files:
        if rel.split("/")[0] not in EXTRA_FOLDERS:
            raise ValueError(f"{rel}: only files under {', '.join(EXTRA_FOLDERS)} can be added to a manifest")
        manifest["files"][rel] = sha256_file(confined_path(directory, rel))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
#: the files of each part folder (``<folder>`` is one component's folder below the part)
_COMPONENT_FILES = (CONFIG_FILE, WEIGHTS_FILE)


def _fail(where: "str | os.PathLike[str]", message: str) -> CheckpointError:
    return CheckpointError(f"{os.fspath(where)}: {message}")


def confined_path(directory: Path, rel: Any) -> Path:
    """``directory / rel`` for a manifest entry, which must be a plain relative path that stays inside
    ``directory`` once every symbolic link is followed; else :class:`CheckpointError`."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel or rel.startswith("/"):
        raise _fail(directory, f"manifest entry {rel!r} is not a relative path inside the checkpoint")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _fail(directory, f"manifest entry {rel!r} is not a plain relative path (no '..', '.', or empty parts)")
    path = directory.joinpath(*parts)
    root = directory.resolve()
    real = path.resolve()
    if root not in real.parents:
        raise _fail(directory, f"{rel} leads outside the checkpoint folder (to {real}); refusing to read it")
    return path


def read_manifest(directory: "str | os.PathLike[str]", *, verify: bool = True) -> dict[str, Any]:
    """Read and (by default) verify a checkpoint's manifest.

    Every part of it is checked, each problem one :class:`CheckpointError` line: the JSON, its ``format`` and
    ``version``, ``parts`` (a list of known part names), ``files`` (a mapping of relative paths to sha256 hex
    digests, each path confined to the folder, symbolic links included); with ``verify`` every listed file must be
    a regular file whose sha256 matches.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; not a nextgpt checkpoint")
    confined_path(directory, MANIFEST)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"malformed JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(manifest, dict):
        raise _fail(path, f"holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path}: version {manifest.get('version')!r}, this nextgpt reads {VERSION}")
    parts = manifest.get("parts", [])
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise _fail(path, f"'parts' must be a list of part names, got {parts!r:.80}")
    unknown = [p for p in parts if p not in PARTS + OPTIONAL_PARTS]
    if unknown:
        raise CheckpointError(f"{path}: unknown part(s) {unknown}; this nextgpt reads {', '.join(PARTS + OPTIONAL_PARTS)}")
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise _fail(path, f"'files' must map relative paths to sha256 digests, got a {type(files).__name__}")
    for rel, digest in files.items():
        file = confined_path(directory, rel)
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise _fail(path, f"the sha256 of {rel} is not 64 hex digits ({digest!r:.80})")
        if not verify:
            continue
        if not file.is_file():
            raise CheckpointError(f"{directory}: {rel} is listed in the manifest but missing")
        if sha256_file(file) != digest:
            raise CheckpointError(f"{directory}: {rel} does not match its sha256 in the manifest (corrupt or edited)")
    return manifest


def _plan(directory: Path, manifest: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Path]]:
    """Group the manifest's files by what they load into: ``("input_projectors", name)``,
    ``("output_projectors", modality, conditioning)``, ``("lora",)``, ``("token_rows",)``, ``("embeddings",)`` ->
    ``{file name: path}``. A file in a part folder that the manifest does not list, a listed file that belongs to no
    part, or a part the manifest's ``parts`` does not declare is an error."""
    files: dict[str, str] = manifest.get("files", {})
    depth = {"input_projectors": 2, "output_projectors": 3, "lora": 1, "token_rows": 1, "embeddings": 1}
    names = {"lora": ("adapter.safetensors", CONFIG_FILE), "token_rows": ("rows.safetensors", CONFIG_FILE),
             "embeddings": (EMBEDDINGS_FILE, CONFIG_FILE)}
    plan: dict[tuple[str, ...], dict[str, Path]] = {}
    for rel in files:
        parts = rel.split("/")
        part = parts[0]
        if part in EXTRA_FOLDERS and len(parts) > 1:
            continue  # verified with the rest, read by their owner (the trainer), not loaded into the model
        if part == MANIFEST or part not in depth:
            raise _fail(directory, f"the manifest lists {rel}, which is no part of a nextgpt checkpoint")
        if part not in manifest.get("parts", []):
            raise _fail(directory, f"the manifest lists {rel} but not the part {part!r} in 'parts'")
        if len(parts) != depth[part] + 1 or parts[-1] not in names.get(part, _COMPONENT_FILES):
            raise _fail(directory, f"the manifest lists {rel}, which is no file of the part {part!r}")
        plan.setdefault(tuple(parts[:-1]), {})[parts[-1]] = directory.joinpath(*parts)
    for part in depth:
        root = directory / part
        if not root.is_dir():
            continue
        for file in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
            rel = file.relative_to(directory).as_posix()
            if rel not in files:
                raise _fail(directory, f"{rel} is not listed in the manifest (added after the checkpoint was written?); "
                                       "nextgpt loads only what the manifest lists and hashes")
    return plan


def _read_config(path: Path) -> dict[str, Any]:
    """A part's ``config.json`` as a dict; malformed JSON or another type is one :class:`CheckpointError` line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "missing (every part folder holds a config.json listed in the manifest)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"malformed JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise _fail(path, f"holds a JSON {type(data).__name__}, not an object")
    return data


def _tensor_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` from a safetensors header, reading no tensor data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            out = {}
            for key in fh.keys():
                view = fh.get_slice(key)
                out[key] = (tuple(int(d) for d in view.get_shape()), str(view.get_dtype()))
            return out
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise _fail(path, f"not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc


def _check_shapes(path: Path, expected: dict[str, tuple[int, ...]], *, what: str, subset: bool = False) -> None:
    """The file's tensor names and shapes equal ``expected`` (or a subset of it), checked from the header."""
    found = _tensor_shapes(path)
    missing = [] if subset else sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{k} {found[k][0]} vs model {tuple(expected[k])}" for k in set(found) & set(expected)
                    if found[k][0] != tuple(expected[k]))
    if missing or unexpected or shapes:
        problems = [f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
                    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if items]
        raise _fail(path, f"{what} do not fit the model (read from the file's header; nothing loaded): " + "; ".join(problems))


def load_checkpoint(model: "NextGPT", directory: "str | os.PathLike[str]") -> dict[str, Any]:
    """Load a checkpoint into ``model``: exactly the files its manifest lists and hashes, strictly.

    Before any tensor is read, and without importing anything a file names: the manifest is verified
    (:func:`read_manifest`), a file in a part folder that it does not list is an error, each component's
    ``config.json`` must name the class and config the composition builds, and every safetensors header must
    hold the model's names and shapes. A part the model does not have, a class, config or shape mismatch, or a
    token whose id differs is one :class:`CheckpointError` line (nothing is silently skipped). Returns the
    manifest.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    plan = _plan(directory, manifest)
    for group in sorted(plan):
        files = plan[group]
        where = directory.joinpath(*group)
        if group[0] == "input_projectors":
            if group[1] not in model.input_projectors:
                raise _fail(where, f"the model has no input projector {group[1]!r} (has {', '.join(model.input_projectors)})")
            _load_into(model.input_projectors[group[1]], where, files)
        elif group[0] == "output_projectors":
            key, name = group[1], group[2]
            if key not in model.output_projectors:
                raise _fail(directory / "output_projectors" / key, f"the model generates no {key!r}")
            if name not in model.output_projectors[key]:
                raise _fail(where, f"modality {key!r} has no output projector for {name!r}")
            _load_into(model.output_projectors[key][name], where, files)
    if ("lora",) in plan:
        _load_lora(model, directory / "lora", plan[("lora",)], manifest)
    if ("embeddings",) in plan:
        _load_embeddings(model, directory / "embeddings", plan[("embeddings",)])
    if ("token_rows",) in plan:
        _load_rows(model, directory / "token_rows", plan[("token_rows",)])
    return manifest


def _load_lora(model: "NextGPT", folder: Path, files: dict[str, Path], manifest: dict[str, Any]) -> None:
    lora_file = files.get("adapter.safetensors")
    if lora_file is None:
        raise _fail(folder, "the manifest lists no adapter.safetensors")
    if not model.has_lora:  # the composition has no LoRA: wrap the LLM as the checkpoint's run did
        model.enable_lora(_lora_settings(folder.parent, manifest))
    elif CONFIG_FILE in files:
        saved = _read_config(files[CONFIG_FILE])
        mine = model.composition.lora.model_dump(mode="json")
        # target modules left unset mean the architecture's defaults: the tensor check below decides then
        keys = ("r", "alpha", "target_modules") if mine.get("target_modules") else ("r", "alpha")
        differ = [f"{k} {saved.get(k)!r} vs {mine[k]!r}" for k in keys
                  if k in saved and json.loads(json.dumps(saved[k])) != json.loads(json.dumps(mine[k]))]
        if differ:
            raise _fail(files[CONFIG_FILE], f"LoRA settings differ from the composition's [lora]: {', '.join(differ)}")
    own = lora_state_dict(model.llm)
    _check_shapes(lora_file, {k: tuple(v.shape) for k, v in own.items()}, what="LoRA tensors")
    state = read_safetensors(lora_file)
    model.llm.load_state_dict(state, strict=False)


def _load_rows(model: "NextGPT", folder: Path, files: dict[str, Path]) -> None:
    rows_file = files.get("rows.safetensors")
    if rows_file is None or CONFIG_FILE not in files:
        raise _fail(folder, "the manifest must list rows.safetensors and config.json")
    config = _read_config(files[CONFIG_FILE])
    if config.get("tokens") != model.tokens.added:
        raise CheckpointError(
            f"{rows_file}: added tokens differ from the model's ({config.get('tokens')} vs {model.tokens.added})"
        )
    emb = model.llm.get_input_embeddings().weight
    head_module = model.llm.get_output_embeddings()
    untied = head_module is not None and head_module.weight.data_ptr() != emb.data_ptr()
    n = len(model.tokens.new_ids)
    expected = {"ids": (n,), "embed_tokens": (n, emb.shape[1])}
    if untied:
        expected["lm_head"] = (n, head_module.weight.shape[1])
    found = _tensor_shapes(rows_file)
    if "lm_head" in found and not untied:
        raise _fail(rows_file, "holds lm_head rows but the model's LM head is tied to its input embedding")
    _check_shapes(rows_file, expected, what="token rows", subset=True)  # lm_head rows are optional when untied
    missing = [k for k in ("ids", "embed_tokens") if k not in found]
    if missing:
        raise _fail(rows_file, f"token rows lack {missing}")
    rows = read_safetensors(rows_file)
    ids = rows["ids"]
    if ids.dtype not in (torch.int64, torch.int32) or ids.tolist() != list(model.tokens.new_ids):
        raise _fail(rows_file, f"ids {ids.tolist()[:8]} are not the model's added token ids {list(model.tokens.new_ids)[:8]}")
    ids = ids.long()
    with torch.no_grad():
        emb[ids] = rows["embed_tokens"].to(emb.dtype)
        if "lm_head" in rows:
            head = head_module.weight
            head[ids] = rows["lm_head"].to(head.dtype)


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


def _load_embeddings(model: "NextGPT", folder: Path, files: dict[str, Path]) -> None:
    if EMBEDDINGS_FILE not in files or CONFIG_FILE not in files:
        raise _fail(folder, f"the manifest must list {EMBEDDINGS_FILE} and {CONFIG_FILE}")
    config = _read_config(files[CONFIG_FILE])
    where = files[EMBEDDINGS_FILE]
    if config.get("tokens") != model.tokens.added:
        raise CheckpointError(f"{where}: added tokens differ from the model's ({config.get('tokens')} vs {model.tokens.added})")
    emb = model.llm.get_input_embeddings().weight
    head_module = model.llm.get_output_embeddings()
    targets = {"embed_tokens": emb}
    if head_module is not None and head_module.weight.data_ptr() != emb.data_ptr():
        targets["lm_head"] = head_module.weight
    _check_shapes(where, {k: tuple(v.shape) for k, v in targets.items()}, what="embedding matrices")
    tensors = read_safetensors(where)
    with torch.no_grad():
        for name, weight in targets.items():
            weight.copy_(tensors[name].to(weight.dtype))


def _load_into(component: Component, directory: Path, files: dict[str, Path]) -> None:
    """Load one component's folder into ``component``: its ``config.json`` must name the component's own class and
    config (compared as text: nothing it names is imported, nothing is built), then its weights' header must hold
    the component's names and shapes, and only then are the tensors read."""
    if CONFIG_FILE not in files:
        raise _fail(directory, f"the manifest lists no {CONFIG_FILE} for this component")
    payload = _read_config(files[CONFIG_FILE])
    target, config = payload.get("target"), payload.get("config")
    if not isinstance(target, str) or not isinstance(config, dict):
        raise _fail(files[CONFIG_FILE], "malformed component config (needs a 'target' string and a 'config' object)")
    own_target = _target_of(type(component))
    own_config = json.loads(json.dumps(component.config.model_dump(mode="json")))
    if target != own_target or config != own_config:
        held = target.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        raise CheckpointError(
            f"{directory}: holds a {held} {_short(config)} but the composition builds "
            f"a {type(component).__name__} {_short(own_config)}"
        )
    module = component._state_module()
    if module is None:
        return
    if WEIGHTS_FILE not in files:
        raise _fail(directory, f"the manifest lists no {WEIGHTS_FILE} for this component")
    own = module.state_dict()
    _check_shapes(files[WEIGHTS_FILE], {k: tuple(v.shape) for k, v in own.items()}, what="weights")
    load_state_strict(module, read_safetensors(files[WEIGHTS_FILE]), where=str(files[WEIGHTS_FILE]))


def _lora_settings(directory: Path, manifest: dict[str, Any]) -> Any:
    """The LoRA settings a checkpoint was trained with: ``lora/config.json``, else the manifest's composition."""
    from pydantic import ValidationError

    from .composition import LoRASettings

    config = directory / "lora" / "config.json"
    candidates = []
    if config.is_file():
        try:
            candidates.append(json.loads(config.read_text()))
        except ValueError:
            pass
    candidates.append((manifest.get("composition_settings") or {}).get("lora"))
    for data in candidates:
        try:
            return LoRASettings.model_validate(data).model_copy(update={"enabled": True})
        except ValidationError:
            continue
    raise CheckpointError(f"{directory}: the checkpoint has LoRA weights but neither lora/config.json nor the manifest "
                          "says how they were made (r, alpha, target modules)")


def _short(config: Any, limit: int = 300) -> str:
    text = json.dumps(config, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
