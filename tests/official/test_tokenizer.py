"""Tokenizer fidelity: Vicuna's `tokenizer.model` (SentencePiece) loads, and the ids nextgpt feeds for the v0 prompt
are the ids the official code fed with its slow tokenizer (transformers 4.29 `LlamaTokenizer(use_fast=False)`),
checked on a tiny SentencePiece model trained offline here.

The official slow tokenizer's rules, reproduced with the `sentencepiece` library itself: text is split at added
tokens (`<Img>`, `[IMG0]`, ...), the whitespace around each added token is stripped, and every remaining chunk is
`sp.encode`d on its own (so each starts with the dummy-prefix piece). At inference the demo split the prompt with
`re.split(r' <|> ', text)` and put a BOS before every text segment (`prepare_generation_embedding`)."""

from __future__ import annotations

import io
import json
import random
import re

import pytest
import sentencepiece  # the [official] extra; `make test` installs it
import torch

from nextgpt_core import Conversation, Media, NextGPT
from nextgpt_core.composition import load_composition

from .conftest import TINY_V0


CORPUS = [
    "### Human: generate a caption", "### Assistant: a dog runs on the beach.", "Describe this image please.",
    "What is in the picture? Show me a picture of a cat.", "Hello, how are you? I am fine, thank you!",
    "Make a short video of waves; play the sound of rain.", "Sure thing! Here is an image of 12 red apples.",
]
ADDED = ["<Img>", "</Img>", *[f"[IMG{i}]" for i in range(4)], *[f"[VID{i}]" for i in range(24)], *[f"[AUD{i}]" for i in range(8)]]


@pytest.fixture(scope="module")
def sp_folder(tmp_path_factory):
    """A tiny Llama saved as a Hugging Face folder with a SentencePiece `tokenizer.model` (Llama's trainer settings:
    BPE, byte fallback, unk/bos/eos = 0/1/2, dummy prefix, digits split)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=400, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, character_coverage=1.0, minloglevel=2,
    )
    folder = tmp_path_factory.mktemp("vicuna-tiny")
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=401, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=-1 + 1)).save_pretrained(folder)  # 401 rows: Vicuna v0's extra row
    return folder


@pytest.fixture(scope="module")
def sp(sp_folder):
    return sentencepiece.SentencePieceProcessor(model_file=str(sp_folder / "tokenizer.model"))


@pytest.fixture(scope="module")
def model(sp_folder, real_registry):
    text = TINY_V0.replace("[llm.tiny]", f'[llm]\npath = "{sp_folder}"\ndummy_prefix = "always"\n[llm.unused]', 1)
    text = re.sub(r"\[llm\.unused\][^\[]*", "", text).replace("first_added_id = 300", "first_added_id = 400")
    import tomllib

    return NextGPT.from_composition(load_composition(tomllib.loads(text)), registry=real_registry)


def slow_ids(sp, text: str) -> list[int]:
    """transformers 4.29's slow LlamaTokenizer on ``text`` (added tokens given ids 400...): split at added tokens,
    strip around them, encode each chunk with SentencePiece."""
    pattern = "(" + "|".join(re.escape(t) for t in ADDED) + ")"
    ids: list[int] = []
    chunks = re.split(pattern, text)
    for i, chunk in enumerate(chunks):
        if chunk in ADDED:
            ids.append(400 + ADDED.index(chunk))
            continue
        if i > 0:
            chunk = chunk.lstrip()
        if i + 1 < len(chunks):
            chunk = chunk.rstrip()
        if chunk:
            ids.extend(sp.encode(chunk))
    return ids


def test_tokenizer_model_loads_with_the_v0_ids(model, sp):
    tok = model.tokenizer
    assert type(tok).__name__ == "LlamaTokenizer"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)  # pad = eos, as the official code
    assert [model.tokens.added[t] for t in ADDED] == list(range(400, 438))
    assert model.llm.get_input_embeddings().weight.shape[0] == 438  # 401 rows resized to 400 + 38


def test_every_text_encodes_as_sentencepiece_does(model, sp):
    rng = random.Random(0)
    words = ["hello", "###", " Human:", " ", "  ", "\n", "dog", " Assistant:", "é", "12", "?", "caption"]
    for _ in range(300):
        text = "".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        assert list(model._tokenize(text)) == sp.encode(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "### Human: <Img>",                                              # stage-1 prompt_wrap, before the media token
        "</Img> generate a caption\n### Assistant: ",                    # ... and after it
        "a red square[IMG0] [IMG1] [IMG2] [IMG3]\n###",                  # stage-2 target with its signal run
        "[VID0] [VID1] [VID2]",                                          # gen_prefix of a run: N ids, no spaces
    ],
)
def test_template_pieces_match_the_slow_tokenizer(model, sp, text):
    """Text pieces as nextgpt tokenizes them (wrappers and signal tokens inserted as ids, text stripped around them)
    give the slow tokenizer's ids."""
    pattern = "(" + "|".join(re.escape(t) for t in ADDED) + ")"
    chunks = [c for c in re.split(pattern, text)]
    ids: list[int] = []
    for i, chunk in enumerate(chunks):
        if chunk in ADDED:
            ids.append(model.tokens.added[chunk])
        else:
            if i > 0:
                chunk = chunk.lstrip()
            if i + 1 < len(chunks):
                chunk = chunk.rstrip()
            if chunk:
                ids.extend(model._tokenize(chunk))
    assert ids == slow_ids(sp, text)


