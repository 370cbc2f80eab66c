"""The ``toy`` evaluation suite: the toy world's held-out combinations, every direction, read back by analyzers.

Each sample is a conversation drawn by :func:`nextgpt_core.toy.dialogues.make_dialogues` with ``split="eval"``:
the item the final reply must get right is a **held-out combination** (never seen by any training phase) and the
request uses a **held-out phrasing**. The model answers through the public API (``NextGPT.generate``); inputs go
through the plugins' files (``MediaIO.write`` then ``Media.from_path``), as a user's would.

Tasks and how a sample is scored (every attribute must be right):

- ``describe/<key>`` (media -> text): the reply names the item (``ToyModality.parse`` finds its exact caption);
- ``generate/<key>`` (text -> media): the made file reads back (``ToyModality.read_back``) as requested;
- ``convert/<src>-><dst>``: an item of one modality in, the made item of the other reads back as asked;
- ``edit/<key>``: the model makes an item, then is asked to change one attribute; its second item reads back
  as the changed one (the first reply, with its media, stays in the history as a user's chat would);
- ``multi``: two items of different modalities asked in one request; both read back.

Baselines measured in the same run (:data:`VARIANTS`): ``chance`` (a uniformly random item of the modality:
``1 / combinations``), ``no-stage1`` (the input projectors back at their random init), ``no-stage2`` (the output
projectors back at their random init) and ``ceiling`` (each decoder driven straight from the caption's own text
encoding: the best the LLM path can reach) and ``retrieval`` (the model with each modality's retrieval decoder in place
of its generator, where the composition has one as an extra decoder, e.g. ``nextgpt toy retrieval``: the item
returned from the gallery is read back like a generated one; skipped for a composition without one).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["ToySample", "VARIANTS", "run_toy_suite", "sample_seed", "toy_samples", "wilson"]

#: the model variants the suite can score besides the model itself
VARIANTS: tuple[str, ...] = ("model", "no-stage1", "no-stage2", "ceiling", "retrieval")


@dataclass
class ToySample:
    """One scored conversation: its id, task, the dialogue (from the eval split) and the outcome."""

    sample_id: str
    task: str
    dialogue: Any
    correct: bool | None = None
    attributes: dict[str, bool] = field(default_factory=dict)
    reply: str = ""
    read_back: list[dict[str, str]] = field(default_factory=list)
    media: list[Any] = field(default_factory=list, repr=False)
    #: ``(H, W, 3)`` uint8 previews of ``media`` (the report's grid); kept in the journal of a resumable run
    previews: list[Any] = field(default_factory=list, repr=False)

    def restore(self, record: dict[str, Any]) -> None:
        """Take the outcome of a finished sample from an evaluation journal (``--resume``)."""
        self.correct, self.attributes, self.reply = record["correct"], dict(record["attributes"]), record["reply"]
        self.read_back, self.previews = list(record["read_back"]), list(record["previews"])


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): ``(low, high)``."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def sample_seed(sample_id: str, seed: int) -> int:
    """The generation seed of one sample of a suite: a hash of its id plus the run's ``seed`` (so a sample's reply
    does not depend on which other samples run, or in what order)."""
    return int(hashlib.sha1(sample_id.encode()).hexdigest()[:8], 16) + seed


def _task_name(dialogue: Any) -> str:
    from ..toy.dialogues import Given, Made

    items = [p for _, parts in dialogue.turns for p in parts if isinstance(p, (Given, Made))]
    if dialogue.task == "describe":
        return f"describe/{items[0].modality}"
    if dialogue.task in ("generate", "edit"):
        return f"{dialogue.task}/{items[-1].modality}"
    if dialogue.task == "convert":
        return f"convert/{items[0].modality}->{items[-1].modality}"
    return "multi"


def toy_samples(world: Any, per_task: int, seed: int) -> list[ToySample]:
    """The suite's samples: ``per_task`` dialogues per task kind and modality (or pair), from the eval split."""
    from ..toy.dialogues import TASKS, make_dialogues

    out: list[ToySample] = []
    for task in TASKS:
        pool = make_dialogues(world, task, per_task * 12, split="eval", seed=seed)
        by_name: dict[str, list[Any]] = defaultdict(list)
        for d in pool:
            by_name[_task_name(d)].append(d)
        for name in sorted(by_name):
            for i, d in enumerate(by_name[name][:per_task]):
                out.append(ToySample(f"{name}#{i}", name, d))
    return out


