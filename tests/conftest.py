"""Shared fixtures. The suite controls which plugins load: NEXTGPT_LOAD_PLUGINS=fake (the packaged fake plugin,
installed by `make test` into build/test-plugins, which is on PYTHONPATH only for the tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_PLUGINS = ROOT / "build" / "test-plugins"

os.environ["NEXTGPT_LOAD_PLUGINS"] = "fake"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if TEST_PLUGINS.is_dir() and str(TEST_PLUGINS) not in sys.path:
    sys.path.insert(0, str(TEST_PLUGINS))


def pytest_sessionstart(session: pytest.Session) -> None:
    import importlib.metadata as md

    if not any(ep.name == "fake" for ep in md.entry_points(group="nextgpt")):
        raise pytest.UsageError(
            "the fake test plugin is not installed: run `make test` (it installs tests/fake_plugin into build/test-plugins)"
        )


@pytest.fixture(scope="session")
def registry():
    from nextgpt_core.plugins import get_registry, reset_registry

    reset_registry()
    reg = get_registry()
    assert "fake_image" in reg.modalities, "the fake plugin did not load"
    return reg


@pytest.fixture(scope="session")
def tiny_model(registry):
    """The `tiny` composition with the fake plugin's three modalities (built once per session)."""
    from nextgpt_core import NextGPT

    return NextGPT.from_composition("tiny", registry=registry)


@pytest.fixture()
def fake_files(tmp_path):
    """A .fimg and a .faud file written by the fake plugin's own writers."""
    import numpy as np
    from nextgpt_fake.media import FakeAudioIO, FakeImageIO

    image = FakeImageIO().write(np.arange(64, dtype=np.float32).reshape(8, 8) / 64, tmp_path / "pic.fimg")
    other = FakeImageIO().write(np.ones((8, 8), dtype=np.float32), tmp_path / "other.fimg")
    audio = FakeAudioIO().write(np.sin(np.arange(32, dtype=np.float32)), tmp_path / "tone.faud")
    return {"image": image, "other": other, "audio": audio}


@pytest.fixture(scope="session")
def reference_states():
    """``f(model, conversation, reply, budget) -> (prompt_len, states)``: last-layer states of one plain forward
    over prompt + reply, the reference the recorded signal states must equal."""
    import torch

    def compute(model, conversation, reply, budget):
        with torch.no_grad():
            embeds, _ = model.prepare_inputs(conversation, budget)
            ids = torch.tensor(reply.token_ids)
            full = torch.cat([embeds, model.llm.get_input_embeddings()(ids)[None]], dim=1)
            return embeds.shape[1], model.llm(inputs_embeds=full, output_hidden_states=True).hidden_states[-1][0]

    return compute
