"""Registry errors. Each message names the thing at fault and, where useful, what would have been valid."""

from __future__ import annotations

__all__ = [
    "RegistryError",
    "DuplicateKeyError",
    "UnknownKeyError",
    "PluginLoadError",
    "PluginHookError",
    "MediaTypeError",
]


class RegistryError(Exception):
    """Base class of every registry error (the CLI prints its message as one line)."""


class DuplicateKeyError(RegistryError, ValueError):
    """Two plugins registered the same modality key or component id."""


class UnknownKeyError(RegistryError, KeyError):
    """A modality key or component id that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginLoadError(RegistryError):
    """A plugin failed to import or its hook raised; the other plugins still load."""


class PluginHookError(RegistryError):
    """A plugin implements a hook that does not exist (a misspelling) or with wrong arguments."""


class MediaTypeError(RegistryError, ValueError):
    """A file whose modality cannot be told from its name (unsupported or ambiguous)."""
