"""Which distributed engine a training run uses, set up so that nothing falls back silently.

``accelerate launch`` tells its processes what the config file asks for through environment variables
(``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``, ``WORLD_SIZE``, ...). Left to itself, accelerate quietly
runs something else in two cases that matter here: ``Accelerator(cpu=True)`` turns an FSDP or DeepSpeed config into
plain DDP, and ``cpu=False`` on a machine without a GPU makes every process believe it is process 0 of 1.
:func:`make_accelerator` builds the :class:`accelerate.Accelerator` for what was asked, then checks what accelerate
actually set up; any difference is one :class:`EngineError` line naming it.

Engines (:attr:`Engine.name`):

* ``single``: one process (CPU, or the GPU with ``--gpu``);
* ``ddp``: several processes, parameters replicated (gloo on CPU, NCCL on GPUs);
* ``fsdp2``: ``torch.distributed.fsdp.fully_shard`` on the loss module, the LLM's decoder layers as their own units
  (the accelerate config's ``fsdp_transformer_layer_cls_to_wrap``). The trainer shards the module itself
  (:func:`fsdp2_shard`) on CPU and on GPUs alike, because accelerate only runs FSDP on accelerators;
* ``deepspeed``: accelerate's DeepSpeed engine, ZeRO-2 (or ZeRO-1) from the DeepSpeed config (on CPU: gloo, and
  DeepSpeed's CPU accelerator, which compiles a small shared-memory op with g++ on its first use).

Refused, each with one line: FSDP version 1 (its flat parameters give the frozen weights that share a unit with
trained ones zero gradients, and its ``sync_module_states`` needs a GPU); FSDP with one process; DeepSpeed ZeRO-3
(it gathers each module's parameters as the module runs, and which modules run depends on a process's samples);
DeepSpeed with accelerate's ``use_cpu: true`` (accelerate would run DDP); ``--gpu`` without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

__all__ = [
    "Engine",
    "EngineError",
    "configure_deepspeed",
    "fsdp2_shard",
    "make_accelerator",
    "requested_engine",
]


class EngineError(ConfigError):
    """The launch asks for an engine (or device) this run cannot use.

    It is decided from the launch's environment, the same on every process, so under a launcher only the first
    process prints it (:attr:`same_on_every_process`).
    """

    same_on_every_process = True


@dataclass(frozen=True)
class Engine:
    """What a run actually uses (written to the log and to each checkpoint's ``state.json``).

    Attributes:
        name: ``single``, ``ddp``, ``fsdp2`` or ``deepspeed``.
        processes: number of processes.
        device: ``cpu`` or the accelerator's device type (``cuda``, ...).
        backend: the process group's backend (``gloo``, ``nccl``, ...), ``None`` alone.
        zero_stage: DeepSpeed's ZeRO stage (``None`` for the other engines).
    """

    name: str
    processes: int
    device: str
    backend: str | None = None
    zero_stage: int | None = None

    @property
    def sharded(self) -> bool:
        """Parameters, gradients or optimizer state are split across processes (FSDP2, DeepSpeed)."""
        return self.name in ("fsdp2", "deepspeed")

    def describe(self) -> str:
        """One line, e.g. ``fsdp2, 2 processes on cpu (gloo)`` or ``deepspeed ZeRO-2, 2 processes on cpu (gloo)``."""
        name = f"deepspeed ZeRO-{self.zero_stage}" if self.name == "deepspeed" else self.name
        where = f"{self.processes} process{'es' if self.processes != 1 else ''} on {self.device}"
        return f"{name}, {where}" + (f" ({self.backend})" if self.backend else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "false").strip().lower() in ("1", "true", "yes")


def requested_engine(env: Mapping[str, str] | None = None) -> str:
    """The engine the launch asks for, from accelerate's environment variables: ``deepspeed``
    (``ACCELERATE_USE_DEEPSPEED``), ``fsdp`` (``ACCELERATE_USE_FSDP``), ``ddp`` (several processes), else
    ``single``."""
    env = os.environ if env is None else env
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _flag(env, "ACCELERATE_USE_FSDP"):
        return "fsdp"
    return "ddp" if int(env.get("WORLD_SIZE", "1") or 1) > 1 else "single"


def _gpu_visible() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def _fsdp_plugin(env: Mapping[str, str]) -> Any:
    """accelerate's FSDP settings of this launch (read from its environment variables), checked."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    version = env.get("FSDP_VERSION", "1").strip()  # accelerate's default is FSDP1
    if version != "2":
        raise EngineError(
            f"the accelerate config asks for FSDP version {version}; nextgpt train runs FSDP2 only: set "
            "fsdp_version: 2 (FSDP1's flat parameters give frozen weights sharing a unit with trained ones zero "
            "gradients, and its sync_module_states needs a GPU)"
        )
    try:
        plugin = FullyShardedDataParallelPlugin()
    except (ValueError, TypeError, RuntimeError) as exc:  # accelerate's own checks of the FSDP fields
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"accelerate refused the launch's FSDP config: {first}") from exc
    if plugin.cpu_ram_efficient_loading:
        raise EngineError(
            "the accelerate config sets fsdp_cpu_ram_efficient_loading: true, which nextgpt train does not do (every "
            "process builds the model, then it is sharded): set it to false"
        )
    return plugin


