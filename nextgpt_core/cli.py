"""The ``nextgpt`` command line (typer). Thin: every command wraps the Python API.

Bad input (a missing file, an unsupported media type, an unknown modality, a malformed composition) is one line
on stderr and exit code 2, never a traceback. ``nextgpt --help`` and ``nextgpt plugins`` never import torch.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(
    name="nextgpt",
    help="Any-to-any multimodal LLM (NExT-GPT method): text, images, video and audio in and out, through plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich formatting costs ~0.1 s of start-up
)
compose_app = typer.Typer(help="Check and inspect compositions.", no_args_is_help=True)
app.add_typer(compose_app, name="compose")

_MODALITY_PREFIX = re.compile(r"^([a-z][a-z0-9_]*)=(.+)$")


class UsageProblem(Exception):
    """Bad input detected by the CLI itself."""


#: set to 1 (or pass --debug) to follow each one-line error with its traceback, causes included
DEBUG_ENV = "NEXTGPT_DEBUG"


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def _fail(message: str, exc: BaseException | None = None) -> None:
    typer.echo(f"error: {message}", err=True)
    if exc is not None and _debugging():
        import traceback

        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    raise typer.Exit(2)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help=f"After an error's one line, print its traceback and causes (or set {DEBUG_ENV}=1).")) -> None:
    """Any-to-any multimodal LLM (NExT-GPT method): text, images, video and audio in and out, through plugins."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


#: OSErrors that say the machine cannot take the write (disk full, quota, read-only, permission): one line, exit 1
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn nextgpt's input errors into one stderr line and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nextgpt_registry import RegistryError

        from .errors import NextGPTError

        try:
            return fn(*args, **kwargs)
        except (NextGPTError, RegistryError, UsageProblem) as exc:
            if getattr(exc, "same_on_every_process", False) and os.environ.get("RANK", "0") != "0":
                raise typer.Exit(2) from None  # every process of the launch found it: the first one says it
            _fail(str(exc), exc)
        except OSError as exc:
            if exc.errno not in _ENVIRONMENT_ERRNOS:
                raise
            # the machine, not the input: one line, exit 1 (atomic writes left every folder as it was)
            where = f" ({exc.filename})" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or exc}{where}; nothing was replaced", err=True)
            raise typer.Exit(1) from None

    return wrapper


