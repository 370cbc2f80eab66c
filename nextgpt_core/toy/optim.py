"""The update every toy-world training loop makes: :class:`TrainingSteps` (AdamW, warm-up then cosine decay,
gradient clipping, a loss record and a progress callback), and :func:`cosine_schedule`.

The toy world trains its frozen networks (ImageBind branches, the LLM, the decoders' parts) with small hand-written
loops; each builds a batch and a loss its own way and hands the loss to :meth:`TrainingSteps.update`.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch

__all__ = ["Progress", "TrainingSteps", "cosine_schedule"]

#: ``progress(step, total, loss)``, called after every step
Progress = Callable[[int, int, float], None]


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to 5% of the peak."""
    warm = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainingSteps:
    """AdamW over ``params`` for ``steps`` updates with :func:`cosine_schedule`.

    Args:
        params: the tensors the optimizer updates.
        steps: how many :meth:`update` calls the schedule spans.
        lr, betas, weight_decay: AdamW's.
        clip: the gradient-norm limit (``None``: no clipping).
        clip_params: the tensors whose gradient norm is clipped (default: ``params``).
        after_step: called after each optimizer step, before the schedule moves (e.g. re-applying a mask).
        progress: ``progress(step, steps, loss)`` after each update.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        steps: int,
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        clip: float | None = 1.0,
        clip_params: Iterable[torch.Tensor] | None = None,
        after_step: Callable[[], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.params = list(params)
        self.clip_params = self.params if clip_params is None else list(clip_params)
        self.steps = steps
        self.clip = clip
        self.after_step = after_step
        self.progress = progress
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.schedule = cosine_schedule(self.optimizer, steps)
        self.losses: list[float] = []
        self.started = time.perf_counter()

    def update(self, loss: torch.Tensor) -> float:
        """Back-propagate the scalar ``loss``, clip, step the optimizer and the schedule, clear the gradients,
        record and report the loss; returns it as a float."""
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.clip_params, self.clip)
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        self.losses.append(value)
        if self.progress is not None:
            self.progress(len(self.losses), self.steps, value)
        return value

    def facts(self) -> dict[str, float]:
        """``{"steps", "seconds", "first_loss", "final_loss"}``: the losses are means over the first and last tenth
        of the updates made (NaN before any)."""
        tenth = max(1, len(self.losses) // 10)
        return {
            "steps": len(self.losses),
            "seconds": round(time.perf_counter() - self.started, 1),
            "first_loss": round(sum(self.losses[:tenth]) / tenth, 5) if self.losses else float("nan"),
            "final_loss": round(sum(self.losses[-tenth:]) / tenth, 5) if self.losses else float("nan"),
        }