def official_inference_ids(sp, history: list[tuple[str, str]], prompt: str, media: bool) -> list[object]:
    """The demo's prompt (demo_app.py::predict) and prepare_generation_embedding's split, BOS per text segment;
    a media span is ``"<media>"`` between the wrapper ids. One change: the demo's doubled space after the media tags
    (``f'<Image>{p}</Image> ' + f' {prompt}'``) is written once, as nextgpt (and the training text) does. Without
    media or history the demo's first turn is ``"### Human: " + f" {prompt}"``: two spaces, kept."""
    text = ""
    if not history:
        text += "### Human: "
    else:
        for i, (q, a) in enumerate(history):
            text += (f"### Human: {q}\n### Assistant: {a}\n###" if i == 0 else f" Human: {q}\n### Assistant: {a}\n###")
        text += " Human: "
    if media:
        text += "<Image>pic.png</Image> "
    elif not history:
        text += " "
    text += prompt + "\n### Assistant:"
    out: list[object] = []
    for segment in re.split(r" <|> ", text):
        if segment.startswith("Image>"):
            out += [400, "<media>", 401]
        else:
            out += [1, *sp.encode(segment)]
    return out


def _rows(model, conversation):
    embeds, _ = model.prepare_inputs(conversation, 8)
    return embeds[0]


@pytest.mark.parametrize("history", [[], [("hi there", "hello! how can I help?")], [("q one", "a one"), ("q two", "a two")]])
@pytest.mark.parametrize("media", [False, True])
def test_inference_prompt_matches_the_official_demo(model, sp, tmp_path, history, media):
    from nextgpt_image.media import ImageIO
    from PIL import Image

    conversation = Conversation()
    for q, a in history:
        conversation.user(q).assistant(a)
    parts = []
    if media:
        parts.append(Media.from_path(ImageIO().write(Image.new("RGB", (32, 32), (200, 10, 10)), tmp_path / "pic.png"), modality="image"))
    conversation.user(*parts, "what is this?")
    expected = official_inference_ids(sp, history, "what is this?", media)
    rows = _rows(model, conversation)
    assert rows.shape[0] == len(expected)
    table = model.llm.get_input_embeddings().weight
    for i, item in enumerate(expected):
        if item == "<media>":
            with torch.no_grad():
                want = model.project_media([parts[0]], "image")[0]
            torch.testing.assert_close(rows[i], want)
        else:
            torch.testing.assert_close(rows[i], table[item], msg=f"position {i}: expected id {item}")


def test_text_only_first_turn_encodes_the_human_prefix_apart(model, sp):
    """Official v0 (prompt_wrap in training; the demo's "### Human:  {text}"): "### Human: " is encoded apart from the
    text, one more "▁" piece than encoding "### Human: {text}" as one string (what nextgpt did)."""
    rows = _rows(model, Conversation().user("what is this?"))
    apart = [1, *sp.encode("### Human: "), *sp.encode("what is this?\n### Assistant:")]
    joined = [1, *sp.encode("### Human: what is this?\n### Assistant:")]
    assert len(apart) == len(joined) + 1 and sp.id_to_piece(apart[len(sp.encode("### Human: "))]) == "\u2581"
    table = model.llm.get_input_embeddings().weight
    assert rows.shape[0] == len(apart)
    for i, token in enumerate(apart):
        torch.testing.assert_close(rows[i], table[token], msg=f"position {i}")


def test_training_layout_has_one_bos_and_the_human_prefix_apart(model, sp, tmp_path):
    """Official v0 training (prompt_wrap): one BOS at the start and none after </Img>; a text-only first turn starts
    with "### Human: " encoded apart from the text after it."""
    from nextgpt_image.media import ImageIO
    from PIL import Image

    from nextgpt_core.conversation import Text, Turn
    from nextgpt_core.training.collate import build_example
    from nextgpt_core.training.data import Target, TrainingSample

    picture = Media.from_path(ImageIO().write(Image.new("RGB", (32, 32), (9, 9, 9)), tmp_path / "p.png"), modality="image")
    stage1 = TrainingSample(Conversation([Turn("user", [picture, Text("generate a caption")]),
                                          Turn("assistant", [Text("a dark square")])]), [])
    ids = build_example(model, stage1).input_ids[0].tolist()
    close = model.tokens.wrappers["image"][1]
    assert ids.count(1) == 1 and ids[0] == 1 and ids[ids.index(close) + 1] != 1
    stage2 = TrainingSample(Conversation([Turn("user", [Text("a dark square")]), Turn("assistant", [Text("a dark square")])]),
                            [Target("image", "a dark square", None, 1, 1)])
    ids = build_example(model, stage2).input_ids[0].tolist()
    head = [1, *sp.encode("### Human: "), *sp.encode("a dark square")]
    assert ids[: len(head)] == head and ids.count(1) == 1