# ---------------------------------------------------------------------------------------------- plugins
@app.command()
@_guard
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List installed modalities and components: distribution, version, licence (no torch import)."""
    from .plugins import get_registry

    reg = get_registry()
    modalities = [
        {
            "key": s.key,
            "plugin": reg.provider("modality", s.key).describe(),
            "license": s.license,
            "inputs": ",".join(s.extensions) if s.can_read else "-",
            "outputs": f"{s.num_signal_tokens} x {s.signal_token_format}" if s.can_generate else "-",
            "description": s.description,
        }
        for s in reg.modalities.values()
    ]
    components = [
        {
            "id": c.id,
            "role": c.role,
            "modality": c.modality or "any",
            "plugin": reg.provider("component", c.id).describe(),
            "license": c.license,
            "target": c.target,
        }
        for c in reg.components.values()
    ]
    problems = [f.describe() for f in reg.failures] + [f"plugin {n!r} could not be found" for n in reg.not_found]
    if as_json:
        typer.echo(json.dumps({"modalities": modalities, "components": components, "problems": problems}, indent=2))
        return
    typer.echo(f"Modalities ({len(modalities)})")
    if not modalities:
        typer.echo("  (none: install a modality plugin, e.g. pip install -e plugins/nextgpt-image)")
    for m in modalities:
        typer.echo(f"  {m['key']:<12} {m['plugin']:<34} {m['license']:<14} in: {m['inputs']:<16} out: {m['outputs']}")
    typer.echo(f"Components ({len(components)})")
    for c in components:
        typer.echo(f"  {c['id']:<22} {c['role']:<17} {c['modality']:<11} {c['plugin']:<34} {c['license']}")
    for p in problems:
        typer.echo(f"warning: {p}", err=True)


# ---------------------------------------------------------------------------------------------- compose
@compose_app.command("validate")
@_guard
def compose_validate(file: Path = typer.Argument(..., help="A composition TOML file (or a built-in name).")) -> None:
    """Check a composition: keys, names, that every projector fits its encoder, the LLM and its decoder (reading the
    local LLM and decoder folders' config files), and that the LoRA target modules exist in the LLM (built on the
    meta device from its config.json)."""
    from .composition import check_local_weights, resolve_composition
    from .hf_loading import quiet_transformers
    from .lora import check_lora_targets

    resolved = resolve_composition(str(file))
    check_local_weights(resolved)  # the LLM and decoder folders, from their config files
    with quiet_transformers():
        _, unchecked = check_lora_targets(resolved)
    for note in [*resolved.notes, *([unchecked] if unchecked else [])]:
        typer.echo(f"note: {note}", err=True)
    mods = ", ".join(resolved.modalities) or "(no modalities)"
    typer.echo(f"ok: composition {resolved.composition.name!r}: LLM hidden {resolved.llm_hidden_size}; modalities: {mods}")


@compose_app.command("show")
@_guard
def compose_show(name: str = typer.Argument(..., help="A built-in name (e.g. tiny) or a TOML path.")) -> None:
    """Print a composition resolved against the installed plugins (JSON)."""
    from .composition import resolve_composition

    typer.echo(json.dumps(resolve_composition(name).to_dict(), indent=2))


@compose_app.command("list")
def compose_list() -> None:
    """List the built-in compositions."""
    from .composition import builtin_compositions

    for name in builtin_compositions():
        typer.echo(name)


# ---------------------------------------------------------------------------------------------- generate / demo
def _parse_input(value: str) -> tuple[Optional[str], Path]:
    match = _MODALITY_PREFIX.match(value)
    if match and not Path(value).exists():
        return match.group(1), Path(match.group(2))
    return None, Path(value)


def _media_inputs(values: list[str]) -> list[Any]:
    from .conversation import Media
    from .folders import not_a_file
    from .plugins import get_registry

    reg = get_registry()
    media = []
    for value in values:
        key, path = _parse_input(value)
        if key is not None:
            reg.modality(key)  # unknown modality: lists the registered ones
        why = not_a_file(path)
        if why == "not found":
            raise UsageProblem(f"input file not found: {str(path)!r}")
        if why:
            raise UsageProblem(f"input {str(path)!r} {why}")
        media.append(Media.from_path(path, modality=key or reg.modality_for_path(path)))
    return media


def _check_checkpoint(checkpoint: Optional[Path]) -> None:
    """``--checkpoint`` must be a folder (a file or nothing there is one line naming which)."""
    from .folders import not_a_folder

    why = None if checkpoint is None else not_a_folder(checkpoint)
    if why == "not found":
        raise UsageProblem(f"--checkpoint: checkpoint folder not found: {str(checkpoint)!r}")
    if why:
        raise UsageProblem(f"--checkpoint {str(checkpoint)!r} {why}")


def _composition_file(composition: str) -> Optional[Path]:
    """The composition's file when it names one (a built-in name is no file)."""
    path = Path(composition)
    return path if path.suffix == ".toml" or path.exists() else None


def _check_out(out: Path, kind: Any, *, overwrite: bool = False, resume: bool = False, inputs: list[Any] = ()) -> None:
    """Refuse, before any work, an ``--out`` that would lose what a user had (nextgpt_core.folders)."""
    from .folders import check_output_folder

    check_output_folder(out, kind, overwrite=overwrite, resume=resume, inputs=inputs, option="--out")


_OVERWRITE_HELP = "Replace --out if it holds an earlier output of this command (never any other folder)."


