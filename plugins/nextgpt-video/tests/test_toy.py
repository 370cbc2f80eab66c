"""VideoToyWorld: combinations, captions, held-out split, rendering, read-back (also through H.264 MP4), phrasings."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from nextgpt_core.toy.contract import EncoderRecipe
from nextgpt_core.toy.shapes import BACKGROUNDS
from nextgpt_video.media import Video, VideoIO
from nextgpt_video.toy import FPS, FRAMES, SIZE_PX, VideoToyWorld

WORLD = VideoToyWorld()
COMBOS = WORLD.combinations()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_combinations_and_held_out() -> None:
    assert len(COMBOS) == 3 * 4 * 2 * 4 * 2 == 192
    assert all(set(c) == set(WORLD.axes) and all(c[k] in WORLD.axes[k] for k in c) for c in COMBOS)
    held = [c for c in COMBOS if WORLD.held_out(c)]
    assert len(held) == 32 and len(held) / len(COMBOS) >= 0.10
    assert all((c["shape"], c["direction"]) in (("triangle", "up"), ("square", "left")) for c in held)
    # every value of every axis is still seen in training
    train = [c for c in COMBOS if not WORLD.held_out(c)]
    assert all({c[k] for c in train} == set(values) for k, values in WORLD.axes.items())


def test_captions_distinct_and_parsed() -> None:
    captions = [WORLD.caption(c) for c in COMBOS]
    assert len(set(captions)) == len(captions)
    assert WORLD.caption({"shape": "circle", "colour": "red", "background": "white", "direction": "left",
                          "speed": "slowly"}) == "a red circle moving left slowly on a white background"
    for c, caption in zip(COMBOS, captions):
        assert caption == caption.lower() and not caption.endswith(".")
        assert WORLD.parse(caption) == c
        assert WORLD.parse(f"Sure. The video shows {caption}.") == c
    assert WORLD.parse("a red circle on the left on a white background") is None


def test_render_is_a_one_second_clip_and_deterministic() -> None:
    c = COMBOS[0]
    a, b = WORLD.render(c, np.random.default_rng(3)), WORLD.render(c, np.random.default_rng(3))
    assert isinstance(a, Video) and a.fps == FPS and a.frames.shape == (FRAMES, SIZE_PX, SIZE_PX, 3)
    assert a.frames.dtype == np.uint8 and a.duration == 1.0
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, WORLD.render(c, np.random.default_rng(4)).frames)


def test_read_back_recovers_every_combination() -> None:
    rng = np.random.default_rng(0)
    right = total = 0
    for c in COMBOS:
        for _ in range(3):
            video = WORLD.render(c, rng)
            border = np.concatenate([video.frames[:, 0], video.frames[:, -1], video.frames[:, :, 0], video.frames[:, :, -1]])
            assert (border == BACKGROUNDS[c["background"]]).all(), "the shape must stay inside the frame"
            right += WORLD.read_back(video) == c
            total += 1
    assert right / total >= 0.99, f"{right}/{total}"


def test_read_back_through_mp4(tmp_path: Path) -> None:
    io, rng = VideoIO(), np.random.default_rng(1)
    sample = COMBOS[::3]  # 64 combinations: 3 is coprime to every axis's length, so every value of every axis occurs
    assert all({c[k] for c in sample} == set(values) for k, values in WORLD.axes.items())
    right = 0
    for i, c in enumerate(sample):
        path = io.write(WORLD.render(c, rng), tmp_path / f"{i}.mp4")
        video = io.read(path)
        assert video.frames.shape == (FRAMES, SIZE_PX, SIZE_PX, 3) and video.fps == FPS
        right += WORLD.read_back(video) == c
    assert right / len(sample) >= 0.99, f"{right}/{len(sample)}"


def test_read_back_of_an_empty_clip_names_only_the_background() -> None:
    frames = np.zeros((FRAMES, SIZE_PX, SIZE_PX, 3), np.uint8)
    assert WORLD.read_back(Video(frames=frames, fps=FPS)) == {"background": "black"}


def test_request_phrasings() -> None:
    caption = WORLD.caption(COMBOS[0])
    assert len(WORLD.generate_requests) >= 10 and len(set(WORLD.generate_requests)) == len(WORLD.generate_requests)
    assert all(_fields(t) == {"caption"} and caption in t.format(caption=caption) for t in WORLD.generate_requests)
    assert len(WORLD.describe_requests) >= 10 and all(not _fields(t) for t in WORLD.describe_requests)
    for answers in (WORLD.describe_answers, WORLD.generate_answers):
        assert answers and all(_fields(t) == {"caption"} for t in answers)
    assert set(WORLD.edit_requests) == {"colour", "shape", "background", "direction", "speed"}
    for axis, templates in WORLD.edit_requests.items():
        assert len(templates) == 5 and all(_fields(t) == {"value"} for t in templates)
        for value in WORLD.axes[axis]:
            assert all(value in t.format(value=value) for t in templates)
    assert all(WORLD.editable(c) for c in COMBOS)
    assert len(WORLD.convert_requests) >= 10
    assert all(_fields(t) == {"noun", "direction", "speed"} for t in WORLD.convert_requests)


def test_convert_from_a_single_object() -> None:
    rng = np.random.default_rng(0)
    picture = {"layout": "single", "shape": "square", "colour": "blue", "size": "large", "position": "at the top",
               "background": "black"}
    seen = set()
    for _ in range(40):
        target, fields = WORLD.convert_from(picture, rng)
        assert target in COMBOS and set(fields) == {"direction", "speed"}
        assert {k: target[k] for k in ("shape", "colour", "background")} == {"shape": "square", "colour": "blue",
                                                                              "background": "black"}
        assert fields == {"direction": target["direction"], "speed": target["speed"]}
        for template in WORLD.convert_requests:
            text = template.format(noun="picture", **fields)
            assert fields["direction"] in text and fields["speed"] in text and "picture" in text
        seen.add((fields["direction"], fields["speed"]))
    assert len(seen) == 8
    assert WORLD.convert_from({"shape": "circle", "size": "small", "position": "on the left", "distance": "far"}, rng) is None
    pair = {"layout": "pair", "shape": "circle", "colour": "red", "relation": "above", "shape2": "square",
            "colour2": "blue", "background": "white"}
    assert WORLD.convert_from(pair, rng) is None


def test_encoder_recipe() -> None:
    recipe = WORLD.encoder_recipe("mini")
    assert recipe == EncoderRecipe(encoder="video/imagebind", branch="vision",
                                   encoder_options={"size": "toy", "image_size": 32, "clips_per_video": 1, "num_crops": 1})
    assert WORLD.key == "video" and WORLD.noun == "video" and WORLD.can_generate


def test_mini_decoder_trains_saves_and_loads_as_zeroscope(tmp_path: Path) -> None:
    """The decoder recipe at the mini scale (plumbing, not quality): the folder it writes loads as the plugin's
    ZeroScope decoder, encodes captions to (16, 64) and makes an 8-frame 32x32 video."""
    import torch

    from nextgpt_core.toy.contract import DecoderTraining
    from nextgpt_video.decoders import ZeroScopeVideoDecoder

    rng = np.random.default_rng(0)
    combos = [c for c in WORLD.combinations() if not WORLD.held_out(c)][:6]
    items = [(c, WORLD.caption(c), WORLD.render(c, rng)) for c in combos]
    steps: list[int] = []
    facts = WORLD.train_decoder(DecoderTraining(items, tmp_path / "video", "mini", 0, lambda s, n, loss: steps.append(s), lambda line: None))
    assert steps[-1] == sum(WORLD.DECODER_SCALES["mini"][:2]) and facts["videos"] == 6
    decoder = ZeroScopeVideoDecoder.from_options(WORLD.decoder_choice(str(tmp_path / "video"))["options"])
    embeds = decoder.encode_text([WORLD.caption(combos[0])])
    assert embeds["prompt_embeds"].shape == (1, 16, 64)
    video = decoder(embeds, generator=torch.Generator().manual_seed(0), **WORLD.decode_options("mini"))[0]
    assert video.frames.shape == (8, 32, 32, 3) and video.fps == 8.0
