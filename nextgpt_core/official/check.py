"""``nextgpt check-weights``: which local weights of the ``nextgpt-v0`` composition are present, missing or
mis-shaped, without loading any model.

Checked per location (the placeholders of the composition, :data:`.paths.WEIGHTS`):

- Vicuna-7B v0 folder: ``config.json`` (valid JSON) shape fields equal the bundled Vicuna-7B v0 config (hidden 4096,
  32 layers, 32001 rows ...), ``tokenizer.model`` a readable SentencePiece model with 32000 pieces, an
  ``added_tokens.json`` (if any) that lets the modality tokens get ids 32000-32037, weight files present and not
  empty (a ``.safetensors`` file's header readable);
- ``imagebind_huge.pth``: every key and shape of ``nextgpt_core/imagebind/imagebind_huge.tsv`` (memory-mapped,
  ``weights_only``);
- each diffusers folder: ``model_index.json``, and for each model the bundled config lists, a ``config.json`` whose
  shape fields match and a weight file;
- optionally the official delta (``--delta``, every key and shape of ``nextgpt_7b_tiva_v0_delta.tsv``) and a
  converted checkpoint (``--checkpoint``, its manifest and sha256 of every file).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from .paths import WEIGHTS, WeightLocation, configs_folder

__all__ = [
    "V0_ADDED_TOKENS",
    "Finding",
    "added_tokens_problem",
    "check_all",
    "check_checkpoint",
    "check_delta",
    "check_imagebind",
    "read_key_table",
]

#: the tokens nextgpt-v0 adds, in order, from id 32000 (reference: <Img> 32000, </Img> 32001, [IMG0-3] 32002-32005,
#: [VID0-23] 32006-32029, [AUD0-7] 32030-32037)
V0_ADDED_TOKENS: tuple[str, ...] = (
    "<Img>", "</Img>", *(f"[IMG{i}]" for i in range(4)), *(f"[VID{i}]" for i in range(24)), *(f"[AUD{i}]" for i in range(8)),
)
V0_FIRST_ADDED_ID = 32000

#: config fields that set tensor shapes (compared when the bundled config has them)
SHAPE_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "projection_dim",
    "in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
    "attention_head_dim", "model_in_dim", "upsample_initial_channel", "upsample_rates", "class_embed_type",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass
class Finding:
    """One checked location: ``status`` is ``ok``, ``missing`` or ``mis-shaped``."""

    name: str
    path: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<10} {self.name:<20} {self.path}: {self.detail}"


def read_key_table(text: str) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from a key TSV (``name<TAB>shape<TAB>numel``; ``#`` comments; ``scalar`` = 0-dim)."""
    out: dict[str, tuple[int, ...]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape, _ = line.split("\t")
        out[name] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return out


def _table(package: str, name: str) -> dict[str, tuple[int, ...]]:
    return read_key_table((resources.files(package) / name).read_text())


def _compare_keys(state: dict, expected: dict[str, tuple[int, ...]], path: str, name: str) -> Finding:
    """A state dict against a key table: every key present, none extra, same shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or shapes):
        return Finding(name, path, "ok", f"all {len(expected)} keys with their shapes")
    status = "mis-shaped" if shapes or unexpected else "missing"
    parts = [f"{len(v)} {k} (e.g. {v[0]})" for k, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if v]
    return Finding(name, path, status, "; ".join(parts))


def _load_state(path: Path, name: str) -> "tuple[dict | None, Finding | None]":
    from ..errors import NextGPTError
    from .convert import read_official_file

    try:
        return read_official_file(path), None
    except NextGPTError as exc:
        return None, Finding(name, str(path), "mis-shaped", str(exc))


def check_imagebind(path: Path, name: str = "NEXTGPT_IMAGEBIND") -> Finding:
    """Every key and shape of ``imagebind_huge.pth`` (the file is memory-mapped, not read whole)."""
    if not path.is_file():
        return Finding(name, str(path), "missing", "no such file")
    state, problem = _load_state(path, name)
    return problem or _compare_keys(state, _table("nextgpt_core.imagebind", "imagebind_huge.tsv"), str(path), name)  # type: ignore[arg-type]


def check_delta(path: Path, name: str = "delta") -> Finding:
    """Every key and shape of the released ``pytorch_model.pt`` (names without ``.default.`` accepted too)."""
    if not path.is_file():
        return Finding(name, str(path), "missing", "no such file")
    state, problem = _load_state(path, name)
    if problem:
        return problem
    expected = _table("nextgpt_core.official", "nextgpt_7b_tiva_v0_delta.tsv")
    renamed = {k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight"): v
               for k, v in state.items()}  # type: ignore[union-attr]
    return _compare_keys(renamed, expected, str(path), name)


def check_checkpoint(path: Path, name: str = "checkpoint") -> Finding:
    """A converted nextgpt checkpoint: manifest present, every file matching its sha256."""
    from ..checkpoint import read_manifest
    from ..errors import CheckpointError

    if not path.is_dir():
        return Finding(name, str(path), "missing", "no such folder (run `nextgpt convert official`)")
    try:
        manifest = read_manifest(path)
    except CheckpointError as exc:
        return Finding(name, str(path), "mis-shaped", str(exc))
    return Finding(name, str(path), "ok", f"composition {manifest.get('composition')!r}, parts {', '.join(manifest.get('parts', []))}, sha256 verified")


def _shape_diff(theirs: dict, ours: dict) -> list[str]:
    return [f"{k} {theirs.get(k)!r} (expected {ours[k]!r})" for k in SHAPE_FIELDS if k in ours and theirs.get(k) != ours[k]]


def _read_json(path: Path) -> "tuple[dict | None, str | None]":
    """``(object, None)``, or ``(None, why)`` for a file that is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return None, f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: cannot read ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name}: a JSON {type(data).__name__}, not an object"
    return data, None


