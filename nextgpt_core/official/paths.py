"""The local weights the ``nextgpt-v0`` composition reads, and full-size stand-ins for building it without them.

Each weight location is a ``${NAME}`` placeholder in ``nextgpt_core/compositions/nextgpt-v0.toml``, resolved from the
environment variable ``NAME`` or from the paths file (``~/.config/nextgpt/paths.toml`` or ``$NEXTGPT_PATHS``; a
flat TOML table ``NAME = "/path"``). Nothing is ever downloaded.

The stand-ins are config files only (the hub ``config.json`` files of each model, bundled under ``configs/``), enough
to build every part on the ``meta`` device for counting and for checking the key mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["V0_COMPOSITION", "WEIGHTS", "WeightLocation", "load_with_stand_ins", "stand_in_paths"]

V0_COMPOSITION = "nextgpt-v0"


@dataclass(frozen=True)
class WeightLocation:
    """One placeholder of the v0 composition: its variable, what belongs there, and its bundled stand-in."""

    name: str
    what: str
    kind: str  # "llm" (HF folder), "imagebind" (.pth file), "diffusers" (pipeline folder)
    stand_in: str | None  # folder under configs/ (None: no weights are needed to build it on meta)


WEIGHTS: tuple[WeightLocation, ...] = (
    WeightLocation("NEXTGPT_VICUNA_V0", "Vicuna-7B v0 as a Hugging Face folder (LLaMA-7B + vicuna-7b-delta-v0)", "llm", "vicuna-7b-v0"),
    WeightLocation("NEXTGPT_IMAGEBIND", "imagebind_huge.pth (dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth)", "imagebind", None),
    WeightLocation("NEXTGPT_SD15", "Stable Diffusion 1.5 diffusers folder (runwayml/stable-diffusion-v1-5)", "diffusers", "stable-diffusion-v1-5"),
    WeightLocation("NEXTGPT_ZEROSCOPE", "ZeroScope v2 576w diffusers folder (cerspense/zeroscope_v2_576w)", "diffusers", "zeroscope_v2_576w"),
    WeightLocation("NEXTGPT_AUDIOLDM", "AudioLDM-l-full diffusers folder (cvssp/audioldm-l-full)", "diffusers", "audioldm-l-full"),
)


def configs_folder() -> Path:
    """The bundled full-size configs (``configs/<model>/...``, hub layout, no weights)."""
    return Path(str(resources.files("nextgpt_core.official") / "configs"))


def stand_in_paths() -> dict[str, str]:
    """``{NAME: path}`` of the bundled stand-ins. ImageBind needs none (its encoders build from their own sizes);
    its placeholder gets a path that is never read, because meta builds drop the ``checkpoint`` option."""
    root = configs_folder()
    return {w.name: str(root / w.stand_in) if w.stand_in else "(not read: meta build)" for w in WEIGHTS}


def load_with_stand_ins(source: Any = V0_COMPOSITION) -> Any:
    """Load a composition; placeholders that the environment and the paths file leave unset take the stand-ins."""
    from ..composition import load_composition

    return load_composition(source, fallback_paths=stand_in_paths())
