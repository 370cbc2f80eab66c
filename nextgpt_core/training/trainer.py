"""The training loop of the three NExT-GPT stages: exact trainable sets, seeded resumable data order, atomic
checkpoints with the full trainer state, a progress bar and JSONL metrics.

One :class:`Trainer` runs one stage, alone or in every process of an ``accelerate launch``: DDP, FSDP2 or DeepSpeed
ZeRO-2, whichever the launch's config asks for (:mod:`nextgpt_core.training.engines`; an engine the run cannot use
is an error, never a silent fallback). The batch is built from the samples inside the wrapped module's forward, and
every process runs the same graph (the projectors a shard has no data for run on zeros at weight 0), so sharded
parameters are only read where the engine holds them whole and every engine reduces the same gradients.

Output folder layout::

    <output_dir>/trainable.json            the stage's trainable counts (TrainableSet.to_dict)
    <output_dir>/metrics.jsonl             one JSON row per optimizer step (name set by TrainConfig.metrics_file)
    <output_dir>/step-<k>/                 written atomically as a whole (nextgpt_core.serialization.atomic_directory)
        manifest.json, input_projectors/, output_projectors/, lora/, token_rows/
                                           the model checkpoint (nextgpt_core.checkpoint format; loads with
                                           ``NextGPT.from_composition(..., checkpoint=<output_dir>/step-<k>)``)
        trainer_state/state.pt             optimizer (alone / DDP: its state_dict; FSDP2: the distributed-checkpoint
                                           full state, by parameter name), scheduler, each process's RNG states
                                           (torch, python, numpy, data order), step, the engine
        trainer_state/state.json           the same step / epoch / position, engine and config, readable
        trainer_state/deepspeed/           DeepSpeed runs: DeepSpeed's own checkpoint (each process's optimizer part)

A ``step-<k>`` folder exists only once everything in it is written: a crash while writing leaves the previous
checkpoint untouched and no half-written ``step-<k>`` (only a hidden ``.step-<k>.tmp-*`` that is removed on the
way out of the failing block). ``resume=True`` continues from the highest complete ``step-<k>``: a step written
alone, under DDP or FSDP2 resumes under any of these three (any process count); a DeepSpeed step under DeepSpeed with
the same ZeRO stage and process count; anything else is refused with one line.

Loss: ``lm_loss + l2_weight * sum(signal_l2_losses)`` (stages 2 and 3, and any stage whose samples carry targets
when ``l2_weight > 0``) ``+ denoise_weight * sum(denoising losses)`` (optional, off by default); stage 1 is the LM
loss only.

Learning-rate schedule: the official DeepSpeed ``WarmupDecayLR`` — linear warm-up from 0 to ``lr`` over
``warmup_steps`` (default ``max(10, 0.1 * total)``, capped at ``total``), then linear decay to 0 at ``total``.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..folders import CHECKPOINT
from ..serialization import atomic_directory
from .collate import build_example, collate_batch
from .losses import (
    lm_loss,
    lm_token_count,
    signal_hidden_states,
    signal_l2_losses,
    signal_projections,
    signal_span_counts,
)
from .engines import Engine
from .trainable import TrainableSet, apply_stage

if TYPE_CHECKING:
    from ..model import NextGPT
    from .data import MediaLoader, TrainingSample

__all__ = ["STATE_DIR", "TrainConfig", "TrainResult", "Trainer", "find_latest_checkpoint"]

STATE_DIR = "trainer_state"
"""Subfolder of a ``step-<k>`` checkpoint holding the trainer state."""
_STEP_RE = re.compile(r"^step-(\d+)$")


class TrainConfig(BaseModel):
    """Settings of one training run (unknown keys are an error).

    Defaults follow the official recipe (DeepSpeed configs): AdamW, ``lr`` 4e-4 (use 5e-4 for stage 3, which
    :meth:`official_lr` gives), betas (0.9, 0.95), eps 1e-8, weight decay 1e-3, gradient clipping 1.0, linear
    warm-up then linear decay (``WarmupDecayLR``), seed 13.

    Attributes:
        stage: 1, 2 or 3 (see :data:`nextgpt_core.training.trainable.STAGES`).
        steps: optimizer steps to run in total; if ``None``, ``epochs`` passes over the data.
        epochs: passes over the data when ``steps`` is ``None``.
        max_steps: stop after this global step even though the run is planned for ``steps`` (the schedule still
            uses the planned total); for interrupting a run on purpose. ``None``: run to the end.
        batch_size: samples per optimizer step, over all processes (the last batch of an epoch may be smaller).
        micro_batch_size: forward / backward each process's share in chunks of this many samples and add their
            gradients before the step (gradient accumulation; the result equals the whole batch at once).
            ``None``: the whole share at once.
        lr, betas, eps, weight_decay: AdamW.
        grad_clip: max global gradient norm (``None`` or 0: no clipping).
        warmup_steps: linear warm-up steps (``None``: ``max(10, 0.1 * total)``, capped at ``total``).
        l2_weight: weight of the summed per-modality L2 losses (stages 2 and 3).
        denoise_weight: weight of the optional denoising loss (stages 2 and 3; 0: off): for every target with a
            media file, the frozen decoder's own diffusion loss conditioned on the projected signal states
            (:meth:`~nextgpt_core.interfaces.Decoder.denoising_loss`; the image decoders implement it).
        seed: seeds torch, python, numpy and the data-order generator.
        checkpoint_every: write ``step-<k>`` every this many steps (``None`` or 0: only at the end).
        save_final: also write a checkpoint at the last step.
        output_dir: where checkpoints, ``trainable.json`` and the metrics go.
        metrics_file: name of the JSONL metrics file inside ``output_dir``.
        progress: show a progress bar (tqdm if installed, else a plain line every ``log_every`` steps).
        log_every: steps between plain progress lines (no tqdm).
        max_length: longest sequence (``build_example``'s ``max_length``; ``None``: the model's limit).
        cpu: run on the CPU (gloo between processes); ``False`` for GPUs (``--gpu``, refused when none is
            visible). The engine (DDP, FSDP2, DeepSpeed) comes from the launch (``accelerate launch --config_file``).
        gradient_checkpointing: recompute the LLM's activations in the backward pass (Hugging Face
            ``gradient_checkpointing_enable(use_reentrant=False)``): less memory, more compute.
        log_with: experiment trackers through accelerate (``"tensorboard"``, ``"wandb"``, ``"mlflow"``, ...; each
            must be installed); the JSONL metrics are always written.
        tracker_project: the trackers' project / run name.
    """

    model_config = ConfigDict(extra="forbid")

    stage: Literal[1, 2, 3] = 2
    steps: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=0)
    batch_size: int = Field(default=2, ge=1)
    micro_batch_size: int | None = Field(default=None, ge=1)
    lr: float = Field(default=4e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = Field(default=1e-3, ge=0)
    grad_clip: float | None = 1.0
    warmup_steps: int | None = Field(default=None, ge=0)
    l2_weight: float = Field(default=1.0, ge=0)
    denoise_weight: float = Field(default=0.0, ge=0)
    seed: int = 13
    checkpoint_every: int | None = Field(default=None, ge=0)
    save_final: bool = True
    output_dir: Path = Path("runs/train")
    metrics_file: str = "metrics.jsonl"
    progress: bool = True
    log_every: int = Field(default=10, ge=1)
    max_length: int | None = None
    cpu: bool = True
    gradient_checkpointing: bool = False
    log_with: list[str] = Field(default_factory=list)
    tracker_project: str = "nextgpt"

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if "/" in self.metrics_file or "\\" in self.metrics_file:
            raise ValueError("metrics_file is a file name inside output_dir, not a path")
        return self

    @staticmethod
    def official_lr(stage: int) -> float:
        """The official learning rate of ``stage``: 4e-4 for stages 1 and 2, 5e-4 for stage 3."""
        return 5e-4 if int(stage) == 3 else 4e-4


class TrainResult(BaseModel):
    """What :meth:`Trainer.train` returns.

    Attributes:
        step: the last global step done.
        losses: the total loss of each step run in this call (not of steps before a resume).
        checkpoints: the ``step-<k>`` folders written in this call.
        resumed_from: the checkpoint the run continued from (``None``: started fresh).
        start_step: the step the run started from (the resumed checkpoint's step, else 0).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step: int
    losses: list[float]
    checkpoints: list[Path]
    resumed_from: Path | None = None
    start_step: int = 0


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``step-<k>`` folder with the highest ``k`` in ``output_dir`` (``None`` if there is none).

    Complete means: it holds the model manifest and the trainer state (hidden ``.step-*`` temporaries are never
    considered; with atomic writes a ``step-<k>`` is complete or absent, this check guards hand-edited folders).
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for path in root.iterdir():
        m = _STEP_RE.match(path.name)
        if m and path.is_dir() and (path / "manifest.json").is_file() and (path / STATE_DIR / "state.pt").is_file():
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------- RNG helpers
def _rng_state(order_generator: torch.Generator) -> dict[str, Any]:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "order": order_generator.get_state(),
    }