def _weight_problem(file: Path) -> str | None:
    """Why a weight file is unusable (empty, or a ``.safetensors`` whose header does not parse), else ``None``."""
    size = file.stat().st_size
    if size == 0:
        return f"{file.name} is empty (0 bytes)"
    if file.suffix == ".safetensors":
        with open(file, "rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length <= 0 or 8 + length > size:
                return f"{file.name} is not a safetensors file (truncated or corrupt header)"
            try:
                header = json.loads(fh.read(length))
            except (ValueError, UnicodeDecodeError):
                return f"{file.name} is not a safetensors file (its header is not JSON)"
        ends = [v["data_offsets"][1] for v in header.values() if isinstance(v, dict) and "data_offsets" in v]
        if ends and 8 + length + max(ends) > size:
            return f"{file.name} is truncated ({size:,} bytes, its header describes {8 + length + max(ends):,})"
    return None


def _weights(folder: Path) -> "tuple[bool, list[str]]":
    """``(any weight file, problems of the weight files)``."""
    if not folder.is_dir():
        return False, []
    files = [p for p in sorted(folder.iterdir()) if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    return bool(files), [problem for p in files if (problem := _weight_problem(p))]


def _has_weights(folder: Path) -> bool:
    return _weights(folder)[0]


def added_tokens_problem(
    folder: Path, base_pieces: int, tokens: "tuple[str, ...] | list[str]" = V0_ADDED_TOKENS,
    first_added_id: int = V0_FIRST_ADDED_ID,
) -> str | None:
    """Whether the folder's ``added_tokens.json`` lets ``tokens`` get the ids ``first_added_id, ...`` in order, as
    the composition demands (``[vocabulary] first_added_id``). transformers 5 adds the file's entries in the order
    of their ids right after the ``base_pieces`` of ``tokenizer.model`` (the ids written in the file are not kept);
    nextgpt then appends the tokens the file does not hold. Returns one line saying what goes wrong (a malformed
    file, an extra token such as Vicuna's ``[PAD]`` that shifts every id), or ``None``."""
    path = folder / "added_tokens.json"
    if not path.is_file():
        return None
    data, why = _read_json(path)
    if why:
        return why
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in data.items()):
        return "added_tokens.json: must map token strings to integer ids"
    assigned = {tok: base_pieces + i for i, (tok, _) in enumerate(sorted(data.items(), key=lambda kv: kv[1]))}
    next_id = base_pieces + len(assigned)
    for offset, token in enumerate(tokens):
        want = first_added_id + offset
        if token in assigned:
            got = assigned[token]
        else:
            got, next_id = next_id, next_id + 1
        if got != want:
            extra = sorted((v, k) for k, v in assigned.items() if k not in tokens)
            because = (f"it adds {[k for _, k in extra][:5]} (ids {[v for v, _ in extra][:5]})" if extra
                       else "it lists the modality tokens in another order")
            return (f"added_tokens.json: {token} would get id {got}, the composition needs {want}: {because}; "
                    "remove it (the modality tokens are added by nextgpt)")
    return None


def check_llm(folder: Path, w: WeightLocation) -> Finding:
    """A Vicuna-7B v0 Hugging Face folder."""
    if not folder.is_dir():
        return Finding(w.name, str(folder), "missing", "no such folder")
    if not (folder / "config.json").is_file():
        return Finding(w.name, str(folder), "missing", "no config.json")
    ours = json.loads((configs_folder() / w.stand_in / "config.json").read_text())  # type: ignore[operator]
    theirs, why = _read_json(folder / "config.json")
    if why:
        return Finding(w.name, str(folder), "mis-shaped", why)
    diff = _shape_diff(theirs, ours)  # type: ignore[arg-type]
    if diff:
        return Finding(w.name, str(folder), "mis-shaped", "config.json: " + "; ".join(diff))
    problems = []
    if not (folder / "tokenizer.model").is_file():
        problems.append("no tokenizer.model")
    else:
        import sentencepiece

        try:
            pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
        except (RuntimeError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return Finding(w.name, str(folder), "mis-shaped", f"tokenizer.model is not a SentencePiece model ({first})")
        if pieces != 32000:
            return Finding(w.name, str(folder), "mis-shaped", f"tokenizer.model has {pieces} pieces, Vicuna v0's has 32000")
        refused = added_tokens_problem(folder, pieces)
        if refused:
            return Finding(w.name, str(folder), "mis-shaped", refused)
    present, broken = _weights(folder)
    if broken:
        return Finding(w.name, str(folder), "mis-shaped", "; ".join(broken))
    if not present:
        problems.append("no weight files (*.safetensors / *.bin)")
    if problems:
        return Finding(w.name, str(folder), "missing", "; ".join(problems))
    return Finding(w.name, str(folder), "ok", "config matches Vicuna-7B v0, tokenizer.model 32000 pieces, weights present")


def check_pipeline(folder: Path, w: WeightLocation) -> Finding:
    """A diffusers pipeline folder against the bundled configs of the same model."""
    if not (folder / "model_index.json").is_file():
        return Finding(w.name, str(folder), "missing", "no model_index.json (a saved diffusers pipeline folder)")
    _, why = _read_json(folder / "model_index.json")
    if why:
        return Finding(w.name, str(folder), "mis-shaped", why)
    reference = configs_folder() / w.stand_in  # type: ignore[operator]
    missing, shapes, ok = [], [], []
    for part in sorted(p.name for p in reference.iterdir() if p.is_dir()):
        config = folder / part / "config.json"
        if not config.is_file():
            missing.append(f"{part}/config.json")
            continue
        theirs, why = _read_json(config)
        if why:
            shapes.append(f"{part}: {why}")
            continue
        diff = _shape_diff(theirs, json.loads((reference / part / "config.json").read_text()))  # type: ignore[arg-type]
        present, broken = _weights(folder / part)
        if diff:
            shapes.append(f"{part}: " + "; ".join(diff))
        elif broken:
            shapes.append(f"{part}: " + "; ".join(broken))
        elif not present:
            missing.append(f"{part} weights")
        else:
            ok.append(part)
    if shapes:
        return Finding(w.name, str(folder), "mis-shaped", " | ".join(shapes))
    if missing:
        return Finding(w.name, str(folder), "missing", ", ".join(missing))
    return Finding(w.name, str(folder), "ok", f"{', '.join(ok)}: configs match, weights present")


def check_all(*, delta: Path | None = None, checkpoint: Path | None = None) -> list[Finding]:
    """Check every location of the ``nextgpt-v0`` composition (from the environment and the paths file)."""
    from ..composition import path_settings, paths_file

    settings = path_settings()
    findings = []
    for w in WEIGHTS:
        value = os.environ.get(w.name) or settings.get(w.name)
        if not value:
            findings.append(Finding(w.name, "(not set)", "missing",
                                    f"{w.what}; set ${w.name} or add {w.name} = \"/path\" to {paths_file()}"))
            continue
        path = Path(value).expanduser()
        if w.kind == "llm":
            findings.append(check_llm(path, w))
        elif w.kind == "imagebind":
            findings.append(check_imagebind(path, w.name))
        else:
            findings.append(check_pipeline(path, w))
    if delta is not None:
        findings.append(check_delta(Path(delta).expanduser()))
    if checkpoint is not None:
        findings.append(check_checkpoint(Path(checkpoint).expanduser()))
    return findings
