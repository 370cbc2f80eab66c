"""AudioIO: MediaIO conformance, WAV/FLAC/MP3, corrupt/oversized files; the torchaudio-identical resampler."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from nextgpt_audio import media as audio_media
from nextgpt_audio.media import Audio, AudioIO, resample, resample_waveform
from nextgpt_core.errors import MediaError
from nextgpt_core.testing.mixins import MediaIOTesterMixin


class TestAudioIOConformance(MediaIOTesterMixin):
    """The default writer (16-bit PCM WAV): samples on the 16-bit grid come back exactly."""

    io_class = AudioIO
    suffix = ".wav"

    def get_dummy_media(self) -> Audio:
        x = AudioIO().example().samples
        return Audio(samples=(np.round(x * 32768) / 32768 + 0.0).astype(np.float32), sample_rate=16000)  # no -0.0

    def assert_media_equal(self, a: Audio, b: Audio) -> None:
        assert a.sample_rate == b.sample_rate
        np.testing.assert_array_equal(a.samples, b.samples)


class TestFloatWavConformance(TestAudioIOConformance):
    """``wav_subtype="FLOAT"``: any float32 samples come back exactly."""

    io_class = staticmethod(lambda: AudioIO(wav_subtype="FLOAT"))  # type: ignore[assignment]

    def get_dummy_media(self) -> Audio:
        return AudioIO().example()


def _chunks(data: bytes) -> list[bytes]:
    """The chunk ids of a RIFF/WAVE file, in order."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    ids, offset = [], 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        ids.append(chunk_id)
        offset += 8 + size + (size & 1)
    return ids


@pytest.mark.parametrize("subtype,chunks", [("PCM_16", [b"fmt ", b"data"]), ("FLOAT", [b"fmt ", b"fact", b"data"])])
def test_same_samples_same_bytes_and_no_clock(tmp_path: Path, subtype: str, chunks: list[bytes]) -> None:
    """Two writes of the same samples are byte-identical: no chunk carries a time (libsndfile's float WAV wrote a
    PEAK chunk with the wall-clock time, so same-seed replies differed byte-wise)."""
    io = AudioIO(wav_subtype=subtype)
    a = io.write(io.example(), tmp_path / "a.wav").read_bytes()
    b = io.write(io.example(), tmp_path / "b.wav").read_bytes()
    assert a == b
    assert _chunks(a) == chunks, "a chunk beyond fmt/fact/data (PEAK carries a timestamp) is back"


def test_default_wav_opens_with_pythons_wave_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wave

    monkeypatch.delenv("NEXTGPT_WAV_SUBTYPE", raising=False)
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5], dtype=np.float32)
    path = AudioIO().write(Audio(x, 8000), tmp_path / "t.wav")
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 7)
        ints = np.frombuffer(w.readframes(7), dtype="<i2")
    np.testing.assert_array_equal(ints, [0, 16384, -16384, 32767, -32768, 32767, -32768])  # clipped, not wrapped
    np.testing.assert_array_equal(AudioIO().read(path).samples, ints / 32768)


