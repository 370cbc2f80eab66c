"""Rendering turns into prompt pieces: template, BOS policy, item merging, ids inserted directly."""

from __future__ import annotations

import numpy as np
import torch

from nextgpt_core import Conversation, Media, NextGPT, load_composition
from nextgpt_core.composition import PromptSettings
from nextgpt_core.prompting import IdsPiece, MediaPiece, TextPiece, render_conversation


def _render(conv, prompt=None, sum_items=False):
    return render_conversation(
        conv,
        prompt or PromptSettings(),
        modality_of=lambda m: m.modality,
        wrappers=lambda key: {"img": (900, 901), "aud": (902, 903)}[key],
        sum_items=lambda key: sum_items,
    )


def test_template_and_wrappers():
    a, b = Media("img", data=np.zeros(2)), Media("aud", data=np.ones(2))
    conv = Conversation().user(a, "what?").assistant("a dog", b).user("and?")
    header, turns, footer = _render(conv, PromptSettings(system="SYS"))
    assert header == [TextPiece("SYS")]
    assert turns[0] == [TextPiece("### Human: "), IdsPiece((900,)), MediaPiece("img", (a,)), IdsPiece((901,)), TextPiece(" what?\n")]
    assert turns[1] == [TextPiece("### Assistant: a dog "), IdsPiece((902,)), MediaPiece("aud", (b,)), IdsPiece((903,)), TextPiece("\n###")]
    assert turns[2] == [TextPiece("### Human: and?\n")]
    assert footer == [TextPiece("### Assistant:")]


def test_several_items_of_one_modality_summed_into_one_span():
    a, b = Media("img", data=np.zeros(2)), Media("img", data=np.ones(2))
    _, turns, _ = _render(Conversation().user(a, b, "x"), sum_items=True)
    assert turns[0][1:4] == [IdsPiece((900,)), MediaPiece("img", (a, b)), IdsPiece((901,))]
    _, separate, _ = _render(Conversation().user(a, b, "x"), sum_items=False)
    assert sum(isinstance(p, MediaPiece) for p in separate[0]) == 2


def test_bos_policies_and_summed_embeddings(registry, fake_files):
    data = load_composition("tiny").model_dump()
    data["prompt"]["bos"] = "every_segment"
    data["modalities"] = {"fake_image": {"preset": "tiny", "item_merge": "sum"}}
    model = NextGPT.from_composition(load_composition(data), registry=registry)
    bos_row = model.llm.get_input_embeddings().weight[model.tokenizer.bos_token_id]
    conv = Conversation().user(Media.from_path(fake_files["image"]), Media.from_path(fake_files["other"]), "hi")
    embeds, _ = model.prepare_inputs(conv, 4)
    n_bos = sum(torch.equal(r, bos_row) for r in embeds[0])
    assert n_bos == 3  # "### Human: ", " hi\\n", "### Assistant:" each get their own BOS (official v0 demo)
    one = model.project_media([Media.from_path(fake_files["image"])], "fake_image")
    two = model.project_media([Media.from_path(fake_files["other"])], "fake_image")
    open_id = model.tokens.wrappers["fake_image"][0]
    table = model.llm.get_input_embeddings().weight
    pos = next(i for i, r in enumerate(embeds[0]) if torch.equal(r, table[open_id]))
    torch.testing.assert_close(embeds[0, pos + 1], (one + two)[0])
    default = NextGPT.from_composition("tiny", registry=registry)
    start, _ = default.prepare_inputs(conv, 4)
    assert torch.equal(start[0, 0], bos_row) and sum(torch.equal(r, bos_row) for r in start[0]) == 1
