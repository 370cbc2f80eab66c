"""The "pretrained tiny world": the ``tiny`` composition whose tiny LLM has first learnt the toy world's caption language.

Why it exists. NExT-GPT trains projectors around a *frozen, pretrained* LLM (Vicuna): stage 1 only learns to put
media into the LLM's input space and relies on the LLM already knowing how to talk about what is in its context;
stage 2 only learns to read the LLM's hidden states at the signal tokens and relies on them already carrying the
meaning of the caption. The ``tiny`` composition's LLM is random-init, so it knows no language at all: a projector
in front of it (or behind it) has nothing to align with, and "does the method learn?" cannot be measured on it.

What it is. :func:`load_tiny_world` builds the ``tiny`` composition as usual (the plugins' tiny encoders,
projectors and decoders, with their tiny CLIP / CLAP text encoders exactly as they are: random-init, untouched)
and swaps in LLM weights that were trained briefly, with the plain LM loss, on the caption language of the toy
world: every training caption of the installed plugins' toy-world parts (:func:`caption_world`; the parts' held-out
combinations are left out), which is every caption :mod:`nextgpt_core.training.synthetic` can write. The
pretraining texts, rendered with the composition's own prompt template (:func:`pretraining_texts`):

* ``caption``: a bare caption conversation (``### Human: describe it`` / ``### Assistant: <caption>``);
* ``words``: the caption's keywords (:func:`nextgpt_core.toy.dialogues.keywords`) in a random order, then the
  caption (``### Human: left red white circle large generate a caption`` / ``### Assistant: a large red circle on
  the left on a white background``), which plays the part of the pretrained LLM's ability to describe what its
  context mentions;
* ``repeat``: the official stage-2 layout without the signal tokens (``### Human: <caption>`` /
  ``### Assistant: <caption>``).

No media, no projector, no decoder and none of the added modality tokens take part: only the base vocabulary's
rows of the embedding and LM head and the transformer weights are trained and stored; the added wrapper and signal
tokens keep their fresh init when the weights are put into a model (as new tokens in a real pretrained LLM).

Cache. The weights are written once to ``<cache_dir>/<key>/`` (``llm.safetensors`` + ``manifest.json``) and read on
every later call. ``key`` is a hash of the :class:`TinyWorldSettings`, the composition's LLM settings and seed, the
source of this module and of the modules the result depends on (tokenizer and LLM construction, the keywords), the
captions themselves (so the installed toy-world parts, i.e. the ``registry`` given), and the torch / transformers
versions: change any of them and a new world is trained. The default ``cache_dir`` is ``build/tiny-world`` in a
source checkout (git-ignored), else ``~/.cache/nextgpt/tiny-world``; the environment variable
``NEXTGPT_TINY_WORLD_CACHE`` overrides both. Pretraining (400 steps of 32 texts, one torch thread) on the image,
video and audio parts' 856 training captions (5136 texts) takes about 60-90 s on the 2-vCPU VM; its LM loss falls
from about 4.1 to 0.14 nats per token.

Every training caption is in the pretraining texts, also those that :mod:`nextgpt_core.training.learning` holds out
of its stage-2 run: the LLM knows the language (as Vicuna knows English); the projectors never see the held-out
media or targets. The toy world's own held-out combinations are in neither.

Example:
    >>> model = load_tiny_world(registry)            # doctest: +SKIP
    >>> model.llm.training, any(p.requires_grad for p in model.llm.parameters())   # doctest: +SKIP
    (False, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..composition import Composition
    from ..model import NextGPT

__all__ = [
    "TinyWorldSettings",
    "caption_world",
    "torch_threads",
    "default_cache_dir",
    "load_tiny_world",
    "pretrain_tiny_llm",
    "pretraining_texts",
    "tiny_world_key",
    "tiny_world_weights",
]

CACHE_ENV = "NEXTGPT_TINY_WORLD_CACHE"
WEIGHTS = "llm.safetensors"
MANIFEST = "manifest.json"
FORMAT = "nextgpt-tiny-world"


@dataclass(frozen=True)
class TinyWorldSettings:
    """How the tiny LLM is pretrained (every field is part of the cache key).

    Attributes:
        composition: the composition whose LLM is pretrained (must have ``[llm.tiny]``).
        steps: AdamW steps of plain LM loss.
        batch_size: texts per step.
        lr: peak learning rate (linear warm-up over the first 10% of steps, then cosine decay to 10%).
        weight_decay: AdamW weight decay.
        seed: seeds the init order of the texts, the batches and the optimizer run (the LLM's own init is the
            composition's).
        caption_prompt: the instruction of the ``words`` texts (the stage-1 caption prompt of the readers).
        describe_prompt: the instruction of the bare ``caption`` texts.
        threads: torch threads while pretraining (:func:`torch_threads`; ``None``: unchanged).
    """

    composition: str = "tiny"
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    caption_prompt: str = "generate a caption"
    describe_prompt: str = "describe it"
    threads: int | None = 1


# ---------------------------------------------------------------------------------------------- texts
def _caption_world(registry: Any = None) -> list[tuple[str, list[str]]]:
    """Every training caption of the installed toy-world parts with its keywords: ``[(caption, [word, ...])]``
    (parts in registration order; held-out combinations left out)."""
    from ..toy.dialogues import keywords
    from ..toy.world import ToyWorld

    world = ToyWorld.installed(registry)
    return [(caption, keywords(caption).split()) for caption in world.training_captions()]


def pretraining_texts(composition: "Composition", settings: TinyWorldSettings, *, variants: int = 4,
                      registry: Any = None) -> list[str]:
    """The pretraining corpus: for every training caption of the toy world (:func:`caption_world`) one ``caption``
    text, one ``repeat`` text and ``variants`` ``words`` texts (its keywords in a seeded random order), rendered
    with the composition's prompt template (``prompt.user`` / ``prompt.assistant``). Deterministic in
    ``settings.seed`` and the installed parts (``registry``: default the installed plugins)."""
    prompt = composition.prompt
    rng = random.Random(settings.seed)

    def conversation(user: str, reply: str) -> str:
        return prompt.system + prompt.user.format(content=user) + prompt.assistant.format(content=reply)

    texts: list[str] = []
    for caption, words in _caption_world(registry):
        texts.append(conversation(settings.describe_prompt, caption))
        texts.append(conversation(caption, caption))
        for _ in range(variants):
            order = list(words)
            rng.shuffle(order)
            texts.append(conversation(f"{' '.join(order)} {settings.caption_prompt}", caption))
    return texts


# ---------------------------------------------------------------------------------------------- cache key
def _source_digest() -> str:
    from .. import language_model
    from ..toy import dialogues

    h = hashlib.sha256()
    for module in (sys.modules[__name__], language_model, dialogues):
        h.update(inspect.getsource(module).encode("utf-8"))
    return h.hexdigest()


def tiny_world_key(settings: TinyWorldSettings = TinyWorldSettings(), registry: Any = None) -> str:
    """The cache key: 16 hex chars of SHA-256 over the settings, the composition's LLM settings and seed, the source
    of the modules the weights depend on, the caption language (:func:`caption_world` of ``registry``: the
    installed toy-world parts), and the torch / transformers versions."""
    import transformers

    from ..composition import load_composition

    comp = load_composition(settings.composition)
    payload = {
        "format": FORMAT,
        "settings": asdict(settings),
        "llm": comp.llm.model_dump(mode="json"),
        "prompt": comp.prompt.model_dump(mode="json"),
        "seed": comp.seed,
        "source": _source_digest(),
        "captions": hashlib.sha256("\n".join(caption_world(registry)).encode("utf-8")).hexdigest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$NEXTGPT_TINY_WORLD_CACHE``, else ``build/tiny-world`` of the source checkout this module lives in, else
    ``~/.cache/nextgpt/tiny-world``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "nextgpt_core").is_dir():
        return repo / "build" / "tiny-world"
    return Path.home() / ".cache" / "nextgpt" / "tiny-world"


# ---------------------------------------------------------------------------------------------- pretraining
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: unchanged), then restore the previous count.

    The tiny models' ops are far too small to gain from intra-op threads, and on a loaded machine two spinning
    OpenMP threads per process made a pretraining step about ten times slower than one thread (measured on the
    2-vCPU VM); the tiny world and :mod:`nextgpt_core.training.learning` therefore run on one thread by default.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batch(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids (B, L)`` (BOS first, right-padded) and ``labels (B, L)`` (-100 on padding and BOS)."""
    rows = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False).input_ids] for t in texts]
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, 1 : len(r)] = torch.tensor(r[1:])
    return ids, labels


