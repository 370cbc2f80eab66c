"""Tiny random-init CLIP text encoders with offline tokenizers, laid out like the real ones.

Diffusion pipelines of several modalities (Stable Diffusion, ZeroScope, AnimateDiff) condition on a CLIP text
encoder; their tiny builds (tests, the ``tiny`` composition) share this constructor. Nothing is downloaded.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

__all__ = ["bpe_merges", "learn_merges", "tiny_clip_text_parts"]


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0..255, in CLIP's vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


#: a few merges so that common words are single tokens (the rest falls back to byte symbols, never to unk)
_TINY_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>"), ("i", "n"),
    ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"),
)


def bpe_merges(counts: dict[tuple[str, ...], int], max_merges: int) -> list[tuple[str, str]]:
    """BPE merges from ``counts`` (a word as its tuple of symbols -> how often it occurs): the most frequent adjacent
    pair is merged first, ties broken by the pair itself, until every word is one symbol or ``max_merges`` merges
    exist. Deterministic. Each tokenizer family splits its words its own way before calling this."""
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: dict[tuple[str, str], int] = {}
        for symbols, n in counts.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for symbols, n in counts.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        counts = merged
    return merges


def learn_merges(corpus: Iterable[str], max_merges: int = 2000) -> list[tuple[str, str]]:
    """BPE merges learnt from ``corpus`` the way CLIP's tokenizer applies them (lower case, words split on
    whitespace and punctuation, ``</w>`` on a word's last symbol): the most frequent adjacent pair is merged first,
    ties broken by the pair itself, until every word is one symbol or ``max_merges`` merges exist. Deterministic.
    Only printable ASCII words are learnt (others fall back to byte symbols)."""
    counts: dict[tuple[str, ...], int] = {}
    for line in corpus:
        for word in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", line.lower()):
            if word.isascii():
                symbols = tuple(word[:-1]) + (word[-1] + "</w>",)
                counts[symbols] = counts.get(symbols, 0) + 1
    return bpe_merges(counts, max_merges)


def tiny_clip_text_parts(
    dim: int,
    *,
    length: int = 77,
    pad_token: str = "<|endoftext|>",
    hidden_act: str = "quick_gelu",
    num_layers: int = 2,
    merges: Sequence[tuple[str, str]] = (),
    heads: int | None = None,
    intermediate_size: int | None = None,
    projection: bool = False,
) -> tuple[Any, Any]:
    """A tiny random-init ``CLIPTextModel`` and an offline ``CLIPTokenizer`` laid out like the real ones.

    The vocabulary follows CLIP's order (256 byte symbols, the same with ``</w>``, merges, then
    ``<|startoftext|>`` and ``<|endoftext|>``), so ``""`` encodes as ``[BOS, EOS, PAD x (length-2)]`` exactly as
    the real tokenizer does. SD-1.5 pads with ``<|endoftext|>``; the OpenCLIP tokenizers of SD-2 / ZeroScope pad
    with ``"!"`` (id 0).

    Args:
        dim: hidden size of the text encoder = width of each ``prompt_embeds`` token.
        length: ``max_position_embeddings`` and ``model_max_length`` (77 as CLIP).
        pad_token: the tokenizer's padding token.
        hidden_act: ``quick_gelu`` (OpenAI CLIP, SD-1.5) or ``gelu`` (OpenCLIP, SD-2, ZeroScope).
        num_layers: transformer layers.
        merges: the BPE merges (default: a few fixed ones; :func:`learn_merges` learns them from a corpus, so
            that each of its words is one token).
        heads: attention heads (default 2, or 1 for an odd ``dim``); ``intermediate_size``: MLP width (``2 * dim``).
        projection: build ``CLIPTextModelWithProjection`` (a text tower with its projection head, for contrastive
            training) instead of ``CLIPTextModel``.

    Returns:
        ``(text_encoder, tokenizer)``; ``text_encoder(ids)[0]`` is ``(B, length, dim)``.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    merges = list(merges) or list(_TINY_MERGES)
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=length)
    heads = heads or (2 if dim % 2 == 0 else 1)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=dim,
        intermediate_size=intermediate_size or 2 * dim,
        projection_dim=dim,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        max_position_embeddings=length,
        hidden_act=hidden_act,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    model_class = CLIPTextModelWithProjection if projection else CLIPTextModel
    return model_class(config).eval(), tokenizer
