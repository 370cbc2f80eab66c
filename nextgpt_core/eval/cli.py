"""``nextgpt eval``: run an evaluation suite and write ``results.json`` and ``report.md``; ``nextgpt eval compare``:
the paired difference of two runs. Typer only at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def eval_command(
    ctx: typer.Context,
    suite: str = typer.Option("toy", "--suite", help="The protocol: toy (the toy world's held-out suite)."),
    composition: str = typer.Option("toy", "--composition", "-c", help="Built-in name or TOML path."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained weights (default: the composition's own)."),
    out: Path = typer.Option(Path("outputs/eval"), "--out", "-o", help="Folder for results.json, report.md and the example grid."),
    limit: int = typer.Option(10, "--limit", help="Samples per task."),
    seed: int = typer.Option(0, "--seed", help="Seeds the samples and every generation."),
    variant: list[str] = typer.Option([], "--variant", help="model, no-stage1, no-stage2, ceiling (repeatable; default: all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier evaluation (never any other folder)."),
) -> None:
    """Score a model on a fixed protocol; the same seed gives the same numbers. The results folder is written
    whole at the end (a new or empty --out, or an earlier evaluation with --overwrite).
    `nextgpt eval compare A B` compares two runs."""
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import ConfigError

    if suite != "toy":
        raise ConfigError(f"unknown suite {suite!r}; available: toy")
    if limit < 1:
        raise ConfigError("--limit must be at least 1")
    if checkpoint is not None and not checkpoint.is_dir():
        raise ConfigError(f"--checkpoint {checkpoint}: no such folder")
    from .toy import VARIANTS

    from ..composition import load_composition
    from ..folders import EVAL_RESULTS, atomic_directory, check_output_folder, list_files, write_marker

    variants = list(variant) or list(VARIANTS)
    load_composition(composition)  # a malformed composition fails before anything heavy loads
    inputs = [checkpoint, composition if Path(composition).suffix else None]
    check_output_folder(out, EVAL_RESULTS, overwrite=overwrite, inputs=inputs, option="--out")
    with atomic_directory(out, EVAL_RESULTS, overwrite=overwrite, inputs=inputs, option="--out") as tmp:
        results = run_toy_eval(composition, tmp, checkpoint=checkpoint, per_task=limit, seed=seed, variants=variants)
        write_marker(tmp, "eval", list_files(tmp))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    for task, entry in results["tasks"].items():
        model = entry.get("model")
        if model:
            typer.echo(f"{task}: {100 * model['accuracy']:.1f}% (n={model['n']})")


def run_toy_eval(composition: str, out: Path, *, checkpoint: Any, per_task: int, seed: int, variants: list[str]) -> dict[str, Any]:
    """Run the toy suite with a progress bar per variant, then write the results, the report and the grid."""
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
        bar.n = done
        bar.set_postfix_str(f"accuracy {100 * rate:.1f}%", refresh=True)

    try:
        results = run_toy_suite(composition, out, checkpoint=checkpoint, per_task=per_task, seed=seed,
                                variants=variants, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    objects = results.pop("_objects")
    world, samples = objects["world"], objects["samples"]
    rows = []
    for s in samples.get("model", []):
        if s.media and s.task.startswith(("generate", "convert", "edit")) and len([r for r in rows if r[0].startswith(s.task)]) < 2:
            mark = "ok" if s.correct else "wrong"
            rows.append((f"{s.task} [{mark}]: {s.dialogue.turns[-2][1][-1] if isinstance(s.dialogue.turns[-2][1][-1], str) else ''}",
                         [world.parts[m].preview(data) for m, data in s.media]))
    grid = write_grid(rows, out / "examples.png") if rows else None
    protocol = {"suite": "toy", "composition": str(composition), "checkpoint": str(checkpoint) if checkpoint else None,
                "per_task": per_task, "seed": seed, "variants": variants}
    write_results(results, out, protocol=protocol, variants=variants, grid=grid)
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
