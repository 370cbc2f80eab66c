"""Training the toy world's diffusion decoders from scratch: the autoencoder, then the text-conditioned denoiser.

These are the two loops every latent-diffusion decoder of the toy world runs (Stable Diffusion, ZeroScope and
AudioLDM are all "an autoencoder, then a denoiser in its latent space conditioned on a text encoder"); the
plugins build the real diffusers / transformers modules at toy size and call these loops, so no modality is named
here.

- :func:`train_autoencoder`: an ``AutoencoderKL`` (or anything with ``encode(x).latent_dist`` and
  ``decode(z).sample``) on ``(N, C, ...)`` data in ``[-1, 1]``: L1 + L2 reconstruction and a small KL term.
- :func:`encode_latents`: the trained autoencoder's latent means, scaled to unit variance (the ``scaling_factor``
  diffusers stores in the VAE config).
- :func:`train_denoiser`: the UNet and its text encoder together, on (latent, caption) pairs: the target the
  scheduler's ``prediction_type`` names (noise, or velocity), captions dropped to ``""`` with probability
  ``drop_prob`` (so classifier-free guidance has an unconditional branch that the pipeline computes as the
  encoding of ``""``), min-SNR-5 loss weighting.

Every loop is seeded (init is the caller's; batches, noise and timesteps come from ``seed``), runs on the CPU
thread count the caller set, and reports each step through ``progress(step, total, loss)``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["encode_latents", "quiet_posterior", "train_autoencoder", "train_denoiser"]

from .optim import Progress, TrainingSteps


def quiet_posterior(vae: Any, log_variance: float = -8.0) -> None:
    """Start a fresh ``AutoencoderKL`` with a near-deterministic posterior: the log-variance half of its
    ``quant_conv`` bias is set to ``log_variance`` (std ~0.02), so the decoder does not first have to learn around
    unit-variance sampling noise. On 32x32 toy pictures this took the reconstruction's attribute read-back from
    54% to 95% after the same 600 steps (measured on the 2-core CPU)."""
    latent = int(vae.config.latent_channels)
    with torch.no_grad():
        vae.quant_conv.bias[latent:] = log_variance


def train_autoencoder(
    vae: Any,
    data: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train ``vae`` to reconstruct ``data`` ``(N, C, *spatial)`` in ``[-1, 1]`` (L1 + L2 + ``kl_weight`` x KL).

    Returns ``{"steps", "seconds", "first_loss", "final_loss"}`` (losses: means over the first / last 10% of steps).
    """
    generator = torch.Generator().manual_seed(seed)
    train = TrainingSteps(vae.parameters(), steps, lr=lr, progress=progress)
    vae.train()
    for _ in range(steps):
        x = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        z = posterior.mean + posterior.std * noise
        reconstruction = vae.decode(z).sample
        train.update((reconstruction - x).abs().mean() + (reconstruction - x).pow(2).mean() + kl_weight * posterior.kl().mean())
    vae.eval()
    return train.facts()


@torch.no_grad()
def encode_latents(vae: Any, data: torch.Tensor, *, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """``(latents, scaling_factor)``: the posterior means of ``data`` times ``scaling_factor = 1 / std`` (so the
    denoiser sees unit-variance latents, as Stable Diffusion's 0.18215)."""
    vae.eval()
    means = torch.cat([vae.encode(data[i : i + batch_size]).latent_dist.mode() for i in range(0, len(data), batch_size)])
    scale = float(1.0 / means.std().clamp_min(1e-6))
    return means * scale, scale


def _predicts_velocity(scheduler: Any) -> bool:
    kind = str(scheduler.config.get("prediction_type", "epsilon"))
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"train_denoiser learns 'epsilon' or 'v_prediction' targets, not {kind!r}")
    return kind == "v_prediction"


