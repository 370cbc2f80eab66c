"""The registry: discovers plugins through entry points and collects what they register.

Nothing here imports torch: plugins name their classes as ``"module:Class"`` strings, resolved by
:func:`resolve_target` only when a caller needs the class.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy
from pydantic import ValidationError

from . import hookspecs
from .errors import (
    DuplicateKeyError,
    MediaTypeError,
    PluginHookError,
    PluginLoadError,
    RegistryError,
    UnknownKeyError,
)
from .specs import TARGET_PATTERN, ComponentSpec, ModalitySpec, Provider, ToyWorldSpec

__all__ = ["Registry", "PluginFailure", "resolve_target", "LOAD_PLUGINS_ENV", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
#: Comma-separated allow-list of plugin (entry-point or distribution) names; empty loads none; unset loads all.
LOAD_PLUGINS_ENV = "NEXTGPT_LOAD_PLUGINS"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: its name, distribution and the one-line reason."""

    plugin: str
    distribution: str | None
    error: str

    def describe(self) -> str:
        """One line: ``plugin 'x' (dist y) failed: reason``."""
        dist = f" (distribution {self.distribution})" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist} failed to load: {self.error}"


@dataclass
class _Loaded:
    name: str
    module: Any
    provider: Provider


@dataclass
class Registry:
    """Modalities and components registered by plugins.

    Build one with :meth:`load` (entry points plus default plugins) or :meth:`from_plugins` (explicit plugin
    objects, for tests). Lookups raise :class:`UnknownKeyError` listing the known keys.

    Example:
        >>> from nextgpt_registry import Registry
        >>> reg = Registry.from_plugins([])
        >>> reg.modality_keys()
        []
    """

    modalities: dict[str, ModalitySpec] = field(default_factory=dict)
    components: dict[str, ComponentSpec] = field(default_factory=dict)
    toy_worlds: dict[str, ToyWorldSpec] = field(default_factory=dict)
    providers: dict[tuple[str, str], Provider] = field(default_factory=dict)
    plugins: list[Provider] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ building
    @classmethod
    def load(
        cls,
        default_plugins: Iterable[str] = (),
        *,
        allow: Iterable[str] | None = None,
        group: str = ENTRY_POINT_GROUP,
    ) -> "Registry":
        """Load ``default_plugins`` (module names, always loaded) and the entry points of ``group``.

        Args:
            default_plugins: importable module names registered before any entry point (the core's built-ins).
            allow: names of plugins to load (entry-point name or distribution name). ``None`` reads
                ``NEXTGPT_LOAD_PLUGINS`` (unset: load all; empty: load none).
            group: entry-point group, ``"nextgpt"``.

        Raises:
            PluginHookError: a plugin implements an unknown (misspelled) hook.
            DuplicateKeyError: two plugins registered the same key.
        """
        allowed = _allow_list(allow)
        loaded: list[_Loaded] = []
        reg = cls()
        for module_name in default_plugins:
            module = importlib.import_module(module_name)
            loaded.append(_Loaded(module_name, module, _provider_of_module(module_name)))
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if allowed is not None and ep.name not in allowed and (dist is None or dist not in allowed):
                continue
            seen.update({ep.name, dist or ""})
            provider = Provider(plugin=ep.name, distribution=dist, version=version)
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                reg.failures.append(PluginFailure(ep.name, dist, f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
                continue
            loaded.append(_Loaded(ep.name, module, provider))
        if allowed is not None:
            reg.not_found = sorted(name for name in allowed if name not in seen)
        reg._register_all(loaded)
        return reg

    @classmethod
    def from_plugins(cls, plugins: Iterable[Any], names: Iterable[str] | None = None) -> "Registry":
        """Build a registry from plugin objects or modules (no entry points), e.g. in tests.

        Args:
            plugins: objects or modules with ``@hookimpl`` functions.
            names: plugin names, one per plugin (default: the object's ``__name__`` or class name).
        """
        plugins = list(plugins)
        names = list(names) if names is not None else [_name_of(p) for p in plugins]
        reg = cls()
        reg._register_all([_Loaded(n, p, Provider(plugin=n)) for n, p in zip(names, plugins)])
        return reg

    def _register_all(self, loaded: list[_Loaded]) -> None:
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        for item in loaded:
            try:
                pm.register(item.module, name=item.name)
            except pluggy.PluginValidationError as exc:
                raise PluginHookError(f"plugin {item.provider.describe()}: {exc}") from exc
            except ValueError as exc:  # already registered under another name
                raise PluginLoadError(f"plugin {item.provider.describe()}: {exc}") from exc
            _check_hook_names(item, pm)
            self.plugins.append(item.provider)
        by_name = {item.name: item for item in loaded}
        for hook_name, kind in (
            ("nextgpt_register_modalities", "modality"),
            ("nextgpt_register_components", "component"),
            ("nextgpt_register_toy_world", "toy_world"),
        ):
            caller = getattr(pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # registration order (pluggy would call them LIFO)
                item = by_name[impl.plugin_name]
                register = self._register_callback(kind, item.provider)
                try:
                    impl.function(*[register for _ in impl.argnames])
                except RegistryError:
                    raise
                except Exception as exc:
                    message = " ".join(str(exc).split())  # one line, whatever the exception printed
                    self.failures.append(
                        PluginFailure(item.name, item.provider.distribution, f"{hook_name} raised {type(exc).__name__}: {message}")
                    )

    def _register_callback(self, kind: str, provider: Provider) -> Callable[[Any], None]:
        expected, table, key_of = {
            "modality": (ModalitySpec, self.modalities, lambda s: s.key),
            "component": (ComponentSpec, self.components, lambda s: s.id),
            "toy_world": (ToyWorldSpec, self.toy_worlds, lambda s: s.modality),
        }[kind]

        def register(spec: Any) -> None:
            if isinstance(spec, dict):
                try:
                    spec = expected.model_validate(spec)
                except ValidationError as exc:
                    raise PluginLoadError(f"plugin {provider.describe()} registered an invalid {kind}: {exc}") from exc
            if not isinstance(spec, expected):
                raise PluginLoadError(
                    f"plugin {provider.describe()} passed {type(spec).__name__} to the {kind} register callback; "
                    f"expected {expected.__name__}"
                )
            key = key_of(spec)
            if key in table:
                other = self.providers[(kind, key)]
                raise DuplicateKeyError(
                    f"{kind} {key!r} is registered twice: by {other.describe()} and by {provider.describe()}"
                )
            table[key] = spec
            self.providers[(kind, key)] = provider

        return register

    # ------------------------------------------------------------------ lookups
    def modality(self, key: str) -> ModalitySpec:
        """The spec of modality ``key``; raises :class:`UnknownKeyError` listing the registered keys."""
        try:
            return self.modalities[key]
        except KeyError:
            raise UnknownKeyError(
                f"unknown modality {key!r}; registered: {', '.join(sorted(self.modalities)) or '(none)'}"
            ) from None

    def component(self, component_id: str, role: str | None = None) -> ComponentSpec:
        """The spec of component ``component_id`` (optionally checking its role)."""
        spec = self.components.get(component_id)
        if spec is None or (role is not None and spec.role != role):
            known = sorted(k for k, s in self.components.items() if role is None or s.role == role)
            what = f"{role.replace('_', ' ')} " if role else "component "
            raise UnknownKeyError(f"unknown {what}{component_id!r}; registered: {', '.join(known) or '(none)'}")
        return spec

    def toy_world(self, key: str) -> ToyWorldSpec:
        """The toy-world part registered for modality ``key``; :class:`UnknownKeyError` lists those registered."""
        try:
            return self.toy_worlds[key]
        except KeyError:
            raise UnknownKeyError(
                f"no toy-world part for modality {key!r}; registered: {', '.join(sorted(self.toy_worlds)) or '(none)'}"
            ) from None

    def modality_keys(self) -> list[str]:
        """Registered modality keys, in registration order."""
        return list(self.modalities)

    def provider(self, kind: str, key: str) -> Provider:
        """Who registered ``key`` (``kind`` is ``"modality"``, ``"component"`` or ``"toy_world"``)."""
        return self.providers[(kind, key)]

    def modality_for_path(self, path: str | os.PathLike[str]) -> str:
        """The modality a file belongs to, from its suffix.

        Raises:
            MediaTypeError: no modality reads this suffix, or several claim it (name one with ``MODALITY=PATH``).
        """
        name = Path(path).name.lower()
        claims = [
            spec.key
            for spec in self.modalities.values()
            if spec.detect_by_extension and any(name.endswith(ext) for ext in spec.extensions)
        ]
        if len(claims) == 1:
            return claims[0]
        if not claims:
            explicit = [s.key for s in self.modalities.values() if any(name.endswith(e) for e in s.extensions)]
            if explicit:
                raise MediaTypeError(
                    f"{str(path)!r} could be {', '.join(explicit)}; name the modality, e.g. {explicit[0]}={path}"
                )
            supported = sorted({e for s in self.modalities.values() for e in s.extensions})
            raise MediaTypeError(
                f"unsupported media type {Path(path).suffix or '(no suffix)'!r} for {str(path)!r}; "
                f"installed modalities read: {', '.join(supported) or '(none: no modality plugin installed)'}"
            )
        raise MediaTypeError(
            f"{str(path)!r} is claimed by several modalities ({', '.join(claims)}); name one, e.g. {claims[0]}={path}"
        )


def resolve_target(target: str) -> Any:
    """Import the object a ``"module:Class"`` string names.

    Raises:
        RegistryError: the string is malformed, the module does not import, or it has no such attribute.
    """
    if not TARGET_PATTERN.match(target):
        raise RegistryError(f"{target!r} is not a 'module:Class' name")
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RegistryError(f"{module_name!r} has no attribute {attr_path!r} (named by {target!r})") from exc
    return obj


def _allow_list(allow: Iterable[str] | None) -> set[str] | None:
    if allow is not None:
        return {a.strip() for a in allow if a.strip()}
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {a.strip() for a in raw.split(",") if a.strip()}


def _check_hook_names(item: _Loaded, pm: pluggy.PluginManager) -> None:
    """Raise if the plugin has an ``nextgpt_*`` function or a ``@hookimpl`` that no hookspec defines."""
    known = {name for name in dir(hookspecs) if name.startswith("nextgpt_")}
    module = item.module
    for name in dir(module):
        attr = getattr(module, name, None)
        marked = callable(attr) and hasattr(attr, f"{hookspecs.PROJECT_NAME}_impl")
        if (marked or (name.startswith("nextgpt_") and callable(attr))) and name not in known:
            raise PluginHookError(
                f"plugin {item.provider.describe()} implements unknown hook {name!r}; "
                f"known hooks: {', '.join(sorted(known))}"
            )


def _name_of(plugin: Any) -> str:
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _provider_of_module(module_name: str) -> Provider:
    # by naming convention (nextgpt_core -> nextgpt-core); scanning every installed distribution costs ~0.1 s
    top = module_name.split(".")[0]
    for dist_name in dict.fromkeys((top.replace("_", "-"), top)):
        try:
            return Provider(plugin=module_name, distribution=dist_name, version=metadata.version(dist_name))
        except metadata.PackageNotFoundError:
            continue
    return Provider(plugin=module_name)
