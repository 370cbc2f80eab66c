"""Validation is complete and every refusal is one line: decoder folders read by `compose validate`, LLM folders
(causal LM, tokenizer files), tiny-LLM bounds, non-UTF-8 TOML, a folder given where a file is expected, a 16-bit
PNG passed as an image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nextgpt_core import CompositionError, load_composition
from nextgpt_core.cli import app


def _error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture()
def image_cli(monkeypatch):
    """The CLI with the real image plugin only."""
    from nextgpt_registry import Registry

    from nextgpt_core import plugins

    reg = Registry.load(plugins.DEFAULT_PLUGINS, allow=["image"])
    monkeypatch.setattr(plugins, "get_registry", lambda: reg)
    return reg


def _sd_folder(root: Path, cross_attention_dim: int, positions: int = 77) -> Path:
    """A diffusers folder's config files only (what `compose validate` reads; no weights)."""
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    for part, config in (("unet", {"cross_attention_dim": cross_attention_dim}),
                         ("text_encoder", {"max_position_embeddings": positions})):
        (root / part).mkdir()
        (root / part / "config.json").write_text(json.dumps(config))
    return root


def _image_composition(tmp_path: Path, decoder_path: Path, dim: int = 32) -> Path:
    path = tmp_path / f"{decoder_path.name}.toml"
    path.write_text(f'''name = "sd"
[llm.tiny]
[modalities.image]
preset = "tiny"
decoder = {{ id = "image/sd-1.5", options = {{ path = "{decoder_path}", cross_attention_dim = {dim} }} }}
''')
    return path


def test_compose_validate_reads_the_decoder_folder(tmp_path, image_cli):
    runner = CliRunner()
    good = _image_composition(tmp_path, _sd_folder(tmp_path / "sd-good", 32))
    result = runner.invoke(app, ["compose", "validate", str(good)])
    assert result.exit_code == 0 and result.stdout.startswith("ok:"), result.output
    bad = _image_composition(tmp_path, _sd_folder(tmp_path / "sd-1024", 1024))
    line = _error_line(runner.invoke(app, ["compose", "validate", str(bad)]))
    assert "composition 'sd', modality 'image': StableDiffusionImageDecoder: the pipeline at" in line
    assert "unet cross_attention_dim is 1024, the config declares 32" in line
    long_text = _image_composition(tmp_path, _sd_folder(tmp_path / "sd-long", 32, positions=248))
    assert "the text encoder takes 248 tokens, the config declares text_length 77" in _error_line(
        runner.invoke(app, ["compose", "validate", str(long_text)]))
    # generate names the same mismatch before the LLM or any weight loads
    line = _error_line(runner.invoke(app, ["generate", "-p", "x", "-c", str(bad), "--out", str(tmp_path / "o")]))
    assert "cross_attention_dim is 1024" in line
    missing = _image_composition(tmp_path, tmp_path / "nowhere")
    assert "no diffusers pipeline at" in _error_line(runner.invoke(app, ["compose", "validate", str(missing)]))


def _llm_folder(tmp_path: Path, name: str, config: dict, tokenizer: bool = True) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if tokenizer:
        from nextgpt_core.language_model import train_tiny_tokenizer

        train_tiny_tokenizer().save_pretrained(folder)
    return folder


def _llm_composition(tmp_path: Path, folder: Path) -> Path:
    path = tmp_path / f"{folder.name}.toml"
    path.write_text(f'name = "x"\n[llm]\npath = "{folder}"\n')
    return path


