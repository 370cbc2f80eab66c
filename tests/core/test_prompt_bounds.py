"""A prompt's cost is bounded before the work: a text that cannot fit the context is refused before it is tokenized
or embedded, and fitting a long history to the context embeds it O(log n) times (join_turns) or each turn at most
once (separate turns), not once per dropped turn."""

from __future__ import annotations

import math

import pytest

from nextgpt_core import Conversation, ConversationError, NextGPT, load_composition


@pytest.fixture(scope="module")
def models(registry):
    def make(join: bool) -> NextGPT:
        data = load_composition("tiny").model_dump()
        data["prompt"]["join_turns"] = join
        data["generation"]["max_context_tokens"] = 96
        data["generation"]["max_new_tokens"] = 8
        return NextGPT.from_composition(load_composition(data), registry=registry)

    return {"join": make(True), "separate": make(False)}


def _spy(model, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = type(model).embed_pieces

    def counting(self, pieces):
        pieces = list(pieces)
        calls.append(len(pieces))
        return real(self, pieces)

    monkeypatch.setattr(type(model), "embed_pieces", counting)
    return calls


@pytest.mark.parametrize("layout", ["join", "separate"])
def test_a_huge_prompt_is_refused_before_it_is_tokenized(models, layout, monkeypatch):
    model = models[layout]
    calls = _spy(model, monkeypatch)
    tokenized = []
    monkeypatch.setattr(model.tokenizer, "encode", lambda *a, **k: tokenized.append(1) or [])
    conversation = Conversation().user("x" * 5_000_000)  # 27 MB took 9 GB before its 400
    with pytest.raises(ConversationError, match=r"the last turn needs at least \d+ positions \(its text alone\)"):
        model.prepare_inputs(conversation, 8)
    assert calls == [] and tokenized == []


@pytest.mark.parametrize("layout", ["join", "separate"])
def test_a_long_history_is_fitted_without_re_embedding_it_per_dropped_turn(models, layout, monkeypatch):
    model = models[layout]
    conversation = Conversation()
    turns = 400
    for i in range(turns // 2):
        conversation.user(f"question {i}")
        conversation.assistant(f"answer {i}")
    conversation.user("and now?")
    calls = _spy(model, monkeypatch)
    embeds, notices = model.prepare_inputs(conversation, 8)
    assert embeds.shape[1] <= 96 - 8 - 1 and notices and "oldest turn(s)" in notices[0]
    if layout == "join":
        assert len(calls) <= 2 * math.ceil(math.log2(turns)) + 2, len(calls)  # one per dropped turn before
    else:
        kept = int(notices[0].split()[2])
        assert len(calls) <= (turns + 1 - kept) + 4, (len(calls), kept)  # the kept turns, one more, head and tail
    # the same reply as keeping the turns that fit and nothing else
    dropped = int(notices[0].split()[2])
    rest = Conversation(turns=conversation.turns[dropped:])
    monkeypatch.undo()
    again, more = model.prepare_inputs(rest, 8)
    assert more == [] and again.shape == embeds.shape and bool((again == embeds).all())
