"""The accelerate configs in docs/accelerate/ load with accelerate's own config reader and point at files that exist;
each GPU config says it was not run here and differs from its CPU twin (run by tests/training/test_engines.py)
only where GPUs need it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "docs" / "accelerate"


def _load(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / f"{name}.yaml"))


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")])
def test_gpu_config_loads_and_is_marked_not_run(name, kind):
    assert (CONFIGS / f"{name}.yaml").read_text().startswith("# NOT RUN HERE")
    config = _load(name)
    assert config.distributed_type.name == kind and config.num_processes == 8 and not config.use_cpu
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2  # the only FSDP nextgpt train runs
    if kind == "DEEPSPEED":
        ds = json.loads((ROOT / config.deepspeed_config["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is True
        # the batch fields are the trainer's to fill (DeepSpeed accumulates the micro-batches every process runs)
        assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"


@pytest.mark.parametrize(("gpu", "cpu", "allowed"), [
    ("fsdp", "fsdp_cpu", {"num_processes", "mixed_precision"}),
    ("deepspeed_zero2", "deepspeed_zero2_cpu", {"num_processes", "deepspeed_config"}),
])
def test_gpu_config_differs_from_its_cpu_twin_only_where_a_gpu_needs_it(gpu, cpu, allowed):
    assert (CONFIGS / f"{cpu}.yaml").read_text().startswith("# RUN HERE")
    a, b = _load(gpu).to_dict(), _load(cpu).to_dict()
    differ = {key for key in set(a) | set(b) if a.get(key) != b.get(key)}
    assert differ <= allowed, differ
    assert a["num_processes"] == 8 and b["num_processes"] == 2
    if gpu == "fsdp":
        assert (a["mixed_precision"], b["mixed_precision"]) == ("bf16", "no")
    else:
        files = [json.loads((ROOT / c["deepspeed_config"]["deepspeed_config_file"]).read_text()) for c in (a, b)]
        assert {k for k in files[0] if files[0][k] != files[1].get(k)} == {"bf16"}  # bf16 on GPUs only
        assert {**a["deepspeed_config"], "deepspeed_config_file": None} == {**b["deepspeed_config"],
                                                                            "deepspeed_config_file": None}
