"""`nextgpt convert official` on a tiny file in the official layout: strict mapping, and the converted model computes
what the file's tensors compute with plain torch ops (projectors, attention with LoRA merged, the replaced rows)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from nextgpt_core import CheckpointError, NextGPT
from nextgpt_core.checkpoint import read_manifest
from nextgpt_core.cli import app
from nextgpt_core.official.convert import convert_official, layout_for

from .official_layout import OUT_MODULES, ProjectorSpec, TinySpec, text_fc_layer, write_official_delta


@pytest.fixture(scope="module")
def layout(real_registry, tiny_v0_file):
    return layout_for(tiny_v0_file, real_registry)


@pytest.fixture(scope="module")
def spec(layout):
    projectors = {}
    for modality in OUT_MODULES:
        opts = layout.components[("output_projectors", layout.output_group(modality))].options
        projectors[modality] = ProjectorSpec(
            out_len=opts["out_len"], out_dim=opts["out_dim"], d_model=opts["d_model"], heads=opts["num_heads"],
            encoder_layers=opts["num_encoder_layers"], decoder_layers=opts["num_decoder_layers"], ff=opts["dim_feedforward"],
        )
    shared = layout.components[("input_projectors", "shared")].options
    return TinySpec(hidden=64, layers=2, enc_dim=shared["in_dim"], rows=layout.rows, lora_r=4, projectors=projectors)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, layout, spec, real_registry, tiny_v0_file):
    folder = tmp_path_factory.mktemp("convert")
    written = write_official_delta(folder / "pytorch_model.pt", spec, seed=7)
    report = convert_official(folder / "pytorch_model.pt", folder / "ckpt", layout)
    model = NextGPT.from_composition(tiny_v0_file, registry=real_registry, checkpoint=folder / "ckpt")
    base = NextGPT.from_composition(tiny_v0_file, registry=real_registry)
    return written, report, model, base, folder


def test_every_key_converted_and_the_manifest_verifies(converted):
    written, report, _, _, folder = converted
    # llama_proj 2; each TextFcLayer (1+1 layers) 39: fc 2, query 1, model 2, encoder layer 12 + norm 2, decoder layer 18 + norm 2;
    # LoRA 2 layers x 4 projections x A/B; embed_tokens and lm_head
    assert report.keys == len(written) == 2 + 3 * 39 + 2 * 4 * 2 + 2
    assert report.parameters == sum(t.numel() for t in written.values())
    manifest = read_manifest(folder / "ckpt")
    assert manifest["parts"] == ["embeddings", "input_projectors", "lora", "output_projectors"]
    assert manifest["metadata"]["official_keys"] == len(written)


def test_shared_input_projector_is_llama_proj(converted):
    written, _, model, _, _ = converted
    x = torch.randn(3, 1, 32)
    w, b = written["llama_proj.weight"].float(), written["llama_proj.bias"].float()
    with torch.no_grad():
        got = model.input_projectors["shared"](x)
    torch.testing.assert_close(got, x @ w.T + b)


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_output_projectors_compute_text_fc_layer(converted, spec, modality):
    written, _, model, _, _ = converted
    prefix = f"{OUT_MODULES[modality]}.0."
    reference = text_fc_layer(spec.hidden, spec.projectors[modality])
    reference.load_state_dict({k[len(prefix):]: v.float() for k, v in written.items() if k.startswith(prefix)})
    reference.eval()
    n = len(model.tokens.signals[modality])
    hidden, embeds = torch.randn(2, n, 64), torch.randn(2, n, 64)
    proj = model.output_projectors[modality]["prompt_embeds"]
    with torch.no_grad():
        x = reference.fc(hidden + embeds)  # official: hidden state + the signal tokens' input embeddings
        expected = reference.model(reference.tfm(x, reference.query_embs.expand(2, -1, -1)))
        torch.testing.assert_close(proj(hidden, embeds), expected)


def test_full_embedding_and_head_replace_every_row(converted):
    written, _, model, base, _ = converted
    emb = model.llm.get_input_embeddings().weight
    head = model.llm.get_output_embeddings().weight
    peft = "llama_model.base_model.model."
    torch.testing.assert_close(emb, written[peft + "model.embed_tokens.weight"].float())
    torch.testing.assert_close(head, written[peft + "lm_head.weight"].float())
    assert not torch.equal(emb[:300], base.llm.get_input_embeddings().weight[:300])  # base rows replaced too


def test_attention_with_lora_merged(converted):
    """Each q/k/v/o of the converted model = the base weight + (alpha/r) B A from the file; and the whole LLM equals
    a plain Llama whose weights were merged by hand."""
    written, _, model, base, _ = converted
    scale = 8.0 / 4
    peft = "llama_model.base_model.model.model.layers"
    plain = copy.deepcopy(base.llm.base_model.model if hasattr(base.llm, "base_model") else base.llm)
    plain = plain.merge_and_unload() if hasattr(plain, "merge_and_unload") else plain
    state = {}
    for i in range(2):
        for p in "qkvo":
            a = written[f"{peft}.{i}.self_attn.{p}_proj.lora_A.default.weight"].float()
            b = written[f"{peft}.{i}.self_attn.{p}_proj.lora_B.default.weight"].float()
            module = getattr(model.llm.base_model.model.model.layers[i].self_attn, f"{p}_proj")
            w0 = module.base_layer.weight
            x = torch.randn(5, 64)
            with torch.no_grad():
                torch.testing.assert_close(module(x), F.linear(x, w0 + scale * b @ a))
            state[f"model.layers.{i}.self_attn.{p}_proj.weight"] = w0 + scale * b @ a
    reference = _plain_llama(model, state, written)
    ids = torch.tensor([[1, 40, 77, 300, 301, 305, 12]])
    with torch.no_grad():
        torch.testing.assert_close(model.llm(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def _plain_llama(model, merged, written):
    """A plain LlamaForCausalLM (no peft) with the converted model's base weights, LoRA merged by hand and the
    file's full embedding / head matrices."""
    from transformers import LlamaForCausalLM

    inner = model.llm.base_model.model
    reference = LlamaForCausalLM(inner.config)
    state = {k.replace(".base_layer", ""): v for k, v in inner.state_dict().items() if "lora_" not in k}
    state.update(merged)
    peft = "llama_model.base_model.model."
    state["model.embed_tokens.weight"] = written[peft + "model.embed_tokens.weight"].float()
    state["lm_head.weight"] = written[peft + "lm_head.weight"].float()
    reference.load_state_dict(state, strict=True)
    return reference.eval()