def test_llm_folder_must_hold_a_causal_lm_with_a_tokenizer(tmp_path, registry):
    runner = CliRunner()
    t5 = _llm_folder(tmp_path, "t5", {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 32})
    line = _error_line(runner.invoke(app, ["compose", "validate", str(_llm_composition(tmp_path, t5))]))
    assert "holds a T5ForConditionalGeneration (model_type 't5'), not a causal language model" in line
    line = _error_line(runner.invoke(app, ["generate", "-p", "x", "-c", str(_llm_composition(tmp_path, t5)),
                                           "--out", str(tmp_path / "o")]))
    assert "not a causal language model" in line
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    bare = _llm_folder(tmp_path, "no-tokenizer", llama, tokenizer=False)
    line = _error_line(runner.invoke(app, ["compose", "validate", str(_llm_composition(tmp_path, bare))]))
    assert "no tokenizer files (none of tokenizer.json, tokenizer.model" in line
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    assert "config.json is not valid JSON" in _error_line(
        runner.invoke(app, ["compose", "validate", str(_llm_composition(tmp_path, tmp_path / "broken"))]))
    ok = _llm_folder(tmp_path, "ok", llama)
    result = runner.invoke(app, ["compose", "validate", str(_llm_composition(tmp_path, ok))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("settings,message", [
    ("hidden_size = -4", "llm.tiny.hidden_size: Input should be greater than or equal to 2"),
    ("num_attention_heads = 3", "hidden_size 64 must split into num_attention_heads 3 heads of an even size"),
    ("num_key_value_heads = 3", "num_key_value_heads 3 must divide num_attention_heads 4"),
    ("hidden_size = 16384\nnum_attention_heads = 128\nnum_key_value_heads = 128\nnum_hidden_layers = 200",
     "parameters; [llm.tiny] is limited to 1,000,000,000"),
    ("intermediate_size = 0", "llm.tiny.intermediate_size: Input should be greater than or equal to 1"),
    ("max_position_embeddings = 100000000", "llm.tiny.max_position_embeddings: Input should be less than or equal to"),
])
def test_tiny_llm_settings_have_bounds(tmp_path, registry, settings, message):
    path = tmp_path / "t.toml"
    path.write_text(f'name = "t"\n[llm.tiny]\n{settings}\n')
    with pytest.raises(CompositionError, match=r".*") as exc:
        load_composition(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert message in _error_line(CliRunner().invoke(app, ["compose", "validate", str(path)]))


def test_non_utf8_toml_and_a_folder_as_composition(tmp_path, registry):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n[llm.tiny]\n'.encode("latin-1"))
    line = _error_line(CliRunner().invoke(app, ["compose", "validate", str(path)]))
    assert "latin1.toml: not UTF-8 text (byte 11: b'\\xe9'); TOML files are UTF-8" in line
    line = _error_line(CliRunner().invoke(app, ["compose", "validate", str(tmp_path)]))
    assert "is a folder, not a composition file" in line


def test_a_folder_given_as_an_input_is_named_as_a_folder(tmp_path, registry):
    runner = CliRunner()
    (tmp_path / "pics.fimg").mkdir()
    line = _error_line(runner.invoke(app, ["generate", "-c", "tiny", "-p", "x", "-i", str(tmp_path / "pics.fimg")]))
    assert f"input '{tmp_path / 'pics.fimg'}' is a folder, not a file" in line
    line = _error_line(runner.invoke(app, ["train", "--stage", "1", "--data", str(tmp_path), "--out", str(tmp_path / "r")]))
    assert "is a folder, not a file" in line
    (tmp_path / "ckpt-file").write_text("x")
    line = _error_line(runner.invoke(app, ["generate", "-c", "tiny", "-p", "x", "--checkpoint", str(tmp_path / "ckpt-file")]))
    assert "is a file, not a folder" in line


@pytest.mark.parametrize("reader", ["image", "video", "audio", "depth"])
def test_every_media_reader_names_a_folder(tmp_path, reader):
    from nextgpt_audio.media import AudioIO
    from nextgpt_depth.media import DepthIO
    from nextgpt_image.media import ImageIO
    from nextgpt_video.media import VideoIO

    from nextgpt_core.errors import MediaError

    io = {"image": ImageIO, "video": VideoIO, "audio": AudioIO, "depth": DepthIO}[reader]()
    folder = tmp_path / "x.png"
    folder.mkdir()
    with pytest.raises(MediaError, match="is a folder, not a"):
        io.read(folder)


def test_a_16_bit_png_is_not_read_as_rgb(tmp_path):
    from nextgpt_depth.media import DepthIO
    from nextgpt_image.media import ImageIO
    from PIL import Image

    from nextgpt_core.errors import MediaError

    depth = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    path = tmp_path / "depth.png"
    Image.fromarray(depth).save(path)  # mode I;16
    with pytest.raises(MediaError, match=r"depth.png' is a 16-bit single-channel image \(mode I;16\).*depth=PATH") as exc:
        ImageIO().read(path)
    assert "\n" not in str(exc.value)
    assert DepthIO().read(path).shape == (48, 64)  # the depth reader still takes it
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    assert ImageIO().read(rgb).mode == "RGB"
