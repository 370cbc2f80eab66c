"""Experiment trackers through accelerate: TensorBoard event files with the step metrics; a custom tracker gets
every row; a tracker that is unknown or not installed is one clear error before any training."""

from __future__ import annotations

import pytest

from nextgpt_core.errors import ConfigError
from nextgpt_core.training.trainer import Trainer

from .test_trainer import config, new_model, random_targets, samples


def _trainer(registry, tmp, **kw):
    model = new_model(registry)
    data = samples()
    cfg = config(tmp, steps=3, checkpoint_every=None, save_final=False, **kw)
    return Trainer(model, data, random_targets(model, data), cfg)


def test_tensorboard_event_files_hold_the_losses(registry, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _trainer(registry, tmp_path, log_with=["tensorboard"], tracker_project="tb-run").train()
    runs = list((tmp_path / "tb-run").glob("events.out.tfevents.*"))
    assert runs, list(tmp_path.rglob("*"))
    acc = EventAccumulator(str(runs[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss", "lm", "lr", "samples_per_s"} <= set(tags), tags
    assert any(t.startswith("l2/") for t in tags), tags
    logged = [e.value for e in acc.Scalars("loss")]
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3]
    assert logged == pytest.approx(result.losses, rel=1e-6)


def test_a_custom_tracker_gets_every_step(registry, tmp_path):
    from accelerate.tracking import GeneralTracker

    class Recorder(GeneralTracker):
        name = "recorder"
        requires_logging_directory = False

        def __init__(self):
            super().__init__()
            self.rows, self.config = [], None

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.rows.append((step, dict(values)))

    recorder = Recorder()
    model = new_model(registry)
    data = samples()
    result = Trainer(model, data, random_targets(model, data),
                     config(tmp_path, steps=3, checkpoint_every=None, save_final=False), trackers=[recorder]).train()
    assert [s for s, _ in recorder.rows] == [1, 2, 3]
    assert [r["loss"] for _, r in recorder.rows] == pytest.approx(result.losses)
    assert recorder.config["stage"] == 2 and recorder.config["seed"] == 7


@pytest.mark.parametrize(("name", "message"), [("tensorbored", "unknown tracker 'tensorbored'"),
                                               ("wandb", "tracker 'wandb' is not installed (pip install wandb)")])
def test_unknown_or_missing_tracker_is_one_clear_error(registry, tmp_path, name, message):
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        if name == "wandb":
            pytest.fail("wandb is installed in the test environment: pick a tracker that is not")
    with pytest.raises(ConfigError) as err:
        _trainer(registry, tmp_path, log_with=[name])
    assert message in str(err.value)
    assert not (tmp_path / "trainable.json").exists()  # failed before anything was written
