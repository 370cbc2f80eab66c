"""Fixtures for the official-weights tests: the real image/video/audio plugins (their tiny presets) and a tiny
composition with the v0 layout (the settings of ``nextgpt-v0`` around a tiny Llama)."""

from __future__ import annotations

import pytest

#: the nextgpt-v0 composition's layout and settings at toy sizes (every weight random, nothing read from disk)
TINY_V0 = """
name = "tiny-v0"
seed = 3

[llm.tiny]
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 4
max_position_embeddings = 512
tokenizer_vocab_size = 300

[vocabulary]
first_added_id = 300

[prompt]
user = "### Human: {content}"
assistant = "\\n### Assistant: {content}\\n"
generation_prompt = "\\n### Assistant:"
stop = ["###"]
bos = "every_segment"
training_bos = "start"
user_prefix_apart = true
strip_around_tokens = true
join_turns = true

[generation]
max_new_tokens = 48
max_context_tokens = 512

[input_projection]
tie = true
shared = "linear"

[lora]
enabled = true
r = 4
alpha = 8.0
dropout = 0.1
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]

[modalities.image]
preset = "tiny"
wrapper_tokens = ["<Img>", "</Img>"]
item_merge = "sum"

[modalities.video]
preset = "tiny"
wrapper_tokens = ["<Img>", "</Img>"]
item_merge = "sum"

[modalities.audio]
preset = "tiny"
wrapper_tokens = ["<Img>", "</Img>"]
item_merge = "sum"
"""


@pytest.fixture(scope="session")
def real_registry():
    from nextgpt_registry import Registry

    from nextgpt_core.plugins import DEFAULT_PLUGINS

    return Registry.load(DEFAULT_PLUGINS, allow=["image", "video", "audio"])


@pytest.fixture(scope="session")
def tiny_v0_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("compositions") / "tiny-v0.toml"
    path.write_text(TINY_V0)
    return path


@pytest.fixture(scope="session")
def v0_layout(real_registry):
    """The full-size nextgpt-v0 trained layout on the meta device (bundled configs stand in for local weights)."""
    from nextgpt_core.official.convert import layout_for

    return layout_for("nextgpt-v0", real_registry)


@pytest.fixture(scope="session")
def sp_folder_v0(tmp_path_factory, real_registry):
    """A tiny Llama folder with a 400-piece SentencePiece `tokenizer.model` (Llama's trainer settings) and the tiny
    v0 layout around it (first_added_id 400): ``{"folder", "tokens" (the added tokens in order), "composition"
    (folder -> Composition)}``."""
    import io
    import json
    import re
    import tomllib

    import sentencepiece
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from nextgpt_core.composition import load_composition, resolve_composition

    corpus = ["### Human: generate a caption", "### Assistant: a dog runs on the beach.", "Describe this image please.",
              "What is in the picture? Show me a picture of a cat.", "Hello, how are you? I am fine, thank you!"]
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 30), model_writer=buf, vocab_size=400, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, character_coverage=1.0, minloglevel=2,
    )
    folder = tmp_path_factory.mktemp("vicuna-like")
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=401, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
                     ).save_pretrained(folder)

    def composition(path):
        text = TINY_V0.replace("[llm.tiny]", f'[llm]\npath = "{path}"\ndummy_prefix = "always"\n[llm.unused]', 1)
        text = re.sub(r"\[llm\.unused\][^\[]*", "", text).replace("first_added_id = 300", "first_added_id = 400")
        return load_composition(tomllib.loads(text))

    resolved = resolve_composition(composition(folder), real_registry)
    tokens: list[str] = []
    for m in resolved.modalities.values():
        for tok in (*(m.wrapper_tokens or ()), *m.signal_tokens):
            if tok not in tokens:
                tokens.append(tok)
    return {"folder": folder, "tokens": tokens, "composition": composition}
