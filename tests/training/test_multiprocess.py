"""Data-parallel training: a 2-process run (accelerate's debug_launcher: two forked CPU processes on gloo, DDP)
ends where a single-process run with the same global batch and seed ends.

debug_launcher forks. A process that has already run torch ops (pytest, after other tests) holds thread pools and
locks that a forked child can inherit locked, and the child hangs; so the launcher runs in a fresh interpreter
(``python -m tests.training.test_multiprocess OUT``) that forks before any torch computation.

The global batch of 3 splits 2 + 1 across the processes (each process goes through its share in micro-batches of
one sample, accumulating gradients) and its samples differ in length and output modality, so
the test fails if the losses were averaged per process instead of over the global batch (tokens, signal spans),
or if the gradients were not synchronised (the processes would drift apart and from the single run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nextgpt_core import NextGPT
from nextgpt_core.training.trainer import TrainConfig, Trainer

from tests.training.test_trainer import random_targets, samples, trained_state

STEPS = 4
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp, **kw) -> TrainConfig:
    # eps 1e-4, not 1e-8: some gradients are zero in exact arithmetic (the key bias of attention: softmax ignores
    # a shift) and rounding-level in float; Adam divides them by their own size, turning different rounding (the
    # two processes add the batch in another order) into full-size updates of opposite sign. A larger eps keeps
    # such noise small and leaves real gradients (1e-4 and up here) normalised as usual.
    base = dict(stage=2, steps=STEPS, batch_size=3, lr=1e-2, eps=1e-4, warmup_steps=1, seed=11, output_dir=tmp,
                progress=False, save_final=False)
    base.update(kw)
    return TrainConfig(**base)


def _train(tmp, **kw) -> tuple[dict[str, torch.Tensor], list[float], int]:
    from nextgpt_core.plugins import get_registry

    model = NextGPT.from_composition("tiny", registry=get_registry())
    data = samples()
    trainer = Trainer(model, data, random_targets(model, data), _config(tmp, **kw))
    result = trainer.train()
    return trained_state(model), result.losses, trainer.world_size


def _worker(out_dir: str) -> None:
    """Runs in each forked process: a fresh accelerate state (the parent's is single-process), then train.

    One intra-op thread: the parent (pytest) has already used torch's OpenMP pool, and a forked child that enters
    an OpenMP parallel region inherited that way can hang.
    """
    from accelerate.state import AcceleratorState

    torch.set_num_threads(1)

    AcceleratorState._reset_state(reset_partial_state=True)
    import torch.distributed as dist
    from pathlib import Path

    # and each process accumulates its share one sample at a time (DDP syncs after the last micro-batch only)
    state, losses, world = _train(Path(out_dir) / "run", micro_batch_size=1)
    rank = dist.get_rank()
    torch.save({"state": state, "losses": losses, "world": world}, Path(out_dir) / f"rank{rank}.pt")


def _launch(out_dir: str) -> None:
    from accelerate import debug_launcher

    debug_launcher(_worker, args=(out_dir,), num_processes=2)


@pytest.mark.subprocess
def test_two_processes_equal_one(registry, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(ROOT / "build" / "test-plugins"),
                                                                    os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-m", "tests.training.test_multiprocess", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single_state, single_losses, world = _train(tmp_path / "single")
    assert world == 1

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for r in ranks:
        # the logged loss is the global batch's, the same as alone
        assert torch.allclose(torch.tensor(r["losses"]), torch.tensor(single_losses), atol=1e-5), (r["losses"], single_losses)
        for name, value in single_state.items():
            assert torch.allclose(r["state"][name], value, atol=1e-5), name
    # the run moved the weights (the comparison is not between two untouched models)
    fresh = trained_state(NextGPT.from_composition("tiny", registry=registry))
    assert any(not torch.allclose(fresh[n], single_state[n]) for n in single_state)
    # both processes hold the same weights: gradients were synchronised
    for name in single_state:
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name


if __name__ == "__main__":  # the fresh interpreter of test_two_processes_equal_one
    os.environ["NEXTGPT_LOAD_PLUGINS"] = "fake"
    _launch(sys.argv[1])
