"""The checkpoint format's optional `embeddings` part (full input-embedding and LM-head matrices, as the official
release trained them): written only when asked for, loaded strictly; checkpoints without it load as before."""

from __future__ import annotations

import json

import pytest
import torch

from nextgpt_core import CheckpointError, NextGPT
from nextgpt_core.checkpoint import PARTS, load_checkpoint, read_manifest, save_checkpoint


@pytest.fixture(scope="module")
def model(real_registry, tiny_v0_file):
    return NextGPT.from_composition(tiny_v0_file, registry=real_registry)


def test_round_trip_and_default_parts(model, tmp_path):
    save_checkpoint(model, tmp_path / "plain")
    assert not (tmp_path / "plain" / "embeddings").exists() and read_manifest(tmp_path / "plain")["parts"] == list(PARTS)
    save_checkpoint(model, tmp_path / "full", parts=[*PARTS, "embeddings"])
    emb = model.llm.get_input_embeddings().weight
    head = model.llm.get_output_embeddings().weight
    before = emb.detach().clone(), head.detach().clone()
    with torch.no_grad():
        emb.add_(1.0)
        head.mul_(2.0)
    load_checkpoint(model, tmp_path / "plain")  # the added rows only
    assert not torch.equal(emb[:300], before[0][:300])
    load_checkpoint(model, tmp_path / "full")
    torch.testing.assert_close(emb, before[0])
    torch.testing.assert_close(head, before[1])


def test_mis_shaped_and_unknown_parts_fail(model, tmp_path):
    save_checkpoint(model, tmp_path / "c", parts=["embeddings"])
    config = tmp_path / "c" / "embeddings" / "config.json"
    data = json.loads(config.read_text())
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "c" / "embeddings" / "embeddings.safetensors")
    tensors["lm_head"] = tensors["lm_head"][:-1].contiguous()
    save_file(tensors, tmp_path / "c" / "embeddings" / "embeddings.safetensors")
    manifest_path = tmp_path / "c" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    from nextgpt_core.serialization import sha256_file

    manifest["files"]["embeddings/embeddings.safetensors"] = sha256_file(tmp_path / "c" / "embeddings" / "embeddings.safetensors")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"mis-shaped \['lm_head \(337, 64\) vs model \(338, 64\)'\]"):
        load_checkpoint(model, tmp_path / "c")
    manifest["parts"] = ["embeddings", "optimizer"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"unknown part\(s\) \['optimizer'\]"):
        load_checkpoint(model, tmp_path / "c")
    assert data["shapes"] == {"embed_tokens": [338, 64], "lm_head": [338, 64]}
