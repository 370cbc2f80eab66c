"""Other LLMs by one line: GPT-2, GPT-NeoX and Phi-3 train stage 3 with no `[lora] target_modules` line (peft's
default per architecture), `compose validate` checks the targets, and the documented Qwen2.5 and Llama-3 chat
templates (docs/compositions.md) work around tiny random instances of their architectures with offline tokenizers
that hold the models' special tokens: the prompt is the chat format token for token, a special-token stop string
stops the reply, stage 3 trains. Nothing is downloaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nextgpt_core import Conversation, NextGPT
from nextgpt_core.cli import app
from nextgpt_core.conversation import Text, Turn
from nextgpt_core.training.collate import IGNORE_INDEX, build_example
from nextgpt_core.training.data import Target, TrainingSample
from nextgpt_core.training.trainable import apply_stage
from nextgpt_core.training.trainer import TrainConfig, Trainer

DOC = Path(__file__).resolve().parents[2] / "docs" / "compositions.md"
CORPUS = ["You are a helpful assistant.", "Hello! How can I help you today?", "Show me a red square, please.",
          "Here is a picture of a cat.", "a red square on a white background", "system user assistant"]


def offline_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str):
    """A byte-level BPE trained here (like the Qwen2 / Llama 3 tokenizers: byte-level, no prefix space), with
    ``specials`` as special tokens (skipped by ``decode(skip_special_tokens=True)``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[s for s in specials if s not in (bos, eos, pad)])


