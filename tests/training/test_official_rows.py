"""The official data files, read as the official code reads them. Every row here is shaped exactly as the official
file or preprocessing function produces it (NExT-GPT/NExT-GPT at 60d618b):

- ``data/prepare_data.py::preprocess_llava``: every human turn gets ``<image>`` (before or after its text) and
  ``input_image`` repeats the image once per ``<image>``; ``preprocess_alpaca``: ``{"conversations": [...]}`` only;
  ``preprocess_comprehension_data``: ``input_image`` + ``"<image>\\n" + prompt``;
- ``NExT-GPT-Lagacy/code/dataset/preprocess_dataset.py::load_alpaca``: ``image_name: "00000000000"``,
  ``input_modality: "text"``, gpt turns ``caption: ""``, ``output_modality: "text"``; ``load_llava``: the first
  human turn ``input_modality: "image"``, later ones ``"text"``;
- MosIT raw (``mosit.json``, read by ``preprocess_it_mosit``): ``image_list``/``video_list``/``audio_list`` of
  ``{"<m>_name", "data_source", "caption"}`` and inline ``<Image>name</Image>`` tags; in gpt turns only
  ``mosit_i_*.jpg`` / ``mosit_v_*.mp4`` / ``mosit_a_*.wav`` become outputs, every other tag is removed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from nextgpt_registry import Registry

from nextgpt_core.conversation import Media, Text
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.training.data import read_dataset

REAL = ["image", "video", "audio"]


@pytest.fixture(scope="module")
def reg():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture()
def media(tmp_path):
    from nextgpt_audio.media import Audio, AudioIO
    from nextgpt_image.media import ImageIO
    from nextgpt_video.media import Video, VideoIO

    root = tmp_path / "media"
    root.mkdir()
    for name, value in (("COCO_train2014_000000000009.jpg", 10), ("cc3m_0001.jpg", 20), ("mosit_i_0001.jpg", 30),
                        ("mosit_i_0002.jpg", 40)):
        ImageIO().write(np.full((8, 8, 3), value, np.uint8), root / name)
    VideoIO().write(Video(np.zeros((2, 8, 8, 3), np.uint8), 4.0), root / "mosit_v_0001.mp4")
    VideoIO().write(Video(np.zeros((2, 8, 8, 3), np.uint8), 4.0), root / "clip.mp4")
    AudioIO().write(Audio(np.zeros(160, np.float32), 16000), root / "mosit_a_0001.wav")
    return root


def _read(tmp_path, media, reg, rows, **kw):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows, indent=4))
    return read_dataset(path, media_root=media, registry=reg, **kw)


def _media_per_turn(sample):
    return [[p.path.name for p in t.parts if isinstance(p, Media)] for t in sample.conversation.turns]


# ------------------------------------------------------------------------------------------------ new-code json
def test_preprocessed_llava_every_human_turn_has_its_image(tmp_path, media, reg):
    """preprocess_llava's output: <image> in every human turn (prepended or appended at random) and input_image
    repeated once per <image>. Each <image> takes the next input, in order over all turns (it was skipped as
    malformed: every input was moved into the first turn, leaving the later placeholders without one)."""
    name = "COCO_train2014_000000000009.jpg"
    row = {
        "input_image": [name, name, name],
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is on the plate?", "input_modality": "image"},
            {"from": "gpt", "value": "Broccoli and meat.", "caption": "", "output_modality": "text"},
            {"from": "human", "value": "Is it healthy?\n<image>", "input_modality": "text"},
            {"from": "gpt", "value": "Mostly.", "caption": "", "output_modality": "text"},
            {"from": "human", "value": "<image>\nWhat else?", "input_modality": "text"},
            {"from": "gpt", "value": "A fork.", "caption": "", "output_modality": "text"},
        ],
    }
    ds = _read(tmp_path, media, reg, [row], on_error="fail")
    assert ds.report.format == "conversations" and ds.report.kept == 1
    (s,) = ds
    assert _media_per_turn(s) == [[name], [], [name], [], [name], []]
    assert s.conversation.turns[2].parts == [Text("Is it healthy?"), s.conversation.turns[2].parts[1]]
    assert s.targets == []


def test_the_only_placeholder_in_a_later_turn_takes_the_input(tmp_path, media, reg):
    rows = [
        {"input_image": "cc3m_0001.jpg", "conversations": [
            {"from": "human", "value": "Hello!"}, {"from": "gpt", "value": "Hi, how can I help?"},
            {"from": "human", "value": "<image>\nWhat's the image really about?"}, {"from": "gpt", "value": "a dog"}]},
        # an input no placeholder takes goes first in the first human turn; placeholders keep theirs
        {"input_image": ["cc3m_0001.jpg"], "input_video": ["clip.mp4"], "conversations": [
            {"from": "human", "value": "Hello!"}, {"from": "gpt", "value": "Hi."},
            {"from": "human", "value": "<video>\nAnd this?"}, {"from": "gpt", "value": "a clip"}]},
    ]
    a, b = _read(tmp_path, media, reg, rows, on_error="fail")
    assert _media_per_turn(a) == [[], [], ["cc3m_0001.jpg"], []]
    assert _media_per_turn(b) == [["cc3m_0001.jpg"], [], ["clip.mp4"], []]
    too_many = {"input_image": "cc3m_0001.jpg", "conversations": [
        {"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "two?"}]}
    ds = _read(tmp_path, media, reg, [too_many])
    assert ds.report.skipped_by_kind == {"malformed": 1} and "more <image> placeholders" in ds.report.problems[0].message


def test_preprocessed_alpaca_and_comprehension_rows(tmp_path, media, reg):
    rows = [
        {"conversations": [  # preprocess_alpaca: (instruction + " " + input).strip(), output
            {"from": "human", "value": "Give three tips for staying healthy."},
            {"from": "gpt", "value": "1. Eat a balanced diet. 2. Exercise. 3. Sleep."}]},
        {"input_image": "cc3m_0001.jpg", "conversations": [  # preprocess_comprehension_data
            {"from": "human", "value": "<image>\nWhat is the main idea of the image?"},
            {"from": "gpt", "value": "a dog on the grass"}]},
    ]
    alpaca, comp = _read(tmp_path, media, reg, rows, on_error="fail")
    assert alpaca.inputs == [] and alpaca.conversation.turns[1].parts == [Text("1. Eat a balanced diet. 2. Exercise. 3. Sleep.")]
    assert _media_per_turn(comp) == [["cc3m_0001.jpg"], []]


# ------------------------------------------------------------------------------------------------ legacy LLaVA / Alpaca
def _alpaca_row(instruction: str, inp: str, output: str) -> dict:
    """load_alpaca's row."""
    return {"image_name": "00000000000", "output_modality": "text", "conversation": [
        {"from": "human", "value": instruction + inp, "input_modality": "text"},
        {"from": "gpt", "value": output, "caption": "", "output_modality": "text"}]}


