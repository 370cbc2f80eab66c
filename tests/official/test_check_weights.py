"""`nextgpt check-weights`: present, missing and mis-shaped local weights, without loading any model."""

from __future__ import annotations

import shutil

import pytest
import torch
from typer.testing import CliRunner

from nextgpt_core.cli import app
from nextgpt_core.official.check import check_all, check_delta, check_imagebind
from nextgpt_core.official.paths import configs_folder

from .official_layout import ProjectorSpec, TinySpec, write_official_delta


@pytest.fixture()
def env(monkeypatch, tmp_path):
    for name in ("NEXTGPT_VICUNA_V0", "NEXTGPT_IMAGEBIND", "NEXTGPT_SD15", "NEXTGPT_ZEROSCOPE", "NEXTGPT_AUDIOLDM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEXTGPT_PATHS", str(tmp_path / "paths.toml"))
    return tmp_path


def _pipeline(tmp_path, model):
    from safetensors.torch import save_file

    folder = tmp_path / model
    shutil.copytree(configs_folder() / model, folder)
    for sub in folder.iterdir():
        if sub.is_dir():  # a small but well-formed safetensors file (its header is checked, not its tensors)
            save_file({"x": torch.zeros(1)}, str(sub / "diffusion_pytorch_model.safetensors"))
    return folder


def test_each_location_is_reported(env, monkeypatch):
    sd = _pipeline(env, "stable-diffusion-v1-5")
    zs = _pipeline(env, "zeroscope_v2_576w")
    (zs / "unet" / "config.json").write_text((zs / "unet" / "config.json").read_text().replace('"cross_attention_dim": 1024', '"cross_attention_dim": 768'))
    aldm = _pipeline(env, "audioldm-l-full")
    (aldm / "vocoder" / "diffusion_pytorch_model.safetensors").unlink()
    (env / "paths.toml").write_text(f'NEXTGPT_SD15 = "{sd}"\nNEXTGPT_ZEROSCOPE = "{zs}"\nNEXTGPT_AUDIOLDM = "{aldm}"\n'
                                    f'NEXTGPT_IMAGEBIND = "{env / "nope.pth"}"\n')
    found = {f.name: f for f in check_all()}
    assert found["NEXTGPT_VICUNA_V0"].status == "missing" and "not set" in found["NEXTGPT_VICUNA_V0"].path
    assert found["NEXTGPT_IMAGEBIND"].status == "missing"
    assert found["NEXTGPT_SD15"].status == "ok"
    assert found["NEXTGPT_ZEROSCOPE"].status == "mis-shaped" and "cross_attention_dim 768 (expected 1024)" in found["NEXTGPT_ZEROSCOPE"].detail
    assert found["NEXTGPT_AUDIOLDM"].status == "missing" and "vocoder weights" in found["NEXTGPT_AUDIOLDM"].detail
    result = CliRunner().invoke(app, ["check-weights"])
    assert result.exit_code == 1 and "1 ok, 4 not" in result.stdout


def test_vicuna_folder(env, monkeypatch):
    folder = env / "vicuna"
    folder.mkdir()
    shutil.copy(configs_folder() / "vicuna-7b-v0" / "config.json", folder / "config.json")
    monkeypatch.setenv("NEXTGPT_VICUNA_V0", str(folder))
    finding = check_all()[0]
    assert finding.status == "missing" and "no tokenizer.model" in finding.detail and "no weight files" in finding.detail
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"vocab_size": 32001', '"vocab_size": 32000'))
    assert check_all()[0].detail == "config.json: vocab_size 32000 (expected 32001)"


def test_imagebind_and_delta_files(env):
    torch.save({"modality_preprocessors.vision.cls_token": torch.zeros(1, 1, 1280)}, env / "ib.pth")
    finding = check_imagebind(env / "ib.pth")
    assert finding.status == "missing" and finding.detail.startswith("1310 missing")
    spec = TinySpec(hidden=8, layers=1, enc_dim=4, rows=10, lora_r=2, projectors={"image": ProjectorSpec(out_len=2, out_dim=3, d_model=4)})
    write_official_delta(env / "delta.pt", spec)
    finding = check_delta(env / "delta.pt")
    assert finding.status == "mis-shaped" and "mis-shaped (e.g. llama_model.base_model.model.model.embed_tokens.weight (10, 8) vs (32038, 4096))" in finding.detail
    (env / "junk.pt").write_bytes(b"junk")
    assert "not a readable PyTorch checkpoint" in check_delta(env / "junk.pt").detail


