"""Synthetic datasets: deterministic from the seed, files readable by the plugins, dataset files readable by us."""

from __future__ import annotations

import doctest
import sys

import numpy as np
import pytest
from nextgpt_audio.media import AudioIO
from nextgpt_image.media import ImageIO
from nextgpt_registry import Registry
from nextgpt_video.media import VideoIO

from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.training import synthetic
from nextgpt_core.training.data import read_dataset
from nextgpt_core.training.synthetic import make_synthetic_dataset

READERS = {"image": ImageIO, "video": VideoIO, "audio": AudioIO}


@pytest.fixture(scope="module")
def reg():
    return Registry.load(DEFAULT_PLUGINS, allow=["image", "video", "audio"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    a = make_synthetic_dataset(tmp_path_factory.mktemp("a"), n_per_modality=3, seed=7)
    b = make_synthetic_dataset(tmp_path_factory.mktemp("b"), n_per_modality=3, seed=7)
    return a, b


def test_deterministic_from_seed(pair, tmp_path):
    a, b = pair
    assert a.skipped == {} and sorted(a.items) == ["audio", "image", "video"]
    assert a.jsonl.read_bytes() == b.jsonl.read_bytes()
    for m in a.xcaption:
        assert a.xcaption[m].read_bytes() == b.xcaption[m].read_bytes()
    for m, items in a.items.items():
        io = READERS[m]()
        for x, y in zip(items, b.items[m]):
            assert x.caption == y.caption and x.path.name == y.path.name
            assert np.array_equal(np.asarray(io.read(x.path)), np.asarray(io.read(y.path)))
    other = make_synthetic_dataset(tmp_path, n_per_modality=3, seed=8, modalities=("image",))
    assert [i.caption for i in other.items["image"]] != [i.caption for i in a.items["image"]] or not np.array_equal(
        np.asarray(ImageIO().read(other.items["image"][0].path)), np.asarray(ImageIO().read(a.items["image"][0].path)))


def test_files_open_with_plugin_readers(pair):
    a, _ = pair
    image = ImageIO().read(a.items["image"][0].path)
    assert image.size == (64, 64)
    video = VideoIO().read(a.items["video"][0].path)
    assert video.frames.shape == (8, 32, 32, 3) and video.fps == 8.0
    audio = AudioIO().read(a.items["audio"][0].path)
    assert audio.sample_rate == synthetic.AUDIO_RATE and audio.samples.shape == (synthetic.AUDIO_RATE,)


def test_pixels_match_caption(pair):
    a, _ = pair
    item = a.items["image"][0]
    rgb = np.asarray(ImageIO().read(item.path))
    colour = np.array(synthetic.COLOURS[item.attributes["colour"]])
    assert (np.abs(rgb.astype(int) - colour).sum(-1) == 0).sum() > 50
    assert item.caption == synthetic.image_caption(**item.attributes)


def test_dataset_files_read_back(pair, reg):
    a, _ = pair
    ds = read_dataset(a.jsonl, media_root=a.media, registry=reg, on_error="fail")
    assert ds.report.kept == 2 * 9
    gen = [s for s in ds if s.targets]
    assert len(gen) == 9 and all(s.targets[0].media_path is not None for s in gen)
    for m, path in a.xcaption.items():
        for task in ("caption", "generate"):
            x = read_dataset(path, media_root=a.media, registry=reg, task=task, on_error="fail")
            assert x.report.format == "xcaption" and x.report.kept == 3
            assert [s.conversation.turns[1].parts[0].text for s in x] == [i.caption for i in a.items[m]]


def test_missing_plugin_is_skipped_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nextgpt_video.media", None)  # import now fails
    ds = make_synthetic_dataset(tmp_path, n_per_modality=1, modalities=("image", "video"))
    assert "video" not in ds.items and "nextgpt-video" in ds.skipped["video"]
    assert "video" not in ds.xcaption and ds.jsonl.read_text().count("\n") == 2


def test_doctest():
    result = doctest.testmod(synthetic, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
