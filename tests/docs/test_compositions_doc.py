"""docs/compositions.md must stay true: its example composition validates, every error line it quotes is what
`nextgpt compose validate` prints for the broken file it shows, and it documents every key of the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app
from nextgpt_core.composition import (
    Composition,
    GenerationSettings,
    InputProjectionSettings,
    LLMSettings,
    LoRASettings,
    PromptSettings,
    SignalSettings,
    TinyLLMSettings,
    ComponentSettings,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "compositions.md"
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_VALIDATE = re.compile(r"^\$ (?:\S+=\S+ )*nextgpt compose validate (?P<file>\S+)\n(?P<out>[^\n]*)\n?$")


def _blocks() -> list[tuple[list[str], str]]:
    return [(m["info"].split(), m["body"]) for m in _FENCE.finditer(DOC.read_text())]


def _attr(words: list[str], name: str) -> str | None:
    return next((w.split("=", 1)[1] for w in words if w.startswith(f"{name}=")), None)


def _quoted_outputs() -> dict[str, str]:
    """``{file name: the one line the doc says validate prints}``."""
    out = {}
    for words, body in _blocks():
        match = _VALIDATE.match(body)
        if words[:1] == ["text"] and match:
            out[match["file"]] = match["out"]
    return out


def _examples(attr: str) -> dict[str, str]:
    return {name: body for words, body in _blocks() if (name := _attr(words, attr))}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _validate(runner: CliRunner, folder: Path, name: str, text: str, monkeypatch: pytest.MonkeyPatch) -> str:
    (folder / name).write_text(text)
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["compose", "validate", name])
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exit_code == (0 if lines[0].startswith("ok: ") else 2)
    return lines[0]


def test_the_complete_example_validates(runner, registry, tmp_path, monkeypatch):
    examples = _examples("example")
    assert list(examples) == ["my-fake.toml"]
    line = _validate(runner, tmp_path, "my-fake.toml", examples["my-fake.toml"], monkeypatch)
    assert line == _quoted_outputs()["my-fake.toml"] == "ok: composition 'my-fake': LLM hidden 64; modalities: fake_image, fake_audio"
    text = examples["my-fake.toml"]
    assert "fake_image" in text and "fake_audio" in text and "fills" in text


def test_every_quoted_error_is_what_validate_prints(runner, registry, tmp_path, monkeypatch):
    broken = _examples("error-example")
    quoted = _quoted_outputs()
    assert len(broken) >= 10
    for name, text in broken.items():
        expected = quoted[f"{name}.toml"]
        assert expected.startswith("error: ")
        assert _validate(runner, tmp_path, f"{name}.toml", text, monkeypatch) == expected, name


@pytest.mark.parametrize(
    "model",
    [Composition, LLMSettings, TinyLLMSettings, PromptSettings, GenerationSettings, SignalSettings,
     InputProjectionSettings, LoRASettings, ComponentSettings],
)
def test_every_key_is_documented(model):
    text = DOC.read_text()
    for key in model.model_fields:
        assert f"| `{key}` |" in text, f"docs/compositions.md does not document {model.__name__}.{key}"
