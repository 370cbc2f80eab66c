"""preprocess_audio == ImageBind's load_and_transform_audio_data (clips, kaldi fbank, pad/crop, normalisation)."""

from __future__ import annotations

from fractions import Fraction

import math

import numpy as np
import pytest
import torch

from nextgpt_audio.media import Audio
from nextgpt_audio.preprocess import (
    AUDIO_MEAN,
    AUDIO_STD,
    clip_timepoints,
    kaldi_fbank,
    kaldi_mel_banks,
    preprocess_audio,
)
from nextgpt_core.errors import MediaError

SR = 16000


def _tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_shape_and_dtype() -> None:
    out = preprocess_audio(Audio(_tone(440, 5), SR))
    assert out.shape == (3, 1, 128, 204) and out.dtype == torch.float32


def test_silence_gives_known_values() -> None:
    # fbank of zeros = log(float32 eps); a 2 s clip has 1 + (32000 - 400) // 160 = 198 frames, then 6 zero columns
    out = preprocess_audio(Audio(np.zeros(3 * SR, np.float32), SR))
    log_eps = math.log(torch.finfo(torch.float32).eps)
    frames = torch.full((128, 198), (log_eps - AUDIO_MEAN) / AUDIO_STD)
    pad = torch.full((128, 6), (0.0 - AUDIO_MEAN) / AUDIO_STD)
    for c in range(3):
        torch.testing.assert_close(out[c, 0, :, :198], frames, rtol=0, atol=1e-5)
        torch.testing.assert_close(out[c, 0, :, 198:], pad, rtol=0, atol=1e-6)
    assert AUDIO_MEAN == -4.268 and AUDIO_STD == 9.138  # ImageBind's Normalize(mean=-4.268, std=9.138), std not doubled


def _expected_mel_bin(freq: float) -> int:
    """The filter with the largest weight at ``freq``'s FFT bin (512-point FFT at 16 kHz)."""
    return int(kaldi_mel_banks()[:, round(freq / (SR / 512))].argmax())


@pytest.mark.parametrize("freq", [500.0, 1000.0, 3000.0])
def test_pure_tone_peaks_at_its_mel_bin(freq: float) -> None:
    out = preprocess_audio(Audio(_tone(freq, 3), SR))
    peak = out[0, 0, :, 20:180].mean(dim=1).argmax().item()
    assert abs(peak - _expected_mel_bin(freq)) <= 1
    centre_hz = 700 * (math.exp((1127 * math.log(1 + 20 / 700) + (peak + 1) * (1127 * math.log(1 + 8000 / 700) - 1127 * math.log(1 + 20 / 700)) / 129) / 1127) - 1)
    assert abs(centre_hz - freq) / freq < 0.08


def test_fbank_matches_transformers_ast_numpy_kaldi() -> None:
    from transformers import ASTFeatureExtractor

    fe = ASTFeatureExtractor(num_mel_bins=128, max_length=204, sampling_rate=SR, do_normalize=False)
    x = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32) * 0.1 + _tone(700, 2)
    theirs = np.asarray(fe(x, sampling_rate=SR, return_tensors="np")["input_values"][0])  # (204, 128)
    ours = kaldi_fbank(torch.from_numpy(x)).numpy()  # (198, 128)
    assert ours.shape == (198, 128)
    assert np.abs(ours - theirs[:198]).max() < 2e-3


def test_clip_timepoints_and_slices() -> None:
    assert clip_timepoints(5.0) == [(Fraction(0), Fraction(2)), (Fraction(3, 2), Fraction(7, 2)), (Fraction(3), Fraction(5))]
    assert clip_timepoints(1.0) == [(Fraction(0), Fraction(2))] * 3
    assert [s for s, _ in clip_timepoints(10.0)] == [0, 4, 8]


def test_clips_see_the_right_parts() -> None:
    # 6 s: clips [0,2], [2,4], [4,6] -> tones 500, 1000, 3000 Hz respectively
    x = np.concatenate([_tone(500, 2), _tone(1000, 2), _tone(3000, 2)])
    out = preprocess_audio(Audio(x, SR))
    peaks = [out[c, 0, :, 20:180].mean(dim=1).argmax().item() for c in range(3)]
    assert [abs(p - _expected_mel_bin(f)) <= 1 for p, f in zip(peaks, (500, 1000, 3000))] == [True] * 3


def test_short_audio_repeats_the_same_clip() -> None:
    out = preprocess_audio(Audio(_tone(1000, 0.5), SR))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    torch.testing.assert_close(out[0], out[2], rtol=0, atol=0)
    # 0.5 s -> 1 + (8000 - 400) // 160 = 48 frames, the rest zero-padded
    torch.testing.assert_close(out[0, 0, :, 48:], torch.full((128, 156), -AUDIO_MEAN / AUDIO_STD), rtol=0, atol=1e-6)


def test_stereo_uses_the_first_channel_like_imagebind() -> None:
    left, right = _tone(1000, 3), _tone(3000, 3)
    stereo = preprocess_audio(Audio(np.stack([left, right], axis=1), SR))
    torch.testing.assert_close(stereo, preprocess_audio(Audio(left, SR)), rtol=0, atol=1e-4)


def test_resamples_to_16k() -> None:
    x = _tone(1000, 3, sr=44100)
    out = preprocess_audio(Audio(x, 44100))
    assert out.shape == (3, 1, 128, 204)
    assert abs(out[1, 0, :, 20:180].mean(dim=1).argmax().item() - _expected_mel_bin(1000)) <= 1


def test_too_short_and_bad_input() -> None:
    with pytest.raises(MediaError, match="too short"):
        preprocess_audio(Audio(np.zeros(200, np.float32), SR))
    with pytest.raises(MediaError):
        preprocess_audio(Audio(np.zeros((10, 2, 2), np.float32), SR))


def test_caller_samples_are_not_modified() -> None:
    x = _tone(1000, 3) + 0.25
    before = x.copy()
    preprocess_audio(Audio(x, SR))
    np.testing.assert_array_equal(x, before)
