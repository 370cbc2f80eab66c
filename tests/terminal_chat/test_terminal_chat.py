"""`nextgpt chat` driven with scripted stdin (CliRunner input=...): history, attachments, /want, /reset, errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nextgpt_core import Conversation, Media, NextGPT
from nextgpt_core.cli import app


@pytest.fixture()
def calls(tiny_model, monkeypatch):
    """Serve the session's tiny model to the command and record what each `generate` call was sent."""
    recorded: list[dict] = []
    real = tiny_model.generate

    def spy(conversation, **kwargs):
        recorded.append({"turns": [(t.role, list(t.parts)) for t in conversation.turns], **kwargs})
        return real(conversation, **kwargs)

    monkeypatch.setattr(NextGPT, "from_composition", classmethod(lambda cls, *a, **k: tiny_model))
    monkeypatch.setattr(tiny_model, "generate", spy)
    return recorded


def _chat(script: list[str], *args: str):
    result = CliRunner().invoke(app, ["chat", "--composition", "tiny", *args], input="".join(line + "\n" for line in script))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def test_history_attachments_and_refed_media_match_the_python_api(calls, tiny_model, fake_files, tmp_path):
    out = tmp_path / "chat"
    result = _chat(
        ["hello there", "/want fake_image", f"/attach {fake_files['audio']}", f"@{fake_files['image']} what is this?", "/quit"],
        "--seed", "7", "--out", str(out),
    )
    image = out / "reply_2" / "fake_image_0.fimg"
    assert image.is_file() and f"saved fake_image: {image}" in result.stdout
    assert "want: fake_image" in result.stdout and f"attached fake_audio: {fake_files['audio']}" in result.stdout
    assert len(calls) == 2 and [c["seed"] for c in calls] == [7, 8] and calls[1]["want"] == ["fake_image"]
    # turn 2 carries the whole history: user text, the first reply, then both attachments before the new text
    roles = [role for role, _ in calls[1]["turns"]]
    assert roles == ["user", "assistant", "user"]
    last = calls[1]["turns"][2][1]
    assert [p.modality for p in last[:2]] == ["fake_audio", "fake_image"] and last[2].text == "what is this?"
    chat_calls = list(calls)
    # the same conversation through the Python API gives the same reply, media bytes included
    conv = Conversation().user("hello there")
    conv.add_response(tiny_model.generate(conv, seed=7))
    conv.user(Media.from_path(fake_files["audio"]), Media.from_path(fake_files["image"]), "what is this?")
    reply = tiny_model.generate(conv, want=["fake_image"], seed=8)
    saved = reply.save(tmp_path / "api", tiny_model.registry)
    assert saved[0].read_bytes() == image.read_bytes()
    assert (out / "reply_2" / "reply.txt").read_text().strip() == reply.text
    # the reply text streams to the terminal through generate's on_text callback
    assert all(callable(c["on_text"]) for c in chat_calls) and result.stdout.count("nextgpt: ") == 2


def test_generated_media_are_fed_back_as_inputs(calls, fake_files, tmp_path):
    out = tmp_path / "chat"
    _chat(["/want fake_image", "draw", "/want none", "and now?"], "--seed", "1", "--max-new-tokens", "16", "--out", str(out))
    assert len(calls) == 2 and calls[1]["want"] == []
    role, parts = calls[1]["turns"][1]
    generated = [p for p in parts if isinstance(p, Media)]
    assert role == "assistant" and "fake_image" in [m.modality for m in generated]  # the model may add others
    for media in generated:  # each generated item goes back in memory, with the file it was saved to
        assert media.data is not None and media.path.parent == out / "reply_1" and media.path.is_file()


def test_reset_forgets_history_and_pending_attachments(calls, fake_files, tmp_path):
    result = _chat(["first", f"/attach {fake_files['image']}", "/reset", "second"], "--max-new-tokens", "8", "--out", str(tmp_path / "out"))
    assert "history cleared" in result.stdout
    assert [[role for role, _ in c["turns"]] for c in calls] == [["user"], ["user"]]
    assert [type(p).__name__ for p in calls[1]["turns"][0][1]] == ["Text"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/bogus", "unknown command '/bogus'"),
        ("/want fake_depth", "cannot generate 'fake_depth'; outputs: fake_image, fake_audio"),
        ("/want imgae", "cannot generate 'imgae'"),
        ("/attach", "/attach needs a file"),
        ("/attach /no/such.fimg", "file not found: '/no/such.fimg'"),
        ("look @/no/such.fimg", "file not found: '/no/such.fimg'"),
        ("/attach {notes}", "unsupported media type '.txt'"),
        ("/attach imgae={image}", "unknown modality 'imgae'"),
        ("/attach {broken}", "broken.fimg"),
        ("/seed x", "/seed needs an integer, got 'x'"),
    ],
)
def test_bad_input_is_one_error_line_and_the_chat_goes_on(calls, fake_files, tmp_path, line, message):
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    broken = tmp_path / "broken.fimg"
    broken.write_bytes(b"not an image")
    line = line.format(notes=notes, image=fake_files["image"], broken=broken)
    result = _chat([line, "still here?"], "--max-new-tokens", "8", "--out", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], result.stderr
    assert len(calls) == 1 and [role for role, _ in calls[0]["turns"]] == ["user"]  # the bad line left no trace
    assert calls[0]["turns"][0][1][-1].text == "still here?" and (tmp_path / "out" / "reply_1" / "reply.txt").is_file()


def test_a_failed_request_leaves_the_history_unchanged(calls, tiny_model, monkeypatch, tmp_path):
    from nextgpt_core.errors import ConversationError

    real = tiny_model.generate
    state = {"n": 0}

    def flaky(conversation, **kwargs):
        state["n"] += 1
        if state["n"] == 2:
            raise ConversationError("the last turn alone does not fit the context")
        return real(conversation, **kwargs)

    monkeypatch.setattr(tiny_model, "generate", flaky)
    result = _chat(["one", "two", "three"], "--max-new-tokens", "8", "--out", str(tmp_path / "out"))
    assert result.stderr.strip() == "error: the last turn alone does not fit the context"
    assert (tmp_path / "out" / "reply_1").is_dir() and (tmp_path / "out" / "reply_2").is_dir() and not (tmp_path / "out" / "reply_3").exists()
    # calls records the requests that reached the model: "one", then "three" after "one" and its reply only
    assert len(calls) == 2 and [role for role, _ in calls[1]["turns"]] == ["user", "assistant", "user"]
    assert calls[1]["turns"][0][1][0].text == "one" and calls[1]["turns"][2][1][0].text == "three"


def test_end_of_input_ends_the_chat(calls, tmp_path):
    result = _chat([], "--out", str(tmp_path / "out"))
    assert "nextgpt chat: composition 'tiny'" in result.stdout and calls == []


def test_startup_errors_are_one_line_exit_2(calls, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[llm.tiny]\nhidden_size = "big"\n')
    result = CliRunner().invoke(app, ["chat", "-c", str(bad)], input="hi\n")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "llm.tiny.hidden_size" in result.stderr
    result = CliRunner().invoke(app, ["chat", "-c", "tiny", "--checkpoint", str(tmp_path / "none")], input="hi\n")
    assert result.exit_code == 2 and "checkpoint folder not found" in result.stderr
    result = CliRunner().invoke(app, ["chat", "-c", "tiny", "--want", "fake_depth"], input="hi\n")
    assert result.exit_code == 2 and result.stderr == "error: cannot generate 'fake_depth'; outputs: fake_image, fake_audio\n"
    assert calls == []
