"""AudioToyWorld: the 54 tones, captions, held-out share, rendering, read-back (clean, through a file, resampled,
noisy, smoothed) and the request phrasings."""

from __future__ import annotations

import itertools
import string
from pathlib import Path

import numpy as np
import pytest

from nextgpt_audio.media import Audio, AudioIO, resample, resample_waveform
from nextgpt_audio.toy import PITCHES, AudioToyWorld, measure
from nextgpt_core.toy.contract import DecoderTraining, EncoderRecipe, attributes_key

WORLD = AudioToyWorld()
COMBOS = WORLD.combinations()


def _accuracy(pairs: list[tuple[dict[str, str], Audio]]) -> float:
    return float(np.mean([WORLD.read_back(audio) == attrs for attrs, audio in pairs]))


@pytest.fixture(scope="module")
def renders() -> list[tuple[dict[str, str], Audio]]:
    """Three renders of every combination."""
    rng = np.random.default_rng(0)
    return [(attrs, WORLD.render(attrs, rng)) for attrs in COMBOS for _ in range(3)]


@pytest.fixture(scope="module")
def sample(renders: list[tuple[dict[str, str], Audio]]) -> list[tuple[dict[str, str], Audio]]:
    """Every 7th render: 24 of them, every value of every axis among them."""
    picked = renders[::7]
    assert all({attrs[axis] for attrs, _ in picked} == set(values) for axis, values in WORLD.axes.items())
    return picked


# ---------------------------------------------------------------------------------------------- what exists
def test_combinations_cover_the_axes() -> None:
    assert len(COMBOS) == 54
    assert {attributes_key(c) for c in COMBOS} == {
        attributes_key(dict(zip(WORLD.axes, values))) for values in itertools.product(*WORLD.axes.values())
    }
    assert WORLD.key == "audio" and WORLD.noun == "sound" and WORLD.can_generate


def test_held_out_is_every_high_tone_going_up() -> None:
    held = [c for c in COMBOS if WORLD.held_out(c)]
    assert len(held) == 6 and len(held) / len(COMBOS) >= 0.1
    assert all(c["pitch"] == "high" and c["movement"] == "going up" for c in held)


def test_captions_are_distinct_and_parse_back() -> None:
    captions = [WORLD.caption(c) for c in COMBOS]
    assert len(set(captions)) == len(captions)
    assert WORLD.caption({"rhythm": "beeping", "pitch": "high", "waveform": "sine", "movement": "going up"}) == (
        "a beeping high sine tone going up")
    for attrs, caption in zip(COMBOS, captions):
        assert caption == caption.lower() and not caption.endswith(".")
        assert WORLD.parse(caption) == attrs
        assert WORLD.parse(f"Sure, here is {caption}.") == attrs
    assert WORLD.parse("a red circle on the left") is None


# ---------------------------------------------------------------------------------------------- media
def test_render_format(renders: list[tuple[dict[str, str], Audio]]) -> None:
    for attrs, audio in renders[::7]:
        assert isinstance(audio, Audio) and audio.sample_rate == 16000
        assert audio.samples.dtype == np.float32 and audio.samples.shape == (16000,)
        assert 0.4 < np.max(np.abs(audio.samples)) < 0.6
        power = np.abs(np.fft.rfft(audio.samples)) ** 2  # 1 Hz bins
        assert power[7100:].sum() < 1e-6 * power.sum(), attrs  # band-limited: nothing near Nyquist
        assert abs(audio.samples[0]) < 1e-3 and abs(audio.samples[-1]) < 1e-2  # faded in and out


def test_render_is_deterministic_given_the_rng() -> None:
    attrs = COMBOS[17]
    a = WORLD.render(attrs, np.random.default_rng(5))
    b = WORLD.render(attrs, np.random.default_rng(5))
    c = WORLD.render(attrs, np.random.default_rng(6))
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_read_back_clean(renders: list[tuple[dict[str, str], Audio]]) -> None:
    assert _accuracy(renders) >= 0.99


