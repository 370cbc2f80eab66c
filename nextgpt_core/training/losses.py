"""Training losses: the shifted LM cross-entropy and the official per-token L2 of the output projectors.

* :func:`lm_loss` — standard causal-LM cross-entropy (logits at ``i`` predict ``labels[i + 1]``, ``-100`` ignored).
* :func:`l2_loss` — the official NExT-GPT formula (``common/utils.py::l2_loss``): the Euclidean norm of the
  difference **per token**, ``((u - v) ** 2).sum(-1) ** 0.5``, then ``.mean()`` over batch and tokens.
* :func:`signal_l2_losses` — per output modality: the hidden states read at each signal span (as inference reads
  them: ``signal.position_offset``), plus the signal tokens' input embeddings (as :meth:`NextGPT.decode_run`),
  through each of the modality's output projectors, against the cached caption embedding of every conditioning
  input the projector fills; a retrieval decoder's input (``Decoder.targets_from_media``) against the modality
  encoder's embedding of the span's target media instead (spans without a media file leave it out), read from the
  target cache when ``nextgpt cache-targets`` embedded it there, else computed (:func:`media_target`).

Example:
    >>> import torch
    >>> round(float(l2_loss(torch.tensor([[[3.0, 4.0]]]), torch.zeros(1, 1, 2))), 4)
    5.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .collate import IGNORE_INDEX, Batch, SignalSpan, TrainingExample

if TYPE_CHECKING:
    from ..model import NextGPT

__all__ = [
    "MissingTargetError",
    "l2_loss",
    "lm_loss",
    "lm_token_count",
    "media_target",
    "signal_hidden_states",
    "signal_l2_losses",
    "signal_projections",
    "signal_span_counts",
]


class MissingTargetError(KeyError):
    """A signal span has no cached target embedding (run ``nextgpt cache-targets``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Shifted cross-entropy: ``logits (B, L, V)`` at position ``i`` predict ``labels (B, L)`` at ``i + 1``.

    Positions labelled :data:`~nextgpt_core.training.collate.IGNORE_INDEX` (``-100``) are ignored; the mean is over
    the remaining tokens of the whole batch (Hugging Face's ``loss``), or their sum with ``reduction="sum"``
    (divide by :func:`lm_token_count`). Returns a scalar (0-dim) in float32.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(logits.device)
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Official NExT-GPT L2: ``((pred - target) ** 2).sum(-1) ** 0.5`` per token, then the mean.

    Args:
        pred, target: ``(B, T, D)`` (any leading shape; the last dimension is the feature dimension).

    Returns:
        A scalar: the mean over ``B x T`` of the per-token Euclidean distances.
    """
    if pred.shape != target.shape:
        raise ValueError(f"l2_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return ((pred - target.to(pred.dtype)) ** 2).sum(-1).sqrt().mean()


def signal_hidden_states(model: NextGPT, outputs: Any) -> torch.Tensor:
    """The hidden states the output projectors read: ``outputs.hidden_states[signal.hidden_layer]``, ``(B, L, H)``
    (``outputs`` from ``model.llm(..., output_hidden_states=True)``)."""
    return outputs.hidden_states[model.composition.signal.hidden_layer]


def _rows(batch: Batch | TrainingExample) -> list[list[SignalSpan]]:
    if isinstance(batch, TrainingExample):
        return [list(batch.signal_spans)]
    return [list(spans) for spans in batch.signal_spans]


def signal_span_counts(batch: Batch | TrainingExample) -> dict[str, int]:
    """``{modality: number of signal spans}`` in ``batch`` (the denominators of the ``"sum"`` reduction)."""
    counts: dict[str, int] = {}
    for spans in _rows(batch):
        for span in spans:
            counts[span.modality] = counts.get(span.modality, 0) + 1
    return counts


def lm_token_count(labels: torch.Tensor) -> int:
    """Tokens that :func:`lm_loss` averages over: labels ``(B, L)`` at positions ``1..L-1`` that are not ignored."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def signal_projections(
    model: NextGPT, hidden_states: torch.Tensor, batch: Batch | TrainingExample
) -> dict[str, tuple[list[tuple[int, SignalSpan]], dict[str, torch.Tensor]]]:
    """Project every signal span of ``batch`` as inference does, grouped by output modality.

    Reads the hidden states at each span (with ``signal.position_offset``) and adds the signal tokens' input
    embeddings (trainable rows kept), through each of the modality's output projectors.

    Returns:
        ``{modality: ([(row, span), ...], {conditioning name: (S, T, D)})}``, ``S`` = that modality's spans in
        batch order.
    """
    offset = model.composition.signal.position_offset
    embed = model.llm.get_input_embeddings()
    by_modality: dict[str, list[tuple[int, SignalSpan]]] = {}
    for row, spans in enumerate(_rows(batch)):
        for span in spans:
            by_modality.setdefault(span.modality, []).append((row, span))
    out: dict[str, tuple[list[tuple[int, SignalSpan]], dict[str, torch.Tensor]]] = {}
    for key, entries in by_modality.items():
        ids = torch.tensor(model.tokens.signals[key], device=hidden_states.device)
        signal_embeds = embed(ids).unsqueeze(0).expand(len(entries), -1, -1)  # (S, N, H), trainable rows kept
        hidden = torch.stack(
            [hidden_states[row, span.start + offset : span.end + offset] for row, span in entries]
        )  # (S, N, H)
        if hidden.shape[1] != ids.shape[0]:
            raise ValueError(f"{key}: a signal span holds {hidden.shape[1]} positions; the run has {ids.shape[0]}")
        preds: dict[str, torch.Tensor] = {}
        for name, proj in model.output_projectors[key].items():
            p = next(proj.parameters(), None)
            dtype = p.dtype if p is not None else hidden.dtype
            preds[name] = proj(hidden.to(dtype), signal_embeds.to(dtype))  # (S, T, D)
        out[key] = (entries, preds)
    return out


def media_target(model: NextGPT, targets: Any, key: str, path: Any) -> torch.Tensor:
    """The stage-2 target of a media-target input, ``(1, dim)``: from ``targets`` when it caches the encoder's
    embedding of this file (a :class:`~nextgpt_core.training.targets.TargetCache` made by ``nextgpt cache-targets``
    for a composition with a retrieval decoder: ``targets.media_target(model, key, path)``), else computed by
    :meth:`NextGPT.media_target` (the same numbers, one encoder forward)."""
    lookup = getattr(targets, "media_target", None)
    cached = lookup(model, key, path) if lookup is not None else None
    return cached if cached is not None else model.media_target(key, path)


def _media_l2(
    model: NextGPT, key: str, name: str, entries: list[tuple[int, SignalSpan]], pred: torch.Tensor, reduction: str,
    targets: Any = None,
) -> torch.Tensor | None:
    """L2 between a media-target input's predictions ``(S, 1, dim)`` and the encoder's embeddings of the spans'
    target media (spans without a media file take no part; ``None`` when none has one), read from ``targets`` when
    it caches them (:func:`media_target`)."""
    chosen = [i for i, (_, span) in enumerate(entries) if span.media_path is not None]
    if not chosen:
        return None
    wanted = torch.stack([media_target(model, targets, key, entries[i][1].media_path) for i in chosen]).to(pred.device, pred.dtype)
    picked = pred.index_select(0, torch.tensor(chosen, device=pred.device))
    if tuple(wanted.shape[1:]) != tuple(picked.shape[1:]):
        raise ValueError(f"{key}: the encoder's target embeddings are {tuple(wanted.shape[1:])}; the {name!r} projector "
                         f"gives {tuple(picked.shape[1:])}")
    if reduction == "sum":
        return ((picked - wanted) ** 2).sum(-1).sqrt().mean(-1).sum()
    return l2_loss(picked, wanted)


def signal_l2_losses(
    model: NextGPT,
    hidden_states: torch.Tensor | None,
    batch: Batch | TrainingExample,
    targets: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    reduction: str = "mean",
    projections: Mapping[str, tuple[list[tuple[int, SignalSpan]], dict[str, torch.Tensor]]] | None = None,
) -> dict[str, torch.Tensor]:
    """Per output modality, the L2 between the projected signal states and the cached caption embeddings.

    Args:
        model: the model (output projectors, signal ids, ``composition.signal.position_offset``).
        hidden_states: ``(B, L, H)`` of the LLM forward over ``batch`` (see :func:`signal_hidden_states`); may be
            ``None`` when ``projections`` are given.
        batch: a :class:`Batch` (or one :class:`TrainingExample`, ``B = 1``) whose spans say where the runs are.
        targets: ``{target_id: {conditioning name: (T, D)}}``: the decoder's own text-encoder embedding of each
            caption, one tensor per conditioning input its projectors fill (``T, D`` = the projector's
            ``out_len, out_dim``).
        reduction: ``"mean"`` (the official loss) or ``"sum"``: the sum over spans of each span's mean per-token
            distance, so that ``sum / number of spans`` is the mean. Data-parallel training adds the sums of all
            processes and divides by the global span count (:func:`signal_span_counts`), which equals the
            single-process mean exactly.
        projections: :func:`signal_projections` of the same batch, if already computed (the denoising loss reuses
            them); computed here otherwise.

    Returns:
        ``{modality: scalar}`` for every modality with at least one span: for each conditioning input, the
        :func:`l2_loss` over all spans of that modality (per-token norm, mean over spans and tokens), summed over
        the modality's conditioning inputs (a decoder with two inputs gets both compared). No spans: ``{}``.

    Raises:
        MissingTargetError: a span's ``target_id`` (or one of its conditioning inputs) is not in ``targets``; the
            message names the target id, the caption and the modality.
        ValueError: a cached target's shape is not the projector's output shape.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    if projections is None:
        if hidden_states is None:
            raise ValueError("signal_l2_losses needs hidden_states or projections")
        projections = signal_projections(model, hidden_states, batch)
    losses: dict[str, torch.Tensor] = {}
    for key, (entries, preds) in projections.items():
        total = None
        from_media = model.media_target_names(key)
        for name, pred in preds.items():
            if name in from_media:  # a retrieval decoder's query: the encoder's embedding of the target media
                loss = _media_l2(model, key, name, entries, pred, reduction, targets)
                if loss is not None:
                    total = loss if total is None else total + loss
                continue
            wanted = []
            for _, span in entries:
                cached = targets.get(span.target_id)
                if cached is None or name not in cached:
                    what = "no cached target" if cached is None else f"no cached {name!r} input in the target"
                    raise MissingTargetError(
                        f"{what} for target_id {span.target_id} ({key}, caption {span.caption!r}); "
                        "run `nextgpt cache-targets` for this dataset and decoder"
                    )
                t = cached[name]
                if tuple(t.shape) != tuple(pred.shape[1:]):
                    raise ValueError(
                        f"cached {name!r} target of {span.target_id} ({key}, caption {span.caption!r}) is "
                        f"{tuple(t.shape)}; the projector gives {tuple(pred.shape[1:])}"
                    )
                wanted.append(t.to(pred.device, pred.dtype))
            if reduction == "sum":
                loss = ((pred - torch.stack(wanted)) ** 2).sum(-1).sqrt().mean(-1).sum()
            else:
                loss = l2_loss(pred, torch.stack(wanted))
            total = loss if total is None else total + loss
        if total is not None:
            losses[key] = total
    return losses
