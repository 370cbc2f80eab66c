"""``nextgpt eval``: run an evaluation suite and write ``results.json`` and ``report.md``; ``nextgpt eval compare``:
the paired difference of two runs. Typer only at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer


def eval_command(
    ctx: typer.Context,
    suite: str = typer.Option("toy", "--suite", help="The protocol: toy (the toy world's held-out suite), a .jsonl file of your own rows, or a paper suite on local data: coco-caption, msrvtt-caption, audiocaps-caption, coco-t2i, msrvtt-t2v, audiocaps-t2a (docs/evaluation.md)."),
    composition: str = typer.Option("toy", "--composition", "-c", help="Built-in name or TOML path."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained weights (default: the composition's own)."),
    out: Path = typer.Option(Path("outputs/eval"), "--out", "-o", help="Folder for results.json, report.md and the example grid."),
    limit: int = typer.Option(10, "--limit", help="Samples per task (toy); the first N rows of a .jsonl suite, or N items of a paper suite's split drawn with --seed (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the samples and every generation."),
    variant: list[str] = typer.Option([], "--variant", help="model, no-stage1, no-stage2, ceiling, retrieval (repeatable; default: all that apply)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier evaluation (never any other folder)."),
    resume: bool = typer.Option(False, "--resume", help="Go on with an interrupted run of the same --out and options: finished samples are not run again."),
    data: Optional[Path] = typer.Option(None, "--data", help="Paper suites: the local copy of the dataset (COCO, MSR-VTT or AudioCaps; docs/evaluation.md gives the layouts)."),
    metric_model: list[str] = typer.Option([], "--metric-model", help="Paper suites: NAME=PATH of a local metric network: inception (TorchScript file), clip, clap (transformers folders). Repeatable."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Paper suites: the request (captioning), or its template with {caption} (generation)."),
) -> None:
    """Score a model on a fixed protocol; the same seed gives the same numbers. The results folder is written
    whole at the end (a new or empty --out, or an earlier evaluation with --overwrite).
    `nextgpt eval compare A B` compares two runs."""
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import ConfigError

    from .paper import SUITES as PAPER_SUITES

    if suite != "toy" and not suite.endswith(".jsonl") and suite not in PAPER_SUITES:
        raise ConfigError(f"unknown suite {suite!r}; available: toy, {', '.join(PAPER_SUITES)}, or a .jsonl file (docs/evaluation.md)")
    if limit < 1:
        raise ConfigError("--limit must be at least 1")
    if suite not in PAPER_SUITES:
        given = [name for name, value in (("--data", data), ("--metric-model", metric_model), ("--prompt", prompt)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)}: for the paper suites ({', '.join(PAPER_SUITES)}), not --suite {suite}")
    if checkpoint is not None and not checkpoint.is_dir():
        raise ConfigError(f"--checkpoint {checkpoint}: no such folder")
    from .toy import VARIANTS

    from ..composition import load_composition
    from ..folders import EVAL_RESULTS, atomic_directory, check_output_folder, list_files, write_marker

    variants = list(variant) or list(VARIANTS)
    load_composition(composition)  # a malformed composition fails before anything heavy loads
    inputs = [checkpoint, composition if Path(composition).suffix else None]
    explicit_limit = limit if ctx.get_parameter_source("limit").name != "DEFAULT" else None
    if suite in PAPER_SUITES:
        _paper_eval(suite, composition, checkpoint, out, explicit_limit, seed, variant, overwrite, resume, inputs,
                    data=data, metric_model=metric_model, prompt=prompt)
        return
    if suite != "toy":
        _custom_eval(Path(suite), composition, checkpoint, out, explicit_limit, seed, variant, overwrite, resume, inputs)
        return
    check_output_folder(out, EVAL_RESULTS, overwrite=overwrite, inputs=inputs, option="--out")
    from .journal import EvalJournal

    journal = EvalJournal(out, _protocol(composition, checkpoint, limit, seed, variants), resume=resume)
    if resume and len(journal):
        typer.echo(f"resuming: {len(journal)} finished samples from {journal.path}")
    with atomic_directory(out, EVAL_RESULTS, overwrite=overwrite, inputs=inputs, option="--out") as tmp:
        results = run_toy_eval(composition, tmp, checkpoint=checkpoint, per_task=limit, seed=seed, variants=variants,
                               journal=journal)
        write_marker(tmp, "eval", list_files(tmp))
    journal.remove()
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    for task, entry in results["tasks"].items():
        model = entry.get("model")
        if model:
            typer.echo(f"{task}: {100 * model['accuracy']:.1f}% (n={model['n']})")


def _custom_eval(suite: Path, composition: str, checkpoint: Any, out: Path, limit: Optional[int], seed: int,
                 variant: list[str], overwrite: bool, resume: bool, inputs: list[Any]) -> None:
    """``--suite FILE.jsonl``: the rows of the file on the model; results and report as the toy suite's."""
    from ..errors import ConfigError
    from ..folders import EVAL_RESULTS, atomic_directory, check_output_folder, list_files, write_marker
    from .custom import load_custom_suite, run_custom_suite
    from .report import write_results

    if [v for v in variant if v != "model"]:
        raise ConfigError("--variant: a .jsonl suite scores the model only (the ablations are the toy suite's)")
    if resume:
        raise ConfigError("--resume is for the toy suite; a .jsonl suite runs whole")
    rows = load_custom_suite(suite)  # a malformed file fails before the model loads
    check_output_folder(out, EVAL_RESULTS, overwrite=overwrite, inputs=[*inputs, suite], option="--out")
    with atomic_directory(out, EVAL_RESULTS, overwrite=overwrite, inputs=[*inputs, suite], option="--out") as tmp:
        progress, close = _progress_bar(min(len(rows), limit or len(rows)), lambda rate: f"accuracy {100 * rate:.1f}%")
        try:
            results = run_custom_suite(composition, suite, checkpoint=checkpoint, seed=seed, limit=limit, progress=progress)
        finally:
            close()
        protocol = {"suite": str(suite), "composition": str(composition),
                    "checkpoint": str(checkpoint) if checkpoint else None, "rows": limit, "seed": seed}
        write_results(results, tmp, protocol=protocol, variants=["model"])
        write_marker(tmp, "eval", list_files(tmp))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    for task, entry in results["tasks"].items():
        typer.echo(f"{task}: {100 * entry['model']['accuracy']:.1f}% (n={entry['model']['n']})")