def test_names_without_default_adapter_convert_the_same(tmp_path, layout, spec, converted):
    written = write_official_delta(tmp_path / "d.pt", spec, seed=7, default_adapter_name=False)
    assert not any(".default." in k for k in written)
    convert_official(tmp_path / "d.pt", tmp_path / "ckpt", layout)
    a, b = read_manifest(tmp_path / "ckpt")["files"], read_manifest(converted[4] / "ckpt")["files"]
    assert a == b  # byte-identical files


def _save(path, state):
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("llama_proj.bias"), r"1 missing: input_projectors/shared:proj\.bias"),
        (lambda s: s.__setitem__("llama_proj.extra", torch.zeros(1)), r"1 unexpected: llama_proj\.extra"),
        (lambda s: s.__setitem__("llama_proj.bias", torch.zeros(63)), r"1 mis-shaped: llama_proj\.bias \(63,\) vs \(64,\)"),
        (lambda s: s.__setitem__("llama_model.model.embed_tokens.weight", s.pop("llama_model.base_model.model.model.embed_tokens.weight")),
         r"a stage-1/2 checkpoint \('llama_model\.model\.embed_tokens\.weight'"),
    ],
    ids=["missing", "unexpected", "mis-shaped", "stage-1-2"],
)
def test_strict_loading_lists_each_problem(tmp_path, layout, spec, edit, expected):
    state = write_official_delta(tmp_path / "d.pt", spec)
    edit(state)
    with pytest.raises(CheckpointError, match=expected):
        convert_official(_save(tmp_path / "bad.pt", state), tmp_path / "out", layout)
    assert not (tmp_path / "out").exists()  # nothing written


