"""The hooks a nextgpt plugin can implement. Project name and entry-point group: ``nextgpt``.

A plugin is a module (named by an entry point in the ``nextgpt`` group) with functions decorated by
``@hookimpl``. Each registration hook receives a ``register`` callback and returns nothing.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "nextgpt"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def nextgpt_register_modalities(register):  # type: ignore[no-untyped-def]
    """Register modalities. Called once when the registry loads.

    :param register: ``register(spec: ModalitySpec)``. A key already registered by another plugin raises
        ``DuplicateKeyError`` naming both plugins.
    """


@hookspec
def nextgpt_register_components(register):  # type: ignore[no-untyped-def]
    """Register components (encoders, projectors, decoders) under namespaced ids. Called once at load.

    :param register: ``register(spec: ComponentSpec)``. An id already registered raises ``DuplicateKeyError``.
    """


@hookspec
def nextgpt_register_toy_world(register):  # type: ignore[no-untyped-def]
    """Register the plugin's part of the toy world (``nextgpt_core.toy``): how its modality's items are drawn,
    captioned, read back and how its frozen encoder and decoder are trained. Called once at load.

    :param register: ``register(spec: ToyWorldSpec)``; one part per modality. A modality that already has a part
        raises ``DuplicateKeyError``.
    """
