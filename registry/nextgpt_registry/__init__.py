"""nextgpt's torch-free plugin registry.

A plugin implements the hooks in :mod:`nextgpt_registry.hookspecs` with :data:`hookimpl` and registers
:class:`ModalitySpec` and :class:`ComponentSpec` objects; :class:`Registry` discovers plugins through the
``nextgpt`` entry-point group. Importing this package never imports torch.
"""

from .errors import (
    DuplicateKeyError,
    MediaTypeError,
    PluginHookError,
    PluginLoadError,
    RegistryError,
    UnknownKeyError,
)
from .hookspecs import PROJECT_NAME, hookimpl, hookspec
from .manager import ENTRY_POINT_GROUP, LOAD_PLUGINS_ENV, PluginFailure, Registry, resolve_target
from .specs import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, Provider, ToyWorldSpec

__version__ = "0.1.0"

__all__ = [
    "ComponentChoice",
    "ComponentSpec",
    "DuplicateKeyError",
    "ENTRY_POINT_GROUP",
    "LOAD_PLUGINS_ENV",
    "MediaTypeError",
    "ModalityPreset",
    "ModalitySpec",
    "PROJECT_NAME",
    "PluginFailure",
    "PluginHookError",
    "PluginLoadError",
    "Provider",
    "Registry",
    "RegistryError",
    "ToyWorldSpec",
    "UnknownKeyError",
    "hookimpl",
    "hookspec",
    "resolve_target",
]