class NotATensor:
    pass


def test_bad_files_get_one_clear_error(tmp_path, layout, spec):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint .neither a torch.save zip archive nor a pickle"):
        convert_official(tmp_path / "text.pt", tmp_path / "o", layout)
    write_official_delta(tmp_path / "full.pt", spec)
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="a truncated torch.save file") as cut:
        convert_official(tmp_path / "cut.pt", tmp_path / "o", layout)
    assert "nor a truncated" not in str(cut.value)  # it said "not a torch.save file, nor a truncated one" before
    _save(tmp_path / "obj.pt", {"llama_proj.weight": NotATensor()})
    with pytest.raises(CheckpointError, match="weights_only=True"):
        convert_official(tmp_path / "obj.pt", tmp_path / "o", layout)
    with open(tmp_path / "pickle.pt", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(CheckpointError):
        convert_official(tmp_path / "pickle.pt", tmp_path / "o", layout)
    _save(tmp_path / "list.pt", [torch.zeros(1)])
    with pytest.raises(CheckpointError, match="holds a list"):
        convert_official(tmp_path / "list.pt", tmp_path / "o", layout)


def test_cli_converts_and_fails_in_one_line(tmp_path, spec, tiny_v0_file, real_registry, monkeypatch):
    from nextgpt_core import plugins

    monkeypatch.setattr(plugins, "get_registry", lambda: real_registry)
    written = write_official_delta(tmp_path / "pytorch_model.pt", spec)
    runner = CliRunner()
    ok = runner.invoke(app, ["convert", "official", "--delta", str(tmp_path / "pytorch_model.pt"), "--out",
                             str(tmp_path / "ckpt"), "--composition", str(tiny_v0_file)])
    assert ok.exit_code == 0, ok.output
    assert f"converted {len(written)} official keys" in ok.stdout
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    bad = runner.invoke(app, ["convert", "official", "--delta", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "x"),
                              "--composition", str(tiny_v0_file)])
    assert bad.exit_code == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a readable PyTorch checkpoint" in lines[0]


def test_convert_never_destroys_a_folder(tmp_path, spec, tiny_v0_file, real_registry, monkeypatch):
    """`--out` a user's folder, the folder holding the delta (`--out "$PWD"` deleted it), `.`, a file: one error
    line each, before the delta is read, and nothing changes; an earlier checkpoint is replaced only with
    --overwrite."""
    from nextgpt_core import plugins

    monkeypatch.setattr(plugins, "get_registry", lambda: real_registry)
    work = tmp_path / "work"
    work.mkdir()
    delta = work / "pytorch_model.pt"
    write_official_delta(delta, spec)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("a file")
    runner = CliRunner()

    def convert(out, *extra):
        return runner.invoke(app, ["convert", "official", "--delta", str(delta), "--out", str(out),
                                   "--composition", str(tiny_v0_file), *extra])

    monkeypatch.chdir(work)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for out, message in ((tmp_path / "mine", "is not empty (notes.txt) and not a folder nextgpt wrote"),
                         (work, "is the current folder"), (".", "is the current folder"),
                         ("..", "contains the current folder"), (tmp_path / "file", "exists and is not a folder")):
        result = convert(out, "--overwrite")
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: --out {out}: {message}"), lines
    monkeypatch.chdir(tmp_path)
    result = convert(work, "--overwrite")
    assert result.exit_code == 2 and f"contains the input {delta}" in result.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert convert(tmp_path / "ckpt").exit_code == 0
    again = convert(tmp_path / "ckpt")
    assert again.exit_code == 2 and "already holds a nextgpt checkpoint; pass --overwrite" in again.stderr
    assert convert(tmp_path / "ckpt", "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "file", "mine", "work"]