def test_read_back_measurements_match_the_synthesis() -> None:
    rng = np.random.default_rng(1)
    saw = measure(WORLD.render({"pitch": "middle", "waveform": "sawtooth", "rhythm": "steady", "movement": "going up"}, rng))
    assert saw["ratio2"] == pytest.approx(0.5, abs=0.03) and saw["ratio3"] == pytest.approx(1 / 3, abs=0.03)
    assert 2 ** saw["log2_pitch"] == pytest.approx(PITCHES["middle"], rel=0.03)
    assert saw["glide"] > 0.25 and saw["silent_share"] < 0.05
    square = measure(WORLD.render({"pitch": "low", "waveform": "square", "rhythm": "beeping", "movement": "going down"}, rng))
    assert square["ratio2"] < 0.05 and square["ratio3"] == pytest.approx(1 / 3, abs=0.03)
    assert square["glide"] < -0.25 and square["silent_share"] > 0.4


def test_read_back_through_a_file(tmp_path: Path, sample: list[tuple[dict[str, str], Audio]]) -> None:
    io = AudioIO()
    back = [(attrs, io.read(io.write(audio, tmp_path / f"{i}.wav"))) for i, (attrs, audio) in enumerate(sample)]
    back += [(attrs, io.read(io.write(audio, tmp_path / f"{i}.flac"))) for i, (attrs, audio) in enumerate(sample[::3])]
    assert _accuracy(back) == 1.0


def test_read_back_resampled(sample: list[tuple[dict[str, str], Audio]]) -> None:
    import torch

    batch = torch.from_numpy(np.stack([audio.samples for _, audio in sample]))  # one kernel for the whole sample
    there = resample_waveform(batch, 16000, 22050)
    back = resample_waveform(there, 22050, 16000)
    assert _accuracy([(attrs, Audio(x.numpy(), 22050)) for (attrs, _), x in zip(sample, there)]) == 1.0
    assert _accuracy([(attrs, Audio(x.numpy(), 16000)) for (attrs, _), x in zip(sample, back)]) == 1.0
    attrs, audio = sample[0]
    assert WORLD.read_back(resample(resample(audio, 22050), 16000)) == attrs


def test_read_back_with_noise_and_smoothing(sample: list[tuple[dict[str, str], Audio]]) -> None:
    rng = np.random.default_rng(2)

    def noisy(audio: Audio) -> Audio:  # white noise 30 dB below the sound's RMS
        rms = float(np.sqrt(np.mean(audio.samples**2)))
        return Audio((audio.samples + rng.normal(0.0, rms * 10 ** (-30 / 20), audio.samples.shape)).astype(np.float32), 16000)

    def smoothed(audio: Audio) -> Audio:  # a mild low-pass: [1/4, 1/2, 1/4]
        return Audio(np.convolve(audio.samples, [0.25, 0.5, 0.25], mode="same").astype(np.float32), 16000)

    assert _accuracy([(attrs, noisy(audio)) for attrs, audio in sample]) == 1.0
    assert _accuracy([(attrs, smoothed(audio)) for attrs, audio in sample]) == 1.0
    stereo = [(attrs, Audio(np.stack([audio.samples, 0.5 * audio.samples], axis=1), 16000)) for attrs, audio in sample[:4]]
    assert _accuracy(stereo) == 1.0


def test_read_back_of_silence_is_empty() -> None:
    assert WORLD.read_back(Audio(np.zeros(16000, np.float32), 16000)) == {}
    assert WORLD.read_back(Audio(np.zeros(10, np.float32), 16000)) == {}


# ---------------------------------------------------------------------------------------------- phrasings
def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_phrasings() -> None:
    caption = WORLD.caption(COMBOS[0])
    assert len(WORLD.generate_requests) >= 10 and len(set(WORLD.generate_requests)) == len(WORLD.generate_requests)
    assert len(WORLD.describe_requests) >= 10 and len(set(WORLD.describe_requests)) == len(WORLD.describe_requests)
    for template in WORLD.generate_requests + WORLD.describe_answers + WORLD.generate_answers:
        assert _fields(template) == {"caption"}
        assert caption in template.format(caption=caption)
    assert all(not _fields(t) for t in WORLD.describe_requests)
    assert set(WORLD.edit_requests) == {"pitch", "waveform", "rhythm", "movement"}
    for axis, templates in WORLD.edit_requests.items():
        assert len(templates) >= 5
        for template in templates:
            assert _fields(template) == {"value"}
            for value in WORLD.axes[axis]:
                assert value in template.format(value=value)
    assert all(WORLD.editable(c) for c in COMBOS)
    assert WORLD.convert_from({"shape": "circle", "colour": "red", "background": "white"}, np.random.default_rng(0)) is None