def _set_rng_state(state: Mapping[str, Any], order_generator: torch.Generator) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    order_generator.set_state(state["order"])


def _seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- progress
class _Progress:
    """tqdm when installed (and enabled), else a plain line every ``log_every`` steps on stderr."""

    def __init__(self, total: int, initial: int, enabled: bool, log_every: int) -> None:
        self.enabled, self.log_every, self.total = enabled, log_every, total
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, samples_per_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False)
            self.bar.update(1)
        elif step % self.log_every == 0 or step == self.total:
            print(f"step {step}/{self.total}  loss {loss:.4f}  {samples_per_s:.1f} samples/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs one NExT-GPT stage on a list of samples.

    Args:
        model: the :class:`~nextgpt_core.model.NextGPT` to train (changed in place).
        dataset_samples: the :class:`~nextgpt_core.training.data.TrainingSample` s.
        targets: ``{target_id: {conditioning name: (T, D)}}``, the cached caption embeddings of the samples'
            targets (``nextgpt cache-targets``); needed when the L2 loss is on (stage 2/3 with targets).
        config: the :class:`TrainConfig`.
        media_loader: decodes the samples' input media through their plugins.
        resume: continue from the latest complete ``step-<k>`` in ``config.output_dir`` (its weights, optimizer,
            scheduler, RNG and data-order state); a fresh start if there is none.
        overwrite: start over in an ``output_dir`` that holds an earlier training run (it is removed first).
            Without ``resume`` or ``overwrite`` such a folder is refused, and so is, always, a non-empty folder that
            is not a training run or holds files a run did not write (:func:`nextgpt_core.folders.start_folder`).
        inputs: paths the run reads (data, targets, checkpoint): ``output_dir`` may not be or hold one.

    At construction the stage is applied (:func:`~nextgpt_core.training.trainable.apply_stage`): exactly its set
    becomes trainable, its counts are printed and saved as ``trainable.json``.
    """

    def __init__(
        self,
        model: NextGPT,
        dataset_samples: Sequence[TrainingSample],
        targets: Mapping[str, Mapping[str, torch.Tensor]] | None,
        config: TrainConfig,
        media_loader: MediaLoader | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        trackers: Sequence[Any] = (),
        inputs: Sequence[Any] = (),
    ) -> None:
        from ..folders import TRAIN_RUN, check_output_folder
        from .engines import make_accelerator

        if not len(dataset_samples):
            raise ValueError("Trainer needs at least one sample")
        if resume and overwrite:
            from ..errors import ConfigError

            raise ConfigError("resume and overwrite exclude each other: continue the run, or start it over")
        # every process checks the folder before any process changes it (the same answer everywhere)
        check_output_folder(config.output_dir, TRAIN_RUN, overwrite=overwrite, resume=resume, inputs=inputs)
        self.model = model
        self.samples = list(dataset_samples)
        self.targets = targets or {}
        self.config = config
        self.media_loader = media_loader
        self.output_dir = Path(config.output_dir)
        _check_trackers(config.log_with)
        log_with = [*config.log_with, *trackers]
        # the engine the launch asks for, or one error line: never a silent fallback to another engine
        self.accelerator, self.engine = make_accelerator(gpu=not config.cpu, log_with=log_with,
                                                         project_dir=str(self.output_dir))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            _start_run_folder(self.output_dir, config, overwrite=overwrite, resume=resume, inputs=inputs)
        self.accelerator.wait_for_everyone()
        self.use_l2 = config.stage in (2, 3) and config.l2_weight > 0
        self.use_denoise = config.stage in (2, 3) and config.denoise_weight > 0
        if self.use_denoise:
            self._check_denoising()
        media_note = self._check_media_targets() if self.use_l2 else ""

        _seed_everything(config.seed)
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.trainable: TrainableSet = apply_stage(model, config.stage)
        if config.gradient_checkpointing:
            _enable_gradient_checkpointing(model)
        self.resume_dir = find_latest_checkpoint(self.output_dir) if resume else None
        if self.resume_dir is not None:
            self._check_resumable(self.resume_dir)
            self._load_weights(self.resume_dir)
        if self.accelerator.is_main_process:
            print(self.trainable.table(), file=sys.stderr)
            print(f"engine: {self.engine.describe()}", file=sys.stderr, flush=True)
            if media_note:
                print(media_note, file=sys.stderr, flush=True)
            self.trainable.save(self.output_dir / "trainable.json")

        self.steps_per_epoch = math.ceil(len(self.samples) / config.batch_size)
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        warmup = config.warmup_steps if config.warmup_steps is not None else max(10, int(0.1 * self.total_steps))
        self.warmup_steps = min(warmup, self.total_steps)
        share = math.ceil(config.batch_size / self.world_size)  # the most samples a process gets in one step
        self.micro_batch = min(config.micro_batch_size or share, share)
        # micro-batches every process runs per step (the same count everywhere: the same graph on every rank, and
        # DeepSpeed's fixed gradient_accumulation_steps); a process with fewer samples runs weight-0 fillers
        self.micro_batches = math.ceil(share / self.micro_batch)
        self.model.to(self.accelerator.device)
        # the forward (the batch built from the samples, the LLM, the losses) as one module: every parameter is
        # read inside its forward, which DDP / FSDP2 / DeepSpeed wrap
        loss_module = _LossModule(self)
        names = [name for name, _ in self.trainable.named_parameters()]
        if self.engine.name == "fsdp2":
            from .engines import fsdp2_shard

            self._frozen_saved = self._frozen_checkpoint_tensors() if self.accelerator.is_main_process else {}
            fsdp2_shard(loss_module, self.accelerator.nextgpt_fsdp_plugin, self.accelerator.device,
                        self.accelerator.mixed_precision)
        live = dict(loss_module.named_parameters())
        # the trained parameters as the module holds them now (FSDP2 replaced them with DTensor shards)
        self._params = [live[f"model.{name}"] for name in names]
        optimizer = torch.optim.AdamW(
            self._params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
        # the scheduler is stepped by hand once per optimizer step (accelerate's prepared scheduler would step it
        # once per process)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self._lr_factor(s))
        if self.engine.name == "fsdp2":
            self.loss_module, self.optimizer = loss_module, optimizer
        else:
            if self.engine.name == "deepspeed":
                from .engines import configure_deepspeed

                configure_deepspeed(
                    self.accelerator.state.deepspeed_plugin.deepspeed_config, micro_batch=self.micro_batch,
                    micro_batches=self.micro_batches, processes=self.world_size, grad_clip=config.grad_clip,
                    settings=f"--batch-size {config.batch_size} over {self.world_size} processes in micro-batches "
                             f"of {self.micro_batch}",
                )
            self.loss_module, self.optimizer = self.accelerator.prepare(loss_module, optimizer)

        # data order: a permutation per epoch drawn from order_generator; position = next index in it
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.order: list[int] = []
        if self.resume_dir is not None:
            self._load_state(self.resume_dir)
        self.start_step = self.step
        self.dropped_metrics_rows = 0
        if self.accelerator.is_main_process:
            # rows of steps after the start (a run killed after its last checkpoint logged them) are redone now
            self.dropped_metrics_rows = _drop_metrics_after(self.output_dir / config.metrics_file, self.step)
            if resume or self.dropped_metrics_rows:
                print(self.start_message(resume), file=sys.stderr, flush=True)

    def start_message(self, resume: bool = True) -> str:
        """One line saying where the run starts: ``resumed from <dir> at step k of N``, or that ``--resume``
        found no checkpoint, plus the metrics rows of later steps that were dropped (they are logged again)."""
        if self.resume_dir is not None:
            text = f"resumed from {self.resume_dir} at step {self.start_step} of {self.total_steps}"
        elif resume:
            text = f"resume: no complete checkpoint in {self.output_dir}; starting at step 0 of {self.total_steps}"
        else:
            text = f"starting at step 0 of {self.total_steps}"
        if self.dropped_metrics_rows:
            text += (f"; dropped {self.dropped_metrics_rows} metrics row(s) of later steps from "
                     f"{self.config.metrics_file} (they are run again)")
        return text

    @property
    def forward_module(self) -> Any:
        """The module the loss forwards go through: the engine's wrapper (DDP, FSDP2), or for DeepSpeed the module
        itself, whose graph :meth:`_ordered_surrogate` differentiates before handing the gradients to DeepSpeed."""
        return self.loss_module.module if self.engine.name == "deepspeed" else self.loss_module

    @property
    def world_size(self) -> int:
        """Number of processes (1 when run alone)."""
        return self.accelerator.num_processes

    # -- schedule
    def _lr_factor(self, step: int) -> float:
        """WarmupDecayLR: ``step`` optimizer steps done -> factor of ``lr`` for the next step."""
        w, total = self.warmup_steps, self.total_steps
        if w and step < w:
            return (step + 1) / w
        if total <= w:
            return 1.0
        return max(0.0, (total - step) / (total - w))

    # -- data order
    def _next_indices(self) -> list[int]:
        """The next GLOBAL batch's sample indices (the same on every process); a new permutation each epoch."""
        if not self.order or self.position >= len(self.order):
            if self.order:
                self.epoch += 1
            self.order = torch.randperm(len(self.samples), generator=self.order_generator).tolist()
            self.position = 0
        indices = self.order[self.position : self.position + self.config.batch_size]
        self.position += len(indices)
        return indices

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This process's part of a global batch: every ``world_size``-th index from its rank on."""
        return list(indices[self.accelerator.process_index :: self.world_size])

    # -- one step
    def _reduce_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def _local_counts(self, examples: Sequence[Any]) -> dict[str, Any]:
        """Labelled tokens, signal spans per modality, target media per modality and truncated samples of
        ``examples`` (this process's part of the denominators that make the losses the global batch's means)."""
        modalities = sorted(self.model.output_projectors)
        spans, media = {m: 0 for m in modalities}, {m: 0 for m in modalities}
        tokens = 0
        for example in examples:
            tokens += lm_token_count(example.labels)
            for m, c in (signal_span_counts(example) if self.use_l2 else {}).items():
                spans[m] += c
            for m, c in (_media_span_counts(example) if self.use_denoise else {}).items():
                media[m] += c
        return {"tokens": tokens, "spans": spans, "media": media, "truncated": sum(e.truncated for e in examples)}

    def _global_counts(self, local: Mapping[str, Any]) -> tuple[float, dict[str, float], dict[str, float]]:
        """``local`` counts (:meth:`_local_counts`) added up over every process: (labelled tokens, ``{modality:
        signal spans}``, ``{modality: target media}``)."""
        modalities = sorted(self.model.output_projectors)
        n = len(modalities)
        totals = self._reduce_sum([float(local["tokens"])] + [float(local["spans"][m]) for m in modalities]
                                  + [float(local["media"][m]) for m in modalities])
        return totals[0], dict(zip(modalities, totals[1 : 1 + n])), dict(zip(modalities, totals[1 + n :]))

    def _losses(self, sums: Sequence[Any], counts: tuple[float, dict[str, float], dict[str, float]],
                weight: float) -> dict[str, Any]:
        """A (micro-)batch's loss ``sums`` (the loss module's output) divided by the global ``counts`` (see
        :meth:`compute_losses`)."""
        global_tokens, global_spans, global_media = counts
        lm_sum, l2_sums, dn_sums = sums[0], sums[1], sums[2]
        lm = lm_sum * weight / max(global_tokens, 1.0)
        # every modality with a span anywhere in the global batch, on every process (the same keys everywhere)
        zero = lm_sum.new_zeros(())
        l2 = {m: l2_sums.get(m, zero) * weight / c for m, c in global_spans.items() if c > 0}
        dn = {m: dn_sums.get(m, zero) * weight / c for m, c in global_media.items() if c > 0}
        loss = lm
        if l2:
            loss = loss + self.config.l2_weight * sum(l2.values())
        if dn:
            loss = loss + self.config.denoise_weight * sum(dn.values())
        return {"loss": loss, "lm": lm, "l2": l2, "denoise": dn, "backward": loss * self.world_size}

    def _limit(self) -> int:
        """The longest sequence a sample may have (``config.max_length``, else the model's limit)."""
        return self.config.max_length or self.model.composition.generation.max_context_tokens or int(
            getattr(self.model.llm.config, "max_position_embeddings", 2048)
        )

    def _examples(self, samples: Sequence[TrainingSample]) -> list[Any]:
        return [
            build_example(self.model, s, media_loader=self.media_loader, max_length=self.config.max_length)
            for s in samples
        ]

    def compute_losses(self, samples: Sequence[TrainingSample]) -> dict[str, Any]:
        """Forward ``samples`` as one batch: ``{"loss": total, "lm": scalar, "l2": {modality: scalar},
        "denoise": {modality: scalar}}`` (tensors; no backward).

        Alone (one process) these are the batch means. Under several processes each process forwards its shard
        and the losses are its shard's SUMS divided by the GLOBAL counts (labelled tokens; signal spans per
        modality), so that adding them over processes gives exactly the single-process mean of the global batch;
        ``"backward"`` is the value to differentiate (times ``world_size``: the engines average gradients).
        """
        sums = self.forward_module(list(samples))
        return self._losses(sums, self._global_counts(sums[3]), 1.0)

    def _forward_backward(self, samples: Sequence[TrainingSample], filler: TrainingSample) -> dict[str, Any]:
        """One optimizer step's forward and backward passes over this process's ``samples``, in micro-batches of
        ``micro_batch`` whose gradients add up. Every micro-batch is normalised by the counts of the whole global
        batch, so the gradient equals that of one big batch. With several processes (or DeepSpeed) every process
        runs :attr:`micro_batches` forwards, the missing ones on ``filler`` at weight 0, so every process runs the
        same graph the same number of times. Returns the step's losses as floats (this process's part;
        :meth:`train` adds the processes)."""
        import contextlib

        acc = self.accelerator
        deepspeed = self.engine.name == "deepspeed"
        size = self.micro_batch
        chunks = [list(samples[i : i + size]) for i in range(0, len(samples), size)]
        runs: list[tuple[list[TrainingSample], float]] = [(c, 1.0) for c in chunks]
        wanted = self.micro_batches if (self.world_size > 1 or deepspeed) else max(len(chunks), 1)
        runs += [([filler], 0.0)] * (wanted - len(runs))
        counts = None
        local: dict[str, Any] = {"truncated": 0}
        if len(runs) > 1:  # the denominators of the whole step first: the layout of every sample, no gradient
            with torch.no_grad():
                local = self.forward_module(list(samples) or [filler], weight=1.0 if samples else 0.0, count_only=True)
            counts = self._global_counts(local)
        out: dict[str, Any] = {"loss": 0.0, "lm": 0.0, "l2": {}, "denoise": {}, "truncated": float(local["truncated"])}
        for i, (chunk, weight) in enumerate(runs):
            last = i == len(runs) - 1
            ddp_no_sync = not last and not deepspeed and self.engine.name != "fsdp2"
            with acc.no_sync(self.loss_module) if ddp_no_sync else contextlib.nullcontext():
                sums = self.forward_module(chunk, weight=weight)
                if counts is None:  # one micro-batch: its own counts are the step's
                    counts = self._global_counts(sums[3])
                    out["truncated"] = float(sums[3]["truncated"])
                parts = self._losses(sums, counts, weight)
                if deepspeed:  # DeepSpeed accumulates and steps its optimizer after the last micro-batch itself
                    acc.sync_gradients = last
                    acc.backward(self._ordered_surrogate(parts["backward"]), scale_wrt_gas=False)
                else:
                    acc.backward(parts["backward"])
            out["loss"] += float(parts["loss"].detach())
            out["lm"] += float(parts["lm"].detach())
            for group in ("l2", "denoise"):
                for m, v in parts[group].items():
                    out[group][m] = out[group].get(m, 0.0) + float(v.detach())
        return out

    def _ordered_surrogate(self, loss: torch.Tensor) -> torch.Tensor:
        """A loss whose backward gives every trained parameter ``loss``'s gradient (zeros where it has none),
        all becoming ready in one fixed order (the trainer's parameter order), the same on every process.

        DeepSpeed ZeRO-2 copies each gradient into its reduction bucket when the gradient is ready and reduces the
        bucket by position: when the processes' graphs differ (one holds a modality's samples, another only its
        weight-0 run), their gradients become ready in different orders and the reduction silently adds up the
        wrong gradients. ``torch.autograd.grad`` computes them first, on the graph of the module's own forward
        (:attr:`forward_module`, which DeepSpeed does not hook); the surrogate ``sum((p * g).sum())``, computed
        by the engine's forward, then hands them over in the same order everywhere (its gradient for ``p`` is
        ``g`` exactly)."""
        grads = torch.autograd.grad(loss, self._params, allow_unused=True)
        grads = [(g if g is not None else torch.zeros_like(p)).detach() for p, g in zip(self._params, grads)]
        # through the engine's forward, whose output hooks start DeepSpeed's backward bookkeeping
        return self.loss_module(grads=grads)

    def _module_forward(self, samples: Sequence[TrainingSample], weight: float = 1.0,
                        count_only: bool = False) -> Any:
        """What the loss module's forward does (so every parameter is read inside it): build and collate the
        examples, run the LLM, return ``(LM loss sum, {modality: L2 sum}, {modality: denoising sum}, counts)``
        (:meth:`_local_counts`; all zero at ``weight`` 0), or only the counts with ``count_only``.

        Every trained projector runs, on zeros at weight 0 when the batch has nothing for it, so every process
        builds the same graph whatever its shard holds (FSDP2 and DeepSpeed reduce gradients by position in a flat
        buffer: a parameter without a gradient on one process and with one on another corrupts the reduction).
        """
        examples = self._examples(samples)
        counts = self._local_counts(examples if weight else [])
        if count_only:
            return counts
        lm_sum, l2, dn = self._forward_sums(collate_batch(examples))
        return lm_sum + self._same_graph_terms(lm_sum), l2, dn, counts

    def _same_graph_terms(self, like: torch.Tensor) -> torch.Tensor:
        """``0 *`` the outputs of every projector the stage trains, run on zeros: a zero that puts each of them in
        the graph (their gradient from it is exactly 0)."""
        stage = self.trainable.stage
        total = like.new_zeros(())
        if stage.input_projectors:
            for proj in self.model.input_projectors.values():
                p = next(proj.parameters())
                total = total + proj(p.new_zeros(1, 1, proj.config.in_dim)).sum() * 0.0
        if stage.output_projectors:
            for projs in self.model.output_projectors.values():
                for proj in projs.values():
                    p = next(proj.parameters())
                    x = p.new_zeros(1, proj.config.num_signal_tokens, proj.config.in_dim)
                    total = total + proj(x, x).sum() * 0.0
        return total

    def _forward_sums(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The LLM forward of a collated batch: (LM loss sum, ``{modality: L2 sum}``, ``{modality: denoising
        sum}``), see :class:`_LossModule`."""
        out = self.model.llm(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            output_hidden_states=self.use_l2 or self.use_denoise,
        )
        lm_sum = lm_loss(out.logits, batch.labels, reduction="sum")
        l2: dict[str, torch.Tensor] = {}
        dn: dict[str, torch.Tensor] = {}
        if (self.use_l2 or self.use_denoise) and any(batch.signal_spans):
            projections = signal_projections(self.model, signal_hidden_states(self.model, out), batch)
            if self.use_l2:
                l2 = signal_l2_losses(self.model, None, batch, self.targets, reduction="sum", projections=projections)
            if self.use_denoise:
                dn = self._denoising_sums(projections)
        return lm_sum, l2, dn

    def _check_media_targets(self) -> str:
        """For the modalities whose stage-2 targets are the encoder's embedding of the target media (a retrieval
        decoder): refuse a target cache whose embeddings another encoder made (one line, before any step), and say
        where the targets come from: the cache, or the encoder at every step (``""`` when no such modality)."""
        outputs = set(self.model.output_modalities())
        wanted = sorted({t.modality for s in self.samples for t in s.targets if t.media_path is not None
                         and t.modality in outputs and self.model.media_target_names(t.modality)})
        if not wanted:
            return ""
        counts = self.targets.media_counts() if hasattr(self.targets, "media_counts") else {}
        cached = [k for k in wanted if k in counts]
        for key in cached:
            self.targets.check_media_encoder(self.model, key)  # type: ignore[attr-defined]
        computed = [k for k in wanted if k not in counts]
        parts = [f"{', '.join(f'{k} ({counts[k]} files)' for k in cached)} read from the target cache"] if cached else []
        if computed:
            parts.append(f"{', '.join(computed)} embedded by the encoder at every step (the target cache holds none; "
                         "`nextgpt cache-targets` with this composition embeds them once)")
        return "media targets: " + "; ".join(parts)

    def _check_denoising(self) -> None:
        """Every modality that has target media in the data must have a decoder with a denoising loss."""
        from ..errors import ConfigError
        from ..interfaces import Decoder

        wanted = sorted({t.modality for s in self.samples for t in s.targets if t.media_path is not None})
        if not wanted:
            raise ConfigError("denoise_weight > 0 but no target in the data names a media file to denoise")
        for key in wanted:
            decoder = self.model.decoders.get(key)
            if decoder is None or type(decoder).denoising_loss is Decoder.denoising_loss:
                raise ConfigError(
                    f"denoise_weight > 0 but the {key!r} decoder ({type(decoder).__name__}) has no denoising loss; "
                    "set denoise_weight = 0 or leave that modality's target media out"
                )

    def _denoising_sums(
        self, projections: Mapping[str, tuple[list[tuple[int, Any]], dict[str, torch.Tensor]]]
    ) -> dict[str, torch.Tensor]:
        """``{modality: sum of the decoder's per-target denoising losses}`` over the spans that have target media.

        Noise and timesteps come from a generator seeded by (seed, step, process), so a resumed run draws what the
        uninterrupted one drew.
        """
        from ..conversation import Media
        from .data import MediaLoader

        loader = self.media_loader or MediaLoader(self.model.registry)
        generator = torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + self.step * 1009 + self.accelerator.process_index) % 2**63
        )
        sums: dict[str, torch.Tensor] = {}
        for key, (entries, preds) in projections.items():
            chosen = [i for i, (_, span) in enumerate(entries) if span.media_path is not None]
            if not chosen:
                continue
            media = [loader.load(Media(modality=key, path=entries[i][1].media_path)) for i in chosen]
            index = torch.tensor(chosen, device=next(iter(preds.values())).device)
            conditioning = {name: pred.index_select(0, index) for name, pred in preds.items()}
            sums[key] = self.model.decoders[key].denoising_loss(conditioning, media, generator=generator).sum()
        return sums

    def train(self) -> TrainResult:
        """Run from the current step to ``config.steps`` / the planned epochs (or ``config.max_steps``).

        Every step appends a metrics row (and logs it to the trackers); every ``checkpoint_every`` steps (and at
        the end when ``save_final``) a ``step-<k>`` checkpoint with the trainer state is written atomically.
        Returns a :class:`TrainResult` (the same on every process: losses are of the global batch).
        """
        cfg = self.config
        acc = self.accelerator
        stop = self.total_steps if cfg.max_steps is None else min(cfg.max_steps, self.total_steps)
        self.trainable.set_modes(self.model)  # train mode for what trains only: frozen parts run as at inference
        losses: list[float] = []
        written: list[Path] = []
        metrics_path = self.output_dir / cfg.metrics_file
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if acc.log_with:
            acc.init_trackers(cfg.tracker_project, config=_flat_config(cfg))
        progress = _Progress(self.total_steps, self.step, cfg.progress and acc.is_main_process, cfg.log_every)
        truncated_total = 0
        try:
            while self.step < stop:
                started = time.perf_counter()
                indices = self._next_indices()
                mine = self.shard(indices)
                # fewer samples than processes in this batch: forward one at weight 0 (every process runs the graph)
                parts = self._forward_backward([self.samples[i] for i in mine], self.samples[indices[0]])
                if cfg.grad_clip and self.engine.name == "fsdp2":
                    torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip)  # DTensor shards: a global norm
                elif cfg.grad_clip and self.engine.name != "deepspeed":  # DeepSpeed clips inside its step
                    acc.clip_grad_norm_(self._params, cfg.grad_clip)
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                l2_names, dn_names = sorted(parts["l2"]), sorted(parts["denoise"])
                reduced = self._reduce_sum(
                    [parts["loss"], parts["lm"], parts["truncated"]]
                    + [parts["l2"][m] for m in l2_names]
                    + [parts["denoise"][m] for m in dn_names]
                )
                truncated = int(round(reduced.pop(2)))
                truncated_total += truncated
                elapsed = max(time.perf_counter() - started, 1e-9)
                row = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "loss": reduced[0],
                    "lm": reduced[1],
                    "l2": dict(zip(l2_names, reduced[2 : 2 + len(l2_names)])),
                    "denoise": dict(zip(dn_names, reduced[2 + len(l2_names) :])),
                    "lr": lr,
                    "samples": len(indices),
                    "truncated": truncated,
                    "samples_per_s": len(indices) / elapsed,
                    "processes": self.world_size,
                }
                losses.append(row["loss"])
                if acc.is_main_process:
                    with open(metrics_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")
                if acc.log_with:
                    acc.log(_flat_metrics(row), step=self.step)
                progress.update(self.step, row["loss"], row["samples_per_s"])
                every = cfg.checkpoint_every
                if (every and self.step % every == 0) or (cfg.save_final and self.step == self.total_steps):
                    written.append(self.save_checkpoint())
        finally:
            progress.close()
            if acc.log_with:
                acc.end_training()
            if truncated_total and acc.is_main_process:
                print(f"note: {truncated_total} sample(s) in this run were longer than the limit of {self._limit()} "
                      "positions and were cut at it (metrics.jsonl: 'truncated' per step)", file=sys.stderr, flush=True)
        return TrainResult(step=self.step, losses=losses, checkpoints=written, resumed_from=self.resume_dir,
                           start_step=self.start_step)

    # -- checkpoints
    def _gathered_rng(self) -> list[dict[str, Any]]:
        """Every process's random state (``gather_object``: a collective), in process order."""
        mine = _rng_state(self.order_generator)
        if self.world_size == 1:
            return [mine]
        from accelerate.utils import gather_object

        return list(gather_object([mine]))

    def _optimizer_state(self) -> tuple[str, Any]:
        """``(format, state)`` of the optimizer for ``state.pt``: ``"torch"`` (its own ``state_dict()``, alone and
        under DDP), ``"fsdp2-full"`` (the distributed-checkpoint API's full state, keyed by parameter name: a
        collective; rank 0 gets it), ``"deepspeed"`` (``None`` here: DeepSpeed writes its per-process files)."""
        if self.engine.name == "deepspeed":
            return "deepspeed", None
        if self.engine.name == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return "fsdp2-full", get_optimizer_state_dict(self.loss_module, self.optimizer, options=options)
        return "torch", self.optimizer.state_dict()

    def _state(self, rngs: list[dict[str, Any]], optimizer: tuple[str, Any]) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "order": torch.tensor(self.order, dtype=torch.long),
            "optimizer_format": optimizer[0],
            "optimizer": optimizer[1],
            "resumable": True,
            "engine": self.engine.to_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs[0],
            "rng_per_process": rngs,
            "config": self.config.model_dump(mode="json"),
        }

    def _frozen_checkpoint_tensors(self) -> dict[str, Any]:
        """Copies of what a checkpoint holds that this stage does not train (projectors of the other side, their
        buffers, the added tokens' rows), taken before FSDP2 shards the model: they cannot change, and a
        checkpoint is then written from them and the gathered trained tensors."""
        trained = {name for name, _ in self.trainable.named_parameters()}
        tensors = {
            name: t.detach().to("cpu", copy=True)
            for name, t in self.model.state_dict(keep_vars=True).items()
            if name not in trained and (name.startswith(("input_projectors.", "output_projectors."))
                                        or (name.startswith("llm.") and "lora_" in name))
        }
        rows = self.trainable.export_rows()
        if rows is None and self.model.tokens.added:
            ids = torch.tensor(self.model.tokens.new_ids)
            embed, head = self.model.llm.get_input_embeddings(), self.model.llm.get_output_embeddings()
            rows = {"ids": ids, "embed_tokens": embed.weight[ids].detach().cpu().clone()}
            if head is not None and head.weight is not embed.weight:
                rows["lm_head"] = head.weight[ids].detach().cpu().clone()
        return {"tensors": tensors, "rows": rows}

    def _gathered_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None] | None:
        """FSDP2: the trained tensors gathered whole with the distributed-checkpoint API (``get_model_state_dict``,
        full state dict, frozen parameters left out; a collective), merged on rank 0 with the frozen copies into
        ``(state, token_rows)`` for :func:`~nextgpt_core.checkpoint.save_checkpoint`. ``None`` on the other
        processes and for the other engines (their model holds whole parameters)."""
        if self.engine.name != "fsdp2":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        full = get_model_state_dict(self.loss_module, options=options)
        if not self.accelerator.is_main_process:
            return None
        full = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
        state = {**self._frozen_saved["tensors"],
                 **{k: v for k, v in full.items() if not k.startswith("trainable_rows.")}}
        rows = self._frozen_saved["rows"]
        trained = self.trainable.rows
        if rows is not None and trained is not None:
            rows = {k: v.clone() for k, v in rows.items()}
            where = {int(i): j for j, i in enumerate(rows["ids"].tolist())}
            embed = full.get("trainable_rows.embed_rows")
            head = embed if trained.tied else full.get("trainable_rows.head_rows")
            for key, ids, values in (("embed_tokens", trained.embed_ids, embed), ("lm_head", trained.head_ids, head)):
                if values is None or key not in rows:
                    continue
                for k, i in enumerate(ids.tolist()):
                    rows[key][where[i]] = values[k].to(rows[key].dtype)
        return state, rows

    def save_checkpoint(self) -> Path:
        """Write ``<output_dir>/step-<step>/`` atomically: the model checkpoint (trained rows merged first) and the
        trainer state. Returns the folder.

        Every process takes part (gathering sharded tensors, random states, DeepSpeed's per-process optimizer
        files); rank 0 writes the model checkpoint and ``trainer_state/``, and swaps the folder into place."""
        import contextlib

        from ..checkpoint import add_to_manifest, save_checkpoint

        acc = self.accelerator
        target = self.output_dir / f"step-{self.step}"
        rngs = self._gathered_rng()
        weights = self._gathered_weights()
        optimizer = self._optimizer_state()
        metadata = {"stage": self.config.stage, "step": self.step, "engine": self.engine.describe()}
        with contextlib.ExitStack() as stack:
            tmp: Path | None = None
            if acc.is_main_process:
                tmp = stack.enter_context(atomic_directory(target, CHECKPOINT))
                if weights is None:
                    self.trainable.merge()
                    save_checkpoint(self.model, tmp, metadata=metadata)
                else:
                    save_checkpoint(self.model, tmp, metadata=metadata, state=weights[0], token_rows=weights[1])
            extra: list[str] = []
            if self.engine.name == "deepspeed":  # every process writes its part of the optimizer state
                from accelerate.utils import broadcast_object_list

                tmp = Path(broadcast_object_list([str(tmp) if tmp is not None else None])[0])
                self.loss_module.save_checkpoint(str(tmp / STATE_DIR / _DEEPSPEED_DIR), tag=_DEEPSPEED_TAG,
                                                 save_latest=False, exclude_frozen_parameters=True)
                acc.wait_for_everyone()
                extra = sorted(str(f.relative_to(tmp)) for f in (tmp / STATE_DIR / _DEEPSPEED_DIR).rglob("*")
                               if f.is_file())
            if acc.is_main_process:
                assert tmp is not None
                _write_trainer_state(self._state(rngs, optimizer), tmp / STATE_DIR)
                add_to_manifest(tmp, [f"{STATE_DIR}/state.pt", f"{STATE_DIR}/state.json", *extra])
        acc.wait_for_everyone()  # no process runs ahead of (or resumes from) a half-written step
        return target

    @property
    def sharded(self) -> bool:
        """Parameters, gradients or optimizer state are split across processes (FSDP2, DeepSpeed)."""
        return self.engine.sharded

    def _load_weights(self, directory: Path) -> None:
        """Load the model checkpoint, then refresh the row-training copies from the loaded matrices."""
        self.model.load_checkpoint(directory)
        if self.trainable.rows is not None:
            self.trainable.rows.reload()

    def _check_resumable(self, directory: Path) -> None:
        """Read ``directory``'s trainer state and refuse, with one line, a state this run's engine cannot continue
        (before any weight is loaded). The state is kept for :meth:`_load_state`."""
        import warnings

        from ..checkpoint import read_manifest
        from ..errors import CheckpointError

        read_manifest(directory, verify=True)  # state.pt is listed and hashed there: a damaged file is named first
        path = directory / STATE_DIR / "state.pt"

        try:
            with warnings.catch_warnings():  # torch warns about a damaged file's pickle protocol before failing
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle / zip / torch errors of a damaged or foreign file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a readable trainer state ({first[:200]})") from exc
        needed = ("optimizer", "scheduler", "step", "epoch", "position", "order", "rng")
        if not isinstance(state, dict) or any(k not in state for k in needed):
            raise CheckpointError(f"{path}: not a trainer state (needs {', '.join(needed)})")
        fmt = state.get("optimizer_format", "torch" if state.get("optimizer") is not None else None)
        written = state.get("engine") or {}
        by = (f"{Engine(**written).describe()}" if written else "an earlier version")
        hint = "; start a new run from its weights instead (`nextgpt train --checkpoint <step folder>`)"
        if fmt is None:
            raise CheckpointError(f"{directory}: cannot resume here: the run ({by}) did not save its optimizer state"
                                  + hint)
        if fmt == "deepspeed" or self.engine.name == "deepspeed":
            same = (fmt == "deepspeed" and self.engine.name == "deepspeed"
                    and written.get("processes") == self.world_size
                    and written.get("zero_stage") == self.engine.zero_stage)
            if not same:
                raise CheckpointError(
                    f"{directory}: cannot resume it as {self.engine.describe()}: it was written by {by}, and "
                    "DeepSpeed's optimizer state is its own per-process files: resume a DeepSpeed run with the same "
                    "ZeRO stage and process count, and other runs without DeepSpeed" + hint
                )
        self._resume_state = state

    def _load_state(self, directory: Path) -> None:
        """Continue from ``directory``'s trainer state (read by :meth:`_check_resumable`): optimizer (each engine
        its way), scheduler, data order and each process's random state."""
        state = self._resume_state
        fmt = state.get("optimizer_format", "torch")
        names = [f"model.{name}" for name, _ in self.trainable.named_parameters()]
        if self.engine.name == "deepspeed":
            loaded, _ = self.loss_module.load_checkpoint(
                str(directory / STATE_DIR / _DEEPSPEED_DIR), tag=_DEEPSPEED_TAG, load_module_strict=False,
                load_optimizer_states=True, load_lr_scheduler_states=False)
            if loaded is None:
                from ..errors import CheckpointError

                raise CheckpointError(f"{directory}: DeepSpeed could not read its optimizer state there")
        elif self.engine.name == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            full = state["optimizer"] if fmt == "fsdp2-full" else _named_optimizer_state(state["optimizer"], names)
            set_optimizer_state_dict(self.loss_module, self.optimizer, optim_state_dict=full,
                                     options=StateDictOptions(full_state_dict=True))
        else:
            native = state["optimizer"] if fmt == "torch" else _indexed_optimizer_state(state["optimizer"], names)
            self.optimizer.load_state_dict(native)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self.order = state["order"].tolist()
        per_process = state.get("rng_per_process") or []
        mine = self.accelerator.process_index
        _set_rng_state(per_process[mine] if len(per_process) == self.world_size else state["rng"],
                       self.order_generator)


