"""The real plugins together on `tiny`: four inputs in, text + image + video + audio out, swaps by one line."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from nextgpt_audio.media import Audio, AudioIO
from nextgpt_depth.media import DepthIO
from nextgpt_image.media import ImageIO
from nextgpt_registry import Registry
from nextgpt_video.media import Video, VideoIO
from PIL import Image

from nextgpt_core import CompositionError, Conversation, Media, NextGPT
from nextgpt_core.composition import resolve_composition
from nextgpt_core.plugins import DEFAULT_PLUGINS

REAL = ["image", "video", "audio", "depth"]


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture(scope="module")
def model(real_registry):
    return NextGPT.from_composition("tiny", registry=real_registry)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One file per input modality, made here: a gradient PNG, an mp4 with a moving square, a tone, a depth ramp."""
    folder = tmp_path_factory.mktemp("inputs")
    y, x = np.mgrid[0:48, 0:64]
    image = ImageIO().write(Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)), folder / "pic.png")
    frames = np.zeros((12, 48, 64, 3), dtype=np.uint8)
    for t in range(12):
        frames[t, 10:26, 4 * t : 4 * t + 16] = 255
    video = VideoIO().write(Video(frames, fps=6.0), folder / "clip.mp4")
    tone = np.sin(2 * np.pi * 440 * np.arange(24000) / 16000).astype(np.float32) * 0.5
    audio = AudioIO().write(Audio(tone, 16000), folder / "tone.wav")
    depth = DepthIO().write((1000 + 20 * x).astype(np.float32), folder / "depth.png")
    return {"image": image, "video": video, "audio": audio, "depth": depth}


def test_tiny_holds_every_real_plugin(real_registry):
    resolved = resolve_composition("tiny", real_registry)
    assert set(resolved.modalities) == set(REAL)
    assert {k for k, m in resolved.modalities.items() if m.can_generate} == {"image", "video", "audio"}
    assert [len(resolved.modalities[k].signal_tokens) for k in ("image", "video", "audio")] == [4, 24, 8]  # official


def test_four_inputs_in_text_and_three_media_out(model, inputs, tmp_path, real_registry):
    model.encoder_cache.clear()  # the module's model is shared: count only this request's encodings
    conversation = Conversation().user(
        Media.from_path(inputs["image"]),
        Media.from_path(inputs["video"]),
        Media.from_path(inputs["audio"]),
        Media.from_path(inputs["depth"], modality="depth"),
        "What is in these? Then show me a picture, a clip and a sound.",
    )
    reply = model.generate(conversation, want=["image", "video", "audio"], seed=0)
    assert sorted(m.modality for m in reply.media) == ["audio", "image", "video"]
    paths = reply.save(tmp_path, real_registry)
    by_suffix = {p.suffix: p for p in paths}
    image = ImageIO().read(by_suffix[".png"])
    assert image.size == (32, 32)
    video = VideoIO().read(by_suffix[".mp4"])
    assert video.frames.shape[0] == 2 and video.frames.shape[1:3] == (32, 32)
    audio = AudioIO().read(by_suffix[".wav"])
    assert audio.sample_rate == 16000 and audio.samples.shape[0] == 16000
    assert by_suffix[".txt"].read_text().strip() == reply.text
    # every input went through its own encoder (one cache entry per input item)
    assert len(model.encoder_cache) == 4


def test_same_seed_same_media(model, inputs, tmp_path, real_registry):
    """Same seed, same samples, and the same bytes on disk (a WAV chunk with a clock time broke this)."""
    import time

    conversation = Conversation().user(Media.from_path(inputs["image"]), "again")
    a = model.generate(conversation, want=["image", "video", "audio"], seed=3)
    first = a.save(tmp_path / "a", real_registry)
    time.sleep(1.1)  # libsndfile's PEAK chunk stored the time in seconds
    b = model.generate(conversation, want=["image", "video", "audio"], seed=3)
    second = b.save(tmp_path / "b", real_registry)
    assert a.token_ids == b.token_ids
    for x, y in zip(a.media, b.media):
        np.testing.assert_array_equal(np.asarray(x.data), np.asarray(y.data))
    assert [p.name for p in first] == [p.name for p in second] and any(p.suffix == ".wav" for p in first)
    for x, y in zip(first, second):
        assert x.read_bytes() == y.read_bytes(), f"{x.name} differs byte-wise between two same-seed replies"


def _composition(tmp_path, body: str):
    path = tmp_path / "c.toml"
    path.write_text('name = "swap"\n[llm.tiny]\n[generation]\nmax_new_tokens = 40\n' + textwrap.dedent(body))
    return path


