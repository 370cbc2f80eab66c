"""Turning a conversation into prompt pieces: text, token ids inserted directly, and media placeholders.

The pieces are tokenizer- and model-agnostic; :class:`nextgpt_core.model.NextGPT` embeds them. Wrapper and
signal tokens are inserted as ids, never by tokenizing spelled-out text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from .composition import PromptSettings
from .conversation import Conversation, Media, Text

__all__ = ["IdsPiece", "MediaPiece", "Piece", "TextPiece", "join_text", "render_conversation", "strip_around_ids"]


@dataclass(frozen=True)
class TextPiece:
    """Text to tokenize (without special tokens).

    ``continues``: the text continues the previous text piece's segment: it is tokenized on its own (never merged
    into that piece) and gets no BOS of its own (``prompt.user_prefix_apart``).
    """

    text: str
    continues: bool = False


@dataclass(frozen=True)
class IdsPiece:
    """Token ids inserted as they are (wrapper tokens, BOS)."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class MediaPiece:
    """Media items of one modality whose projected embeddings go here (several are summed)."""

    modality: str
    items: tuple[Media, ...]


Piece = Union[TextPiece, IdsPiece, MediaPiece]


def render_conversation(
    conversation: Conversation,
    prompt: PromptSettings,
    *,
    modality_of: Callable[[Media], str],
    wrappers: Callable[[str], tuple[int, int]],
    sum_items: Callable[[str], bool],
    prefix_apart: bool = False,
) -> tuple[list[Piece], list[list[Piece]], list[Piece]]:
    """Render ``conversation`` with the composition's template.

    Args:
        modality_of: resolves a media part's modality key (from its field or its file name).
        wrappers: ``(open_id, close_id)`` of a modality's wrapper tokens.
        sum_items: whether several items of that modality in one turn are summed into one span (official v0).
        prefix_apart: the first user turn's template text before ``{content}`` is its own tokenization piece when
            text follows it (the text is a ``TextPiece(continues=True)``); see ``PromptSettings.user_prefix_apart``.

    Returns:
        ``(header, turns, footer)``: the system text, one piece list per turn, and the generation prompt.
    """
    header: list[Piece] = [TextPiece(prompt.system)] if prompt.system else []
    turns: list[list[Piece]] = []
    apart = prefix_apart
    for turn in conversation.turns:
        template = prompt.user if turn.role == "user" else prompt.assistant
        before, after = template.split("{content}", 1)
        pieces: list[Piece] = [TextPiece(before)] if before else []
        split_here = apart and turn.role == "user" and bool(before)
        apart = apart and turn.role != "user"  # only the first user turn
        merged: dict[str, int] = {}
        first = True
        for part in turn.parts:
            if isinstance(part, Text):
                if not part.text:
                    continue
                if not first:
                    pieces.append(TextPiece(prompt.part_separator))
                pieces.append(TextPiece(part.text, continues=split_here and first))
            else:
                key = modality_of(part)
                if sum_items(key) and key in merged:
                    idx = merged[key]
                    old = pieces[idx]
                    assert isinstance(old, MediaPiece)
                    pieces[idx] = MediaPiece(key, old.items + (part,))
                    continue
                if not first:
                    pieces.append(TextPiece(prompt.part_separator))
                open_id, close_id = wrappers(key)
                pieces.append(IdsPiece((open_id,)))
                merged[key] = len(pieces)
                pieces.append(MediaPiece(key, (part,)))
                pieces.append(IdsPiece((close_id,)))
            first = False
        if after:
            pieces.append(TextPiece(after))
        pieces = join_text(pieces)
        turns.append(strip_around_ids(pieces) if prompt.strip_around_tokens else pieces)
    footer: list[Piece] = [TextPiece(prompt.generation_prompt)] if prompt.generation_prompt else []
    return header, turns, footer


def strip_around_ids(pieces: list[Piece]) -> list[Piece]:
    """Remove the whitespace of each text piece where it touches an :class:`IdsPiece` (a wrapper token), and drop
    text pieces left empty: ``"### Human: "`` + ``<Img>`` -> ``"### Human:"`` + ``<Img>``, as the official v0's slow
    tokenizer did around added tokens."""
    out: list[Piece] = []
    for i, p in enumerate(pieces):
        if isinstance(p, TextPiece):
            text = p.text
            if i > 0 and isinstance(pieces[i - 1], IdsPiece):
                text = text.lstrip()
            if i + 1 < len(pieces) and isinstance(pieces[i + 1], IdsPiece):
                text = text.rstrip()
            if text:
                out.append(TextPiece(text, p.continues))
        else:
            out.append(p)
    return out


def join_text(pieces: list[Piece]) -> list[Piece]:
    """Merge adjacent text pieces into one (they are then tokenized as one segment); a piece that ``continues`` the
    previous one stays apart (and the text after it joins it)."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, TextPiece) and not p.continues and out and isinstance(out[-1], TextPiece):
            out[-1] = TextPiece(out[-1].text + p.text, out[-1].continues)
        else:
            out.append(p)
    return out
