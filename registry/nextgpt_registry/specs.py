"""What a plugin registers: modality specs and component specs (pydantic, no torch).

A plugin names its classes as lazy ``"module:Class"`` strings; nothing here imports them. The core resolves a
string only when a request or a composition check needs the class.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ComponentChoice",
    "ComponentRole",
    "ComponentSpec",
    "ModalityPreset",
    "ModalitySpec",
    "Provider",
    "TARGET_PATTERN",
    "RESERVED_MODALITY_KEYS",
    "ROLES",
    "ToyWorldSpec",
]

#: ``package.module:Class`` (the form of a lazy component name).
TARGET_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_COMPONENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*(/[a-z0-9][a-z0-9_.\-]*)?$")

ComponentRole = Literal["encoder", "input_projector", "output_projector", "decoder"]
ROLES: tuple[str, ...] = ("encoder", "input_projector", "output_projector", "decoder")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_target(value: str) -> str:
    if not TARGET_PATTERN.match(value):
        raise ValueError(f"`target` must look like 'package.module:Class', got {value!r}")
    return value


class Provider(_Frozen):
    """Who registered an entry: the plugin (entry-point) name, its distribution and version."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def describe(self) -> str:
        """Human-readable ``plugin (distribution version)``."""
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version or '?'})"
        return self.plugin