def pretrain_tiny_llm(settings: TinyWorldSettings = TinyWorldSettings(), *, registry: Any = None,
                      log: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the composition's tiny LLM (all its weights, base vocabulary only) on :func:`pretraining_texts` (the
    caption language of ``registry``'s toy-world parts; default: the installed plugins).

    Returns:
        ``(state_dict, info)``: the LLM's weights (``model.embed_tokens.weight`` and ``lm_head.weight`` are
        ``(base_vocab, H)``) and ``{"steps", "seconds", "first_loss", "final_loss", "texts"}`` (losses: mean LM
        cross-entropy per token over the first / last 10% of steps).
    """
    from ..composition import load_composition
    from ..language_model import build_language_model

    comp = load_composition(settings.composition)
    if comp.llm.tiny is None:
        raise ValueError(f"composition {settings.composition!r} has no [llm.tiny]; the tiny world needs a tiny LLM")
    llm, tokenizer = build_language_model(comp.llm, seed=comp.seed)
    texts = pretraining_texts(comp, settings, registry=registry)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(settings.threads):
        torch.manual_seed(settings.seed)
        llm.requires_grad_(True)
        llm.train()
        params = list(llm.parameters())
        opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.98), weight_decay=settings.weight_decay)
        warm = max(1, settings.steps // 10)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, settings.steps - warm)
            return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        order = torch.Generator().manual_seed(settings.seed)
        perm: list[int] = []
        losses: list[float] = []
        for step in range(settings.steps):
            if len(perm) < settings.batch_size:
                perm += torch.randperm(len(texts), generator=order).tolist()
            chosen, perm = perm[: settings.batch_size], perm[settings.batch_size :]
            ids, labels = _batch(tokenizer, [texts[i] for i in chosen])
            out = llm(input_ids=ids, attention_mask=(labels != -100) | (ids != tokenizer.pad_token_id), labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(out.loss.detach()))
            if log and (step + 1) % 100 == 0:
                print(f"tiny world: step {step + 1}/{settings.steps} loss {losses[-1]:.4f}", flush=True)
    llm.requires_grad_(False)
    llm.eval()
    tenth = max(1, settings.steps // 10)
    info = {
        "steps": settings.steps,
        "seconds": round(time.perf_counter() - started, 2),
        "first_loss": sum(losses[:tenth]) / tenth,
        "final_loss": sum(losses[-tenth:]) / tenth,
        "texts": len(texts),
    }
    return {k: v.detach().clone().contiguous() for k, v in llm.state_dict().items()}, info


def tiny_world_weights(
    settings: TinyWorldSettings = TinyWorldSettings(),
    *,
    registry: Any = None,
    cache_dir: "str | os.PathLike[str] | None" = None,
    rebuild: bool = False,
    log: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The pretrained LLM weights and their manifest, from the cache or pretrained now (then cached); ``registry``
    (default: the installed plugins) says whose toy-world captions make up the language.

    Returns:
        ``(state_dict, manifest)``; ``manifest["cached"]`` says whether they were read from disk.
    """
    from ..folders import TINY_WORLD
    from ..serialization import atomic_directory, read_safetensors, write_safetensors

    key = tiny_world_key(settings, registry)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / key
    if not rebuild and (target / WEIGHTS).is_file() and (target / MANIFEST).is_file():
        manifest = json.loads((target / MANIFEST).read_text())
        return read_safetensors(target / WEIGHTS), {**manifest, "cached": True, "path": str(target)}
    state, info = pretrain_tiny_llm(settings, registry=registry, log=log)
    manifest = {"format": FORMAT, "key": key, "settings": asdict(settings), "pretraining": info}
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target, TINY_WORLD) as tmp:
        write_safetensors(state, tmp / WEIGHTS)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return state, {**manifest, "cached": False, "path": str(target)}