def _save(folder: Path, model, tokenizer) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _ids(tok, *names):
    return [tok.convert_tokens_to_ids(n) for n in names]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny random instances of each architecture, saved as local folders with their offline tokenizers."""
    from transformers import (
        GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, Phi3Config,
        Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM,
    )

    root = tmp_path_factory.mktemp("llms")
    plain = offline_tokenizer(["<unk>", "<s>", "</s>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>")
    bos, eos, pad = _ids(plain, "<s>", "</s>", "<pad>")
    small = dict(bos_token_id=bos, eos_token_id=eos)
    torch.manual_seed(0)
    out = {
        "gpt2": _save(root / "gpt2", GPT2LMHeadModel(GPT2Config(vocab_size=len(plain), n_embd=32, n_layer=2, n_head=2,
                                                                n_positions=256, **small)), plain),
        "gpt_neox": _save(root / "neox", GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=len(plain), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=256, **small)), plain),
        "phi3": _save(root / "phi3", Phi3ForCausalLM(Phi3Config(
            vocab_size=len(plain), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=pad, **small)), plain),
    }
    qwen = offline_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|endoftext|>",
                             pad="<|endoftext|>")
    out["qwen2.5"] = _save(root / "qwen", Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(qwen), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        eos_token_id=qwen.eos_token_id, bos_token_id=None)), qwen)
    llama3 = offline_tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                "<|eot_id|>"], bos="<|begin_of_text|>", eos="<|end_of_text|>", pad="<|end_of_text|>")
    out["llama-3"] = _save(root / "llama3", LlamaForCausalLM(LlamaConfig(
        vocab_size=len(llama3), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rope_theta=500000.0,
        bos_token_id=llama3.bos_token_id, eos_token_id=llama3.eos_token_id)), llama3)
    return out


def _composition(tmp_path: Path, folder: Path, extra: str = "") -> Path:
    path = tmp_path / f"{folder.name}.toml"
    path.write_text(f'name = "{folder.name}"\nauto_modalities = "tiny"\n[llm]\npath = "{folder}"\n'
                    f"[generation]\nmax_new_tokens = 12\nmax_context_tokens = 256\n{extra}")
    return path


def _stage3_step(model, tmp_path):
    """One stage-3 optimizer step on a generation sample: the LoRA tensors must change."""
    key = model.output_modalities()[0]
    conv = Conversation([Turn("user", [Text("Show me a red square, please.")]),
                         Turn("assistant", [Text("Here is a picture of a cat.")])])
    sample = TrainingSample(conv, [Target(key, "a red square", None, 1, 1)], sample_id="s")
    trainer = Trainer(model, [sample], None, TrainConfig(stage=3, steps=1, batch_size=1, l2_weight=0.0, lr=1e-2,
                                                         output_dir=tmp_path / "run", progress=False, save_final=False))
    before = {n: p.detach().clone() for n, p in model.llm.named_parameters() if "lora_B" in n}
    result = trainer.train()
    assert result.step == 1 and torch.isfinite(torch.tensor(result.losses)).all()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.llm.named_parameters() if n in before)
    return trainer


@pytest.mark.parametrize(("arch", "targets"), [
    ("gpt2", {"c_attn"}),
    ("gpt_neox", {"query_key_value"}),
    ("phi3", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}),  # not in peft's table: every linear but lm_head
])
def test_stage3_trains_lora_with_the_architecture_default(folders, registry, tmp_path, arch, targets):
    """No `[lora] target_modules` line: stage 3 wraps the modules peft chooses for the architecture (the default
    used to be Llama's q/k/v/o, so stage 3 stopped on these LLMs) and trains."""
    model = NextGPT.from_composition(_composition(tmp_path, folders[arch]), registry=registry)
    trainable = apply_stage(model, 3)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in trainable.parameters["llm.lora"]}
    assert wrapped == targets
    assert set(model.composition.lora.target_modules) == targets  # recorded for the checkpoint
    _stage3_step(model, tmp_path)
    result = CliRunner().invoke(app, ["compose", "validate", str(_composition(tmp_path, folders[arch]))])
    assert result.exit_code == 0 and result.stdout.startswith("ok: "), result.output
    bad = _composition(tmp_path, folders[arch], '[lora]\ntarget_modules = ["q_proj", "nope"]\n')
    result = CliRunner().invoke(app, ["compose", "validate", str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "lora.target_modules ['nope'] match no module" in result.output or "['q_proj', 'nope']" in result.output


# ------------------------------------------------------------------------------------------------ chat templates
def _template(name: str) -> str:
    fence = re.compile(r"^```toml template=(?P<name>\S+)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
    found = {m["name"]: m["body"] for m in fence.finditer(DOC.read_text())}
    return found[name]


CHAT = {
    # the chat format's own text of [user "Hello!", assistant "Hi.", user "Show me a red square, please."]
    "qwen2.5": ("NEXTGPT_QWEN25", "<|im_end|>",
                "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi.<|im_end|>\n"
                "<|im_start|>user\nShow me a red square, please.<|im_end|>\n<|im_start|>assistant\n"),
    "llama-3": ("NEXTGPT_LLAMA3", "<|eot_id|>",
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nShow me a red square, please.<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n"),
}


@pytest.fixture(params=sorted(CHAT))
def chat(request, folders, registry, tmp_path, monkeypatch):
    name = request.param
    variable, stop, text = CHAT[name]
    monkeypatch.setenv(variable, str(folders[name]))
    path = tmp_path / f"{name}.toml"
    path.write_text('auto_modalities = "tiny"\n' + _template(name) + "\n[generation]\nmax_new_tokens = 12\n")
    model = NextGPT.from_composition(path, registry=registry)
    return {"name": name, "model": model, "stop": stop, "text": text}


def test_documented_template_renders_the_chat_format(chat):
    model = chat["model"]
    conv = Conversation().user("Hello!").assistant("Hi.").user("Show me a red square, please.")
    with torch.no_grad():
        embeds, _ = model.prepare_inputs(conv, 8)
    expected = model.tokenizer(chat["text"], add_special_tokens=False).input_ids
    table = model.llm.get_input_embeddings().weight
    assert embeds.shape[1] == len(expected)
    torch.testing.assert_close(embeds[0], table[torch.tensor(expected)])
    assert model.tokenizer.convert_tokens_to_ids(chat["stop"]) in expected  # the special token is one id


def test_a_special_token_stop_string_ends_the_reply(chat):
    """The reply is forced to 'Hi', the stop token, then more text: generation ends at the stop token and the
    reply text holds only what came before it (stop strings were matched on text decoded without special tokens,
    so a stop string like <|im_end|> never matched)."""
    model = chat["model"]
    tok = model.tokenizer
    stop_id = tok.convert_tokens_to_ids(chat["stop"])
    script = [*tok("Hi", add_special_tokens=False).input_ids, stop_id, *tok(" more text", add_special_tokens=False).input_ids]
    assert stop_id != tok.eos_token_id and len(script) < 12
    calls = []

    def force(module, args, output):
        step = len(calls)
        calls.append(step)
        logits = torch.full_like(output, -1e4)
        logits[..., script[min(step, len(script) - 1)]] = 1e4
        return logits

    handle = model.llm.get_output_embeddings().register_forward_hook(force)
    try:
        reply = model.generate("Hello!", seed=0, do_sample=False)
    finally:
        handle.remove()
    assert reply.token_ids == script[: script.index(stop_id) + 1]
    assert reply.text == "Hi"


def test_stage3_trains_with_the_template_and_labels_the_end_token(chat, tmp_path):
    model = chat["model"]
    key = model.output_modalities()[0]
    conv = Conversation([Turn("user", [Text("Show me a red square, please.")]), Turn("assistant", [Text("Here.")])])
    example = build_example(model, TrainingSample(conv, [Target(key, "a red square", None, 1, 1)]))
    labelled = example.labels[0][example.labels[0] != IGNORE_INDEX].tolist()
    stop_id = model.tokenizer.convert_tokens_to_ids(chat["stop"])
    assert stop_id in labelled and model.tokens.signals[key][0] in labelled  # the model learns to end its reply
    trainer = _stage3_step(model, tmp_path)
    assert "llm.lora" in trainer.trainable.counts