_DEEPSPEED_DIR = "deepspeed"
"""Folder in ``trainer_state/`` of a DeepSpeed run's own checkpoint (its per-process optimizer partitions)."""
_DEEPSPEED_TAG = "zero"


def _named_optimizer_state(native: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A torch optimizer ``state_dict()`` (parameters by position) keyed by parameter name instead, as the
    distributed-checkpoint API's full optimizer state (positions follow the trainer's parameter order)."""
    return {
        "state": {names[int(i)]: v for i, v in native["state"].items()},
        "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in native["param_groups"]],
    }


def _indexed_optimizer_state(named: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The inverse of :func:`_named_optimizer_state`."""
    index = {n: i for i, n in enumerate(names)}
    return {
        "state": {index[n]: v for n, v in named["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]],
    }


class _LossModule(torch.nn.Module):
    """The trainer's forward as a module, so the engines can wrap it (DDP, FSDP2, DeepSpeed).

    Its only submodule is the model (every trainable parameter, the row copies included). ``forward(samples,
    weight=1.0, count_only=False)`` builds the batch from the samples *inside* the forward (embedding lookups,
    encoders and input projectors read parameters that FSDP2 holds whole only during the forward) and returns
    ``(LM loss sum, {modality: L2 sum}, {modality: denoising sum}, counts)`` (see :meth:`Trainer._module_forward`).
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        self._run = trainer._module_forward  # a bound method: not a submodule, no cycle in the module tree
        self._trained = [p for _, p in trainer.trainable.named_parameters()]  # a list: not registered again
        # DeepSpeed's "auto" sizes read model.config; FSDP's default wrap policy reads _no_split_modules
        self.config = getattr(trainer.model.llm, "config", None)
        self._no_split_modules = next(
            (list(m._no_split_modules) for m in trainer.model.llm.modules() if getattr(m, "_no_split_modules", None)), []
        )

    def forward(self, samples: Sequence[Any] = (), weight: float = 1.0, count_only: bool = False,
                grads: Sequence[torch.Tensor] | None = None) -> Any:
        if grads is not None:  # Trainer._ordered_surrogate: sum((p * g).sum()) over the trained parameters
            total = None
            for p, g in zip(self._trained, grads):
                term = (p * g).sum()
                total = term if total is None else total + term
            return total
        return self._run(samples, weight, count_only)


def _enable_gradient_checkpointing(model: NextGPT) -> None:
    """Hugging Face gradient checkpointing on the LLM (non-reentrant: works with frozen inputs and LoRA)."""
    llm = model.llm
    if not getattr(llm, "supports_gradient_checkpointing", True) and not hasattr(llm, "gradient_checkpointing_enable"):
        raise ValueError(f"{type(llm).__name__} does not support gradient checkpointing")
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = getattr(llm, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False


def _media_span_counts(example: Any) -> dict[str, int]:
    """``{modality: signal spans with a target media file}`` of a training example (the denominators of the
    denoising loss)."""
    counts: dict[str, int] = {}
    for spans in [example.signal_spans]:
        for span in spans:
            if span.media_path is not None:
                counts[span.modality] = counts.get(span.modality, 0) + 1
    return counts


def _check_trackers(names: Sequence[str]) -> None:
    """Raise :class:`~nextgpt_core.errors.ConfigError` for a tracker accelerate does not know or cannot import
    (accelerate itself would drop it with a debug message only)."""
    if not names:
        return
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    from ..errors import ConfigError

    known = [str(t.value) for t in LoggerType]
    available = {str(LoggerType(t).value) for t in get_available_trackers()}
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown tracker {name!r}; accelerate knows {', '.join(sorted(known))}")
        if name != "all" and name not in available:
            raise ConfigError(
                f"tracker {name!r} is not installed (pip install {_TRACKER_PACKAGES.get(name, name)}); "
                f"installed: {', '.join(sorted(available)) or 'none'}"
            )


_TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml"}


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """The run's settings as tracker hyper-parameters (scalars and strings only)."""
    out: dict[str, Any] = {}
    for key, value in config.model_dump(mode="json").items():
        out[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def _flat_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A metrics row as tracker scalars: ``l2/<modality>`` for the per-modality L2."""
    out = {k: float(v) for k, v in row.items() if k not in ("l2", "denoise", "step") and isinstance(v, (int, float))}
    out.update({f"l2/{m}": float(v) for m, v in row["l2"].items()})
    out.update({f"denoise/{m}": float(v) for m, v in row.get("denoise", {}).items()})
    return out


def _drop_metrics_after(path: Path, step: int) -> int:
    """Keep only the rows of ``path`` (JSONL metrics) whose step is at most ``step`` (and drop a torn last line);
    rewritten atomically. Returns how many rows were dropped (0 when the file is absent or already clean)."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept: list[str] = []
    for line in lines:
        try:
            row_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill, or not a metrics row
        if row_step <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(path)
    return dropped


def _start_run_folder(directory: Path, config: TrainConfig, *, overwrite: bool, resume: bool, inputs: Sequence[Any]) -> None:
    """Create (or keep, or start over) the run folder and write its marker (kind ``train-run``)."""
    from ..folders import MARKER, TRAIN_RUN, start_folder, write_marker

    start_folder(directory, TRAIN_RUN, overwrite=overwrite, resume=resume, inputs=inputs)
    if not (directory / MARKER).is_file():
        write_marker(directory, "train-run", metrics_file=config.metrics_file, tracker_project=config.tracker_project)


def _write_trainer_state(state: dict[str, Any], directory: Path) -> None:
    """``state.pt`` (everything, ``torch.save``) and ``state.json`` (step, epoch, position, config) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / "state.pt")
    summary = {k: state[k] for k in ("step", "epoch", "position", "resumable", "engine", "optimizer_format", "config")}
    (directory / "state.json").write_text(json.dumps(summary, indent=2) + "\n")
