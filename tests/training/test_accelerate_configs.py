"""The example accelerate configs for GPUs (docs/accelerate/) load with accelerate's own config reader, say they
were not run here, and point at files that exist. (Running them needs GPUs; the CPU multi-process path is tested in
test_multiprocess.py and test_cli_training.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")])
def test_config_loads_and_is_marked_not_run(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "docs" / "accelerate" / f"{name}.yaml"
    assert path.read_text().startswith("# NOT RUN HERE")
    config = load_config_from_file(str(path))
    assert config.distributed_type.name == kind and config.num_processes == 8 and not config.use_cpu
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_use_orig_params"] is True  # frozen and trainable parameters share units
    if kind == "DEEPSPEED":
        ds = json.loads((ROOT / config.deepspeed_config["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == 2 and ds["train_micro_batch_size_per_gpu"] >= 1
