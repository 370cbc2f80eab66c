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
