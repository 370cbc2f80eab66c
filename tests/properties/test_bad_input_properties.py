"""Property-based tests (hypothesis) over every kind of input a user controls: media files, composition files,
dataset rows, API bodies and output folders. The property is the project's rule: bad input is one clear error of
nextgpt's own type (one line), never another exception, a 500, or a lost file.

Example counts are kept small (the suite's time budget); the seeds are derandomized so a run is reproducible.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextgpt_core.errors import NextGPTError

SETTINGS = dict(max_examples=int(os.environ.get("NEXTGPT_HYPOTHESIS_EXAMPLES", "25")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 2_000, text[:300]


# ---------------------------------------------------------------------------------------------- media readers
def _valid_files(tmp: Path) -> dict[str, tuple[object, Path]]:
    from nextgpt_audio.media import AudioIO
    from nextgpt_depth.media import DepthIO
    from nextgpt_image.media import ImageIO
    from nextgpt_video.media import Video, VideoIO

    image, audio, video, depth = ImageIO(), AudioIO(), VideoIO(), DepthIO()
    return {
        "png": (image, image.write(image.example(), tmp / "x.png")),
        "wav": (audio, audio.write(audio.example(), tmp / "x.wav")),
        "flac": (audio, audio.write(audio.example(), tmp / "x.flac")),
        "mp4": (video, video.write(Video(video.example().frames[:4, :32, :32], fps=4.0), tmp / "x.mp4")),
        "depth": (depth, depth.write(np.ones((8, 8), np.float32), tmp / "d.png")),
        "npy": (depth, depth.write(np.ones((8, 8), np.float32), tmp / "d.npy")),
    }


@pytest.fixture(scope="module")
def valid_media(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("valid")
    return {k: (io, path, path.read_bytes()) for k, (io, path) in _valid_files(tmp).items()}


@pytest.mark.parametrize("kind", ["png", "wav", "flac", "mp4", "depth", "npy"])
@settings(**SETTINGS)
@given(data=st.data())
def test_media_readers_on_damaged_files(valid_media, tmp_path, kind, data):
    """A valid file truncated, with bytes overwritten, or with garbage appended: read() and probe() give the media
    or one MediaError line, never another exception."""
    from nextgpt_core.errors import MediaError

    io, path, good = valid_media[kind]
    how = data.draw(st.sampled_from(["truncate", "overwrite", "append", "random"]))
    if how == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "overwrite":
        blob = bytearray(good)
        for _ in range(data.draw(st.integers(1, 16))):
            blob[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    elif how == "append":
        blob = good + data.draw(st.binary(min_size=1, max_size=256))
    else:
        blob = data.draw(st.binary(max_size=512))
    target = tmp_path / f"fuzz{path.suffix}"
    target.write_bytes(blob)
    for method in ("read", "probe"):
        fn = getattr(io, method, None)
        if fn is None:
            continue
        try:
            fn(target)
        except MediaError as exc:
            _one_line(exc)


# ---------------------------------------------------------------------------------------------- compositions
_KEYS = ["name", "llm", "tiny", "path", "hidden_size", "num_attention_heads", "num_key_value_heads",
         "intermediate_size", "num_hidden_layers", "modalities", "fake_image", "preset", "prompt", "generation",
         "max_new_tokens", "lora", "enabled", "r", "seed", "decoder", "encoder", "options", "id", "bogus"]
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=12), st.sampled_from(["tiny", "linear", "fake-decoder", "${UNSET_NEXTGPT_X}"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)),
                       max_leaves=12)


@settings(**SETTINGS)
@given(body=st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6))
def test_composition_dicts_are_accepted_or_one_error(registry, body):
    from nextgpt_core.composition import load_composition, resolve_composition

    try:
        resolve_composition(load_composition(body), registry)
    except NextGPTError as exc:
        _one_line(exc)


@settings(**SETTINGS)
@given(text=st.one_of(st.binary(max_size=300), st.text(alphabet=string.printable, max_size=300).map(str.encode)))
def test_composition_files_of_any_bytes(registry, tmp_path, text):
    from nextgpt_core.composition import load_composition

    path = tmp_path / "c.toml"
    path.write_bytes(b'name = "x"\n[llm.tiny]\n' + text)
    try:
        load_composition(path)
    except NextGPTError as exc:
        _one_line(exc)


# ---------------------------------------------------------------------------------------------- dataset rows
_row_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["id", "turns", "role", "parts", "text", "media", "generate", "caption", "modality",
                         "conversations", "from", "value", "image_name", "x"]), inner, max_size=4)),
    max_leaves=16)


@settings(**SETTINGS)
@given(rows=st.lists(_row_values, min_size=1, max_size=5), fmt=st.sampled_from(["auto", "jsonl", "llava", "mosit"]))
def test_dataset_rows_are_samples_or_reported_problems(registry, tmp_path, rows, fmt):
    """Any JSON rows: each is a sample or a reported problem (skip), or the file is one DatasetError."""
    from nextgpt_core.training.data import read_dataset

    path = tmp_path / ("d.jsonl" if fmt in ("auto", "jsonl") else "d.json")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if path.suffix == ".jsonl" else json.dumps(rows))
    try:
        loaded = read_dataset(path, format=fmt, registry=registry, require_target_media=False)
    except NextGPTError as exc:
        _one_line(exc)
        return
    assert loaded.report.kept + loaded.report.skipped == loaded.report.rows_read
    for problem in loaded.report.problems:
        assert "\n" not in str(problem)


# ---------------------------------------------------------------------------------------------- API bodies
class _NoGeneration:
    """A served model whose generate is an input error: every body is judged by the API layer alone."""

    def __init__(self, registry):
        from types import SimpleNamespace

        from nextgpt_registry import resolve_target

        self.registry = registry
        self._io = {k: resolve_target(s.media_io)() for k, s in registry.modalities.items()}
        self.composition = SimpleNamespace(name="props", generation=SimpleNamespace(max_new_tokens=8))

    def input_modalities(self):
        return list(self.registry.modalities)

    def output_modalities(self):
        return []

    def media_io(self, key):
        return self._io[key]

    def generate(self, *a, **k):
        from nextgpt_core.errors import ConversationError

        raise ConversationError("generation is not part of this test")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from fastapi.testclient import TestClient
    from nextgpt_registry import Registry

    from nextgpt_core.plugins import DEFAULT_PLUGINS
    from nextgpt_core.serving import ServeConfig, create_app

    model = _NoGeneration(Registry.load(DEFAULT_PLUGINS, allow=["image", "audio"]))
    app = create_app(model, ServeConfig(media_dir=tmp_path_factory.mktemp("api"), max_upload_bytes=100_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


_part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio", "file", "media", "video",
                                                        "video_url", "audio_url"])},
                              optional={"text": _scalars, "image_url": _row_values, "input_audio": _row_values,
                                        "file": _row_values, "media": _row_values, "video_url": _row_values,
                                        "audio_url": _row_values})
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", 3])},
                                 optional={"content": st.one_of(_scalars, st.lists(_part, max_size=3)),
                                           "audio": _row_values, "name": _scalars})
_body = st.fixed_dictionaries({}, optional={"messages": st.one_of(st.lists(_message, max_size=3), _scalars),
                                            "modalities": st.one_of(st.lists(st.text(max_size=8), max_size=2), _scalars),
                                            "seed": _scalars, "stream": _scalars, "max_tokens": _scalars,
                                            "model": _scalars, "media_format": _scalars, "stop": _scalars,
                                            "stream_options": _row_values, "audio": _row_values, "n": _scalars,
                                            "presence_penalty": _scalars, "user": _scalars, "foo": _scalars})


@settings(**SETTINGS)
@given(body=_body)
def test_api_bodies_get_an_answer_never_a_500(api, body):
    response = api.post("/v1/chat/completions", json=body)
    assert response.status_code in (200, 400, 404, 413, 415, 429), (response.status_code, response.text[:300])
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]


# ---------------------------------------------------------------------------------------------- output folders
_names = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=10).filter(
    lambda n: n not in (".", ".."))
_tree = st.dictionaries(st.lists(_names, min_size=1, max_size=3).map(lambda parts: "/".join(parts)),
                        st.binary(max_size=32), max_size=6)


@settings(**SETTINGS)
@given(tree=_tree, overwrite=st.booleans())
def test_no_folder_write_loses_a_file_nextgpt_did_not_write(tmp_path_factory, tree, overwrite):
    """Whatever a folder holds, writing an artifact there either succeeds on an empty/absent folder or one of its
    own kind, or refuses with one line and leaves every file as it was."""
    from nextgpt_core.folders import TARGET_CACHE, OutputFolderError, atomic_directory

    target = tmp_path_factory.mktemp("prop") / "out"
    written: dict[str, bytes] = {}
    for rel, blob in tree.items():
        path = target / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            continue  # a name used both as a file and as a folder: keep the first
        written[rel] = blob
    before = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()} if target.exists() else {}
    try:
        with atomic_directory(target, TARGET_CACHE, overwrite=overwrite) as tmp:
            (tmp / "manifest.json").write_text(json.dumps({"format": "nextgpt-target-cache", "counts": {}}))
    except OutputFolderError as exc:
        _one_line(exc)
        after = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        assert after == before
    else:
        assert not before, f"replaced a folder holding {sorted(before)}"
    assert sorted(os.listdir(target.parent)) == ["out"], "a temporary folder was left beside the target"
