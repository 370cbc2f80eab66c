"""``nextgpt index``: index a gallery folder once for a retrieval decoder, and show an index. Typer only at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

index_app = typer.Typer(help="Gallery indexes for retrieval decoders (docs/retrieval.md).", no_args_is_help=True)


def build_command(
    gallery: Path = typer.Argument(..., help="The gallery folder (searched recursively; hidden files left out)."),
    modality: str = typer.Option(..., "--modality", "-m", help="The modality to index (its files and its encoder)."),
    composition: str = typer.Option("toy", "--composition", "-c", help="The composition whose encoder of the modality embeds the gallery (the one the retrieval decoder will run with)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The index folder (default: GALLERY/.nextgpt-index/MODALITY)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Items per encoder batch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier index at --out (never any other folder)."),
) -> None:
    """Embed every MODALITY file of GALLERY with the composition's encoder and write the index (with that encoder's
    identity: a model with another encoder refuses it)."""
    from ..errors import ConfigError
    from ..folders import GALLERY_INDEX, check_output_folder
    from .index import build_index
    from .model_encoder import composition_encoder

    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    target = out if out is not None else gallery / ".nextgpt-index" / modality
    if not gallery.is_dir():
        raise ConfigError(f"gallery {str(gallery)!r} is not a folder")
    check_output_folder(target, GALLERY_INDEX, overwrite=overwrite, option="--out")
    encoder, component, media_io, spec = composition_encoder(composition, modality)
    folder, facts = build_index(gallery, encoder, modality=modality, component=component, media_io=media_io,
                                extensions=spec.extensions, out=target, batch_size=batch_size, overwrite=overwrite)
    typer.echo(f"indexed {facts['items']} {modality} item(s) of {gallery} with {component} in {facts['seconds']} s "
               f"({facts['items_per_second']} items/s)")
    if facts["skipped"]:
        typer.echo(f"note: skipped {facts['skipped']} unreadable file(s); the index's manifest.json lists them", err=True)
    typer.echo(f"wrote {folder}")
    typer.echo(f'use it: decoder = {{ id = "{modality}/retrieval", options = {{ index = "{folder}" }} }}')


def show_command(
    index: Path = typer.Argument(..., help="An index folder."),
) -> None:
    """Print what an index holds: modality, items, dimension, encoder, skipped files."""
    from .index import GalleryIndex

    manifest = GalleryIndex.read_manifest(index)
    encoder = manifest["encoder"]
    typer.echo(f"modality: {manifest['modality']}")
    typer.echo(f"items: {len(manifest['items'])} ({manifest['dim']}-d)")
    typer.echo(f"gallery: {manifest['gallery']}")
    typer.echo(f"encoder: {encoder.get('component')} ({encoder.get('target')}, weights {str(encoder.get('fingerprint'))[:12]})")
    for item in manifest.get("skipped", []):
        typer.echo(f"skipped: {item['path']}: {item['reason']}")


def register(app: typer.Typer, guard: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add ``nextgpt index build|show`` to ``app`` (errors as one line through ``guard``)."""
    index_app.command("build")(guard(build_command))
    index_app.command("show")(guard(show_command))
    app.add_typer(index_app, name="index")