class ComponentSpec(_Frozen):
    """One component a plugin offers under a namespaced id.

    Attributes:
        id: namespaced id, ``"<modality>/<name>"`` for modality-specific parts (``"image/sd-1.5"``) or a bare name
            for generic ones (``"linear"``).
        role: ``encoder``, ``input_projector``, ``output_projector`` or ``decoder``.
        target: the implementing class as a lazy ``"module:Class"`` string.
        license: licence of the code and, where weights are involved, of the weights it expects
            (``"Apache-2.0"``, ``"CC-BY-NC-4.0 (weights)"``).
        modality: the modality key it serves, or ``None`` for a generic component.
        description: one line for ``nextgpt plugins``.
    """

    id: str
    role: ComponentRole
    target: str
    license: str
    modality: str | None = None
    description: str = ""

    @field_validator("target")
    @classmethod
    def _target_ok(cls, value: str) -> str:
        return _check_target(value)

    @field_validator("id")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        if not _COMPONENT_ID_PATTERN.match(value):
            raise ValueError(f"component `id` must be lower-case 'name' or 'modality/name', got {value!r}")
        return value

    @field_validator("license")
    @classmethod
    def _license_ok(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("every component must carry its licence (`license` is empty)")
        return value


class ToyWorldSpec(_Frozen):
    """A plugin's part of the toy world.

    Attributes:
        modality: the modality key it draws (the plugin's own ``ModalitySpec.key``).
        target: the implementing class as a lazy ``"module:Class"`` string (a ``nextgpt_core.toy.ToyModality``).
        description: one line for ``nextgpt plugins``.
    """

    modality: str
    target: str
    description: str = ""

    @field_validator("target")
    @classmethod
    def _target_ok(cls, value: str) -> str:
        return _check_target(value)

    @field_validator("modality")
    @classmethod
    def _modality_ok(cls, value: str) -> str:
        if not _KEY_PATTERN.match(value):
            raise ValueError(f"`modality` must be a lower-case identifier, got {value!r}")
        return value


class ComponentChoice(_Frozen):
    """A component picked by id, with the options its config class accepts.

    ``fills`` is only meaningful for output projectors: the name of the decoder conditioning input the projector
    produces (``"prompt_embeds"``); ``None`` means the decoder's only input.
    """

    id: str
    options: dict[str, Any] = Field(default_factory=dict)
    fills: str | None = None


class ModalityPreset(_Frozen):
    """A plugin's component choices for one named preset (``"tiny"``, ``"full"``).

    A composition that says ``preset = "tiny"`` for a modality (or ``auto_modalities = "tiny"``) starts from these
    and overrides field by field.
    """

    encoder: ComponentChoice | None = None
    input_projector: ComponentChoice | None = None
    output_projectors: tuple[ComponentChoice, ...] = ()
    decoder: ComponentChoice | None = None
    num_signal_tokens: int | None = Field(default=None, ge=1)
    decode_options: dict[str, Any] = Field(default_factory=dict)


#: names a modality may not take, and why: the core uses them as keys beside the modality keys
RESERVED_MODALITY_KEYS: dict[str, str] = {
    "shared": "it names the one input projector that every modality shares (composition `input_projector`, "
              "checkpoint keys `input_projectors.shared.*`)",
}


class ModalitySpec(_Frozen):
    """Everything the core needs to know about one modality, registered by its plugin.

    Attributes:
        key: lower-case identifier, also the entry-point name by convention (``"image"``).
        description: one line for ``nextgpt plugins``.
        license: licence of the plugin's code.
        signal_token_format: how the i-th signal token is spelled, with ``{i}`` (``"[IMG{i}]"``); ``None`` for an
            input-only modality.
        num_signal_tokens: default length of a signal run (official: image 4, video 24, audio 8).
        wrapper_tokens: the ``(open, close)`` tokens around this modality's input embeddings (``("<Img>", "</Img>")``);
            ``None`` for an output-only modality.
        extensions: file suffixes this modality reads, lower case with the dot (``(".png", ".jpg")``).
        mime_types: MIME types it reads (used by servers).
        detect_by_extension: whether a file with one of ``extensions`` is taken as this modality when the user does
            not name one. An input-only depth map (also a PNG) sets ``False`` so ``.png`` stays an image.
        output_extension: suffix of files written for generated media (``".png"``), ``None`` if input-only.
        media_io: lazy ``"module:Class"`` of the class that reads and writes this modality's files
            (see ``nextgpt_core.interfaces.MediaIO``).
        presets: component choices per preset name; ``"tiny"`` is used by the built-in ``tiny`` composition.
    """

    key: str
    description: str = ""
    license: str
    signal_token_format: str | None = None
    num_signal_tokens: int = Field(default=0, ge=0)
    wrapper_tokens: tuple[str, str] | None = None
    extensions: tuple[str, ...] = ()
    mime_types: tuple[str, ...] = ()
    detect_by_extension: bool = True
    output_extension: str | None = None
    media_io: str
    presets: dict[str, ModalityPreset] = Field(default_factory=dict)

    @field_validator("key")
    @classmethod
    def _key_ok(cls, value: str) -> str:
        if not _KEY_PATTERN.match(value):
            raise ValueError(f"modality `key` must be a lower-case identifier, got {value!r}")
        if value in RESERVED_MODALITY_KEYS:
            raise ValueError(f"modality `key` {value!r} is reserved: {RESERVED_MODALITY_KEYS[value]}")
        return value

    @field_validator("media_io")
    @classmethod
    def _media_io_ok(cls, value: str) -> str:
        return _check_target(value)

    @field_validator("extensions")
    @classmethod
    def _extensions_ok(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ext in value:
            if not ext.startswith(".") or ext != ext.lower():
                raise ValueError(f"`extensions` must be lower-case suffixes with a dot, got {ext!r}")
        return value

    @model_validator(mode="after")
    def _signal_ok(self) -> "ModalitySpec":
        if self.signal_token_format is not None:
            if "{i}" not in self.signal_token_format:
                raise ValueError("`signal_token_format` must contain '{i}' (e.g. '[IMG{i}]')")
            if self.num_signal_tokens < 1:
                raise ValueError("a modality with `signal_token_format` needs `num_signal_tokens` >= 1")
        elif self.num_signal_tokens:
            raise ValueError("`num_signal_tokens` is set but `signal_token_format` is not")
        return self

    @property
    def can_generate(self) -> bool:
        """Whether the LLM can emit this modality (it has signal tokens)."""
        return self.signal_token_format is not None

    @property
    def can_read(self) -> bool:
        """Whether this modality can be an input (it has wrapper tokens)."""
        return self.wrapper_tokens is not None

    def signal_tokens(self, count: int | None = None) -> list[str]:
        """The spelled signal tokens, ``count`` of them (default ``num_signal_tokens``)."""
        if self.signal_token_format is None:
            return []
        n = self.num_signal_tokens if count is None else count
        return [self.signal_token_format.format(i=i) for i in range(n)]
