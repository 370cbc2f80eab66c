"""DepthToyWorld: combinations, captions, held-out split, rendering, read-back (also through 16-bit PNG), phrasings."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from nextgpt_core.toy.contract import EncoderRecipe
from nextgpt_depth.media import DepthIO
from nextgpt_depth.toy import SIZE_PX, WALL_MM, DepthToyWorld

WORLD = DepthToyWorld()
COMBOS = WORLD.combinations()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_combinations_and_held_out() -> None:
    assert len(COMBOS) == 3 * 2 * 5 * 2 == 60
    assert all(set(c) == set(WORLD.axes) and all(c[k] in WORLD.axes[k] for k in c) for c in COMBOS)
    held = [c for c in COMBOS if WORLD.held_out(c)]
    assert len(held) == 6 and len(held) / len(COMBOS) >= 0.10
    assert all((c["shape"], c["position"]) == ("triangle", "on the left")
               or (c["shape"], c["position"], c["distance"]) == ("square", "at the bottom", "far") for c in held)
    train = [c for c in COMBOS if not WORLD.held_out(c)]
    assert all({c[k] for c in train} == set(values) for k, values in WORLD.axes.items())


def test_captions_distinct_and_parsed() -> None:
    captions = [WORLD.caption(c) for c in COMBOS]
    assert len(set(captions)) == len(captions)
    assert WORLD.caption({"shape": "circle", "size": "large", "position": "on the left", "distance": "close"}) == (
        "a large circle on the left, close to the camera")
    assert WORLD.caption({"shape": "square", "size": "small", "position": "at the top", "distance": "far"}) == (
        "a small square at the top, far from the camera")
    for c, caption in zip(COMBOS, captions):
        assert caption == caption.lower() and not caption.endswith(".")
        assert WORLD.parse(caption) == c
        assert WORLD.parse(f"The depth map shows {caption}.") == c


def test_render_is_millimetres_and_deterministic() -> None:
    c = COMBOS[0]
    a, b = WORLD.render(c, np.random.default_rng(3)), WORLD.render(c, np.random.default_rng(3))
    assert a.dtype == np.float32 and a.shape == (SIZE_PX, SIZE_PX)
    assert np.array_equal(a, np.rint(a)) and a.min() > 0 and a.max() < 65535
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, WORLD.render(c, np.random.default_rng(4)))
    corners = a[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(np.abs(corners - WALL_MM) < 50)  # the wall: far, nearly flat


def test_read_back_recovers_every_combination_through_png(tmp_path: Path) -> None:
    io, rng = DepthIO(), np.random.default_rng(0)
    right = right_png = total = 0
    for i, c in enumerate(COMBOS):
        for r in range(3):
            depth = WORLD.render(c, rng)
            path = io.write(depth, tmp_path / f"{i}-{r}.png")
            again = io.read(path)
            np.testing.assert_array_equal(again, depth)  # whole millimetres: the 16-bit PNG is lossless
            right += WORLD.read_back(depth) == c
            right_png += WORLD.read_back(again) == c
            total += 1
    assert right / total >= 0.99 and right_png / total >= 0.99, f"{right}, {right_png} of {total}"


def test_read_back_of_a_bare_wall_measures_nothing() -> None:
    assert WORLD.read_back(np.full((SIZE_PX, SIZE_PX), WALL_MM, np.float32)) == {}


def test_input_only_phrasings() -> None:
    assert WORLD.key == "depth" and WORLD.noun == "depth map" and not WORLD.can_generate
    assert len(WORLD.describe_requests) >= 10 and all(not _fields(t) for t in WORLD.describe_requests)
    assert WORLD.describe_answers and all(_fields(t) == {"caption"} for t in WORLD.describe_answers)
    assert not WORLD.generate_requests and not WORLD.edit_requests and not WORLD.convert_requests
    assert not any(WORLD.editable(c) for c in COMBOS)
    picture = {"layout": "single", "shape": "circle", "colour": "red", "size": "small", "position": "on the left",
               "background": "white"}
    assert WORLD.convert_from(picture, np.random.default_rng(0)) is None


def test_encoder_recipe() -> None:
    assert WORLD.encoder_recipe("full") == EncoderRecipe(encoder="depth/imagebind", branch="depth", encoder_options={"size": "toy", "image_size": 32})
