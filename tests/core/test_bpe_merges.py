"""The one BPE merge learner that CLIP-style (tiny_clip) and byte-level (the audio toy decoder's) tokenizers share."""

from nextgpt_core.tiny_clip import bpe_merges, learn_merges


def test_most_frequent_pair_first_then_ties_by_the_pair_until_words_are_whole():
    counts = {("a", "b", "c"): 3, ("a", "b"): 2, ("y", "z"): 5, ("x", "w"): 5}
    assert bpe_merges(counts, 10) == [("a", "b"), ("x", "w"), ("y", "z"), ("ab", "c")]  # a-b: 3 + 2
    assert bpe_merges(counts, 2) == [("a", "b"), ("x", "w")]
    assert bpe_merges({("a",): 4}, 10) == []


def test_clip_style_merges_make_every_corpus_word_one_symbol():
    merges = learn_merges(["a red circle", "a red square"])
    symbols = {a + b for a, b in merges}
    assert {"red</w>", "circle</w>", "square</w>"} <= symbols
