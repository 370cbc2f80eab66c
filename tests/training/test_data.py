"""Dataset readers: every official format and ours, lazy media, structured targets, and every error path."""

from __future__ import annotations

import doctest
import json
import re

import numpy as np
import pytest
from nextgpt_registry import Registry

from nextgpt_core.conversation import Media, Text
from nextgpt_core.errors import NextGPTError
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.training import data as data_module
from nextgpt_core.training.data import (
    DatasetError,
    MediaLoader,
    detect_format,
    read_dataset,
    sample_to_json,
    write_jsonl,
)

REAL = ["image", "video", "audio", "depth"]
#: Official markup that must never survive into sample text.
MARKUP = re.compile(r"\[(IMG|VID|AUD)\d+\]|</?Img>|</?Vid>|</?Aud>|<(image|video|audio)>|</?(Image|Video|Audio)>")


@pytest.fixture(scope="module")
def reg():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture()
def media(tmp_path):
    """Real files: two PNGs, a WAV and an MP4 (tiny), under tmp_path/media."""
    from nextgpt_audio.media import Audio, AudioIO
    from nextgpt_image.media import ImageIO
    from nextgpt_video.media import Video, VideoIO

    root = tmp_path / "media"
    root.mkdir()
    ImageIO().write(np.full((8, 8, 3), 200, np.uint8), root / "a.png")
    ImageIO().write(np.zeros((8, 8, 3), np.uint8), root / "b.png")
    AudioIO().write(Audio(np.zeros(160, np.float32), 16000), root / "s.wav")
    VideoIO().write(Video(np.zeros((2, 8, 8, 3), np.uint8), 4.0), root / "v.mp4")
    # MosIT's generated media are named mosit_i_*.jpg / mosit_v_*.mp4 / mosit_a_*.wav
    ImageIO().write(np.full((8, 8, 3), 90, np.uint8), root / "mosit_i_0002.jpg")
    VideoIO().write(Video(np.zeros((2, 8, 8, 3), np.uint8), 4.0), root / "mosit_v_0001.mp4")
    return root


def _json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _texts(sample):
    return [p.text for t in sample.conversation.turns for p in t.parts if isinstance(p, Text)]


def _assert_clean(samples):
    for s in samples:
        for text in _texts(s):
            assert not MARKUP.search(text), text
        for t in s.targets:
            assert not MARKUP.search(t.caption)


# ------------------------------------------------------------------------------------------------ X-caption
@pytest.mark.parametrize(
    "name_field,modality,fname,extra",
    [("image_name", "image", "a.png", {"id": "1"}), ("video_name", "video", "v.mp4", {"id": "2"}),
     ("audio_name", "audio", "s.wav", {"audio_id": "3"})],
)
def test_xcaption_stage1_and_stage2(tmp_path, media, reg, name_field, modality, fname, extra):
    path = _json(tmp_path / "pairs.json", [{"caption": "a thing", name_field: fname, **extra}])
    assert detect_format(path) == "xcaption"
    s1 = read_dataset(path, media_root=media, registry=reg)[0]
    user, assistant = s1.conversation.turns
    assert isinstance(user.parts[0], Media) and user.parts[0].modality == modality
    assert user.parts[0].path == media / fname and user.parts[0].data is None  # lazy
    assert user.parts[1] == Text("generate a caption") and assistant.parts == [Text("a thing")]
    assert s1.targets == []
    s2 = read_dataset(path, media_root=media, registry=reg, task="generate")[0]
    assert s2.conversation.turns[0].parts == [Text("a thing")] and s2.inputs == []
    (t,) = s2.targets
    assert (t.modality, t.caption, t.media_path, t.turn_index, t.part_index) == (modality, "a thing", media / fname, 1, 1)


def test_xcaption_format_aliases_and_default_media_root(tmp_path, reg):
    (tmp_path / "x.png").write_bytes(b"not decoded at read time")
    path = _json(tmp_path / "cc3m.json", [{"caption": "c", "id": 0, "image_name": "x.png"}])
    ds = read_dataset(path, format="cc3m", registry=reg)  # media root = the file's folder
    assert ds[0].inputs[0].path == tmp_path / "x.png" and ds[0].sample_id == "0"


