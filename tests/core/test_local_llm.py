"""Any Hugging Face causal LM from a local folder (here a GPT-2, a different architecture from the tiny Llama)."""

from __future__ import annotations

import pytest
import torch

from nextgpt_core import Conversation, Media, NextGPT


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from nextgpt_core.language_model import train_tiny_tokenizer

    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                               bos_token_id=1, eos_token_id=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_gpt2_runs_the_whole_request(gpt2_folder, registry, fake_files, tmp_path, reference_states):
    composition = tmp_path / "gpt2.toml"
    composition.write_text(f'name = "gpt2"\nauto_modalities = "tiny"\n[llm]\npath = "{gpt2_folder}"\n'
                           "[generation]\nmax_new_tokens = 16\nmax_context_tokens = 256\n")
    model = NextGPT.from_composition(composition, registry=registry)
    assert type(model.llm).__name__ == "GPT2LMHeadModel"
    assert model.resolved.llm_hidden_size == 32  # read from config.json's n_embd
    seen = []
    original = model.decode_run
    model.decode_run = lambda key, hidden, **kw: (seen.append(hidden), original(key, hidden, **kw))[1]
    conv = Conversation().user(Media.from_path(fake_files["image"]), "hi")
    reply = model.generate(conv, want=["fake_image"], seed=0)
    p, ref = reference_states(model, conv, reply, 16)
    s = reply.token_ids.index(model.tokens.signals["fake_image"][0])
    torch.testing.assert_close(seen[0], ref[p + s : p + s + 4], rtol=1e-4, atol=1e-5)
