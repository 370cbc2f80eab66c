"""Per-call generation state: completes signal runs, forces wanted modalities, samples with a per-request
generator, and decides when to stop.

One :class:`SignalRunController` is made for each ``generate`` call and is never shared, so nothing is left on
the model between requests. It is plugged into transformers' ``generate`` as a logits processor (it sees the
``(1, k)`` ids generated so far and the last position's scores) and as a stopping criterion.

Rules, for each modality ``m`` with signal ids ``X_0..X_{N-1}``:

- once ``X_0`` is generated, ``X_1..X_{N-1}`` are forced: a started run always completes;
- ``X_i`` (i > 0) is never chosen freely, so runs cannot come out partial or out of order;
- a run may start only if the token budget can hold it, and at most ``cap[m]`` times per reply;
- a wanted modality not yet produced: the EOS probability mass is moved onto ``X_0``, a stop string is not
  allowed to end the reply, and when the remaining budget only just holds the missing runs, ``X_0`` is forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = ["RunRecord", "SignalRunController"]


@dataclass
class RunRecord:
    """A completed signal run: modality and the index of its first token among the generated ids."""

    modality: str
    start: int


@dataclass
class SignalRunController:
    """Per-call state machine for one row of generation (batch size 1).

    Args:
        runs: ``{modality: [X_0 .. X_{N-1}]}`` for every modality the composition can generate, in order.
        caps: ``{modality: max runs per reply}``.
        want: modalities that must appear in the reply, in order.
        eos_ids: ids that end generation.
        stop_strings: strings that end the reply, found in the decoded reply text (signal tokens left out).
        decode: ids -> text (the tokenizer's decode, special tokens skipped); needed with ``stop_strings``.
        max_new_tokens: the budget of this call.
        sample: sample (with ``generator``) instead of taking the arg-max.
        temperature, top_k, top_p: sampling settings (applied here, not by transformers' warpers).
        generator: the per-request random generator (thread-safe, reproducible).
        should_stop: cancellation check, called between steps.
    """

    runs: dict[str, list[int]]
    caps: dict[str, int]
    want: Sequence[str] = ()
    eos_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    decode: Callable[[list[int]], str] | None = None
    max_new_tokens: int = 64
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    should_stop: Callable[[], bool] | None = None

    completed: list[RunRecord] = field(default_factory=list)
    cancelled: bool = False
    _seen: int = 0
    _open: tuple[str, int, int] | None = None  # (modality, next index, start)
    _starts: dict[int, str] = field(default_factory=dict)
    _non_start: list[int] = field(default_factory=list)
    _stop_cache: tuple[int, bool] = (-1, False)

    def __post_init__(self) -> None:
        self._starts = {ids[0]: key for key, ids in self.runs.items()}
        self._non_start = sorted({i for ids in self.runs.values() for i in ids[1:]})
        self._all_signal = {i for ids in self.runs.values() for i in ids}
        unknown = [m for m in self.want if m not in self.runs]
        if unknown:
            raise ValueError(f"cannot want {unknown}: not generatable in this composition ({', '.join(self.runs)})")
        needed = sum(len(self.runs[m]) for m in dict.fromkeys(self.want))
        if needed > self.max_new_tokens:
            raise ValueError(f"max_new_tokens {self.max_new_tokens} cannot hold the wanted runs ({needed} signal tokens)")
        self.want = list(dict.fromkeys(self.want))

    # ------------------------------------------------------------------ state
    def counts(self) -> dict[str, int]:
        """Completed runs per modality."""
        out = {key: 0 for key in self.runs}
        for rec in self.completed:
            out[rec.modality] += 1
        return out

    def missing(self) -> list[str]:
        """Wanted modalities with no run yet (open runs count as started)."""
        counts = self.counts()
        started = self._open[0] if self._open else None
        return [m for m in self.want if counts[m] == 0 and m != started]

    def in_run(self) -> bool:
        """Whether a run is open (started, not complete)."""
        return self._open is not None

    def _advance(self, ids: torch.Tensor) -> None:
        for pos in range(self._seen, ids.shape[0]):
            tok = int(ids[pos])
            if self._open is not None:
                key, nxt, start = self._open
                nxt += 1
                self._open = None if nxt == len(self.runs[key]) else (key, nxt, start)
                if self._open is None:
                    self.completed.append(RunRecord(key, start))
            elif tok in self._starts:
                key = self._starts[tok]
                if len(self.runs[key]) == 1:
                    self.completed.append(RunRecord(key, pos))
                else:
                    self._open = (key, 1, pos)
        self._seen = ids.shape[0]

    def has_stop(self, ids: torch.Tensor) -> bool:
        """Whether the reply text so far contains a stop string."""
        if not self.stop_strings or self.decode is None or ids.shape[0] == 0:
            return False
        if self._stop_cache[0] != ids.shape[0]:
            signal = self._all_signal
            text = self.decode([i for i in ids.tolist() if i not in signal])
            self._stop_cache = (ids.shape[0], any(s in text for s in self.stop_strings))
        return self._stop_cache[1]

    # ------------------------------------------------------------------ logits processor
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """transformers ``LogitsProcessor`` protocol: ``input_ids (1, k)``, ``scores (1, vocab)`` -> scores."""
        ids = input_ids[0]
        self._advance(ids)
        row = scores[0]
        if self._open is not None:  # complete the run
            key, nxt, _ = self._open
            return self._force(scores, self.runs[key][nxt])
        remaining = self.max_new_tokens - ids.shape[0]
        counts = self.counts()
        missing = self.missing()
        needed = sum(len(self.runs[m]) for m in missing)
        if missing and (remaining <= needed or self.has_stop(ids)):
            return self._force(scores, self.runs[missing[0]][0])
        if self._non_start:
            row[self._non_start] = float("-inf")
        for start, key in self._starts.items():
            n = len(self.runs[key])
            # after this run the budget must still hold every other missing run
            reserve = needed - (n if key in missing else 0)
            if counts[key] >= self.caps.get(key, 1) or remaining < n + reserve:
                row[start] = float("-inf")
        if missing:  # the model wants to stop: start the first missing run instead
            first = self.runs[missing[0]][0]
            for eos in self.eos_ids:
                row[first] = torch.logaddexp(row[first], row[eos])
                row[eos] = float("-inf")
        if self.sample:
            return self._force(scores, self._sample(row))
        return scores

    def _force(self, scores: torch.FloatTensor, token: int) -> torch.FloatTensor:
        scores[0].fill_(float("-inf"))
        scores[0, token] = 0.0
        return scores

    def _sample(self, row: torch.Tensor) -> int:
        logits = row.float() / self.temperature
        if self.top_k and self.top_k < logits.shape[0]:
            kth = torch.topk(logits, self.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) > self.top_p  # keep the token that crosses top_p
            logits[order[drop]] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    # ------------------------------------------------------------------ stopping criterion
    def stop(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs: object) -> torch.BoolTensor:
        """transformers ``StoppingCriteria`` protocol: stop on a stop string (unless a wanted run is missing or a
        run is open) or on cancellation."""
        ids = input_ids[0]
        self._advance(ids)
        done = False
        if self.should_stop is not None and self.should_stop():
            self.cancelled = done = True
        elif self._open is None and not self.missing() and self.has_stop(ids):
            done = True
        return torch.tensor([done], device=input_ids.device)
