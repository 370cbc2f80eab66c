"""The audio plugin's part of the toy world: one-second synthetic tones.

Captions (54 in all): ``"a beeping high sine tone going up"`` - rhythm (steady, beeping) x pitch (low, middle,
high: centre 220, 440, 880 Hz) x waveform (sine, square, sawtooth) x movement (going up, staying flat, going
down: an exponential glide from ``f / k`` to ``f * k``, ``k = 2 ** (3 / 12)``, or the reverse).

Sounds are 1.0 s of mono float32 at 16 kHz with a peak of about 0.5, synthesised additively (harmonics below
7 kHz only, so nothing aliases); beeping tones sound for half of each 250 ms period, with 5 ms raised-cosine fades
(steady tones fade in and out over 10 ms), so there are no clicks. :meth:`AudioToyWorld.render` varies a detune
(+/-2 %), the oscillator's phase and the level (+/-1.5 dB), none of which changes the caption.

Held out of every training phase: every high tone going up: 6 captions (11 %).

:meth:`AudioToyWorld.read_back` measures a sound without any trained network, at whatever sample rate it comes:
a short-time Fourier transform (64 ms Hann windows, 10 ms hop) gives each sounding frame's spectral peak
(100-1400 Hz, parabolic interpolation); pitch is the median peak, nearest centre on a log scale; movement is the
median peak of the last third of the sounding frames over that of the first third; waveform is the median over
frames of the amplitude ratios of the 2nd and 3rd harmonics to the fundamental (energies summed in a band of
+/- f0/4 around each), sine ~(0, 0), square ~(0, 1/3), sawtooth ~(1/2, 1/3); rhythm is beeping when at least 20 %
of the 10 ms RMS frames are 14 dB below the loud ones.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from nextgpt_audio.media import Audio
from nextgpt_core.toy.contract import Attributes, DecoderTraining, EncoderRecipe, ToyModality

__all__ = ["AudioToyWorld", "DURATION", "PITCHES", "SAMPLE_RATE", "measure"]

#: sample rate of a rendered toy sound (Hz)
SAMPLE_RATE = 16000
#: length of a rendered toy sound (s)
DURATION = 1.0
#: pitch -> centre frequency (Hz)
PITCHES = {"low": 220.0, "middle": 440.0, "high": 880.0}
WAVEFORMS = ("sine", "square", "sawtooth")
RHYTHMS = ("steady", "beeping")
#: movement -> exponent of ``k`` at the start and at the end of the sound
MOVEMENTS = {"going up": (-1.0, 1.0), "staying flat": (0.0, 0.0), "going down": (1.0, -1.0)}
GLIDE = 2.0 ** (3.0 / 12.0)
#: harmonics are synthesised only below this frequency (Hz)
MAX_HARMONIC_HZ = 7000.0
PEAK = 0.5
BEEP_PERIOD = 0.25  # s: on/off 4 times per second
BEEP_ON = 0.125  # s sounding in each period
BEEP_FADE = 0.005  # s
EDGE_FADE = 0.010  # s


def _harmonics(waveform: str, f_max: float) -> list[tuple[int, float]]:
    """``[(n, amplitude)]`` of the band-limited additive synthesis of ``waveform`` whose fundamental reaches
    ``f_max``."""
    top = max(1, int(MAX_HARMONIC_HZ // f_max))
    if waveform == "sine":
        return [(1, 1.0)]
    if waveform == "square":
        return [(n, 1.0 / n) for n in range(1, top + 1, 2)]
    if waveform == "sawtooth":
        return [(n, (-1.0) ** (n + 1) / n) for n in range(1, top + 1)]
    raise ValueError(f"unknown waveform {waveform!r}")


def _gate(rhythm: str, t: np.ndarray) -> np.ndarray:
    """The amplitude envelope in [0, 1] of ``rhythm`` at times ``t`` (raised-cosine fades)."""
    if rhythm == "steady":
        lin = np.minimum(t, DURATION - t) / EDGE_FADE
    elif rhythm == "beeping":
        phase = np.mod(t, BEEP_PERIOD)
        lin = np.minimum(phase, BEEP_ON - phase) / BEEP_FADE
    else:
        raise ValueError(f"unknown rhythm {rhythm!r}")
    return np.sin(0.5 * np.pi * np.clip(lin, 0.0, 1.0)) ** 2


class AudioToyWorld(ToyModality):
    """Sounds of the toy world: one-second tones (see the module docstring)."""

    key: ClassVar[str] = "audio"
    noun: ClassVar[str] = "sound"
    axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "pitch": tuple(PITCHES),
        "waveform": WAVEFORMS,
        "rhythm": RHYTHMS,
        "movement": tuple(MOVEMENTS),
    }
    generate_requests: ClassVar[tuple[str, ...]] = (
        "Play {caption}.", "Let me hear {caption}.", "Can you play {caption}?", "Make a sound of {caption}.",
        "I would like to hear {caption}.", "Please synthesise {caption}.", "Create {caption} for me.",
        "Could you let me hear {caption}?", "Generate a sound: {caption}.", "Produce {caption}, please.",
        "Give me an audio clip of {caption}.", "Sound out {caption} for me.",
    )
    describe_requests: ClassVar[tuple[str, ...]] = (
        "What do you hear?", "Describe this sound.", "What does this sound like?", "What is in this audio clip?",
        "Tell me what you hear in the recording.", "Can you describe this audio?", "What kind of tone is this?",
        "Explain what this sound is.", "Give me a caption for this sound.", "What can you hear in this clip?",
        "Describe the audio for me.", "Write a caption for this recording.",
    )
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.", "I hear {caption}.", "The sound is {caption}.")
    generate_answers: ClassVar[tuple[str, ...]] = ("Here is {caption}.", "Sure, here is {caption}.", "This is {caption}.")
    edit_requests: ClassVar[dict[str, tuple[str, ...]]] = {
        "pitch": ("Play it at a {value} pitch instead.", "Make it a {value} tone.", "Change it to a {value} pitch.",
                  "Could it be {value}-pitched?", "Now move it to the {value} register."),
        "waveform": ("Now make it a {value} wave.", "Use a {value} wave instead.", "Change the waveform to {value}.",
                     "Could it be a {value} tone?", "Play it as a {value} wave."),
        "rhythm": ("Now make it {value}.", "Make the tone {value} instead.", "Could it be {value}?",
                   "Change it to a {value} tone.", "Play it {value} this time."),
        "movement": ("Change it so the pitch is {value}.", "Now have the pitch {value}.",
                     "Play it again with the pitch {value}.", "I want the tone {value} instead.",
                     "Could the pitch be {value} this time?"),
    }

    # ------------------------------------------------------------------ what exists
    def combinations(self) -> list[dict[str, str]]:
        """All 54 tones: pitch x waveform x rhythm x movement."""
        return [
            {"pitch": p, "waveform": w, "rhythm": r, "movement": m}
            for p in PITCHES for w in WAVEFORMS for r in RHYTHMS for m in MOVEMENTS
        ]

    def caption(self, attrs: Attributes) -> str:
        """``"a {rhythm} {pitch} {waveform} tone {movement}"``, e.g. ``"a beeping high sine tone going up"``."""
        return f"a {attrs['rhythm']} {attrs['pitch']} {attrs['waveform']} tone {attrs['movement']}"

    def held_out(self, attrs: Attributes) -> bool:
        """Every high tone going up."""
        return attrs["pitch"] == "high" and attrs["movement"] == "going up"

    # ------------------------------------------------------------------ media
    def render(self, attrs: Attributes, rng: np.random.Generator) -> Audio:
        """One second of the tone ``attrs`` at 16 kHz, mono float32, peak about 0.5; ``rng`` draws the detune
        (+/-2 %), the oscillator phase and the level (+/-1.5 dB)."""
        centre = PITCHES[attrs["pitch"]] * (1.0 + float(rng.uniform(-0.02, 0.02)))
        phase0 = float(rng.uniform(0.0, 2.0 * np.pi))
        level = PEAK * 10.0 ** (float(rng.uniform(-1.5, 1.5)) / 20.0)
        start, end = MOVEMENTS[attrs["movement"]]
        n = int(round(DURATION * SAMPLE_RATE))
        t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
        freq = centre * GLIDE ** (start + (end - start) * t / DURATION)  # exponential glide
        theta = phase0 + 2.0 * np.pi * np.concatenate(([0.0], np.cumsum(freq[:-1]))) / SAMPLE_RATE
        wave = np.zeros(n)
        for k, amp in _harmonics(attrs["waveform"], float(freq.max())):
            wave += amp * np.sin(k * theta)
        wave *= level / np.max(np.abs(wave))
        wave *= _gate(attrs["rhythm"], t)
        return Audio(samples=wave.astype(np.float32), sample_rate=SAMPLE_RATE)

    def read_back(self, media: Any) -> dict[str, str]:
        """Pitch, waveform, rhythm and movement of ``media`` (an ``Audio`` at any rate, mono or not) measured by
        plain signal processing (see the module docstring and :func:`measure`); ``{}`` for silence."""
        m = measure(media)
        if not m:
            return {}
        out = {
            "pitch": min(PITCHES, key=lambda p: abs(math.log2(PITCHES[p]) - m["log2_pitch"])),
            "rhythm": "beeping" if m["silent_share"] >= 0.2 else "steady",
            "movement": "going up" if m["glide"] > 0.12 else "going down" if m["glide"] < -0.12 else "staying flat",
        }
        if math.isfinite(m["ratio2"]):
            out["waveform"] = "sawtooth" if m["ratio2"] > 0.25 else "square" if m["ratio3"] > 1.0 / 6.0 else "sine"
        return out

    def preview(self, media: Any) -> np.ndarray:
        """A spectrogram of ``media`` for reports: uint8 ``(64, 100, 3)``, time left to right (10 ms columns of
        the first second), frequency bottom to top (0-4 kHz, 64 rows), brightness the level over a 60 dB range."""
        x = np.asarray(media.samples, dtype=np.float64)
        x = x.mean(axis=1) if x.ndim == 2 else x
        sr = int(media.sample_rate)
        win, hop = max(16, int(0.032 * sr)), max(1, sr // 100)
        x = np.pad(np.nan_to_num(x[:sr]), (0, win))
        starts = np.arange(0, min(100 * hop, x.size - win), hop)
        spec = np.abs(np.fft.rfft(x[starts[:, None] + np.arange(win)] * np.hanning(win), axis=1)) ** 2  # (T, F)
        top = min(spec.shape[1], int(4000 / (sr / win)) + 1)
        rows = np.linspace(0, top - 1, 64).round().astype(int)
        db = 10 * np.log10(spec[:, rows].T[::-1] + 1e-12)  # (64, T), high frequencies first
        level = np.clip((db - (db.max() - 60.0)) / 60.0, 0.0, 1.0) if db.size else np.zeros((64, 1))
        picture = np.zeros((64, 100), np.uint8)
        picture[:, : level.shape[1]] = (level * 255).astype(np.uint8)
        return np.repeat(picture[:, :, None], 3, axis=2)

    # ------------------------------------------------------------------ frozen networks
    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        """ImageBind's audio branch, toy size, one clip per sound."""
        return EncoderRecipe(encoder="audio/imagebind", branch="audio", encoder_options={"size": "toy", "clips_per_video": 1})

    #: renderings per training combination for :meth:`train_decoder` (48 combinations: 384 sounds in full)
    decoder_renders: ClassVar[dict[str, int]] = {"full": 8, "mini": 1}

    def decoder_choice(self, folder: str) -> dict[str, Any]:
        """``audio/audioldm`` loading the folder :meth:`train_decoder` wrote; its ``prompt_embeds`` are
        ``(B, 1, 64)`` (the CLAP projection size of the toy decoder)."""
        from nextgpt_audio.toy_decoder import EMBED_DIM

        return {"id": "audio/audioldm", "options": {"path": folder, "embed_dim": EMBED_DIM}}

    def decode_options(self, scale: str) -> dict[str, Any]:
        """20 DDIM steps (2 in ``mini``), guidance 3, one second."""
        return {"num_inference_steps": 20 if scale == "full" else 2, "guidance_scale": 3.0, "audio_length_in_s": DURATION}

    def train_decoder(self, job: DecoderTraining) -> dict[str, Any]:
        """An AudioLDM-style decoder trained from scratch on ``job.items`` (1 s sounds), saved as an
        ``AudioLDMPipeline`` folder (float16 safetensors) that ``audio/audioldm`` loads. See
        :mod:`nextgpt_audio.toy_decoder` for the parts; in short:

        - log-mel: 64 log-spaced bands 150 Hz - 4 kHz, 25 ms hop -> ``(40, 64)`` per second in ``[-1, 1]``;
        - vocoder (``SpeechT5HifiGan``): a learnt log-mel -> sinusoid-amplitude front end and an oscillator bank
          set analytically (40 Hz line grid);
        - ``AutoencoderKL``: ``(1, 40, 64)`` <-> ``(8, 5, 8)`` latents;
        - ``ClapTextModelWithProjection`` (byte-level BPE learnt from the captions, 64-d ``text_embeds``) shaped
          into a compositional attribute code, then the ``UNet2DConditionModel`` (class-label conditioning on the
          normalised ``text_embeds``, as AudioLDM) trained with v-prediction; a DDIM scheduler.

        ``job.progress`` gets one running count over all sub-trainings. Returns facts: per part its steps,
        seconds, CPU seconds and first / final losses, and the parameter counts."""
        from nextgpt_audio.toy_decoder import train_audioldm

        if not job.items:
            raise ValueError("train_decoder needs training items")
        octaves = {pitch: math.log2(hz / PITCHES["middle"]) for pitch, hz in PITCHES.items()}
        return train_audioldm(job.items, job.out_dir, job.scale, job.seed, job.progress, job.log, pitch_octaves=octaves)


