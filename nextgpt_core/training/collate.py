"""Turning a :class:`~nextgpt_core.training.data.TrainingSample` into model inputs, labels and signal spans.

One sample becomes one :class:`TrainingExample` laid out exactly as inference lays out the same conversation:

* the header, BOS and every **user** turn are the pieces of :func:`~nextgpt_core.prompting.render_conversation`,
  embedded the way :meth:`NextGPT.embed_pieces` embeds them (text tokenized with the model's cached tokenizer call,
  wrapper ids inserted as ids, media encoded then projected by :meth:`NextGPT.project_media`, with autograd through
  the input projector);
* an **assistant** turn is the composition's assistant template split at ``{content}``. When the text before
  ``{content}`` starts with ``prompt.generation_prompt`` (the default ``"### Assistant: "`` vs ``"### Assistant:"``),
  exactly the generation prompt is the masked prefix (what inference puts at the end of its prompt) and the rest of it
  (``" "``) starts the labelled reply, so the labelled tokens are the tokens inference would generate: for the last
  turn, ``inputs_embeds[:, :P]`` equals ``NextGPT.prepare_inputs`` of the conversation without it (tested);
* each :class:`~nextgpt_core.training.data.Target` inserts its modality's signal ids (``model.tokens.signals``)
  **as ids** right after ``parts[:part_index]`` of its turn, with no separator before it (official stage 2:
  ``caption[IMG0] [IMG1] ...``); text parts are joined by ``prompt.part_separator`` as at inference.

Labels are aligned with the inputs (``labels[i]`` is ``input_ids[i]`` or ``-100``); the Hugging Face causal LM (or
:func:`nextgpt_core.training.losses.lm_loss`) shifts them. Labelled: the assistant turns' text (with the template
text after ``{content}``, e.g. ``"\\n###"``, as the official recipe) and the signal ids. Masked: everything else,
media positions and any BOS inserted by ``prompt.bos = "every_segment"``.

Example:
    >>> from nextgpt_core import NextGPT
    >>> from nextgpt_core.conversation import Conversation, Text, Turn
    >>> from nextgpt_core.training.data import Target, TrainingSample
    >>> model = NextGPT.from_composition("tiny")
    >>> key = model.output_modalities()[0]
    >>> conv = Conversation([Turn("user", [Text("a red square")]), Turn("assistant", [Text("a red square")])])
    >>> ex = build_example(model, TrainingSample(conv, [Target(key, "a red square", None, 1, 1)]))
    >>> ex.inputs_embeds.shape[:2] == ex.input_ids.shape == ex.labels.shape
    True
    >>> span = ex.signal_spans[0]
    >>> ex.input_ids[0, span.start:span.end].tolist() == model.tokens.signals[key]
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..conversation import Media, Text
from ..errors import DatasetError
from ..prompting import IdsPiece, MediaPiece, Piece, TextPiece, render_conversation

if TYPE_CHECKING:
    from ..model import NextGPT
    from .data import MediaLoader, TrainingSample

__all__ = [
    "IGNORE_INDEX",
    "MEDIA_ID",
    "PAD_ID",
    "Batch",
    "SignalSpan",
    "TrainingExample",
    "build_example",
    "collate_batch",
]

IGNORE_INDEX = -100
"""Label of positions without a loss (cross-entropy's ``ignore_index``)."""
MEDIA_ID = -1
"""``input_ids`` value at positions holding projected media embeddings (no token)."""
PAD_ID = -2
"""``input_ids`` value at right-padding positions of a :class:`Batch` (``attention_mask`` 0 there)."""


@dataclass(frozen=True)
class SignalSpan:
    """Where one target's signal run sits in an example's sequence.

    Attributes:
        modality: the output modality.
        start, end: positions ``start .. end-1`` of the run's ``N`` signal ids (``end - start == N``). The output
            projectors read the hidden states at ``start + offset .. end - 1 + offset`` with the composition's
            ``signal.position_offset`` (0: at the signal tokens), as inference does.
        target_id: :attr:`Target.target_id`, the key of the cached caption embedding.
        caption: the target caption (for error messages and logs).
        media_path: the target media file (:attr:`Target.media_path`) for the optional denoising loss, or ``None``.
    """

    modality: str
    start: int
    end: int
    target_id: str
    caption: str
    media_path: Path | None = None


@dataclass
class TrainingExample:
    """One sample laid out for the LLM.

    Attributes:
        inputs_embeds: ``(1, L, H)`` input embeddings, in the LLM's dtype, attached to the autograd graph of the input
            projectors and of the trainable embedding rows.
        input_ids: ``(1, L)`` long: token ids, :data:`MEDIA_ID` at media positions.
        labels: ``(1, L)`` long: ``input_ids`` at the labelled positions (assistant text and signal ids), else
            :data:`IGNORE_INDEX`; not shifted.
        signal_spans: one :class:`SignalSpan` per target, in sequence order.
        sample_id: the sample's id (for logs).
        truncated: the sample was longer than the limit and was cut at it (see :func:`build_example`).
    """

    inputs_embeds: torch.Tensor
    input_ids: torch.Tensor
    labels: torch.Tensor
    signal_spans: list[SignalSpan] = field(default_factory=list)
    sample_id: str = ""
    truncated: bool = False

    @property
    def length(self) -> int:
        """``L``."""
        return int(self.input_ids.shape[1])


@dataclass
class Batch:
    """Right-padded examples.

    Attributes:
        inputs_embeds: ``(B, L, H)``, zeros on padding.
        attention_mask: ``(B, L)`` long, 1 on real positions, 0 on padding.
        input_ids: ``(B, L)`` long, :data:`PAD_ID` on padding.
        labels: ``(B, L)`` long, :data:`IGNORE_INDEX` on padding.
        signal_spans: per row, its examples' :class:`SignalSpan` s (positions unchanged by right padding).
        sample_ids: per row.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    input_ids: torch.Tensor
    labels: torch.Tensor
    signal_spans: list[list[SignalSpan]]
    sample_ids: list[str] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        """Unpadded length of each row."""
        return [int(n) for n in self.attention_mask.sum(dim=1).tolist()]


class _Builder:
    """Accumulates ids, labels and embedding chunks of one sequence, at most ``limit`` positions: what would go past
    it is dropped before it is embedded (media past it are never loaded or encoded) and ``truncated`` is set."""

    def __init__(self, model: NextGPT, media_loader: MediaLoader | None, limit: int) -> None:
        self.model = model
        self.loader = media_loader
        self.limit = limit
        self.truncated = False
        self.embed = model.llm.get_input_embeddings()
        self.device = self.embed.weight.device
        self.ids: list[int] = []
        self.labels: list[int] = []
        self.chunks: list[torch.Tensor] = []
        self._pending: list[int] = []  # ids not embedded yet (one lookup per contiguous run of ids)
        bos = model.tokenizer.bos_token_id
        self.segment_bos = bos if model.composition.prompt.bos_in_training == "every_segment" else None

    @property
    def room(self) -> int:
        """Positions left before the limit."""
        return self.limit - len(self.ids)

    def _flush(self) -> None:
        if self._pending:
            self.chunks.append(self.embed(torch.tensor(self._pending, device=self.device)))
            self._pending = []

    def add_ids(self, ids: Sequence[int], labelled: bool) -> None:
        if len(ids) > self.room:
            ids, self.truncated = list(ids)[: max(self.room, 0)], True
        self.ids.extend(ids)
        self._pending.extend(ids)
        self.labels.extend(ids if labelled else [IGNORE_INDEX] * len(ids))

    def add_text(self, text: str, labelled: bool, continues: bool = False) -> None:
        """Tokenized as :meth:`NextGPT.embed_pieces` does (a BOS first with ``bos = "every_segment"``, masked,
        unless the text ``continues`` the previous piece's segment)."""
        if self.room <= 0:  # past the limit: not even tokenized
            self.truncated = self.truncated or bool(text) or self.segment_bos is not None
            return
        if self.segment_bos is not None and not continues:
            self.add_ids([self.segment_bos], labelled=False)
        if text:
            self.add_ids(list(self.model.text_ids(text)), labelled)

    def add_media(self, piece: MediaPiece) -> None:
        if self.room <= 0:
            self.truncated = True
            return
        items = tuple(self._load(m) for m in piece.items)
        projected = self.model.project_media(items, piece.modality)  # (n, H), autograd through the projector
        if projected.shape[0] > self.room:
            projected, self.truncated = projected[: self.room], True
        self._flush()
        self.chunks.append(projected)
        self.ids.extend([MEDIA_ID] * projected.shape[0])
        self.labels.extend([IGNORE_INDEX] * projected.shape[0])

    def _load(self, media: Media) -> Media:
        if self.loader is None or media.data is not None:
            return media
        digest = media.content_hash() if media.path is not None else None  # same cache key as the file at inference
        return Media(modality=media.modality, data=self.loader.load(media), path=media.path, _digest=digest)

    def add_pieces(self, pieces: Sequence[Piece], labelled: bool = False) -> None:
        for piece in pieces:
            if isinstance(piece, TextPiece):
                self.add_text(piece.text, labelled, piece.continues)
            elif isinstance(piece, IdsPiece):
                self.add_ids(piece.ids, labelled)
            else:
                self.add_media(piece)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._flush()
        if not self.chunks:  # a limit of 0 positions
            raise DatasetError("nothing of the sample fits a limit of 0 positions")
        embeds = torch.cat(self.chunks, dim=0).to(self.model.dtype).unsqueeze(0)
        ids = torch.tensor(self.ids, dtype=torch.long, device=self.device).unsqueeze(0)
        labels = torch.tensor(self.labels, dtype=torch.long, device=self.device).unsqueeze(0)
        return embeds, ids, labels


def _emit_runs(
    b: _Builder, model: NextGPT, pending: list[Any], upto: int, segment: str, spans: list[SignalSpan]
) -> str:
    """Emit the labelled text ``segment`` then the signal run of every pending target with ``part_index <= upto``
    (ids inserted as ids, span recorded); returns the text segment still to emit (``""`` after a run)."""
    while pending and pending[0].part_index <= upto:
        t = pending.pop(0)
        if segment.strip():
            b.add_text(segment, labelled=True)
        segment = ""
        ids = model.tokens.signals[t.modality]
        start = len(b.ids)
        if b.room >= len(ids):
            b.add_ids(ids, labelled=True)
            spans.append(SignalSpan(t.modality, start, start + len(ids), t.target_id, t.caption, t.media_path))
        else:  # the run does not fit: its first ids stay as input, unlabelled (a partial run is never a target)
            b.add_ids(ids, labelled=False)
    return segment


def context_limit(model: NextGPT) -> int:
    """Longest training sequence: ``generation.max_context_tokens``, else the LLM's ``max_position_embeddings``."""
    return model.composition.generation.max_context_tokens or int(getattr(model.llm.config, "max_position_embeddings", 2048))


def min_positions(model: NextGPT, sample: TrainingSample) -> int:
    """A lower bound on the positions ``sample`` takes, from its characters alone (no tokenizing): each text part
    and caption needs at least ``len // longest token`` tokens. Used to refuse an over-long sample before it costs
    memory (a 10 MB row took 7.7 GB before its error, mid-run)."""
    longest = model._longest_token
    texts = [p.text for t in sample.conversation.turns for p in t.parts if isinstance(p, Text)]
    return sum(len(t) // longest for t in texts)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def build_example(
    model: NextGPT,
    sample: TrainingSample,
    *,
    media_loader: MediaLoader | None = None,
    max_length: int | None = None,
) -> TrainingExample:
    """Lay out one sample: ``inputs_embeds (1, L, H)``, ``input_ids (1, L)``, ``labels (1, L)``, signal spans.

    Args:
        model: the model (its tokenizer, token table, prompt template, encoders and input projectors).
        sample: the sample; its media parts are decoded with ``media_loader`` (else read by the model's ``MediaIO``).
        media_loader: decodes lazy media through their plugins (:class:`~nextgpt_core.training.data.MediaLoader`).
        max_length: longest allowed ``L`` (default: the composition's ``generation.max_context_tokens``, else the
            LLM's ``max_position_embeddings``). A longer sample is cut at ``max_length`` positions, as the official
            loaders cut theirs (the new code keeps the first ``model_max_length`` positions): text and media past the
            limit are dropped before they are embedded, a signal run that does not fit whole is no target (its ids
            that fit stay unlabelled), and the example says ``truncated``.

    Raises:
        DatasetError: a target names a turn that is not an assistant turn, a part index out of range, or a modality
            the model cannot generate (naming the sample).
    """
    where = sample.sample_id or f"{sample.source[0]}:{sample.source[1]}"
    prompt = model.composition.prompt
    conv = sample.conversation
    limit = max_length or context_limit(model)
    least = min_positions(model, sample)
    if least > limit:  # known from its characters: refused before anything is tokenized or embedded
        raise DatasetError(f"sample {where}: at least {least} positions (its text alone), more than the limit of {limit}")
    header, turns, _footer = render_conversation(
        conv,
        prompt,
        modality_of=model.modality_of,
        wrappers=lambda key: model.tokens.wrappers[key],
        sum_items=lambda key: model.resolved.modalities[key].item_merge == "sum",
        prefix_apart=prompt.user_prefix_apart,  # official training: "### Human: " encoded apart (prompt_wrap)
    )
    targets_by_turn: dict[int, list[Any]] = {}
    for target in sample.targets:
        turn_ok = 0 <= target.turn_index < len(conv.turns) and conv.turns[target.turn_index].role == "assistant"
        if not turn_ok:
            raise DatasetError(f"sample {where}: target {_short(target.caption)} names turn {target.turn_index}, not an assistant turn")
        if not 0 <= target.part_index <= len(conv.turns[target.turn_index].parts):
            raise DatasetError(f"sample {where}: target {_short(target.caption)} has part_index {target.part_index} out of range")
        if target.modality not in model.tokens.signals:
            raise DatasetError(
                f"sample {where}: target modality {target.modality!r} is not an output of this model "
                f"({', '.join(model.tokens.signals) or 'none'})"
            )
        targets_by_turn.setdefault(target.turn_index, []).append(target)

    limit = max_length or model.composition.generation.max_context_tokens or int(
        getattr(model.llm.config, "max_position_embeddings", 2048)
    )
    b = _Builder(model, media_loader, limit)
    bos = model.tokenizer.bos_token_id
    if prompt.bos_in_training == "start" and bos is not None:
        b.add_ids([bos], labelled=False)
    b.add_pieces(header)
    before, after = prompt.assistant.split("{content}", 1)
    if prompt.generation_prompt and before.startswith(prompt.generation_prompt):
        masked, lead = prompt.generation_prompt, before[len(prompt.generation_prompt) :]
    else:
        masked, lead = before, ""
    spans: list[SignalSpan] = []
    for index, (turn, pieces) in enumerate(zip(conv.turns, turns)):
        if turn.role == "user":
            b.add_pieces(pieces)
            continue
        # assistant turn: masked prefix, then labelled segments of text separated by signal runs
        b.add_text(masked, labelled=False)
        segment = lead
        pending = sorted(targets_by_turn.get(index, []), key=lambda t: t.part_index)
        texts = 0  # text parts emitted so far (the separator goes between text parts)

        for p_index, part in enumerate(turn.parts):
            segment = _emit_runs(b, model, pending, p_index, segment, spans)
            if not isinstance(part, Text):
                raise DatasetError(f"sample {where}: assistant turn {index} holds media; targets must be Target entries")
            if not part.text:
                continue
            if texts:
                segment += prompt.part_separator
            segment += part.text
            texts += 1
        segment = _emit_runs(b, model, pending, len(turn.parts), segment, spans)
        segment += after
        if segment:
            b.add_text(segment, labelled=True)
    embeds, ids, labels = b.finish()
    return TrainingExample(embeds, ids, labels, spans, sample.sample_id, truncated=b.truncated)


def collate_batch(examples: Sequence[TrainingExample]) -> Batch:
    """Right-pad examples to the longest: ``inputs_embeds (B, L, H)`` (zeros), ``attention_mask (B, L)``,
    ``input_ids (B, L)`` (:data:`PAD_ID`), ``labels (B, L)`` (:data:`IGNORE_INDEX`). Positions of real tokens (and
    so the signal spans) do not move, so a causal LM gives the same outputs at them as without padding."""
    if not examples:
        raise ValueError("collate_batch needs at least one example")
    longest = max(e.length for e in examples)
    embeds, masks, ids, labels = [], [], [], []
    for e in examples:
        pad = longest - e.length
        x = e.inputs_embeds[0]
        embeds.append(torch.cat([x, x.new_zeros(pad, x.shape[1])], dim=0))
        masks.append(torch.cat([torch.ones(e.length, dtype=torch.long), torch.zeros(pad, dtype=torch.long)]))
        ids.append(torch.cat([e.input_ids[0].cpu(), torch.full((pad,), PAD_ID, dtype=torch.long)]))
        labels.append(torch.cat([e.labels[0].cpu(), torch.full((pad,), IGNORE_INDEX, dtype=torch.long)]))
    device = examples[0].inputs_embeds.device
    return Batch(
        inputs_embeds=torch.stack(embeds),
        attention_mask=torch.stack(masks).to(device),
        input_ids=torch.stack(ids).to(device),
        labels=torch.stack(labels).to(device),
        signal_spans=[list(e.signal_spans) for e in examples],
        sample_ids=[e.sample_id for e in examples],
    )

