"""The language model side: build (or load from a local folder) any Hugging Face causal LM and its tokenizer,
and add the modalities' wrapper and signal tokens with known ids.

For the ``tiny`` composition the LLM is a random-init ``LlamaForCausalLM`` and the tokenizer a byte-level BPE
trained offline from a small built-in corpus, so nothing is ever downloaded.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from .composition import LLMSettings, TinyLLMSettings
from .errors import WeightsNotFoundError

__all__ = ["TokenTable", "add_modality_tokens", "always_dummy_prefix", "build_language_model", "derived_seed", "train_tiny_tokenizer"]

_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]

# A small English corpus for the tiny tokenizer: prompt-template pieces and caption-like sentences.
_CORPUS = """### Human: ### Assistant: Human: Assistant:
Describe this image. What is in the picture? Generate a caption. Show me a picture of a red square.
Can you illustrate a scene of a dog running on the beach? Sure thing! Here is an image of a cat.
Make a short video of waves on the sea. Play the sound of rain on a tin roof. Here is the audio.
A small blue circle on a white background. A green triangle next to a yellow star. The sky is clear.
The quick brown fox jumps over the lazy dog. A person is playing the guitar in a quiet room.
What do you hear in this clip? A bird sings while cars pass by. The video shows a spinning top.
Thank you! You are welcome. Hello, how are you? I am fine. Tell me a story about a robot.
"""


def derived_seed(seed: int, name: str) -> int:
    """A stable per-component seed (same composition seed and name -> same random init, in any process)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def train_tiny_tokenizer(vocab_size: int = 300, corpus: Iterable[str] | None = None) -> Any:
    """Train a byte-level BPE tokenizer offline (deterministic) and wrap it as ``PreTrainedTokenizerFast``.

    Ids 0-3 are ``<unk> <s> </s> <pad>``; 256 byte symbols follow, then merges up to ``vocab_size``, learnt from
    ``corpus`` (default: a small built-in English corpus).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = list(corpus) if corpus is not None else _CORPUS.splitlines() * 4
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_llama_config(settings: TinyLLMSettings, vocab_size: int, **token_ids: Any) -> Any:
    """The ``LlamaConfig`` of a tiny LLM: ``settings``' sizes, ``vocab_size`` rows, and any ``bos/eos/pad_token_id``
    given (the meta-device layout in ``nextgpt_core.official.layout`` builds the same config without a tokenizer)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        num_key_value_heads=settings.num_key_value_heads,
        max_position_embeddings=settings.max_position_embeddings,
        **token_ids,
    )


def _tiny_llm(settings: TinyLLMSettings, vocab_size: int, tokenizer: Any, seed: int) -> Any:
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(
        settings,
        vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "llm"))
        return LlamaForCausalLM(config)