def test_official_alpaca_file_is_text_only(tmp_path, media, reg):
    """The official Alpaca file names the placeholder image "00000000000" with input_modality "text"; the legacy
    loader reads it as text -> text and never opens image_name (it was skipped whole as missing media)."""
    rows = [_alpaca_row("Give three tips for staying healthy.", "", "1. Eat well."),
            _alpaca_row("Translate to French: ", "Hello", "Bonjour")]
    ds = _read(tmp_path, media, reg, rows, on_error="fail")
    assert ds.report.format == "llava" and ds.report.kept == 2 and ds.report.problems == []
    assert [s.inputs for s in ds] == [[], []]
    assert ds[1].conversation.turns[0].parts == [Text("Translate to French: Hello")]


def _llava_row(image_name: str, output_modality: str = "text", caption: str = "") -> dict:
    """load_llava's row (the first human turn input_modality "image", later ones "text")."""
    return {"image_name": image_name, "output_modality": "text", "conversation": [
        {"from": "human", "value": "<image>\nWhat is on the plate?", "input_modality": "image"},
        {"from": "gpt", "value": "Broccoli.", "caption": caption, "output_modality": output_modality},
        {"from": "human", "value": "Is it healthy?", "input_modality": "text"},
        {"from": "gpt", "value": "Yes.", "caption": "", "output_modality": "text"}]}


