"""build_example / collate_batch: the training layout is the inference layout, labels cover exactly the assistant
text and the signal ids (inserted as ids), spans point at the runs, padding changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nextgpt_core.conversation import Conversation, Media, Text, Turn
from nextgpt_core.errors import DatasetError
from nextgpt_core.training.collate import (
    IGNORE_INDEX,
    MEDIA_ID,
    PAD_ID,
    build_example,
    collate_batch,
    min_positions,
)
from nextgpt_core.training.data import MediaLoader, Target, TrainingSample
from nextgpt_core.training.losses import lm_loss

CAPTION = "a red square"
BUDGET = 8  # max_new_tokens handed to prepare_inputs for the reference prompt


def stage1_sample(image) -> TrainingSample:
    """Official stage 1: <media> generate a caption -> caption."""
    conv = Conversation(
        [
            Turn("user", [Media(modality="fake_image", path=image), Text("generate a caption")]),
            Turn("assistant", [Text("a smooth gradient")]),
        ]
    )
    return TrainingSample(conv, [], ("mem", 0), "s1")


def stage2_sample(caption: str = CAPTION) -> TrainingSample:
    """Official stage 2: caption -> caption + the image signal run."""
    conv = Conversation([Turn("user", [Text(caption)]), Turn("assistant", [Text(caption)])])
    return TrainingSample(conv, [Target("fake_image", caption, None, 1, 1)], ("mem", 1), "s2")


def two_target_sample() -> TrainingSample:
    conv = Conversation(
        [
            Turn("user", [Text("show me a cat and let me hear it")]),
            Turn("assistant", [Text("Here is the cat:"), Text("and its meow.")]),
        ]
    )
    targets = [Target("fake_image", "a cat", None, 1, 1), Target("fake_audio", "a meow", None, 1, 2)]
    return TrainingSample(conv, targets, ("mem", 2), "s3")


def text_ids(model, text):
    return model.tokenizer(text, add_special_tokens=False).input_ids


def labelled(ex):
    lab = ex.labels[0]
    return lab[lab != IGNORE_INDEX].tolist()


def check_inference_layout(model, sample, ex, reference_states):
    """The prompt part equals prepare_inputs of the conversation without the last assistant turn; the states at
    each span equal a plain forward over prompt + reply tokens (what inference records for that reply)."""
    prefix = Conversation(sample.conversation.turns[:-1])
    with torch.no_grad():
        prompt, _ = model.prepare_inputs(prefix, BUDGET)
        p = prompt.shape[1]
        assert torch.allclose(ex.inputs_embeds[:, :p], prompt, atol=1e-6)
        reply = ex.input_ids[0, p:].tolist()
        assert MEDIA_ID not in reply
        assert labelled(ex) == [i for i in reply], "every reply token is labelled and nothing before it"
        assert (ex.labels[0, :p] == IGNORE_INDEX).all()
        plen, ref = reference_states(model, prefix, SimpleNamespace(token_ids=reply), BUDGET)
        assert plen == p
        out = model.llm(inputs_embeds=ex.inputs_embeds, output_hidden_states=True)
        states = out.hidden_states[model.composition.signal.hidden_layer][0]
        off = model.composition.signal.position_offset
        for span in ex.signal_spans:
            assert torch.allclose(states[span.start + off : span.end + off], ref[span.start + off : span.end + off], atol=1e-5)


def test_stage1_media_to_caption(tiny_model, registry, fake_files, reference_states):
    model = tiny_model
    sample = stage1_sample(fake_files["image"])
    ex = build_example(model, sample, media_loader=MediaLoader(registry))
    L = ex.length
    assert ex.inputs_embeds.shape == (1, L, model.llm.config.hidden_size) and ex.labels.shape == (1, L)
    ids = ex.input_ids[0].tolist()
    open_id, close_id = model.tokens.wrappers["fake_image"]
    m = ids.index(MEDIA_ID)
    assert ids[m - 1] == open_id and ids[m + 1] == close_id and ids.count(MEDIA_ID) == 1
    assert ids[0] == model.tokenizer.bos_token_id
    # labels: exactly the caption (with the template's leading space) and the closing "\n###"
    assert labelled(ex) == text_ids(model, " a smooth gradient\n###")
    assert model.tokenizer.decode(labelled(ex)) == " a smooth gradient\n###"
    assert ex.signal_spans == []
    # non-media positions are the embedding lookup of their ids
    keep = ex.input_ids[0] != MEDIA_ID
    with torch.no_grad():
        lookup = model.llm.get_input_embeddings()(ex.input_ids[0][keep])
    assert torch.allclose(ex.inputs_embeds[0][keep], lookup)
    # the media position is the projected encoder output, with autograd through the input projector
    assert ex.inputs_embeds.requires_grad
    check_inference_layout(model, sample, ex, reference_states)
    # same layout without a media loader (the model's MediaIO reads the file)
    ex2 = build_example(model, sample)
    assert torch.allclose(ex.inputs_embeds, ex2.inputs_embeds) and torch.equal(ex.labels, ex2.labels)


def test_stage2_signal_ids_inserted_as_ids(tiny_model, reference_states):
    model = tiny_model
    sample = stage2_sample()
    ex = build_example(model, sample)
    signals = model.tokens.signals["fake_image"]
    (span,) = ex.signal_spans
    assert (span.modality, span.caption, span.target_id) == ("fake_image", CAPTION, sample.targets[0].target_id)
    assert span.end - span.start == len(signals)
    assert ex.input_ids[0, span.start : span.end].tolist() == signals
    # official stage 2 text: caption[IMG0]...[IMGn]\n### (no space before the run), all labelled
    expected = text_ids(model, " " + CAPTION) + signals + text_ids(model, "\n###")
    assert labelled(ex) == expected
    text_only = [i for i in labelled(ex) if i not in model.tokens.all_signal_ids]
    assert model.tokenizer.decode(text_only) == f" {CAPTION}\n###"
    with torch.no_grad():
        lookup = model.llm.get_input_embeddings()(ex.input_ids[0])
    assert MEDIA_ID not in ex.input_ids[0].tolist()
    assert torch.allclose(ex.inputs_embeds[0], lookup)
    check_inference_layout(model, sample, ex, reference_states)


def test_two_targets_in_one_turn(tiny_model, reference_states):
    model = tiny_model
    sample = two_target_sample()
    ex = build_example(model, sample)
    img, aud = model.tokens.signals["fake_image"], model.tokens.signals["fake_audio"]
    assert [s.modality for s in ex.signal_spans] == ["fake_image", "fake_audio"]
    assert [s.caption for s in ex.signal_spans] == ["a cat", "a meow"]
    for span, ids in zip(ex.signal_spans, (img, aud)):
        assert ex.input_ids[0, span.start : span.end].tolist() == ids
    expected = text_ids(model, " Here is the cat:") + img + text_ids(model, " and its meow.") + aud + text_ids(model, "\n###")
    assert labelled(ex) == expected
    check_inference_layout(model, sample, ex, reference_states)


def test_multi_turn_history_labels_every_assistant_turn(tiny_model):
    model = tiny_model
    conv = Conversation(
        [Turn("user", [Text("hi")]), Turn("assistant", [Text("hello")]), Turn("user", [Text("draw")]), Turn("assistant", [Text("ok")])]
    )
    ex = build_example(model, TrainingSample(conv, [Target("fake_image", "x", None, 3, 1)]))
    run = model.tokens.signals["fake_image"]
    assert labelled(ex) == text_ids(model, " hello\n###") + text_ids(model, " ok") + run + text_ids(model, "\n###")


def test_bad_targets_are_reported(tiny_model):
    conv = Conversation([Turn("user", [Text("a")]), Turn("assistant", [Text("b")])])
    with pytest.raises(DatasetError, match="not an assistant turn"):
        build_example(tiny_model, TrainingSample(conv, [Target("fake_image", "b", None, 0, 0)], sample_id="bad"))
    with pytest.raises(DatasetError, match="not an output"):
        build_example(tiny_model, TrainingSample(conv, [Target("fake_depth", "b", None, 1, 1)], sample_id="bad"))


def test_over_long_samples_are_cut_at_the_limit_before_embedding(tiny_model, fake_files, monkeypatch):
    """A sample longer than the limit is cut at it, as the official loaders cut theirs (it used to stop the whole
    run at its first step, and --resume replayed it): what is past the limit is never embedded (media past it are
    never encoded), a signal run that does not fit whole is no target and stays unlabelled."""
    model = tiny_model
    whole = build_example(model, stage2_sample())
    assert not whole.truncated
    span = whole.signal_spans[0]
    cut = span.start + 2  # inside the signal run
    ex = build_example(model, stage2_sample(), max_length=cut)
    assert ex.truncated and ex.input_ids.shape[1] == ex.labels.shape[1] == ex.inputs_embeds.shape[1] == cut
    assert ex.signal_spans == []
    assert torch.equal(ex.input_ids[0], whole.input_ids[0, :cut])
    assert torch.equal(ex.labels[0, : span.start], whole.labels[0, : span.start])
    assert (ex.labels[0, span.start :] == IGNORE_INDEX).all()  # the partial run is not trained on
    assert torch.allclose(ex.inputs_embeds[0], whole.inputs_embeds[0, :cut])
    fits = build_example(model, stage2_sample(), max_length=span.end)
    assert fits.truncated and fits.signal_spans == whole.signal_spans  # the run fits whole: it is a target

    # a sample whose text fits but whose image lies past the limit: cut before the image, which is never encoded
    # (a sample whose text alone cannot fit is refused before tokenizing: tests/training/test_data_bounds.py)
    conv = Conversation([Turn("user", [Text("a long question " * 10), Media(modality="fake_image", path=fake_files["image"])]),
                         Turn("assistant", [Text("an answer")])])
    sample = TrainingSample(conv, [])
    media_at = build_example(model, sample).input_ids[0].tolist().index(MEDIA_ID)
    assert min_positions(model, sample) <= media_at
    encoded = []
    real = type(model).encode_media
    monkeypatch.setattr(type(model), "encode_media", lambda self, *a, **k: encoded.append(a) or real(self, *a, **k))
    short = build_example(model, sample, max_length=media_at)
    assert short.truncated and short.input_ids.shape[1] == media_at and MEDIA_ID not in short.input_ids[0].tolist()
    assert encoded == []  # the image past the limit was never encoded


def test_collate_batch_padding_keeps_losses(tiny_model, fake_files):
    model = tiny_model
    examples = [build_example(model, s) for s in (stage1_sample(fake_files["image"]), stage2_sample(), two_target_sample())]
    batch = collate_batch(examples)
    longest = max(e.length for e in examples)
    assert batch.inputs_embeds.shape[:2] == batch.labels.shape == batch.attention_mask.shape == (3, longest)
    assert batch.lengths == [e.length for e in examples]
    for i, e in enumerate(examples):
        n = e.length
        assert (batch.labels[i, n:] == IGNORE_INDEX).all() and (batch.input_ids[i, n:] == PAD_ID).all()
        assert (batch.attention_mask[i, :n] == 1).all() and (batch.attention_mask[i, n:] == 0).all()
        assert batch.signal_spans[i] == e.signal_spans
    with torch.no_grad():
        out = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask)
        for i, e in enumerate(examples):
            alone = model.llm(inputs_embeds=e.inputs_embeds).logits
            assert torch.allclose(out.logits[i : i + 1, : e.length], alone, atol=1e-5)
            assert torch.allclose(lm_loss(out.logits[i : i + 1], batch.labels[i : i + 1]), lm_loss(alone, e.labels), atol=1e-5)
