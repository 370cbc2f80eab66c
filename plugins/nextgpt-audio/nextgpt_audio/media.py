"""Audio media for nextgpt: the in-memory type :class:`Audio`, :class:`AudioIO` and :func:`resample`.

Reading: WAV / FLAC / OGG through soundfile (libsndfile), MP3 and anything else FFmpeg decodes through PyAV.
Writing: WAV, 16-bit PCM by default (or 32-bit float when asked: ``AudioIO(wav_subtype="FLOAT")`` or
``NEXTGPT_WAV_SUBTYPE=FLOAT``), or FLAC 16-bit for a ``.flac`` path. Every file written is a function of the samples
alone: the same samples give the same bytes (libsndfile's float WAV carries a PEAK chunk with the wall-clock time;
this module writes float WAV itself, without it).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaExtent, MediaIO

__all__ = ["Audio", "AudioIO", "MAX_SECONDS", "WAV_SUBTYPES", "resample", "resample_waveform"]

#: Longest audio :meth:`AudioIO.read` accepts, in seconds.
MAX_SECONDS = 30 * 60
#: Suffixes read with soundfile; every other suffix (``.mp3``, ``.m4a``, ...) is decoded with PyAV.
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
#: WAV sample formats :meth:`AudioIO.write` offers: ``PCM_16`` (the default; every WAV reader, Python's ``wave``
#: included, opens it) and ``FLOAT`` (32-bit IEEE float, lossless for ``Audio``'s float32 samples).
WAV_SUBTYPES = ("PCM_16", "FLOAT")
#: Environment variable that chooses the WAV subtype when the caller does not (``PCM_16`` or ``FLOAT``).
WAV_SUBTYPE_ENV = "NEXTGPT_WAV_SUBTYPE"


@dataclass(eq=False)
class Audio:
    """Decoded audio: ``samples`` float32 in [-1, 1], ``(n,)`` mono or ``(n, channels)``; ``sample_rate`` in Hz."""

    samples: np.ndarray
    sample_rate: int

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001 - numpy protocol
        """``np.asarray(media)`` gives the samples (so array comparisons compare content)."""
        return self.samples if dtype is None else self.samples.astype(dtype)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / self.sample_rate


def _check_audio(media: Any) -> tuple[np.ndarray, int]:
    """``(samples float32 (n, ch), sample_rate)`` of a valid :class:`Audio`."""
    if not isinstance(media, Audio):
        raise MediaError(f"expected a nextgpt_audio.Audio, got {type(media).__name__}")
    x = np.asarray(media.samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.floating):
        raise MediaError(f"Audio.samples must be float (n,) or (n, channels), got {x.dtype} {np.asarray(media.samples).shape}")
    if int(media.sample_rate) != media.sample_rate or media.sample_rate <= 0:
        raise MediaError(f"Audio.sample_rate must be a positive integer, got {media.sample_rate!r}")
    return np.ascontiguousarray(x, dtype=np.float32), int(media.sample_rate)


def _wav_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is truncated (its ``data`` chunk runs past the end of the file), else ``None``.

    libsndfile silently returns the samples present in a truncated WAV; this header check catches it. Streamed
    WAVs with an unknown data size (0 or 0xFFFFFFFF) are accepted as they are.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                if offset + 8 + chunk_size > size:
                    return f"its data chunk declares {chunk_size} bytes but only {size - offset - 8} are present"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
        return "it has no data chunk"


def _read_soundfile(path: Path) -> Audio:
    import soundfile as sf

    info = sf.info(str(path))
    if info.samplerate <= 0:
        raise MediaError(f"{str(path)!r} has no valid sample rate")
    if info.frames > MAX_SECONDS * info.samplerate:
        raise MediaError(f"{str(path)!r} is {info.frames / info.samplerate:.1f} s long; audio is limited to {MAX_SECONDS} s")
    if path.suffix.lower() == ".wav" or info.format == "WAV":
        why = _wav_truncation(path)
        if why:
            raise MediaError(f"{str(path)!r} is truncated or corrupt: {why}")
    samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    if samples.shape[0] < info.frames:
        raise MediaError(f"{str(path)!r} is truncated or corrupt: read {samples.shape[0]} of {info.frames} frames")
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=int(rate))


def _read_pyav(path: Path) -> Audio:
    import av

    with av.open(str(path), mode="r") as container:
        if not container.streams.audio:
            raise MediaError(f"{str(path)!r} has no audio stream")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise MediaError(f"{str(path)!r} has no valid sample rate")
        channels = stream.codec_context.channels or len(stream.layout.channels)
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            # Decoded frames are float planar ("fltp") for MP3/AAC; ask for packed float32 per frame.
            array = frame.to_ndarray()
            fmt = frame.format
            if fmt.is_planar:
                array = array.T  # (ch, n) -> (n, ch)
            else:
                array = array.reshape(-1, len(frame.layout.channels))
            if not np.issubdtype(array.dtype, np.floating):
                info = np.iinfo(array.dtype)
                array = array.astype(np.float32) / float(-info.min)
            chunks.append(np.asarray(array, dtype=np.float32))
            total += array.shape[0]
            if total > MAX_SECONDS * rate:
                raise MediaError(f"{str(path)!r} is longer than {MAX_SECONDS} s")
    if not chunks:
        raise MediaError(f"{str(path)!r} contains no decodable audio")
    samples = np.concatenate(chunks, axis=0)
    if samples.shape[1] == 1 or channels == 1:
        samples = samples[:, 0]
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=rate)


def _wav_subtype(value: str | None) -> str:
    """The WAV subtype asked for (argument, else ``NEXTGPT_WAV_SUBTYPE``, else ``PCM_16``), checked."""
    chosen = value if value is not None else os.environ.get(WAV_SUBTYPE_ENV, "") or "PCM_16"
    if chosen.upper() not in WAV_SUBTYPES:
        where = "wav_subtype" if value is not None else WAV_SUBTYPE_ENV
        raise MediaError(f"{where}={chosen!r}: the audio plugin writes WAV as {' or '.join(WAV_SUBTYPES)}")
    return chosen.upper()


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 ``(n, ch)`` in [-1, 1] -> int16, ``round(x * 32768)`` clipped (the inverse of reading ``int / 32768``;
    libsndfile's own float -> int conversion scales by 32767 and wraps around out-of-range values)."""
    x = np.nan_to_num(samples.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2")


def _float_wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A 32-bit IEEE-float WAV (``fmt`` format 3, a ``fact`` chunk, ``data``), as libsndfile writes it but without
    the ``PEAK`` chunk, whose timestamp made two writes of the same samples differ."""
    n, channels = samples.shape
    data = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    fact = struct.pack("<I", n)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", len(fact)) + fact
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


class AudioIO(MediaIO):
    """Reads WAV / FLAC (soundfile) and MP3 etc. (PyAV) into ``Audio``; writes WAV (16-bit PCM unless
    ``wav_subtype`` or the ``NEXTGPT_WAV_SUBTYPE`` environment variable asks for ``FLOAT``) or 16-bit FLAC.

    ``read`` returns ``Audio(samples float32 (n,) mono or (n, ch), sample_rate)``; 16-bit files give ``int / 32768``
    (what ``torchaudio.load``, ImageBind's loader, returns). It raises one ``MediaError`` naming the file when the
    file is missing, empty, unreadable, truncated (a WAV whose data chunk overruns the file, or fewer frames than
    the header declares), or longer than :data:`MAX_SECONDS`. MP3 has no length header, so a truncated MP3 reads
    as a shorter sound.

    Writing is deterministic: the same samples give the same bytes (no timestamp in any chunk).
    """

    def __init__(self, wav_subtype: str | None = None) -> None:
        """``wav_subtype``: one of :data:`WAV_SUBTYPES`; ``None`` reads ``NEXTGPT_WAV_SUBTYPE`` (default ``PCM_16``)."""
        self.wav_subtype = _wav_subtype(wav_subtype)

    def read(self, path: Path) -> Audio:
        """Decode ``path`` -> ``Audio``."""
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"audio file not found: {str(path)!r}" if not path.is_dir() else f"{str(path)!r} is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise MediaError(f"{str(path)!r} is empty (0 bytes)")
        try:
            if path.suffix.lower() in SOUNDFILE_SUFFIXES:
                audio = _read_soundfile(path)
            else:
                audio = _read_pyav(path)
        except MediaError:
            raise
        except Exception as exc:  # soundfile.LibsndfileError, av.error.*, OSError, ...
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{str(path)!r} is not a readable audio file ({msg})") from exc
        if audio.samples.shape[0] == 0:
            raise MediaError(f"{str(path)!r} contains no samples")
        return audio

    def write(self, media: Audio, path: Path) -> Path:
        """Write ``media`` to ``path``: WAV in :attr:`wav_subtype` (16-bit PCM by default: samples rounded to
        ``int(x * 32768)``, clipped to [-32768, 32767], so :meth:`read` gives them back within 1/65536), or 16-bit
        FLAC if ``path`` ends in ``.flac``. The bytes depend on the samples and the rate only."""
        import soundfile as sf

        samples, rate = _check_audio(media)
        path = Path(path)
        if path.suffix.lower() == ".flac":
            data = _to_pcm16(samples)
            sf.write(str(path), data[:, 0] if data.shape[1] == 1 else data, rate, format="FLAC", subtype="PCM_16")
        elif self.wav_subtype == "FLOAT":
            path.write_bytes(_float_wav_bytes(samples, rate))
        else:
            data = _to_pcm16(samples)
            sf.write(str(path), data[:, 0] if data.shape[1] == 1 else data, rate, format="WAV", subtype="PCM_16")
        return path

    def probe(self, path: Path) -> MediaExtent:
        """Duration and decoded size (float32 samples) from the header (soundfile) or the container (PyAV)."""
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            self.read(path)  # the same one-line error as reading
        try:
            if path.suffix.lower() in SOUNDFILE_SUFFIXES:
                import soundfile as sf

                info = sf.info(str(path))
                seconds = info.frames / info.samplerate if info.samplerate > 0 else None
                return MediaExtent(seconds=seconds, decoded_bytes=int(info.frames) * int(info.channels) * 4)
            import av

            with av.open(str(path), mode="r") as container:
                if not container.streams.audio:
                    raise MediaError(f"{str(path)!r} has no audio stream")
                stream = container.streams.audio[0]
                seconds = (float(stream.duration * stream.time_base) if stream.duration is not None and stream.time_base
                           else container.duration / 1_000_000 if container.duration is not None else None)
                rate = int(stream.codec_context.sample_rate or stream.rate or 0)
                channels = stream.codec_context.channels or 1
                decoded = int(seconds * rate) * channels * 4 if seconds is not None and rate else None
                return MediaExtent(seconds=seconds, decoded_bytes=decoded)
        except MediaError:
            raise
        except Exception as exc:  # soundfile.LibsndfileError, av.error.*
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{str(path)!r} is not a readable audio file ({msg})") from exc

    def to_bytes(self, media: Audio) -> bytes:
        """Canonical form: ``b"AUDIO <n>x<ch> sr=<rate>\\n"`` + float32 little-endian ``(n, ch)`` samples.

        ``(n,)`` and ``(n, 1)`` give the same bytes.
        """
        samples, rate = _check_audio(media)
        n, ch = samples.shape
        return f"AUDIO {n}x{ch} sr={rate}\n".encode() + samples.astype("<f4", copy=False).tobytes()

    def example(self) -> Audio:
        """1 s of a 440 Hz sine at 16 kHz, amplitude 0.5, mono float32."""
        t = np.arange(16000, dtype=np.float64) / 16000
        return Audio(samples=(0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sample_rate=16000)


# ---------------------------------------------------------------------------------------------- resampling
#: Above this many kernel taps (``new/gcd * (orig/gcd + 2*width)``) the exact sinc resampler would need too much
#: memory (e.g. 16001 Hz -> 16 kHz); :func:`resample_waveform` then uses FFmpeg's resampler instead.
MAX_KERNEL_TAPS = 20_000_000


def resample_waveform(waveform: "Any", orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> "Any":
    """Band-limited resampling identical to ``torchaudio.functional.resample`` (default ``sinc_interp_hann``).

    torchaudio's algorithm (which ImageBind calls): reduce ``orig, new`` by their gcd; ``base = min(orig, new) *
    rolloff``; ``width = ceil(lowpass_filter_width * orig / base)``; for output phase ``j`` the taps at
    ``t = (-j / new + k / orig) * base`` for ``k = -width .. width + orig - 1``, clamped to ``±lowpass_filter_width``,
    are ``sinc(pi t) * cos(pi t / (2 * lowpass_filter_width))**2 * base / orig``, all in the waveform's dtype
    (float32). The signal is zero-padded by ``(width, width + orig)``, convolved with stride ``orig`` (one output
    channel per phase), interleaved, and cut to ``ceil(new * n / orig)`` (computed as a float32 tensor, as
    torchaudio does).

    Args:
        waveform: float tensor ``(..., n)``.

    Returns:
        float tensor ``(..., ceil(new_freq * n / orig_freq))``; the input itself if the rates are equal.
    """
    import torch
    import torch.nn.functional as F

    if orig_freq <= 0 or new_freq <= 0:
        raise MediaError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    if new * (orig + 2 * width) > MAX_KERNEL_TAPS:
        return _resample_ffmpeg(waveform, int(orig_freq), int(new_freq))
    dtype = waveform.dtype
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base / orig)

    shape = waveform.size()
    flat = waveform.reshape(-1, shape[-1])
    num, length = flat.shape
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernels, stride=orig)
    out = out.transpose(1, 2).reshape(num, -1)
    target = int(torch.ceil(torch.as_tensor(new * length / orig)).long())
    out = out[..., :target]
    return out.view(shape[:-1] + out.shape[-1:])


def _resample_ffmpeg(waveform: "Any", orig_freq: int, new_freq: int) -> "Any":
    """Fallback for rate pairs with a huge exact kernel: FFmpeg's ``swresample`` (not bit-identical to torchaudio)."""
    import av
    import torch

    flat = waveform.reshape(-1, waveform.shape[-1]).to(torch.float32).numpy()
    rows = []
    for row in flat:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=new_freq)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(row[None, :]), format="flt", layout="mono")
        frame.sample_rate = orig_freq
        chunks = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        rows.append(np.concatenate(chunks) if chunks else np.zeros(0, np.float32))
    target = math.ceil(new_freq * flat.shape[1] / orig_freq)
    out = np.zeros((len(rows), target), np.float32)
    for i, r in enumerate(rows):
        out[i, : min(target, r.shape[0])] = r[:target]
    return torch.from_numpy(out).to(waveform.dtype).view(tuple(waveform.shape[:-1]) + (target,))


def resample(audio: Audio, rate: int) -> Audio:
    """``audio`` at ``rate`` Hz (torchaudio-identical sinc resampling, see :func:`resample_waveform`), same channels."""
    import torch

    samples, sr = _check_audio(audio)
    if sr == rate:
        return Audio(samples=np.asarray(audio.samples, dtype=np.float32), sample_rate=sr)
    out = resample_waveform(torch.from_numpy(samples.T.copy()), sr, int(rate)).T.contiguous().numpy()
    return Audio(samples=out[:, 0].copy() if np.asarray(audio.samples).ndim == 1 else out, sample_rate=int(rate))