def _print_response(response: Any, paths: list[Path]) -> None:
    for notice in response.notices:
        typer.echo(f"note: {notice}", err=True)
    typer.echo(f"reply: {response.text}")
    typer.echo(f"seed: {response.seed}")
    made = {p.path: p for p in response.media if p.path is not None}
    for path in paths:
        part = made.get(path)
        details = (part.details or {}) if part is not None else {}
        source = f" ({part.produced_by}" if part is not None and part.produced_by else ""
        if source and "gallery_item" in details:
            source += f": gallery item {details['gallery_item']}, score {details['score']:.3f}"
        typer.echo(f"wrote {path}{source + ')' if source else ''}")


@app.command()
@_guard
def generate(
    prompt: str = typer.Option("", "--prompt", "-p", help="The user's text."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="A media file, [MODALITY=]PATH (repeatable)."),
    want: list[str] = typer.Option([], "--want", "-w", help="A modality the reply must contain (repeatable)."),
    composition: str = typer.Option("toy", "--composition", "-c", help="Built-in name (toy: the trained toy world; tiny: random weights) or TOML path."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained weights (a nextgpt checkpoint folder)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling and decoders."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Override the composition's budget."),
    out: Path = typer.Option(Path("outputs/generate"), "--out", "-o", help="Folder for the reply text and generated media."),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
    decoder: list[str] = typer.Option([], "--decoder", "-d", help="MODALITY=DECODER: a decoder that turns the modality's runs into media (repeatable; e.g. image=image/retrieval; default: the composition's decode_with)."),
) -> None:
    """Answer one request: text and media in, text and media out (written to --out, a new or empty folder, or an
    earlier reply folder with --overwrite)."""
    from .composition import load_composition
    from .conversation import Conversation
    from .folders import REPLIES

    load_composition(composition)  # a malformed composition fails before anything heavy loads
    media = _media_inputs(inputs)
    _check_checkpoint(checkpoint)
    _check_out(out, REPLIES, overwrite=overwrite,
               inputs=[m.path for m in media] + [checkpoint, _composition_file(composition)])
    conversation = Conversation.from_prompt(prompt, media)
    from .model import NextGPT

    chosen: dict[str, list[str]] = {}
    for value in decoder:
        key, sep, ident = value.partition("=")
        if not sep or not key or not ident:
            raise UsageProblem(f"--decoder {value!r}: write MODALITY=DECODER, e.g. image=image/retrieval")
        chosen.setdefault(key, []).append(ident)
    model = NextGPT.from_composition(composition, checkpoint=checkpoint)
    response = model.generate(conversation, want=want, seed=seed, max_new_tokens=max_new_tokens, decoders=chosen or None)
    _print_response(response, response.save(out, model.registry, overwrite=overwrite))


