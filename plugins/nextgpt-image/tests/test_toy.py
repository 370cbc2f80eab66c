"""ImageToyWorld: combinations, captions, held-out split, rendering, read-back (also through PNG and JPEG), the
decoder recipe at the mini scale."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from nextgpt_core.toy.contract import DecoderTraining, EncoderRecipe
from nextgpt_image.media import ImageIO
from nextgpt_image.toy import SIZE_PX, ImageToyWorld

WORLD = ImageToyWorld()
COMBOS = WORLD.combinations()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_combinations_and_held_out() -> None:
    singles = [c for c in COMBOS if c["layout"] == "single"]
    assert len(singles) == 3 * 4 * 2 * 5 * 2 == 240 and len(COMBOS) - len(singles) == 12 * 11 * 2 * 2 == 528
    held = [c for c in COMBOS if WORLD.held_out(c)]
    assert len(held) == 120 and len(held) / len(COMBOS) >= 0.10
    for c in held:
        if c["layout"] == "single":
            assert (c["shape"], c["position"]) in (("triangle", "at the top"), ("square", "on the left"))
        else:
            assert c["shape"] == "triangle" and c["relation"] == "above"
    train = [c for c in COMBOS if not WORLD.held_out(c)]
    assert all({c[k] for c in train if k in c} == set(values) for k, values in WORLD.axes.items())
    assert any(c["shape"] == "triangle" and c.get("position") == "on the left" for c in train)  # the parts are seen


def test_captions_distinct_and_parsed() -> None:
    captions = [WORLD.caption(c) for c in COMBOS]
    assert len(set(captions)) == len(captions)
    for c, caption in zip(COMBOS, captions):
        assert WORLD.parse(f"It is {caption}.") == c


def test_read_back_recovers_every_combination_also_through_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    right = total = 0
    for c in COMBOS:
        right += WORLD.read_back(WORLD.render(c, rng)) == c
        total += 1
    assert right / total >= 0.99, right / total
    io = ImageIO()
    for suffix in (".png", ".jpg"):
        sample = COMBOS[::7]
        ok = sum(WORLD.read_back(io.read(io.write(WORLD.render(c, rng), tmp_path / f"x{suffix}"))) == c for c in sample)
        assert ok / len(sample) >= 0.97, (suffix, ok / len(sample))


def test_render_is_deterministic_and_previews_are_pictures() -> None:
    c = COMBOS[3]
    a, b = WORLD.render(c, np.random.default_rng(1)), WORLD.render(c, np.random.default_rng(1))
    assert a.size == (SIZE_PX, SIZE_PX) and np.array_equal(np.asarray(a), np.asarray(b))
    assert WORLD.preview(a).shape == (SIZE_PX, SIZE_PX, 3)


def test_phrasings_format() -> None:
    assert len(WORLD.generate_requests) >= 10 and len(WORLD.describe_requests) >= 10
    assert all(_fields(t) == {"caption"} for t in WORLD.generate_requests)
    for axis, templates in WORLD.edit_requests.items():
        assert axis in WORLD.axes and all(_fields(t) == {"value"} for t in templates)
    assert all(_fields(t) == {"noun", "size", "position"} for t in WORLD.convert_requests)
    target, fields = WORLD.convert_from({"shape": "circle", "colour": "red", "background": "white"}, np.random.default_rng(0))
    assert target["shape"] == "circle" and set(fields) == {"size", "position"}
    assert WORLD.convert_from({"shape": "circle", "size": "large"}, np.random.default_rng(0)) is None  # no colour


def test_mini_decoder_trains_saves_and_loads_as_stable_diffusion(tmp_path: Path) -> None:
    """The decoder recipe at the mini scale (plumbing, not quality): the folder loads as the plugin's SD-1.5
    decoder, encodes captions to (16, 64) and makes a 32x32 picture."""
    import torch

    from nextgpt_image.decoders import StableDiffusionImageDecoder

    rng = np.random.default_rng(0)
    items = [(c, WORLD.caption(c), WORLD.render(c, rng)) for c in COMBOS[:6]]
    steps: list[int] = []
    WORLD.train_decoder(DecoderTraining(items, tmp_path / "image", "mini", 0, lambda s, n, loss: steps.append(s), lambda line: None))
    assert steps[-1] == sum(WORLD.DECODER_SCALES["mini"][:2])
    decoder = StableDiffusionImageDecoder.from_options(WORLD.decoder_choice(str(tmp_path / "image"))["options"])
    embeds = decoder.encode_text([WORLD.caption(COMBOS[0])])
    assert embeds["prompt_embeds"].shape == (1, 16, 64)
    picture = decoder(embeds, generator=torch.Generator().manual_seed(0), **WORLD.decode_options("mini"))[0]
    assert picture.size == (SIZE_PX, SIZE_PX)
    assert WORLD.encoder_recipe("full") == EncoderRecipe(encoder="image/imagebind", branch="vision",
                                                        encoder_options={"size": "toy", "image_size": SIZE_PX})
