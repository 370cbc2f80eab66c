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
        decode: ids -> text in which stop strings are looked for (``NextGPT`` keeps the tokenizer's special tokens,
            so a stop string may be one, and leaves the modality tokens out); needed with ``stop_strings``.
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

    def __post_init__(self) -> None:
        self._starts = {ids[0]: key for key, ids in self.runs.items()}
        self._non_start = sorted({i for ids in self.runs.values() for i in ids[1:]})
        self._all_signal = {i for ids in self.runs.values() for i in ids}
        self._counts = {key: 0 for key in self.runs}
        unknown = [m for m in self.want if m not in self.runs]
        if unknown:
            raise ValueError(f"cannot want {unknown}: not generatable in this composition ({', '.join(self.runs)})")
        self.want = list(dict.fromkeys(self.want))
        needed = sum(len(self.runs[m]) for m in self.want)
        if needed > self.max_new_tokens:
            raise ValueError(f"max_new_tokens {self.max_new_tokens} cannot hold the wanted runs ({needed} signal tokens)")
        # stop strings: decode only a window of the newest text tokens, long enough to hold any stop string
        self._text_ids: list[int] = []
        self._stop_window = max((len(s.encode()) for s in self.stop_strings), default=0) + 2
        self._stop_seen = False
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}
        self._flags: dict[bool, torch.Tensor] = {}

    # ------------------------------------------------------------------ state
    def counts(self) -> dict[str, int]:
        """Completed runs per modality."""
        return dict(self._counts)

    def missing(self) -> list[str]:
        """Wanted modalities with no run yet (open runs count as started)."""
        started = self._open[0] if self._open else None
        return [m for m in self.want if self._counts[m] == 0 and m != started]

    def advance(self, ids: torch.Tensor) -> None:
        """Account for the generated ids ``(T,)`` not seen yet (the processor call sees all but the last token;
        :func:`~nextgpt_core.generation` calls this once more after ``generate`` returns)."""
        if ids.shape[0] <= self._seen:
            return
        new_text = False
        for pos, tok in enumerate(ids[self._seen :].tolist(), start=self._seen):
            if self._open is not None:
                key, nxt, start = self._open
                nxt += 1
                self._open = None if nxt == len(self.runs[key]) else (key, nxt, start)
                if self._open is None:
                    self.completed.append(RunRecord(key, start))
                    self._counts[key] += 1
            elif tok in self._starts:
                key = self._starts[tok]
                if len(self.runs[key]) == 1:
                    self.completed.append(RunRecord(key, pos))
                    self._counts[key] += 1
                else:
                    self._open = (key, 1, pos)
            elif tok not in self._all_signal:
                self._text_ids.append(tok)
                new_text = True
        self._seen = ids.shape[0]
        if new_text and not self._stop_seen and self.stop_strings and self.decode is not None:
            tail = self.decode(self._text_ids[-self._stop_window :])
            self._stop_seen = any(s in tail for s in self.stop_strings)

    # ------------------------------------------------------------------ logits processor
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """transformers ``LogitsProcessor`` protocol: ``input_ids (1, k)``, ``scores (1, vocab)`` -> scores."""
        ids = input_ids[0]
        self.advance(ids)
        if self._open is not None:  # complete the run
            key, nxt, _ = self._open
            return self._force(scores, self.runs[key][nxt])
        remaining = self.max_new_tokens - ids.shape[0]
        missing = self.missing()
        needed = sum(len(self.runs[m]) for m in missing)
        if missing and (remaining <= needed or self._stop_seen):
            return self._force(scores, self.runs[missing[0]][0])
        banned = []
        for start, key in self._starts.items():
            n = len(self.runs[key])
            # after this run the budget must still hold every other missing run
            reserve = needed - (n if key in missing else 0)
            if self._counts[key] >= self.caps.get(key, 1) or remaining < n + reserve:
                banned.append(start)
        row = scores[0]
        row.add_(self._mask(tuple(banned), row))
        if missing:  # the model wants to stop: start the first missing run instead
            first = self.runs[missing[0]][0]
            for eos in self.eos_ids:
                row[first] = torch.logaddexp(row[first], row[eos])
                row[eos] = float("-inf")
        if self.sample:
            return self._force(scores, self._sample(row))
        return scores

    def _mask(self, banned: tuple[int, ...], row: torch.Tensor) -> torch.Tensor:
        """``(vocab,)`` additive mask: ``-inf`` on non-start signal ids and on ``banned`` run starts (cached)."""
        mask = self._masks.get(banned)
        if mask is None or mask.shape != row.shape or mask.device != row.device:
            mask = torch.zeros_like(row)
            mask[[*self._non_start, *banned]] = float("-inf")
            self._masks[banned] = mask
        return mask

    def _force(self, scores: torch.FloatTensor, token: int) -> torch.FloatTensor:
        scores[0].fill_(float("-inf"))
        scores[0, token] = 0.0
        return scores

    def _sample(self, row: torch.Tensor) -> int:
        """Draw one id from ``softmax(row / temperature)`` cut to top-k / top-p, with this request's generator.

        Uses the exponential-race form of sampling (``argmax p_i / E_i``, ``E_i ~ Exp(1)``), which draws exactly
        from ``p`` and costs fewer kernel calls than ``multinomial``.
        """
        logits = row.float() if self.temperature == 1.0 else row.float() / self.temperature
        if self.top_k and self.top_k < logits.shape[0]:
            kth = torch.topk(logits, self.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            logits, order = torch.sort(logits, descending=True)
            probs = torch.softmax(logits, dim=-1)
            probs.masked_fill_(probs.cumsum(-1) - probs > self.top_p, 0.0)  # keep the token that crosses top_p
        else:
            order, probs = None, torch.softmax(logits, dim=-1)
        race = torch.empty_like(probs).exponential_(generator=self.generator)
        choice = int(torch.argmax(probs / race))
        return int(order[choice]) if order is not None else choice

    # ------------------------------------------------------------------ stopping criterion
    def stop(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs: object) -> torch.BoolTensor:
        """transformers ``StoppingCriteria`` protocol: stop on a stop string (unless a wanted run is missing or a
        run is open) or on cancellation."""
        self.advance(input_ids[0])
        done = False
        if self.should_stop is not None and self.should_stop():
            self.cancelled = done = True
        elif self._stop_seen and self._open is None and not self.missing():
            done = True
        flag = self._flags.get(done)
        if flag is None or flag.device != input_ids.device:
            flag = self._flags[done] = torch.tensor([done], device=input_ids.device)
        return flag
