"""Nothing falls back silently: a launch asking for an engine the run cannot use is one error line naming the
mismatch, decided before anything is trained (tests/training/test_engines.py runs the engines that work)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app
from nextgpt_core.training.engines import EngineError, configure_deepspeed, make_accelerator, requested_engine

from tests.training.test_engines import ROOT, launch


@pytest.fixture()
def dataset(tmp_path):
    rows = [{"id": f"r{i}", "turns": [{"role": "user", "parts": [{"text": "name a shape"}]},
                                      {"role": "assistant", "parts": [{"text": caption}]}]}
            for i, caption in enumerate(["a red square", "a blue circle"])]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(dataset, out, *extra) -> object:
    return CliRunner().invoke(app, ["train", "--stage", "1", "--data", str(dataset), "--steps", "1",
                                    "--out", str(out), *extra])


def _one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_requested_engine_follows_accelerate_launch():
    assert requested_engine({}) == "single"
    assert requested_engine({"WORLD_SIZE": "2"}) == "ddp"
    assert requested_engine({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}) == "fsdp"
    assert requested_engine({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"}) == "deepspeed"


def test_gpu_flag_without_a_gpu_is_one_error_line(dataset, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = _train(dataset, tmp_path / "run", "--gpu")
    _one_error_line(result, "--gpu: no GPU is visible")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(("env", "needles"), [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "WORLD_SIZE": "2"}, ["FSDP version 1", "fsdp_version: 2"]),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "1"}, ["FSDP2 with 1 process"]),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2", "FSDP_ACTIVATION_CHECKPOINTING": "true"},
     ["fsdp_activation_checkpointing", "--gradient-checkpointing"]),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"},
     ["fsdp_cpu_ram_efficient_loading"]),
], ids=["fsdp-version-1", "fsdp-one-process", "fsdp-activation-checkpointing", "fsdp-ram-efficient-loading"])
def test_fsdp_settings_nextgpt_does_not_run_are_one_error_line(dataset, tmp_path, monkeypatch, env, needles):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _one_error_line(_train(dataset, tmp_path / "run"), *needles)


@pytest.mark.parametrize(("stage", "use_cpu", "needles"), [
    (3, "false", ["ZeRO stage 3", "use ZeRO-2"]),
    (2, "true", ["use_cpu: true", "plain DDP"]),
], ids=["deepspeed-zero3", "deepspeed-use-cpu"])
def test_deepspeed_settings_nextgpt_does_not_run_are_one_error_line(dataset, tmp_path, monkeypatch, stage, use_cpu,
                                                                    needles):
    config = json.loads((ROOT / "docs" / "accelerate" / "deepspeed_zero2_cpu.json").read_text())
    config["zero_optimization"]["stage"] = stage
    (tmp_path / "ds.json").write_text(json.dumps(config))
    for key, value in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(tmp_path / "ds.json"),
                       "ACCELERATE_CONFIG_DS_FIELDS": "deepspeed_config_file,zero3_init_flag",
                       "ACCELERATE_USE_CPU": use_cpu, "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    _one_error_line(_train(dataset, tmp_path / "run"), *needles)


def test_make_accelerator_refuses_before_touching_accelerate(monkeypatch):
    """The refusals above come before accelerate builds any state (a refused launch leaves nothing behind)."""
    from accelerate.state import AcceleratorState, PartialState

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(EngineError, match="FSDP version 1"):
        make_accelerator(gpu=False, log_with=None, project_dir=".")
    assert PartialState._shared_state == {}


def test_deepspeed_batch_fields_are_filled_or_a_mismatch_is_one_line():
    """The trainer owns the batch fields: 'auto' (or absent) is filled with the run's values, DeepSpeed then
    accumulates exactly the micro-batches every process runs; another value names both."""
    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}
    configure_deepspeed(config, micro_batch=1, micro_batches=2, processes=2, grad_clip=1.0, settings="s")
    assert config == {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
                      "train_batch_size": 4}
    for key, value, needle in (("gradient_accumulation_steps", 4, "gradient_accumulation_steps to 4, but this run needs 2"),
                               ("gradient_clipping", 0.5, "gradient_clipping to 0.5, but this run needs 1.0"),
                               ("optimizer", {"type": "Adam"}, "'optimizer' section")):
        with pytest.raises(EngineError, match=needle) as info:
            configure_deepspeed({key: value}, micro_batch=1, micro_batches=2, processes=2, grad_clip=1.0,
                                settings="--batch-size 3 over 2 processes in micro-batches of 1")
        assert "\n" not in str(info.value)


@pytest.mark.subprocess
def test_fsdp1_config_under_accelerate_launch_is_one_error_line_once(dataset, tmp_path):
    """Under a real 2-process launch both processes refuse; the first one says it (the launcher then adds its own
    failure report, which nextgpt does not control)."""
    config = (ROOT / "docs" / "accelerate" / "fsdp_cpu.yaml").read_text().replace("fsdp_version: 2", "fsdp_version: 1")
    (tmp_path / "fsdp1.yaml").write_text(config)
    proc, _ = launch(str(tmp_path / "fsdp1.yaml"), ["-m", "nextgpt_core.cli", "train", "--stage", "1", "--data",
                                                    str(dataset), "--steps", "1", "--out", str(tmp_path / "run")],
                     timeout=300)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "FSDP version 1" in ours[0], proc.stderr[-3000:]
    assert "nextgpt_core" not in proc.stderr.split("error: ")[0]  # no traceback of ours before the line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_what_accelerate_set_up_is_compared_with_what_the_launch_asked(monkeypatch):
    """The last guard: accelerate setting up another engine or process count (as `--gpu` without a GPU did: every
    process alone) is one error line, whatever the cause."""
    import accelerate
    from accelerate.utils import DistributedType

    class Alone:  # what accelerate gave each process of a 2-process launch with cpu=False and no GPU
        distributed_type = DistributedType.NO
        num_processes = 1

        def __init__(self, **kwargs):
            pass

    monkeypatch.setattr(accelerate, "Accelerator", Alone)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(EngineError) as info:
        make_accelerator(gpu=False, log_with=None, project_dir=".")
    assert str(info.value) == ("the launch asks for DDP with 2 processes, but accelerate set up no with 1; nothing "
                               "was trained")