def test_official_llava_rows_check_the_image_file(tmp_path, media, reg):
    rows = [
        _llava_row("COCO_train2014_000000000009.jpg"),
        _llava_row("COCO_missing.jpg"),          # not on disk
        _llava_row("clip.mp4"),                  # a video named as the image
        _llava_row("00000000000"),               # no suffix: nothing says it is an image
    ]
    ds = _read(tmp_path, media, reg, rows)
    assert ds.report.kept == 1 and _media_per_turn(ds[0]) == [["COCO_train2014_000000000009.jpg"], [], [], []]
    problems = {p.row: (p.kind, p.message) for p in ds.report.problems}
    assert problems[1][0] == "missing_media" and "COCO_missing.jpg" in problems[1][1]
    assert problems[2] == ("unknown_modality", "'clip.mp4' is a video file by its suffix, but the row's input_modality is 'image'")
    assert problems[3][0] == "unknown_modality" and "00000000000" in problems[3][1]


def test_official_llava_gpt_turn_outputs_are_targets_not_dropped(tmp_path, media, reg):
    """A gpt turn's output_modality/caption (the legacy schema is T2M's: build_one_instance_stage_3 appends that
    modality's signal tokens) becomes a target; without a caption the row is reported, not silently read as text."""
    rows = [_llava_row("COCO_train2014_000000000009.jpg", "image", "a plate of broccoli"),
            _llava_row("COCO_train2014_000000000009.jpg", "image", "")]
    ds = _read(tmp_path, media, reg, rows)
    assert [(t.modality, t.caption, t.turn_index) for t in ds[0].targets] == [("image", "a plate of broccoli", 1)]
    assert ds.report.skipped_by_kind == {"missing_caption": 1} and ds.report.problems[0].row == 1


# ------------------------------------------------------------------------------------------------ MosIT
def test_mosit_only_generated_media_names_are_outputs(tmp_path, media, reg):
    row = {
        "image_list": [
            {"image_name": "cc3m_0001.jpg", "data_source": "cc3m", "caption": "a dog on the grass"},
            {"image_name": "mosit_i_0001.jpg", "data_source": "sd", "caption": "a cartoon dog"},
            {"image_name": "mosit_i_0002.jpg", "data_source": "sd", "caption": "a dog in the snow"},
        ],
        "video_list": [{"video_name": "mosit_v_0001.mp4", "data_source": "zeroscope", "caption": "a dog running"}],
        "audio_list": [{"audio_name": "mosit_a_0001.wav", "data_source": "audioldm", "caption": "a dog barking"}],
        "conversation": [
            {"from": "human", "value": "Here is my dog <Image>cc3m_0001.jpg</Image>. Draw it as a cartoon."},
            {"from": "gpt", "value": "Your dog <Image>cc3m_0001.jpg</Image> as a cartoon: <Image>mosit_i_0001.jpg</Image>"},
            {"from": "human", "value": "Now in the snow, running, and let me hear it."},
            {"from": "gpt", "value": "Here: <Image>mosit_i_0002.jpg</Image> <Video>mosit_v_0001.mp4</Video> "
                                     "<Audio>mosit_a_0001.wav</Audio> and <image>mosit_i_0001.jpg</image> again."},
        ],
    }
    ds = _read(tmp_path, media, reg, [row], on_error="fail")
    assert ds.report.format == "mosit"
    (s,) = ds
    assert [(t.modality, t.caption, t.turn_index) for t in s.targets] == [
        ("image", "a cartoon dog", 1), ("image", "a dog in the snow", 3), ("video", "a dog running", 3),
        ("audio", "a dog barking", 3)]
    assert [m.path.name for m in s.inputs] == ["cc3m_0001.jpg"]  # the human turn's media stay inputs
    # the reply's mention of the input and the lower-case tag are removed, not outputs (counted)
    assert s.conversation.turns[1].parts == [Text("Your dog as a cartoon:")]
    assert s.conversation.turns[3].parts == [Text("Here:"), Text("and again.")]
    assert ds.report.references_dropped == 2 and "2 media references in replies" in ds.report.summary()
