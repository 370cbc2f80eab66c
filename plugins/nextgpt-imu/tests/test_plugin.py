"""The imu plugin's registration: the tiny preset resolves against the core, plugin.py imports no torch,
`nextgpt plugins` lists it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nextgpt_core import builtins
from nextgpt_core.composition import resolve_composition
from nextgpt_registry import Registry
from nextgpt_imu import plugin


def test_tiny_preset_resolves_as_an_input_only_modality() -> None:
    registry = Registry.from_plugins([builtins, plugin], names=["nextgpt_core.builtins", "imu"])
    composition = {"name": "check", "llm": {"tiny": {}}, "auto_modalities": "tiny"}
    imu = resolve_composition(composition, registry).modalities["imu"]
    assert imu.can_read and not imu.can_generate
    assert imu.wrapper_tokens == ("<Imu>", "</Imu>")
    assert imu.input_projector.options["in_dim"] == 32 and imu.input_projector.options["out_dim"] == 64
    assert "imu" in registry.toy_worlds


def test_plugin_module_imports_no_torch() -> None:
    code = "import sys, nextgpt_imu.plugin; assert 'torch' not in sys.modules, 'plugin.py imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nextgpt_plugins_lists_it() -> None:
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "imu"}
    out = subprocess.run([sys.executable, "-m", "nextgpt_core.cli", "plugins", "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    listing = json.loads(out)
    assert [m["key"] for m in listing["modalities"]] == ["imu"] and not listing["problems"]
    assert any(c["id"] == "imu/imagebind" and "CC-BY-NC-SA-4.0" in c["license"] for c in listing["components"])
