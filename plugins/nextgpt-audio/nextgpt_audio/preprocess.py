"""ImageBind's audio preprocessing (``imagebind/data.py::load_and_transform_audio_data``), without torchaudio.

ImageBind, per file (``waveform (C, n) = torchaudio.load(path)``)::

    resample to 16 kHz (torchaudio.functional.resample, per channel)
    clips = ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3) over duration n / 16000
    for each clip (start, end): w = waveform[:, int(start * 16000) : int(end * 16000)]   # a view
        w -= w.mean()                            # in place: shared samples of overlapping clips change too
        fbank = kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                            num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)   # (frames, 128)
        fbank.T, right-pad with 0 or cut to 204 frames, unsqueeze -> (1, 128, 204)
        Normalize(mean=-4.268, std=9.138)  ->  (fbank + 4.268) / 9.138     # std is NOT doubled
    -> (3, 1, 128, 204)

Facts this module reproduces (checked in ImageBind ``data.py``, pytorchvideo ``clip_sampling.py`` at ImageBind's
pinned commit, and torchaudio ``compliance/kaldi.py`` / ``functional.resample``):

- **Channels**: kaldi ``fbank`` takes ``channel=-1`` -> ``max(-1, 0) = 0``: ImageBind uses the **first channel**
  of a stereo file, not a down-mix (the in-place mean it subtracts first is over all channels).
- **Clip timing**: ``max_start = Fraction(max(duration - 2, 0))``, ``step = max_start / 2``; clips ``[i*step,
  i*step + 2]``, ``i = 0, 1, 2``; sample slice ``int(start * 16000) : int(end * 16000)`` (exact Fractions,
  clipped at the end of the signal). Under 2 s: three identical clips of the whole sound; under 6 s: overlapping.
- **fbank** (Kaldi semantics): 400-sample frames every 160 (``snip_edges``: ``1 + (n - 400) // 160`` frames; a clip
  shorter than 400 samples fails an assertion in torchaudio — here a ``MediaError``), per-frame DC removal,
  pre-emphasis 0.97 (first sample replicated), symmetric Hann window (``periodic=False``), zero-pad to 512,
  ``|rfft|^2``, 128 triangular mel filters on Kaldi's mel scale ``1127 ln(1 + f / 700)`` from 20 Hz to 8 kHz
  (Nyquist), ``log(max(x, float32 eps))``; everything float32. With ``use_energy=False`` ``htk_compat`` has no
  effect.
- **Resampling**: :func:`nextgpt_audio.media.resample_waveform` (torchaudio's ``sinc_interp_hann``, width 6,
  rolloff 0.99).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import torch
import torch.nn.functional as F

from nextgpt_core.errors import MediaError
from nextgpt_core.imagebind.clips import clip_timepoints as imagebind_clip_timepoints

from .media import Audio, _check_audio, resample_waveform

__all__ = ["AUDIO_MEAN", "AUDIO_STD", "clip_timepoints", "kaldi_fbank", "kaldi_mel_banks", "preprocess_audio", "waveform_to_melspec"]

AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
_EPS = torch.finfo(torch.float32).eps  # 1.1920928955078125e-07, Kaldi's log floor


def clip_timepoints(duration: float, clip_duration: float = 2, clips_per_video: int = 3) -> list[tuple[Fraction, Fraction]]:
    """ImageBind's 3 clips of ``clip_duration`` seconds over ``duration``: ``(start, end)`` pairs in seconds, exact
    ``Fraction`` values (:func:`nextgpt_core.imagebind.clips.clip_timepoints`)."""
    return imagebind_clip_timepoints(duration, clip_duration, clips_per_video)


def _mel(freq: "torch.Tensor | float") -> "torch.Tensor | float":
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int = 128, padded_window: int = 512, sample_rate: float = 16000.0, low_freq: float = 20.0, high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters (no VTLN), float32 ``(num_bins, padded_window // 2 + 1)`` (last column 0)."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    fft_bin_width = sample_rate / padded_window
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _mel(fft_bin_width * torch.arange(padded_window / 2)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down)).to(torch.float32)
    return F.pad(banks, (0, 1), mode="constant", value=0.0)


def kaldi_fbank(signal: torch.Tensor, *, sample_rate: int = 16000, num_mel_bins: int = 128) -> torch.Tensor:
    """Kaldi log-mel filterbank as ImageBind configures ``torchaudio.compliance.kaldi.fbank``.

    Args:
        signal: float32 ``(n,)``, ``n >= 400`` (25 ms at 16 kHz).

    Returns:
        float32 ``(1 + (n - 400) // 160, num_mel_bins)``.
    """
    window_size = int(sample_rate * 25.0 * 0.001)
    shift = int(sample_rate * 10.0 * 0.001)
    padded = 1 if window_size == 0 else 2 ** (window_size - 1).bit_length()
    n = signal.shape[0]
    if n < window_size:
        raise MediaError(f"audio clip has {n} samples; the 25 ms fbank window needs at least {window_size}")
    signal = signal.contiguous()
    m = 1 + (n - window_size) // shift
    frames = signal.as_strided((m, window_size), (shift * signal.stride(0), signal.stride(0)))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    frames = frames - 0.97 * previous[:, :-1]
    frames = frames * torch.hann_window(window_size, periodic=False, dtype=frames.dtype).unsqueeze(0)
    frames = F.pad(frames.unsqueeze(0), (0, padded - window_size), mode="constant", value=0).squeeze(0)
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = kaldi_mel_banks(num_mel_bins, padded, float(sample_rate)).to(frames.dtype)
    energies = torch.mm(power, banks.T)
    return torch.max(energies, torch.tensor(_EPS, dtype=energies.dtype)).log()


def waveform_to_melspec(clip: torch.Tensor, *, sample_rate: int = 16000, num_mel_bins: int = 128, target_length: int = 204) -> torch.Tensor:
    """ImageBind's ``waveform2melspec`` on a ``(C, n)`` clip: subtract its mean **in place** (the caller's storage
    changes, as in ImageBind), fbank of channel 0, transpose, right-pad with 0 / cut to ``target_length``.

    Returns:
        float32 ``(1, num_mel_bins, target_length)`` (not yet normalised).
    """
    clip -= clip.mean()
    fbank = kaldi_fbank(clip[0], sample_rate=sample_rate, num_mel_bins=num_mel_bins).transpose(0, 1)
    p = target_length - fbank.shape[1]
    if p > 0:
        fbank = F.pad(fbank, (0, p), mode="constant", value=0)
    elif p < 0:
        fbank = fbank[:, :target_length]
    return fbank.unsqueeze(0)


def preprocess_audio(
    audio: Audio,
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    target_length: int = 204,
    clip_duration: int = 2,
    clips_per_video: int = 3,
    mean: float = AUDIO_MEAN,
    std: float = AUDIO_STD,
) -> torch.Tensor:
    """One sound -> ImageBind audio input, as ``load_and_transform_audio_data`` (see the module docstring).

    Args:
        audio: ``Audio(samples float32 (n,) or (n, ch), sample_rate)``; a stereo sound uses its first channel.

    Returns:
        float32 ``(clips_per_video, 1, num_mel_bins, target_length)`` = ``(3, 1, 128, 204)``, normalised as
        ``(fbank - mean) / std`` = ``(fbank + 4.268) / 9.138``.

    Raises:
        MediaError: malformed samples, or a clip shorter than one 25 ms window after resampling.
    """
    samples, sr = _check_audio(audio)
    waveform = torch.from_numpy(samples.T.copy())  # (C, n) float32, our own copy: clips are centred in place
    if sr != sample_rate:
        waveform = resample_waveform(waveform, sr, sample_rate)
    duration = waveform.size(1) / sample_rate
    mean_t = torch.as_tensor(mean, dtype=torch.float32)
    std_t = torch.as_tensor(std, dtype=torch.float32)
    clips = []
    for start, end in clip_timepoints(duration, clip_duration, clips_per_video):
        view = waveform[:, int(start * sample_rate) : int(end * sample_rate)]
        if view.shape[1] < int(sample_rate * 0.025):
            raise MediaError(f"audio is too short: {waveform.size(1)} samples at {sample_rate} Hz; needs 25 ms per clip")
        mel = waveform_to_melspec(view, sample_rate=sample_rate, num_mel_bins=num_mel_bins, target_length=target_length)
        clips.append(mel.sub_(mean_t).div_(std_t))
    return torch.stack(clips, dim=0)
