"""Checkpoints are what their manifest says: only listed, hashed files load; every path stays inside the folder
(symbolic links included); a component's target and config are compared with the composition before anything is
imported or allocated; every malformed part is one CheckpointError line (and `error:` + exit 2 on the CLI)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nextgpt_core import CheckpointError, NextGPT, load_composition
from nextgpt_core.checkpoint import read_manifest
from nextgpt_core.cli import app
from nextgpt_core.interfaces import Component
from nextgpt_core.serialization import sha256_file, write_safetensors


@pytest.fixture(scope="module")
def lora_model(registry):
    data = load_composition("tiny").model_dump()
    data["lora"] = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    return NextGPT.from_composition(load_composition(data), registry=registry)


@pytest.fixture()
def ckpt(tmp_path, lora_model):
    return lora_model.save_checkpoint(tmp_path / "ckpt")


def _rehash(folder: Path, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> None:
    """Rewrite the manifest's hashes as an attacker (or a careless editor) would: it stays self-consistent."""
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {rel: sha256_file(folder / rel) for rel in [*manifest["files"], *add] if rel not in drop}
    manifest["files"] = files
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_a_file_the_manifest_does_not_list_is_not_loaded(tmp_path, registry, lora_model, ckpt):
    """Today's hole: an output projector copied into a checkpoint that never listed it was loaded, exit 0."""
    partial = lora_model.save_checkpoint(tmp_path / "partial")  # then "only input projectors" by the manifest
    manifest = json.loads((partial / "manifest.json").read_text())
    keep = {k: v for k, v in manifest["files"].items() if k.startswith("input_projectors/")}
    for part in ("output_projectors", "lora", "token_rows"):
        shutil.rmtree(partial / part)
    manifest.update(files=keep, parts=["input_projectors"])
    (partial / "manifest.json").write_text(json.dumps(manifest))
    lora_model.load_checkpoint(partial)  # consistent: loads
    shutil.copytree(ckpt / "output_projectors", partial / "output_projectors")
    with pytest.raises(CheckpointError, match=r"output_projectors/.*/config.json is not listed in the manifest") as exc:
        lora_model.load_checkpoint(partial)
    _one_line(exc)
    result = CliRunner().invoke(app, ["generate", "-c", "tiny", "-p", "x", "--checkpoint", str(partial), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not listed in the manifest" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("entry,message", [
    ("../outside.safetensors", r"not a plain relative path"),
    ("/etc/hostname", r"not a relative path inside the checkpoint"),
    ("input_projectors/./x", r"not a plain relative path"),
    ("input_projectors\\x", r"not a relative path inside the checkpoint"),
])
def test_manifest_paths_stay_inside(ckpt, lora_model, entry, message):
    _edit_json(ckpt / "manifest.json", lambda m: m["files"].__setitem__(entry, "0" * 64))
    with pytest.raises(CheckpointError, match=message) as exc:
        read_manifest(ckpt, verify=False)
    _one_line(exc)


def test_symbolic_links_out_of_the_folder_are_refused(tmp_path, lora_model, ckpt):
    name = next(iter(lora_model.input_projectors))
    weights = ckpt / "input_projectors" / name / "model.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(weights, outside)
    weights.unlink()
    weights.symlink_to(outside)  # same bytes, same hash: only the path gives it away
    with pytest.raises(CheckpointError, match=r"model.safetensors leads outside the checkpoint folder") as exc:
        lora_model.load_checkpoint(ckpt)
    _one_line(exc)
    weights.unlink()
    shutil.copy(outside, weights)
    lora_model.load_checkpoint(ckpt)  # restored: loads
    folder = ckpt / "input_projectors"
    shutil.move(folder, tmp_path / "moved")
    folder.symlink_to(tmp_path / "moved")  # a whole part folder linked from elsewhere
    with pytest.raises(CheckpointError, match="leads outside the checkpoint folder"):
        lora_model.load_checkpoint(ckpt)


def test_a_config_target_is_never_imported(tmp_path, lora_model, ckpt, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_module_for_nextgpt_test.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Proj:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = next(iter(lora_model.input_projectors))
    config = ckpt / "input_projectors" / name / "config.json"
    _edit_json(config, lambda c: c.__setitem__("target", "evil_module_for_nextgpt_test:Proj"))
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"holds a Proj .* but the composition builds a LinearInputProjector") as exc:
        lora_model.load_checkpoint(ckpt)
    _one_line(exc)
    with pytest.raises(CheckpointError, match="refusing to import it"):
        Component.from_pretrained(config.parent)
    assert not marker.exists() and "evil_module_for_nextgpt_test" not in sys.modules


def test_a_huge_config_is_compared_before_anything_is_allocated(tmp_path, lora_model, ckpt, monkeypatch):
    from nextgpt_core import projectors

    name = next(iter(lora_model.input_projectors))
    folder = ckpt / "input_projectors" / name
    _edit_json(folder / "config.json", lambda c: c["config"].update(in_dim=1_000_000, out_dim=1_000_000))
    _rehash(ckpt)
    built = []
    real_init = projectors.LinearInputProjector.__init__

    def spy(self, config):
        built.append(str(torch.get_default_device()))
        real_init(self, config)

    monkeypatch.setattr(projectors.LinearInputProjector, "__init__", spy)
    with pytest.raises(CheckpointError, match=r"holds a LinearInputProjector .*1000000.* but the composition builds"):
        lora_model.load_checkpoint(ckpt)
    assert built == [], "the checkpoint's config built a component"
    # standalone: built on the meta device only, the header's shapes refuse it (a 4 TB layer otherwise)
    with pytest.raises(CheckpointError, match=r"weights do not fit LinearInputProjector: .*mis-shaped"):
        Component.from_pretrained(folder)
    assert built == ["meta"], built


