"""Comparing two evaluations (``nextgpt eval compare A B``): per task, the change in accuracy and whether it is noise.

Both runs score the same samples (the same suite, seed and ``--limit`` give the same sample ids), so the
comparison is **paired**: a sample counts only by whether it flipped. The test is McNemar's exact test: of the
``n`` samples that differ between the runs, ``b`` were right only in A and ``c`` only in B; under "no difference"
``b ~ Binomial(n, 1/2)``, and the two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))``. Samples present in one
run only are counted and left out of the test.

Importing this module imports no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TaskComparison", "compare_results", "format_comparison", "load_results", "mcnemar_exact"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` samples right only in A and ``c`` right only in B (1.0 if none
    differ).

    >>> mcnemar_exact(0, 0), mcnemar_exact(0, 5), round(mcnemar_exact(1, 9), 4)
    (1.0, 0.0625, 0.0215)
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class TaskComparison:
    """One task (or ``"all"``) of two runs, over the samples both scored.

    ``accuracy_a`` / ``accuracy_b``: share right on the shared samples; ``only_a`` / ``only_b``: samples right in one
    run only (McNemar's ``b`` and ``c``); ``p_value``: the exact McNemar test; ``unpaired``: sample ids in one
    run only (not tested).
    """

    task: str
    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int
    only_b: int
    p_value: float
    unpaired: int

    @property
    def delta(self) -> float:
        """``accuracy_b - accuracy_a`` (positive: B is better)."""
        return self.accuracy_b - self.accuracy_a


def load_results(path: Path) -> dict[str, Any]:
    """Read a ``results.json`` (or the folder holding one).

    Raises:
        ConfigError: no such file, not JSON, or not an evaluation's results (no ``samples``).
    """
    from ..errors import ConfigError

    file = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file (give an evaluation's --out folder or its results.json)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: not a results.json ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("samples"), dict):
        raise ConfigError(f"{file}: not an evaluation's results (it has no per-sample records)")
    return data


def _outcomes(results: dict[str, Any], variant: str, where: str) -> dict[str, tuple[str, bool]]:
    from ..errors import ConfigError

    rows = results["samples"].get(variant)
    if rows is None:
        have = ", ".join(sorted(results["samples"])) or "none"
        raise ConfigError(f"{where} has no {variant!r} samples (it scored: {have}); choose one with --variant")
    if "metrics" in results:  # a paper suite: corpus metrics, no per-sample right or wrong to pair
        raise ConfigError(f"{where} is a {results.get('suite')} run: its metrics are not per-sample right/wrong, so there is "
                          "no paired test; compare the report.md tables")
    return {str(r["id"]): (str(r["task"]), bool(r["correct"])) for r in rows}


def compare_results(a: dict[str, Any], b: dict[str, Any], *, variant: str = "model") -> list[TaskComparison]:
    """Pair the samples of two results by id and compare them per task, then over all tasks (the last row).

    Raises:
        ConfigError: the runs are of different suites, a run lacks ``variant``, or they share no sample.
    """
    from ..errors import ConfigError

    if a.get("suite") != b.get("suite"):
        raise ConfigError(f"the runs are of different suites ({a.get('suite')!r} and {b.get('suite')!r}); nothing to pair")
    first, second = _outcomes(a, variant, "A"), _outcomes(b, variant, "B")
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ConfigError("the runs share no sample id: compare runs of the same suite, seed and --limit")
    tasks = sorted({first[i][0] for i in shared})
    rows = []
    for task in [*tasks, "all"]:
        ids = [i for i in shared if task == "all" or first[i][0] == task]
        in_a = [i for i in first if task == "all" or first[i][0] == task]
        in_b = [i for i in second if task == "all" or second[i][0] == task]
        only_a = sum(first[i][1] and not second[i][1] for i in ids)
        only_b = sum(second[i][1] and not first[i][1] for i in ids)
        rows.append(TaskComparison(
            task=task, n=len(ids),
            accuracy_a=sum(first[i][1] for i in ids) / len(ids), accuracy_b=sum(second[i][1] for i in ids) / len(ids),
            only_a=only_a, only_b=only_b, p_value=mcnemar_exact(only_a, only_b),
            unpaired=len(set(in_a) ^ set(in_b)),
        ))
    return rows


def format_comparison(rows: list[TaskComparison], *, alpha: float = 0.05) -> str:
    """The comparison as a fixed-width table, one line per task, with a verdict per line."""
    head = f"{'task':<24} {'n':>4} {'A':>7} {'B':>7} {'B - A':>8} {'A only':>6} {'B only':>6} {'p':>7}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.only_a == r.only_b == 0:
            verdict = "same"
        elif r.p_value < alpha:
            verdict = "B better" if r.delta > 0 else "A better" if r.delta < 0 else "differs"
        else:
            verdict = "noise"
        extra = f" ({r.unpaired} unpaired)" if r.unpaired else ""
        lines.append(f"{r.task:<24} {r.n:>4} {100 * r.accuracy_a:>6.1f}% {100 * r.accuracy_b:>6.1f}% "
                     f"{100 * r.delta:>+7.1f}% {r.only_a:>6} {r.only_b:>6} {r.p_value:>7.3f}  {verdict}{extra}")
    lines.append(f"paired exact McNemar test per row; 'noise' means p >= {alpha}")
    return "\n".join(lines)
