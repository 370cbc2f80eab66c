"""Training the toy world's frozen encoders: ImageBind branches bound into one joint space, contrastively.

ImageBind binds every modality to one embedding space through a paired modality: its image and text towers come
from CLIP (trained on image-caption pairs), and audio, depth, thermal and IMU branches are trained with InfoNCE
against the frozen image tower on naturally paired data. The toy world's items are defined by their captions, so
here every branch is bound to one **text tower** (a ``CLIPTextModelWithProjection`` trained alongside, the part
CLIP's text tower plays for ImageBind's image branch): each step draws a batch of distinct captions of one
modality, one rendering each, and applies the symmetric InfoNCE loss with a learned temperature between the
branch's embeddings and the text tower's. Modalities whose encoders use the same branch (pictures and videos:
``vision``) train that one branch together.

The encoders are the plugins' own classes, built with the toy composition's options: training sees exactly what
inference computes (``Encoder.preprocess``, clip averaging, L2 normalisation). The branches are written to one
``.safetensors`` file under ImageBind's official key names, which the encoders load like ``imagebind_huge.pth``.

:func:`retrieval_accuracy` measures the result on held-out combinations: top-1 retrieval of the right caption
among all the modality's captions (training and held-out), in both directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .world import ToyWorld

__all__ = ["EncoderSettings", "probe_accuracy", "retrieval_accuracy", "train_encoders"]


@dataclass(frozen=True)
class EncoderSettings:
    """Contrastive training of the toy branches.

    Attributes:
        steps: optimizer steps (each on one modality, in turn, weighted by its number of combinations).
        batch_size: distinct captions per step.
        renders: renderings per training combination (the pool batches draw from).
        lr: peak learning rate (AdamW, warm-up then cosine decay).
        text_dim, text_layers, text_length: the text tower's width, depth and positions.
        seed: init, renderings, batches.
    """

    steps: int = 1200
    batch_size: int = 64
    renders: int = 6
    lr: float = 2e-3
    text_dim: int = 96
    text_layers: int = 2
    text_length: int = 24
    seed: int = 0


def _encoder(registry: Any, component_id: str, options: Mapping[str, Any]) -> Any:
    from nextgpt_registry import resolve_target

    return resolve_target(registry.component(component_id, "encoder").target).from_options(dict(options))


def train_encoders(
    world: ToyWorld,
    out_file: str | Path,
    *,
    registry: Any,
    scale: str = "full",
    settings: EncoderSettings = EncoderSettings(),
    progress: Callable[[int, int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train one ImageBind branch per branch name the parts use, bound to a shared text tower; save every branch
    into ``out_file`` (safetensors, official key names).

    Returns facts for the manifest: per modality the training items, and the held-out retrieval accuracy
    (:func:`retrieval_accuracy`); the steps, seconds and losses.
    """
    from ..tiny_clip import learn_merges, tiny_clip_text_parts
    from .optim import TrainingSteps

    say = log or (lambda line: None)
    torch.manual_seed(settings.seed)
    recipes = {key: part.encoder_recipe(scale) for key, part in world.parts.items()}
    untrained = sorted(k for k, r in recipes.items() if r.branch is None)
    if untrained:
        say(f"used as built, not trained: the encoders of {', '.join(untrained)}")
        world = ToyWorld([p for k, p in world.parts.items() if k not in untrained])
        recipes = {k: r for k, r in recipes.items() if k not in untrained}
    encoders: dict[str, Any] = {}
    owner: dict[str, str] = {}  # branch -> the first modality's encoder (holds the shared modules)
    for key, recipe in recipes.items():
        enc = _encoder(registry, recipe.encoder, recipe.encoder_options)
        if recipe.branch in owner:  # share the branch's modules with the first encoder that uses it
            first = encoders[owner[recipe.branch]]
            for name in ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors"):
                setattr(enc, name, getattr(first, name))
        else:
            owner[recipe.branch] = key
        encoders[key] = enc
    captions_all = world.training_captions() + [
        world.parts[k].caption(c) for k in world.parts for c in world.combinations(k, "held_out")
    ]
    text, tokenizer = tiny_clip_text_parts(settings.text_dim, length=settings.text_length, hidden_act="gelu",
                                           num_layers=settings.text_layers, merges=learn_merges(world.training_captions()),
                                           projection=True)
    text.config.projection_dim  # noqa: B018 - the projection head is built at the text width
    if not encoders:
        return {"branches": [], "parameters": 0}
    out_dims = {encoders[k].output_dim for k in encoders}
    if len(out_dims) != 1:
        raise ValueError(f"the toy encoders must share one output size to share a joint space, got {sorted(out_dims)}")
    joint = out_dims.pop()
    head = torch.nn.Linear(settings.text_dim, joint, bias=False)  # text tower -> the joint space
    del captions_all

    # the pools: training combinations, `renders` renderings each, preprocessed once
    pools: dict[str, tuple[torch.Tensor, list[int], list[str]]] = {}
    for key in world.parts:
        combos = world.combinations(key, "train")
        items = world.render(key, combos, settings.renders, settings.seed, tag="enc")
        x = torch.stack([encoders[key].preprocess(it.media) for it in items])
        pools[key] = (x, [i // settings.renders for i in range(len(items))], [world.parts[key].caption(c) for c in combos])
        say(f"{key}: {len(combos)} training combinations x {settings.renders} renderings -> {tuple(x.shape)}")

    modules: list[torch.nn.Module] = [text, head] + [encoders[k] for k in owner.values()]
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.requires_grad_(True)
        m.train()
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    train = TrainingSteps([*params, logit_scale], settings.steps, lr=settings.lr, weight_decay=0.05, clip_params=params,
                          progress=progress)
    generator = torch.Generator().manual_seed(settings.seed)
    weights = np.array([math.sqrt(len(pools[k][2])) for k in world.parts])
    turns = np.random.default_rng(settings.seed).choice(len(weights), settings.steps, p=weights / weights.sum())
    keys = list(world.parts)
    neighbours = {key: _neighbours(world, key) for key in keys}
    for step in range(settings.steps):
        key = keys[int(turns[step])]
        x, combo_of, captions = pools[key]
        chosen = _batch(neighbours[key], settings.batch_size, generator)
        # one rendering of each chosen combination
        picks = chosen * settings.renders + torch.randint(0, settings.renders, (len(chosen),), generator=generator)
        media = F.normalize(encoders[key](x[picks])[:, 0], dim=-1)
        ids = tokenizer([captions[int(c)] for c in chosen], padding="max_length", truncation=True,
                        max_length=settings.text_length, return_tensors="pt")
        words = F.normalize(head(text(**ids).text_embeds), dim=-1)
        logits = logit_scale.clamp(max=math.log(100)).exp() * media @ words.T
        target = torch.arange(len(chosen))
        train.update((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    for m in modules:
        m.requires_grad_(False)
        m.eval()

    facts: dict[str, Any] = train.facts()

    def embed_text(captions: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            ids = tokenizer(list(captions), padding="max_length", truncation=True, max_length=settings.text_length,
                            return_tensors="pt")
            return F.normalize(head(text(**ids).text_embeds), dim=-1)

    facts["retrieval"] = {key: retrieval_accuracy(world, key, encoders[key], embed_text, seed=settings.seed + 1)
                          for key in world.parts}
    facts["probes"] = {key: probe_accuracy(world, key, encoders[key], seed=settings.seed + 2) for key in world.parts}
    for key, r in facts["probes"].items():
        say(f"{key}: held-out linear-probe accuracy per attribute {r}")
    for key, r in facts["retrieval"].items():
        say(f"{key}: held-out retrieval media->caption {r['held_out_media_to_text']:.3f} caption->media "
            f"{r['held_out_text_to_media']:.3f} (chance {r['chance']:.4f}); training {r['train_media_to_text']:.3f}")

    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    for key in owner.values():
        for name, tensor in encoders[key].state_dict().items():
            state[name] = tensor.detach().contiguous().clone()
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_file))
    facts["branches"] = sorted(owner)
    facts["parameters"] = int(sum(t.numel() for t in state.values()))
    return facts


def _neighbours(world: ToyWorld, key: str) -> list[list[int]]:
    """For each training combination, the training combinations that differ from it in exactly one attribute."""
    from .contract import attributes_key

    combos = world.combinations(key, "train")
    index = {attributes_key(c): i for i, c in enumerate(combos)}
    out: list[list[int]] = []
    for c in combos:
        near = []
        for axis, value in c.items():
            for other in world.parts[key].axes.get(axis, ()):
                if other != value:
                    j = index.get(attributes_key({**c, axis: other}))
                    if j is not None:
                        near.append(j)
        out.append(near)
    return out


def _batch(neighbours: list[list[int]], size: int, generator: torch.Generator) -> torch.Tensor:
    """Distinct training combinations for one step: half drawn at random, the rest their one-attribute
    neighbours, so every batch holds pairs that only a single attribute tells apart (hard negatives: colour and
    background alone would otherwise separate most random pairs, and position or shape would be learnt last)."""
    n = len(neighbours)
    size = min(size, n)
    chosen: list[int] = []
    seen: set[int] = set()
    for i in torch.randperm(n, generator=generator).tolist():
        if len(chosen) >= size:
            break
        if i in seen:
            continue
        chosen.append(i)
        seen.add(i)
        near = [j for j in neighbours[i] if j not in seen]
        if near and len(chosen) < size:
            j = near[int(torch.randint(len(near), (1,), generator=generator))]
            chosen.append(j)
            seen.add(j)
    return torch.tensor(chosen[:size])


@torch.no_grad()
def retrieval_accuracy(world: ToyWorld, key: str, encoder: Any, embed_text: Callable[[Sequence[str]], torch.Tensor],
                       *, renders: int = 2, seed: int = 1) -> dict[str, float]:
    """Top-1 retrieval between media and captions of modality ``key``.

    Every held-out combination is rendered ``renders`` times; each rendering must find its caption among all the
    modality's captions (``held_out_media_to_text``), and each held-out caption its own rendering among all the
    held-out renderings (``held_out_text_to_media``). ``train_media_to_text`` does the first for a sample of
    training combinations. ``chance`` is one over the number of captions.
    """
    combos = world.combinations(key)
    part = world.parts[key]
    all_captions = [part.caption(c) for c in combos]
    index = {c: i for i, c in enumerate(all_captions)}
    words = embed_text(all_captions)

    def media_to_text(selected: Sequence[dict[str, str]], tag: str) -> tuple[float, torch.Tensor, list[int]]:
        items = world.render(key, selected, renders, seed, tag=tag)
        emb = torch.cat([F.normalize(encoder(encoder.preprocess(it.media).unsqueeze(0))[:, 0], dim=-1) for it in items])
        truth = [index[it.caption] for it in items]
        best = (emb @ words.T).argmax(dim=1).tolist()
        return sum(b == t for b, t in zip(best, truth)) / max(1, len(items)), emb, truth

    held = world.combinations(key, "held_out")
    held_acc, emb, truth = media_to_text(held, "ret")
    # caption -> media among the held-out renderings
    held_rows = sorted(set(truth))
    sims = words[held_rows] @ emb.T  # (captions, renderings)
    best = sims.argmax(dim=1).tolist()
    text_acc = sum(truth[b] == row for b, row in zip(best, held_rows)) / max(1, len(held_rows))
    rng = np.random.default_rng(seed)
    train = world.combinations(key, "train")
    sample = [train[i] for i in rng.choice(len(train), min(len(train), max(len(held), 24)), replace=False)]
    train_acc, _, _ = media_to_text(sample, "rtr")
    return {"held_out_media_to_text": round(held_acc, 4), "held_out_text_to_media": round(text_acc, 4),
            "train_media_to_text": round(train_acc, 4), "chance": round(1 / len(all_captions), 5),
            "held_out_combinations": len(held)}


def probe_accuracy(world: ToyWorld, key: str, encoder: Any, *, renders: int = 2, seed: int = 2, steps: int = 300) -> dict[str, float]:
    """How well each attribute can be read from the embeddings by a linear classifier: one softmax probe per
    attribute, fitted on renderings of training combinations, scored on renderings of the held-out ones (the
    question the input projector faces). Returns ``{attribute: held-out accuracy}``."""
    train = world.render(key, world.combinations(key, "train"), renders, seed, tag="ptr")
    held = world.render(key, world.combinations(key, "held_out"), renders, seed, tag="pho")

    @torch.no_grad()
    def embed(items: Sequence[Any]) -> torch.Tensor:
        x = torch.stack([encoder.preprocess(it.media) for it in items])
        return torch.cat([encoder(x[i : i + 256])[:, 0] for i in range(0, len(x), 256)])

    xs, xh = embed(train), embed(held)
    out: dict[str, float] = {}
    for axis, values in world.parts[key].axes.items():
        rows = [i for i, it in enumerate(train) if axis in it.attributes]
        test = [i for i, it in enumerate(held) if axis in it.attributes]
        if not rows or not test:
            continue
        index = {v: j for j, v in enumerate(values)}
        y = torch.tensor([index[train[i].attributes[axis]] for i in rows])
        probe = torch.nn.Linear(xs.shape[1], len(values))
        opt = torch.optim.Adam(probe.parameters(), lr=0.05)
        with torch.enable_grad():
            for _ in range(steps):
                loss = F.cross_entropy(probe(xs[rows] * 10), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            pred = probe(xh[test] * 10).argmax(1)
        truth = torch.tensor([index[held[i].attributes[axis]] for i in test])
        out[axis] = round(float((pred == truth).float().mean()), 4)
    return out
