"""A permissively licensed audio encoder: LAION CLAP's audio tower (transformers ``ClapAudioModelWithProjection``).

ImageBind's weights are CC-BY-NC; LAION CLAP's (``laion/clap-htsat-unfused``) are Apache-2.0. This encoder is the
drop-in alternative for commercial use.

Shapes (real geometry: 48 kHz, 10 s clips, hop 480, 64 mel bins):

- ``preprocess(Audio)`` -> ``(1, 1001, 64)`` float32: the log-mel spectrogram (dB) of one 10 s clip, computed by
  transformers' ``ClapFeatureExtractor`` configured like the ``laion/clap-htsat-unfused`` processor (48 kHz,
  n_fft 1024, hop 480, 64 mels, 50 Hz - 14 kHz, ``repeatpad``). Before that the audio is mixed down to mono (mean of
  the channels), resampled to 48 kHz with PyAV's ``AudioResampler`` (FFmpeg's swresample; very short clips are
  zero-padded for the resampler's filter and trimmed back to ``round(n * 48000 / rate)`` samples) and, when longer
  than 10 s, **truncated to its first 10 s** (deterministic; the processor's own ``rand_trunc`` would crop at
  random). Shorter clips are repeated, then zero-padded, to 10 s (``repeatpad``), so every item has the same shape.
- ``forward((B, 1, 1001, 64))`` -> ``(B, 1, projection_dim)``: the L2-normalised ``audio_embeds`` (CLAP's joint
  audio-text space).

Only *unfused* checkpoints are supported (``enable_fusion=false``): the fused model needs a per-item ``is_longer``
flag and 4-channel fusion inputs, which the one-tensor-per-item contract does not carry.

Weights come from a local folder (``path``; never downloaded): a full ``ClapModel`` (``laion/clap-htsat-unfused``
as saved by ``save_pretrained``; the text tower is ignored) or a ``ClapAudioModelWithProjection``. A
``preprocessor_config.json`` in the folder configures the feature extractor (its truncation mode is overridden as
above). With ``path`` unset the tower is randomly initialised (seeded by ``torch.manual_seed``) with the dims
given; every dim left unset takes its **full-size default, HTSAT-tiny as in ``laion/clap-htsat-unfused``**
(patch embedding 96, depths (2, 2, 6, 2), heads (4, 8, 16, 32), hidden 768, projection 512).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

from nextgpt_core.errors import CheckpointError, ConfigError, MediaError, WeightsNotFoundError
from nextgpt_core.hf_loading import describe_mismatch, quiet_transformers, weights_folder
from nextgpt_core.interfaces import ComponentConfig, Encoder

from .media import Audio

__all__ = ["CLAP_FULL_SIZE", "CLAP_SAMPLE_RATE", "CLAPAudioEncoder", "CLAPAudioEncoderConfig", "resample_mono"]

#: Full-size defaults: HTSAT-tiny as in ``laion/clap-htsat-unfused``.
CLAP_FULL_SIZE: dict[str, Any] = {
    "patch_embeds_hidden_size": 96,
    "depths": (2, 2, 6, 2),
    "num_attention_heads": (4, 8, 16, 32),
    "projection_dim": 512,
}
CLAP_SAMPLE_RATE = 48_000
#: ``laion/clap-htsat-unfused``'s processor settings (truncation is done here, deterministically).
_EXTRACTOR_SETTINGS: dict[str, Any] = {
    "feature_size": 64,
    "sampling_rate": CLAP_SAMPLE_RATE,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "padding_value": 0.0,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "top_db": None,
    "truncation": "rand_trunc",
    "padding": "repeatpad",
}
_PREPROCESSOR_FILE = "preprocessor_config.json"


class CLAPAudioEncoderConfig(ComponentConfig):
    """Options of :class:`CLAPAudioEncoder`.

    ``path``: a local folder with a transformers CLAP checkpoint (``config.json`` + weights); the architecture then
    comes from its ``config.json`` and the dims below must stay unset. With ``path`` unset the dims (``None`` = the
    HTSAT-tiny value in :data:`CLAP_FULL_SIZE`) define a randomly initialised tower (tests use tiny widths). The
    tower's width doubles at each stage: ``hidden_size = patch_embeds_hidden_size * 2 ** (len(depths) - 1)``.
    """

    path: str | None = None
    patch_embeds_hidden_size: int | None = Field(default=None, ge=1)
    depths: tuple[int, ...] | None = None
    num_attention_heads: tuple[int, ...] | None = None
    projection_dim: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "CLAPAudioEncoderConfig":
        given = [k for k in CLAP_FULL_SIZE if getattr(self, k) is not None]
        if self.path is not None and given:
            raise ValueError(f"with path set the architecture comes from its config.json; leave {given} unset")
        if self.path is None:
            d = self.dims()
            if not d["depths"] or len(d["depths"]) != len(d["num_attention_heads"]):
                raise ValueError("depths and num_attention_heads need one entry per stage")
            if min(d["depths"]) < 1 or min(d["num_attention_heads"]) < 1:
                raise ValueError("depths and num_attention_heads must be positive")
            for i, heads in enumerate(d["num_attention_heads"]):
                if (d["patch_embeds_hidden_size"] * 2**i) % heads:
                    raise ValueError(f"stage {i} width {d['patch_embeds_hidden_size'] * 2**i} is not a multiple of its {heads} heads")
        return self

    def dims(self) -> dict[str, Any]:
        """The architecture of a randomly initialised tower: given dims, the rest from :data:`CLAP_FULL_SIZE`."""
        return {k: (v if (v := getattr(self, k)) is not None else d) for k, d in CLAP_FULL_SIZE.items()}


def _audio_config(config: CLAPAudioEncoderConfig) -> ClapAudioConfig:
    """The transformers audio config: read from ``path`` (a ClapModel's ``audio_config`` or an audio model's)."""
    if config.path is None:
        d = config.dims()
        return ClapAudioConfig(
            patch_embeds_hidden_size=d["patch_embeds_hidden_size"],
            depths=list(d["depths"]),
            num_attention_heads=list(d["num_attention_heads"]),
            num_hidden_layers=len(d["depths"]),
            hidden_size=d["patch_embeds_hidden_size"] * 2 ** (len(d["depths"]) - 1),
            projection_dim=d["projection_dim"],
            enable_fusion=False,
            # the real geometry: 64 mel bins, 256 x 256 spectrogram "image", window 8, patch 4
            num_mel_bins=64,
            spec_size=256,
            window_size=8,
            patch_size=4,
            patch_stride=(4, 4),
            hidden_dropout_prob=0.0,
        )
    folder = weights_folder(config.path, "CLAP")
    with quiet_transformers():
        try:
            audio = ClapAudioConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder / 'config.json'}: not a CLAP config ({exc})") from exc
    if audio.enable_fusion:
        raise ConfigError(
            f"{folder}: fused CLAP checkpoints (enable_fusion=true) are not supported; use an unfused one "
            "such as laion/clap-htsat-unfused"
        )
    return audio


def resample_mono(samples: np.ndarray, rate: int, target: int = CLAP_SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 signal ``(n,)`` from ``rate`` to ``target`` Hz with PyAV (FFmpeg swresample).

    Returns ``(round(n * target / rate),)`` float32 (at least one sample). The input is zero-padded to 1024
    samples first, because swresample's filter delay swallows clips of a few samples; the padding is trimmed off.
    """
    n = samples.shape[0]
    expected = max(1, round(n * target / rate))
    if rate == target:
        return samples.astype(np.float32, copy=False)
    import av

    padded = np.zeros(max(n, 1024), dtype=np.float32)
    padded[:n] = samples
    frame = av.AudioFrame.from_ndarray(padded[None, :], format="fltp", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=target)
    frames = resampler.resample(frame) + resampler.resample(None)
    out = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.float32)
    out = out[:expected].astype(np.float32, copy=False)
    if out.shape[0] < expected:
        out = np.pad(out, (0, expected - out.shape[0]))
    return out


