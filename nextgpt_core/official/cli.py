"""CLI commands of the official-weights package: ``nextgpt convert official``, ``nextgpt check-weights`` and
``nextgpt params``. Typer only at import (no torch): the work is imported inside each command."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Iterator, Optional

import typer

convert_app = typer.Typer(help="Convert released weights into nextgpt checkpoints.", no_args_is_help=True)


def _resolved(composition: str):  # noqa: ANN202
    from ..composition import resolve_composition
    from ..hf_loading import quiet_transformers
    from .paths import load_with_stand_ins

    with quiet_transformers():
        return resolve_composition(load_with_stand_ins(composition))


def convert_official_command(
    delta: Path = typer.Option(..., "--delta", help="The released pytorch_model.pt (ChocoWu/nextgpt_7b_tiva_v0)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write: new or empty (or an earlier checkpoint, with --overwrite); written atomically."),
    composition: str = typer.Option("nextgpt-v0", "--composition", "-c", help="Built-in name or TOML path."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier nextgpt checkpoint (never any other folder)."),
) -> None:
    """Convert the official v0 delta into a nextgpt checkpoint; strict: any missing, unexpected or mis-shaped key
    fails the command and nothing is written."""
    from ..folders import CHECKPOINT, check_output_folder
    from ..hf_loading import quiet_transformers
    from .convert import convert_official, layout_for, read_official_file

    comp_file = Path(composition) if Path(composition).suffix == ".toml" or Path(composition).exists() else None
    check_output_folder(out, CHECKPOINT, overwrite=overwrite, inputs=[delta, comp_file], option="--out")
    read_official_file(delta)  # a missing or unreadable file fails before the layout is built
    with quiet_transformers(), _no_future_warnings():
        layout = layout_for(composition)
    report = convert_official(delta, out, layout, overwrite=overwrite)
    typer.echo(f"converted {report.keys} official keys ({report.parameters:,} parameters) into {report.out}")
    for group, n in report.groups.items():
        typer.echo(f"  {group}: {n} tensors")
    typer.echo(f"run it: nextgpt generate --composition {composition} --checkpoint {report.out} --prompt \"...\"")


def check_weights_command(
    delta: Optional[Path] = typer.Option(None, "--delta", help="Also check the released pytorch_model.pt."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Also verify a converted checkpoint folder."),
) -> None:
    """Say which local weights of `nextgpt-v0` are present, missing or mis-shaped (exit 1 unless all are ok)."""
    from .check import check_all

    findings = check_all(delta=delta, checkpoint=checkpoint)
    for f in findings:
        typer.echo(f.line())
    bad = [f for f in findings if f.status != "ok"]
    typer.echo(f"{len(findings) - len(bad)} ok, {len(bad)} not" + (" (see docs/official-weights.md)" if bad else ""))
    if bad:
        raise typer.Exit(1)


def params_command(
    composition: str = typer.Option("nextgpt-v0", "--composition", "-c", help="Built-in name or TOML path."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Parameters of every component, total and what each training stage trains, built on the meta device (no
    weights read)."""
    from ..diffusers_decoder import quiet_library_notices
    from ..hf_loading import quiet_transformers
    from .params import count_parameters

    with quiet_transformers(), quiet_library_notices(), _quiet_diffusers(), _no_future_warnings():
        report = count_parameters(_resolved(composition))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    stages = report.stages
    heads = "".join(f" {f'stage {s}':>13}" for s in stages)
    typer.echo(f"composition {report.composition!r} (built on the meta device; stage N: what `nextgpt train --stage N` trains)")
    typer.echo(f"  {'component':<42} {'parameters':>15}{heads} {'fp16 GiB':>9}")
    for c in report.components:
        share = "" if c.counted else "  (shared, not summed)"
        cells = "".join(f" {c.stages.get(s, 0):>13,}" for s in stages)
        typer.echo(f"  {c.name:<42} {c.total:>15,}{cells} {c.fp16_gib:>9.2f}  {c.note}{share}")
    totals = "".join(f" {n:>13,}" for n in stages.values())
    typer.echo(f"  {'total':<42} {report.total:>15,}{totals} {report.total * 2 / 2**30:>9.2f}")
    fractions = ", ".join(f"stage {s} {n / report.total:.2%}" for s, n in stages.items()) if report.total else "-"
    typer.echo(f"trainable fraction: {fractions}")


@contextlib.contextmanager
def _no_future_warnings() -> Iterator[None]:
    """peft warns about a deprecated transformers attribute while wrapping the meta LLM: nothing to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers lists config keys a model class ignores (the bundled hub configs have some): not actionable."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def register(app: typer.Typer, guard) -> None:  # noqa: ANN001
    """Add ``convert official``, ``check-weights`` and ``params`` to the main app, each behind ``guard``."""
    convert_app.command("official")(guard(convert_official_command))
    app.add_typer(convert_app, name="convert")
    app.command("check-weights")(guard(check_weights_command))
    app.command("params")(guard(params_command))