def test_float_wav_on_request_and_bad_subtype(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTGPT_WAV_SUBTYPE", "float")
    x = AudioIO().example()
    path = AudioIO().write(x, tmp_path / "f.wav")
    assert sf.info(str(path)).subtype == "FLOAT"
    np.testing.assert_array_equal(AudioIO().read(path).samples, x.samples)
    monkeypatch.setenv("NEXTGPT_WAV_SUBTYPE", "PCM_8")
    with pytest.raises(MediaError, match="NEXTGPT_WAV_SUBTYPE='PCM_8'.*PCM_16 or FLOAT"):
        AudioIO()


def test_example_is_a_one_second_tone() -> None:
    a = AudioIO().example()
    assert a.samples.dtype == np.float32 and a.samples.shape == (16000,) and a.sample_rate == 16000
    spectrum = np.abs(np.fft.rfft(a.samples))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over 1 s


def test_zero_byte_wav(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="silent.wav") as info:
        AudioIO().read(path)
    assert "\n" not in str(info.value)


def test_truncated_wav_and_flac(tmp_path: Path) -> None:
    io = AudioIO()
    for name in ("cut.wav", "cut.flac"):
        path = io.write(io.example(), tmp_path / name)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(MediaError, match=name):
            io.read(path)


def test_garbage_files(tmp_path: Path) -> None:
    for name in ("junk.wav", "junk.mp3"):
        (tmp_path / name).write_text("definitely not audio " * 20)
        with pytest.raises(MediaError, match=name):
            AudioIO().read(tmp_path / name)


def test_int16_wav_reads_like_torchaudio(tmp_path: Path) -> None:
    ints = np.array([0, 1, -1, 16384, -32768, 32767], dtype=np.int16)
    sf.write(tmp_path / "i.wav", ints, 8000, subtype="PCM_16")
    a = AudioIO().read(tmp_path / "i.wav")
    np.testing.assert_array_equal(a.samples, ints.astype(np.float32) / 32768)


def test_stereo_and_flac(tmp_path: Path) -> None:
    x = np.stack([np.linspace(-0.5, 0.5, 800), np.zeros(800)], axis=1).astype(np.float32)
    io = AudioIO()
    back = io.read(io.write(Audio(x, 8000), tmp_path / "s.wav"))
    assert back.samples.shape == (800, 2)
    assert np.abs(back.samples - x).max() <= 1 / 65536
    exact = AudioIO(wav_subtype="FLOAT")
    np.testing.assert_array_equal(exact.read(exact.write(Audio(x, 8000), tmp_path / "f.wav")).samples, x)
    flac = io.read(io.write(Audio(x, 8000), tmp_path / "s.flac"))
    assert flac.samples.shape == (800, 2) and np.abs(flac.samples - x).max() < 1 / 32768 + 1e-7


def test_reads_mp3(tmp_path: Path) -> None:
    path = tmp_path / "tone.mp3"
    tone = AudioIO().example()
    with av.open(str(path), "w") as c:
        s = c.add_stream("libmp3lame", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone.samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    a = AudioIO().read(path)
    assert a.sample_rate == 16000 and a.samples.ndim == 1 and a.samples.dtype == np.float32
    assert abs(a.duration - 1.0) < 0.2
    spectrum = np.abs(np.fft.rfft(a.samples[:16000] if a.samples.size >= 16000 else a.samples, n=16000))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2


def test_duration_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = AudioIO().write(AudioIO().example(), tmp_path / "long.wav")
    monkeypatch.setattr(audio_media, "MAX_SECONDS", 0.5)
    with pytest.raises(MediaError, match="long.wav.*limited"):
        AudioIO().read(path)


def test_to_bytes_mono_shapes_agree() -> None:
    io = AudioIO()
    x = np.arange(10, dtype=np.float32) / 10
    assert io.to_bytes(Audio(x, 16000)) == io.to_bytes(Audio(x[:, None], 16000))
    assert io.to_bytes(Audio(x, 16000)) != io.to_bytes(Audio(x, 8000))


def _reference_resample(x: np.ndarray, orig: int, new: int, width_z: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Direct float64 evaluation of y[j] = sum_i x[i] k(i/orig - j/new) (torchaudio's hann-windowed sinc)."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * rolloff
    out_len = math.ceil(n * len(x) / o)
    y = np.zeros(out_len)
    i = np.arange(len(x))
    for j in range(out_len):
        t = np.clip((i / o - j / n) * base, -width_z, width_z)
        w = np.cos(t * np.pi / width_z / 2) ** 2
        k = np.where(t == 0, 1.0, np.sin(np.pi * t) / np.where(t == 0, 1.0, np.pi * t)) * w * base / o
        y[j] = np.sum(x * k)
    return y


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (48000, 16000), (22050, 16000)])
def test_resample_matches_direct_sinc_sum(orig: int, new: int) -> None:
    x = np.random.default_rng(0).standard_normal(700).astype(np.float32) * 0.3
    ours = resample_waveform(torch.from_numpy(x), orig, new).numpy()
    ref = _reference_resample(x.astype(np.float64), orig, new)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 2e-5


def test_resample_keeps_a_tone_and_channels() -> None:
    t = np.arange(44100) / 44100
    x = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 3000 * t)], axis=1).astype(np.float32)
    y = resample(Audio(x, 44100), 16000)
    assert y.sample_rate == 16000 and y.samples.shape == (16000, 2)
    assert np.argmax(np.abs(np.fft.rfft(y.samples[:, 0]))) == 1000
    assert np.argmax(np.abs(np.fft.rfft(y.samples[:, 1]))) == 3000
    mono = resample(Audio(x[:, 0].copy(), 44100), 16000)
    assert mono.samples.shape == (16000,)
    np.testing.assert_array_equal(mono.samples, y.samples[:, 0])