class CLAPAudioEncoder(Encoder):
    """CLAP audio encoder: ``Audio`` -> ``(1, 1001, 64)`` log-mel; ``(B, 1, 1001, 64)`` -> ``(B, 1, projection_dim)``.

    The output is CLAP's ``audio_embeds``, L2-normalised. Frozen after construction (``eval()``, no gradients).
    """

    config_class: ClassVar[type[ComponentConfig]] = CLAPAudioEncoderConfig
    config: CLAPAudioEncoderConfig

    def __init__(self, config: CLAPAudioEncoderConfig) -> None:
        super().__init__(config)
        audio = _audio_config(config)
        if config.path is None:
            self.model = ClapAudioModelWithProjection(audio)
            self.extractor = ClapFeatureExtractor(**_EXTRACTOR_SETTINGS)
        else:
            folder = Path(config.path).expanduser()
            self.model = self._load(folder)
            if (folder / _PREPROCESSOR_FILE).is_file():
                with quiet_transformers():
                    self.extractor = ClapFeatureExtractor.from_pretrained(folder, local_files_only=True)
            else:
                self.extractor = ClapFeatureExtractor(**{**_EXTRACTOR_SETTINGS, "feature_size": audio.num_mel_bins})
        if self.extractor.feature_size != self.model.config.num_mel_bins:
            raise ConfigError(
                f"CLAP feature extractor gives {self.extractor.feature_size} mel bins, the model takes "
                f"{self.model.config.num_mel_bins}"
            )
        self.freeze()

    @staticmethod
    def _load(folder: Path) -> ClapAudioModelWithProjection:
        folder = weights_folder(str(folder), "CLAP")
        with quiet_transformers():
            try:
                model, info = ClapAudioModelWithProjection.from_pretrained(
                    folder, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
                )  # mis-shaped weights are reported below, by name
            except OSError as exc:
                raise WeightsNotFoundError(f"CLAP weights folder {folder}: {str(exc).splitlines()[0]}") from exc
            except (RuntimeError, ValueError) as exc:
                raise CheckpointError(f"{folder}: unreadable checkpoint ({str(exc).splitlines()[0]})") from exc
        # BatchNorm's num_batches_tracked is not needed in eval mode; anything else missing is a wrong checkpoint
        missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith("num_batches_tracked"))
        mismatched = sorted(describe_mismatch(k) for k in info.get("mismatched_keys", ()))
        if missing or mismatched:
            parts = [f"{len(missing)} weights missing {missing[:5]}{' ...' if len(missing) > 5 else ''}"] if missing else []
            parts += [f"mis-shaped {mismatched[:5]}{' ...' if len(mismatched) > 5 else ''}"] if mismatched else []
            raise CheckpointError(f"{folder}: not a CLAP audio checkpoint: " + "; ".join(parts))
        return model

    @classmethod
    def output_dim_of(cls, config: CLAPAudioEncoderConfig) -> int:  # type: ignore[override]
        """``projection_dim``; read from ``path``'s config.json if set."""
        if config.path is None:
            return int(config.dims()["projection_dim"])
        return int(_audio_config(config).projection_dim)

    @property
    def clip_samples(self) -> int:
        """Samples per clip at 48 kHz (480000 = 10 s)."""
        return int(self.extractor.nb_max_samples)

    def preprocess(self, media: Any) -> torch.Tensor:
        """One :class:`Audio` -> ``(1, frames, mel_bins)`` float32 on CPU (``(1, 1001, 64)`` for real CLAP)."""
        name = f"{type(self).__name__}.preprocess"
        if not isinstance(media, Audio):
            raise MediaError(f"{name} expects a nextgpt_audio.Audio, got {type(media).__module__}.{type(media).__qualname__}")
        samples = np.asarray(media.samples)
        if samples.ndim not in (1, 2) or not np.issubdtype(samples.dtype, np.number) or np.iscomplexobj(samples):
            raise MediaError(f"{name}: samples must be a real (n,) or (n, channels) array, got {samples.dtype} {samples.shape}")
        if samples.shape[0] == 0 or samples.size == 0:
            raise MediaError(f"{name}: the audio is empty")
        rate = media.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise MediaError(f"{name}: sample_rate must be a positive integer, got {rate!r}")
        mono = samples.astype(np.float32, copy=False)
        if mono.ndim == 2:
            mono = mono.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            raise MediaError(f"{name}: the audio has NaN or infinite samples")
        wave = resample_mono(mono, int(rate), int(self.extractor.sampling_rate))[: self.clip_samples]
        features = self.extractor(
            wave,
            sampling_rate=self.extractor.sampling_rate,
            truncation="rand_trunc",  # never random here: the wave is already at most one clip long
            max_length=self.clip_samples,
            return_tensors="np",
        )["input_features"]
        return torch.from_numpy(np.ascontiguousarray(features[0], dtype=np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, frames, mel_bins)`` -> ``(B, 1, projection_dim)``, unit L2 norm."""
        embeds = self.model(input_features=x).audio_embeds
        return nn.functional.normalize(embeds, dim=-1).unsqueeze(1)
