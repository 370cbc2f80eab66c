"""Hidden states are read AT the signal tokens: the legacy inference indexing (`gen_idx - 1` over the per-step
states, with transformers 4.29's output starting with a BOS) lands exactly there. Replayed here on a real
generation: the legacy indexing applied to a BOS-first sequence gives the states nextgpt feeds the projector with
`position_offset = 0`; applied literally to transformers 5's sequence (no BOS) it gives `position_offset = -1`."""

from __future__ import annotations


import pytest
import torch

from nextgpt_core import NextGPT
from nextgpt_core.generation import run_generation
from nextgpt_core.signal_runs import SignalRunController


@pytest.fixture(scope="module")
def model(real_registry, tiny_v0_file):
    return NextGPT.from_composition(tiny_v0_file, registry=real_registry)


def _generate(model, offset):
    embeds, _ = model.prepare_inputs(model_conversation(), 24)
    controller = SignalRunController(
        runs={k: model.tokens.signals[k] for k in model.output_modalities()},
        caps={k: 1 for k in model.output_modalities()}, want=["image"], max_new_tokens=24,
        sample=True, generator=torch.Generator().manual_seed(5),
    )
    return embeds, run_generation(model.llm, embeds, controller, eos_token_id=None, pad_token_id=0,
                                  hidden_layer=-1, position_offset=offset)


def model_conversation():
    from nextgpt_core import Conversation

    return Conversation().user("show me a cat")


def legacy_raw_emb(step_states: list[torch.Tensor], sequences: list[int], first_signal: int, n: int) -> torch.Tensor:
    """The official code: ``emb = cat([step[-1] for step in hidden_states[1:]])``; ``gen_idx`` = where
    ``sequences == [IMG0]``; ``raw_emb = emb[gen_idx - 1 : gen_idx - 1 + n]``."""
    emb = torch.cat(step_states, dim=0)
    gen_idx = sequences.index(first_signal)
    return emb[gen_idx - 1 : gen_idx - 1 + n]


def test_legacy_indexing_lands_on_the_signal_tokens(model):
    embeds, result = _generate(model, 0)
    (record, ours), = [r for r in result.runs if r[0].modality == "image"]
    ids = result.token_ids
    n = len(model.tokens.signals["image"])
    # one full forward over prompt + generated ids: the per-step states of `generate` (generation-facts §1b)
    table = model.llm.get_input_embeddings()
    with torch.no_grad():
        full = model.llm(inputs_embeds=torch.cat([embeds, table(torch.tensor([ids]))], dim=1),
                         output_hidden_states=True).hidden_states[-1][0]
    p = embeds.shape[1]
    steps = [full[p + j : p + j + 1] for j in range(len(ids))]  # hidden_states[1:]: one per fed generated token
    first = model.tokens.signals["image"][0]
    bos = model.tokenizer.bos_token_id
    legacy_429 = legacy_raw_emb(steps, [bos, *ids], first, n)   # 4.29: sequences = [BOS] + generated
    torch.testing.assert_close(legacy_429, ours, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours, full[p + record.start : p + record.start + n], rtol=1e-4, atol=1e-5)
    assert record.start > 0  # (at 0 the literal legacy slice emb[-1:...] would wrap around)
    literal_v5 = legacy_raw_emb(steps, ids, first, n)  # transformers 5: no BOS, so one position earlier
    _, shifted = _generate(model, -1)
    (_, minus_one), = [r for r in shifted.runs if r[0].modality == "image"]
    torch.testing.assert_close(literal_v5, minus_one, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(literal_v5, ours)
