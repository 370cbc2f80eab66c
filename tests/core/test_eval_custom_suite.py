"""`nextgpt eval --suite FILE.jsonl`: a custom suite's file is checked line by line before any model loads."""

from __future__ import annotations

import json

import pytest

from nextgpt_core.errors import ConfigError
from nextgpt_core.eval.custom import load_custom_suite


def _write(tmp_path, *rows):
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_rows_are_read_with_their_defaults_and_media_relative_to_the_file(tmp_path):
    (tmp_path / "pic.png").write_bytes(b"png")
    path = _write(tmp_path,
                  {"turns": ["Draw a red circle."], "want": ["image"], "expect": {"modalities": ["image"]}},
                  "",
                  {"id": "look", "task": "describe", "turns": [{"text": "What is this?", "media": ["pic.png"]}],
                   "expect": {"contains": ["circle"], "read_back": {"image": {"colour": "red"}}}})
    first, second = load_custom_suite(path)
    assert (first.sample_id, first.task, first.want) == ("line1", "custom", ["image"])
    assert second.sample_id == "look" and second.want is None
    assert second.turns == [("What is this?", [(tmp_path / "pic.png", None)])]


@pytest.mark.parametrize("row, message", [
    ("{not json", r"line 1: not JSON"),
    ("[1, 2]", r"line 1: each line must be a JSON object"),
    ({"turns": ["hi"], "expect": {"contains": ["x"]}, "extra": 1}, r"unknown field\(s\) extra"),
    ({"turns": [], "expect": {"contains": ["x"]}}, r"'turns' must be a non-empty list"),
    ({"turns": ["hi"]}, r"'expect' must name at least one check"),
    ({"turns": ["hi"], "expect": {"smells_like": ["x"]}}, r"unknown check\(s\) smells_like"),
    ({"turns": ["hi"], "expect": {"contains": "x"}}, r"expect.contains must be a list"),
    ({"turns": ["hi"], "expect": {"read_back": {"image": "red"}}}, r"expect.read_back must map"),
    ({"turns": [{"text": "hi", "media": ["gone.png"]}], "expect": {"contains": ["x"]}}, r"media file not found: gone.png"),
    ({"turns": [{"text": ""}], "expect": {"contains": ["x"]}}, r"a turn needs text or media"),
])
def test_a_bad_row_is_one_error_naming_the_file_and_line(tmp_path, row, message):
    path = _write(tmp_path, row)
    with pytest.raises(ConfigError, match=message) as caught:
        load_custom_suite(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_duplicate_ids_an_empty_file_and_a_missing_file_are_refused(tmp_path):
    row = {"id": "a", "turns": ["hi"], "expect": {"contains": ["x"]}}
    with pytest.raises(ConfigError, match=r"line 2: id 'a' is used twice"):
        load_custom_suite(_write(tmp_path, row, row))
    with pytest.raises(ConfigError, match="no rows"):
        load_custom_suite(_write(tmp_path, ""))
    with pytest.raises(ConfigError, match="no such file"):
        load_custom_suite(tmp_path / "nowhere.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        load_custom_suite(tmp_path / "folder.jsonl")
