"""Custom suites (``nextgpt eval --suite FILE.jsonl``): an integrator's regression test, one conversation per line.

Each line is a JSON object::

    {"id": "draw-red", "task": "generate",
     "turns": ["Draw a red circle."],
     "want": ["image"],
     "expect": {"contains": ["circle"], "not_contains": ["sorry"], "modalities": ["image"],
                "read_back": {"image": {"colour": "red", "shape": "circle"}}}}

- ``turns``: the user turns, in order; the model replies after each (its replies, media included, stay in the
  history as a chat's do). A turn is a string, or ``{"text": "...", "media": ["cat.png", ...]}`` with media paths
  relative to the suite file (a modality is taken from the suffix, or given as ``{"path": ..., "modality": ...}``).
- ``want`` (optional): the modalities the **last** reply must make (passed to ``generate(want=...)``); without it
  the model decides.
- ``expect``: the checks on the last reply, every one must hold:
  ``contains`` (each word or phrase appears, case-insensitive), ``not_contains``, ``modalities`` (a media part of
  each is in the reply) and ``read_back`` (the reply's media of that modality, measured by the installed toy-world
  part's analyzer, has these attributes: for models trained on the toy world or media it can read).
- ``id`` (default: the line number) and ``task`` (default ``"custom"``) name the row in the report.

Results have the toy suite's shape (per task: accuracy with its Wilson interval, per-check rates; per sample the
reply and what each check found), so ``nextgpt eval compare`` pairs two runs of one file. Importing this module
imports no torch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["CustomRow", "load_custom_suite", "run_custom_suite"]

_CHECKS = ("contains", "not_contains", "modalities", "read_back")


@dataclass
class CustomRow:
    """One row of a custom suite, validated (see the module docstring)."""

    sample_id: str
    task: str
    turns: list[tuple[str, list[tuple[Path, str | None]]]]
    want: list[str] | None
    expect: dict[str, Any]
    correct: bool | None = None
    attributes: dict[str, bool] = field(default_factory=dict)
    reply: str = ""
    read_back: list[dict[str, str]] = field(default_factory=list)


def _fail(path: Path, line: int, message: str) -> Exception:
    from ..errors import ConfigError

    return ConfigError(f"{path}, line {line}: {message}")


def _strings(value: Any, path: Path, line: int, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, line, f"{what} must be a list of non-empty strings")
    return list(value)


def load_custom_suite(path: Path) -> list[CustomRow]:
    """Read and check a suite file; every problem is one error naming the file, the line and the field.

    Raises:
        ConfigError: no such file, a line that is not a JSON object, an unknown field or check, a missing media
            file, two rows with one id, or no rows.
    """
    from ..errors import ConfigError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--suite {path}: no such file (a suite is 'toy' or a .jsonl file)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--suite {path}: not UTF-8 text") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"--suite {path}: cannot read it ({exc.strerror or exc})") from exc
    rows: list[CustomRow] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, number, f"not JSON ({exc.msg})") from exc
        if not isinstance(data, dict):
            raise _fail(path, number, "each line must be a JSON object")
        unknown = set(data) - {"id", "task", "turns", "want", "expect"}
        if unknown:
            raise _fail(path, number, f"unknown field(s) {', '.join(sorted(unknown))}")
        raw_turns = data.get("turns")
        if not isinstance(raw_turns, list) or not raw_turns:
            raise _fail(path, number, "'turns' must be a non-empty list of user turns")
        turns = [_turn(t, path, number) for t in raw_turns]
        want = _strings(data["want"], path, number, "'want'") if "want" in data else None
        expect = data.get("expect")
        if not isinstance(expect, dict) or not expect:
            raise _fail(path, number, f"'expect' must name at least one check: {', '.join(_CHECKS)}")
        bad = set(expect) - set(_CHECKS)
        if bad:
            raise _fail(path, number, f"unknown check(s) {', '.join(sorted(bad))}; checks are {', '.join(_CHECKS)}")
        for key in ("contains", "not_contains", "modalities"):
            if key in expect:
                _strings(expect[key], path, number, f"expect.{key}")
        if "read_back" in expect:
            rb = expect["read_back"]
            if not isinstance(rb, dict) or not all(isinstance(v, dict) and v for v in rb.values()):
                raise _fail(path, number, "expect.read_back must map a modality to {attribute: value}")
        sample_id = str(data.get("id", f"line{number}"))
        if any(r.sample_id == sample_id for r in rows):
            raise _fail(path, number, f"id {sample_id!r} is used twice")
        rows.append(CustomRow(sample_id, str(data.get("task", "custom")), turns, want, expect))
    if not rows:
        raise ConfigError(f"--suite {path}: no rows")
    return rows


def _turn(value: Any, path: Path, line: int) -> tuple[str, list[tuple[Path, str | None]]]:
    if isinstance(value, str):
        return value, []
    if not isinstance(value, dict) or set(value) - {"text", "media"}:
        raise _fail(path, line, "a turn is a string or {\"text\": ..., \"media\": [...]}")
    media = []
    for item in value.get("media", []):
        file, modality = (item, None) if isinstance(item, str) else (item.get("path"), item.get("modality")) \
            if isinstance(item, dict) else (None, None)
        if not isinstance(file, str):
            raise _fail(path, line, "a media entry is a path, or {\"path\": ..., \"modality\": ...}")
        full = (path.parent / file) if not Path(file).is_absolute() else Path(file)
        if not full.is_file():
            raise _fail(path, line, f"media file not found: {file} (paths are relative to the suite file)")
        media.append((full, modality))
    text = value.get("text", "")
    if not isinstance(text, str) or not (text or media):
        raise _fail(path, line, "a turn needs text or media")
    return text, media


def _score(row: CustomRow, reply: Any, parts: Any) -> None:
    from ..conversation import Text

    text = reply.text.lower()
    media = [p for p in reply.parts if not isinstance(p, Text)]
    expect = row.expect
    for word in expect.get("contains", []):
        row.attributes[f"contains:{word}"] = word.lower() in text
    for word in expect.get("not_contains", []):
        row.attributes[f"not_contains:{word}"] = word.lower() not in text
    for modality in expect.get("modalities", []):
        row.attributes[f"modality:{modality}"] = any(m.modality == modality for m in media)
    for modality, wanted in expect.get("read_back", {}).items():
        found = next((m for m in media if m.modality == modality), None)
        part = parts.get(modality)
        got = part.read_back(found.data) if (found is not None and part is not None) else {}
        row.read_back.append(got)
        for key, value in wanted.items():
            row.attributes[f"{modality}.{key}"] = got.get(key) == value
    row.correct = all(row.attributes.values())


def run_custom_suite(
    composition: Any,
    suite: Path,
    *,
    checkpoint: Any = None,
    seed: int = 0,
    limit: int | None = None,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Score ``composition`` on the rows of ``suite`` (the first ``limit`` rows if given); returns results shaped
    like the toy suite's (``tasks``, ``samples``, ``timings``).

    Raises:
        ConfigError: the file is malformed (:func:`load_custom_suite`), or a ``read_back`` check names a modality
            that has no toy-world analyzer installed.
    """
    from ..conversation import Conversation, Media, Text, Turn
    from ..errors import ConfigError
    from ..model import NextGPT
    from .toy import sample_seed, wilson

    rows = load_custom_suite(Path(suite))[:limit]
    model = NextGPT.from_composition(composition, checkpoint=checkpoint)
    needs = {m for r in rows for m in r.expect.get("read_back", {})}
    parts: dict[str, Any] = {}
    if needs:
        from ..toy.world import ToyWorld

        world = ToyWorld.installed(model.registry, keys=[k for k in needs if k in model.registry.toy_worlds])
        parts = dict(world.parts)
        missing = sorted(needs - set(parts))
        if missing:
            raise ConfigError(f"--suite {suite}: read_back checks for {', '.join(missing)}, which no installed toy-world "
                              "part can measure")
    started = time.perf_counter()
    for i, row in enumerate(rows):
        conversation = Conversation()
        row_seed = sample_seed(row.sample_id, seed)
        reply = None
        for index, (text, media) in enumerate(row.turns):
            content: list[Any] = [Media.from_path(p, modality=m) for p, m in media]
            if text:
                content.append(Text(text))
            conversation.turns.append(Turn("user", content))
            last = index == len(row.turns) - 1
            reply = model.generate(conversation, want=(row.want or ()) if last else (), seed=row_seed + index)
            conversation.add_response(reply)
        assert reply is not None
        row.reply = reply.text
        _score(row, reply, parts)
        if progress:
            done = rows[: i + 1]
            progress("model", i + 1, len(rows), sum(bool(r.correct) for r in done) / len(done))
    seconds = round(time.perf_counter() - started, 1)
    tasks: dict[str, Any] = {}
    for task in sorted({r.task for r in rows}):
        members = [r for r in rows if r.task == task]
        k = sum(bool(r.correct) for r in members)
        low, high = wilson(k, len(members))
        checks: dict[str, list[bool]] = {}
        for r in members:
            for name, ok in r.attributes.items():
                checks.setdefault(name, []).append(ok)
        tasks[task] = {"chance": None, "model": {
            "accuracy": k / len(members), "n": len(members), "ci95": [round(low, 4), round(high, 4)],
            "attributes": {n: round(sum(v) / len(v), 4) for n, v in sorted(checks.items())}}}
    samples = [{"id": r.sample_id, "task": r.task, "correct": r.correct, "reply": r.reply, "attributes": r.attributes,
                "read_back": r.read_back, "expected": r.expect} for r in rows]
    return {"suite": f"file:{Path(suite).name}", "per_task": None, "seed": seed, "tasks": tasks,
            "timings": {"model": seconds}, "samples": {"model": samples}}