def _progress_bar(total: int, postfix: Callable[[float], str]) -> tuple[Callable[[str, int, int, float], None], Callable[[], None]]:
    """A progress bar of ``total`` samples: ``(progress, close)``; ``progress(variant, done, total, running)``
    moves it and shows ``postfix(running)``."""
    bar = None
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="     model", unit="sample", dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        pass

    def progress(_variant: str, done: int, _total: int, rate: float) -> None:
        if bar is not None:
            bar.n = done
            bar.set_postfix_str(postfix(rate), refresh=True)

    return progress, (bar.close if bar is not None else (lambda: None))


def _paper_eval(suite: str, composition: str, checkpoint: Any, out: Path, limit: Optional[int], seed: int,
                variant: list[str], overwrite: bool, resume: bool, inputs: list[Any], *, data: Optional[Path],
                metric_model: list[str], prompt: Optional[str]) -> None:
    """``--suite coco-caption`` and the other paper suites: checked before the model loads, then run and written
    as the other suites are (results.json, report.md, and the made media under media/)."""
    from ..errors import ConfigError
    from ..folders import EVAL_RESULTS, atomic_directory, check_output_folder, list_files, write_marker
    from .metrics import parse_metric_models
    from .paper import format_metric, prepare_paper_suite, run_paper_eval

    if [v for v in variant if v != "model"]:
        raise ConfigError(f"--variant: --suite {suite} scores the model only (the ablations are the toy suite's)")
    if resume:
        raise ConfigError(f"--resume is for the toy suite; --suite {suite} runs whole")
    run = prepare_paper_suite(suite, data=data, metric_models=parse_metric_models(metric_model), limit=limit, seed=seed,
                              prompt=prompt)  # missing data or metric networks fail before the model loads
    every = [*inputs, *run.inputs]
    check_output_folder(out, EVAL_RESULTS, overwrite=overwrite, inputs=every, option="--out")
    name = "CLIP" if "clip" in run.suite.metric_models else "CLAP" if "clap" in run.suite.metric_models else None
    with atomic_directory(out, EVAL_RESULTS, overwrite=overwrite, inputs=every, option="--out") as tmp:
        progress, close = _progress_bar(len(run.samples), (lambda r: f"{name} {r:.3g}") if name else (lambda r: ""))
        try:
            results = run_paper_eval(suite, tmp, composition=composition, checkpoint=checkpoint, progress=progress,
                                     prepared=run)
        finally:
            close()
        write_marker(tmp, "eval", list_files(tmp))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    for metric, entry in results["metrics"].items():
        typer.echo(format_metric(metric, entry))