@app.command()
@_guard
def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", "-o", help="Folder for inputs and outputs."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and decoders."),
    composition: str = typer.Option("toy", "--composition", "-c", help="Built-in name or TOML path (toy: the toy world; tiny: random weights)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
) -> None:
    """Show the model working: on the toy world (the default), a short session (describe an item of every
    modality, make new ones, convert a picture into a video, edit a picture), every reply checked; on another
    composition, each input modality's example in and every output modality out. Writes the files (the whole
    folder at the end) and prints their paths."""
    from .composition import load_composition
    from .conversation import Conversation, Media
    from .folders import REPLIES, atomic_directory, list_files, write_marker
    from .model import NextGPT

    load_composition(composition)  # a malformed composition fails before anything heavy loads
    _check_out(out, REPLIES, overwrite=overwrite, inputs=[_composition_file(composition)])
    model = NextGPT.from_composition(composition)
    for note in model.resolved.notes:
        typer.echo(f"note: {note}", err=True)
    with atomic_directory(out, REPLIES, overwrite=overwrite, option="--out") as tmp:
        if model.composition.name == "toy":
            from .toy.demo import run_toy_demo
            from .toy.world import ToyWorld

            world = ToyWorld.installed(model.registry, keys=list(model.resolved.modalities))
            # the session writes into the temporary folder; what it prints names the final one
            run_toy_demo(model, world, tmp, seed=seed, say=lambda line: typer.echo(line.replace(str(tmp), str(out))))
            write_marker(tmp, "replies", list_files(tmp))
            return
        media = []
        for key in model.input_modalities():
            io = model.media_io(key)
            sample = io.example()
            spec = model.registry.modality(key)
            if sample is None:
                continue
            suffix = spec.output_extension or (spec.extensions[0] if spec.extensions else "")
            path = io.write(sample, tmp / f"input_{key}{suffix}")
            typer.echo(f"input {key}: {out / Path(path).relative_to(tmp)}")
            media.append(Media(modality=key, data=sample, path=path))
        if not model.resolved.modalities:
            typer.echo("note: no modality plugins are installed, so this demo is text only (see plugins/)", err=True)
        prompt = "Describe the inputs, then show me what they could become."
        conversation = Conversation.from_prompt(prompt, media)
        response = model.generate(conversation, want=model.output_modalities(), seed=seed)
        typer.echo(f"prompt: {prompt}")
        written = response.save(tmp / "reply", model.registry)
        write_marker(tmp, "replies", list_files(tmp))
    _print_response(response, [out / p.relative_to(tmp) for p in written])


# ---------------------------------------------------------------------------------------------- training
def _read_data(data: list[Path], fmt: str, media_root: Optional[Path], on_error: str, task: str, registry: Any) -> Any:
    """Every ``--data`` file, read in order and concatenated (each reported on its own line)."""
    from .training.data import LoadedDataset, read_dataset

    samples, reports = [], []
    for path in data:
        loaded = read_dataset(path, format=fmt, media_root=media_root, on_error=on_error, registry=registry, task=task,
                              require_target_media=False)
        typer.echo(f"data: {loaded.report.summary()}", err=True)
        samples += loaded.samples
        reports.append(loaded.report)
    return LoadedDataset(samples, reports[0] if len(reports) == 1 else _merged_report(reports))


def _merged_report(reports: list[Any]) -> Any:
    """One report for several files (counts added up; the files named together)."""
    from .training.data import DataReport

    merged = DataReport(file=", ".join(r.file for r in reports), format="+".join(dict.fromkeys(r.format for r in reports)))
    for r in reports:
        merged.rows_read += r.rows_read
        merged.kept += r.kept
        merged.targets_without_media += r.targets_without_media
        merged.problems += r.problems
    return merged