# ------------------------------------------------------------------------------------------------ T2M
def test_t2m_output_modality_and_signal_text_stripped(tmp_path, media, reg):
    rows = [
        {"mm_name": "a.png", "conversation": [
            {"from": "human", "value": "Draw a bright square.", "input_modality": "text"},
            {"from": "gpt", "value": "Sure, here it is [IMG0] [IMG1] [IMG2] [IMG3] enjoy!", "caption": "a bright square",
             "output_modality": "image"}], "source_data": {}},
        {"mm_name": "s.wav", "conversation": [
            {"from": "human", "value": "Play silence", "input_modality": "text"},
            {"from": "gpt", "value": "Here you go.", "caption": "silence", "output_modality": "audio"}]},
        {"mm_name": "none", "conversation": [
            {"from": "human", "value": "hi", "input_modality": "text"},
            {"from": "gpt", "value": "hello", "caption": "", "output_modality": "text"}]},
    ]
    path = _json(tmp_path / "image_t2x.json", rows)
    assert detect_format(path) == "t2m"
    ds = read_dataset(path, media_root=media, registry=reg)
    assert ds.report.kept == 3
    first = ds[0]
    assert first.conversation.turns[1].parts == [Text("Sure, here it is"), Text("enjoy!")]
    (t,) = first.targets
    assert (t.modality, t.caption, t.media_path, t.turn_index, t.part_index) == ("image", "a bright square", media / "a.png", 1, 1)
    (t,) = ds[1].targets  # no signal text in the reply: the run goes at the end of the turn
    assert (t.modality, t.part_index) == ("audio", 1)
    assert ds[2].targets == []
    _assert_clean(ds)


def test_t2m_missing_target_media_optional(tmp_path, media, reg):
    rows = [{"mm_name": "gone.png", "conversation": [
        {"from": "human", "value": "Draw", "input_modality": "text"},
        {"from": "gpt", "value": "ok", "caption": "a cat", "output_modality": "image"}]}]
    path = _json(tmp_path / "t.json", rows)
    strict = read_dataset(path, media_root=media, registry=reg)
    assert strict.report.skipped == 1 and strict.report.problems[0].kind == "missing_media"
    lax = read_dataset(path, media_root=media, registry=reg, require_target_media=False)
    assert lax.report.kept == 1 and lax.report.targets_without_media == 1 and lax[0].targets[0].media_path is None
    assert "1 targets without their media file" in lax.report.summary()


# ------------------------------------------------------------------------------------------------ MosIT
def test_mosit_several_media_per_turn(tmp_path, media, reg):
    row = {
        "image_list": [{"image_name": "a.png", "data_source": "x", "caption": "a grey square"},
                       {"image_name": "b.png", "data_source": "x", "caption": "a black square"},
                       {"image_name": "mosit_i_0002.jpg", "data_source": "x", "caption": "a black square"}],
        "video_list": [{"video_name": "mosit_v_0001.mp4", "caption": "a dark clip"}],
        "audio_list": [{"audio_name": "s.wav", "caption": "silence"}],
        "conversation": [
            {"from": "human", "value": "Compare <Image>a.png</Image> and <Image>b.png</Image>, then hear <Audio>s.wav</Audio>."},
            {"from": "gpt", "value": "They differ. Here is a clip: <Video>mosit_v_0001.mp4</Video> and one more "
                                     "<Image>mosit_i_0002.jpg</Image>"},
            {"from": "human", "value": "Thanks!"},
            {"from": "gpt", "value": "You are welcome."},
        ],
    }
    path = _json(tmp_path / "mosit.json", [row])
    assert detect_format(path) == "mosit"
    (s,) = read_dataset(path, media_root=media, registry=reg, on_error="fail")
    user = s.conversation.turns[0].parts
    assert [type(p).__name__ for p in user] == ["Text", "Media", "Text", "Media", "Text", "Media", "Text"]
    assert [m.modality for m in s.inputs] == ["image", "image", "audio"]
    assert [m.path.name for m in s.inputs] == ["a.png", "b.png", "s.wav"]
    assert s.conversation.turns[1].parts == [Text("They differ. Here is a clip:"), Text("and one more")]
    assert [(t.modality, t.caption, t.turn_index, t.part_index) for t in s.targets] == [
        ("video", "a dark clip", 1, 1), ("image", "a black square", 1, 2)]
    assert s.output_modalities == ["video", "image"]
    _assert_clean([s])