def test_depth_composes_in_without_core_change(tmp_path, real_registry, inputs):
    path = _composition(tmp_path, """
    [modalities.image]
    preset = "tiny"
    [modalities.depth]
    preset = "tiny"
    """)
    model = NextGPT.from_composition(path, registry=real_registry)
    assert model.input_modalities() == ["image", "depth"] and model.output_modalities() == ["image"]
    reply = model.generate(Conversation().user(Media.from_path(inputs["depth"], modality="depth"), "depth?"),
                           want=["image"], seed=1)
    assert [m.modality for m in reply.media] == ["image"]


@pytest.mark.parametrize(
    ("modality", "line", "expect"),
    [
        ("image", 'decoder = { id = "image/sd-2", options = { tiny = true } }', (77, 48)),
        ("video", 'decoder = { id = "video/animatediff", options = { tiny = true } }', (77, 32)),
        ("audio", 'decoder = { id = "audio/audioldm2", options = { tiny = true } }', [(77, 32), (8, 16)]),
    ],
)
def test_decoder_swapped_by_one_line(tmp_path, real_registry, modality, line, expect):
    path = _composition(tmp_path, f"""
    [modalities.{modality}]
    preset = "tiny"
    {line}
    """)
    resolved = resolve_composition(path, real_registry).modalities[modality]
    shapes = [(p.options["out_len"], p.options["out_dim"]) for p in resolved.output_projectors]
    assert shapes == (expect if isinstance(expect, list) else [expect])
    model = NextGPT.from_composition(path, registry=real_registry)
    reply = model.generate("make one", want=[modality], seed=2)
    assert [m.modality for m in reply.media] == [modality]


@pytest.mark.parametrize(
    ("modality", "line"),
    [
        ("image", 'encoder = { id = "image/clip", options = { hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1, num_attention_heads = 2, projection_dim = 16 } }'),
        ("audio", 'encoder = { id = "audio/clap", options = { patch_embeds_hidden_size = 8, depths = [1, 1, 1, 1], num_attention_heads = [1, 1, 2, 2], projection_dim = 16 } }'),
    ],
)
def test_permissive_encoder_swapped_by_one_line(tmp_path, real_registry, inputs, modality, line):
    path = _composition(tmp_path, f"""
    [modalities.{modality}]
    preset = "tiny"
    {line}
    """)
    model = NextGPT.from_composition(path, registry=real_registry)
    assert model.input_projectors[modality].config.in_dim == 16
    family = line.split('"')[1].split("/")[1]  # clip, clap
    assert family in type(model.encoders[modality]).__name__.lower()
    seen = []
    hook = model.input_projectors[modality].register_forward_hook(lambda m, args, out: seen.append((args[0].shape, out.shape)))
    try:
        reply = model.generate(Conversation().user(Media.from_path(inputs[modality]), "what is it?"), seed=3, max_new_tokens=4)
    finally:
        hook.remove()
    assert reply.token_ids
    # the swapped encoder's 16-d output went through the projector into the LLM's width, once for the one input
    (shape_in, shape_out), = seen
    assert shape_in[0] == 1 and shape_in[-1] == 16 and shape_out[-1] == model.llm.config.hidden_size


def test_pinned_projectors_that_no_longer_fit_are_rejected_naming_both(tmp_path, real_registry):
    path = _composition(tmp_path, """
    [modalities.image]
    preset = "tiny"
    decoder = { id = "image/sd-2", options = { tiny = true } }
    output_projector = { id = "transformer", options = { out_dim = 32, d_model = 32, num_heads = 2 } }
    """)
    with pytest.raises(CompositionError, match=r"output projector 'transformer' produces out_dim 32, but decoder 'image/sd-2' input 'prompt_embeds' is 77x48"):
        resolve_composition(path, real_registry)
    path = _composition(tmp_path, """
    [modalities.image]
    preset = "tiny"
    encoder = { id = "image/clip", options = { hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1, num_attention_heads = 2, projection_dim = 16 } }
    input_projector = { id = "linear", options = { in_dim = 32 } }
    """)
    with pytest.raises(CompositionError, match=r"input projector 'linear' has enc_dim \(in_dim\) 32, but encoder 'image/clip' outputs 16"):
        resolve_composition(path, real_registry)


def test_demo_with_the_real_plugins(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from nextgpt_core.cli import app
    from nextgpt_core.plugins import reset_registry

    monkeypatch.setenv("NEXTGPT_LOAD_PLUGINS", ",".join(REAL))
    reset_registry()
    try:
        result = CliRunner().invoke(app, ["demo", "--composition", "tiny", "--out", str(tmp_path)])
    finally:
        reset_registry()
    assert result.exit_code == 0, result.output
    for name in ("input_image.png", "input_video.mp4", "input_audio.wav", "input_depth.png",
                 "reply/image_0.png", "reply/video_0.mp4", "reply/audio_0.wav", "reply/reply.txt"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in result.stdout, name
    assert VideoIO().read(tmp_path / "reply" / "video_0.mp4").frames.shape[0] == 2
