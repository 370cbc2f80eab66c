"""ThermalToyWorld: combinations, captions, held-out split, rendering, read-back (also through 8-bit PNG), phrasings."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from nextgpt_core.toy.contract import EncoderRecipe
from nextgpt_thermal.encoders import ImageBindThermalEncoder
from nextgpt_thermal.media import ThermalIO
from nextgpt_thermal.toy import SIZE_PX, ThermalToyWorld

WORLD = ThermalToyWorld()
COMBOS = WORLD.combinations()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_combinations_and_held_out() -> None:
    assert len(COMBOS) == 3 * 5 * 2 * 2 == 60
    held = [c for c in COMBOS if WORLD.held_out(c)]
    assert len(held) == 6 and len(held) / len(COMBOS) >= 0.10
    train = [c for c in COMBOS if not WORLD.held_out(c)]
    assert all({c[k] for c in train} == set(values) for k, values in WORLD.axes.items())  # every value is seen


def test_captions_distinct_and_parsed() -> None:
    captions = [WORLD.caption(c) for c in COMBOS]
    assert len(set(captions)) == len(captions)
    assert WORLD.caption({"shape": "circle", "position": "on the left", "heat": "hot", "background": "cold"}) == (
        "a hot circle on the left against a cold background")
    for c, caption in zip(COMBOS, captions):
        assert WORLD.parse(f"The thermal image shows {caption}.") == c


def test_render_is_8_bit_and_deterministic() -> None:
    c = COMBOS[0]
    a, b = WORLD.render(c, np.random.default_rng(3)), WORLD.render(c, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == (SIZE_PX, SIZE_PX)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, WORLD.render(c, np.random.default_rng(4)))


def test_read_back_recovers_the_combinations_through_png(tmp_path: Path) -> None:
    io, rng = ThermalIO(), np.random.default_rng(0)
    right = total = 0
    for i, c in enumerate(COMBOS):
        for r in range(3):
            image = WORLD.render(c, rng)
            again = io.read(io.write(image, tmp_path / f"{i}-{r}.png"))
            np.testing.assert_array_equal(again, image)  # 8-bit PNG is lossless
            right += WORLD.read_back(again) == c
            total += 1
    assert right / total >= 0.98, f"{right} of {total}"


def test_read_back_of_a_plain_background_measures_nothing() -> None:
    assert WORLD.read_back(np.full((SIZE_PX, SIZE_PX), 40, np.uint8)) == {}


def test_input_only_phrasings_and_recipe() -> None:
    assert WORLD.key == "thermal" and not WORLD.can_generate
    assert len(WORLD.describe_requests) >= 10 and all(not _fields(t) for t in WORLD.describe_requests)
    assert all(_fields(t) == {"caption"} for t in WORLD.describe_answers)
    assert not any(WORLD.editable(c) for c in COMBOS)
    recipe = WORLD.encoder_recipe("full")
    assert recipe == EncoderRecipe(encoder="thermal/imagebind", branch="thermal", encoder_options={"size": "toy", "image_size": 32})
    encoder = ImageBindThermalEncoder.from_options(recipe.encoder_options)
    x = encoder.preprocess(WORLD.render(COMBOS[5], np.random.default_rng(0)))
    assert x.shape == (1, 32, 32) and encoder(x[None]).shape == (1, 1, 64)
