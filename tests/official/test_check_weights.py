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
    folder = tmp_path / model
    shutil.copytree(configs_folder() / model, folder)
    for sub in folder.iterdir():
        if sub.is_dir():
            (sub / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
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