def test_mosit_output_without_caption(tmp_path, media, reg):
    row = {"image_list": [], "conversation": [
        {"from": "human", "value": "draw"}, {"from": "gpt", "value": "<Image>mosit_i_0002.jpg</Image>"}]}
    ds = read_dataset(_json(tmp_path / "m.json", [row]), format="mosit", media_root=media, registry=reg)
    assert ds.report.skipped_by_kind == {"missing_caption": 1}
    assert "mosit_i_0002.jpg" in ds.report.problems[0].message and ds.report.problems[0].row == 0


# ------------------------------------------------------------------------------------------------ LLaVA / Alpaca
def test_llava_and_alpaca(tmp_path, media, reg):
    rows = [
        {"image_name": "a.png", "output_modality": "text", "conversation": [
            {"from": "human", "value": "<image>\nWhat is shown?", "input_modality": "image"},
            {"from": "gpt", "value": "A grey square.", "caption": "", "output_modality": "text"},
            {"from": "human", "value": "Sure?", "input_modality": "text"},
            {"from": "gpt", "value": "Yes.", "caption": "", "output_modality": "text"}]},
        {"image_name": "b.png", "conversation": [  # no placeholder: the image goes first in the first human turn
            {"from": "human", "value": "Describe it.", "input_modality": "image"},
            {"from": "gpt", "value": "Black.", "output_modality": "text"}]},
        {"conversation": [  # Alpaca: text only
            {"from": "human", "value": "Give three tips.", "input_modality": "text"},
            {"from": "gpt", "value": "Eat, sleep, walk.", "output_modality": "text"}]},
    ]
    path = _json(tmp_path / "llava.json", rows)
    assert detect_format(path) == "llava"
    ds = read_dataset(path, media_root=media, registry=reg, on_error="fail")
    assert ds[0].conversation.turns[0].parts[0].path == media / "a.png"
    assert ds[0].conversation.turns[0].parts[1] == Text("What is shown?")
    assert len(ds[0].conversation.turns) == 4 and ds[0].targets == []
    assert ds[1].conversation.turns[0].parts[0].path == media / "b.png"
    assert ds[2].inputs == [] and read_dataset(path, format="alpaca", media_root=media, registry=reg).report.kept == 3
    _assert_clean(ds)


# ------------------------------------------------------------------------------------------------ new-code json
def test_new_code_comprehension_and_generation(tmp_path, media, reg):
    rows = [
        {"input_image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat's the image really about?"}, {"from": "gpt", "value": "grey"}]},
        {"output_video": "v.mp4", "video_captions": ["a dark clip"], "video_caption_embeddings": ["v.mp4.npy"],
         "conversations": [{"from": "human", "value": "Can you show me a dark clip?"},
                           {"from": "gpt", "value": "Sure thing! <video>"}]},
    ]
    path = _json(tmp_path / "new.json", rows)
    assert detect_format(path) == "conversations"
    ds = read_dataset(path, media_root=media, registry=reg, on_error="fail")
    assert ds[0].inputs[0].path == media / "a.png" and ds[0].targets == []
    (t,) = ds[1].targets
    assert (t.modality, t.caption, t.media_path, t.part_index) == ("video", "a dark clip", media / "v.mp4", 1)
    assert ds[1].conversation.turns[1].parts == [Text("Sure thing!")]
    _assert_clean(ds)


# ------------------------------------------------------------------------------------------------ our JSONL
def _our_row(**over):
    row = {"id": "r1", "turns": [
        {"role": "user", "parts": [{"text": "Look:"}, {"media": "a.png"}, {"media": "s.wav", "modality": "audio"},
                                   {"text": "and draw both."}]},
        {"role": "assistant", "parts": [{"text": "Here:"}, {"generate": "image", "caption": "a grey square",
                                                            "media": "a.png"},
                                        {"text": "and"}, {"generate": "audio", "caption": "silence"}]},
    ]}
    row.update(over)
    return row


def test_jsonl_reads_structure(tmp_path, media, reg):
    (s,) = read_dataset(_jsonl(tmp_path / "d.jsonl", [_our_row()]), media_root=media, registry=reg, on_error="fail")
    assert [m.modality for m in s.inputs] == ["image", "audio"]  # a.png by suffix, s.wav as named
    assert s.conversation.turns[1].parts == [Text("Here:"), Text("and")]
    assert [(t.modality, t.part_index, t.media_path) for t in s.targets] == [
        ("image", 1, media / "a.png"), ("audio", 2, None)]
    assert s.sample_id == "r1" and s.source == (str(tmp_path / "d.jsonl"), 1)