class _Runner:
    """Runs samples on one model variant; writes input media once (shared by variants)."""

    def __init__(self, model: Any, world: Any, media_dir: Path, seed: int, decoders: dict[str, list[str]] | None = None) -> None:
        self.model, self.world, self.media_dir, self.seed = model, world, media_dir, seed
        self.decoders = decoders

    def _file(self, item: Any, tag: str) -> Any:
        from ..conversation import Media

        part = self.world.parts[item.modality]
        digest = hashlib.sha1(f"{tag}|{item.modality}|{sorted(item.attributes.items())}".encode()).hexdigest()[:12]
        spec = self.model.registry.modality(item.modality)
        path = self.media_dir / f"{item.modality}_{digest}{spec.output_extension or spec.extensions[0]}"
        if not path.is_file():
            rng = np.random.default_rng(int(digest, 16) % (2**32))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.model.media_io(item.modality).write(part.render(item.attributes, rng), path)
        return Media.from_path(path, modality=item.modality)

    def run(self, sample: ToySample) -> None:
        from ..conversation import Conversation, Text, Turn
        from ..toy.dialogues import Given, Made

        d = sample.dialogue
        conversation = Conversation()
        seed = sample_seed(sample.sample_id, self.seed)
        reply = None
        for index, (role, parts) in enumerate(d.turns):
            if role == "user":
                content: list[Any] = []
                for p in parts:
                    if isinstance(p, str):
                        content.append(Text(p))
                    elif isinstance(p, Given):
                        content.append(self._file(p, sample.sample_id))
                conversation.turns.append(Turn("user", content))
            else:
                want = [p.modality for p in parts if isinstance(p, Made)]
                reply = self.model.generate(conversation, want=want, seed=seed + index, decoders=self.decoders)
                conversation.add_response(reply)
        assert reply is not None
        sample.reply = reply.text
        checks = d.checks
        if d.task == "describe":
            item = checks[0]
            got = self.world.parts[item.modality].parse(reply.text) or {}
            sample.read_back = [got]
            sample.attributes = {k: got.get(k) == v for k, v in item.attributes.items()}
            sample.correct = got == dict(item.attributes)
            return
        media = [p for p in reply.parts if not isinstance(p, Text)]
        ok = True
        for item in checks:
            found = next((m for m in media if m.modality == item.modality), None)
            if found is None:
                sample.read_back.append({})
                ok = False
                continue
            media.remove(found)
            sample.media.append((item.modality, found.data))
            got = self.world.parts[item.modality].read_back(found.data)
            sample.read_back.append(got)
            for k, v in item.attributes.items():
                sample.attributes[f"{item.modality}.{k}"] = got.get(k) == v
            ok = ok and all(got.get(k) == v for k, v in item.attributes.items())
        sample.correct = ok


def _ceiling(model: Any, world: Any, sample: ToySample, seed: int) -> None:
    """Decode each checked item straight from its caption's text encoding and read it back."""
    import torch

    sample.correct = True
    for item in sample.dialogue.checks:
        decoder = model.decoders[item.modality]
        decoder.load()
        conditioning = decoder.encode_text([item.caption])
        options = {**model.resolved.modalities[item.modality].decode_options}
        out = decoder(conditioning, generator=torch.Generator().manual_seed(seed), **options)[0]
        sample.media.append((item.modality, out))
        got = world.parts[item.modality].read_back(out)
        sample.read_back.append(got)
        for k, v in item.attributes.items():
            sample.attributes[f"{item.modality}.{k}"] = got.get(k) == v
        sample.correct = sample.correct and all(got.get(k) == v for k, v in item.attributes.items())


