"""Conversations: turns of text and media parts of any registered modality, and the reply type.

Media generated in an assistant turn stay in the conversation; when the history is sent again they are encoded
as inputs (the official demo re-feeds its outputs the same way).

Example:
    >>> from nextgpt_core.conversation import Conversation, Text
    >>> conv = Conversation().user("Hello there")
    >>> conv.turns[0].role, conv.turns[0].parts
    ('user', [Text(text='Hello there')])
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Union

from .errors import ConversationError, MediaError

__all__ = ["Conversation", "Media", "Part", "Response", "Text", "Turn"]


@dataclass(frozen=True)
class Text:
    """A text part."""

    text: str


@dataclass(eq=False)
class Media:
    """A media part of one modality: a decoded object (``data``) and/or the file it came from (``path``).

    Build from a file with :meth:`from_path`; the modality is then taken from the suffix unless given (a depth
    map is also a PNG, so name it: ``Media.from_path("d.png", modality="depth")``).

    A reply's media part also says which decoder made it (``produced_by``, a component id such as
    ``"image/sd-1.5"`` or ``"image/retrieval"``) and what that decoder reported (``details``: a retrieval decoder
    names the gallery item and its score).
    """

    modality: str | None
    data: Any = None
    path: Path | None = None
    _digest: str | None = field(default=None, repr=False)
    produced_by: str | None = None
    details: dict[str, Any] | None = None

    def __repr__(self) -> str:
        data = self.data
        if data is None:
            desc = "None"
        elif hasattr(data, "shape"):
            desc = f"<{type(data).__name__} shape={tuple(data.shape)}>"
        elif hasattr(data, "size"):
            desc = f"<{type(data).__name__} size={data.size}>"
        else:
            desc = f"<{type(data).__name__}>"
        made = f", produced_by={self.produced_by!r}" if self.produced_by else ""
        return f"Media(modality={self.modality!r}, data={desc}, path={str(self.path) if self.path else None!r}{made})"

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], modality: str | None = None) -> "Media":
        """A media part for a file; raises :class:`MediaError` if the file does not exist."""
        p = Path(path)
        if not p.is_file():
            raise MediaError(f"media file not found: {str(path)!r}")
        return cls(modality=modality, path=p)

    def content_hash(self, to_bytes: Any = None) -> str:
        """SHA-256 of the file's bytes, or of ``to_bytes(data)`` for in-memory media (cached)."""
        if self._digest is None:
            digest = hashlib.sha256()
            if self.path is not None and self.data is None:
                with open(self.path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        digest.update(block)
            elif to_bytes is not None:
                digest.update(to_bytes(self.data))
            else:
                raise MediaError("cannot hash in-memory media without its modality's MediaIO")
            self._digest = digest.hexdigest()
        return self._digest


Part = Union[Text, Media]


@dataclass
class Turn:
    """One turn: ``role`` is ``"user"`` or ``"assistant"``; ``parts`` in order."""

    role: Literal["user", "assistant"]
    parts: list[Part]

    def __post_init__(self) -> None:
        if self.role not in ("user", "assistant"):
            raise ConversationError(f"turn role must be 'user' or 'assistant', got {self.role!r}")
        self.parts = [_part(p) for p in self.parts]
        if not self.parts:
            raise ConversationError(f"empty {self.role} turn")


def _part(value: Any) -> Part:
    if isinstance(value, (Text, Media)):
        return value
    if isinstance(value, str):
        return Text(value)
    raise ConversationError(f"a turn part must be text or Media, got {type(value).__name__}")


@dataclass
class Conversation:
    """An ordered list of turns. The last turn sent to :meth:`NextGPT.generate` must be a user turn."""

    turns: list[Turn] = field(default_factory=list)

    def user(self, *parts: Part | str) -> "Conversation":
        """Append a user turn (strings become :class:`Text`); returns ``self`` for chaining."""
        self.turns.append(Turn("user", list(parts)))
        return self

    def assistant(self, *parts: Part | str) -> "Conversation":
        """Append an assistant turn; returns ``self``."""
        self.turns.append(Turn("assistant", list(parts)))
        return self

    def add_response(self, response: "Response") -> "Conversation":
        """Append a reply as an assistant turn (its generated media become inputs of the next request)."""
        parts = [p for p in response.parts if not (isinstance(p, Text) and not p.text.strip())]
        self.turns.append(Turn("assistant", parts or [Text("")]))
        return self

    @classmethod
    def from_prompt(cls, prompt: str, media: Iterable[Media] = ()) -> "Conversation":
        """One user turn: the media first, then the prompt (the official single-turn layout)."""
        parts: list[Part] = [*media]
        if prompt:
            parts.append(Text(prompt))
        if not parts:
            raise ConversationError("empty request: give a prompt or at least one input")
        return cls([Turn("user", parts)])


@dataclass
class Response:
    """A reply: ordered parts (text between generated media), plus what happened on the way.

    Attributes:
        parts: ``Text`` and generated ``Media`` parts, in the order the LLM produced them.
        token_ids: the ids the LLM generated (signal tokens included).
        seed: the seed used (pass it back to reproduce the reply).
        notices: things the user should know (turns dropped for the context budget, a cancelled request, ...).
        cancelled: the request was cancelled between steps; runs not completed were dropped.
        prompt_tokens: the positions the prompt took in the LLM's input (text tokens and each media item's
            projected tokens), after the context fitting; ``None`` when not known.
    """

    parts: list[Part]
    token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    notices: list[str] = field(default_factory=list)
    cancelled: bool = False
    prompt_tokens: int | None = None

    @property
    def text(self) -> str:
        """All text parts joined with single spaces."""
        return " ".join(p.text for p in self.parts if isinstance(p, Text) and p.text).strip()

    @property
    def media(self) -> list[Media]:
        """The generated media parts, in order."""
        return [p for p in self.parts if isinstance(p, Media)]

    def save(self, directory: str | os.PathLike[str], registry: Any = None, *, overwrite: bool = True) -> list[Path]:
        """Write every media part with its modality's writer (``<modality>_<i><ext>``) and the text as
        ``reply.txt`` (and, when a decoder reported details, as retrieval does, ``sources.json``: which decoder made each
        file and how) into ``directory``, as a whole (written aside, then swapped in: a failure or a kill leaves no
        half-written folder); returns the paths written, in reply order, and sets each media part's ``path``.

        ``directory`` must be absent, empty, or an earlier output folder of nextgpt (replaced when ``overwrite``)
        holding only the files nextgpt wrote; anything else is refused
        (:class:`~nextgpt_core.folders.OutputFolderError`) and left as it was.
        """
        from nextgpt_registry import resolve_target

        from .folders import REPLIES, atomic_directory, write_marker
        from .plugins import get_registry

        registry = registry or get_registry()
        out = Path(directory)
        names: list[str] = []
        counts: dict[str, int] = {}
        with atomic_directory(out, REPLIES, overwrite=overwrite) as tmp:
            for part in self.media:
                assert part.modality is not None
                spec = registry.modality(part.modality)
                index = counts[part.modality] = counts.get(part.modality, -1) + 1
                written = resolve_target(spec.media_io)().write(part.data, tmp / f"{part.modality}_{index}{spec.output_extension or ''}")
                names.append(Path(written).relative_to(tmp).as_posix())
            (tmp / "reply.txt").write_text(self.text + "\n")
            names.append("reply.txt")
            if any(p.details for p in self.media):  # a decoder reported how it made an item (retrieval): say for each
                sources = [{"file": name, "modality": p.modality, "produced_by": p.produced_by, "details": p.details}
                           for p, name in zip(self.media, names)]
                (tmp / "sources.json").write_text(json.dumps(sources, indent=1, default=str) + "\n")
                names.append("sources.json")
            write_marker(tmp, "replies", names)
        for part, name in zip(self.media, names):
            part.path = out / name
        return [out / name for name in names]
