"""Does the method learn? Stage 1 and stage 2 measured against baselines, on the pretrained tiny world.

Both measurements use the real pipeline end to end: synthetic datasets of toy-world items written by
:func:`~nextgpt_core.training.synthetic.make_synthetic_dataset`, read back by
:func:`~nextgpt_core.training.data.read_dataset` (the X-caption format: ``cc3m.json`` for images, ``webvid.json``
for videos), media decoded by the plugins' readers, targets from the tiny decoders' own text encoders
(:func:`~nextgpt_core.training.targets.cache_targets`), and :class:`~nextgpt_core.training.trainer.Trainer` with
fixed seeds. The model is :func:`~nextgpt_core.training.tiny_world.load_tiny_world` (a random LLM cannot be aligned
with: see there). The modality measured is the caller's choice (the test and the benchmark: stage 1 on images,
stage 2 on videos); its captions are its toy-world part's training captions (:func:`training_combinations`; the
world's own held-out combinations are never drawn).

* :func:`measure_stage1` — train the input projector (stage 1) on captioned renderings of
  ``stage1_captions`` training combinations; evaluate the caption LM loss on **held-out renderings** of the same
  captions (another seed: new jitter of position, size, ...). Baseline: the identical run with the media shuffled
  across the captions (same captions, same media, pairing broken), evaluated on the same held-out set.
  ``ratio = trained / shuffled``.
* :func:`measure_stage2` — train the output projectors and signal rows (stage 2) on the official stage-2 layout
  (user: caption, assistant: caption + signal run); evaluate the official L2 (per-token Euclidean norm, then the
  mean) on **held-out captions** (:func:`heldout_captions`: attribute combinations the run never trains on).
  Baselines: predicting the mean training target for every caption, and the identical run trained with the
  captions shuffled across the targets.

Every run trains its own freshly built tiny world (same init of the projectors and the added rows) with the same
seed, data order, steps and learning rate; a run and its baseline differ only in the pairing. Defaults
(:class:`LearningSettings`) are what ``tests/training/test_learning.py`` asserts on and
``benchmarks/training_learning.py`` reports.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..model import NextGPT
    from .data import TrainingSample

__all__ = ["LearningSettings", "heldout_captions", "measure_stage1", "measure_stage2", "training_combinations"]


@dataclass(frozen=True)
class LearningSettings:
    """Sizes, steps and learning rates of the two measurements (the same for a run and its baseline).

    Attributes:
        stage1_captions: training combinations (captions) stage 1 draws from, a seeded sample of the modality's.
        stage1_train_items / stage1_heldout_items: renderings to train on / to evaluate on, cycling over those
            captions (the held-out ones are drawn with another seed, so every one is a new rendering).
        stage1_steps, stage1_batch, stage1_lr: the stage-1 runs (800 steps: 400 left the single-object picture
            ratio at 0.50, 800 gave 0.38-0.41 over three seeds).
        stage2_steps, stage2_batch, stage2_lr: the stage-2 runs (1200 steps: the toy world's 120 video training
            captions, five attributes each, are three times the earlier synthetic set's 36; with 600 steps the run
            underfitted them, 0.71 on its own training captions and 0.51x the mean target on the held-out ones).
        stage2_weight_decay: AdamW weight decay of the stage-2 runs.
        seed: dataset seed (held-out renderings use ``seed + 1``) and trainer seed.
        threads: torch threads during the measurement (restored after; see
            :func:`~nextgpt_core.training.tiny_world.torch_threads`).
    """

    stage1_captions: int = 24
    stage1_train_items: int = 48
    stage1_heldout_items: int = 24
    stage1_steps: int = 800
    stage1_batch: int = 8
    stage1_lr: float = 1e-2
    stage2_steps: int = 1200
    stage2_batch: int = 6
    stage2_lr: float = 1e-2
    stage2_weight_decay: float = 1e-3
    seed: int = 0
    threads: int | None = 1


def _derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n)`` with no fixed point (``n >= 2``)."""
    rng = random.Random(seed)
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != p for i, p in enumerate(perm)):
            return perm


