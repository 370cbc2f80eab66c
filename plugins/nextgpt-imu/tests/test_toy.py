"""IMUToyWorld: combinations, held-out split, rendering, read-back (also through .npy and CSV, and resampled)."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from nextgpt_core.toy.contract import EncoderRecipe
from nextgpt_imu.encoders import ImageBindIMUEncoder
from nextgpt_imu.media import IMU, IMUIO
from nextgpt_imu.preprocess import resample
from nextgpt_imu.toy import RATE_HZ, SAMPLES, IMUToyWorld

WORLD = IMUToyWorld()
COMBOS = WORLD.combinations()


def test_combinations_and_held_out() -> None:
    assert len(COMBOS) == 3 * 3 * 2 == 18
    held = [c for c in COMBOS if WORLD.held_out(c)]
    assert len(held) == 2 and len(held) / len(COMBOS) >= 0.10
    train = [c for c in COMBOS if not WORLD.held_out(c)]
    assert all({c[k] for c in train} == set(values) for k, values in WORLD.axes.items())
    captions = [WORLD.caption(c) for c in COMBOS]
    assert len(set(captions)) == len(captions)
    assert all(WORLD.parse(f"The recording shows {cap}.") == c for c, cap in zip(COMBOS, captions))


def test_render_is_five_seconds_at_40_hz_and_deterministic() -> None:
    a, b = WORLD.render(COMBOS[4], np.random.default_rng(1)), WORLD.render(COMBOS[4], np.random.default_rng(1))
    assert isinstance(a, IMU) and a.samples.shape == (SAMPLES, 6) and a.sample_rate == RATE_HZ
    np.testing.assert_array_equal(a.samples, b.samples)


def test_read_back_through_files_and_resampling(tmp_path: Path) -> None:
    io, rng = IMUIO(), np.random.default_rng(0)
    right = total = 0
    for i, c in enumerate(COMBOS):
        for r in range(4):
            imu = WORLD.render(c, rng)
            via = io.read(io.write(imu, tmp_path / f"{i}-{r}{'.npy' if r % 2 else '.csv'}"))
            np.testing.assert_array_equal(via.samples, imu.samples)
            up = IMU(resample(imu, 100.0), 100.0)  # the same motion recorded at 100 Hz reads back the same
            right += (WORLD.read_back(via) == c) + (WORLD.read_back(up) == c)
            total += 2
    assert right / total >= 0.98, f"{right} of {total}"


def test_recipe_builds_the_toy_encoder() -> None:
    recipe = WORLD.encoder_recipe("mini")
    assert recipe == EncoderRecipe(encoder="imu/imagebind", branch="imu", encoder_options={"size": "toy", "sample_rate": 40.0})
    encoder = ImageBindIMUEncoder.from_options(recipe.encoder_options)
    x = encoder.preprocess(WORLD.render(COMBOS[0], np.random.default_rng(0)))
    assert x.shape == (6, 200) and encoder(x[None]).shape == (1, 1, 64)
    fields = {n for t in WORLD.describe_requests for _, n, _, _ in string.Formatter().parse(t) if n}
    assert not WORLD.can_generate and len(WORLD.describe_requests) >= 10 and not fields
