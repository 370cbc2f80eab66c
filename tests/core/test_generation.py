"""The any-to-any request: one cached generate, signal runs, hidden states, ordering, seeds, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nextgpt_core.model as model_module
from nextgpt_core import Conversation, ConversationError, Media
from nextgpt_core.conversation import Text
from nextgpt_core.signal_runs import SignalRunController


class _Scripted(SignalRunController):
    """Forces given run starts at given steps (the controller still completes the runs itself)."""

    script: dict[int, int] = {}

    def __call__(self, input_ids, scores):
        self.advance(input_ids[0])
        k = input_ids.shape[1]
        if self._open is None and k in self.script:
            return self._force(scores, self.script[k])
        return super().__call__(input_ids, scores)


@pytest.fixture()
def scripted(monkeypatch):
    def install(script: dict[int, int]) -> None:
        cls = type("Scripted", (_Scripted,), {"script": script})
        monkeypatch.setattr(model_module, "SignalRunController", cls)

    return install


@pytest.fixture()
def captured_runs(tiny_model, monkeypatch):
    """Record (modality, hidden) of every run handed to the decoders."""
    seen: list[tuple[str, torch.Tensor]] = []
    original = tiny_model.decode_run

    def spy(key, hidden, **kw):
        seen.append((key, hidden.clone()))
        return original(key, hidden, **kw)

    monkeypatch.setattr(tiny_model, "decode_run", spy)
    return seen


@pytest.fixture()
def forward_log(tiny_model):
    """Sequence length of every forward of the LLM's decoder stack."""
    lengths: list[int] = []

    def hook(module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids")
        lengths.append(int(x.shape[1]))

    handle = tiny_model.llm.model.register_forward_pre_hook(hook, with_kwargs=True)
    yield lengths
    handle.remove()


def _conversation(files) -> Conversation:
    return Conversation().user(Media.from_path(files["image"]), "describe it")


def test_tokens_added_in_composition_order_with_direct_ids(tiny_model):
    base = len(tiny_model.tokenizer) - len(tiny_model.tokens.added)
    added = tiny_model.tokens.added
    expected = ["<FImg>", "</FImg>", "[FIMG0]", "[FIMG1]", "[FIMG2]", "[FIMG3]", "<FAud>", "</FAud>", "[FAUD0]", "[FAUD1]", "<FDep>", "</FDep>"]
    assert list(added) == expected
    assert list(added.values()) == list(range(base, base + len(expected)))
    assert tiny_model.llm.get_input_embeddings().weight.shape[0] == len(tiny_model.tokenizer)


def test_media_spliced_between_wrapper_embeddings(tiny_model, fake_files):
    conv = _conversation(fake_files)
    embeds, _ = tiny_model.prepare_inputs(conv, 8)
    table = tiny_model.llm.get_input_embeddings().weight
    open_id, close_id = tiny_model.tokens.wrappers["fake_image"]
    rows = embeds[0]
    open_pos = [i for i in range(rows.shape[0]) if torch.equal(rows[i], table[open_id])]
    close_pos = [i for i in range(rows.shape[0]) if torch.equal(rows[i], table[close_id])]
    assert len(open_pos) == 1 and close_pos == [open_pos[0] + 2]  # one projected token in between
    media_row = rows[open_pos[0] + 1]
    expected = tiny_model.project_media([Media.from_path(fake_files["image"])], "fake_image")[0]
    torch.testing.assert_close(media_row, expected)


def test_one_prefill_then_one_token_steps(tiny_model, fake_files, forward_log):
    reply = tiny_model.generate(_conversation(fake_files), seed=1, max_new_tokens=12, want=["fake_audio"])
    n = len(reply.token_ids)
    prompt_len = forward_log[0]
    assert prompt_len > 10
    ends_with_run = reply.token_ids[-1] == tiny_model.tokens.signals["fake_audio"][-1]
    assert len(forward_log) == n + (1 if ends_with_run else 0)
    assert forward_log[1:] == [1] * (len(forward_log) - 1), "every step after the prefill feeds exactly one token"


def test_run_ending_the_reply_costs_one_extra_step_not_a_second_pass(tiny_model, fake_files, forward_log, captured_runs):
    # budget == run length: the wanted run is forced from the first token and ends the reply
    reply = tiny_model.generate(_conversation(fake_files), seed=2, max_new_tokens=2, want=["fake_audio"])
    assert reply.token_ids == tiny_model.tokens.signals["fake_audio"]
    assert forward_log[1:] == [1, 1]  # prefill, one decode step, one extra cached step for the last state
    assert [k for k, _ in captured_runs] == ["fake_audio"]


def test_recorded_states_equal_one_reference_forward(tiny_model, fake_files, captured_runs, reference_states):
    conv = _conversation(fake_files)
    for seed, budget in ((3, 16), (4, 4)):  # the second run ends the reply (extra-step path)
        captured_runs.clear()
        reply = tiny_model.generate(conv, seed=seed, max_new_tokens=budget, want=["fake_image"])
        p, ref = reference_states(tiny_model, conv, reply, budget)
        starts = [i for i, t in enumerate(reply.token_ids) if t == tiny_model.tokens.signals["fake_image"][0]]
        assert [k for k, _ in captured_runs] == ["fake_image"] * len(starts) and starts
        for (key, hidden), s in zip(captured_runs, starts):
            torch.testing.assert_close(hidden, ref[p + s : p + s + 4], rtol=1e-4, atol=1e-5)


def test_position_offset_minus_one_reads_the_previous_positions(fake_files, registry, reference_states):
    from nextgpt_core import NextGPT, load_composition

    data = load_composition("tiny").model_dump()
    data["signal"]["position_offset"] = -1
    model = NextGPT.from_composition(load_composition(data), registry=registry)
    seen = []
    original = model.decode_run
    model.decode_run = lambda key, hidden, **kw: (seen.append(hidden), original(key, hidden, **kw))[1]
    conv = _conversation(fake_files)
    reply = model.generate(conv, seed=5, max_new_tokens=8, want=["fake_image"])
    p, ref = reference_states(model, conv, reply, 8)
    s = reply.token_ids.index(model.tokens.signals["fake_image"][0])
    torch.testing.assert_close(seen[0], ref[p + s - 1 : p + s + 3], rtol=1e-4, atol=1e-5)


def test_two_images_and_a_sound_come_out_in_order(tiny_model, fake_files, scripted, monkeypatch):
    img0, aud0 = tiny_model.tokens.signals["fake_image"][0], tiny_model.tokens.signals["fake_audio"][0]
    mod = tiny_model.resolved.modalities["fake_image"]
    monkeypatch.setitem(tiny_model.resolved.modalities, "fake_image", type(mod)(**{**mod.__dict__, "max_per_reply": 2}))
    scripted({2: img0, 8: aud0, 11: img0})
    reply = tiny_model.generate(_conversation(fake_files), seed=6, max_new_tokens=20)
    kinds = [p.modality if isinstance(p, Media) else "text" for p in reply.parts]
    assert [k for k in kinds if k != "text"] == ["fake_image", "fake_audio", "fake_image"]
    assert kinds[0] == "text"  # two tokens of text came first
    assert reply.media[0].data.shape == (8, 8) and reply.media[1].data.shape == (32,)
    assert not np.array_equal(reply.media[0].data, reply.media[2].data)


def test_started_run_always_completes_even_when_the_budget_ends(tiny_model, fake_files, scripted):
    img = tiny_model.tokens.signals["fake_image"]
    scripted({3: img[0]})
    reply = tiny_model.generate(_conversation(fake_files), seed=7, max_new_tokens=7)
    assert reply.token_ids[3:7] == img and len(reply.media) == 1


def test_controller_never_leaves_a_partial_or_disordered_run():
    runs = {"a": [10, 11, 12, 13], "b": [20, 21]}
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        ctl = SignalRunController(runs=runs, caps={"a": 3, "b": 3}, want=["b"], eos_ids=[2], max_new_tokens=15)
        ids: list[int] = []
        for _ in range(15):
            scores = torch.randn(1, 30, generator=g)
            scores[0, [2, 10, 11, 12, 13, 20, 21]] += 4.0  # a model that loves signal tokens and EOS
            out = ctl(torch.tensor([ids], dtype=torch.long).reshape(1, -1), scores)
            tok = int(out.argmax())
            ids.append(tok)
            if tok == 2:
                break
        i = 0
        while i < len(ids):
            if ids[i] in (10, 20):
                run = runs["a"] if ids[i] == 10 else runs["b"]
                assert ids[i : i + len(run)] == run, (seed, ids)
                i += len(run)
            else:
                assert ids[i] not in (11, 12, 13, 21), (seed, ids)
                i += 1
        assert 20 in ids, f"wanted 'b' missing: {ids}"


def test_controller_caps_and_moves_eos_mass_to_a_wanted_run():
    ctl = SignalRunController(runs={"a": [10, 11]}, caps={"a": 1}, want=["a"], eos_ids=[2], max_new_tokens=10)
    scores = torch.zeros(1, 20)
    scores[0, 2] = 50.0  # the model wants to stop
    out = ctl(torch.zeros(1, 0, dtype=torch.long), scores.clone())
    assert int(out.argmax()) == 10 and out[0, 2] == float("-inf")
    done = SignalRunController(runs={"a": [10, 11]}, caps={"a": 1}, max_new_tokens=10)
    out = done(torch.tensor([[10, 11]]), torch.zeros(1, 20))
    assert out[0, 10] == float("-inf"), "a capped modality may not start again"


def test_want_forces_a_run_and_rejects_what_cannot_be_made(tiny_model, fake_files):
    reply = tiny_model.generate(_conversation(fake_files), seed=8, want=["fake_image", "fake_audio"])
    assert sorted(m.modality for m in reply.media) == ["fake_audio", "fake_image"]
    with pytest.raises(ConversationError, match=r"cannot generate 'fake_depth'.*outputs: fake_image, fake_audio"):
        tiny_model.generate(_conversation(fake_files), want=["fake_depth"])
    with pytest.raises(ConversationError, match="max_new_tokens 3 cannot hold"):
        tiny_model.generate(_conversation(fake_files), want=["fake_image"], max_new_tokens=3)


def test_same_seed_same_reply_and_seed_matters(tiny_model, fake_files):
    conv = _conversation(fake_files)
    a = tiny_model.generate(conv, seed=11, want=["fake_image"])
    b = tiny_model.generate(conv, seed=11, want=["fake_image"])
    c = tiny_model.generate(conv, seed=12, want=["fake_image"])
    assert a.token_ids == b.token_ids and a.seed == 11
    np.testing.assert_array_equal(a.media[0].data, b.media[0].data)
    assert a.token_ids != c.token_ids


def test_streaming_callback_gets_the_reply_text(tiny_model, fake_files):
    chunks: list[str] = []
    reply = tiny_model.generate(_conversation(fake_files), seed=13, on_text=chunks.append, want=["fake_audio"])
    assert len(chunks) > 1
    assert "".join(chunks).split() == reply.text.split()


def test_cancellation_between_steps(tiny_model, fake_files):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    reply = tiny_model.generate(_conversation(fake_files), seed=14, max_new_tokens=30, should_stop=should_stop)
    assert reply.cancelled and len(reply.token_ids) == 3 and any("cancelled" in n for n in reply.notices)


def test_generated_media_are_re_encoded_from_history(tiny_model, fake_files, monkeypatch):
    conv = _conversation(fake_files)
    reply = tiny_model.generate(conv, seed=15, want=["fake_image"])
    conv.add_response(reply).user("now change it")
    encoded: list[str] = []
    original = tiny_model.encode_media
    monkeypatch.setattr(tiny_model, "encode_media", lambda media, key=None: (encoded.append(key), original(media, key))[1])
    tiny_model.generate(conv, seed=16, max_new_tokens=4)
    assert encoded.count("fake_image") == 2  # the user's input and the generated image


def test_encoder_cache_is_keyed_by_content(tiny_model, fake_files, tmp_path):
    copy = tmp_path / "copy.fimg"
    copy.write_bytes(fake_files["other"].read_bytes())
    tiny_model.encoder_cache.clear()
    hits = tiny_model.encoder_cache.hits
    a = tiny_model.encode_media(Media.from_path(fake_files["other"]))
    b = tiny_model.encode_media(Media.from_path(copy))
    assert tiny_model.encoder_cache.hits == hits + 1 and torch.equal(a, b)


def test_context_budget_drops_oldest_turns_and_says_so(tiny_model, fake_files):
    conv = Conversation()
    for i in range(12):
        conv.user(f"question number {i}: " + "tell me about the weather in the mountains " * 3)
        conv.assistant(f"answer {i}: " + "it is sunny and cold with some wind " * 3)
    conv.user(Media.from_path(fake_files["image"]), "and this?")
    reply = tiny_model.generate(conv, seed=17, max_new_tokens=8)
    assert any("dropped the" in n and "oldest turn" in n for n in reply.notices)
    with pytest.raises(ConversationError, match="context budget"):
        tiny_model.generate(Conversation().user("word " * 600), max_new_tokens=8)


def test_bad_conversations(tiny_model, fake_files):
    with pytest.raises(ConversationError, match="last turn"):
        tiny_model.generate(Conversation().user("hi").assistant("hello"))
    with pytest.raises(ConversationError, match=r"'fake_audio' is not|not an input"):
        tiny_model.generate(Conversation().user(Media(modality="nope", data=np.zeros(3)), "x"))
    with pytest.raises(ConversationError, match="empty user turn"):
        Conversation().user()
    assert Conversation().user("a", Text("b")).turns[0].parts == [Text("a"), Text("b")]


def test_decoders_load_only_when_a_reply_needs_them(registry, fake_files):
    from nextgpt_core import NextGPT

    model = NextGPT.from_composition("tiny", registry=registry)
    assert not any(d.is_loaded for d in model.decoders.values())
    model.generate(_conversation(fake_files), want=["fake_audio"], seed=0, max_new_tokens=2)
    assert {k for k, d in model.decoders.items() if d.is_loaded} == {"fake_audio"}
    model.load_decoders()
    assert all(d.is_loaded for d in model.decoders.values())