def _deepspeed_stage(env: Mapping[str, str]) -> int:
    """The ZeRO stage the launch's DeepSpeed config asks for (read as accelerate reads it), checked."""
    from accelerate.utils import DeepSpeedPlugin

    try:
        stage = int(DeepSpeedPlugin().zero_stage)
    except (ValueError, TypeError, OSError) as exc:  # accelerate's own checks of the DeepSpeed fields
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"accelerate refused the launch's DeepSpeed config: {first}") from exc
    if stage not in SUPPORTED_ZERO_STAGES:
        why = (" (ZeRO-3 gathers each module's parameters as the module runs, and which modules run depends on a "
               "process's samples: gloo aborts on the mismatched collectives)") if stage == 3 else ""
        raise EngineError(f"the DeepSpeed config asks for ZeRO stage {stage}, which nextgpt train does not run{why}; "
                          "use ZeRO-2 (docs/accelerate/deepspeed_zero2*.json) or FSDP2")
    if _flag(env, "ACCELERATE_USE_CPU"):
        raise EngineError("the accelerate config asks for DeepSpeed with use_cpu: true, which makes accelerate run "
                          "plain DDP instead: set use_cpu: false (DeepSpeed runs on the CPU over gloo without --gpu)")
    return stage


SUPPORTED_ZERO_STAGES = (1, 2)
"""DeepSpeed ZeRO stages the trainer runs (2 is tested on every ``make test``; 1 was run by hand, same losses)."""


