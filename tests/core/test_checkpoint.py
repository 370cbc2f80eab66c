"""One checkpoint format: safetensors per component + config + manifest with hashes, written atomically."""

from __future__ import annotations

import json

import pytest
import torch

from nextgpt_core import CheckpointError, NextGPT, load_composition
from nextgpt_core.interfaces import Component


@pytest.fixture(scope="module")
def lora_composition():
    data = load_composition("tiny").model_dump()
    data["lora"] = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    return load_composition(data)


def _perturb(model: NextGPT, seed: int) -> None:
    """Stand in for training: change every trainable part."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in [*model.input_projectors.values(), *[p for d in model.output_projectors.values() for p in d.values()]]:
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for name, p in model.llm.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        ids = torch.tensor(model.tokens.new_ids)
        model.llm.get_input_embeddings().weight[ids] += torch.randn(len(ids), model.llm.config.hidden_size, generator=g)


def test_round_trip_gives_identical_replies(tmp_path, registry, lora_composition, fake_files):
    from nextgpt_core import Conversation, Media

    trained = NextGPT.from_composition(lora_composition, registry=registry)
    assert any("lora_A" in n for n, _ in trained.llm.named_parameters()), "LoRA must wrap the LLM from the composition"
    _perturb(trained, 0)
    path = trained.save_checkpoint(tmp_path / "ckpt", stage="test")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "nextgpt-checkpoint" and manifest["metadata"] == {"stage": "test"}
    assert {"lora/adapter.safetensors", "token_rows/rows.safetensors", "input_projectors/fake_image/model.safetensors",
            "output_projectors/fake_audio/pooled_embeds/model.safetensors"} <= set(manifest["files"])
    assert not any("llm" in f and "lora" not in f for f in manifest["files"]), "frozen LLM weights are never saved"

    fresh = NextGPT.from_composition(lora_composition, registry=registry)
    conv = Conversation().user(Media.from_path(fake_files["image"]), "x")
    before = fresh.generate(conv, seed=3, want=["fake_image"])
    fresh.load_checkpoint(path)
    a = trained.generate(conv, seed=3, want=["fake_image"])
    b = fresh.generate(conv, seed=3, want=["fake_image"])
    assert a.token_ids == b.token_ids
    assert torch.equal(torch.as_tensor(a.media[0].data), torch.as_tensor(b.media[0].data))
    assert before.token_ids != b.token_ids or not torch.equal(torch.as_tensor(before.media[0].data), torch.as_tensor(b.media[0].data))
    loaded = NextGPT.from_composition(lora_composition, registry=registry, checkpoint=path)
    assert loaded.generate(conv, seed=3, want=["fake_image"]).token_ids == a.token_ids


def test_tampered_or_foreign_checkpoints_fail_clearly(tmp_path, tiny_model, registry, lora_composition):
    path = tiny_model.save_checkpoint(tmp_path / "ckpt")
    weights = path / "input_projectors" / "fake_image" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"input_projectors/fake_image/model.safetensors does not match its sha256"):
        tiny_model.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no manifest.json; not a nextgpt checkpoint"):
        tiny_model.load_checkpoint(tmp_path)


def test_a_lora_checkpoint_loads_into_a_composition_without_lora(tmp_path, registry, lora_composition, fake_files):
    """A stage-3 checkpoint records its LoRA settings: a composition with `lora.enabled = false` (the `tiny` that
    `nextgpt generate --checkpoint` uses by default) gets its LLM wrapped with them, and replies as the trained model."""
    from nextgpt_core import Conversation, Media

    trained = NextGPT.from_composition(lora_composition, registry=registry)
    _perturb(trained, 1)
    path = trained.save_checkpoint(tmp_path / "lora")
    plain = load_composition("tiny")
    assert not plain.lora.enabled
    loaded = NextGPT.from_composition(plain, registry=registry, checkpoint=path)
    assert loaded.has_lora and loaded.composition.lora.r == 4
    assert loaded.composition.lora.target_modules == ("q_proj", "v_proj")
    mine = {n: p for n, p in loaded.llm.named_parameters() if "lora_" in n}
    theirs = {n: p for n, p in trained.llm.named_parameters() if "lora_" in n}
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[n], theirs[n]) for n in mine)
    conv = Conversation().user(Media.from_path(fake_files["image"]), "x")
    assert loaded.generate(conv, seed=4).token_ids == trained.generate(conv, seed=4).token_ids
    # a LoRA checkpoint that does not say how its adapters were made is one clear error
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["composition_settings"]["lora"] = {"r": "many"}
    (path / "lora" / "config.json").write_text('{"r": "many"}')
    from nextgpt_core.serialization import sha256_file

    manifest["files"]["lora/config.json"] = sha256_file(path / "lora" / "config.json")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="neither lora/config.json nor the manifest says how they were made"):
        NextGPT.from_composition(plain, registry=registry, checkpoint=path)


def test_mismatched_component_is_named(tmp_path, tiny_model, registry):
    path = tiny_model.save_checkpoint(tmp_path / "ckpt", )
    data = load_composition("tiny").model_dump()
    data["modalities"] = {"fake_image": {"preset": "tiny", "input_projector": "mlp"}}
    other = NextGPT.from_composition(load_composition(data), registry=registry)
    with pytest.raises(CheckpointError, match=r"input_projectors/fake_image: holds a LinearInputProjector .* builds a MLPInputProjector"):
        other.load_checkpoint(path)


def test_writes_are_atomic(tmp_path, tiny_model, monkeypatch):
    import nextgpt_core.checkpoint as ckpt

    path = tiny_model.save_checkpoint(tmp_path / "ckpt")
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real = ckpt.write_safetensors

    def crash(state, file):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(state, file)

    monkeypatch.setattr(ckpt, "write_safetensors", crash)
    monkeypatch.setattr(Component, "save_pretrained", lambda self, d: (d.mkdir(parents=True), ckpt.write_safetensors(self.state_dict(), d / "model.safetensors")))
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save_checkpoint(tmp_path / "ckpt")
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before, "a failed write must leave the previous checkpoint untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "no temporary folder may be left behind"


def test_component_round_trip_and_bad_folders(tmp_path):
    from nextgpt_core.projectors import LinearInputProjector, MLPInputProjector

    proj = LinearInputProjector.from_options({"in_dim": 3, "out_dim": 4})
    proj.save_pretrained(tmp_path / "p")
    loaded = Component.from_pretrained(tmp_path / "p")  # the class comes from config.json
    assert type(loaded) is LinearInputProjector
    x = torch.randn(2, 1, 3)
    assert torch.equal(proj(x), loaded(x))
    with pytest.raises(CheckpointError, match="holds a nextgpt_core.projectors:LinearInputProjector, not a MLPInputProjector"):
        MLPInputProjector.from_pretrained(tmp_path / "p")
    (tmp_path / "p" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Component.from_pretrained(tmp_path / "p")
    with pytest.raises(CheckpointError, match="no config.json"):
        Component.from_pretrained(tmp_path / "missing")
