"""Synthetic datasets from the toy world: deterministic from the seed, only training combinations, files readable by
the plugins (and measuring as captioned), dataset files readable by us, missing plugins skipped, no plugin imported
by the module itself."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest
from nextgpt_audio.media import AudioIO
from nextgpt_audio.toy import DURATION, SAMPLE_RATE
from nextgpt_depth.media import DepthIO
from nextgpt_image.media import ImageIO
from nextgpt_image.toy import SIZE_PX as IMAGE_PX
from nextgpt_registry import Registry
from nextgpt_video.media import VideoIO
from nextgpt_video.toy import FPS, FRAMES, SIZE_PX as VIDEO_PX

from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.toy.world import ToyWorld
from nextgpt_core.training import synthetic
from nextgpt_core.training.data import read_dataset
from nextgpt_core.training.synthetic import make_synthetic_dataset

REAL = ["audio", "depth", "image", "video"]
READERS = {"image": ImageIO, "video": VideoIO, "audio": AudioIO, "depth": DepthIO}
PLUGIN_PACKAGES = ("nextgpt_image", "nextgpt_video", "nextgpt_audio", "nextgpt_depth")


@pytest.fixture(scope="module")
def reg():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture(scope="module")
def world(reg):
    return ToyWorld.installed(reg)


@pytest.fixture(scope="module")
def pair(reg, tmp_path_factory):
    a = make_synthetic_dataset(tmp_path_factory.mktemp("a"), n_per_modality=3, seed=7, registry=reg)
    b = make_synthetic_dataset(tmp_path_factory.mktemp("b"), n_per_modality=3, seed=7, registry=reg)
    return a, b


def test_module_imports_no_plugin():
    code = ("import sys, nextgpt_core.training.synthetic\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {PLUGIN_PACKAGES!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_deterministic_from_seed(pair, reg):
    a, b = pair
    assert a.skipped == {} and sorted(a.items) == REAL  # default: every installed toy-world part
    assert a.jsonl.read_bytes() == b.jsonl.read_bytes()
    for m in a.xcaption:
        assert a.xcaption[m].read_bytes() == b.xcaption[m].read_bytes()
    for m, items in a.items.items():
        io = READERS[m]()
        for x, y in zip(items, b.items[m]):
            assert x.caption == y.caption and x.path.name == y.path.name and x.attributes == y.attributes
            assert np.array_equal(_array(io.read(x.path)), _array(io.read(y.path)))
    other = make_synthetic_dataset(a.root.parent / "other", n_per_modality=3, seed=8, modalities=["image"],
                                   registry=reg)
    assert [i.caption for i in other.items["image"]] != [i.caption for i in a.items["image"]]


def _array(media):
    for name in ("frames", "samples"):
        if hasattr(media, name):
            return np.asarray(getattr(media, name))
    return np.asarray(media)


def test_files_open_with_plugin_readers_and_measure_as_captioned(pair, world):
    a, _ = pair
    image = ImageIO().read(a.items["image"][0].path)
    assert image.size == (IMAGE_PX, IMAGE_PX)
    video = VideoIO().read(a.items["video"][0].path)
    assert video.frames.shape == (FRAMES, VIDEO_PX, VIDEO_PX, 3) and video.fps == FPS
    audio = AudioIO().read(a.items["audio"][0].path)
    assert audio.sample_rate == SAMPLE_RATE and audio.samples.shape == (round(DURATION * SAMPLE_RATE),)
    assert DepthIO().read(a.items["depth"][0].path).ndim == 2
    for m, items in a.items.items():
        part = world.parts[m]
        for item in items:
            assert item.caption == part.caption(item.attributes)
            measured = part.read_back(READERS[m]().read(item.path))  # plain signal processing, no network
            assert measured and {k: item.attributes[k] for k in measured} == measured, (m, item.caption, measured)


def test_only_training_combinations_every_one_before_any_twice(reg, world, tmp_path):
    train = {world.parts["audio"].caption(c) for c in world.combinations("audio", "train")}
    held = {world.parts["audio"].caption(c) for c in world.combinations("audio", "held_out")}
    assert held
    ds = make_synthetic_dataset(tmp_path / "all", len(train) + 2, seed=1, modalities=["audio"], registry=reg)
    captions = [i.caption for i in ds.items["audio"]]
    assert set(captions[: len(train)]) == train and not set(captions) & held
    # a subset can be asked for; a held-out combination cannot
    some = world.combinations("audio", "train")[:2]
    sub = make_synthetic_dataset(tmp_path / "sub", 4, modalities=["audio"], registry=reg, combinations={"audio": some})
    assert sorted(i.caption for i in sub.items["audio"]) == sorted(2 * [world.parts["audio"].caption(c) for c in some])
    with pytest.raises(ValueError, match="held out"):
        make_synthetic_dataset(tmp_path / "bad", 1, modalities=["audio"], registry=reg,
                               combinations={"audio": world.combinations("audio", "held_out")[:1]})


def test_xcaption_files_keep_the_official_names(pair):
    a, _ = pair
    assert {m: p.name for m, p in a.xcaption.items()} == {
        "image": "cc3m.json", "video": "webvid.json", "audio": "audiocap.json", "depth": "xcaption_depth.json"}
    audio_rows = json.loads(a.xcaption["audio"].read_text())
    assert set(audio_rows[0]) == {"audio_id", "audio_name", "caption"}
    assert set(json.loads(a.xcaption["image"].read_text())[0]) == {"id", "image_name", "caption"}
    assert set(json.loads(a.xcaption["depth"].read_text())[0]) == {"id", "depth_name", "caption"}


def test_dataset_files_read_back(pair, reg, world):
    a, _ = pair
    generated = [m for m in a.items if world.parts[m].can_generate]
    assert sorted(generated) == ["audio", "image", "video"]
    ds = read_dataset(a.jsonl, media_root=a.media, registry=reg, on_error="fail")
    assert ds.report.kept == 3 * len(a.items) + 3 * len(generated)
    gen = [s for s in ds if s.targets]
    assert len(gen) == 3 * len(generated) and all(s.targets[0].media_path is not None for s in gen)
    for m, path in a.xcaption.items():
        for task in ("caption", "generate") if m in generated else ("caption",):
            x = read_dataset(path, media_root=a.media, registry=reg, task=task, on_error="fail")
            assert x.report.format == "xcaption" and x.report.kept == 3
            assert [s.conversation.turns[1].parts[0].text for s in x] == [i.caption for i in a.items[m]]


def test_missing_plugin_is_skipped_with_a_message(tmp_path, monkeypatch, reg):
    only_image = Registry.load(DEFAULT_PLUGINS, allow=["image"])
    ds = make_synthetic_dataset(tmp_path / "a", n_per_modality=1, modalities=("image", "video"), registry=only_image)
    assert "video" not in ds.items and "no installed plugin" in ds.skipped["video"]
    assert "video" not in ds.xcaption and ds.jsonl.read_text().count("\n") == 2
    # installed, but its toy-world part does not import
    monkeypatch.setitem(sys.modules, "nextgpt_video.toy", None)
    ds = make_synthetic_dataset(tmp_path / "b", n_per_modality=1, modalities=("image", "video"), registry=reg)
    assert sorted(ds.items) == ["image"] and "nextgpt_video.toy" in ds.skipped["video"]


def test_doctest():
    result = doctest.testmod(synthetic, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
