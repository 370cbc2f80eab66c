"""Helpers shared by the benchmark scripts: percentiles, the commit measured, the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of ``values``."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def git_state() -> dict[str, Any]:
    """The commit measured and the files modified in the working tree (outside benchmarks/ and docs/)."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], check=False, cwd=ROOT, capture_output=True, text=True).stdout.rstrip("\n")
        except OSError:
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
             if not line[3:].startswith(("benchmarks/", "docs/"))]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "modified_files": dirty}


def machine(libraries: bool = True) -> dict[str, Any]:
    """CPU count and model, Python, platform; with ``libraries``, the torch/transformers/diffusers versions."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpus": os.cpu_count(), "cpu_model": model, "machine": platform.machine(),
                            "python": platform.python_version(), "platform": platform.platform()}
    if libraries:
        import torch
        import transformers

        info.update(torch=torch.__version__, transformers=transformers.__version__)
        try:
            import diffusers

            info["diffusers"] = diffusers.__version__
        except ImportError:  # pragma: no cover
            info["diffusers"] = None
    return info
