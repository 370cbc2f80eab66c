"""The toy world's AudioLDM-style decoder, trained from scratch (private helper of :mod:`nextgpt_audio.toy`).

Draft: the log-mel representation and the line-synthesis vocoder.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000
#: samples per mel frame: 40 frames per second
HOP = 400
N_FFT = 1024
N_MELS = 64
F_MIN, F_MAX = 150.0, 4000.0
#: the dB range mapped to [-1, 1]
DB_FLOOR, DB_TOP = -35.0, 45.0
#: the vocoder's sinusoid frequencies (Hz): multiples of SAMPLE_RATE / HOP = 40 Hz (so each repeats every frame)
LINE_HZ = tuple([160.0 + 40.0 * i for i in range(37)] + [1680.0 + 80.0 * i for i in range(27)])
#: the vocoder's upsampling: frame rate -> (1x1, nonlinear) -> 8 kHz (line synthesis) -> 16 kHz (interpolation)
VOCODER_RATES = (1, HOP // 2, 2)
INTERP_TAPS = 48
OFFSET = 2.0


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, f_min: float = F_MIN, f_max: float = F_MAX) -> torch.Tensor:
    """``(n_fft // 2 + 1, n_mels)``: triangular filters whose centres are spaced evenly in log frequency from
    ``f_min`` to ``f_max`` (each peaking at 1 on its centre, reaching its neighbours' centres, and at least
    ``1.5`` FFT bins wide on each side)."""
    centres = f_min * (f_max / f_min) ** (np.arange(-1, n_mels + 1) / (n_mels - 1))
    freqs = np.arange(n_fft // 2 + 1) * SAMPLE_RATE / n_fft
    least = 1.5 * SAMPLE_RATE / n_fft
    bank = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        left, centre, right = centres[m : m + 3]
        left, right = min(left, centre - least), max(right, centre + least)
        rise, fall = (freqs - left) / (centre - left), (right - freqs) / (right - centre)
        bank[:, m] = np.clip(np.minimum(rise, fall), 0.0, None)
    return torch.tensor(bank, dtype=torch.float32)


class LogMel:
    """Waveforms ``(B, n)`` at 16 kHz -> log-mel ``(B, n // HOP, N_MELS)`` in ``[-1, 1]`` (frame ``k`` is centred
    on sample ``k * HOP + HOP / 2``; ``DB_FLOOR .. DB_TOP`` dB of mel power map to ``-1 .. 1``). Differentiable."""

    def __init__(self) -> None:
        self.bank = mel_filterbank()
        self.window = torch.hann_window(N_FFT)

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        left = (N_FFT - HOP) // 2
        padded = F.pad(waves[:, None], (left, N_FFT - HOP - left), mode="reflect")[:, 0]
        spec = torch.stft(padded, N_FFT, HOP, window=self.window, center=False, return_complex=True)
        power = (spec.real**2 + spec.imag**2).transpose(1, 2) @ self.bank
        db = 10.0 * torch.log10(power + 1e-10)
        return ((db - DB_FLOOR) / (DB_TOP - DB_FLOOR) * 2.0 - 1.0).clamp(-1.0, 1.0)


def line_amplitudes(waves: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` -> ``(B, len(LINE_HZ), n // HOP)``: per frame, the amplitude of each line frequency (a sinusoid of
    amplitude ``A`` at a line gives ``A``; one half-way between two lines gives about ``A / 2`` to each), measured
    with a Hann window centred on the frame, two line spacings long (``2 * HOP`` below 1.6 kHz, ``HOP`` above)."""
    win = 2 * HOP
    padded = F.pad(waves[:, None], (win // 2 - HOP // 2, win // 2 - HOP // 2), mode="reflect")[:, 0]
    frames = padded.unfold(1, win, HOP)[:, : waves.shape[1] // HOP]  # (B, T, win)
    t = torch.arange(win, dtype=torch.float64)
    rows = []
    for hz in LINE_HZ:
        length = win if hz <= 1600.0 else win // 2
        window = torch.zeros(win, dtype=torch.float64)
        start = (win - length) // 2
        window[start : start + length] = torch.sin(math.pi * torch.arange(length, dtype=torch.float64) / length) ** 2
        window *= 2.0 / window.sum()
        rows.append((window * torch.cos(2 * math.pi * hz * t / SAMPLE_RATE), window * torch.sin(2 * math.pi * hz * t / SAMPLE_RATE)))
    basis = torch.stack([r[0] for r in rows] + [r[1] for r in rows]).float()  # (2L, win)
    proj = frames @ basis.T  # (B, T, 2L)
    lines = len(LINE_HZ)
    return torch.sqrt(proj[..., :lines] ** 2 + proj[..., lines:] ** 2 + 1e-12).transpose(1, 2)


def build_vocoder(channels: int = 128, seed: int = 0) -> Any:
    """A ``SpeechT5HifiGan`` whose later stages are set analytically to an oscillator bank:

    - stage 0 (rate 1, frame rate): ``conv_pre`` (N_MELS -> ``channels``, k 7), a 1x1 ``ConvTranspose1d``
      (-> ``channels // 2`` = one amplitude per line) and a residual block: the learnt part (log-mel -> line
      amplitudes);
    - stage 1 (rate HOP / 2, kernel HOP, to 8 kHz): line ``l`` contributes ``a_l`` times a Hann-windowed cosine at
      ``LINE_HZ[l]`` (a multiple of 40 Hz, so consecutive frames join in phase) to channel 0, offset by ``OFFSET`` so
      the leaky ReLUs that follow pass it unchanged;
    - stage 2 (rate 2, to 16 kHz): a windowed-sinc half-band interpolator; ``conv_post`` removes the offset.
    The residual blocks of stages 1-2 are zero (identity).
    """
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    if channels // 2 < len(LINE_HZ):
        raise ValueError(f"{channels} channels: need at least {2 * len(LINE_HZ)}")
    torch.manual_seed(seed)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=N_MELS,
            sampling_rate=SAMPLE_RATE,
            upsample_initial_channel=channels,
            upsample_rates=list(VOCODER_RATES),
            upsample_kernel_sizes=[1, HOP, INTERP_TAPS],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        # stage 1: the oscillator bank at 8 kHz
        up1 = vocoder.upsampler[1]
        up1.weight.zero_()
        up1.bias.zero_()
        up1.bias[0] = OFFSET
        rate8 = SAMPLE_RATE / 2
        tau = np.arange(HOP)
        window = np.sin(np.pi * tau / HOP) ** 2  # shifted copies every HOP / 2 sum to 1
        for line, hz in enumerate(LINE_HZ):
            phase = rng.uniform(0, 2 * np.pi)
            up1.weight[line, 0] = torch.tensor(window * np.cos(2 * np.pi * hz * (tau - HOP // 4) / rate8 + phase))
        # stage 2: half-band interpolation x2 (each polyphase branch sums to 1)
        up2 = vocoder.upsampler[2]
        up2.weight.zero_()
        up2.bias.zero_()
        n = np.arange(INTERP_TAPS) - (INTERP_TAPS - 1) / 2
        taps = np.sinc(n / 2) * np.kaiser(INTERP_TAPS, 6.0)
        taps[0::2] /= taps[0::2].sum()
        taps[1::2] /= taps[1::2].sum()
        up2.weight[0, 0] = torch.tensor(taps)
        for block in list(vocoder.resblocks)[1:]:
            for conv in [*block.convs1, *block.convs2]:
                conv.weight.zero_()
                conv.bias.zero_()
        vocoder.conv_post.weight.zero_()
        vocoder.conv_post.weight[0, 0, 3] = 1.0
        vocoder.conv_post.bias.fill_(-OFFSET)
    return vocoder


def frontend_masks(vocoder: Any, reach: float = 1.5) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Masks that keep the learnt part local in frequency, so that what it learns about one pitch holds at every
    pitch (a held-out high sawtooth has its 2nd harmonic where no training tone of that pitch had one):

    - ``conv_pre``: hidden units ``2l, 2l+1`` of line ``l`` see only the mel bins whose filter reaches within
      ``reach`` line spacings of the line;
    - stage 0's 1x1 and the residual block's convolutions: line ``l`` mixes only lines ``l - 1 .. l + 1``.
    Channels past the lines stay zero."""
    bank = mel_filterbank().numpy()
    freqs = np.arange(bank.shape[0]) * SAMPLE_RATE / N_FFT
    lines = len(LINE_HZ)
    hidden = vocoder.config.upsample_initial_channel
    pre = torch.zeros(hidden, N_MELS, 1)
    for line, hz in enumerate(LINE_HZ):
        spacing = 40.0 if hz <= 1600.0 else 80.0
        near = (freqs >= hz - reach * spacing) & (freqs <= hz + reach * spacing)
        bins = np.nonzero(bank[near].sum(axis=0) > 0)[0]
        pre[2 * line : 2 * line + 2, bins] = 1.0
    index = torch.arange(hidden // 2)
    band = ((index[:, None] - index[None, :]).abs() <= 1) & (index[:, None] < lines) & (index[None, :] < lines)
    up0 = torch.zeros(hidden, hidden // 2, 1)  # ConvTranspose1d weight: (in, out, k)
    for line in range(lines):
        for other in range(max(0, line - 1), min(lines, line + 2)):
            up0[2 * other : 2 * other + 2, line] = 1.0
    masks = {vocoder.conv_pre.weight: pre, vocoder.upsampler[0].weight: up0}
    for conv in [*vocoder.resblocks[0].convs1, *vocoder.resblocks[0].convs2]:
        masks[conv.weight] = band[:, :, None].float()
    return masks


def apply_masks(masks: dict[torch.nn.Parameter, torch.Tensor]) -> None:
    """Zero the masked-out weights (in place)."""
    with torch.no_grad():
        for param, mask in masks.items():
            param.mul_(mask)


def frontend_parameters(vocoder: Any) -> list[torch.nn.Parameter]:
    """The learnt part of :func:`build_vocoder`: ``conv_pre``, stage 0's 1x1 and its residual block."""
    return [*vocoder.conv_pre.parameters(), *vocoder.upsampler[0].parameters(), *vocoder.resblocks[0].parameters()]


def vocoder_lines(vocoder: Any, mel: torch.Tensor) -> torch.Tensor:
    """``(B, T, N_MELS)`` -> ``(B, channels // 2, T)``: what stage 1 synthesises (the first ``len(LINE_HZ)`` rows are
    the line amplitudes), as in ``SpeechT5HifiGan.forward``."""
    slope = vocoder.config.leaky_relu_slope
    h = vocoder.conv_pre(mel.transpose(1, 2))
    h = vocoder.upsampler[0](F.leaky_relu(h, slope))
    h = vocoder.resblocks[0](h)
    return F.leaky_relu(h, slope)


def train_vocoder(vocoder: Any, waves: torch.Tensor, *, steps: int, batch_size: int = 32, lr: float = 3e-3,
                  gain_db: tuple[float, float] = (-12.0, 6.0), mix: float = 0.5, seed: int = 0,
                  progress: Any = None) -> dict[str, float]:
    """Fit the vocoder's learnt part (:func:`frontend_parameters`, kept local by :func:`frontend_masks`) to map the
    log-mel of sounds to their line amplitudes (:func:`line_amplitudes`): L1 on the amplitudes and on their square
    roots (so quiet harmonics count).

    Each training sound ``waves (N, n)`` is scaled by a random gain (uniform in ``gain_db``) and, with probability
    ``mix``, summed with another one (also scaled), so the map is learnt at every level at every frequency (a
    held-out high sawtooth is louder at 1.8 kHz than any training tone there)."""

    from nextgpt_core.toy.optim import TrainingSteps

    generator = torch.Generator().manual_seed(seed)
    params = frontend_parameters(vocoder)
    masks = frontend_masks(vocoder)
    apply_masks(masks)
    train = TrainingSteps(params, steps, lr=lr, clip=None, after_step=lambda: apply_masks(masks), progress=progress)
    mel = LogMel()
    lines = len(LINE_HZ)
    vocoder.train()
    for _ in range(steps):
        def draw() -> torch.Tensor:
            index = torch.randint(0, len(waves), (batch_size,), generator=generator)
            low, high = gain_db
            gain = 10.0 ** ((low + (high - low) * torch.rand(batch_size, 1, generator=generator)) / 20.0)
            return waves[index] * gain

        x = draw()
        mixed = torch.rand(batch_size, 1, generator=generator) < mix
        x = x + mixed * draw()
        with torch.no_grad():
            features, target = mel(x), line_amplitudes(x)
        got = vocoder_lines(vocoder, features)[:, :lines]
        train.update((got - target).abs().mean() + 0.3 * (got.clamp_min(0) + 1e-4).sqrt().sub((target + 1e-4).sqrt()).abs().mean())
    vocoder.eval()
    return train.facts()


# ---------------------------------------------------------------------------------------------- text side
def learn_byte_merges(corpus: Any, max_merges: int = 2000) -> list[tuple[str, str]]:
    """Byte-level BPE merges learnt from ``corpus`` the way ``RobertaTokenizer`` applies them (words split by the
    byte-level pre-tokenizer, a space becoming ``Ġ`` on the next word): most frequent pair first, ties broken by the
    pair, until every word is one symbol or ``max_merges`` merges exist. Deterministic."""
    from tokenizers.pre_tokenizers import ByteLevel

    from nextgpt_core.tiny_clip import bpe_merges

    pre = ByteLevel(add_prefix_space=False)
    counts: dict[tuple[str, ...], int] = {}
    for line in corpus:
        for word, _ in pre.pre_tokenize_str(line):
            counts[tuple(word)] = counts.get(tuple(word), 0) + 1
    return bpe_merges(counts, max_merges)


def build_tokenizer(captions: Any, max_length: int) -> Any:
    """An offline byte-level ``RobertaTokenizer``: ``<s> <pad> </s> <unk> <mask>`` (ids 0-4, pad 1 as RoBERTa /
    CLAP), the 256 byte symbols, then one token per merge learnt from ``captions`` (so every caption word is one
    token; any other text still tokenises, byte by byte)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    merges = learn_byte_merges(captions)
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + sorted(ByteLevel.alphabet()) + [a + b for a, b in merges]
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    return RobertaTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)


def encode_captions(text_encoder: Any, tokenizer: Any, texts: Any) -> torch.Tensor:
    """``(B, EMBED_DIM)``: what ``AudioLDMPipeline._encode_prompt`` computes for ``texts`` (padded to
    ``TEXT_LENGTH`` with the attention mask, CLAP ``text_embeds``, L2-normalised); the padding length does not
    change the result (the pipeline pads the negative ``""`` to ``EMBED_DIM``)."""
    tokens = tokenizer(list(texts), padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
    embeds = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask).text_embeds
    return F.normalize(embeds, dim=-1)


class AttributeCodes:
    """The target geometry of the CLAP text embedding (``EMBED_DIM``-d, L2-normalised).

    Every attribute value of a categorical axis gets its own orthonormal vector. The axis in ``ordered`` (pitch)
    is a line instead: a "has a pitch" vector plus ``octaves`` times a direction ``u`` (``low`` -1, ``middle`` 0,
    ``high`` +1), so that the embedding is a frequency knob: a transposition by ``o`` octaves of a training tone is
    the same caption's code moved by ``o`` along ``u`` (:meth:`label`). A caption's target is the normalised sum of
    its attributes' vectors; ``""`` gets one more orthonormal vector (:attr:`null`).
    """

    def __init__(self, items: Any, ordered: dict[str, dict[str, float]] | None = None, seed: int = 0) -> None:
        ordered = ordered or {}
        table = {caption: dict(attrs) for attrs, caption, _ in items}
        axes = sorted({axis for attrs in table.values() for axis in attrs})
        pairs = sorted({(a, v) for attrs in table.values() for a, v in attrs.items() if a not in ordered})
        needed = len(pairs) + 2 * len([a for a in axes if a in ordered]) + 1
        if needed > EMBED_DIM:
            raise ValueError(f"{needed} code vectors do not fit {EMBED_DIM} dimensions")
        generator = torch.Generator().manual_seed(seed)
        basis = iter(torch.linalg.qr(torch.randn(EMBED_DIM, EMBED_DIM, generator=generator))[0].T)
        self.vector = {pair: next(basis) for pair in pairs}
        self.lines = {axis: (next(basis), next(basis), dict(ordered[axis])) for axis in axes if axis in ordered}
        self.null = next(basis)
        #: the direction of one octave (the ``u`` of the ordered axis ``pitch``, if any)
        self.octave = next(iter(self.lines.values()))[1] if self.lines else torch.zeros(EMBED_DIM)
        self.raw = {caption: self.sum(attrs) for caption, attrs in table.items()}

    def sum(self, attrs: dict[str, str]) -> torch.Tensor:
        """The unnormalised code of an attribute dict (any combination of the known values)."""
        total = torch.zeros(EMBED_DIM)
        for axis, value in attrs.items():
            if axis in self.lines:
                present, direction, position = self.lines[axis]
                total = total + present + position[value] * direction
            else:
                total = total + self.vector[(axis, value)]
        return total

    def target(self, caption: str) -> torch.Tensor:
        """``(EMBED_DIM,)``: the normalised code of a training caption."""
        return F.normalize(self.raw[caption], dim=0)

    def label(self, embedding: torch.Tensor, caption: str, octaves: float) -> torch.Tensor:
        """``(EMBED_DIM,)``: the conditioning of ``caption``'s tone transposed by ``octaves``, from the text
        encoder's (normalised) ``embedding`` of the caption: ``normalize(embedding * |raw| + octaves * u)``."""
        return F.normalize(embedding * self.raw[caption].norm() + octaves * self.octave, dim=0)


def train_text_encoder(text_encoder: Any, tokenizer: Any, codes: AttributeCodes, *, steps: int, lr: float = 3e-3,
                       progress: Any = None) -> dict[str, float]:
    """Give the CLAP text embedding a compositional shape before the denoiser sees it: each training caption's
    normalised embedding is regressed onto its :class:`AttributeCodes` target, ``""`` onto the null vector (squared
    error). The UNet's ``simple_projection`` class embedding is linear, so every attribute then moves the UNet's
    conditioning by its own vector, whatever the other attributes are.
    Returns ``{"steps", "seconds", "captions", "first_loss", "final_loss", "cosine"}`` (cosine: the worst caption's
    cosine to its target at the end)."""

    from nextgpt_core.toy.optim import TrainingSteps

    captions = sorted(codes.raw) + [""]
    goal = torch.stack([codes.target(c) for c in captions[:-1]] + [codes.null])
    train = TrainingSteps(text_encoder.parameters(), steps, lr=lr, clip=None, progress=progress)
    text_encoder.train()
    for _ in range(steps):
        embeds = encode_captions(text_encoder, tokenizer, captions)
        train.update((embeds - goal).pow(2).sum(-1).mean())
    text_encoder.eval()
    with torch.no_grad():
        cosine = float((encode_captions(text_encoder, tokenizer, captions) * goal).sum(-1).min())
    return {**train.facts(), "captions": len(captions), "cosine": round(cosine, 4)}


def train_denoiser_v(unet: Any, labels: torch.Tensor, null: torch.Tensor, latents: torch.Tensor, scheduler: Any, *,
                     steps: int, batch_size: int = 64, lr: float = 1e-3, drop_prob: float = 0.1, snr_gamma: float = 5.0,
                     seed: int = 0, progress: Any = None) -> dict[str, float]:
    """Train ``unet`` to denoise ``latents (N, C, h, w)`` conditioned on ``class_labels`` ``labels (N, D)``
    (``null (D,)`` - the encoding of ``""`` - in place of a label with probability ``drop_prob``).

    As :func:`nextgpt_core.toy.diffusion.train_denoiser` (seeded batches, noise and timesteps, AdamW with the
    cosine schedule, gradient clipping, min-SNR weighting) except:

    - a **v-prediction** target (``scheduler.get_velocity``) with the matching weight ``min(snr, gamma) / (snr + 1)``:
      the pitch of a tone is decided at the noisiest steps, where an epsilon target is almost the noisy input itself
      and carries next to no gradient about the conditional mean (measured: training-caption pitch read-back 64 %
      with epsilon, the rest equal);
    - precomputed labels, the text encoder frozen: a label can be moved per latent (transposed tones,
      :meth:`AttributeCodes.label`), which a caption -> conditioning callback cannot express.

    Returns ``{"steps", "seconds", "first_loss", "final_loss"}``.
    """

    from nextgpt_core.toy.optim import TrainingSteps

    if len(latents) != len(labels):
        raise ValueError(f"{len(latents)} latents for {len(labels)} labels")
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in unet.parameters() if p.requires_grad]
    train = TrainingSteps(params, steps, lr=lr, progress=progress)
    unet.train()
    alphas = scheduler.alphas_cumprod.float()
    total_t = int(scheduler.config.num_train_timesteps)
    for _ in range(steps):
        index = torch.randint(0, len(latents), (batch_size,), generator=generator)
        drop = torch.rand(batch_size, generator=generator) < drop_prob
        condition = torch.where(drop[:, None], null[None, :], labels[index])
        z0 = latents[index]
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(0, total_t, (batch_size,), generator=generator)
        noisy = scheduler.add_noise(z0, noise, t)
        target = scheduler.get_velocity(z0, noise, t)
        prediction = unet(noisy, t, encoder_hidden_states=None, class_labels=condition).sample
        per_item = F.mse_loss(prediction.float(), target, reduction="none").flatten(1).mean(1)
        if snr_gamma:
            snr = alphas[t] / (1 - alphas[t])
            per_item = per_item * torch.clamp(snr, max=snr_gamma) / (snr + 1)
        train.update(per_item.mean())
    unet.eval()
    return train.facts()


# ---------------------------------------------------------------------------------------------- the whole recipe
def shift_bands(mels: torch.Tensor, shift: int) -> torch.Tensor:
    """``(..., N_MELS)`` log-mels moved ``shift`` bands up (down if negative): on the log-frequency axis a
    transposition by ``(F_MAX / F_MIN) ** (shift / (N_MELS - 1))`` (5.4 % per band), harmonics included; the bands
    left empty are silence (``-1``)."""
    if shift == 0:
        return mels
    out = torch.full_like(mels, -1.0)
    if shift > 0:
        out[..., shift:] = mels[..., :-shift]
    else:
        out[..., :shift] = mels[..., -shift:]
    return out


#: per scale: autoencoder widths / steps / batch, UNet widths / steps / batch, text encoder (hidden, layers),
#: vocoder steps / batch
SCALES: dict[str, dict[str, Any]] = {
    "full": {"vae_widths": (16, 16, 32, 32), "latent_channels": 8, "vae_steps": 400, "vae_batch": 16,
             "unet_widths": (32, 64, 64), "unet_steps": 2000, "unet_batch": 64, "shifts": 3, "text": (64, 2), "text_steps": 300,
             "vocoder_steps": 1500, "vocoder_batch": 32},
    "mini": {"vae_widths": (8, 8, 8, 8), "latent_channels": 8, "vae_steps": 3, "vae_batch": 4,
             "unet_widths": (8, 16), "unet_steps": 3, "unet_batch": 4, "shifts": 1, "text": (16, 1), "text_steps": 3,
             "vocoder_steps": 3, "vocoder_batch": 4},
}
#: CLAP projection size: the decoder's ``embed_dim`` (``prompt_embeds (B, 1, EMBED_DIM)``)
EMBED_DIM = 64
#: the tokenizer's ``model_max_length`` (captions are 9 tokens with ``<s> </s>``)
TEXT_LENGTH = 16


def train_audioldm(items: Any, out_dir: Any, scale: str, seed: int, progress: Any, log: Any,
                   pitch_octaves: dict[str, float] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the whole decoder from ``items`` ``[(attributes, caption, Audio)]`` and save an ``AudioLDMPipeline``
    folder in ``out_dir`` (float16 safetensors). See :meth:`nextgpt_audio.toy.AudioToyWorld.train_decoder`.

    ``pitch_octaves``: pitch value -> octaves from the middle one (the frequency knob of :class:`AttributeCodes`);
    ``overrides`` replace entries of ``SCALES[scale]``."""
    import time

    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    from nextgpt_core.toy.diffusion import encode_latents, quiet_posterior, train_autoencoder

    size = {**SCALES[scale], **overrides}
    torch.manual_seed(seed)
    total = size["vocoder_steps"] + size["vae_steps"] + size["text_steps"] + size["unet_steps"]
    done = 0

    def report(offset: int) -> Any:
        return lambda step, _n, loss: progress(offset + step, total, loss)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    facts: dict[str, Any] = {"sounds": len(items)}
    waves = torch.from_numpy(np.stack([np.asarray(a.samples, dtype=np.float32).reshape(-1)[:SAMPLE_RATE] for _, _, a in items]))
    captions = [caption for _, caption, _ in items]
    with torch.no_grad():
        mels = LogMel()(waves)  # (N, 40, 64)

    # 1. vocoder: log-mel -> line amplitudes (the synthesis stages are set analytically)
    cpu = time.process_time()
    vocoder = build_vocoder(seed=seed)
    log(f"vocoder: {count(vocoder):,} parameters ({sum(p.numel() for p in frontend_parameters(vocoder)):,} learnt), "
        f"{size['vocoder_steps']} steps on {len(waves)} sounds")
    facts["vocoder"] = train_vocoder(vocoder, waves, steps=size["vocoder_steps"], batch_size=size["vocoder_batch"],
                                     seed=seed, progress=report(done))
    facts["vocoder"]["cpu_seconds"] = round(time.process_time() - cpu, 1)
    done += size["vocoder_steps"]

    # 2. autoencoder over the log-mel: (1, 40, 64) <-> (latent_channels, 5, 8)
    cpu = time.process_time()
    widths = tuple(size["vae_widths"])
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=size["latent_channels"], block_out_channels=widths,
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * len(widths),
                        up_block_types=("UpDecoderBlock2D",) * len(widths), norm_num_groups=8, sample_size=N_MELS)
    quiet_posterior(vae)
    log(f"autoencoder: {count(vae):,} parameters, {size['vae_steps']} steps on {len(mels)} log-mels")
    facts["autoencoder"] = train_autoencoder(vae, mels[:, None], steps=size["vae_steps"], batch_size=size["vae_batch"],
                                             seed=seed, progress=report(done))
    facts["autoencoder"]["cpu_seconds"] = round(time.process_time() - cpu, 1)
    done += size["vae_steps"]
    _, scaling = encode_latents(vae, mels[:, None])
    vae.register_to_config(scaling_factor=scaling)
    facts["latent_scale"] = round(scaling, 4)

    # 3. text encoder, shaped into the attribute code
    cpu = time.process_time()
    tokenizer = build_tokenizer(captions, TEXT_LENGTH)
    hidden, layers = size["text"]
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=2,
        num_hidden_layers=layers, max_position_embeddings=EMBED_DIM + 2, projection_dim=EMBED_DIM,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    codes = AttributeCodes(items, {"pitch": dict(pitch_octaves)} if pitch_octaves else None, seed=seed)
    log(f"text encoder: {count(text_encoder):,} parameters, vocabulary {len(tokenizer)}, {size['text_steps']} steps")
    facts["text_encoder"] = train_text_encoder(text_encoder, tokenizer, codes, steps=size["text_steps"],
                                               progress=report(done))
    facts["text_encoder"]["cpu_seconds"] = round(time.process_time() - cpu, 1)
    done += size["text_steps"]
    text_encoder.requires_grad_(False)

    # 4. UNet on the latents of every tone, transposed by -shifts .. +shifts bands, labelled accordingly
    cpu = time.process_time()
    shifts = int(size["shifts"])
    band = math.log2(F_MAX / F_MIN) / (N_MELS - 1)  # octaves per band
    moves = list(range(-shifts, shifts + 1))
    with torch.no_grad():
        scaled, moved_scale = encode_latents(vae, torch.cat([shift_bands(mels, k) for k in moves])[:, None])
        latents = scaled * (scaling / moved_scale)  # on the scale the VAE stores (that of the untransposed latents)
        unique = sorted(set(captions))
        embedded = dict(zip(unique, encode_captions(text_encoder, tokenizer, unique)))
        null = encode_captions(text_encoder, tokenizer, [""])[0]
    labels = torch.stack([codes.label(embedded[c], c, k * band) for k in moves for c in captions])
    widths = tuple(size["unet_widths"])
    unet = UNet2DConditionModel(
        sample_size=tuple(latents.shape[-2:]), in_channels=latents.shape[1], out_channels=latents.shape[1],
        block_out_channels=widths, layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(widths) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(widths) - 1) + ("UpBlock2D",),
        cross_attention_dim=widths, attention_head_dim=8, norm_num_groups=8,
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=EMBED_DIM, class_embeddings_concat=True,
    )
    train_schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    log(f"denoiser: UNet {count(unet):,} parameters, {size['unet_steps']} steps on {len(latents)} latents "
        f"({len(moves)} transpositions of {len(mels)})")
    facts["denoiser"] = train_denoiser_v(unet, labels, null, latents, train_schedule, steps=size["unet_steps"],
                                         batch_size=size["unet_batch"], lr=size.get("unet_lr", 1e-3), seed=seed + 1,
                                         progress=report(done))
    facts["denoiser"]["cpu_seconds"] = round(time.process_time() - cpu, 1)

    # 5. the pipeline folder
    scheduler = DDIMScheduler.from_config(train_schedule.config, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    for module in (vae, text_encoder, unet, vocoder):
        module.eval().requires_grad_(False)
    pipe = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            vocoder=vocoder)
    pipe.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    facts["parameters"] = {name: count(m) for name, m in
                           (("vae", vae), ("text_encoder", text_encoder), ("unet", unet), ("vocoder", vocoder))}
    log(f"saved {out_dir}: {facts['parameters']}")
    return facts
