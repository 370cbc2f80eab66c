"""The official ``imagebind_huge.pth`` key list (``imagebind_huge.tsv``), for checking any branch against it.

The TSV holds every key, shape and element count of the released file in module-registration order, and per-branch
totals; a plugin that registers a branch checks its ``huge`` spec against it (no weights needed: build the branch on
the meta device and compare).

Example:
    >>> shapes = official_shapes("thermal")
    >>> shapes["modality_preprocessors.thermal.rgbt_stem.proj.weight"]
    (768, 1, 16, 16)
    >>> official_totals()["imu"]
    (19600384, 1)
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = ["official_shapes", "official_totals"]


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, int]]]:
    text = (resources.files("nextgpt_core.imagebind") / "imagebind_huge.tsv").read_text(encoding="utf-8")
    shapes: dict[str, tuple[int, ...]] = {}
    totals: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        if line.startswith("# per-modality totals") and not totals:
            for name, params, buf in re.findall(r"(\w+) ([\d,]+)(?: \[\+([\d,]+)\])? \(\d+ keys\)", line):
                totals[name] = (int(params.replace(",", "")), int((buf or "0").replace(",", "")))
        elif line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            shapes[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return shapes, totals


def official_shapes(branch: str | None = None) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the official file, in its order; ``branch``: only that branch's keys
    (``modality_<group>.<branch>.*``). A branch the file does not have gives ``{}``."""
    shapes = _table()[0]
    if branch is None:
        return dict(shapes)
    return {k: v for k, v in shapes.items() if k.split(".")[1] == branch}


def official_totals() -> dict[str, tuple[int, int]]:
    """``{branch: (parameter elements, buffer elements)}`` of the official file (vision, text, audio, depth,
    thermal, imu)."""
    return dict(_table()[1])
