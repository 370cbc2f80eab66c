"""The thermal plugin's registration: the tiny preset resolves against the core, plugin.py imports no torch,
`nextgpt plugins` lists it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nextgpt_core import builtins
from nextgpt_core.composition import resolve_composition
from nextgpt_registry import Registry
from nextgpt_thermal import plugin


def test_tiny_preset_resolves_as_an_input_only_modality() -> None:
    registry = Registry.from_plugins([builtins, plugin], names=["nextgpt_core.builtins", "thermal"])
    composition = {"name": "check", "llm": {"tiny": {}}, "auto_modalities": "tiny"}
    thermal = resolve_composition(composition, registry).modalities["thermal"]
    assert thermal.can_read and not thermal.can_generate
    assert thermal.wrapper_tokens == ("<Thm>", "</Thm>")
    assert thermal.input_projector.options["in_dim"] == 32 and thermal.input_projector.options["out_dim"] == 64
    assert "thermal" in registry.toy_worlds


def test_plugin_module_imports_no_torch() -> None:
    code = "import sys, nextgpt_thermal.plugin; assert 'torch' not in sys.modules, 'plugin.py imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nextgpt_plugins_lists_it() -> None:
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "thermal"}
    out = subprocess.run([sys.executable, "-m", "nextgpt_core.cli", "plugins", "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    listing = json.loads(out)
    assert [m["key"] for m in listing["modalities"]] == ["thermal"] and not listing["problems"]
    assert any(c["id"] == "thermal/imagebind" and "CC-BY-NC-SA-4.0" in c["license"] for c in listing["components"])