def _put_weights(model: "NextGPT", state: dict[str, torch.Tensor]) -> None:
    """Copy the base LLM weights into ``model.llm``: whole tensors, and the first ``base_vocab`` rows of the
    (resized) embedding and LM head; the added tokens' rows keep their init."""
    own = model.llm.state_dict()
    missing = sorted(set(state) - set(own))
    if missing:
        raise ValueError(f"tiny world weights do not fit the model's LLM: unknown tensors {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            dest = own[name]
            if dest.shape == value.shape:
                dest.copy_(value)
            elif dest.dim() == 2 and dest.shape[1:] == value.shape[1:] and dest.shape[0] >= value.shape[0]:
                dest[: value.shape[0]].copy_(value)
            else:
                raise ValueError(f"tiny world weight {name} is {tuple(value.shape)}; the model has {tuple(dest.shape)}")


def load_tiny_world(
    registry: Any = None,
    settings: TinyWorldSettings = TinyWorldSettings(),
    *,
    cache_dir: "str | os.PathLike[str] | None" = None,
    rebuild: bool = False,
    log: bool = False,
) -> "NextGPT":
    """The ``settings.composition`` model with the pretrained tiny LLM (see the module docstring).

    Args:
        registry: the plugins to build the composition from, whose toy-world parts make up the caption language
            (default: the installed ones).
        settings: the pretraining settings (and cache key).
        cache_dir: where the weights are cached (default :func:`default_cache_dir`).
        rebuild: pretrain again even if cached.
        log: print pretraining progress.

    Returns:
        A :class:`~nextgpt_core.model.NextGPT` in eval mode, LLM frozen; ``model.tiny_world`` holds the manifest
        (key, settings, pretraining time and losses, whether it came from the cache).
    """
    from ..model import NextGPT

    state, manifest = tiny_world_weights(settings, registry=registry, cache_dir=cache_dir, rebuild=rebuild, log=log)
    model = NextGPT.from_composition(settings.composition, registry=registry)
    _put_weights(model, state)
    model.llm.requires_grad_(False)
    model.eval()
    model.tiny_world = manifest
    return model


def caption_world(registry: Any = None) -> list[str]:
    """Every training caption of the toy-world parts of ``registry`` (default: the installed plugins), in
    registration order: the language the tiny world's LLM is pretrained on, and every caption
    :func:`~nextgpt_core.training.synthetic.make_synthetic_dataset` can write."""
    return [c for c, _ in _caption_world(registry)]
