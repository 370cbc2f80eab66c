"""The thermal and IMU plugins' parts join the toy world's encoder phase: their branches (declared by the plugins,
not the core) are trained into the joint space and written under the official key names, and the plugins' toy
encoders load them strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nextgpt_core.imagebind import ImageBindCheckpoint
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.toy.encoders import EncoderSettings, train_encoders
from nextgpt_core.toy.world import ToyWorld
from nextgpt_imu.encoders import ImageBindIMUEncoder
from nextgpt_imu.toy import IMUToyWorld
from nextgpt_thermal.encoders import ImageBindThermalEncoder
from nextgpt_thermal.toy import ThermalToyWorld
from nextgpt_registry import Registry


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=["thermal", "imu"])


def test_encoder_phase_trains_plugin_declared_branches(tmp_path: Path, real_registry) -> None:
    world = ToyWorld([ThermalToyWorld(), IMUToyWorld()])
    out = tmp_path / "imagebind.safetensors"
    facts = train_encoders(world, out, registry=real_registry, scale="mini",
                           settings=EncoderSettings(steps=2, batch_size=6, renders=1, text_dim=32, text_layers=1))
    assert facts["branches"] == ["imu", "thermal"]
    assert set(facts["retrieval"]) == {"thermal", "imu"}
    keys = set(load_file(str(out)))
    assert {k.split(".")[1] for k in keys} == {"thermal", "imu"}
    ImageBindCheckpoint.clear_cache()
    thermal = ImageBindThermalEncoder.from_options({"size": "toy", "image_size": 32, "checkpoint": str(out)})
    imu = ImageBindIMUEncoder.from_options({"size": "toy", "sample_rate": 40.0, "checkpoint": str(out)})
    saved = load_file(str(out))
    for encoder in (thermal, imu):
        for k, v in encoder.state_dict().items():
            torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    ImageBindCheckpoint.clear_cache()