def training_combinations(modality: str, registry: Any = None,
                          where: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """The training combinations of ``modality``'s toy-world part (``registry``: default the installed plugins), in
    the part's order: what :func:`~nextgpt_core.training.synthetic.make_synthetic_dataset` draws from; ``where``
    keeps only those with these attribute values (e.g. one layout of a part that has several).

    Raises:
        ConfigError: no toy-world part of ``modality`` is installed.
        ValueError: no training combination has the ``where`` values.
    """
    from ..toy.world import ToyWorld

    combos = ToyWorld.installed(registry, keys=[modality]).combinations(modality, "train")
    combos = [c for c in combos if all(c.get(k) == v for k, v in (where or {}).items())]
    if not combos:
        raise ValueError(f"no training combination of {modality!r} has {dict(where or {})}")
    return combos


def _holds_out(part: Any, attrs: Mapping[str, str]) -> bool:
    """A quarter of the combinations: those whose attribute values' indices on their axes sum to 0 mod 4."""
    return sum(part.axes[axis].index(value) for axis, value in attrs.items()) % 4 == 0


def heldout_captions(modality: str, registry: Any = None, where: Mapping[str, str] | None = None) -> list[str]:
    """The captions :func:`measure_stage2` holds out of training: about a quarter of the training combinations of
    ``modality`` (:func:`training_combinations` with ``where``), those whose attribute values' indices (their place
    on the part's axes) sum to a multiple of 4. Every attribute value is held out in some combinations and still
    trained on in others, so a held-out caption is a new combination of words the run has seen.

    Raises:
        ConfigError: no toy-world part of ``modality`` is installed.
    """
    from ..toy.world import ToyWorld

    part = ToyWorld.installed(registry, keys=[modality]).parts[modality]
    return [part.caption(c) for c in training_combinations(modality, registry, where) if _holds_out(part, c)]


def _train(model: NextGPT, samples: Sequence[TrainingSample], targets: Mapping[str, Any] | None, config: Any,
           loader: Any) -> tuple[Any, float]:
    from .trainer import Trainer

    started = time.perf_counter()
    trainer = Trainer(model, samples, targets, config, loader)
    trainer.train()
    return trainer, time.perf_counter() - started


def _evaluate(trainer: Any, samples: Sequence[TrainingSample], batch: int = 8) -> dict[str, float]:
    """Mean LM loss per labelled token and mean L2 per span-token over ``samples`` (weighted by their counts)."""
    from .collate import IGNORE_INDEX, build_example

    trainer.model.eval()
    lm_sum, lm_n, l2_sum, l2_n = 0.0, 0, {}, {}
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = list(samples[start : start + batch])
            parts = trainer.compute_losses(chunk)
            # tokens with a loss: labelled positions after the first (lm_loss shifts by one)
            n_tokens = sum(
                int((build_example(trainer.model, s, media_loader=trainer.media_loader).labels[0, 1:] != IGNORE_INDEX).sum())
                for s in chunk
            )
            lm_sum += float(parts["lm"]) * n_tokens
            lm_n += n_tokens
            for key, value in parts["l2"].items():
                spans = sum(1 for s in chunk for t in s.targets if t.modality == key)
                l2_sum[key] = l2_sum.get(key, 0.0) + float(value) * spans
                l2_n[key] = l2_n.get(key, 0) + spans
    out = {"lm": lm_sum / max(lm_n, 1)}
    out.update({f"l2_{k}": l2_sum[k] / l2_n[k] for k in l2_sum})
    return out


def _warm_encoder_cache(model: NextGPT, samples: Sequence[TrainingSample], loader: Any) -> None:
    """Encode every input medium once into ``model.encoder_cache`` (copies of the model share the result)."""
    from .collate import build_example

    with torch.no_grad():
        for s in samples:
            build_example(model, s, media_loader=loader)


def _with_media_of(sample: TrainingSample, donor: TrainingSample) -> TrainingSample:
    """``sample`` with its user turn's media replaced by ``donor``'s (same caption, another rendering's pixels)."""
    from ..conversation import Media, Turn

    media = iter([p for p in donor.inputs])
    turns = []
    for turn in sample.conversation.turns:
        if turn.role == "user":
            turn = Turn("user", [next(media) if isinstance(p, Media) else p for p in turn.parts])
        turns.append(turn)
    return dataclasses.replace(
        sample, conversation=dataclasses.replace(sample.conversation, turns=turns), sample_id=f"{sample.sample_id}~shuffled"
    )


def _on_settings_threads(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``fn(new_model, registry, folder, settings, ...)`` with ``settings.threads`` torch threads."""
    import functools

    from .tiny_world import torch_threads

    @functools.wraps(fn)
    def wrapper(new_model: Any, registry: Any, folder: Any, settings: LearningSettings = LearningSettings(),
                **kwargs: Any) -> dict[str, Any]:
        with torch_threads(settings.threads):
            return fn(new_model, registry, folder, settings, **kwargs)

    return wrapper


@_on_settings_threads
def measure_stage1(new_model: Callable[[], NextGPT], registry: Any, folder: "str | Path",
                   settings: LearningSettings = LearningSettings(), *, modality: str,
                   where: Mapping[str, str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Stage 1 on ``modality`` captions: held-out caption LM loss, trained vs shuffled media.

    ``settings.stage1_captions`` training combinations of ``modality`` (a seeded sample of
    :func:`training_combinations` with ``where``) are rendered ``stage1_train_items`` times to train on and
    ``stage1_heldout_items`` times, with another seed, to evaluate on (the same captions, new renderings).

    Args:
        new_model: returns a fresh tiny world (e.g. ``lambda: load_tiny_world(registry)``); every run trains its
            own (they share one encoder cache: the encoders are frozen and identical).
        registry: the plugin registry the model was built from (toy-world parts, readers and media IO).
        folder: scratch folder for the datasets and run outputs.
        modality: the input modality measured (its plugin's toy-world part draws the media).
        where: only combinations with these attribute values (:func:`training_combinations`).

    Returns:
        ``{"trained": {"lm": ...}, "shuffled": {"lm": ...}, "before": {"lm": ...}, "ratio": trained / shuffled,
        "captions", "train_items", "heldout_items", "seconds": {...}}``; ``lm`` is the mean cross-entropy (nats) per
        labelled caption token of the held-out renderings.
    """
    from .data import MediaLoader, read_dataset
    from .synthetic import make_synthetic_dataset
    from .trainer import TrainConfig

    folder = Path(folder)
    s = settings
    every = training_combinations(modality, registry, where)
    chosen = [every[i] for i in sorted(random.Random(s.seed).sample(range(len(every)), min(s.stage1_captions, len(every))))]
    datasets = {
        name: make_synthetic_dataset(folder / f"s1-{name}", n, seed=seed, modalities=(modality,), registry=registry,
                                     combinations={modality: chosen})
        for name, n, seed in (("train", s.stage1_train_items, s.seed), ("heldout", s.stage1_heldout_items, s.seed + 1))
    }
    train, held = (
        list(read_dataset(ds.xcaption[modality], media_root=ds.media, registry=registry, task="caption",
                          on_error="fail"))
        for ds in (datasets["train"], datasets["heldout"])
    )
    perm = _derangement(len(train), s.seed)
    shuffled = [_with_media_of(sample, train[perm[i]]) for i, sample in enumerate(train)]
    loader = MediaLoader(registry)
    base = new_model()
    _warm_encoder_cache(base, train + held, loader)

    def fresh() -> NextGPT:
        model = new_model()
        model.encoder_cache = base.encoder_cache
        return model

    def config(name: str) -> TrainConfig:
        return TrainConfig(stage=1, steps=s.stage1_steps, batch_size=s.stage1_batch, lr=s.stage1_lr, seed=s.seed,
                           save_final=False, output_dir=folder / name, progress=progress)

    result: dict[str, Any] = {"captions": len(chosen), "train_items": len(train), "heldout_items": len(held),
                              "seconds": {}}
    for name, data in (("trained", train), ("shuffled", shuffled)):
        trainer, seconds = _train(fresh(), data, None, config(f"s1-{name}"), loader)
        result[name] = _evaluate(trainer, held)
        result["seconds"][name] = round(seconds, 2)
        if name == "trained":  # the untrained projector, for scale
            from .trainer import Trainer

            result["before"] = _evaluate(Trainer(base, held, None, config("s1-before"), loader), held)
    result["ratio"] = result["trained"]["lm"] / result["shuffled"]["lm"]
    return result


@_on_settings_threads
def measure_stage2(new_model: Callable[[], NextGPT], registry: Any, folder: "str | Path",
                   settings: LearningSettings = LearningSettings(), *, modality: str,
                   where: Mapping[str, str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Stage 2 on ``modality`` captions: held-out L2 of the output projector vs the mean target and vs shuffled
    captions.

    Every training combination of ``modality``'s toy-world part (:func:`training_combinations` with ``where``) is
    one caption; :func:`heldout_captions` holds about a quarter of them out of the run (video: 120 trained, 40 held
    out).
    Targets are every caption's conditioning inputs (``prompt_embeds``) by the modality's decoder's own tiny text
    encoder, cached with :func:`~nextgpt_core.training.targets.cache_targets`. The shuffled run trains on the same
    samples with the training captions' targets permuted (a derangement); every run is evaluated against the true
    targets of the held-out captions.

    Returns:
        ``{"trained": {"l2_<modality>", "lm"}, "trained_on_train_captions": {...}, "shuffled": {...},
        "mean_target": {"l2_<modality>"}, "ratio_vs_mean", "ratio_vs_shuffled", "train_captions",
        "heldout_captions", "seconds"}``; ``l2_<modality>`` is the official L2 (per-token norm, then the mean over
        spans and tokens) summed over the modality's conditioning inputs, ``lm`` as in :func:`measure_stage1`.
    """
    from .data import read_dataset
    from .losses import l2_loss
    from .synthetic import make_synthetic_dataset
    from .targets import TargetCache, cache_targets
    from .trainer import TrainConfig

    folder = Path(folder)
    s = settings
    combos = training_combinations(modality, registry, where)
    ds = make_synthetic_dataset(folder / "s2-data", len(combos), seed=s.seed, modalities=(modality,), registry=registry,
                                combinations={modality: combos})
    samples = list(read_dataset(ds.xcaption[modality], media_root=ds.media, registry=registry, task="generate", on_error="fail",
                                require_target_media=False))
    held_out = set(heldout_captions(modality, registry, where))
    train = [x for x in samples if x.targets[0].caption not in held_out]
    held = [x for x in samples if x.targets[0].caption in held_out]
    started = time.perf_counter()
    model = new_model()
    cache_targets([t for x in samples for t in x.targets], model.decoders, folder / "s2-targets", composition="tiny")
    cache = TargetCache(folder / "s2-targets")
    targets = {tid: cache[tid] for tid in cache}
    target_seconds = time.perf_counter() - started

    train_ids = [x.targets[0].target_id for x in train]
    perm = _derangement(len(train_ids), s.seed)
    shuffled_targets = dict(targets)
    shuffled_targets.update({tid: targets[train_ids[perm[i]]] for i, tid in enumerate(train_ids)})

    def config(name: str) -> TrainConfig:
        return TrainConfig(stage=2, steps=s.stage2_steps, batch_size=s.stage2_batch, lr=s.stage2_lr, seed=s.seed,
                           weight_decay=s.stage2_weight_decay,
                           save_final=False, output_dir=folder / name, progress=progress)

    result: dict[str, Any] = {"train_captions": len(train), "heldout_captions": len(held), "seconds": {"targets": round(target_seconds, 2)}}
    for name, tmap in (("trained", targets), ("shuffled", shuffled_targets)):
        trainer, seconds = _train(model if name == "trained" else new_model(), train, tmap, config(f"s2-{name}"), None)
        trainer.targets = targets  # evaluate against the true targets of the held-out captions
        result[name] = _evaluate(trainer, held)
        if name == "trained":  # how well the training captions are fitted, for scale
            result["trained_on_train_captions"] = _evaluate(trainer, train)
        result["seconds"][name] = round(seconds, 2)
    names = list(model.output_projectors[modality])
    mean_l2 = 0.0
    for cname in names:  # the L2 of a modality sums its conditioning inputs (as signal_l2_losses)
        mean = torch.stack([targets[t][cname] for t in train_ids]).mean(0)
        held_t = torch.stack([targets[x.targets[0].target_id][cname] for x in held])
        mean_l2 += float(l2_loss(mean.expand_as(held_t), held_t))
    key = f"l2_{modality}"
    result["mean_target"] = {key: mean_l2}
    result["ratio_vs_mean"] = result["trained"][key] / mean_l2
    result["ratio_vs_shuffled"] = result["trained"][key] / result["shuffled"][key]
    return result
