"""The documented examples are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    ["nextgpt_core", "nextgpt_core.model", "nextgpt_core.conversation", "nextgpt_registry.manager"],
)
def test_doctests(module, registry):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no doctest"
    assert result.failed == 0
