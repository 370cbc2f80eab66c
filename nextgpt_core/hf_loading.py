"""Helpers for components that load a transformers model from a local folder (never a hub id)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from .errors import WeightsNotFoundError

__all__ = ["describe_mismatch", "quiet_transformers", "weights_folder"]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars (callers check the loading info themselves)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def describe_mismatch(entry: Any) -> str:
    """transformers reports a mis-shaped weight as ``(name, checkpoint_shape, model_shape)``: one readable line."""
    if isinstance(entry, tuple) and len(entry) == 3:
        name, ours, theirs = entry
        return f"{name}: file {tuple(ours)} vs config {tuple(theirs)}"
    return str(entry)


def weights_folder(path: str, what: str) -> Path:
    """The local folder ``path`` holding ``what`` weights (with a ``config.json``), else :class:`WeightsNotFoundError`."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WeightsNotFoundError(f"{what} weights folder {folder} does not exist (nextgpt never downloads weights)")
    if not (folder / "config.json").is_file():
        raise WeightsNotFoundError(f"{what} weights folder {folder} has no config.json")
    return folder
