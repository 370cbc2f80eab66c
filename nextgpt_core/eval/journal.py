"""The journal of an evaluation in progress: each finished sample as it finishes, so ``--resume`` skips it.

An evaluation's ``--out`` folder is written whole at the end (nothing half-written there). Until then, each scored
sample is appended to a journal kept beside it, in a hidden folder named after it
(``.<out>.nextgpt-eval-journal/``): ``journal.jsonl`` (a header line with the protocol, then one line per sample:
the outcome, the reply, what was read back) and ``previews/`` (the media previews of the sample, for the report's
grid, as ``.npy``). Lines are flushed and synced one by one, so a killed run loses at most the sample it was on.

``nextgpt eval --resume`` reads the journal of the same ``--out`` and protocol back and scores only the samples it
lacks; every sample is generated with its own seed, so a resumed run gives the same numbers as an uninterrupted
one. The journal is removed when the results land. A journal of another protocol is refused (one line naming
what differs); a run without ``--resume`` starts a new journal in place of an old one (a folder nextgpt made:
it holds the journal's header; any other folder of that name is never touched).

Importing this module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EvalJournal", "journal_path"]

_FORMAT = "nextgpt-eval-journal/1"


def journal_path(out: Path) -> Path:
    """Where the journal of the evaluation writing ``out`` lives: a hidden sibling folder."""
    path = Path(os.path.abspath(out))
    return path.with_name(f".{path.name}.nextgpt-eval-journal")


class EvalJournal:
    """The finished samples of one evaluation (see the module docstring).

    Args:
        out: the evaluation's ``--out`` folder (the journal lives beside it).
        protocol: what makes two runs' samples the same (suite, composition, checkpoint, limit, seed, variants);
            a journal of another protocol is not resumed.
        resume: read an existing journal back (``--resume``); otherwise an existing one is replaced.

    Raises:
        ConfigError: ``resume`` and the journal is of another protocol, or the journal's place holds a folder
            nextgpt did not write.
    """

    def __init__(self, out: Path, protocol: dict[str, Any], *, resume: bool) -> None:
        from ..errors import ConfigError

        self.path = journal_path(out)
        self.protocol = json.loads(json.dumps(protocol, default=str))
        self._done: dict[tuple[str, str], dict[str, Any]] = {}
        lines = self.path / "journal.jsonl"
        if self.path.exists():
            header = self._header(lines)
            if header is None:
                raise ConfigError(f"{self.path} exists and is not an evaluation journal nextgpt wrote; move it away")
            if resume and header["protocol"] != self.protocol:
                differs = sorted(k for k in {*header["protocol"], *self.protocol}
                                 if header["protocol"].get(k) != self.protocol.get(k))
                raise ConfigError(f"--resume: the interrupted evaluation of {out} had another {', '.join(differs)}; "
                                  "run it with the same options, or without --resume to start over")
            if resume:
                self._done = self._read(lines)
            else:
                shutil.rmtree(self.path)
        if not self.path.exists():
            (self.path / "previews").mkdir(parents=True)
            self._append({"format": _FORMAT, "protocol": self.protocol})

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _header(lines: Path) -> dict[str, Any] | None:
        try:
            with lines.open(encoding="utf-8") as f:
                first = json.loads(f.readline())
        except (OSError, ValueError):
            return None
        return first if isinstance(first, dict) and first.get("format") == _FORMAT else None

    @staticmethod
    def _read(lines: Path) -> dict[tuple[str, str], dict[str, Any]]:
        done = {}
        with lines.open(encoding="utf-8") as f:
            next(f)
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:  # the line a killed run was writing
                    break
                done[(record["variant"], record["id"])] = record
        return done

    def __len__(self) -> int:
        return len(self._done)

    def finished(self, variant: str, sample_id: str) -> dict[str, Any] | None:
        """The record of a finished sample (``correct``, ``attributes``, ``reply``, ``read_back``, ``previews``:
        a list of ``(H, W, 3)`` uint8 arrays), or ``None``."""
        record = self._done.get((variant, sample_id))
        if record is None:
            return None
        previews = [np.load(self.path / "previews" / name) for name in record.get("previews", [])]
        return {**record, "previews": previews}

    # ------------------------------------------------------------------ writing
    def record(self, variant: str, sample: Any, previews: list[np.ndarray]) -> None:
        """Append one finished sample (a :class:`~nextgpt_core.eval.toy.ToySample`) and its media previews."""
        names = []
        stem = hashlib.sha1(f"{variant}|{sample.sample_id}".encode()).hexdigest()[:16]
        for i, preview in enumerate(previews):
            name = f"{stem}-{i}.npy"
            np.save(self.path / "previews" / name, np.asarray(preview, dtype=np.uint8))
            names.append(name)
        record = {"variant": variant, "id": sample.sample_id, "correct": sample.correct, "attributes": sample.attributes,
                  "reply": sample.reply, "read_back": sample.read_back, "previews": names}
        self._append(record)
        self._done[(variant, sample.sample_id)] = record

    def _append(self, record: dict[str, Any]) -> None:
        with (self.path / "journal.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        """Delete the journal (the results have landed)."""
        shutil.rmtree(self.path, ignore_errors=True)
