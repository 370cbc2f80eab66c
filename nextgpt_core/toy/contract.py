"""The contract a modality plugin implements to join the toy world: :class:`ToyModality`.

The toy world is a synthetic, compositional world (shapes, colours, motions, tones, depth) in which every item has
exact attributes. The core's recipe (:mod:`nextgpt_core.toy.recipe`) names no modality: it asks each installed
plugin for its part through the ``nextgpt_register_toy_world`` hook and composes whatever is installed. A part
says, for its modality:

- **what exists**: :attr:`ToyModality.axes` (attribute name -> values) and :meth:`combinations` (every item kind,
  as an attribute dict); :meth:`caption` writes the canonical caption of one, :meth:`held_out` marks the
  combinations that no training phase may see;
- **how it looks or sounds**: :meth:`render` draws one item (the plugin's in-memory media type, the one its
  ``MediaIO`` writes), varied by a random generator, never changing the caption;
- **how to check it**: :meth:`read_back` recovers the attributes of a media item with plain signal processing (no
  trained network), so generated media can be scored;
- **how people ask for it**: request phrasings (describe, generate, edit, convert) with ``{placeholders}``;
- **how its frozen networks are trained**: :meth:`encoder_recipe` (which ImageBind branch and preprocessing) and
  :meth:`train_decoder` (text -> media, written as the folder its decoder class loads).

Attribute dicts are plain ``dict[str, str]``; axis names that several plugins share (``shape``, ``colour``,
``background``, ``position``, ``size``) mean the same thing everywhere, which is what lets the core build
conversions between modalities ("make this picture move left") without any plugin importing another.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

__all__ = [
    "Attributes",
    "DecoderTraining",
    "EncoderRecipe",
    "ToyModality",
    "attributes_key",
]

#: one item's attributes, ``{"shape": "circle", "colour": "red", ...}``
Attributes = Mapping[str, str]


def attributes_key(attrs: Attributes) -> tuple[tuple[str, str], ...]:
    """A hashable, order-independent key of an attribute dict."""
    return tuple(sorted(attrs.items()))


@dataclass(frozen=True)
class EncoderRecipe:
    """How the toy world trains the frozen encoder of a modality (an ImageBind branch).

    Attributes:
        encoder: the component id of the modality's encoder (``"image/imagebind"``).
        branch: the ImageBind branch the modality's encoder uses (``"vision"``, ``"audio"``, ``"depth"``).
            Modalities naming the same branch train one shared branch (image and video share ``vision``).
            ``None``: the encoder is not an ImageBind branch and is used as built (not trained by the recipe).
        encoder_options: the options the toy composition gives the plugin's encoder (its size, preprocessing
            geometry); the recipe builds the encoder with them and trains its branch.
    """

    encoder: str
    branch: str | None
    encoder_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class DecoderTraining:
    """What :meth:`ToyModality.train_decoder` gets.

    Attributes:
        items: training items ``[(attributes, caption, media)]`` (no held-out combination among them).
        out_dir: the folder to write (the decoder class's loadable layout, e.g. a diffusers pipeline folder).
        scale: ``"full"`` (the shipped world) or ``"mini"`` (the seconds-long run the tests make): the part picks
            its model sizes and step counts for it.
        seed: seeds init, data order and noise.
        progress: ``progress(step, total, loss)`` called after every step (the recipe draws the bar).
        log: ``log(line)`` writes one line to the phase's log file.
    """

    items: Sequence[tuple[Attributes, str, Any]]
    out_dir: Path
    scale: str
    seed: int
    progress: Callable[[int, int, float], None]
    log: Callable[[str], None]


class ToyModality(ABC):
    """A modality plugin's part of the toy world (see the module docstring).

    Subclasses set :attr:`key`, :attr:`noun`, :attr:`axes` and implement the abstract methods. They are built
    with no arguments from the ``target`` the plugin registers (``ToyWorldSpec``).
    """

    #: the modality key (the plugin's ``ModalitySpec.key``)
    key: ClassVar[str]
    #: what a person calls one item ("picture", "video", "sound", "depth map")
    noun: ClassVar[str]
    #: attribute name -> its values, in a fixed order
    axes: ClassVar[dict[str, tuple[str, ...]]]
    #: whether the modality can be generated (has a decoder); input-only parts set False
    can_generate: ClassVar[bool] = True
    #: how a person asks to see one (``{caption}``); several phrasings, the last ones held out of training
    generate_requests: ClassVar[tuple[str, ...]] = ()
    #: how a person asks about one they give (no placeholder); the last ones held out of training
    describe_requests: ClassVar[tuple[str, ...]] = ()
    #: how the assistant answers a describe request (``{caption}``)
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.",)
    #: how the assistant presents a generated item (``{caption}``)
    generate_answers: ClassVar[tuple[str, ...]] = ("Here is {caption}.",)
    #: edit requests per axis (``{value}``), e.g. ``{"colour": ("now make it {value}", ...)}``
    edit_requests: ClassVar[dict[str, tuple[str, ...]]] = {}

    # ------------------------------------------------------------------ what exists
    @abstractmethod
    def combinations(self) -> list[dict[str, str]]:
        """Every item kind of the modality, each an attribute dict (one caption each), in a fixed order."""

    @abstractmethod
    def caption(self, attrs: Attributes) -> str:
        """The canonical caption of ``attrs`` (lower case, no final full stop)."""

    @abstractmethod
    def held_out(self, attrs: Attributes) -> bool:
        """Whether ``attrs`` belongs to the held-out combinations that no training phase sees."""

    def parse(self, text: str) -> dict[str, str] | None:
        """The attributes of the first caption found in ``text`` (the longest at that place), else ``None``.

        A reply names every attribute right when it contains the exact caption; this default matches against
        every caption of :meth:`combinations`.
        """
        found = _caption_index(self).search(text.lower())
        if found is None:
            return None
        return dict(_caption_table(self)[found.group(0)])

    def editable(self, attrs: Attributes) -> bool:
        """Whether an edit request (:attr:`edit_requests`) applies to ``attrs`` (e.g. single-object scenes)."""
        return bool(self.edit_requests)

    def convert_from(self, source: Attributes, rng: np.random.Generator) -> tuple[dict[str, str], dict[str, str]] | None:
        """A conversion of an item of another modality into this one: ``(target attributes, request fields)``.

        The target keeps every axis it shares with ``source`` and draws the others; the request fields fill
        :attr:`convert_requests` (``{noun}`` is the source's noun, added by the caller). ``None`` when nothing is
        shared or no conversion is defined.
        """
        return None

    #: how a person asks to convert an item they give into this modality; placeholders are the fields that
    #: :meth:`convert_from` returns plus ``{noun}`` (the source's noun); the last ones held out of training
    convert_requests: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ media
    @abstractmethod
    def render(self, attrs: Attributes, rng: np.random.Generator) -> Any:
        """One item with ``attrs``, as the plugin's in-memory media type; ``rng`` varies it (position jitter,
        detuning, ...) without changing any attribute."""

    @abstractmethod
    def read_back(self, media: Any) -> dict[str, str]:
        """The attributes of ``media`` measured by signal processing alone (no trained network). Axes that
        cannot be measured are left out, so a comparison counts them wrong."""

    def preview(self, media: Any) -> np.ndarray:
        """A small picture of ``media`` for reports: uint8 ``(H, W, 3)`` (a picture itself, a strip of video
        frames, a spectrogram). The default draws nothing recognisable: a grey tile."""
        return np.full((32, 32, 3), 128, np.uint8)

    # ------------------------------------------------------------------ frozen networks
    @abstractmethod
    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        """Which ImageBind branch encodes this modality in the toy world, and the encoder options
        (``scale``: ``"full"`` or ``"mini"``)."""

    def decoder_choice(self, folder: str) -> dict[str, Any]:
        """The composition's ``decoder`` choice for the trained decoder in ``folder``:
        ``{"id": ..., "options": {...}}``."""
        raise NotImplementedError(f"{type(self).__name__} has no decoder")

    def decode_options(self, scale: str) -> dict[str, Any]:
        """The composition's per-request decode options (steps, size, ...) for the toy decoder."""
        return {}

    #: training renderings per training combination for :meth:`train_decoder`, per scale
    decoder_renders: ClassVar[dict[str, int]] = {"full": 8, "mini": 1}

    def train_decoder(self, job: DecoderTraining) -> dict[str, Any]:
        """Train this modality's decoder text -> media on ``job.items`` and write it to ``job.out_dir`` in the
        layout its decoder class loads. Returns facts for the manifest (losses, parameter counts)."""
        raise NotImplementedError(f"{type(self).__name__} has no decoder")


# ---------------------------------------------------------------------------------------------- caption lookup
_TABLES: dict[type, tuple[dict[str, tuple[tuple[str, str], ...]], re.Pattern[str]]] = {}


def _caption_table(part: ToyModality) -> dict[str, tuple[tuple[str, str], ...]]:
    return _tables(part)[0]


def _caption_index(part: ToyModality) -> re.Pattern[str]:
    return _tables(part)[1]


def _tables(part: ToyModality) -> tuple[dict[str, tuple[tuple[str, str], ...]], re.Pattern[str]]:
    cls = type(part)
    if cls not in _TABLES:
        table = {part.caption(c).lower(): tuple(c.items()) for c in part.combinations()}
        words = sorted(table, key=len, reverse=True)  # longest first: "a red circle left of ..." before "a red circle"
        pattern = re.compile(r"(?<![a-z])(?:" + "|".join(re.escape(w) for w in words) + r")(?![a-z])")
        _TABLES[cls] = (table, pattern)
    return _TABLES[cls]