def _protocol(composition: str, checkpoint: Any, per_task: int, seed: int, variants: list[str]) -> dict[str, Any]:
    return {"suite": "toy", "composition": str(composition), "checkpoint": str(checkpoint) if checkpoint else None,
            "per_task": per_task, "seed": seed, "variants": variants}


def run_toy_eval(composition: str, out: Path, *, checkpoint: Any, per_task: int, seed: int, variants: list[str],
                 journal: Any = None) -> dict[str, Any]:
    """Run the toy suite with a progress bar per variant, then write the results, the report and the grid
    (``journal``: an :class:`~nextgpt_core.eval.journal.EvalJournal` to record finished samples in and resume
    from)."""
    from .report import write_grid, write_results
    from .toy import run_toy_suite

    bars: dict[str, Any] = {}
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None

    def progress(variant: str, done: int, total: int, rate: float) -> None:
        if tqdm is None:
            return
        bar = bars.get(variant)
        if bar is None:
            bar = bars[variant] = tqdm(total=total, desc=f"{variant:>10}", unit="sample", dynamic_ncols=True)
        bar.n = done  # a resumed run's bar starts at the samples taken from the journal
        bar.set_postfix_str(f"accuracy {100 * rate:.1f}%", refresh=True)

    try:
        results = run_toy_suite(composition, out, checkpoint=checkpoint, per_task=per_task, seed=seed,
                                variants=variants, progress=progress, journal=journal)
    finally:
        for bar in bars.values():
            bar.close()
    objects = results.pop("_objects")
    samples = objects["samples"]
    rows = []
    for s in samples.get("model", []):
        if s.previews and s.task.startswith(("generate", "convert", "edit")) and len([r for r in rows if r[0].startswith(s.task)]) < 2:
            mark = "ok" if s.correct else "wrong"
            rows.append((f"{s.task} [{mark}]: {s.dialogue.turns[-2][1][-1] if isinstance(s.dialogue.turns[-2][1][-1], str) else ''}",
                         list(s.previews)))
    grid = write_grid(rows, out / "examples.png") if rows else None
    protocol = _protocol(composition, checkpoint, per_task, seed, variants)
    write_results(results, out, protocol=protocol, variants=results.get("variants", variants), grid=grid)
    return results


def compare_command(
    a: Path = typer.Argument(..., help="The baseline: an evaluation's --out folder or its results.json."),
    b: Path = typer.Argument(..., help="The run to compare with it (same suite, seed and --limit)."),
    variant: str = typer.Option("model", "--variant", help="Which scored variant of both runs to compare."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the verdict column."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per task: both accuracies on the samples both runs scored, the difference, and McNemar's exact paired test
    (is the difference more than noise?)."""
    import dataclasses
    import json

    from ..errors import ConfigError
    from .compare import compare_results, format_comparison, load_results

    if not 0 < alpha < 1:
        raise ConfigError("--alpha must be between 0 and 1")
    rows = compare_results(load_results(a), load_results(b), variant=variant)
    if as_json:
        typer.echo(json.dumps([{**dataclasses.asdict(r), "delta": r.delta} for r in rows], indent=1))
    else:
        typer.echo(f"A: {a}\nB: {b}\nvariant: {variant}\n")
        typer.echo(format_comparison(rows, alpha=alpha))


def register(app: typer.Typer, guard) -> None:  # noqa: ANN001 - the CLI's error guard
    """Add ``nextgpt eval`` (and ``nextgpt eval compare``) to the main app, wrapped by ``guard`` (one-line errors)."""
    eval_app = typer.Typer(invoke_without_command=True, add_completion=False)
    eval_app.callback()(guard(eval_command))
    eval_app.command("compare")(guard(compare_command))
    app.add_typer(eval_app, name="eval")
