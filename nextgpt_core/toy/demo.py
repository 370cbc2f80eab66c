"""``nextgpt demo`` on a toy world: a short scripted session that shows any-to-any working, each result checked.

For every modality of the world the demo draws an item, saves it, and asks the model about it (media -> text);
for every generated modality it asks for a new item (text -> media); then one conversion ("make this picture move
left") and one two-turn edit ("now make it blue"). Every input and output is written under the output folder, and
each reply is checked the way the evaluation suite checks it (the caption in the text, or the analyzers' read-back
of the media), so what a person sees on screen is also measured. Items and phrasings are drawn (seeded) from the
training split: the held-out ones are the evaluation suite's (``nextgpt eval --suite toy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["DemoStep", "run_toy_demo"]


@dataclass
class DemoStep:
    """One request of the demo: what was asked, the reply, the files, and whether it came out as asked."""

    request: str
    reply: str
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    expected: str = ""
    correct: bool = False


def run_toy_demo(model: Any, world: Any, out: Path, *, seed: int = 0, say: Callable[[str], None] = print) -> list[DemoStep]:
    """Run the scripted session on ``model`` (a toy-world composition) and write everything under ``out``."""
    from ..conversation import Conversation, Media, Text
    from .dialogues import Given, Made, make_dialogues

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps: list[DemoStep] = []
    counter = [0]

    def save_input(item: Given) -> Path:
        part = world.parts[item.modality]
        spec = model.registry.modality(item.modality)
        counter[0] += 1
        path = out / f"{counter[0]:02d}_input_{item.modality}{spec.output_extension or spec.extensions[0]}"
        model.media_io(item.modality).write(part.render(item.attributes, rng), path)
        return path

    def ask(dialogue: Any) -> None:
        conversation = Conversation()
        inputs: list[Path] = []
        reply = None
        request = ""
        for index, (role, parts) in enumerate(dialogue.turns):
            if role == "user":
                content: list[Any] = []
                for p in parts:
                    if isinstance(p, str):
                        content.append(Text(p))
                        request = p
                    else:
                        path = save_input(p)
                        inputs.append(path)
                        content.append(Media.from_path(path, modality=p.modality))
                from ..conversation import Turn

                conversation.turns.append(Turn("user", content))
            else:
                want = [p.modality for p in parts if isinstance(p, Made)]
                reply = model.generate(conversation, want=want, seed=seed + counter[0] * 10 + index)
                conversation.add_response(reply)
        assert reply is not None
        counter[0] += 1
        written = reply.save(out / f"{counter[0]:02d}_reply", model.registry)
        media_files = [p for p in written if p.name != "reply.txt"]
        step = DemoStep(request=request, reply=reply.text, inputs=inputs, outputs=media_files)
        checks = dialogue.checks
        if dialogue.task == "describe":
            item = checks[0]
            step.expected = item.caption
            step.correct = world.parts[item.modality].parse(reply.text) == dict(item.attributes)
        else:
            made = [m for m in reply.parts if not isinstance(m, Text)]
            ok = len(made) == len(checks)
            for item, media in zip(checks, made):
                ok = ok and media.modality == item.modality and world.parts[item.modality].read_back(media.data) == dict(item.attributes)
            step.expected = "; ".join(c.caption for c in checks)
            step.correct = ok
        steps.append(step)
        say(f"you: {' '.join(str(p) for p in inputs)} {step.request}".replace("  ", " ").strip())
        say(f"nextgpt: {step.reply}")
        for path in step.outputs:
            say(f"  wrote {path}")
        say(f"  {'as asked' if step.correct else 'NOT as asked'} (expected: {step.expected})")

    for task, count in (("describe", len(world.parts)), ("generate", 3), ("convert", 1), ("edit", 1)):
        pool = make_dialogues(world, task, 40, split="train", seed=seed + 5)
        chosen: list[Any] = []
        for d in pool:  # one per modality for describe and generate
            key = next((p.modality for _, parts in d.turns for p in parts if isinstance(p, (Given, Made))), None)
            if task in ("describe", "generate") and any(
                next((p.modality for _, ps in c.turns for p in ps if isinstance(p, (Given, Made))), None) == key for c in chosen
            ):
                continue
            chosen.append(d)
            if len(chosen) == count:
                break
        for d in chosen:
            ask(d)
    right = sum(s.correct for s in steps)
    say(f"{right} of {len(steps)} replies came out as asked (files in {out})")
    return steps