def test_jsonl_round_trip(tmp_path, media, reg):
    only_target = {"turns": [{"role": "user", "parts": [{"text": "draw"}]},
                             {"role": "assistant", "parts": [{"generate": "video", "caption": "a clip", "media": "v.mp4"}]}]}
    first = read_dataset(_jsonl(tmp_path / "d.jsonl", [_our_row(), only_target]), media_root=media, registry=reg)
    out = write_jsonl(first, tmp_path / "again.jsonl", media_root=media)
    again = read_dataset(out, media_root=media, registry=reg, on_error="fail")
    assert [sample_to_json(s, media) for s in first] == [sample_to_json(s, media) for s in again]
    assert again[1].targets[0].part_index == 0 and again[1].conversation.turns[1].parts == [Text("")]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["turns"][1]["parts"][1] == {"generate": "image", "caption": "a grey square", "media": "a.png"}


def test_target_id_stable():
    from nextgpt_core.training.data import Target, target_id

    a = Target("image", "a cat", None, 1, 0)
    b = Target("image", "a cat", None, 3, 2)
    assert a.target_id == b.target_id == target_id("image", "a cat")
    assert a.target_id != Target("video", "a cat", None, 1, 0).target_id
    assert re.fullmatch(r"[0-9a-f]{24}", a.target_id)


def test_media_loaded_lazily_through_plugin(tmp_path, media, reg):
    (s,) = read_dataset(_jsonl(tmp_path / "d.jsonl", [_our_row()]), media_root=media, registry=reg)
    loader = MediaLoader(reg)
    image, audio = (loader.load(m) for m in s.inputs)
    assert image.size == (8, 8) and audio.sample_rate == 16000


# ------------------------------------------------------------------------------------------------ errors
def test_jsonl_errors_reported_with_line_and_counted(tmp_path, media, reg):
    lines = [
        _our_row(),                                                                            # 1 ok
        "{not json",                                                                           # 2 invalid_json
        "",                                                                                    # 3 blank: not a row
        _our_row(turns=[{"role": "user", "parts": [{"media": "gone.png"}]},
                        {"role": "assistant", "parts": [{"text": "x"}]}]),                   # 4 missing_media
        _our_row(turns=[{"role": "user", "parts": [{"text": "x"}]},
                        {"role": "assistant", "parts": [{"generate": "smell", "caption": "c"}]}]),  # 5 unknown_modality
        _our_row(turns=[]),                                                                    # 6 empty_conversation
        _our_row(turns=[{"role": "user", "parts": [{"text": "x"}]},
                        {"role": "assistant", "parts": [{"generate": "image"}]}]),            # 7 missing_caption
        _our_row(turns=[{"role": "user", "parts": [{"text": 3}]}]),                           # 8 malformed (type)
        "[1, 2]",                                                                              # 9 malformed (not object)
        _our_row(turns=[{"role": "user", "parts": [{"text": "see [IMG0] [IMG1]"}]},
                        {"role": "assistant", "parts": [{"text": "x"}]}]),                   # 10 markup in our text
        _our_row(turns=[{"role": "user", "parts": [{"media": "data.xyz"}]},
                        {"role": "assistant", "parts": [{"text": "x"}]}]),                   # 11 unknown suffix
        _our_row(turns=[{"role": "user", "parts": [{"text": "x"}]},
                        {"role": "assistant", "parts": [{"generate": "depth", "caption": "c"}]}]),  # 12 input-only
        _our_row(),                                                                            # 13 ok
    ]
    path = _jsonl(tmp_path / "bad.jsonl", lines)
    ds = read_dataset(path, media_root=media, registry=reg)
    rep = ds.report
    assert (rep.rows_read, rep.kept, rep.skipped) == (12, 2, 10)
    assert [s.source[1] for s in ds] == [1, 13]
    got = {p.row: p.kind for p in rep.problems}
    assert got == {2: "invalid_json", 4: "missing_media", 5: "unknown_modality", 6: "empty_conversation",
                   7: "missing_caption", 8: "malformed", 9: "malformed", 10: "malformed", 11: "unknown_modality",
                   12: "unknown_modality"}
    assert all(p.file == str(path) and p.row_kind == "line" for p in rep.problems)
    assert "gone.png" in next(p.message for p in rep.problems if p.row == 4)
    assert "'smell'" in next(p.message for p in rep.problems if p.row == 5)
    assert str(rep.problems[0]).startswith(f"{path}, line 2: invalid JSON")
    assert rep.skipped_by_kind["unknown_modality"] == 3
    assert rep.summary().startswith(f"{path} (jsonl): 12 rows read, 2 kept, 10 skipped (")

    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 2: invalid JSON") as info:
        read_dataset(path, media_root=media, registry=reg, on_error="fail")
    assert isinstance(info.value, NextGPTError) and isinstance(info.value, ValueError)
    assert info.value.problem.row == 2