def _reset(modules: Any, seed: int) -> None:
    """Put projector modules back at a (seeded) random init: the 'untrained' ablations."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in modules:
            for m in module.modules():
                if m is not module:
                    for reset in ("reset_parameters", "_reset_parameters"):  # nn.MultiheadAttention: the private one
                        if hasattr(m, reset):
                            getattr(m, reset)()
                            break
            for name, p in module.named_parameters(recurse=False):
                torch.nn.init.normal_(p.data)


def run_toy_suite(
    composition: Any,
    out: Path,
    *,
    checkpoint: Any = None,
    per_task: int = 10,
    seed: int = 0,
    variants: Sequence[str] = VARIANTS,
    progress: Callable[[str, int, int, float], None] | None = None,
    journal: Any = None,
) -> dict[str, Any]:
    """Score ``composition`` (a toy world) on the suite; returns the results (also per variant and task).

    ``journal`` (an :class:`~nextgpt_core.eval.journal.EvalJournal`): each finished sample is recorded there, and
    a sample it already holds is taken from it instead of being run again (``--resume``).

    Raises:
        ConfigError: the composition has a modality without a toy-world part.
    """
    from ..model import NextGPT
    from ..toy.world import ToyWorld

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    model = NextGPT.from_composition(composition, checkpoint=checkpoint)
    world = ToyWorld.installed(model.registry, keys=[k for k in model.resolved.modalities])
    samples_by_variant: dict[str, list[ToySample]] = {}
    media_dir = out / "media"
    timings: dict[str, float] = {}
    resumed_counts: dict[str, int] = {}
    routes = _retrieval_routes(model)
    for variant in variants:
        if variant == "retrieval" and not routes:
            continue  # no retrieval decoder in this composition: nothing to score
        samples = toy_samples(world, per_task, seed)
        started = time.perf_counter()
        resumed = 0

        def score(i: int, s: ToySample, run: Callable[[], None]) -> None:
            nonlocal resumed
            record = journal.finished(variant, s.sample_id) if journal is not None else None
            if record is not None:
                s.restore(record)
                resumed += 1
            else:
                run()
                s.previews = [world.parts[m].preview(data) for m, data in s.media]
                if journal is not None:
                    journal.record(variant, s, s.previews)
            if progress:
                progress(variant, i + 1, len(samples), _rate(samples[: i + 1]))

        if variant == "ceiling":
            samples = [s for s in samples if s.dialogue.task != "describe"]
            for i, s in enumerate(samples):
                score(i, s, lambda s=s, i=i: _ceiling(model, world, s, seed + i))
        else:
            saved = {}
            if variant == "no-stage1":
                saved = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in model.input_projectors.items()}
                _reset(model.input_projectors.values(), seed + 101)
                samples = [s for s in samples if s.dialogue.task in ("describe", "convert")]
            elif variant == "no-stage2":
                saved = {k: {f: {n: t.clone() for n, t in p.state_dict().items()} for f, p in ps.items()}
                         for k, ps in model.output_projectors.items()}
                for ps in model.output_projectors.values():
                    _reset(ps.values(), seed + 202)
                samples = [s for s in samples if s.dialogue.task != "describe"]
            if variant == "retrieval":
                samples = [s for s in samples if s.dialogue.task != "describe"
                           and all(c.modality in routes for c in s.dialogue.checks)]
            runner = _Runner(model, world, media_dir, seed, decoders=routes if variant == "retrieval" else None)
            for i, s in enumerate(samples):
                score(i, s, lambda s=s: runner.run(s))
            if variant == "no-stage1":
                for k, state in saved.items():
                    model.input_projectors[k].load_state_dict(state)
            elif variant == "no-stage2":
                for k, per in saved.items():
                    for f, state in per.items():
                        model.output_projectors[k][f].load_state_dict(state)
        timings[variant] = round(time.perf_counter() - started, 1)
        if resumed:
            resumed_counts[variant] = resumed
        samples_by_variant[variant] = samples
    results = _summarise(world, samples_by_variant, timings, per_task, seed)
    results["variants"] = list(samples_by_variant)  # those scored (a retrieval variant without decoders is not)
    results["resumed"] = resumed_counts  # samples taken from the journal, per variant (their time is not in timings)
    results["_objects"] = {"world": world, "samples": samples_by_variant}
    return results


def _retrieval_routes(model: Any) -> dict[str, list[str]]:
    """``{modality: [the id of its retrieval extra decoder]}`` for the modalities that have one."""
    from ..retrieval.decoder import RetrievalDecoder

    routes = {}
    for modality, decoders in model.extra_decoders.items():
        found = [name for name, decoder in decoders.items() if isinstance(decoder, RetrievalDecoder)]
        if found:
            routes[modality] = found[:1]
    return routes


def _rate(samples: Sequence[ToySample]) -> float:
    done = [s for s in samples if s.correct is not None]
    return sum(bool(s.correct) for s in done) / max(1, len(done))


def _chance(world: Any, task: str) -> float:
    """Probability that a uniformly random item of the checked modality (modalities) gets every attribute right."""
    keys = task.split("/")[-1].split("->")[-1:] if task != "multi" else []
    if task == "multi":
        return float("nan")
    return 1.0 / max(1, len(world.combinations(keys[0]))) if keys[0] in world.parts else float("nan")


def _summarise(world: Any, by_variant: dict[str, list[ToySample]], timings: dict[str, float], per_task: int, seed: int) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for variant, samples in by_variant.items():
        for task in sorted({s.task for s in samples}):
            rows = [s for s in samples if s.task == task]
            k = sum(bool(s.correct) for s in rows)
            low, high = wilson(k, len(rows))
            attrs: dict[str, list[bool]] = defaultdict(list)
            for s in rows:
                for name, ok in s.attributes.items():
                    attrs[name].append(ok)
            entry = table.setdefault(task, {"chance": _chance(world, task)})
            entry[variant] = {"accuracy": k / len(rows), "n": len(rows), "ci95": [round(low, 4), round(high, 4)],
                              "attributes": {n: round(sum(v) / len(v), 4) for n, v in sorted(attrs.items())}}
    for task, entry in table.items():
        model, ceiling = entry.get("model"), entry.get("ceiling")
        if model and ceiling and ceiling["accuracy"] > 0:
            entry["model_over_ceiling"] = round(model["accuracy"] / ceiling["accuracy"], 4)
    samples = {v: [{"id": s.sample_id, "task": s.task, "correct": s.correct, "reply": s.reply,
                    "attributes": s.attributes, "read_back": s.read_back,
                    "expected": [dict(c.attributes) for c in s.dialogue.checks]} for s in rows]
               for v, rows in by_variant.items()}
    return {"suite": "toy", "per_task": per_task, "seed": seed, "tasks": table, "timings": timings, "samples": samples}
