"""The toy world's conversations: what people ask about its items and what a good assistant answers.

One generator serves three consumers, so they all speak the same language:

- the tiny LLM's pretraining corpus (:func:`text_of`: an item a user gives is spelled as its keywords, an item the
  assistant makes is left out after its announcement);
- the NExT-GPT training files in the official formats (``nextgpt_core.toy.data``: a given item becomes an input
  media tag, a made item a generated one);
- the evaluation suite (the same tasks on held-out combinations and held-out phrasings).

Tasks (:data:`TASKS`): ``describe`` (an item in, its caption out), ``generate`` (a request in, the item out),
``convert`` (an item of one modality in, a matching item of another out: "make this picture move left"), ``edit``
(two turns: make an item, then change one attribute: "now make it blue"), ``multi`` (two items of different
modalities asked for in one request, both made in one reply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence, Union

import numpy as np

from .contract import ToyModality
from .world import ToyWorld, phrasings

__all__ = [
    "Dialogue",
    "Given",
    "Made",
    "STOP_WORDS",
    "TASKS",
    "keywords",
    "make_dialogues",
    "text_of",
]

TASKS: tuple[str, ...] = ("describe", "generate", "convert", "edit", "multi")
#: words a caption's keywords leave out (the rest carry its attributes)
STOP_WORDS = frozenset({"a", "an", "the", "on", "at", "in", "of", "to", "from", "background"})


@dataclass(frozen=True)
class Given:
    """An item the user gives (an input medium)."""

    modality: str
    attributes: dict[str, str]
    caption: str


@dataclass(frozen=True)
class Made:
    """An item the assistant makes (a generated medium, the L2 target's caption)."""

    modality: str
    attributes: dict[str, str]
    caption: str


Part = Union[str, Given, Made]


@dataclass
class Dialogue:
    """A conversation: ``turns`` of ``(role, parts)``, roles alternating ``user`` / ``assistant``.

    ``task`` names what it exercises; ``checks`` lists the items the final reply must get right (for evaluation).
    """

    task: str
    turns: list[tuple[str, list[Part]]]
    checks: list[Given | Made] = field(default_factory=list)


def keywords(caption: str) -> str:
    """The caption without :data:`STOP_WORDS`: ``"a large red circle on the left on a white background"`` ->
    ``"large red circle left white"``."""
    return " ".join(w for w in re.findall(r"[a-z]+", caption.lower()) if w not in STOP_WORDS)


def text_of(parts: Sequence[Part], rng: np.random.Generator, *, shuffle: float = 0.5) -> str:
    """A turn as plain text, for the LLM's pretraining: a given item becomes its keywords (in a random order with
    probability ``shuffle``, in caption order otherwise), a made item disappears (its announcement stays)."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Given):
            words = keywords(part.caption).split()
            if rng.random() < shuffle:
                words = [words[i] for i in rng.permutation(len(words))]
            out.append(" ".join(words))
    return " ".join(p for p in out if p)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _answer(rng: np.random.Generator, part: ToyModality, caption: str, which: str) -> str:
    templates = part.describe_answers if which == "describe" else part.generate_answers
    return _pick(rng, templates).format(caption=caption)


def make_dialogues(
    world: ToyWorld,
    task: str,
    count: int,
    *,
    split: Literal["train", "eval"],
    seed: int,
    caption_prompt: str | None = None,
) -> list[Dialogue]:
    """``count`` dialogues of ``task`` (see :data:`TASKS`), over every part that can take part.

    ``split="train"`` draws only training combinations and training phrasings; ``split="eval"`` makes the item
    that the final reply must get right a held-out combination and draws held-out phrasings. Deterministic in
    ``seed``. ``caption_prompt`` (``describe`` only) replaces the describe phrasings with the one stage-1
    instruction (the official ``"generate a caption"`` X-caption layout).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    rng = np.random.default_rng([seed, TASKS.index(task), 0 if split == "train" else 1])
    maker = {"describe": _describe, "generate": _generate, "convert": _convert, "edit": _edit, "multi": _multi}[task]
    out: list[Dialogue] = []
    attempts = 0
    while len(out) < count and attempts < 50 * max(1, count):
        attempts += 1
        dialogue = maker(world, rng, split, caption_prompt) if task == "describe" else maker(world, rng, split)
        if dialogue is not None:
            out.append(dialogue)
    return out


def _combos(world: ToyWorld, key: str, split: str) -> list[dict[str, str]]:
    return world.combinations(key, "train" if split == "train" else "held_out")


def _phr(options: Sequence[str], split: str) -> tuple[str, ...]:
    return phrasings(options, "train" if split == "train" else "eval")


def _describe(world: ToyWorld, rng: np.random.Generator, split: str, caption_prompt: str | None) -> Dialogue | None:
    key = _pick(rng, [k for k, p in world.parts.items() if p.describe_requests])
    part = world.parts[key]
    combos = _combos(world, key, split)
    if not combos:
        return None
    attrs = _pick(rng, combos)
    caption = part.caption(attrs)
    item = Given(key, attrs, caption)
    if caption_prompt is not None:
        request, answer = caption_prompt, caption
    else:
        request, answer = _pick(rng, _phr(part.describe_requests, split)), _answer(rng, part, caption, "describe")
    return Dialogue("describe", [("user", [item, request]), ("assistant", [answer])], checks=[item])


def _generators(world: ToyWorld) -> list[str]:
    return [k for k, p in world.parts.items() if p.can_generate and p.generate_requests]


def _generate(world: ToyWorld, rng: np.random.Generator, split: str) -> Dialogue | None:
    keys = _generators(world)
    if not keys:
        return None
    key = _pick(rng, keys)
    part = world.parts[key]
    combos = _combos(world, key, split)
    if not combos:
        return None
    attrs = _pick(rng, combos)
    caption = part.caption(attrs)
    made = Made(key, attrs, caption)
    request = _pick(rng, _phr(part.generate_requests, split)).format(caption=caption)
    return Dialogue("generate", [("user", [request]), ("assistant", [_answer(rng, part, caption, "generate"), made])],
                    checks=[made])


def _convert(world: ToyWorld, rng: np.random.Generator, split: str) -> Dialogue | None:
    pairs = [(s, t) for s in world.parts for t in _generators(world) if s != t and world.parts[t].convert_requests]
    if not pairs:
        return None
    source_key, target_key = pairs[int(rng.integers(len(pairs)))]
    source, target = world.parts[source_key], world.parts[target_key]
    source_attrs = _pick(rng, world.combinations(source_key, "train" if split == "train" else "all"))
    converted = target.convert_from(source_attrs, rng)
    if converted is None:
        return None
    target_attrs, fields = converted
    if world.is_held_out(target_key, target_attrs) != (split == "eval"):
        return None
    if split == "train" and world.is_held_out(source_key, source_attrs):
        return None
    request = _pick(rng, _phr(target.convert_requests, split)).format(noun=source.noun, **fields)
    given = Given(source_key, dict(source_attrs), source.caption(source_attrs))
    caption = target.caption(target_attrs)
    made = Made(target_key, target_attrs, caption)
    return Dialogue("convert", [("user", [given, request]), ("assistant", [_answer(rng, target, caption, "generate"), made])],
                    checks=[made])


def _edit(world: ToyWorld, rng: np.random.Generator, split: str) -> Dialogue | None:
    keys = [k for k in _generators(world) if world.parts[k].edit_requests]
    if not keys:
        return None
    key = _pick(rng, keys)
    part = world.parts[key]
    first = _pick(rng, world.combinations(key, "train"))
    if not part.editable(first):
        return None
    axis = _pick(rng, sorted(part.edit_requests))
    values = [v for v in part.axes[axis] if v != first.get(axis)]
    if axis not in first or not values:
        return None
    second = {**first, axis: _pick(rng, values)}
    if world.is_held_out(key, second) != (split == "eval"):
        return None
    caption1, caption2 = part.caption(first), part.caption(second)
    request = _pick(rng, _phr(part.generate_requests, split)).format(caption=caption1)
    change = _pick(rng, _phr(part.edit_requests[axis], split)).format(value=second[axis])
    made1, made2 = Made(key, first, caption1), Made(key, second, caption2)
    turns: list[tuple[str, list[Part]]] = [
        ("user", [request]),
        ("assistant", [_answer(rng, part, caption1, "generate"), made1]),
        ("user", [change]),
        ("assistant", [_answer(rng, part, caption2, "generate"), made2]),
    ]
    return Dialogue("edit", turns, checks=[made2])


def _multi(world: ToyWorld, rng: np.random.Generator, split: str) -> Dialogue | None:
    keys = _generators(world)
    if len(keys) < 2:
        return None
    chosen = [keys[i] for i in rng.choice(len(keys), 2, replace=False)]
    made, requests, answers = [], [], []
    for n, key in enumerate(chosen):
        part = world.parts[key]
        # in evaluation the first item is held out, the second a training one (each request stays one task)
        combos = world.combinations(key, "held_out" if (split == "eval" and n == 0) else "train")
        if not combos:
            return None
        attrs = _pick(rng, combos)
        caption = part.caption(attrs)
        made.append(Made(key, attrs, caption))
        requests.append(_pick(rng, _phr(part.generate_requests, split)).format(caption=caption))
        answers.append(_answer(rng, part, caption, "generate"))
    reply: list[Part] = [answers[0], made[0], answers[1], made[1]]
    return Dialogue("multi", [("user", [" ".join(requests)]), ("assistant", reply)], checks=list(made))


def iter_items(dialogue: Dialogue) -> Iterator[Given | Made]:
    """Every item of a dialogue, in order."""
    for _, parts in dialogue.turns:
        for part in parts:
            if not isinstance(part, str):
                yield part