@app.command("cache-targets")
@_guard
def cache_targets_command(
    data: list[Path] = typer.Option(..., "--data", help="Dataset file (our JSONL or an official format); repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Target cache folder: new or empty (or an earlier cache, with --overwrite); written atomically."),
    composition: str = typer.Option("tiny", "--composition", "-c", help="Built-in name or TOML path."),
    fmt: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    media_root: Optional[Path] = typer.Option(None, "--media-root", help="Folder the dataset's media paths are relative to."),
    task: str = typer.Option("generate", "--task", help="For X-caption files: caption (stage 1) or generate (stage 2)."),
    on_error: str = typer.Option("skip", "--on-error", help="skip (report and count) or fail on a bad row."),
    batch_size: int = typer.Option(32, "--batch-size", help="Captions per text-encoder call."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier target cache (never any other folder)."),
) -> None:
    """Encode every target caption once with its decoder's own text encoder (stage-2 L2 targets); for a retrieval
    decoder, embed every target media file once with the modality's encoder."""
    from .composition import resolve_composition
    from .folders import TARGET_CACHE
    from .training.targets import TargetCache, build_decoders, cache_targets, media_target_encoders

    read = [*data, media_root, _composition_file(composition)]
    _check_out(out, TARGET_CACHE, overwrite=overwrite, inputs=read)
    resolved = resolve_composition(composition)
    loaded = _read_data(data, fmt, media_root, on_error, task, None)
    targets = [t for sample in loaded.samples for t in sample.targets]
    counts = cache_targets(targets, build_decoders(resolved), out, composition=resolved.composition.name,
                           batch_size=batch_size, overwrite=overwrite, inputs=read,
                           media_encoders=media_target_encoders(resolved))
    typer.echo(f"cached {sum(counts.values())} targets ({', '.join(f'{k} {v}' for k, v in counts.items()) or 'none'}) in {out}")
    media = TargetCache(out).media_counts()
    if media:
        typer.echo(f"embedded {sum(media.values())} target media file(s) ({', '.join(f'{k} {v}' for k, v in media.items())}) "
                   "with the modality encoders, for the retrieval decoders")


def _fitting_samples(model: Any, samples: list[Any], on_error: str) -> list[Any]:
    """The samples whose text can fit the model's context, judged from their characters before training (a sample
    found too long mid-run aborted the whole run after costing gigabytes): skipped and counted, or (``--on-error
    fail``) one error line naming the first."""
    from .training.collate import context_limit, min_positions

    limit = context_limit(model)
    keep, long = [], []
    for sample in samples:
        (long if min_positions(model, sample) > limit else keep).append(sample)
    if long:
        first = long[0].sample_id or f"{long[0].source[0]}:{long[0].source[1]}"
        if on_error == "fail" or not keep:
            raise UsageProblem(f"sample {first}: its text alone needs more than the context limit of {limit} positions"
                               + (f" ({len(long)} such samples)" if len(long) > 1 else ""))
        typer.echo(f"data: skipped {len(long)} sample(s) longer than the context limit of {limit} positions "
                   f"(first: {first})", err=True)
    return keep


def _train_config(**settings: Any) -> Any:
    """``TrainConfig(**settings)``; a bad value is one line naming the command-line option."""
    from pydantic import ValidationError

    from .training.trainer import TrainConfig

    try:
        return TrainConfig(**settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        option = "--out" if field == "output_dir" else "--" + field.replace("_", "-")
        raise UsageProblem(f"{option} {first.get('input')!r}: {first['msg']}") from exc


@app.command()
@_guard
def train(
    data: list[Path] = typer.Option(..., "--data", help="Dataset file (our JSONL or an official format); repeatable: the files are concatenated."),
    stage: int = typer.Option(..., "--stage", help="1 (encoding side), 2 (decoding side) or 3 (instruction tuning)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: step-<k>/ checkpoints, metrics.jsonl, trainable.json."),
    composition: str = typer.Option("tiny", "--composition", "-c", help="Built-in name or TOML path."),
    targets: Optional[Path] = typer.Option(None, "--targets", help="Target cache from `nextgpt cache-targets` (stages 2, 3)."),
    fmt: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    media_root: Optional[Path] = typer.Option(None, "--media-root", help="Folder the dataset's media paths are relative to."),
    task: str = typer.Option("", "--task", help="For X-caption files: caption or generate (default: by stage)."),
    on_error: str = typer.Option("skip", "--on-error", help="skip (report and count) or fail on a bad row."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: one epoch)."),
    batch_size: int = typer.Option(2, "--batch-size", help="Samples per optimizer step, over all processes."),
    micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size", help="Gradient accumulation: forward/backward in chunks of N samples."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the official one for the stage)."),
    seed: int = typer.Option(13, "--seed"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Save every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint in --out."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute LLM activations in backward (less memory)."),
    log_with: list[str] = typer.Option([], "--log-with", help="Tracker through accelerate: tensorboard, wandb, ... (repeatable)."),
    gpu: bool = typer.Option(False, "--gpu", help="Train on the accelerator's GPUs (default: CPU)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Start from these trained weights (e.g. the previous stage's step-<k>/)."),
    denoise_weight: float = typer.Option(0.0, "--denoise-weight", help="Stages 2-3: add the decoder's denoising loss on target media (0: off)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --out that holds an earlier training run (never any other folder)."),
) -> None:
    """Train one NExT-GPT stage, exactly its declared parameters.

    Alone it runs one process; under `accelerate launch --multi_gpu --num_processes N -m nextgpt_core.cli train ...`
    each process takes its share of every global batch of --batch-size samples (docs/training.md).
    """
    from .folders import TRAIN_RUN
    from .model import NextGPT
    from .training.data import MediaLoader
    from .training.targets import TargetCache
    from .training.trainer import TrainConfig, Trainer

    if stage not in (1, 2, 3):
        raise UsageProblem(f"--stage must be 1, 2 or 3, got {stage}")
    if stage in (2, 3) and targets is None:
        raise UsageProblem("stages 2 and 3 need --targets (run `nextgpt cache-targets` first)")
    _check_checkpoint(checkpoint)
    config = _train_config(stage=stage, steps=steps, batch_size=batch_size, lr=lr or TrainConfig.official_lr(stage),
                           seed=seed, checkpoint_every=checkpoint_every, output_dir=str(out),
                           gradient_checkpointing=gradient_checkpointing, log_with=list(log_with), cpu=not gpu,
                           denoise_weight=denoise_weight, micro_batch_size=micro_batch_size)
    if resume and overwrite:
        raise UsageProblem("--resume and --overwrite exclude each other: continue the run, or start it over")
    read = [*data, targets, checkpoint, media_root, _composition_file(composition)]
    _check_out(out, TRAIN_RUN, overwrite=overwrite, resume=resume, inputs=read)
    model = NextGPT.from_composition(composition, checkpoint=checkpoint)
    loaded = _read_data(data, fmt, media_root, on_error, task or ("caption" if stage == 1 else "generate"), model.registry)
    if not loaded.samples:
        raise UsageProblem(f"{', '.join(map(str, data))}: no usable samples ({loaded.report.summary()})")
    samples = _fitting_samples(model, loaded.samples, on_error)
    cache = TargetCache(targets) if targets is not None else None
    trainer = Trainer(model, samples, cache, config, MediaLoader(model.registry), resume=resume,
                      overwrite=overwrite, inputs=read)
    result = trainer.train()
    if not trainer.accelerator.is_main_process:  # under a launcher the first process reports for all
        return
    for path in result.checkpoints:
        typer.echo(f"wrote {path}")
    typer.echo(f"trained {result.step} steps ({trainer.engine.describe()}); last loss {result.losses[-1]:.4f}"
               if result.losses else "nothing to train")


# ---------------------------------------------------------------------------------------------- chat
from .terminal_chat import chat as _chat  # noqa: E402  (torch-free; the model loads inside the command)

app.command("chat")(_guard(_chat))


# ---------------------------------------------------------------------------------------------- serve (nextgpt_core/serving)
from .serving.cli import serve as _serve  # noqa: E402  (typer only: no torch, no FastAPI at import)

app.command("serve")(_guard(_serve))


# ---------------------------------------------------------------------------------------------- official weights (nextgpt_core/official)
from .official.cli import register as _register_official  # noqa: E402  (typer only: no torch at import)

_register_official(app, _guard)


# ---------------------------------------------------------------------------------------------- toy world (nextgpt_core/toy)
from .toy.cli import register as _register_toy  # noqa: E402  (typer only: no torch at import)

_register_toy(app, _guard)

# ---------------------------------------------------------------------------------------------- evaluation (nextgpt_core/eval)
from .eval.cli import register as _register_eval  # noqa: E402  (typer only: no torch at import)

_register_eval(app, _guard)


# ---------------------------------------------------------------------------------------------- retrieval (nextgpt_core/retrieval)
from .retrieval.cli import register as _register_index  # noqa: E402  (typer only: no torch at import)

_register_index(app, _guard)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