def test_json_array_errors_use_index(tmp_path, media, reg):
    rows = [{"caption": "ok", "image_name": "a.png"}, {"caption": "x", "image_name": "gone.png"},
            {"caption": 5, "image_name": "a.png"}, "a string", {"caption": "", "image_name": "a.png"},
            {"caption": "two", "image_name": "a.png", "audio_name": "s.wav"}]
    path = _json(tmp_path / "cc3m.json", rows)
    ds = read_dataset(path, format="xcaption", media_root=media, registry=reg)
    assert (ds.report.rows_read, ds.report.kept, ds.report.skipped) == (6, 1, 5)
    assert {p.row: p.kind for p in ds.report.problems} == {
        1: "missing_media", 2: "malformed", 3: "malformed", 4: "missing_caption", 5: "malformed"}
    assert all(p.row_kind == "index" for p in ds.report.problems)
    assert str(ds.report.problems[0]).startswith(f"{path}, index 1: image file not found")
    with pytest.raises(DatasetError, match=r"cc3m\.json, index 1: image file not found"):
        read_dataset(path, format="xcaption", media_root=media, registry=reg, on_error="fail")


def test_whole_file_errors(tmp_path, reg):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"caption": "a",\n "image_name": }]')
    for on_error in ("skip", "fail"):  # nothing can be read: always an error naming file, line and column
        with pytest.raises(DatasetError, match=r"broken\.json: invalid JSON at line 2, column"):
            read_dataset(bad, registry=reg, on_error=on_error)
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(tmp_path / "nope.jsonl", registry=reg)
    with pytest.raises(DatasetError, match="expected a json array"):
        read_dataset(_json(tmp_path / "obj.json", {"a": 1}), registry=reg)
    with pytest.raises(DatasetError, match="cannot detect the format"):
        read_dataset(_json(tmp_path / "odd.json", [{"foo": 1}]), registry=reg)
    with pytest.raises(DatasetError, match="JSONL"):
        read_dataset(_json(tmp_path / "ours.json", [{"turns": []}]), registry=reg)
    with pytest.raises(ValueError, match="unknown format"):
        read_dataset(bad, format="csv", registry=reg)
    with pytest.raises(ValueError, match="on_error"):
        read_dataset(bad, on_error="ignore", registry=reg)  # type: ignore[arg-type]


def test_unknown_modality_in_official_tags(tmp_path, media, reg):
    row = {"image_list": [], "conversation": [{"from": "human", "value": "hi"},
                                              {"from": "robot", "value": "x"}]}
    ds = read_dataset(_json(tmp_path / "m.json", [row]), format="mosit", media_root=media, registry=reg)
    assert ds.report.problems[0].kind == "malformed" and "robot" in ds.report.problems[0].message
    # a T2M output modality nobody installed
    t2m = [{"mm_name": "a.png", "conversation": [{"from": "human", "value": "x"},
                                                 {"from": "gpt", "value": "y", "caption": "c", "output_modality": "smell"}]}]
    ds = read_dataset(_json(tmp_path / "t.json", t2m), media_root=media, registry=reg)
    assert ds.report.problems[0].kind == "unknown_modality" and "installed: audio, depth, image, video" in ds.report.problems[0].message


def test_doctest():
    result = doctest.testmod(data_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_jsonl_non_utf8_line(tmp_path, media, reg):
    path = tmp_path / "enc.jsonl"
    path.write_bytes(json.dumps(_our_row()).encode() + b"\n\xff\xfe{}\n   \n")
    ds = read_dataset(path, media_root=media, registry=reg)
    assert (ds.report.rows_read, ds.report.kept) == (2, 1)
    assert ds.report.problems[0].row == 2 and "not UTF-8" in ds.report.problems[0].message