def _vicuna(env, monkeypatch, sp_model: bytes | None = None):
    """A folder with Vicuna-7B v0's config.json, a weight file and (optionally) a tokenizer.model."""
    folder = env / "vicuna"
    folder.mkdir(exist_ok=True)
    shutil.copy(configs_folder() / "vicuna-7b-v0" / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    if sp_model is not None:
        (folder / "tokenizer.model").write_bytes(sp_model)
    monkeypatch.setenv("NEXTGPT_VICUNA_V0", str(folder))
    return folder


def test_corrupt_or_malformed_files_are_findings_not_crashes(env, monkeypatch):
    """A corrupt tokenizer.model, a malformed config.json, model_index.json or part config, empty or truncated
    weight files: each is one mis-shaped finding (check-weights used to crash on the first two and pass the others)."""
    folder = _vicuna(env, monkeypatch, b"\x00not a sentencepiece model")
    finding = check_all()[0]
    assert finding.status == "mis-shaped" and finding.detail.startswith("tokenizer.model is not a SentencePiece model (")
    (folder / "config.json").write_text('{"hidden_size": 4096,')
    assert check_all()[0].detail.startswith("config.json: not valid JSON (line 1, column")
    (folder / "config.json").write_text("[1, 2]")
    assert check_all()[0].detail == "config.json: a JSON list, not an object"

    sd = _pipeline(env, "stable-diffusion-v1-5")
    (env / "paths.toml").write_text(f'NEXTGPT_SD15 = "{sd}"\n')
    assert {f.name: f.status for f in check_all()}["NEXTGPT_SD15"] == "ok"
    (sd / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    found = {f.name: f for f in check_all()}["NEXTGPT_SD15"]
    assert found.status == "mis-shaped" and "unet: diffusion_pytorch_model.safetensors is empty (0 bytes)" in found.detail
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, str(sd / "unet" / "diffusion_pytorch_model.safetensors"))
    data = (sd / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    (sd / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 2])
    assert "diffusion_pytorch_model.safetensors is truncated" in {f.name: f for f in check_all()}["NEXTGPT_SD15"].detail
    (sd / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(data)
    (sd / "vae" / "config.json").write_text("{")
    found = {f.name: f for f in check_all()}["NEXTGPT_SD15"]
    assert found.status == "mis-shaped" and found.detail.startswith("vae: config.json: not valid JSON")
    (sd / "model_index.json").write_text("not json")
    assert {f.name: f for f in check_all()}["NEXTGPT_SD15"].detail.startswith("model_index.json: not valid JSON")
    result = CliRunner().invoke(app, ["check-weights"])
    assert result.exit_code == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(("entries", "refused"), [
    ({"[PAD]": 400}, True),                                   # a merged Vicuna with its [PAD] piece: every id shifts
    ({"[PAD]": 405}, True),                                   # the same (transformers does not keep the file's ids)
    ({"</Img>": 400, "<Img>": 401}, True),                    # the modality tokens in the wrong order
    ({"<Img>": 401}, False),                                  # ... the file's id is not kept: <Img> still gets 400
    ({}, False),
    ({"<Img>": 400, "</Img>": 401, "[IMG0]": 402}, False),    # the modality tokens themselves, at their ids
    ("not json", True),
])
def test_added_tokens_json_is_checked_as_the_model_reads_it(sp_folder_v0, real_registry, tmp_path, entries, refused):
    """check-weights flags an added_tokens.json exactly when building the composition refuses the tokenizer (it used
    to say ok for one the model then refused): the tiny v0 layout (first_added_id 400, a 400-piece model)."""
    import json
    import shutil as sh

    from nextgpt_core import NextGPT
    from nextgpt_core.errors import ConfigError
    from nextgpt_core.official.check import added_tokens_problem

    folder = tmp_path / "llm"
    sh.copytree(sp_folder_v0["folder"], folder)
    (folder / "added_tokens.json").write_text(entries if isinstance(entries, str) else json.dumps(entries))
    problem = added_tokens_problem(folder, 400, sp_folder_v0["tokens"], first_added_id=400)
    assert (problem is not None) == refused, problem
    if isinstance(entries, str):
        assert problem.startswith("added_tokens.json: not valid JSON")
        return
    try:
        NextGPT.from_composition(sp_folder_v0["composition"](folder), registry=real_registry)
        built = True
    except ConfigError as exc:
        built = False
        assert "got id" in str(exc)
    assert built == (not refused)
    if refused and "[PAD]" in entries:
        assert problem == ("added_tokens.json: <Img> would get id 401, the composition needs 400: it adds ['[PAD]'] "
                           "(ids [400]); remove it (the modality tokens are added by nextgpt)")
