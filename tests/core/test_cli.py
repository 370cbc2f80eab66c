"""The CLI, driven in-process with typer's CliRunner; bad input is one stderr line and exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path_factory, monkeypatch):
    """Commands run where a user would: default output folders land in a fresh folder, not in the checkout (where
    `make demo` may have left outputs/)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def _error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_plugins_lists_modalities_components_and_licences(runner, registry):
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "fake_image" in result.output and "nextgpt-fake 0.1.0" in result.output and "Apache-2.0" in result.output
    data = json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)
    by_id = {c["id"]: c for c in data["components"]}
    assert by_id["fake-decoder"]["license"] == "Apache-2.0" and by_id["linear"]["plugin"].startswith("nextgpt_core.builtins")
    assert {m["key"] for m in data["modalities"]} == {"fake_image", "fake_audio", "fake_depth"}


def test_generate_writes_reply_and_media(runner, registry, fake_files, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "--composition", "tiny", "--prompt", "hello", "--input", str(fake_files["image"]),
                                 "--input", f"fake_depth={fake_files['other']}", "--want", "fake_audio", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "fake_audio_0.faud").is_file() and (out / "reply.txt").is_file()
    assert f"wrote {out / 'fake_audio_0.faud'}" in result.stdout and "seed: 3" in result.stdout
    runner.invoke(app, ["generate", "--composition", "tiny", "-p", "hello", "-i", str(fake_files["image"]), "-i", f"fake_depth={fake_files['other']}",
                                "-w", "fake_audio", "--seed", "3", "-o", str(tmp_path / "again")])
    assert (tmp_path / "again" / "fake_audio_0.faud").read_bytes() == (out / "fake_audio_0.faud").read_bytes()


def test_demo_uses_every_installed_modality(runner, registry, tmp_path):
    result = runner.invoke(app, ["demo", "--composition", "tiny", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("input_fake_image.fimg", "input_fake_audio.faud", "input_fake_depth.fimg",
                 "reply/fake_image_0.fimg", "reply/fake_audio_0.faud", "reply/reply.txt"):
        assert (tmp_path / name).is_file(), name
        assert str(tmp_path / name) in result.stdout


def test_missing_file(runner, registry):
    assert "input file not found: '/no/such.fimg'" in _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "-i", "/no/such.fimg"]))


def test_unsupported_media_type(runner, registry, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hi")
    line = _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "-i", str(f)]))
    assert "unsupported media type '.txt'" in line and ".faud, .fimg" in line


def test_unknown_modality(runner, registry, fake_files):
    line = _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "-i", f"imgae={fake_files['image']}"]))
    assert "unknown modality 'imgae'; registered: fake_audio, fake_depth, fake_image" in line
    line = _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "-w", "fake_depth"]))
    assert "cannot generate 'fake_depth'" in line


def test_malformed_composition(runner, registry, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[llm.tiny]\nhidden_size = "big"\n')
    assert "llm.tiny.hidden_size" in _error_line(runner.invoke(app, ["generate", "-p", "x", "-c", str(bad)]))
    assert "llm.tiny.hidden_size" in _error_line(runner.invoke(app, ["compose", "validate", str(bad)]))
    broken = tmp_path / "broken.toml"
    broken.write_text("[[")
    assert "not valid TOML" in _error_line(runner.invoke(app, ["compose", "validate", str(broken)]))


def test_corrupt_media_and_bad_checkpoint(runner, registry, tmp_path):
    f = tmp_path / "broken.fimg"
    f.write_bytes(b"\x93NUMPY garbage")
    assert "broken.fimg' is not a readable fake media file" in _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "-i", str(f)]))
    assert "checkpoint folder not found" in _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "--checkpoint", str(tmp_path / "none")]))
    assert "not a nextgpt checkpoint" in _error_line(runner.invoke(app, ["generate", "--composition", "tiny", "-p", "x", "--checkpoint", str(tmp_path)]))


def test_compose_validate_and_show(runner, registry):
    result = runner.invoke(app, ["compose", "validate", "tiny"])
    assert result.exit_code == 0 and "modalities: fake_image, fake_audio, fake_depth" in result.stdout
    shown = json.loads(runner.invoke(app, ["compose", "show", "tiny"]).stdout)
    assert shown["modalities"]["fake_audio"]["signal_tokens"] == ["[FAUD0]", "[FAUD1]"]
    assert shown["llm_hidden_size"] == 64
    assert runner.invoke(app, ["compose", "list"]).stdout.split() == ["nextgpt-v0", "tiny", "toy"]


def test_empty_request(runner, registry):
    assert "empty request" in _error_line(runner.invoke(app, ["generate", "--composition", "tiny"]))


def test_an_error_keeps_its_cause_and_debug_shows_it(runner, tmp_path, monkeypatch):
    """A user's bad input is one line; with --debug (or NEXTGPT_DEBUG=1) the traceback follows, with the internal
    failure the error was raised from."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe not utf-8")
    line = _error_line(runner.invoke(app, ["compose", "validate", str(bad)]))
    assert "not UTF-8 text" in line
    # setenv (not delenv) first, so that teardown puts the variable back as it was: --debug sets it in-process
    monkeypatch.setenv("NEXTGPT_DEBUG", "")
    for args, env in ((["--debug", "compose", "validate", str(bad)], {}), (["compose", "validate", str(bad)], {"NEXTGPT_DEBUG": "1"})):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: {line[len('error: '):]}\n")
        assert "UnicodeDecodeError" in result.stderr and "direct cause" in result.stderr and "Traceback" in result.stderr
        monkeypatch.setenv("NEXTGPT_DEBUG", "")
    assert _error_line(runner.invoke(app, ["compose", "validate", str(bad)])) == line  # one line again
