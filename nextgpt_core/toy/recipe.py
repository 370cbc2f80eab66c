"""Building the toy world from scratch: every phase, in dependency order, a progress bar and a log file each.

:func:`build_toy_world` writes a self-contained world folder::

    <out>/toy.toml                 the composition (paths relative to itself: ${COMPOSITION_DIR})
    <out>/manifest.json            the recipe, seeds, versions, commit, per-phase facts, and the sha256 of every file
    <out>/imagebind.safetensors    the ImageBind branches (official key names), bound into one space
    <out>/llm/                     the tiny Llama and its tokenizer (a Hugging Face folder)
    <out>/decoders/<key>/          each generated modality's decoder (a diffusers pipeline folder)
    <out>/nextgpt/                 the NExT-GPT part: projectors, LoRA, token rows (a nextgpt checkpoint)
    <out>/logs/<phase>.log         one log per phase (not part of the shipped weights)
    <out>/work/                    training files, target caches, stage runs (not shipped)

Phases: ``data`` (render the items, write the official-format files), ``encoders``, ``decoder-<key>`` per
generated modality, ``language`` (the frozen parts, independent, run in parallel worker processes), then
``compose`` (the composition file), ``targets`` (``nextgpt cache-targets``), ``stage1``..``stage3`` (``nextgpt
train``, the commands of docs/training.md, run as a user runs them) and ``package`` (the checkpoint and the
manifest). The world is what the installed plugins offer (``ToyWorld.installed``); nothing here names a modality.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from queue import Empty
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError
from .encoders import EncoderSettings
from .language import LanguageSettings

__all__ = ["SCALES", "SHIPPED", "RecipeSettings", "build_toy_world", "builtin_world", "install_world"]

#: what a world folder ships (the rest is work and logs)
SHIPPED = ("toy.toml", "manifest.json", "imagebind.safetensors", "llm", "decoders", "nextgpt")
FORMAT = "nextgpt-toy-world"
#: what the repository accepts for the built-in world (it is committed): per file and in all
MAX_FILE_BYTES = 5 * 2**20
MAX_WORLD_BYTES = 30 * 10**6
REBUILD = "make toy-world"


@dataclass(frozen=True)
class StageSettings:
    """One ``nextgpt train`` run: steps, global batch size, learning rate."""

    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class RecipeSettings:
    """Everything that decides the world (all of it goes into the manifest).

    Attributes:
        scale: ``"full"`` (the shipped world, about an hour on 2 cores) or ``"mini"`` (the end-to-end check the
            tests run in seconds: every phase, tiny sizes and step counts).
        seed: the one seed every phase derives its own from.
        renders: X-caption rows per training combination (stage 1 and 2 files).
        dialogues: MosIT dialogues per task, and ``t2m`` rows per generated modality.
        encoders, language: the frozen encoders' and the LLM's settings.
        stage1, stage2, stage3: the ``nextgpt train`` runs.
        input_tokens: LLM tokens per encoded item (the linear input projector's ``tokens``).
        projector: the transformer output projector's options (the official architecture, toy width).
        lora: the stage-3 LoRA settings.
    """

    scale: str = "full"
    seed: int = 0
    renders: int = 3
    dialogues: Mapping[str, int] = field(default_factory=lambda: {
        "describe": 1500, "generate": 1500, "convert": 600, "edit": 800, "multi": 500, "t2m": 300})
    encoders: EncoderSettings = EncoderSettings()
    language: LanguageSettings = LanguageSettings()
    stage1: StageSettings = StageSettings(steps=500, batch_size=32, lr=1e-3)
    stage2: StageSettings = StageSettings(steps=1000, batch_size=32, lr=1e-3)
    stage3: StageSettings = StageSettings(steps=800, batch_size=16, lr=5e-4)
    input_tokens: int = 4
    projector: Mapping[str, Any] = field(default_factory=lambda: {
        "d_model": 96, "num_heads": 4, "num_encoder_layers": 2, "num_decoder_layers": 2, "dim_feedforward": 192})
    lora: Mapping[str, Any] = field(default_factory=lambda: {"r": 8, "alpha": 16.0, "dropout": 0.0})


#: the two scales: the shipped world and the miniature the tests run end to end
SCALES: dict[str, RecipeSettings] = {
    "full": RecipeSettings(),
    "mini": RecipeSettings(
        scale="mini",
        renders=1,
        dialogues={"describe": 4, "generate": 4, "convert": 2, "edit": 2, "multi": 2, "t2m": 2},
        encoders=EncoderSettings(steps=3, batch_size=8, renders=1, text_dim=16, text_layers=1),
        language=replace(LanguageSettings(), steps=3, dialogues=5, copies=1, batch_size=4,
                         model=LanguageSettings().model.model_copy(update={
                             "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "tokenizer_vocab_size": 320})),
        stage1=StageSettings(steps=2, batch_size=2, lr=1e-3),
        stage2=StageSettings(steps=2, batch_size=2, lr=1e-3),
        stage3=StageSettings(steps=2, batch_size=2, lr=1e-3),
        input_tokens=2,
        projector={"d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                   "dim_feedforward": 32},
        lora={"r": 2, "alpha": 4.0, "dropout": 0.0},
    ),
}


# ---------------------------------------------------------------------------------------------- phases
@dataclass
class _Phase:
    name: str
    needs: tuple[str, ...]
    run: Callable[["_Context"], dict[str, Any]]
    weight: float = 1.0  # a guess of its length, to start long phases first
    #: what the phase writes (relative to the world) and what its result depends on (:func:`_fingerprint`):
    #: a phase with both can be copied from an earlier world (``--reuse``) that made it with the same fingerprint
    outputs: tuple[str, ...] = ()
    inputs: Callable[["_Context"], dict[str, Any]] | None = None


@dataclass
class _Context:
    out: Path
    settings: RecipeSettings
    keys: tuple[str, ...]
    log: Callable[[str], None] = print
    progress: Callable[[int, int, float], None] = lambda step, total, loss: None
    reuse: tuple[Path, ...] = ()

    @property
    def work(self) -> Path:
        return self.out / "work"

    def world(self) -> Any:
        from .world import ToyWorld

        return ToyWorld.installed(keys=self.keys)


def _phase_data(ctx: _Context) -> dict[str, Any]:
    from ..plugins import get_registry
    from .data import write_training_data

    s = ctx.settings
    files = write_training_data(ctx.world(), ctx.work / "data", registry=get_registry(),
                                renders={k: s.renders for k in ctx.keys}, dialogues=s.dialogues, seed=s.seed,
                                progress=ctx.log)
    return {"counts": files.counts}


def _phase_encoders(ctx: _Context) -> dict[str, Any]:
    from ..plugins import get_registry
    from .encoders import train_encoders

    return train_encoders(ctx.world(), ctx.out / "imagebind.safetensors", registry=get_registry(),
                          scale=ctx.settings.scale, settings=replace(ctx.settings.encoders, seed=ctx.settings.seed + 1),
                          progress=ctx.progress, log=ctx.log)


def _phase_language(ctx: _Context) -> dict[str, Any]:
    from ..composition import PromptSettings
    from .language import train_language_model

    return train_language_model(ctx.world(), PromptSettings(), ctx.out / "llm",
                                replace(ctx.settings.language, seed=ctx.settings.seed + 2),
                                progress=ctx.progress, log=ctx.log)


def _sources(*modules: Any) -> dict[str, str]:
    import inspect

    return {m.__name__: inspect.getsource(m) for m in modules}


def _fingerprint(inputs: dict[str, Any]) -> str:
    """16 hex chars of SHA-256 over a phase's inputs (sources, settings, seed) and the library versions: two runs
    with the same fingerprint compute the same result."""
    import hashlib

    payload = json.dumps({**inputs, "versions": _versions()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _decoder_inputs(key: str, ctx: _Context) -> dict[str, Any]:
    import inspect

    from . import diffusion, optim

    part = ctx.world().parts[key]
    # the part's recipe and the shared training loops it calls: a change to either trains the decoder again
    return {"source": inspect.getsource(sys.modules[type(part).__module__]), "loops": _sources(diffusion, optim),
            "scale": ctx.settings.scale, "seed": ctx.settings.seed}


def _world_digest(ctx: _Context) -> dict[str, str]:
    """What the encoders and the LLM learn from, per part, as data rather than source code (so editing a part's
    decoder recipe does not invalidate them): its combinations, captions and held-out marks, every phrasing, its
    encoder recipe, and the bytes of a few seeded renderings."""
    import hashlib

    import numpy as np

    out = {}
    for key, part in ctx.world().parts.items():
        h = hashlib.sha256()
        combos = part.combinations()
        payload = {
            "combinations": [[sorted(c.items()), part.caption(c), part.held_out(c)] for c in combos],
            "phrasings": [list(getattr(part, name)) for name in ("generate_requests", "describe_requests",
                                                                 "describe_answers", "generate_answers", "convert_requests")],
            "edits": {k: list(v) for k, v in part.edit_requests.items()},
            "noun": part.noun, "can_generate": part.can_generate,
            "encoder": repr(part.encoder_recipe(ctx.settings.scale)),
        }
        h.update(json.dumps(payload, sort_keys=True).encode("utf-8"))
        for i, c in enumerate(combos[:: max(1, len(combos) // 5)]):
            h.update(np.ascontiguousarray(np.asarray(part.render(c, np.random.default_rng(i)))).tobytes())
        out[key] = h.hexdigest()
    return out


def _encoder_inputs(ctx: _Context) -> dict[str, Any]:
    from . import encoders, world

    return {"world": _world_digest(ctx), "source": _sources(encoders, world), "scale": ctx.settings.scale,
            "settings": asdict(ctx.settings.encoders), "seed": ctx.settings.seed}


def _language_inputs(ctx: _Context) -> dict[str, Any]:
    from . import dialogues, language, world

    return {"world": _world_digest(ctx), "source": _sources(dialogues, language, world),
            "settings": asdict(ctx.settings.language), "seed": ctx.settings.seed}


def _reused(phase: _Phase, ctx: _Context, fingerprint: str) -> dict[str, Any] | None:
    """Copy the phase's outputs from the first earlier world that made them with ``fingerprint``; its facts, or
    ``None`` when none did."""
    for earlier in ctx.reuse:
        try:
            facts = json.loads((earlier / "manifest.json").read_text(encoding="utf-8"))["phases"][phase.name]
        except (OSError, ValueError, KeyError):
            continue
        if facts.get("fingerprint") != fingerprint or not all((earlier / o).exists() for o in phase.outputs):
            continue
        for name in phase.outputs:
            source, target = earlier / name, ctx.out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        ctx.log(f"reused from {earlier} (same fingerprint {fingerprint})")
        return {**facts, "reused_from": str(earlier)}
    return None


def _phase_decoder(key: str, ctx: _Context) -> dict[str, Any]:
    from .contract import DecoderTraining

    world = ctx.world()
    part = world.parts[key]
    renders = part.decoder_renders[ctx.settings.scale]
    items = world.render(key, world.combinations(key, "train"), renders, ctx.settings.seed + 3, tag="dec")
    ctx.log(f"{len(items)} training items ({renders} renderings of {len(world.combinations(key, 'train'))} combinations)")
    job = DecoderTraining([(it.attributes, it.caption, it.media) for it in items], ctx.out / "decoders" / key,
                          ctx.settings.scale, ctx.settings.seed + 4, ctx.progress, ctx.log)
    return part.train_decoder(job)


def _phase_compose(ctx: _Context) -> dict[str, Any]:
    text = composition_text(ctx.world(), ctx.settings, checkpoint=False)
    (ctx.out / "toy.toml").write_text(text, encoding="utf-8")
    ctx.log(text)
    return {}


def _cli(ctx: _Context, args: Sequence[str], metrics: Path | None = None, total: int = 0) -> None:
    """Run ``nextgpt <args>`` as a user would (a subprocess), output to the phase's log; progress from the run's
    ``metrics.jsonl`` lines."""
    command = [sys.executable, "-m", "nextgpt_core.cli", *args]
    ctx.log("$ nextgpt " + " ".join(str(a) for a in args))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_MININTERVAL": "5"}
    with open(ctx.out / "logs" / f"{_current_phase.get('name', 'cli')}.log", "a", encoding="utf-8") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(1.0)
            if metrics is not None and metrics.is_file() and total:
                rows = metrics.read_text(encoding="utf-8").splitlines()
                if rows:
                    last = json.loads(rows[-1])
                    ctx.progress(len(rows), total, float(last.get("loss", float("nan"))))
    if proc.returncode != 0:
        raise RuntimeError(f"`nextgpt {args[0]}` failed with exit code {proc.returncode} (see the log)")


_current_phase: dict[str, str] = {}


def _data_args(files: Sequence[Path]) -> list[str]:
    return [a for f in files for a in ("--data", str(f))]


def _phase_targets(ctx: _Context) -> dict[str, Any]:
    data = ctx.work / "data"
    generated = [k for k, p in ctx.world().parts.items() if p.can_generate]
    common = ["--composition", str(ctx.out / "toy.toml"), "--media-root", str(data / "media")]
    _cli(ctx, ["cache-targets", *_data_args([data / f"xcaption_{k}.json" for k in generated]),
               "--task", "generate", "--out", str(ctx.work / "targets-s2"), *common])
    _cli(ctx, ["cache-targets", *_data_args([data / "mosit.json", *[data / f"t2m_{k}.json" for k in generated]]),
               "--out", str(ctx.work / "targets-s3"), *common])
    return {}


def _stage(n: int, ctx: _Context) -> dict[str, Any]:
    """``nextgpt train --stage n`` on the stage's files, chained to the previous stage's checkpoint."""
    s = ctx.settings
    stage: StageSettings = getattr(s, f"stage{n}")
    data = ctx.work / "data"
    world = ctx.world()
    generated = [k for k, p in world.parts.items() if p.can_generate]
    if n == 1:
        files = [data / f"xcaption_{k}.json" for k, p in world.parts.items() if p.describe_requests]
    elif n == 2:
        files = [data / f"xcaption_{k}.json" for k in generated]
    else:
        files = [data / "mosit.json", *[data / f"t2m_{k}.json" for k in generated]]
    out = ctx.work / f"stage{n}"
    args = ["train", "--stage", str(n), *_data_args(files), "--media-root", str(data / "media"),
            "--composition", str(ctx.out / "toy.toml"), "--out", str(out), "--steps", str(stage.steps),
            "--batch-size", str(stage.batch_size), "--lr", str(stage.lr), "--seed", str(s.seed + 10 + n),
            "--checkpoint-every", str(stage.steps)]
    if n >= 2:
        args += ["--targets", str(ctx.work / ("targets-s2" if n == 2 else "targets-s3"))]
        args += ["--checkpoint", str(ctx.work / f"stage{n - 1}" / f"step-{getattr(s, f'stage{n - 1}').steps}")]
    _cli(ctx, args, metrics=out / "metrics.jsonl", total=stage.steps)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    tenth = max(1, len(rows) // 10)
    return {"steps": len(rows), "first_loss": round(sum(r["loss"] for r in rows[:tenth]) / tenth, 4),
            "final_loss": round(sum(r["loss"] for r in rows[-tenth:]) / tenth, 4),
            "trainable": json.loads((out / "trainable.json").read_text(encoding="utf-8")) if (out / "trainable.json").is_file() else None}


def _phase_package(ctx: _Context) -> dict[str, Any]:
    """The final stage's weights as the world's checkpoint (written by ``save_checkpoint``: the trained parts only,
    no optimizer state), then the composition that names it."""
    from ..model import NextGPT

    last = 3 if any(p.can_generate for p in ctx.world().parts.values()) else 1
    final = ctx.work / f"stage{last}" / f"step-{getattr(ctx.settings, f'stage{last}').steps}"
    model = NextGPT.from_composition(ctx.out / "toy.toml", checkpoint=final)
    model.save_checkpoint(ctx.out / "nextgpt", recipe="nextgpt_core.toy.recipe", stage=last, steps=getattr(ctx.settings, f"stage{last}").steps)
    (ctx.out / "toy.toml").write_text(composition_text(ctx.world(), ctx.settings, checkpoint=True), encoding="utf-8")
    return {"checkpoint": f"work/stage{last}/{final.name}"}


def _phases(keys: Sequence[str], generated: Sequence[str]) -> list[_Phase]:
    """The phases and what each needs first. A world with no generated modality stops after stage 1 (stages 2
    and 3 train the output side)."""
    frozen = ("encoders", "language", *[f"decoder-{k}" for k in generated])
    phases = [
        _Phase("data", (), _phase_data, 1),
        _Phase("encoders", (), _phase_encoders, 6, ("imagebind.safetensors",), _encoder_inputs),
        _Phase("language", (), _phase_language, 5, ("llm",), _language_inputs),
        *[_Phase(f"decoder-{k}", (), functools.partial(_phase_decoder, k), 10, (f"decoders/{k}",),
                 functools.partial(_decoder_inputs, k)) for k in generated],
        _Phase("compose", frozen, _phase_compose, 0),
        _Phase("stage1", ("compose", "data"), functools.partial(_stage, 1), 3),
    ]
    if generated:
        phases += [
            _Phase("targets", ("compose", "data"), _phase_targets, 1),
            _Phase("stage2", ("stage1", "targets"), functools.partial(_stage, 2), 3),
            _Phase("stage3", ("stage2", "targets"), functools.partial(_stage, 3), 4),
        ]
    phases.append(_Phase("package", ("stage3" if generated else "stage1",), _phase_package, 0))
    return phases


# ---------------------------------------------------------------------------------------------- the composition
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def composition_text(world: Any, settings: RecipeSettings, *, checkpoint: bool) -> str:
    """The ``toy.toml`` of a world folder (paths relative to the file: ``${COMPOSITION_DIR}``)."""
    here = "${COMPOSITION_DIR}"
    lines = [
        "# The `toy` composition: the toy world (docs/toy-world.md), every part trained from scratch on 2 CPU cores",
        f"# by `{REBUILD}` (nextgpt_core/toy/recipe.py). Paths are relative to this file.",
        'name = "toy"',
        'description = "The toy world: shapes, colours, motions and tones; every part trained here (docs/toy-world.md)."',
    ]
    if checkpoint:
        lines += [f'checkpoint = "{here}/nextgpt"', f'weights_manifest = "{here}/manifest.json"']
    lines += [
        f"seed = {settings.seed}",
        "",
        "[llm]",
        f'path = "{here}/llm"',
        "",
        "[generation]",
        "max_new_tokens = 96",
        "do_sample = false",
        "max_context_tokens = 512",
        "",
        "[lora]",
        "enabled = true",
        f"r = {settings.lora['r']}",
        f"alpha = {float(settings.lora['alpha'])}",
        f"dropout = {float(settings.lora['dropout'])}",
        'target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]',
    ]
    for key, part in world.parts.items():
        recipe = part.encoder_recipe(settings.scale)
        trained = {"checkpoint": f"{here}/imagebind.safetensors"} if recipe.branch is not None else {}
        encoder = {"id": recipe.encoder, "options": {**recipe.encoder_options, **trained}}
        lines += ["", f"[modalities.{key}]", f"encoder = {_toml(encoder)}",
                  f"input_projector = {_toml({'id': 'linear', 'options': {'tokens': settings.input_tokens}})}"]
        if part.can_generate:
            choice = part.decoder_choice(f"{here}/decoders/{key}")
            lines += [f"output_projector = {_toml({'id': 'transformer', 'options': dict(settings.projector)})}",
                      f"decoder = {_toml(choice)}",
                      f"decode_options = {_toml(part.decode_options(settings.scale))}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- running
def _child(phase: _Phase, ctx_args: dict[str, Any], queue: Any) -> None:
    """Run one phase in a worker process: one torch thread, a log file, progress and the result on ``queue``."""
    import torch

    torch.set_num_threads(1)
    _current_phase["name"] = phase.name
    out = Path(ctx_args["out"])
    log_path = out / "logs" / f"{phase.name}.log"
    with open(log_path, "a", encoding="utf-8") as log_file:
        # everything the libraries print (warnings, their own progress bars) goes to the phase's log, not the
        # terminal where the parent draws one bar per phase
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        def log(line: str) -> None:
            log_file.write(line.rstrip("\n") + "\n")
            log_file.flush()

        last = [0.0]

        def progress(step: int, total: int, loss: float) -> None:
            now = time.monotonic()
            if now - last[0] > 0.5 or step == total:
                last[0] = now
                queue.put(("progress", phase.name, step, total, loss))

        ctx = _Context(out=out, settings=ctx_args["settings"], keys=ctx_args["keys"], log=log, progress=progress,
                       reuse=tuple(ctx_args.get("reuse", ())))
        started = time.perf_counter()
        cpu = time.process_time()
        try:
            fingerprint = _fingerprint(phase.inputs(ctx)) if phase.inputs is not None else None
            facts = _reused(phase, ctx, fingerprint) if fingerprint is not None else None
            if facts is not None:  # copied from an earlier world: its facts, as they were measured there
                queue.put(("done", phase.name, facts))
                return
            facts = phase.run(ctx)
            if fingerprint is not None:
                facts = {**facts, "fingerprint": fingerprint}
            facts = {**facts, "wall_seconds": round(time.perf_counter() - started, 1),
                     "cpu_seconds": round(time.process_time() - cpu, 1)}
            log(f"done in {facts['wall_seconds']} s")
            queue.put(("done", phase.name, facts))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the build
            log(traceback.format_exc())
            queue.put(("failed", phase.name, f"{type(exc).__name__}: {exc}"))


def build_toy_world(
    out: str | os.PathLike[str],
    *,
    scale: str = "full",
    seed: int = 0,
    jobs: int = 2,
    keys: Sequence[str] | None = None,
    bars: bool = True,
    settings: RecipeSettings | None = None,
    reuse: Sequence[str | os.PathLike[str]] = (),
    only_phases: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the toy world into ``out`` (see the module docstring); returns the manifest.

    Args:
        out: the world folder (created; refused if it holds anything but an earlier toy world's files).
        scale: ``"full"`` or ``"mini"`` (:data:`SCALES`).
        seed: the recipe's seed.
        jobs: worker processes for the independent phases (one torch thread each).
        keys: the modalities (default: every installed plugin with a toy-world part).
        bars: draw a progress bar per phase (tqdm) on stderr.
        only_phases: run just these phases (e.g. the decoders, to ``reuse`` them later); the manifest says the
            world is partial. A phase that needs one not listed is refused.
        reuse: earlier worlds: a phase one of them ran with the same fingerprint (:func:`_fingerprint`: the
            sources, settings and seed it depends on, and the library versions: the encoders, the LLM, each decoder)
            is copied instead of run again, and the manifest says so (``reused_from``). The data and the NExT-GPT
            stages always run.

        overwrite: replace ``out`` when it holds an earlier toy world (never any other folder).

    The world is written into a hidden sibling of ``out`` and swapped in whole at the end, so ``out`` is always the
    previous world or the new one, never half of one. A failed build leaves its folder as ``<out>.failed`` (logs
    inside) and names it.

    Raises:
        ConfigError: a bad scale, or a phase that failed (its log is named).
        OutputFolderError: ``out`` is not a new or empty folder nor (with ``overwrite``) an earlier toy world, or it
            is the current folder, a parent of it, or holds a ``reuse`` world.
    """
    from ..folders import TOY_WORLD, check_output_folder, swap_in, temporary_sibling, write_marker
    from .world import ToyWorld

    if settings is None:
        if scale not in SCALES:
            raise ConfigError(f"unknown toy-world scale {scale!r}; one of {', '.join(SCALES)}")
        settings = replace(SCALES[scale], seed=seed)
    world = ToyWorld.installed(keys=keys)
    if not world.parts:
        raise ConfigError("no installed plugin offers a toy-world part (install nextgpt-image, -video, -audio, -depth)")
    keys = tuple(world.parts)
    generated = [k for k, p in world.parts.items() if p.can_generate]
    phases = {p.name: p for p in _phases(keys, generated)}
    if only_phases is not None:
        unknown = sorted(set(only_phases) - set(phases))
        if unknown:
            raise ConfigError(f"unknown phase(s) {', '.join(unknown)}; phases: {', '.join(phases)}")
        phases = {n: p for n, p in phases.items() if n in only_phases}
        missing = sorted({need for p in phases.values() for need in p.needs} - set(phases))
        if missing:
            raise ConfigError(f"the phases asked for need {', '.join(missing)} too")
    target = Path(out)
    check_output_folder(target, TOY_WORLD, overwrite=overwrite, inputs=reuse, option="--out")
    out = temporary_sibling(target)  # the world is built here and swapped in whole at the end
    write_marker(out, "toy-world")
    (out / "logs").mkdir()
    try:
        facts: dict[str, Any] = {}
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        running: dict[str, Any] = {}
        bar_of: dict[str, Any] = {}
        tqdm = _tqdm() if bars else None
        failures: list[str] = []
        try:
            while len(facts) < len(phases) and not failures:
                ready = [p for p in phases.values() if p.name not in facts and p.name not in running
                         and all(n in facts for n in p.needs)]
                for phase in sorted(ready, key=lambda p: -p.weight)[: max(0, jobs - len(running))]:
                    child_args = {"out": str(out), "settings": settings, "keys": keys,
                                  "reuse": [Path(r).resolve() for r in reuse]}
                    proc = context.Process(target=_child, args=(phase, child_args, queue),
                                           name=f"toy-{phase.name}")
                    proc.start()
                    running[phase.name] = proc
                    if tqdm is not None:
                        bar_of[phase.name] = tqdm(total=1, desc=f"{phase.name:>16}", unit="step", dynamic_ncols=True,
                                                  leave=False)
                if not running:
                    raise ConfigError("toy world: phases cannot start (a dependency cycle)")
                try:
                    kind, name, *rest = queue.get(timeout=5.0)
                except Empty:  # a worker that died without a word (killed, out of memory) stops the build
                    for name, proc in list(running.items()):
                        if not proc.is_alive() and proc.exitcode not in (0, None):
                            failures.append(f"phase {name} died (exit code {proc.exitcode}; log: {out / 'logs' / (name + '.log')})")
                            running.pop(name)
                    continue
                if kind == "progress":
                    step, total, loss = rest
                    bar = bar_of.get(name)
                    if bar is not None:
                        bar.total = total
                        bar.n = step
                        bar.set_postfix_str(f"loss {loss:.4f}", refresh=True)
                elif kind == "done":
                    facts[name] = rest[0]
                    running.pop(name).join()
                    bar = bar_of.pop(name, None)
                    if bar is not None:
                        bar.close()
                    line = f"{name:>16}: done in {rest[0].get('wall_seconds', 0):.0f} s"
                    (tqdm.write if tqdm is not None else print)(line, file=sys.stderr)
                else:
                    failures.append(f"phase {name} failed: {rest[0]} (log: {out / 'logs' / (name + '.log')})")
                    running.pop(name).join()
        finally:
            for proc in running.values():
                proc.terminate()
                proc.join()
            for bar in bar_of.values():
                bar.close()
        if failures:
            raise ConfigError("; ".join(failures))
        manifest = _write_manifest(out, settings, keys, facts, time.perf_counter() - started, partial=only_phases is not None)
        _follow_umask(out)
        check_output_folder(target, TOY_WORLD, overwrite=overwrite, inputs=reuse, option="--out")
        swap_in(out, target)
    except BaseException as exc:
        failed = _keep_failed(out, target)
        if isinstance(exc, ConfigError):
            raise ConfigError(f"{exc} (the unfinished world with its logs: {failed})".replace(str(out), str(failed))) from exc
        raise
    return manifest


def _follow_umask(folder: Path) -> None:
    """Give every file the mode a new file gets under the umask (safetensors writes its files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


def _keep_failed(folder: Path, target: Path) -> Path:
    """Move an unfinished build to ``<target>.failed`` (replacing an earlier failed build of ours) for its logs."""
    from ..folders import TOY_WORLD

    failed = Path(os.path.abspath(target)).with_name(Path(target).name + ".failed")
    if failed.exists() and TOY_WORLD.recognise(failed):
        shutil.rmtree(failed)
    if not failed.exists() and folder.exists():
        folder.rename(failed)
        return failed
    return folder


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with accelerate / transformers
        return None
    return tqdm


def _is_toy_manifest(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _commit() -> str | None:
    try:
        here = Path(__file__).resolve().parents[2]
        done = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "diffusers", "peft", "accelerate", "tokenizers", "numpy", "av", "nextgpt-core"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _write_manifest(out: Path, settings: RecipeSettings, keys: Sequence[str], facts: dict[str, Any], seconds: float,
                    *, partial: bool = False) -> dict[str, Any]:
    from ..weights_manifest import write_weights_manifest

    files = sorted(
        str(p.relative_to(out)) for name in SHIPPED if name not in ("manifest.json",) and (out / name).exists()
        for p in ([out / name] if (out / name).is_file() else sorted((out / name).rglob("*"))) if p.is_file()
    )
    extra = {
        "format": FORMAT,
        "recipe": "nextgpt_core.toy.recipe.build_toy_world",
        "settings": json.loads(json.dumps(asdict(settings), default=str)),
        "modalities": list(keys),
        "seed": settings.seed,
        "versions": _versions(),
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "wall_seconds": round(seconds, 1),
        "partial": partial,
        "phases": facts,
    }
    write_weights_manifest(out, files, rebuild=REBUILD, extra=extra)
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def builtin_world() -> Path:
    """The folder of the built-in ``toy`` composition inside the package (``nextgpt_core/compositions/toy``)."""
    return Path(__file__).resolve().parents[1] / "compositions" / "toy"


def install_world(world: str | os.PathLike[str], target: Path | None = None) -> Path:
    """Copy a built world's shipped files (:data:`SHIPPED`) into ``target`` (default :func:`builtin_world`),
    replacing the toy world there: into a temporary sibling first, then swapped in, so an interrupted install
    leaves the old world whole.

    Raises:
        ConfigError: ``world`` is not a complete toy world (no manifest of ours, or a file missing or altered).
    """
    from ..weights_manifest import verify_weights_manifest

    source = Path(world)
    manifest = source / "manifest.json"
    if not manifest.is_file() or not _is_toy_manifest(manifest):
        raise ConfigError(f"{source}: not a toy world (no manifest.json written by `nextgpt toy build`)")
    verify_weights_manifest(manifest)
    target = target or builtin_world()
    if target.exists() and not (target / "manifest.json").is_file():
        raise ConfigError(f"{target}: exists and is not a toy world; not replacing it")
    staging = target.with_name(f".{target.name}.installing")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in SHIPPED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, staging / name, ignore=shutil.ignore_patterns("trainer_state"))
        elif path.is_file():
            shutil.copy2(path, staging / name)
    verify_weights_manifest(staging / "manifest.json")
    sizes = {f: f.stat().st_size for f in staging.rglob("*") if f.is_file()}
    too_big = [f"{f.relative_to(staging)} ({n / 2**20:.1f} MiB)" for f, n in sizes.items() if n > MAX_FILE_BYTES]
    if too_big or sum(sizes.values()) > MAX_WORLD_BYTES:
        shutil.rmtree(staging)
        raise ConfigError(f"{source}: a shipped toy world keeps each file under {MAX_FILE_BYTES >> 20} MiB and all under "
                          f"{MAX_WORLD_BYTES // 10**6} MB; this one has {sum(sizes.values()) / 1e6:.1f} MB"
                          + (f", and {', '.join(too_big)}" if too_big else ""))
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)
    return target
