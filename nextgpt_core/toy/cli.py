"""``nextgpt toy``: build the toy world from scratch. Typer only at import (no torch)."""

from __future__ import annotations

from pathlib import Path

import typer

toy_app = typer.Typer(help="The toy world: a small NExT-GPT trained here end to end (docs/toy-world.md).",
                      no_args_is_help=True)


def build_command(
    out: Path = typer.Option(Path("build/toy-world"), "--out", "-o", help="The world folder to write (new, or an earlier toy world)."),
    scale: str = typer.Option("full", "--scale", help="full (the shipped world, about an hour on 2 cores) or mini (seconds; a check of the pipeline)."),
    seed: int = typer.Option(0, "--seed", help="The recipe's seed."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Worker processes for the independent phases (one torch thread each)."),
    only: list[str] = typer.Option([], "--modality", "-m", help="Build only these modalities (repeatable; default: every installed part)."),
    reuse: list[Path] = typer.Option([], "--reuse", help="An earlier world (repeatable): copy each decoder it trained with the same recipe (fingerprint) instead of training it again."),
    phase: list[str] = typer.Option([], "--phase", help="Run only this phase (repeatable; e.g. decoder-image): a partial world, to --reuse later."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier toy world (never any other folder)."),
) -> None:
    """Rebuild every part of the toy world from scratch: data, encoders, decoders, LLM, then NExT-GPT stages 1-3
    with `nextgpt train`. A progress bar per phase; a log per phase under OUT/logs/."""
    from .recipe import build_toy_world

    if jobs < 1:
        raise typer.BadParameter("--jobs must be at least 1")
    for earlier in reuse:
        if not (earlier / "manifest.json").is_file():
            raise typer.BadParameter(f"--reuse {earlier}: not a toy world (no manifest.json)")
    manifest = build_toy_world(out, scale=scale, seed=seed, jobs=jobs, keys=only or None, reuse=reuse,
                               only_phases=phase or None, overwrite=overwrite)
    typer.echo(f"built the toy world in {manifest['wall_seconds']:.0f} s: {out}")
    typer.echo(f"use it: nextgpt chat --composition {out / 'toy.toml'}")


def install_command(
    world: Path = typer.Argument(..., help="A world folder written by `nextgpt toy build`."),
) -> None:
    """Make WORLD the built-in `toy` composition: copy its shipped files (weights, composition, manifest; not its
    logs or work) into the package, replacing the toy world there. Checks every file against the manifest first."""
    from .recipe import install_world

    target = install_world(world)
    typer.echo(f"installed {world} as the built-in `toy` composition ({target})")


def retrieval_command(
    world: Path = typer.Argument(Path("build/toy-world"), help="A world built by `nextgpt toy build` (with its work/ folder)."),
    out: Path = typer.Option(Path("build/toy-retrieval"), "--out", "-o", help="A new folder: galleries, indexes, the composition, the trained query."),
    steps: int = typer.Option(1000, "--steps", help="Stage-2 steps that train the query projectors (and the generators' again)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the galleries' renderings and the training."),
) -> None:
    """Add retrieval beside generation to a built world: a gallery of every combination per generated modality,
    indexed with the world's encoder, and a stage-2 run that trains each retrieval decoder's query projector.
    Then: nextgpt eval --composition OUT/toy-retrieval.toml --variant model --variant retrieval."""
    from .retrieval import build_retrieval

    if steps < 1:
        raise typer.BadParameter("--steps must be at least 1")
    build_retrieval(world, out, steps=steps, seed=seed, say=typer.echo)
    typer.echo(f"score it: nextgpt eval --composition {out / 'toy-retrieval.toml'} --variant model --variant retrieval")


def register(app: typer.Typer, guard) -> None:  # noqa: ANN001 - the CLI's error guard
    """Add ``nextgpt toy ...`` to the main app, each command wrapped by ``guard`` (one-line errors)."""
    toy_app.command("build")(guard(build_command))
    toy_app.command("install")(guard(install_command))
    toy_app.command("retrieval")(guard(retrieval_command))
    app.add_typer(toy_app, name="toy")