def build_language_model(settings: LLMSettings, *, seed: int = 0) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for the composition's LLM settings, in eval mode, frozen.

    A local ``path`` is loaded with ``local_files_only=True``; a missing folder raises
    :class:`WeightsNotFoundError` (nextgpt never downloads weights).
    """
    dtype = getattr(torch, settings.dtype)
    if settings.tiny is not None:
        tokenizer = train_tiny_tokenizer(settings.tiny.tokenizer_vocab_size)
        model = _tiny_llm(settings.tiny, len(tokenizer), tokenizer, seed).to(dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(settings.path or "")
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(f"llm.path {str(path)!r} has no config.json (set it to a local model folder)")
        from .composition import check_llm_folder

        check_llm_folder(str(path))  # a causal LM with a vocabulary, before anything loads
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    if settings.dummy_prefix == "always":
        always_dummy_prefix(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer


def always_dummy_prefix(tokenizer: Any) -> None:
    """Make a SentencePiece-converted tokenizer prepend ``"▁"`` to every piece of text it encodes, as the
    SentencePiece library does (``add_dummy_prefix``), also when the text already starts with a space.

    transformers 5's tokenizers-backed ``LlamaTokenizer`` uses a ``Metaspace`` pre-tokenizer that skips the prefix
    when the text starts with a space, so ``" hi"`` gives one id less than in the official (slow, 4.29) tokenizer.
    This sets the normalizer ``Prepend("▁") + Replace(" ", "▁")`` and no pre-tokenizer, the form that matches
    ``sentencepiece.encode`` (tests/official/test_tokenizer.py checks it against the library).

    Raises:
        ConfigError: the tokenizer is not a SentencePiece (Metaspace) one.
    """
    from tokenizers import normalizers, pre_tokenizers

    from .errors import ConfigError

    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if not isinstance(pre, pre_tokenizers.Metaspace):
        raise ConfigError(
            f"llm.dummy_prefix = \"always\" needs a SentencePiece tokenizer (Metaspace pre-tokenizer); "
            f"{type(tokenizer).__name__} has {type(pre).__name__}"
        )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None


@dataclass
class TokenTable:
    """Ids of the tokens the modalities added: wrappers per modality, signal runs per modality.

    Attributes:
        added: every added token, in the order added (ids are consecutive for a fresh tokenizer).
        wrappers: ``{modality: (open_id, close_id)}``.
        signals: ``{modality: [id_0, ..., id_{N-1}]}``.
    """

    added: dict[str, int] = field(default_factory=dict)
    wrappers: dict[str, tuple[int, int]] = field(default_factory=dict)
    signals: dict[str, list[int]] = field(default_factory=dict)

    @property
    def new_ids(self) -> list[int]:
        """Ids of all added tokens (the rows a training stage may update)."""
        return sorted(set(self.added.values()))

    def signal_owner(self, token_id: int) -> tuple[str, int] | None:
        """``(modality, index)`` if ``token_id`` is a signal token, else ``None``."""
        for key, ids in self.signals.items():
            if token_id in ids:
                return key, ids.index(token_id)
        return None

    @property
    def all_signal_ids(self) -> set[int]:
        """Every signal-token id."""
        return {i for ids in self.signals.values() for i in ids}


def add_modality_tokens(
    model: Any,
    tokenizer: Any,
    modalities: Iterable[tuple[str, tuple[str, str] | None, tuple[str, ...]]],
    *,
    seed: int = 0,
    first_added_id: int | None = None,
) -> TokenTable:
    """Add each modality's wrapper then signal tokens, in composition order, and resize the embeddings.

    Tokens already in the tokenizer keep their ids (a released checkpoint's tokenizer); new ones are appended.
    New embedding and LM-head rows get the model's default init (``mean_resizing=False``, as the official code),
    seeded so the same composition always gets the same rows.

    Args:
        modalities: ``(key, wrapper_tokens or None, signal_tokens)`` per modality, in composition order.
        first_added_id: when given, the tokens must get the ids ``first_added_id, first_added_id + 1, ...`` in
            order (``[vocabulary] first_added_id``); otherwise :class:`ConfigError` names the first that does not.
    """
    from tokenizers import AddedToken

    table = TokenTable()
    wanted: list[str] = []
    plan = list(modalities)
    for key, wrappers, signals in plan:
        for tok in (*(wrappers or ()), *signals):
            if tok not in wanted:
                wanted.append(tok)
    vocab = tokenizer.get_vocab()
    new = [t for t in wanted if t not in vocab]
    if new:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    for tok in wanted:
        table.added[tok] = tokenizer.convert_tokens_to_ids(tok)
    if first_added_id is not None:
        for offset, tok in enumerate(wanted):
            if table.added[tok] != first_added_id + offset:
                from .errors import ConfigError

                raise ConfigError(
                    f"added token {tok!r} got id {table.added[tok]}, the composition expects {first_added_id + offset} "
                    f"(vocabulary.first_added_id = {first_added_id}; the tokenizer has {len(tokenizer) - len(new)} "
                    "tokens of its own): wrong base tokenizer?"
                )
    for key, wrappers, signals in plan:
        if wrappers:
            table.wrappers[key] = (table.added[wrappers[0]], table.added[wrappers[1]])
        if signals:
            table.signals[key] = [table.added[t] for t in signals]
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(seed, "new-token-rows"))
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.requires_grad_(False)
    return table