def make_accelerator(*, gpu: bool, log_with: Sequence[Any] | None, project_dir: str,
                     env: Mapping[str, str] | None = None) -> tuple[Any, Engine]:
    """Build the :class:`accelerate.Accelerator` for the engine the launch asks for, and check that accelerate set up
    exactly that.

    Everything that can be told from the launch's settings is checked before accelerate is touched; what accelerate
    then sets up is compared with what was asked.

    Args:
        gpu: train on the GPUs (``--gpu``); without it the run is on the CPU (gloo between processes).
        log_with: accelerate trackers.
        project_dir: accelerate's project folder (the run's output folder).
        env: the environment to read (default ``os.environ``).

    Returns:
        ``(accelerator, engine)``; for ``fsdp2`` the accelerator also carries the FSDP settings as
        ``accelerator.nextgpt_fsdp_plugin`` (the trainer shards the module itself, :func:`fsdp2_shard`).

    Raises:
        EngineError: ``--gpu`` without a visible GPU; an FSDP config that is not FSDP2 (or asks for what nextgpt
            does not do, or runs one process); a DeepSpeed config that DeepSpeed is not installed for, asks for ZeRO-3
            or for use_cpu; or accelerate setting up another engine or another number of processes than the launch
            asked for (named in the message).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
    from accelerate.utils import DistributedType

    env = os.environ if env is None else env
    wanted = requested_engine(env)
    launched = int(env.get("WORLD_SIZE", "1") or 1)
    if gpu and not _gpu_visible():
        raise EngineError("--gpu: no GPU is visible to this process (torch.cuda.is_available() is False); leave out "
                          "--gpu to train on the CPU")
    plugin = None
    if wanted == "fsdp":
        plugin = _fsdp_plugin(env)
        if launched == 1:
            raise EngineError("the accelerate config asks for FSDP2 with 1 process, where there is nothing to shard "
                              "(and accelerate would not shard): launch 2 or more processes, or train without it")
        if plugin.activation_checkpointing:
            raise EngineError("the accelerate config sets fsdp_activation_checkpointing: true; use "
                              "`nextgpt train --gradient-checkpointing` instead (the same recomputation, any engine)")
    if wanted == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise EngineError("the accelerate config asks for DeepSpeed, which is not installed: "
                              "DS_BUILD_OPS=0 pip install 'nextgpt-core[train]' (or pip install deepspeed)")
        _deepspeed_stage(env)
    handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    cpu = not gpu
    if wanted == "deepspeed" and not gpu:
        # accelerate runs DeepSpeed only with cpu=False; on the CPU its processes talk over gloo
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
        cpu = False
    try:
        accelerator = Accelerator(cpu=cpu, log_with=list(log_with) if log_with else None, project_dir=project_dir,
                                  kwargs_handlers=handlers)
    except (ValueError, TypeError) as exc:  # accelerate's own checks of the config
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"accelerate refused the launch's config: {first}") from exc
    got = accelerator.distributed_type
    expected = {
        "single": {DistributedType.NO},
        "ddp": {DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.MULTI_XPU},
        # accelerate runs FSDP itself only on accelerators; on CPU it sets up plain multi-CPU and we shard
        "fsdp": {DistributedType.FSDP} if gpu else {DistributedType.MULTI_CPU},
        "deepspeed": {DistributedType.DEEPSPEED},
    }[wanted]
    if got not in expected or accelerator.num_processes != launched:
        asked = {"fsdp": "FSDP2", "deepspeed": "DeepSpeed", "ddp": "DDP", "single": "one process"}[wanted]
        raise EngineError(
            f"the launch asks for {asked} with {launched} process{'es' if launched != 1 else ''}, but accelerate set "
            f"up {str(got).split('.')[-1].lower()} with {accelerator.num_processes}; nothing was trained"
        )
    device = accelerator.device.type
    backend = accelerator.state.backend if accelerator.num_processes > 1 else None
    if wanted == "fsdp":
        accelerator.nextgpt_fsdp_plugin = plugin
        engine = Engine("fsdp2", accelerator.num_processes, device, backend)
    elif wanted == "deepspeed":
        stage = int(accelerator.state.deepspeed_plugin.zero_stage)
        engine = Engine("deepspeed", accelerator.num_processes, device, backend or "gloo", stage)
    else:
        engine = Engine(wanted, accelerator.num_processes, device, backend)
    return accelerator, engine


def fsdp2_shard(module: Any, plugin: Any, device: Any, mixed_precision: str = "no") -> Any:
    """Shard ``module`` with FSDP2 (``fully_shard``), in place: each submodule the plugin's auto-wrap policy picks
    (the accelerate config's ``fsdp_transformer_layer_cls_to_wrap``, else the model's ``_no_split_modules``) is its
    own unit, the rest (projectors, encoders, embeddings, trained rows) is the root unit.

    Every parameter becomes a DTensor shard; a unit's full parameters exist only during its forward and backward, so
    everything that reads parameters must run inside ``module``'s forward. Returns ``module``.
    """
    import torch
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    mesh = init_device_mesh(torch.device(device).type, (torch.distributed.get_world_size(),))
    kwargs = {
        "mesh": mesh,
        "reshard_after_forward": plugin.reshard_after_forward,
        "offload_policy": plugin.cpu_offload,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
    }
    try:
        policy = fsdp2_prepare_auto_wrap_policy(plugin, module)
    except ValueError as exc:  # a layer class the model does not have
        raise EngineError(f"the accelerate config's FSDP wrap policy does not fit this model: {exc}") from exc
    if policy is not None:
        for sub in reversed(list(module.modules())[1:]):  # children before parents
            if policy(sub) and not isinstance(sub, FSDPModule):
                fully_shard(sub, **kwargs)
    fully_shard(module, **{k: v for k, v in kwargs.items() if k != "reshard_after_forward"})
    return module


_DEEPSPEED_OWNED = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
                    "train_batch_size")


def configure_deepspeed(ds_config: dict[str, Any], *, micro_batch: int, micro_batches: int, processes: int,
                        grad_clip: float | None, settings: str) -> None:
    """Fill the DeepSpeed config's batch fields from the run (in place): ``train_micro_batch_size_per_gpu`` =
    ``micro_batch``, ``gradient_accumulation_steps`` = ``micro_batches`` (DeepSpeed does the accumulation: it steps
    its optimizer after that many backward passes), ``gradient_clipping`` = ``grad_clip`` (0: off) and
    ``train_batch_size``. ``"auto"`` or absent fields are filled; a field set to another value is an
    :class:`EngineError` (``settings`` names the run's options in the message). An ``optimizer`` or ``scheduler``
    section is refused: the trainer's AdamW and warm-up/decay schedule are the run's."""
    for section in ("optimizer", "scheduler"):
        if section in ds_config:
            raise EngineError(f"the DeepSpeed config has an {section!r} section; nextgpt train brings its own (AdamW, "
                              "WarmupDecayLR from --lr / --steps): remove it")
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": micro_batches,
        "gradient_clipping": float(grad_clip or 0.0),
        "train_batch_size": micro_batch * micro_batches * processes,
    }
    for key in _DEEPSPEED_OWNED:
        value = ds_config.get(key, "auto")
        if value != "auto" and float(value) != float(wanted[key]):
            raise EngineError(
                f"the DeepSpeed config sets {key} to {value}, but this run needs {wanted[key]} ({settings}): set it to "
                "\"auto\" and the trainer fills it in"
            )
        ds_config[key] = wanted[key]