def train_denoiser(
    unet: Any,
    text_model: torch.nn.Module,
    condition: Callable[[Sequence[str]], dict[str, torch.Tensor]],
    latents: torch.Tensor,
    captions: Sequence[str],
    scheduler: Any,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    drop_prob: float = 0.1,
    snr_gamma: float = 5.0,
    high_noise_share: float = 0.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train ``unet`` and ``text_model`` together to predict the noise added to ``latents`` ``(N, *latent)``.

    Args:
        condition: captions -> the UNet's conditioning keyword arguments (``{"encoder_hidden_states": ...}`` or
            ``{"class_labels": ...}``), computed with ``text_model`` (gradients flow into it).
        captions: one per latent.
        scheduler: a diffusers noise scheduler (``DDPMScheduler``): ``add_noise``, ``get_velocity``,
            ``alphas_cumprod`` and ``config.prediction_type``. With ``"v_prediction"`` the UNet learns the velocity
            with the weight ``min(snr, gamma) / (snr + 1)``; with ``"epsilon"`` the noise with ``min(snr, gamma) /
            snr``. Velocity is what the toy decoders use: a picture's background (a video's, a tone's pitch) is
            decided at the noisiest steps, where a noise target is almost the noisy input itself and carries next to
            no gradient about the conditional mean (measured on the toy image decoder: docs/toy-world.md).
        drop_prob: share of captions replaced by ``""`` (the unconditional branch of classifier-free guidance).
        snr_gamma: min-SNR weighting (0 turns it off).
        high_noise_share: share of each batch whose timesteps are drawn from the noisiest tenth of the schedule
            (the rest: uniform). Where a shape goes in the picture (and where a clip's shape starts) is decided
            there, from the caption alone, and a convolutional UNet learns it from the text only if it trains there
            often: with uniform timesteps it reads the place from the faint signal left in the noisy input instead,
            and at sampling time follows the noise (measured: docs/toy-world.md). With a share above 0 and
            velocity targets, the weight is ``min(1, gamma / (snr + 1))`` rather than min-SNR's ``min(snr, gamma)
            / (snr + 1)``, which is ~0 at exactly those steps.

    Returns:
        ``{"steps", "seconds", "first_loss", "final_loss"}``.
    """
    if len(latents) != len(captions):
        raise ValueError(f"{len(latents)} latents for {len(captions)} captions")
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in (*unet.parameters(), *text_model.parameters()) if p.requires_grad]
    train = TrainingSteps(params, steps, lr=lr, progress=progress)
    unet.train()
    text_model.train()
    alphas = scheduler.alphas_cumprod.float()
    total_t = int(scheduler.config.num_train_timesteps)
    velocity = _predicts_velocity(scheduler)
    for _ in range(steps):
        index = torch.randint(0, len(latents), (batch_size,), generator=generator)
        drop = torch.rand(batch_size, generator=generator) < drop_prob
        texts = ["" if d else captions[int(i)] for i, d in zip(index, drop)]
        z0 = latents[index]
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(0, total_t, (batch_size,), generator=generator)
        if high_noise_share:
            noisiest = torch.randint(total_t - total_t // 10, total_t, (batch_size,), generator=generator)
            t = torch.where(torch.rand(batch_size, generator=generator) < high_noise_share, noisiest, t)
        noisy = scheduler.add_noise(z0, noise, t)
        target = scheduler.get_velocity(z0, noise, t) if velocity else noise
        prediction = unet(noisy, t, **condition(texts)).sample
        per_item = F.mse_loss(prediction.float(), target, reduction="none").flatten(1).mean(1)
        if snr_gamma:
            snr = alphas[t] / (1 - alphas[t])
            if velocity and high_noise_share:
                per_item = per_item * torch.clamp(snr_gamma / (snr + 1), max=1.0)
            else:
                per_item = per_item * torch.clamp(snr, max=snr_gamma) / (snr + 1 if velocity else snr)
        train.update(per_item.mean())
    unet.eval()
    text_model.eval()
    return train.facts()
