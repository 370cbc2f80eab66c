"""One ``generate`` call from input embeddings, recording the hidden states of signal tokens as they are made.

Facts this relies on (transformers 5.24, see docs/architecture.md): from ``inputs_embeds`` alone, ``sequences``
holds only the new tokens; ``hidden_states[0]`` covers the prompt ``(1, P, H)`` and ``hidden_states[i]`` the
token ``sequences[:, i-1]`` ``(1, 1, H)``; the last generated token is never fed, so its state comes from one
extra cached forward when a run ends the reply. No second full pass is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .signal_runs import RunRecord, SignalRunController

__all__ = ["GenerationResult", "TextStreamer", "run_generation"]


class _Processor(LogitsProcessor):
    def __init__(self, controller: SignalRunController) -> None:
        self.controller = controller

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.controller(input_ids, scores)


class _Stop(StoppingCriteria):
    def __init__(self, controller: SignalRunController) -> None:
        self.controller = controller

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return self.controller.stop(input_ids, scores)


class TextStreamer:
    """transformers streamer that calls ``on_text(delta)`` with new reply text (signal and special tokens hidden).

    Text that could be the start of a stop string is held back until it is known not to be one.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None], hidden_ids: set[int], stop: tuple[str, ...]) -> None:
        self.tokenizer, self.on_text, self.hidden_ids, self.stop = tokenizer, on_text, hidden_ids, stop
        self.ids: list[int] = []
        self.sent = 0

    def put(self, value: torch.Tensor) -> None:
        """Receive new ids (``(1, n)`` or ``(n,)``); the empty prompt tensor of step 0 is ignored."""
        self.ids.extend(int(i) for i in value.reshape(-1).tolist() if int(i) not in self.hidden_ids)
        self._flush(final=False)

    def end(self) -> None:
        """Flush what is held back (minus a trailing stop string)."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        safe = len(text)
        for stop in self.stop:
            idx = text.find(stop, self.sent)
            if idx >= 0:
                safe = min(safe, idx)
            elif not final:  # hold back a possible prefix of the stop string
                for k in range(min(len(stop) - 1, len(text)), 0, -1):
                    if text.endswith(stop[:k]):
                        safe = min(safe, len(text) - k)
                        break
        if not final and text.endswith("\ufffd"):  # an incomplete multi-byte character
            safe = min(safe, len(text) - 1)
        if safe > self.sent:
            self.on_text(text[self.sent : safe])
            self.sent = safe


@dataclass
class GenerationResult:
    """What one call produced.

    Attributes:
        token_ids: generated ids ``(N,)``, signal tokens included.
        runs: completed signal runs with their hidden states ``(n_signal, H)``, in order.
        cancelled: stopped by the cancellation check.
        forward_calls: LLM forward passes made (prefill + decode steps + at most one extra).
    """

    token_ids: list[int]
    runs: list[tuple[RunRecord, torch.Tensor]]
    cancelled: bool
    forward_calls: int


def run_generation(
    llm: Any,
    inputs_embeds: torch.Tensor,
    controller: SignalRunController,
    *,
    eos_token_id: int | None,
    pad_token_id: int | None,
    hidden_layer: int = -1,
    position_offset: int = 0,
    streamer: TextStreamer | None = None,
) -> GenerationResult:
    """Run one cached ``generate`` from ``inputs_embeds (1, P, H)`` and gather the signal runs' hidden states.

    Args:
        llm: a Hugging Face causal LM (optionally peft-wrapped).
        controller: the per-call :class:`SignalRunController` (logits processor + stopping criterion).
        hidden_layer: which entry of the hidden states to read (-1: last layer after the final norm).
        position_offset: 0 reads the states AT each signal token; -1 the position before each.

    Returns:
        A :class:`GenerationResult`; each run's states are ``(N, H)`` for positions
        ``start+offset .. start+N-1+offset`` of the generated sequence.
    """
    config = GenerationConfig(
        max_new_tokens=controller.max_new_tokens,
        do_sample=False,  # the controller samples with the request's own generator and forces its choice
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id if pad_token_id is not None else eos_token_id,
        use_cache=True,
        output_hidden_states=[hidden_layer],
        return_dict_in_generate=True,
    )
    prompt_len = inputs_embeds.shape[1]
    extra_calls = 0
    with torch.inference_mode():
        out = llm.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device),
            generation_config=config,
            logits_processor=LogitsProcessorList([_Processor(controller)]),
            stopping_criteria=StoppingCriteriaList([_Stop(controller)]),
            streamer=streamer,
        )
        seq = out.sequences[0]
        controller.advance(seq)  # account for the last token, which no processor call saw
        runs = [r for r in controller.completed]
        states = [out.hidden_states[0][hidden_layer][0]] + [step[hidden_layer][0] for step in out.hidden_states[1:]]
        flat = torch.cat(states, dim=0)  # (P + N - 1, H)
        need = max((prompt_len + r.start + len(controller.runs[r.modality]) - 1 + position_offset for r in runs), default=-1)
        if need >= flat.shape[0]:  # the last generated token was never fed: one extra cached step
            extra = llm(
                inputs_embeds=llm.get_input_embeddings()(seq[-1:].unsqueeze(0)),
                cache=out.cache,
                use_cache=True,
                output_hidden_states=True,
            )
            flat = torch.cat([flat, extra.hidden_states[hidden_layer][0, -1:]], dim=0)
            extra_calls = 1
    gathered = []
    for r in runs:
        n = len(controller.runs[r.modality])
        lo = prompt_len + r.start + position_offset
        gathered.append((r, flat[lo : lo + n].clone()))
    return GenerationResult(seq.tolist(), gathered, controller.cancelled, len(out.hidden_states) + extra_calls)
