"""The process-wide registry as the core sees it: built-in plugins plus installed entry points."""

from __future__ import annotations

import threading

from nextgpt_registry import Registry

__all__ = ["DEFAULT_PLUGINS", "get_registry", "reset_registry"]

#: Modules always registered, whatever ``NEXTGPT_LOAD_PLUGINS`` says (the core's generic components).
DEFAULT_PLUGINS: tuple[str, ...] = ("nextgpt_core.builtins",)

_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """Load the registry once (lazily) and return it. Honours ``NEXTGPT_LOAD_PLUGINS`` at first call."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry.load(DEFAULT_PLUGINS)
        return _registry


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after installing a plugin in a running process)."""
    global _registry
    with _lock:
        _registry = None
