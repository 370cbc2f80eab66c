"""The toy world's LLM: a tiny Llama pretrained on the world's language, saved as a Hugging Face folder.

NExT-GPT builds on a frozen, pretrained LLM (Vicuna) that already speaks the language its projectors align with.
The toy world's LLM plays that part: a ``LlamaForCausalLM`` with a byte-level BPE tokenizer, both trained here
from scratch on the world's conversations (:func:`pretraining_texts`): every task of
:mod:`nextgpt_core.toy.dialogues` in the composition's chat template, with a given item spelled as its keywords
(the toy analogue of an LLM describing what its context mentions) and a made item left after its announcement. Only
training combinations and training phrasings appear; held-out ones never do.

:func:`train_language_model` writes ``config.json``, ``model.safetensors`` and the tokenizer files, loadable with
``[llm] path = ...`` like any local model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..composition import PromptSettings, TinyLLMSettings
from .dialogues import TASKS, keywords, make_dialogues, text_of
from .world import ToyWorld

__all__ = ["LanguageSettings", "pretraining_texts", "train_language_model"]


@dataclass(frozen=True)
class LanguageSettings:
    """How the toy LLM is built and pretrained.

    Attributes:
        model: the Llama's sizes (``TinyLLMSettings``; ``tokenizer_vocab_size`` is the BPE vocabulary).
        dialogues: conversations per task in the corpus.
        copies: extra ``caption`` / ``repeat`` texts per training combination (the stage-1 and stage-2 layouts).
        steps, batch_size, lr: AdamW steps, texts per step, peak learning rate (warm-up, cosine decay).
        seed: init, corpus and batches.
    """

    model: TinyLLMSettings = TinyLLMSettings(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=4,
                                             max_position_embeddings=512, tokenizer_vocab_size=600)
    dialogues: int = 2000
    copies: int = 2
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0


def _render(prompt: PromptSettings, turns: Sequence[tuple[str, str]]) -> str:
    text = prompt.system
    for role, content in turns:
        text += (prompt.user if role == "user" else prompt.assistant).format(content=content)
    return text


def pretraining_texts(world: ToyWorld, prompt: PromptSettings, settings: LanguageSettings,
                      caption_prompt: str = "generate a caption") -> list[str]:
    """The corpus: ``settings.dialogues`` conversations of every task, then per training combination ``copies``
    stage-1 texts (``<keywords> generate a caption`` -> caption) and stage-2 texts (caption -> caption), each
    rendered with ``prompt``. Deterministic in ``settings.seed``."""
    rng = np.random.default_rng(settings.seed)
    texts = []
    for task in TASKS:
        for dialogue in make_dialogues(world, task, settings.dialogues, split="train", seed=settings.seed + 7):
            texts.append(_render(prompt, [(role, text_of(parts, rng)) for role, parts in dialogue.turns]))
    for key, part in world.parts.items():
        for attrs in world.combinations(key, "train"):
            caption = part.caption(attrs)
            for _ in range(settings.copies):
                words = keywords(caption).split()
                if rng.random() < 0.5:
                    words = [words[i] for i in rng.permutation(len(words))]
                texts.append(_render(prompt, [("user", f"{' '.join(words)} {caption_prompt}"), ("assistant", caption)]))
                if part.can_generate:
                    texts.append(_render(prompt, [("user", caption), ("assistant", caption)]))
    return [texts[i] for i in rng.permutation(len(texts))]


def _batch(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` ``(B, L)``: BOS first, right-padded, loss on every token."""
    rows = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False).input_ids] for t in texts]
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, 1 : len(r)] = torch.tensor(r[1:])
        mask[i, : len(r)] = 1
    return ids, mask, labels


def train_language_model(
    world: ToyWorld,
    prompt: PromptSettings,
    out: str | Path,
    settings: LanguageSettings = LanguageSettings(),
    *,
    progress: Callable[[int, int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the tokenizer and the Llama on :func:`pretraining_texts` and save both to ``out``.

    Returns facts for the manifest: ``{"texts", "vocab", "parameters", "steps", "seconds", "first_loss",
    "final_loss", "held_out_loss"}`` (losses: mean cross-entropy per token over the first / last 10% of steps;
    ``held_out_loss``: on held-out-combination texts that training never saw).
    """
    from ..language_model import tiny_llama_config, train_tiny_tokenizer
    from .optim import TrainingSteps

    say = log or (lambda line: None)
    texts = pretraining_texts(world, prompt, settings)
    tokenizer = train_tiny_tokenizer(settings.model.tokenizer_vocab_size, corpus=texts)
    config = tiny_llama_config(settings.model, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    from transformers import LlamaForCausalLM

    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(config)
    say(f"corpus: {len(texts)} texts; vocabulary {len(tokenizer)}; {sum(p.numel() for p in model.parameters()):,} parameters")
    train = TrainingSteps(model.parameters(), settings.steps, lr=settings.lr, betas=(0.9, 0.98), weight_decay=0.01,
                          progress=progress)
    order = np.random.default_rng(settings.seed + 1)
    queue: list[int] = []
    model.train()
    for step in range(settings.steps):
        if len(queue) < settings.batch_size:
            queue += order.permutation(len(texts)).tolist()
        chosen, queue = queue[: settings.batch_size], queue[settings.batch_size :]
        ids, mask, labels = _batch(tokenizer, [texts[i] for i in chosen])
        train.update(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    model.eval()
    held = _held_out_texts(world, prompt, settings)
    with torch.no_grad():
        ids, mask, labels = _batch(tokenizer, held)
        held_loss = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    facts = {
        "texts": len(texts),
        "vocab": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        **train.facts(),
        "held_out_loss": round(held_loss, 4),
    }
    say(f"pretrained: loss {facts['first_loss']} -> {facts['final_loss']}; held-out texts {facts['held_out_loss']}")
    return facts


def _held_out_texts(world: ToyWorld, prompt: PromptSettings, settings: LanguageSettings, count: int = 64) -> list[str]:
    rng = np.random.default_rng(settings.seed + 3)
    texts = []
    for task in ("describe", "generate"):
        for dialogue in make_dialogues(world, task, count // 2, split="eval", seed=settings.seed + 11):
            texts.append(_render(prompt, [(role, text_of(parts, rng)) for role, parts in dialogue.turns]))
    return texts
