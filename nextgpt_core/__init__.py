"""nextgpt: an open, plugin-based any-to-any multimodal LLM (the NExT-GPT method) as a platform.

Importing this package is cheap (no torch, no pydantic); every name below loads on first use.

Example:
    >>> import nextgpt_core
    >>> sorted(nextgpt_core.builtin_compositions())
    ['nextgpt-v0', 'tiny', 'toy']
"""

from __future__ import annotations

from typing import Any

from .errors import (
    CheckpointError,
    CompositionError,
    ConditioningError,
    ConfigError,
    ContextLengthError,
    ConversationError,
    MediaError,
    NextGPTError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"

_LAZY = {
    "ComponentSpec": ("nextgpt_registry", "ComponentSpec"),
    "ModalityPreset": ("nextgpt_registry", "ModalityPreset"),
    "ModalitySpec": ("nextgpt_registry", "ModalitySpec"),
    "hookimpl": ("nextgpt_registry", "hookimpl"),
    "Composition": ("nextgpt_core.composition", "Composition"),
    "builtin_compositions": ("nextgpt_core.composition", "builtin_compositions"),
    "load_composition": ("nextgpt_core.composition", "load_composition"),
    "NextGPT": ("nextgpt_core.model", "NextGPT"),
    "Conversation": ("nextgpt_core.conversation", "Conversation"),
    "Media": ("nextgpt_core.conversation", "Media"),
    "Text": ("nextgpt_core.conversation", "Text"),
    "Response": ("nextgpt_core.conversation", "Response"),
    "Encoder": ("nextgpt_core.interfaces", "Encoder"),
    "InputProjector": ("nextgpt_core.interfaces", "InputProjector"),
    "OutputProjector": ("nextgpt_core.interfaces", "OutputProjector"),
    "Decoder": ("nextgpt_core.interfaces", "Decoder"),
    "ConditioningInput": ("nextgpt_core.interfaces", "ConditioningInput"),
    "MediaIO": ("nextgpt_core.interfaces", "MediaIO"),
    "resolve_composition": ("nextgpt_core.composition", "resolve_composition"),
    "get_registry": ("nextgpt_core.plugins", "get_registry"),
}

__all__ = [
    "CheckpointError",
    "CompositionError",
    "ConditioningError",
    "ConfigError",
    "ContextLengthError",
    "ConversationError",
    "MediaError",
    "NextGPTError",
    "WeightsNotFoundError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nextgpt_core' has no attribute {name!r}")
