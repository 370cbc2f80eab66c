"""Stage trainable sets: exact requires_grad, row-level training (only the named rows of the embedding and the LM
head ever change, under AdamW with weight decay), counts, and the checkpoint round trip of the trained rows."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from nextgpt_core import NextGPT, load_composition
from nextgpt_core.training.trainable import (
    STAGES,
    RowTraining,
    apply_stage,
    get_stage,
    token_ids_of,
)

H = 64  # tiny LLM hidden size
# hand-computed from the fake plugin's projector shapes (encoder dim 12 -> H 64)
INPUT_PROJECTORS = {
    "input_projectors.fake_image": 64 * 12 + 64,  # Linear(12, 64)
    "input_projectors.fake_audio": (64 * 12 + 64) + (64 * 64 + 64),  # Linear(12, 64), GELU, Linear(64, 64)
    "input_projectors.fake_depth": 64 * 12 + 64,
}
WRAPPERS = ["<FImg>", "</FImg>", "<FAud>", "</FAud>", "<FDep>", "</FDep>"]
SIGNALS = ["[FIMG0]", "[FIMG1]", "[FIMG2]", "[FIMG3]", "[FAUD0]", "[FAUD1]"]


def lora_composition():
    data = load_composition("tiny").model_dump()
    data["lora"] = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    return load_composition(data)


def ids_of(model, names):
    return sorted(model.tokens.added[n] for n in names)


def media_features(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(1, 2, p.config.in_dim, generator=g) for k, p in model.input_projectors.items()}


def training_loss(model, feats):
    """CE over a sequence holding every wrapper (around projected media), text and every signal run, plus an L2
    term on every output projector fed with the signal hidden states: every possibly-trainable part gets a gradient."""
    embed = model.llm.get_input_embeddings()
    tok = model.tokenizer
    chunks, labels, signal_at = [], [], {}

    def add_ids(ids):
        chunks.append(embed(torch.tensor(ids)))
        labels.extend(ids)

    add_ids([tok.bos_token_id])
    for key, (open_id, close_id) in model.tokens.wrappers.items():
        add_ids([open_id])
        media = model.input_projectors[key](feats[key])[0]
        chunks.append(media)
        labels.extend([-100] * media.shape[0])
        add_ids([close_id])
    add_ids(tok("a red square", add_special_tokens=False).input_ids)
    for key, ids in model.tokens.signals.items():
        signal_at[key] = len(labels)
        add_ids(ids)
    add_ids([tok.eos_token_id])
    embeds = torch.cat(chunks)[None]
    out = model.llm(inputs_embeds=embeds, output_hidden_states=True)
    target = torch.tensor(labels)[1:]
    loss = F.cross_entropy(out.logits[0, :-1], target, ignore_index=-100)
    last = out.hidden_states[-1]
    for key, projs in model.output_projectors.items():
        ids = model.tokens.signals[key]
        hidden = last[:, signal_at[key] : signal_at[key] + len(ids)]
        signal_embeds = embed(torch.tensor(ids))[None]
        for proj in projs.values():
            loss = loss + (proj(hidden, signal_embeds) - 1.0).pow(2).mean()
    return loss, out.logits


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train_step(model, feats):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # frozen ones included: must not move
    model.zero_grad(set_to_none=True)
    loss, _ = training_loss(model, feats)
    loss.backward()
    opt.step()
    return opt


def matrices(model):
    return model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight


def check_stage(model, stage, expect_embed, expect_head, expect_projectors):
    trainable = apply_stage(model, stage)
    names = {n for n, p in trainable.named_parameters()}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}, "requires_grad is exactly the set"
    assert not any(p.requires_grad for p in model.encoders.parameters())
    emb, head = matrices(model)
    assert not emb.requires_grad and not head.requires_grad, "the matrices themselves never train"

    before = snapshot(model)
    emb0, head0 = emb.detach().clone(), head.detach().clone()
    feats = media_features(model)
    train_step(model, feats)
    for n, p in model.named_parameters():
        if n not in names:
            assert p.grad is None, f"{n} got a gradient"
            assert torch.equal(p, before[n]), f"{n} changed"
        else:
            assert p.grad is not None and not torch.equal(p, before[n]), f"{n} did not train"
    # before the merge the matrices are bit-identical; after it only the named rows differ, and all of them
    assert torch.equal(emb, emb0) and torch.equal(head, head0)
    trainable.merge()
    for matrix, original, rows in ((emb, emb0, ids_of(model, expect_embed)), (head, head0, ids_of(model, expect_head))):
        other = torch.ones(matrix.shape[0], dtype=torch.bool)
        other[rows] = False
        assert torch.equal(matrix[other], original[other]), "a row outside the named set changed"
        for i in rows:
            assert not torch.equal(matrix[i], original[i]), f"named row {i} did not change"
    for component in expect_projectors:
        assert component in trainable.counts
    return trainable


def test_stage_specs_are_explicit():
    assert [s.name for s in STAGES.values()] == ["encoding", "decoding", "instruction"]
    assert get_stage("2") is STAGES[2] and get_stage("instruction") is STAGES[3]
    assert STAGES[1].embed_rows == ("wrappers",) and STAGES[1].head_rows == ()
    assert STAGES[2].embed_rows == ("signals",) and STAGES[2].head_rows == ("signals",)
    assert STAGES[3].lora and STAGES[3].input_projectors and STAGES[3].output_projectors
    with pytest.raises(ValueError):
        get_stage(4)
    with pytest.raises(ValueError):
        dataclasses.replace(STAGES[1], embed_rows=("everything",))


def test_stage1_trains_input_projectors_and_wrapper_input_rows(registry):
    model = NextGPT.from_composition("tiny", registry=registry)
    trainable = check_stage(model, 1, WRAPPERS, [], INPUT_PROJECTORS)
    assert trainable.counts == {**INPUT_PROJECTORS, "embed_tokens.rows": 6 * H}
    assert trainable.row_tokens == {"embed_tokens": WRAPPERS}
    assert not any(p.requires_grad for p in model.output_projectors.parameters())
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("trainable_rows."))
    assert trainable.total_params == total and trainable.fraction == pytest.approx(trainable.trainable / total)


def test_stage2_trains_output_projectors_and_signal_rows_in_both_matrices(registry):
    model = NextGPT.from_composition("tiny", registry=registry)
    out = {f"output_projectors.{k}.{n}": sum(p.numel() for p in proj.parameters())
           for k, projs in model.output_projectors.items() for n, proj in projs.items()}
    assert out == {"output_projectors.fake_image.prompt_embeds": 7008, "output_projectors.fake_audio.prompt_embeds": 529,
                   "output_projectors.fake_audio.pooled_embeds": 6790}
    trainable = check_stage(model, 2, SIGNALS, SIGNALS, out)
    assert trainable.counts == {**out, "embed_tokens.rows": 6 * H, "lm_head.rows": 6 * H}
    assert not any(p.requires_grad for p in model.input_projectors.parameters())


def test_stage3_wraps_lora_and_trains_lora_projectors_and_rows(tmp_path, registry):
    model = NextGPT.from_composition("tiny", registry=registry)  # lora.enabled = false: the stage wraps it
    trainable = check_stage(model, 3, WRAPPERS + SIGNALS, SIGNALS, INPUT_PROJECTORS)
    assert any("LoRA" in n for n in trainable.notes) and model.composition.lora.enabled
    lora_names = [n for n, _ in trainable.parameters["llm.lora"]]
    assert lora_names and all("lora_" in n for n in lora_names)
    # r=8 default; no target_modules: peft's default for Llama (q_proj, v_proj), 64 -> 64, 2 layers
    assert trainable.counts["llm.lora"] == 2 * 8 * (64 + 64) * 2
    assert model.composition.lora.target_modules == ("q_proj", "v_proj")  # recorded: checkpoints say what they hold
    assert trainable.counts["embed_tokens.rows"] == 12 * H and trainable.counts["lm_head.rows"] == 6 * H
    # only LoRA (and no other LLM tensor) trains inside the LLM
    assert all("lora_" in n for n, p in model.llm.named_parameters() if p.requires_grad)
    # the round trip works with the composition the model now carries
    trainable.merge()
    path = model.save_checkpoint(tmp_path / "ckpt")
    fresh = NextGPT.from_composition(model.composition, registry=registry, checkpoint=path)
    feats = media_features(model, seed=1)
    with torch.no_grad():
        assert torch.allclose(training_loss(model, feats)[1], training_loss(fresh, feats)[1], atol=1e-5)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_exported_rows_round_trip_through_the_checkpoint(tmp_path, registry, stage):
    model = NextGPT.from_composition(lora_composition(), registry=registry)
    trainable = apply_stage(model, stage)
    assert trainable.notes == []  # the composition enables LoRA: nothing to wrap
    feats = media_features(model)
    train_step(model, feats)
    exported = trainable.export_rows()
    emb, head = matrices(model)
    new_ids = torch.tensor(model.tokens.new_ids)
    assert torch.equal(exported["ids"], new_ids)
    trainable.merge()
    assert torch.equal(exported["embed_tokens"], emb[new_ids]) and torch.equal(exported["lm_head"], head[new_ids])
    path = model.save_checkpoint(tmp_path / "ckpt")
    fresh = NextGPT.from_composition(lora_composition(), registry=registry)
    fresh.load_checkpoint(path)
    fe, fh = matrices(fresh)
    assert torch.equal(fe, emb) and torch.equal(fh, head), "identical matrices (named rows included)"
    with torch.no_grad():  # the hooked training forward equals the plain forward of the loaded model
        assert torch.allclose(training_loss(model, feats)[1], training_loss(fresh, feats)[1], atol=1e-5)


def test_stages_in_sequence_leave_one_set_of_hooks_and_keep_earlier_rows(registry):
    model = NextGPT.from_composition("tiny", registry=registry)
    first = apply_stage(model, 1)
    train_step(model, media_features(model))
    trained_wrappers = first.export_rows()["embed_tokens"]
    apply_stage(model, 3)  # wraps LoRA after stage 1's hooks: they are merged, removed and replaced
    emb3 = model.llm.get_input_embeddings()
    assert emb3 is not None and len(emb3._forward_hooks) == 1 and len(model.llm.get_output_embeddings()._forward_hooks) == 1
    assert torch.equal(emb3.weight[torch.tensor(model.tokens.new_ids)], trained_wrappers)
    third = apply_stage(model, 2)
    assert set(third.counts) == {"output_projectors.fake_image.prompt_embeds", "output_projectors.fake_audio.prompt_embeds",
                                 "output_projectors.fake_audio.pooled_embeds", "embed_tokens.rows", "lm_head.rows"}
    assert not any(p.requires_grad for n, p in model.llm.named_parameters())


def test_table_and_json(tmp_path, registry):
    model = NextGPT.from_composition("tiny", registry=registry)
    trainable = apply_stage(model, 1)
    table = trainable.table()
    assert "input_projectors.fake_audio" in table and "4,992" in table and "<FImg>" in table and "fraction" in table
    data = json.loads(trainable.save(tmp_path / "trainable.json").read_text())
    assert data["counts"] == trainable.counts and data["trainable"] == sum(INPUT_PROJECTORS.values()) + 6 * H
    assert data["stage"]["name"] == "encoding" and data["row_tokens"]["embed_tokens"] == WRAPPERS
    assert data["tied_embeddings"] is False and 0 < data["fraction"] < 1


def test_custom_stage_without_rows(registry):
    model = NextGPT.from_composition("tiny", registry=registry)
    trainable = apply_stage(model, dataclasses.replace(STAGES[1], embed_rows=()))
    assert trainable.rows is None and trainable.export_rows() is None
    assert set(trainable.counts) == set(INPUT_PROJECTORS)
    assert not hasattr(model, "trainable_rows")
    assert token_ids_of(model, ["signals"]) == ids_of(model, SIGNALS)


def test_tied_embeddings_share_one_set_of_rows():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    llm = LlamaForCausalLM(config).requires_grad_(False)
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
    weight = llm.get_input_embeddings().weight
    original = weight.detach().clone()
    rows = RowTraining.attach(llm, [30, 31], [32])
    assert rows.tied and rows.head_rows is rows.embed_rows and rows.embed_ids.tolist() == [30, 31, 32]
    ids = torch.tensor([[1, 30, 5, 31, 32, 7]])
    with torch.no_grad():
        plain = llm(input_ids=ids).logits
    opt = torch.optim.AdamW([*llm.parameters(), *rows.parameters()], lr=1e-2, weight_decay=0.1)
    hooked = llm(input_ids=ids).logits
    assert torch.allclose(hooked, plain, atol=1e-6), "unchanged rows: the hooks do not change the forward"
    F.cross_entropy(hooked[0, :-1], ids[0, 1:]).backward()
    opt.step()
    assert torch.equal(weight, original)
    rows.merge()
    other = torch.ones(40, dtype=torch.bool)
    other[[30, 31, 32]] = False
    assert torch.equal(weight[other], original[other]) and not torch.equal(weight[30], original[30])
    exported = rows.export_rows([30, 31, 32, 33])
    assert set(exported) == {"ids", "embed_tokens"} and torch.equal(exported["embed_tokens"], weight[30:34])
    with torch.no_grad():
        hooked = llm(input_ids=ids).logits
        rows.detach()
        assert torch.allclose(llm(input_ids=ids).logits, hooked, atol=1e-6), "merge + detach keep the forward"