def test_frozen_network_hooks(tmp_path: Path) -> None:
    assert WORLD.encoder_recipe("full") == EncoderRecipe(encoder="audio/imagebind", branch="audio", encoder_options={"size": "toy", "clips_per_video": 1})
    assert WORLD.encoder_recipe("mini").branch == "audio"
    assert WORLD.decoder_choice("x") == {"id": "audio/audioldm", "options": {"path": "x", "embed_dim": 64}}
    assert WORLD.decode_options("mini")["num_inference_steps"] < WORLD.decode_options("full")["num_inference_steps"]
    with pytest.raises(ValueError):
        WORLD.train_decoder(DecoderTraining([], tmp_path, "mini", 0, lambda *a: None, lambda line: None))


def test_train_decoder_mini_loads_and_generates(tmp_path: Path) -> None:
    """The mini decoder recipe (a few steps of each part) writes an AudioLDM folder that ``audio/audioldm`` loads,
    encodes captions with and generates a one-second sound from (plumbing only: nothing is learnt)."""
    import torch

    from nextgpt_audio.decoders import AudioLDMAudioDecoder

    rng = np.random.default_rng(0)
    train = [c for c in COMBOS if not WORLD.held_out(c)]
    items = [(c, WORLD.caption(c), WORLD.render(c, rng)) for c in train for _ in range(WORLD.decoder_renders["mini"])]
    steps: list[tuple[int, int]] = []
    lines: list[str] = []
    folder = tmp_path / "decoder"
    facts = WORLD.train_decoder(DecoderTraining(items, folder, "mini", 0, lambda s, n, loss: steps.append((s, n)), lines.append))
    assert steps and steps[-1][0] == steps[-1][1] and len({n for _, n in steps}) == 1  # one running total
    assert [s for s, _ in steps] == list(range(1, len(steps) + 1)) and lines
    assert {"vocoder", "autoencoder", "text_encoder", "denoiser", "parameters"} <= set(facts)
    weights = list(folder.rglob("*.safetensors"))
    assert len(weights) == 4 and all(f.stat().st_size < 5 * 2**20 for f in weights)

    choice = WORLD.decoder_choice(str(folder))
    decoder = AudioLDMAudioDecoder.from_options(choice["options"])
    caption = WORLD.caption(COMBOS[0])
    embeds = decoder.encode_text([caption])
    assert embeds["prompt_embeds"].shape == (1, 1, 64)
    assert torch.allclose(embeds["prompt_embeds"].norm(dim=-1), torch.ones(1, 1), atol=1e-3)
    (audio,) = decoder(embeds, generator=torch.Generator().manual_seed(0), **WORLD.decode_options("mini"))
    assert isinstance(audio, Audio) and audio.sample_rate == 16000 and audio.samples.shape == (16000,)
    assert np.isfinite(audio.samples).all()


def test_preview_is_a_spectrogram_showing_pitch_and_rhythm() -> None:
    """The report's picture of a sound: brightest row higher for a higher tone; a beeping tone has dark columns."""
    rng = np.random.default_rng(0)
    base = {"waveform": "sine", "rhythm": "steady", "movement": "staying flat"}
    pictures = {p: WORLD.preview(WORLD.render({**base, "pitch": p}, rng)) for p in ("low", "high")}
    for picture in pictures.values():
        assert picture.shape == (64, 100, 3) and picture.dtype == np.uint8
    row = {p: int(np.argmax(pic[:, 20:80, 0].astype(float).mean(axis=1))) for p, pic in pictures.items()}
    assert row["high"] < row["low"]  # row 0 is the top (highest frequency)
    beeping = WORLD.preview(WORLD.render({**base, "pitch": "middle", "rhythm": "beeping"}, rng))
    loudness = beeping[:, :, 0].astype(float).max(axis=0)
    assert (loudness < 0.5 * loudness.max()).mean() > 0.2