@pytest.mark.parametrize("rel", ["manifest.json", "input_projectors/{p}/config.json", "token_rows/config.json",
                                 "lora/config.json"])
@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_malformed_json_anywhere_is_one_line(tmp_path, lora_model, ckpt, rel, content):
    rel = rel.format(p=next(iter(lora_model.input_projectors)))
    (ckpt / rel).write_bytes(content.encode("latin-1"))
    if rel != "manifest.json":
        _rehash(ckpt)
    with pytest.raises(CheckpointError, match=rf"{rel}: (malformed JSON|holds a JSON list)") as exc:
        lora_model.load_checkpoint(ckpt)
    _one_line(exc)


def test_embeddings_config_malformed_is_one_line(tmp_path, registry):
    from nextgpt_core.checkpoint import save_checkpoint

    model = NextGPT.from_composition("tiny", registry=registry)
    path = save_checkpoint(model, tmp_path / "c", parts=["embeddings"])
    (path / "embeddings" / "config.json").write_text("{")
    _rehash(path)
    with pytest.raises(CheckpointError, match=r"embeddings/config.json: malformed JSON"):
        model.load_checkpoint(path)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.__setitem__("files", ["a"]), "'files' must map relative paths to sha256 digests"),
    (lambda m: m.__setitem__("parts", "lora"), "'parts' must be a list of part names"),
    (lambda m: m["files"].__setitem__(next(iter(m["files"])), "abc"), "is not 64 hex digits"),
    (lambda m: m["files"].__setitem__("notes/readme.txt", "0" * 64), "listed in the manifest but missing"),
])
def test_malformed_manifest_fields_are_one_line(ckpt, lora_model, edit, message):
    _edit_json(ckpt / "manifest.json", edit)
    with pytest.raises(CheckpointError, match=message) as exc:
        lora_model.load_checkpoint(ckpt)
    _one_line(exc)


def test_listed_files_outside_any_part_and_undeclared_parts_are_refused(ckpt, lora_model):
    (ckpt / "notes.txt").write_text("hi")
    _rehash(ckpt, add=("notes.txt",))
    with pytest.raises(CheckpointError, match="lists notes.txt, which is no part of a nextgpt checkpoint"):
        lora_model.load_checkpoint(ckpt)
    _rehash(ckpt, drop=("notes.txt",))
    _edit_json(ckpt / "manifest.json", lambda m: m.__setitem__("parts", ["input_projectors", "output_projectors", "token_rows"]))
    with pytest.raises(CheckpointError, match="lists lora/.* but not the part 'lora' in 'parts'"):
        lora_model.load_checkpoint(ckpt)


def test_tensor_names_and_shapes_are_checked_from_the_header(ckpt, lora_model):
    rows = ckpt / "token_rows" / "rows.safetensors"
    from safetensors.torch import load_file

    state = load_file(str(rows))
    state["ids"] = state["ids"].flip(0)  # same shape, wrong ids
    write_safetensors(state, rows)
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match="are not the model's added token ids"):
        lora_model.load_checkpoint(ckpt)
    state["embed_tokens"] = torch.zeros(3, 5)
    write_safetensors(state, rows)
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"token rows do not fit the model .*mis-shaped \['embed_tokens \(3, 5\)"):
        lora_model.load_checkpoint(ckpt)
    _edit_json(ckpt / "lora" / "config.json", lambda c: c.__setitem__("alpha", 64.0))
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"LoRA settings differ from the composition's \[lora\]: alpha 64.0 vs 8.0"):
        lora_model.load_checkpoint(ckpt)


def test_an_intact_checkpoint_still_round_trips(lora_model, ckpt, registry):
    fresh = NextGPT.from_composition(lora_model.composition, registry=registry)
    fresh.load_checkpoint(ckpt)
    for (n, a), (_, b) in zip(lora_model.named_parameters(), fresh.named_parameters()):
        if "lora_" in n or "projectors" in n:
            assert torch.equal(a, b), n


def test_a_damaged_trainer_state_is_one_line(tmp_path):
    """`nextgpt train --resume` over a step whose state.pt is damaged: one error line, no traceback."""
    import numpy as np
    from nextgpt_fake.media import FakeImageIO

    FakeImageIO().write(np.zeros((8, 8), dtype=np.float32), tmp_path / "m.fimg")
    row = {"turns": [{"role": "user", "parts": [{"media": "m.fimg"}, {"text": "caption"}]},
                     {"role": "assistant", "parts": [{"text": "a square"}]}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    args = ["train", "--stage", "1", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "run")]
    assert CliRunner().invoke(app, [*args, "--steps", "1"]).exit_code == 0
    step = tmp_path / "run" / "step-1"
    assert "trainer_state/state.pt" in json.loads((step / "manifest.json").read_text())["files"]
    (step / "trainer_state" / "state.pt").write_bytes(b"\x80\x04garbage")
    result = CliRunner().invoke(app, [*args, "--steps", "2", "--resume"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "trainer_state/state.pt does not match its sha256" in lines[0], lines
    _rehash(step)  # hashes made to agree: the file itself is still refused in one line, and no warning besides
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, [*args, "--steps", "2", "--resume"])
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "state.pt: not a readable trainer state" in lines[0], lines
    assert "Traceback" not in result.output
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]