def measure(media: Any) -> dict[str, float]:
    """The raw measurements behind :meth:`AudioToyWorld.read_back` (``{}`` for silence or a too-short sound).

    Returns:
        ``log2_pitch``: median log2 of the per-frame spectral peak (Hz) over the sounding frames;
        ``glide``: median log2 peak of the last third of the sounding frames minus that of the first (octaves);
        ``ratio2``, ``ratio3``: median amplitude ratios of the 2nd and 3rd harmonics to the fundamental (NaN
        when the 3rd harmonic lies above the Nyquist frequency);
        ``silent_share``: share of 10 ms frames whose RMS is below a fifth of their 95th percentile (-14 dB).
    """
    x = np.asarray(media.samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    sr = int(media.sample_rate)
    if x.size < sr // 10:
        return {}
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = x - x.mean()  # no DC offset

    # rhythm: RMS per 10 ms frame
    hop = max(1, sr // 100)
    frames = x[: x.size // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = float(np.percentile(rms, 95))
    if loud <= 1e-6:
        return {}
    silent = float(np.mean(rms < 0.2 * loud))

    # STFT: 64 ms Hann windows every 10 ms, zero-padded 2x
    win = int(round(0.064 * sr))
    if x.size < win:
        x = np.pad(x, (0, win - x.size))
    nfft = 1 << int(math.ceil(math.log2(win * 2)))
    starts = np.arange(0, x.size - win + 1, hop)
    idx = starts[:, None] + np.arange(win)[None, :]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(win)[None, :], n=nfft, axis=1)) ** 2
    energy = spec.sum(axis=1)
    sounding = energy >= 0.1 * float(np.percentile(energy, 95))
    spec = spec[sounding]
    bin_hz = sr / nfft

    # per frame: spectral peak in 100-1400 Hz, refined by a parabola through log power
    lo, hi = int(100 / bin_hz), min(int(1400 / bin_hz) + 1, spec.shape[1] - 1)
    if hi <= lo:
        return {}
    peak = lo + np.argmax(spec[:, lo:hi], axis=1)
    rows = np.arange(spec.shape[0])
    a, b, c = (np.log(spec[rows, peak + d] + 1e-20) for d in (-1, 0, 1))
    denom = a - 2 * b + c
    shift = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
    f0 = (peak + np.clip(shift, -0.5, 0.5)) * bin_hz
    track = np.log2(f0)

    centre = float(np.median(track))
    third = max(1, track.size // 3)
    glide = float(np.median(track[-third:]) - np.median(track[:third]))  # octaves

    # waveform: amplitude ratios of harmonics 2 and 3 (band energies of +/- f0/4 around each)
    freqs = np.arange(spec.shape[1]) * bin_hz
    cum = np.concatenate((np.zeros((spec.shape[0], 1)), np.cumsum(spec, axis=1)), axis=1)

    def band(h: int) -> np.ndarray:
        left = np.searchsorted(freqs, (h - 0.25) * f0)
        right = np.searchsorted(freqs, (h + 0.25) * f0)
        return cum[rows, right] - cum[rows, left]

    first = band(1) + 1e-20
    valid = 3.25 * f0 < sr / 2
    r2 = float(np.median(np.sqrt(band(2) / first)[valid])) if valid.any() else math.nan
    r3 = float(np.median(np.sqrt(band(3) / first)[valid])) if valid.any() else math.nan
    return {"log2_pitch": centre, "glide": glide, "ratio2": r2, "ratio3": r3, "silent_share": silent}
